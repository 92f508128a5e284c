"""Invalid agent.toml files, each run through `kit build -C DIR` (the real CLI entry point):
exit code 2, the key named on stderr, and dist/ exactly as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit.cli import main

VALID = """\
[agent]
name = "demo-agent"
"""

# (case id, agent.toml text, key the message must name)
INVALID_CONFIGS = [
    ("unknown-section", VALID + "[extras]\nx = 1\n", "extras"),
    ("unknown-key", '[agent]\nname = "demo-agent"\nnmae = "x"\n', "agent.nmae"),
    ("section-not-table", 'agent = "demo-agent"\n', "agent"),
    ("missing-agent-section", '[provider]\nkind = "openai"\n', "agent"),
    ("missing-name", '[agent]\ndescription = "no name"\n', "agent.name"),
    ("wrong-type-int", VALID + 'max_prompt_chars = "8000"\n', "agent.max_prompt_chars"),
    ("bool-as-int", VALID + "[provider]\ntimeout_seconds = true\n", "provider.timeout_seconds"),
    ("wrong-type-bool", VALID + '[provider]\naccept_key_in_body = "yes"\n',
     "provider.accept_key_in_body"),
    ("bad-provider-kind", VALID + '[provider]\nkind = "azure"\n', "provider.kind"),
    ("bad-cid-version", VALID + "[ipfs]\ncid_version = 2\n", "ipfs.cid_version"),
    ("float-cid-version", VALID + "[ipfs]\ncid_version = 1.0\n", "ipfs.cid_version"),
    ("default-model-not-listed", VALID + '[provider]\nmodels = ["a"]\ndefault_model = "b"\n',
     "provider.default_model"),
    ("empty-models", VALID + "[provider]\nmodels = []\n", "provider.models"),
    ("duplicate-models", VALID + '[provider]\nmodels = ["a", "a"]\n', "provider.models"),
    ("non-string-model", VALID + "[provider]\nmodels = [1]\n", "provider.models"),
    ("bad-base-url", VALID + '[provider]\nbase_url = "ftp://example.org/v1"\n',
     "provider.base_url"),
    ("url-with-query", VALID + '[provider]\nbase_url = "https://x.test/v1?key=1"\n',
     "provider.base_url"),
    ("bad-gateway-url", VALID + '[gateway]\nurl = "gateway.local"\n', "gateway.url"),
    ("bad-ipfs-api", VALID + '[ipfs]\napi = "localhost:5001"\n', "ipfs.api"),
    ("timeout-zero", VALID + "[provider]\ntimeout_seconds = 0\n", "provider.timeout_seconds"),
    ("timeout-too-long", VALID + "[provider]\ntimeout_seconds = 56\n", "provider.timeout_seconds"),
    ("prompt-limit-zero", VALID + "max_prompt_chars = 0\n", "agent.max_prompt_chars"),
    ("bad-semver", VALID + '[tool]\nversion = "1.0"\n', "tool.version"),
    ("semver-leading-zero", VALID + '[tool]\nversion = "1.01.0"\n', "tool.version"),
    ("uppercase-agent-name", '[agent]\nname = "Demo_Agent"\n', "agent.name"),
    ("one-letter-agent-name", '[agent]\nname = "a"\n', "agent.name"),
    ("bad-tool-author", VALID + '[tool]\nauthor = "Valory Team"\n', "tool.author"),
    ("bad-tool-prefix", VALID + '[tool]\nprefix = "-tee"\n', "tool.prefix"),
    ("bad-key-secret", VALID + '[provider]\nkey_secret = "open-ai key"\n', "provider.key_secret"),
    ("bad-caller-token-secret", VALID + 'caller_token_secret = "1token"\n',
     "agent.caller_token_secret"),
    ("caller-token-is-provider-key", VALID + 'caller_token_secret = "openaiApiKey"\n',
     "agent.caller_token_secret"),
    ("control-char-description", VALID + 'description = "a\\u0007b"\n', "agent.description"),
    # issue 9: a trailing newline (a `$` matches before it), NUL or another control character,
    # user-info in a URL, and a port past 65535 must all be refused, naming the key
    ("base-url-trailing-newline", VALID + '[provider]\nbase_url = "https://x.test/v1\\n"\n',
     "provider.base_url"),
    ("base-url-nul", VALID + '[provider]\nbase_url = "https://x\\u0000.test/v1"\n',
     "provider.base_url"),
    ("base-url-user-info", VALID + '[provider]\nbase_url = "https://user:pass@x.test/v1"\n',
     "provider.base_url"),
    ("gateway-url-trailing-newline", VALID + '[gateway]\nurl = "http://127.0.0.1:8000\\n"\n',
     "gateway.url"),
    ("gateway-url-bell", VALID + '[gateway]\nurl = "http://127.0.0.1:8000/a\\u0007"\n',
     "gateway.url"),
    ("gateway-url-port-99999", VALID + '[gateway]\nurl = "http://127.0.0.1:99999"\n',
     "gateway.url"),
    ("ipfs-api-trailing-newline",
     VALID + '[ipfs]\napi = "/ip4/127.0.0.1/tcp/5002/http\\n"\n', "ipfs.api"),
    ("ipfs-api-nul", VALID + '[ipfs]\napi = "/dns/local\\u0000host/tcp/5002/http"\n', "ipfs.api"),
    ("ipfs-api-port-99999", VALID + '[ipfs]\napi = "/ip4/127.0.0.1/tcp/99999/http"\n',
     "ipfs.api"),
    ("ipfs-api-url-port-99999", VALID + '[ipfs]\napi = "http://127.0.0.1:99999"\n', "ipfs.api"),
    ("model-trailing-newline", VALID + '[provider]\nmodels = ["gpt-4o\\n"]\n', "provider.models"),
    ("model-nul", VALID + '[provider]\nmodels = ["gpt\\u00004o"]\n', "provider.models"),
    ("key-secret-trailing-newline", VALID + '[provider]\nkey_secret = "apiKey\\n"\n',
     "provider.key_secret"),
    ("caller-token-trailing-newline", VALID + 'caller_token_secret = "callerToken\\n"\n',
     "agent.caller_token_secret"),
    ("agent-name-trailing-newline", '[agent]\nname = "demo-agent\\n"\n', "agent.name"),
    ("tool-name-trailing-newline", VALID + '[tool]\nname = "tee_demo\\n"\n', "tool.name"),
    ("tool-author-trailing-newline", VALID + '[tool]\nauthor = "dev\\n"\n', "tool.author"),
    ("tool-version-trailing-newline", VALID + '[tool]\nversion = "1.0.0\\n"\n', "tool.version"),
    ("tool-prefix-trailing-newline", VALID + '[tool]\nprefix = "tee-\\n"\n', "tool.prefix"),
    ("tool-prefix-nul", VALID + '[tool]\nprefix = "tee\\u0000"\n', "tool.prefix"),
    *[(f"os-measurements-{case}", VALID + f"[verify]\ntdx_os_measurements = {value}\n",
       "verify.tdx_os_measurements") for case, value in (
        ("three-registers", '["' + ":".join(["ab" * 48] * 3) + '"]'),
        ("short-register", '["' + ":".join(["ab" * 47] * 4) + '"]'),
        ("trailing-newline", '["' + ":".join(["ab" * 48] * 4) + '\\n"]'),
        ("not-a-list", '"' + ":".join(["ab" * 48] * 4) + '"'))],
    ("invalid-toml", '[agent]\nname = "demo-agent\n', "agent.toml"),
    ("not-utf8", None, "agent.toml"),
]

DIST_BEFORE = {"agent.js": b"// the previous build\n", "sentinel.txt": b"keep me\n"}


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize(
    ("text", "key"),
    [pytest.param(text, key, id=case) for case, text, key in INVALID_CONFIGS],
)
def test_invalid_config_exits_2_naming_the_key_and_leaves_dist_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, key: str
) -> None:
    config = tmp_path / "agent.toml"
    config.write_bytes(b'[agent]\nname = "\xff"\n' if text is None else text.encode())
    dist = tmp_path / "dist"
    dist.mkdir()
    for name, data in DIST_BEFORE.items():
        (dist / name).write_bytes(data)

    code, out, err = _run_cli(["build", "-C", str(tmp_path)], capsys)

    print(err)  # shown by pytest -rA: the message a user would read
    assert code == 2
    assert (f"agent.toml: {key}:" if key != "agent.toml" else "agent.toml: is not") in err
    assert out == ""
    assert _snapshot(dist) == DIST_BEFORE


def test_user_info_is_refused_without_echoing_the_credential(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "agent.toml").write_text(
        VALID + '[provider]\nbase_url = "https://user:hunter2-pw@x.test/v1"\n')
    code, out, err = _run_cli(["build", "-C", str(tmp_path)], capsys)
    assert code == 2 and "provider.base_url" in err and "user-info" in err
    assert "hunter2-pw" not in out + err
    assert not (tmp_path / "dist").exists()


def test_missing_config_names_the_file_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run_cli(["build", "-C", str(tmp_path)], capsys)
    assert code == 2
    assert "agent.toml" in err and "kit init" in err
    assert not (tmp_path / "dist").exists()


def test_enum_errors_list_the_allowed_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "agent.toml").write_text(VALID + '[provider]\nkind = "azure"\n')
    _, _, err = _run_cli(["build", "-C", str(tmp_path)], capsys)
    assert "'openai', 'anthropic', 'openai-compatible'" in err


def test_unsupported_cid_version_option_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "agent.toml").write_text(VALID)
    code, _, err = _run_cli(["build", "-C", str(tmp_path), "--cid-version", "2"], capsys)
    assert code == 2
    assert "--cid-version" in err
    assert not (tmp_path / "dist").exists()
