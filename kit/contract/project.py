"""`kit init` (the project scaffold) and `kit build` (render -> dist/agent.js -> CID)."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.contract.config import CID_VERSIONS, CONFIG_FILE, ProjectConfig, load_config, parse_config
from kit.errors import ConfigError, InputError
from kit.fsutil import atomic_write
from kit.resources import templates_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

ARTIFACT = Path("dist") / "agent.js"

# init_project keyword -> (agent.toml section, key)
OVERRIDES: dict[str, tuple[str, str]] = {
    "name": ("agent", "name"),
    "description": ("agent", "description"),
    "system_prompt": ("agent", "system_prompt"),
    "max_prompt_chars": ("agent", "max_prompt_chars"),
    "caller_token_secret": ("agent", "caller_token_secret"),
    "provider": ("provider", "kind"),
    "base_url": ("provider", "base_url"),
    "models": ("provider", "models"),
    "default_model": ("provider", "default_model"),
    "key_secret": ("provider", "key_secret"),
    "accept_key_in_body": ("provider", "accept_key_in_body"),
    "timeout_seconds": ("provider", "timeout_seconds"),
    "max_tokens": ("provider", "max_tokens"),
    "gateway_url": ("gateway", "url"),
    "ipfs_api": ("ipfs", "api"),
    "cid_version": ("ipfs", "cid_version"),
    "tool_author": ("tool", "author"),
    "tool_name": ("tool", "name"),
    "tool_version": ("tool", "version"),
    "tool_prefix": ("tool", "prefix"),
    "preset": ("contract", "preset"),
}

# scaffold template (under kit/templates/project/) -> file written in the project
SCAFFOLD: dict[str, str] = {
    "gitignore.j2": ".gitignore",
    "README.md.j2": "README.md",
    "test_agent.py.j2": "tests/test_agent.py",
    "agent.js.j2": "src/agent.js",  # the user module (kit.contract.bundle), per preset
    "agent.toml.j2": CONFIG_FILE,  # last: a failed init can simply be run again
}


@dataclass(frozen=True)
class BuildResult:
    path: Path
    cid: str
    cid_version: int
    size: int
    template_version: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def default_agent_name(directory: Path) -> str:
    """A valid agent name guessed from the directory name (validated later like any other)."""
    return re.sub(r"[^a-z0-9]+", "-", directory.resolve().name.lower()).strip("-")


def toml_value(value: Any) -> str:
    """A TOML literal for a str, int, bool or list of those. JSON's escapes are valid TOML
    basic-string escapes as long as non-ASCII stays literal (TOML has no surrogate escapes)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _scaffold_environment() -> SandboxedEnvironment:
    from kit.contract.render import sandboxed_environment

    from kit.contract.presets import schema_toml

    return sandboxed_environment(templates_dir() / "project",
                                 {"toml": toml_value, "schema_toml": schema_toml},
                                 trim_blocks=True)


def _settings(name: str, provider: str, overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise InputError(f"unknown init option {unknown[0]!r}; known: {', '.join(OVERRIDES)}")
    settings: dict[str, dict[str, Any]] = {"agent": {"name": name}, "provider": {"kind": provider}}
    for option, value in overrides.items():
        if value is None:
            continue
        section, key = OVERRIDES[option]
        settings.setdefault(section, {})[key] = list(value) if isinstance(value, tuple) else value
    if settings.get("contract", {}).get("preset") == "json":
        from kit.contract.presets import DEFAULT_JSON_SCHEMA

        settings["contract"]["output_schema"] = DEFAULT_JSON_SCHEMA
    return settings


def _check_round_trip(text: str, config: ProjectConfig, root: Path) -> None:
    """The written agent.toml must load back to exactly the validated config."""
    if parse_config(tomllib.loads(text), root) != config:
        raise ConfigError(CONFIG_FILE, "could not be written faithfully; report this as a kit bug")


def _merge_gitignore(path: Path, scaffold: str) -> str | None:
    """The existing .gitignore plus the scaffold's missing lines (None when nothing is missing)."""
    existing = path.read_text(encoding="utf-8")
    present = {line.strip() for line in existing.splitlines()}
    wanted = [line for line in scaffold.splitlines() if line.strip()]
    missing = [line for line in wanted if line.strip() not in present]
    if not missing:
        return None
    return existing.rstrip("\n") + "\n" + "\n".join(missing) + "\n"


def _refuse_existing_config(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory} exists and is not a directory; choose another path")
    config_path = directory / CONFIG_FILE
    if config_path.exists() and config_path.stat().st_size > 0:
        raise InputError(f"{config_path} already exists; edit it, or init another directory")


def init_project(
    directory: Path, *, name: str | None = None, provider: str = "openai", **overrides: Any
) -> list[Path]:
    """Scaffold an agent project in `directory` and return the files written.

    The config is validated before anything is written. An existing README or test is kept and
    an existing .gitignore gets the missing lines; a non-empty agent.toml is never overwritten.
    """
    directory = Path(directory)
    _refuse_existing_config(directory)
    root = directory.resolve()
    settings = _settings(name or default_agent_name(directory), provider, overrides)
    config = parse_config(settings, root)
    environment = _scaffold_environment()
    context = config.to_dict()
    rendered = {
        target: environment.get_template(source).render(**context)
        for source, target in SCAFFOLD.items()
    }
    _check_round_trip(rendered[CONFIG_FILE], config, root)
    return _write_scaffold(directory, rendered)


def _write_scaffold(directory: Path, rendered: dict[str, str]) -> list[Path]:
    written = []
    for target, text in rendered.items():
        path = directory / target
        if target == ".gitignore" and path.exists():
            merged = _merge_gitignore(path, text)
            if merged is None:
                continue
            text = merged
        elif path.exists() and target != CONFIG_FILE:
            continue
        atomic_write(path, text)
        written.append(path)
    return written


def build_project(project_dir: Path, *, cid_version: int | None = None) -> BuildResult:
    """Render the contract to `<project>/dist/agent.js` and compute its CID.

    The CID is computed before writing, so a failed build leaves the previous artifact intact.
    """
    from kit.cid import bytes_cid
    from kit.contract.render import TEMPLATE_VERSION, render_contract

    config = load_config(project_dir)
    version = config.ipfs.cid_version if cid_version is None else cid_version
    if version not in CID_VERSIONS or isinstance(version, bool):
        raise InputError(f"--cid-version {version!r} is not supported; use 0 or 1")
    data = render_contract(config)
    cid = bytes_cid(data, version=version)
    path = config.root / ARTIFACT
    atomic_write(path, data)
    return BuildResult(
        path=path, cid=cid, cid_version=version, size=len(data), template_version=TEMPLATE_VERSION
    )
