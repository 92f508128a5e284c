"""Invoke the deployed contract exactly as a mech does: through the generated tool's `run()`.

The package is loaded the mech's way: `component.yaml` names the entry point and the callable,
the entry point's text is executed in a fresh namespace, and the callable is called with
mech-style keyword arguments, a KeyChain and a token counter that behaves as the mech's
(`UsageCounter`): it refuses a model the mech has no price for, as the mech's does, so that
`kit call` shows whether a request would be billed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kit.errors import InputError


class KeyChain:
    """The interface of the mech's KeyChain: a list of keys per service, rotated on demand."""

    def __init__(self, services: dict[str, list[str]]) -> None:
        self.services = {name: list(keys) for name, keys in services.items() if keys}
        self.current_index = {name: 0 for name in self.services}

    def max_retries(self) -> dict[str, int]:
        return {name: len(keys) for name, keys in self.services.items()}

    def rotate(self, service: str) -> None:
        self.current_index[service] = (self.current_index[service] + 1) % len(
            self.services[service]
        )

    def get(self, service: str, default: str | None = None) -> str | None:
        return self[service] if service in self.services else default

    def __getitem__(self, service: str) -> str:
        return self.services[service][self.current_index[service]]

    def __repr__(self) -> str:  # never show the keys themselves
        return f"KeyChain(services={sorted(self.services)})"


class UsageCounter:
    """A token-cost callback with the mech's interface (TokenCounterCallback.__call__(model,
    token_counter, **kwargs) with `input_tokens`/`output_tokens` or `*_prompt` texts) that
    refuses models outside kit.mech.package.MECH_PRICED_MODELS with ValueError, as the mech does."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    def __call__(self, model: str, token_counter: Callable[[str, str], int],
                 **kwargs: Any) -> None:
        from kit.mech.package import MECH_PRICED_MODELS

        counts = {}
        for kind in ("input", "output"):
            if f"{kind}_prompt" in kwargs:
                counts[kind] = token_counter(kwargs[f"{kind}_prompt"], model)
            else:
                counts[kind] = kwargs.get(f"{kind}_tokens", 0)
        priced = model in MECH_PRICED_MODELS
        self.reports.append({"model": model, "input_tokens": counts["input"],
                             "output_tokens": counts["output"], "priced": priced})
        if not priced:
            raise ValueError(f"Model {model} not supported.")


@dataclass(frozen=True)
class CallResult:
    tool: str
    model: str
    answer: str
    ok: bool
    seconds: float
    package_dir: Path
    usage: dict[str, Any] | None = None  # what the tool reported to the token counter
    proof: dict[str, Any] | None = None  # the answer's proof (tool.result = "json")
    verified: bool = False  # the tool checked the proof before answering ([verify] answers)
    result: str = ""  # the mech result exactly as the tool delivered it (JSON with the proof)


def load_tool(package_dir: Path) -> tuple[Callable[..., Any], dict[str, Any]]:
    """Load a custom component as the mech does; return its callable and namespace."""
    import yaml

    component = yaml.safe_load((package_dir / "component.yaml").read_text())
    source = (package_dir / component["entry_point"]).read_text()
    namespace: dict[str, Any] = {"__name__": f"tool_{component['name']}"}
    exec(compile(source, str(package_dir / component["entry_point"]), "exec"), namespace)
    return namespace[component["callable"]], namespace


def call(project_dir: Path, prompt: str, *, model: str | None = None) -> CallResult:
    """Run the generated tool for this project once, against its deployed CID."""
    from kit.contract.config import load_config
    from kit.mech.secrets import load_binding

    project_dir = Path(project_dir)
    config = load_config(project_dir)
    package_dir = _package_dir(project_dir, config.tool.author, config.tool.name)
    run, namespace = load_tool(package_dir)
    model = model or config.provider.default_model
    if model not in config.provider.models:
        raise InputError(f"--model {model!r} is not one of {list(config.provider.models)}")
    binding = load_binding(project_dir)
    keys: dict[str, list[str]] = {}
    if binding is not None:
        keys[namespace["VAULT_KEY_SERVICE"]] = [binding.key]
        if binding.caller_token:
            keys[namespace["CALLER_TOKEN_SERVICE"]] = [binding.caller_token]
    tool = config.tool.prefix + model
    counter = UsageCounter()
    started = time.perf_counter()
    result = run(tool=tool, prompt=prompt, model=model, nonce="kit-call",
                 api_keys=KeyChain(keys), counter_callback=counter)
    seconds = time.perf_counter() - started
    delivered = answer = result[0]
    ok = not answer.startswith(namespace["ERROR_PREFIX"])
    usage = counter.reports[-1] if counter.reports else None
    answer, proof = _delivered(answer) if ok else (answer, None)
    verified = proof is not None and namespace.get("VERIFY_ANSWERS", "off") != "off"
    return CallResult(tool, model, answer, ok, seconds, package_dir, usage, proof, verified,
                      delivered)


def _delivered(result: str) -> tuple[str, dict[str, Any] | None]:
    """The answer text and proof of a JSON result (tool.result = "json"); text as it is."""
    import json

    try:
        value = json.loads(result)
    except ValueError:
        return result, None
    if not isinstance(value, dict) or not isinstance(value.get("answer"), str):
        return result, None
    proof = value.get("proof")
    return value["answer"], proof if isinstance(proof, dict) else None


def _package_dir(project_dir: Path, author: str, name: str) -> Path:
    package_dir = project_dir / "packages" / author / "customs" / name
    if not (package_dir / "component.yaml").is_file():
        raise InputError(f"no mech tool at {package_dir}; run `kit tool` first")
    return package_dir
