"""Verify a delivered answer offline: the proof, the texts it hashes, and the signer.

A delivered result is any of (JSON):
- what the generated tool returns with `tool.result = "json"`: `{"answer", "model", "proof"}`;
- the contract's own 200 answer: `{"message", "model", "usage", "proof"}`;
- a mech delivery: `{"result": "<one of the above, as a JSON string>", "prompt": ..., ...}`.
Either may carry `provider_proof` (issue 12), whose sha256 the proof signs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from kit.errors import InputError
from kit.trust.core import ProofError, check_answer
from kit.trust.errors import NotVerified


@dataclass(frozen=True)
class DeliveredResult:
    answer: str
    model: str | None
    proof: Any
    prompt: str | None  # carried by a mech delivery; None otherwise
    provider_proof: Any = None


@dataclass(frozen=True)
class AnswerVerdict:
    signer: str
    cid: str
    model: str

    def to_dict(self) -> dict[str, Any]:
        return {"verified": True, "signer": self.signer, "cid": self.cid, "model": self.model}


def parse_result(data: bytes | str) -> DeliveredResult:
    """Read a delivered result; InputError (exit 2) when it is not one."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"the result is not JSON ({exc})") from None
    prompt = None
    if isinstance(value, dict) and isinstance(value.get("result"), str) and "proof" not in value:
        prompt = value.get("prompt") if isinstance(value.get("prompt"), str) else None
        try:
            value = json.loads(value["result"])
        except ValueError:
            raise InputError("the delivery's 'result' is not a JSON result with a proof "
                             "(was the tool generated with tool.result = \"text\"?)") from None
    if not isinstance(value, dict):
        raise InputError("the result must be a JSON object with 'answer' (or 'message') and "
                         "'proof'")
    answer = value.get("answer", value.get("message"))
    if not isinstance(answer, str):
        raise InputError("the result has no 'answer' (or 'message') string")
    if "proof" not in value:
        raise InputError("the result has no 'proof'; it cannot be verified")
    model = value.get("model")
    if model is not None and not isinstance(model, str):
        raise InputError("the result's 'model' must be a string")
    return DeliveredResult(answer, model, value["proof"], prompt, value.get("provider_proof"))


def verify_answer(result: DeliveredResult, *, prompt: str, signers: Iterable[str],
                  cid: str | None = None, system: str | None = None) -> AnswerVerdict:
    """Check `result` against the prompt sent, the expected CID and the pinned signers.

    Without `cid` the proof's own CID is taken (the verdict names it; the signer pin is then the
    only binding). Raises NotVerified naming the field that failed.
    """
    proof = result.proof
    expected_cid = cid
    if expected_cid is None:
        expected_cid = proof.get("cid") if isinstance(proof, dict) else None
        if not isinstance(expected_cid, str):
            raise NotVerified("cid", "the proof names no CID and none was given")
    try:
        signer = check_answer(proof, result.answer, prompt, expected_cid, list(signers),
                              model=result.model, system=system,
                              provider_proof=result.provider_proof)
    except ProofError as exc:
        raise NotVerified(exc.field, exc.problem) from None
    return AnswerVerdict(signer=signer, cid=expected_cid, model=proof["model"])
