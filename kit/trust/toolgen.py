"""What `kit tool` renders into the generated tool for answer verification (issue 11).

The tool's verifier is kit.trust.core's marked regions, embedded verbatim, plus the values it
pins: the [verify] mode, the result format, the signers recorded for the deployed CID, and for
"attested" the app address and MRENCLAVE values from agent.toml [verify].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kit.trust.core import attestation_verifier_source, verifier_source
from kit.trust.seal import sealed_verifier_source
from kit.trust.tdx import tool_verifier_source as tdx_tool_verifier_source

if TYPE_CHECKING:
    from kit.contract.config import ProjectConfig
    from kit.ipfs.records import Deployment

# The tool's verification dependencies, pinned like the kit's own (pyproject.toml): eth-account
# for signer recovery (mech runtimes carry it through the Olas Ethereum ledger plugin), dcap-qvl
# for "attested" (quote verification). coincurve is optional: eth-keys uses it when present
# (about 0.1 ms per recovery instead of about 7 ms).
VERIFY_DEPENDENCIES = {"eth-account": "==0.14.0"}
ATTESTED_DEPENDENCIES = {"dcap-qvl": "==0.7.0"}


def tool_dependencies(config: ProjectConfig) -> dict[str, str]:
    """component.yaml dependencies that answer verification adds for `config`."""
    mode = config.verify.answers
    if mode == "off":
        return {}
    return {**VERIFY_DEPENDENCIES, **(ATTESTED_DEPENDENCIES if mode == "attested" else {})}


def tool_context(config: ProjectConfig, deployment: Deployment) -> dict[str, Any]:
    """Template values of tool.py.j2's verification part."""
    return {
        "verify_answers": config.verify.answers,
        "result_format": config.tool.result,
        "signers": list(deployment.signers),
        "app_address": config.verify.app_address,
        "mr_enclaves": list(config.verify.mr_enclaves),
        "verifier_source": verifier_source().rstrip("\n"),
        "attestation_verifier_source": attestation_verifier_source().rstrip("\n"),
        # sealed requests (issue 14): the blind check over both ciphertexts (kit.trust.seal)
        "sealed_requests": config.privacy.sealed_requests,
        "sealed_verifier_source": sealed_verifier_source().rstrip("\n"),
        # quote_type "tdx" (the gateway in a dstack CVM): the compose hash pinned for "attested"
        # ("" when the project has no `kit dstack compose` record: tdx quotes are then refused)
        # and the self-contained TDX check (kit.trust.tdx's region)
        "compose_hash": _recorded_compose_hash(config),
        "tdx_os_measurements": list(config.verify.tdx_os_measurements),
        "tdx_verifier_source": tdx_tool_verifier_source().rstrip("\n"),
    }


def _recorded_compose_hash(config: ProjectConfig) -> str:
    from kit.dstack.compose import load_record

    record = load_record(config.root)
    return record.compose_hash if record is not None else ""


def tool_warnings(config: ProjectConfig, deployment: Deployment) -> tuple[str, ...]:
    """What `kit tool` should say about verification: an unsafe mode, or nothing pinned."""
    mode = config.verify.answers
    if mode == "off":
        return ("[verify] answers = \"off\": the tool returns answers unchecked (unsafe)",)
    if deployment.signers:
        return ()
    if mode == "attested" and config.verify.app_address and config.verify.mr_enclaves:
        return ()
    return (f"no answer signer is recorded for {deployment.cid}: the tool will refuse every "
            "answer; run `kit attest` (with --allow-dev-quote for the local runtime), then "
            "`kit tool` again",)
