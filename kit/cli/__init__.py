"""The `kit` command: a thin shell over the library. Subcommands load lazily so that
`kit --help` stays fast; each lives in the module named in `COMMANDS`."""

from __future__ import annotations

import importlib
import sys

import click

from kit import __version__
from kit.errors import KitError, map_os_errors

# name -> (module, attribute, one-line help shown by `kit --help` without importing it)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("kit.cli.project", "init", "Scaffold an agent project."),
    "build": ("kit.cli.project", "build", "Render the contract to dist/agent.js and print its CID."),
    "cid": ("kit.cli.cid", "cid", "The CID `ipfs add` would give a file or directory, offline."),
    "run": ("kit.cli.run", "run", "Run the built contract once in the local runtime."),
    "dev": ("kit.cli.dev", "dev", "Serve a local gateway speaking the Phala gateway protocol."),
    "mock-llm": ("kit.cli.dev", "mock_llm", "Serve a stand-in LLM endpoint for offline work."),
    "node": ("kit.cli.ipfs", "node", "Manage the local IPFS dev node."),
    "deploy": ("kit.cli.ipfs", "deploy", "Build, pin, verify and record a deployment."),
    "verify": ("kit.cli.ipfs", "verify", "Fetch a CID back through gateways and re-hash it."),
    "secrets": ("kit.cli.secrets", "secrets", "Store secrets in the gateway vault."),
    "tool": ("kit.cli.tool", "tool", "Generate the mech tool bound to the deployed CID."),
    "call": ("kit.cli.call", "call", "Invoke the deployed contract through the generated tool."),
    "verify-answer": ("kit.cli.trust", "verify_answer", "Check a delivered answer's proof offline."),
    "attest": ("kit.cli.trust", "attest", "Verify the contract's attestation; record its signer."),
    "encrypt": ("kit.cli.seal", "encrypt", "Seal a prompt to the contract's attested key."),
    "decrypt": ("kit.cli.seal", "decrypt", "Verify a sealed answer's proof and open it."),
    "provider": ("kit.cli.provider", "provider", "Attest a confidential provider; pin its signer."),
    "dstack": ("kit.cli.dstack", "dstack", "Package the gateway as a dstack (Phala Cloud) app."),
    "dstack-sim": ("kit.cli.dstack", "dstack_sim", "Serve a stand-in dstack guest agent."),
    "gateway": ("kit.cli.dstack", "gateway", "The production gateway (kit gateway serve)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, spec[2]) for name, spec in COMMANDS.items()])


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="kit")
def cli() -> None:
    """Agent-contract development kit: render, run, pin and sell Phala WapoJS contracts."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point: KitError becomes a one-line message and its exit code. This is the
    boundary where an OSError from any command becomes a kit error naming its path."""
    try:
        with map_os_errors():
            cli.main(args=argv, prog_name="kit", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KitError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(0)
