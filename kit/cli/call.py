"""`kit call`: invoke the deployed contract through the generated tool, as a mech would."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from kit.cli._common import emit, json_option, project_option


@click.command()
@project_option
@click.option("--prompt", required=True, help="The prompt to send.")
@click.option("--model", help="Model (default: provider.default_model).")
@json_option
def call(project_dir: Path, prompt: str, model: str | None, as_json: bool) -> None:
    """Run the generated tool's run() against the deployed CID and print its answer."""
    from kit.mech.call import call as call_tool

    result = call_tool(project_dir, prompt, model=model)
    view = {"tool": result.tool, "model": result.model, "answer": result.answer,
            "ok": result.ok, "seconds": round(result.seconds, 3), "usage": result.usage,
            "proof": result.proof, "verified": result.verified}
    emit(view, as_json, _describe)
    if not result.ok:
        sys.exit(1)


def _describe(view: dict[str, Any]) -> str:
    usage = view["usage"]
    if usage is None:
        billing = "nothing reported to the token counter"
    else:
        counts = f"{usage['input_tokens']} in, {usage['output_tokens']} out tokens"
        billing = (f"billed as {usage['model']} ({counts})" if usage["priced"] else
                   f"NOT billed: the mech has no price for {usage['model']} ({counts})")
    proof = view.get("proof")
    checked = (f"\nproof: verified (signer {proof['signer']})" if view.get("verified") and proof
               else "")
    return (f"{view['answer']}{checked}\n\n"
            f"(tool {view['tool']}, {view['seconds']:.2f} s; {billing})")
