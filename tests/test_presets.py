"""Presets (kit init --preset chat|prediction|json) through the real runtime (QuickJS, the
contract as built) and the stand-in LLM (kit.local.mock_llm, the OpenAI/Anthropic wire protocol),
whose replies a test scripts by replacing `kit.local.mock_llm.stand_in_answer` (the text it puts in
a completion); everything else in the stand-in answers as it always does.

Oracles:
- the prediction result is parsed with the trader's rules, restated in `trader_parse` from
  valory-xyz/trader: packages/valory/skills/decision_maker_abci/behaviours/decision_receive.py
  (commit 003aafa157549d08729097db49cbb4a761cd6548), `_get_decision`, and
  packages/valory/skills/market_manager_abci/bets.py (commit 02c5fb5716a6105b8eb74369f8abca32e5
  3aa578), `PredictionResponse.__init__`;
- the json preset's validator is compared with the reference JSON Schema validator
  (`jsonschema`, Draft 2020-12) on the same values.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import kit.local.mock_llm
from fixtures.servers import MOCK_LLM_KEY
from kit.contract.project import build_project
from kit.local.runtime import invoke

P_FIELDS = ("p_yes", "p_no", "confidence", "info_utility")


def trader_parse(result: str) -> tuple[float, float, float, float] | None:
    """What the trader makes of a mech result: the prediction, or None where it logs "Could not
    parse the mech's response" (JSONDecodeError or ValueError, both caught). Restated rules:
    `PredictionResponse(**json.loads(result))`; each of the four fields is popped from the
    keyword arguments and passed through float() (other keys are ignored; a missing field is a
    KeyError, which the trader does NOT catch); every field must be within [0, 1] and
    p_yes + p_no != 1 (exact float comparison) raises ValueError."""
    try:
        data = json.loads(result)
    except json.JSONDecodeError:
        return None
    kwargs = dict(**data)  # `**` of a non-mapping raises TypeError (not caught either)
    try:
        values = tuple(float(kwargs.pop(name)) for name in P_FIELDS)
    except ValueError:
        return None
    p_yes, p_no = values[0], values[1]
    if any(not (0 <= value <= 1) for value in values) or p_yes + p_no != 1:
        return None
    return values  # type: ignore[return-value]


class Script:
    """Replies the stand-in gives next, in order (then its usual deterministic answer)."""

    def __init__(self) -> None:
        self.replies: list[str] = []
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.replies.pop(0) if self.replies else kit.local.mock_llm.ANSWER_PREFIX + "x"


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Iterator[Script]:
    replies = Script()
    monkeypatch.setattr(kit.local.mock_llm, "stand_in_answer", replies)
    yield replies


@pytest.fixture
def preset_project(project_factory: Callable[..., Path], mock_llm: Any) -> Callable[..., Path]:
    def make(preset: str, **overrides: Any) -> Path:
        overrides.setdefault("provider", "openai-compatible")
        return project_factory(preset=preset, base_url=mock_llm.base_url, **overrides)

    return make


def ask(project: Path, prompt: str, **body: Any) -> tuple[int, dict[str, Any]]:
    code = build_project(project).path.read_text(encoding="utf-8")
    request = {"method": "POST", "path": "/ipfs/QmTestContract", "queries": {}, "headers": {},
               "body": json.dumps({"prompt": prompt, **body}),
               "secret": {"apiKey": MOCK_LLM_KEY, "anthropicApiKey": MOCK_LLM_KEY}}
    answer = invoke(code, request)
    return answer.status, json.loads(answer.body)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---- prediction ---------------------------------------------------------------------------


def test_prediction_is_normalised_signed_and_parses_with_the_trader_rules(
    preset_project: Callable[..., Path], script: Script, mock_llm: Any
) -> None:
    project = preset_project("prediction")
    # off by 5e-7 from 1: within the 1e-6 the contract accepts, rejected as is by the trader
    script.replies.append('{"p_yes": 0.3, "p_no": 0.7000005, "confidence": 0.8, '
                          '"info_utility": "0.25"}')
    assert trader_parse(script.replies[0]) is None
    status, answer = ask(project, "Will it rain in Paris on 2030-01-01?")
    assert status == 200, answer
    prediction = answer["prediction"]
    assert trader_parse(answer["message"]) == (0.3, 0.7, 0.8, 0.25)
    assert prediction == json.loads(answer["message"])
    assert prediction["p_yes"] + prediction["p_no"] == 1
    assert answer["proof"]["answer_sha256"] == sha256(answer["message"])
    assert answer["proof"]["prompt_sha256"] == sha256("Will it rain in Paris on 2030-01-01?")
    # what the model was asked: Valory's prompt style, the question inside, JSON mode on
    sent = mock_llm.requests[-1].json
    assert sent["response_format"] == {"type": "json_object"}
    user = sent["messages"][-1]["content"]
    for label in ("USER_PROMPT:", "ADDITIONAL_INFORMATION:", "OUTPUT_FORMAT", '"info_utility"'):
        assert label in user
    assert "```\nWill it rain in Paris on 2030-01-01?\n```" in user


def test_one_unparseable_reply_is_retried(preset_project: Callable[..., Path],
                                          script: Script) -> None:
    project = preset_project("prediction")
    script.replies += ["I think it is likely.",
                       '```json\n{"p_yes": 0.9, "p_no": 0.1, "confidence": 0.5, '
                       '"info_utility": 0}\n```']
    status, answer = ask(project, "Will it snow?")
    assert status == 200 and len(script.prompts) == 2
    assert trader_parse(answer["message"]) == (0.9, 0.09999999999999998, 0.5, 0.0)
    assert answer["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("replies,code", [
    (["no JSON here", "still none"], "prediction_unparseable"),
    (['{"p_yes": 0.7, "p_no": 0.7, "confidence": 1, "info_utility": 1}'] * 2,
     "prediction_invalid"),
    (['{"p_yes": 1.5, "p_no": -0.5, "confidence": 1, "info_utility": 1}'] * 2,
     "prediction_invalid"),
    (['{"p_yes": 0.5, "p_no": 0.5, "confidence": 1}'] * 2, "prediction_invalid"),
])
def test_a_reply_unusable_twice_is_a_clear_502(preset_project: Callable[..., Path],
                                               script: Script, replies: list[str],
                                               code: str) -> None:
    project = preset_project("prediction")
    script.replies += replies + ['{"p_yes": 1, "p_no": 0, "confidence": 1, "info_utility": 1}']
    status, answer = ask(project, "Will it?")
    assert status == 502 and answer["error"]["code"] == code
    assert "twice" in answer["error"]["message"]
    assert len(script.prompts) == 2  # exactly one retry, never a third call


def test_prediction_with_the_anthropic_shape_asks_without_json_mode(
    preset_project: Callable[..., Path], script: Script, mock_llm: Any
) -> None:
    project = preset_project("prediction", provider="anthropic")
    script.replies.append('{"p_yes": 0.25, "p_no": 0.75, "confidence": 0.5, "info_utility": 0.5}')
    status, answer = ask(project, "Will it?")
    assert status == 200 and trader_parse(answer["message"]) == (0.25, 0.75, 0.5, 0.5)
    assert "response_format" not in mock_llm.requests[-1].json


def test_a_handler_returning_a_bad_prediction_is_refused(preset_project: Callable[..., Path],
                                                         script: Script) -> None:
    project = preset_project("prediction")
    (project / "src" / "agent.js").write_text(
        "export async function handle(input, ctx) {\n"
        "  return { p_yes: 0.9, p_no: 0.9, confidence: 1, info_utility: 1 };\n}\n")
    status, answer = ask(project, "Will it?")
    assert status == 500 and answer["error"]["code"] == "handler_invalid_output"
    assert script.prompts == []  # refused before anything was signed or asked


# ---- chat ---------------------------------------------------------------------------------


def test_chat_answers_the_model_text_as_before(preset_project: Callable[..., Path],
                                               script: Script) -> None:
    project = preset_project("chat")
    status, answer = ask(project, "hello", system="Be brief.")
    assert status == 200
    assert set(answer) == {"message", "model", "usage", "proof"}
    assert answer["message"] == kit.local.mock_llm.ANSWER_PREFIX + "x"
    assert answer["proof"]["system_sha256"] == sha256("Be brief.")
    assert answer["usage"]["total_tokens"] == (answer["usage"]["prompt_tokens"]
                                              + answer["usage"]["completion_tokens"])


def test_a_handler_using_ctx_calls_within_the_limits(preset_project: Callable[..., Path],
                                                     script: Script) -> None:
    project = preset_project("chat")
    (project / "src" / "agent.js").write_text(
        "export async function handle(input, ctx) {\n"
        "  const first = await ctx.complete({ prompt: 'summarise: ' + input.prompt });\n"
        "  const second = await ctx.complete({ prompt: 'shorten: ' + first.text, max_tokens: 9 });\n"
        "  return second.text + ' ' + ctx.hash('sha256', input.prompt);\n}\n")
    script.replies += ["long summary", "short"]
    status, answer = ask(project, "abc")
    assert status == 200
    assert answer["message"] == "short " + sha256("abc")
    assert script.prompts == ["summarise: abc", "shorten: long summary"]
    assert answer["proof"]["answer_sha256"] == sha256(answer["message"])


def test_ctx_complete_keeps_the_allow_list(preset_project: Callable[..., Path],
                                           script: Script) -> None:
    project = preset_project("chat")
    (project / "src" / "agent.js").write_text(
        "export async function handle(input, ctx) {\n"
        "  return ctx.complete({ prompt: input.prompt, model: 'not-allowed' });\n}\n")
    status, answer = ask(project, "abc")
    assert status == 403 and answer["error"]["code"] == "model_not_allowed"
    assert script.prompts == []


# ---- json ---------------------------------------------------------------------------------


def test_json_answers_are_checked_against_the_schema(preset_project: Callable[..., Path],
                                                     script: Script) -> None:
    project = preset_project("json")
    script.replies += ['{"answer": "yes"}',  # misses "confidence": retried
                       '{"answer": "yes", "confidence": 0.5}']
    status, answer = ask(project, "Is water wet?")
    assert status == 200 and answer["output"] == {"answer": "yes", "confidence": 0.5}
    assert json.loads(answer["message"]) == answer["output"]
    script.replies += ['{"answer": 1, "confidence": 0.5}'] * 2
    status, answer = ask(project, "Is water wet?")
    assert status == 502 and answer["error"]["code"] == "output_invalid"
    assert "$.answer: must be string" in answer["error"]["message"]


SCHEMA_CASES: list[tuple[dict[str, Any], list[Any]]] = [
    ({"type": "object", "required": ["a"], "additionalProperties": False,
      "properties": {"a": {"type": "integer", "minimum": 1, "exclusiveMaximum": 5}}},
     [{"a": 1}, {"a": 4.0}, {"a": 5}, {"a": 0}, {"a": 1.5}, {}, {"a": 2, "b": 1}, [1], "a"]),
    ({"type": "array", "items": {"type": ["string", "null"], "maxLength": 2}, "minItems": 1,
      "maxItems": 2}, [[], ["ab"], [None, "é"], ["abc"], ["a", "b", "c"], [1], {"0": "a"}]),
    ({"enum": [1, "one", [1, 2], {"k": True}]},
     [1, 1.0, "one", [1, 2], [2, 1], {"k": True}, {"k": 1}, True, "1"]),
    ({"type": "object", "properties": {"n": {"type": "number", "maximum": 0.5},
                                       "c": {"const": {"x": [1]}}},
      "additionalProperties": {"type": "boolean"}},
     [{"n": 0.5}, {"n": 0.51}, {"c": {"x": [1]}}, {"c": {"x": [1.0]}}, {"c": {"x": []}},
      {"z": False}, {"z": 0}]),
]


def test_the_contract_validator_agrees_with_the_reference_validator(
    project_factory: Callable[..., Path]
) -> None:
    from jsonschema import Draft202012Validator

    from kit.contract.presets import schema_toml

    project = project_factory(preset="json", accept_key_in_body=True)
    config = project / "agent.toml"
    text = config.read_text()
    base = text[:text.index("\n[contract.output_schema]\n") + 1]
    (project / "src" / "agent.js").write_text(
        "export async function handle(input, ctx) {\n  return JSON.parse(input.prompt);\n}\n")
    checked = 0
    for schema, values in SCHEMA_CASES:
        config.write_text(base + schema_toml(json.dumps(schema)))
        for value in values:
            expected = Draft202012Validator(schema).is_valid(value)
            status, answer = ask(project, json.dumps(value), api_key="test-provider-key")
            assert status == (200 if expected else 500), (schema, value, answer)
            if not expected:
                assert answer["error"]["code"] == "handler_invalid_output"
            checked += 1
    assert checked == sum(len(values) for _, values in SCHEMA_CASES)


def test_schemas_outside_the_subset_are_refused_at_load(project_factory: Callable[..., Path]
                                                        ) -> None:
    from kit.contract.config import load_config
    from kit.errors import ConfigError

    project = project_factory(preset="json")
    config = project / "agent.toml"
    text = config.read_text()
    config.write_text(text + 'pattern = "^a"\n')
    with pytest.raises(ConfigError, match=r"contract\.output_schema\.properties\.confidence\.pattern"):
        load_config(project)
    config.write_text(text.replace('preset = "json"', 'preset = "chat"'))
    with pytest.raises(ConfigError, match="only the json preset uses it"):
        load_config(project)


# ---- the generated tool, called as the mech calls it --------------------------------------


def test_the_prediction_tool_result_is_what_the_trader_parses(
    project_factory: Callable[..., Path], ipfs_node: Any, mock_llm: Any,
    local_gateway_factory: Any, script: Script,
) -> None:
    import requests

    from fixtures.mech import KeyChain, load_like_mech
    from kit.ipfs.deploy import deploy
    from kit.mech.package import generate_tool
    from kit.trust.answer import parse_result

    gateway = local_gateway_factory(ipfs_api=ipfs_node.api)
    project = project_factory(preset="prediction", provider="openai-compatible",
                              base_url=mock_llm.base_url, gateway_url=gateway.url)
    cid = deploy(project, ipfs_api=ipfs_node.api).cid
    vault = requests.post(f"{gateway.url}/vaults", timeout=10, json={
        "cid": cid, "data": {"apiKey": MOCK_LLM_KEY}}).json()
    package = generate_tool(project).package_dir
    run, _ = load_like_mech(package)
    script.replies.append('{"p_yes": 0.65, "p_no": 0.35, "confidence": 0.6, '
                          '"info_utility": 0.1}')
    question = "Will the ECB cut rates before 2031?"
    result, prompt_used, *_ = run(tool="tee-test-agent-gpt-4o-mini", prompt=question,
                                  nonce="0x01", model="gpt-4o-mini",
                                  api_keys=KeyChain({"tee_vault_key": [vault["key"]]}))
    assert trader_parse(result) == (0.65, 0.35, 0.6, 0.1), result
    assert prompt_used == question
    delivered = json.loads(result)
    assert set(delivered) == {*P_FIELDS, "answer", "model", "proof"}
    assert delivered["proof"]["cid"] == cid
    assert delivered["proof"]["answer_sha256"] == sha256(delivered["answer"])
    assert json.loads(delivered["answer"]) == {name: delivered[name] for name in P_FIELDS}
    assert parse_result(result).answer == delivered["answer"]  # kit verify-answer reads it


@pytest.mark.parametrize("preset", ["chat", "prediction", "json"])
def test_kit_init_preset_scaffolds_a_module_that_builds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], preset: str
) -> None:
    from fixtures.ipfs_node import run_cli
    from kit.contract.config import load_config

    project = tmp_path / "agent"
    code, out, _ = run_cli(capsys, "init", str(project), "--preset", preset, "--json")
    assert code == 0 and str(project / "src" / "agent.js") in json.loads(out)["files"]
    config = load_config(project)
    assert config.contract.preset == preset
    assert bool(config.contract.output_schema) == (preset == "json")
    assert "export async function handle(input, ctx)" in (project / "src" / "agent.js").read_text()
    assert run_cli(capsys, "build", "-C", str(project))[0] == 0
