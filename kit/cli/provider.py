"""`kit provider attest`: attest a confidential provider's signing key and pin it (issue 12)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kit.cli._common import emit, json_option, project_option


@click.group()
def provider() -> None:
    """The LLM provider: attest a confidential provider's signing keys."""


@provider.command("attest")
@project_option
@click.option("--model", help="The model whose report to fetch (default: provider.default_model).")
@click.option("--pccs-url", help="PCCS or PCS for the TDX quote's collateral "
                                 "(default: Intel's PCS).")
@click.option("--allow-dev-quote", is_flag=True,
              help="Accept the stand-in's dev quote (`kit mock-llm --confidential`): local work "
                   "only, it proves no hardware.")
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=30.0, show_default=True,
              help="Seconds for the provider and for the collateral.")
@json_option
def attest(project_dir: Path, model: str | None, pccs_url: str | None, allow_dev_quote: bool,
           timeout: float, as_json: bool) -> None:
    """Fetch the provider's attestation report with a fresh nonce, verify its TDX quote
    (dcap-qvl) and that report_data binds the signing address and the nonce, report the NVIDIA
    payload, and only then add the address to agent.toml provider.signing_addresses.
    Exit 1 and nothing written when any check fails."""
    from kit.contract.config import check_option_url
    from kit.trust.errors import NotVerified
    from kit.trust.provider import attest_provider

    if pccs_url is not None:
        check_option_url("--pccs-url", pccs_url)
    try:
        result = attest_provider(project_dir, model=model, pccs_url=pccs_url,
                                 allow_dev=allow_dev_quote, timeout=timeout)
    except NotVerified as exc:
        if as_json:
            emit({"verified": False, "field": exc.field, "problem": exc.problem}, True, str)
        raise
    emit(result.to_dict(), as_json, _describe)


def _describe(view: dict[str, Any]) -> str:
    lines = []
    for node in view["attestations"]:
        kind = "TDX (DCAP verified)" if node["production"] else \
            "DEV quote (stand-in: NOT hardware, local work only)"
        gpu = node["nvidia_payload"]
        gpu_text = (f"present ({gpu['evidence_items']} evidence item(s), nonce "
                    f"{'matches' if gpu['nonce_matches'] else 'does NOT match'}; not verified "
                    "here: NVIDIA's NRAS checks it online)") if gpu["present"] else "absent"
        lines += [f"attested provider signer {node['signing_address']}",
                  f"  quote: {kind}, status {node['status']}",
                  "  report_data binds the signing address and the fresh nonce",
                  f"  NVIDIA payload: {gpu_text}"]
    added = view["signing_addresses_added"]
    lines.append(f"added to provider.signing_addresses in {view['config']}: {', '.join(added)}"
                 if added else f"already in provider.signing_addresses ({view['config']})")
    if added:
        lines.append("rebuild (kit build / kit deploy): the contract's CID pins these addresses")
    return "\n".join(lines)
