"""`kit cid`: the CID `ipfs add` would give a file or directory, computed offline."""

from __future__ import annotations

from pathlib import Path

import click

from kit.cli._common import emit, json_option


def _chunk_size(ctx: click.Context, param: click.Parameter, spec: str) -> int:
    from kit.cid import parse_chunker
    from kit.errors import InputError

    try:
        return parse_chunker(spec)
    except InputError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@click.command("cid")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--cid-version", type=click.Choice(["0", "1"]), default="0", show_default=True,
              help="0 gives Qm... (dag-pb leaves), 1 gives base32 bafy.../bafk... (raw leaves).")
@click.option("--raw-leaves/--no-raw-leaves", default=None,
              help="Leaf kind; by default what Kubo uses for the CID version.")
@click.option("--chunker", default="size-262144", show_default=True, callback=_chunk_size,
              help="Fixed-size chunker, size-N with N in bytes.")
@click.option("--wrap", is_flag=True, help="Wrap in a directory, like `ipfs add -w`.")
@click.option("--hidden", is_flag=True, help="Include entries whose name starts with '.' (-H).")
@json_option
def cid(path: Path, cid_version: str, raw_leaves: bool | None, chunker: int, wrap: bool,
        hidden: bool, as_json: bool) -> None:
    """Print the CID `ipfs add` gives PATH (recursively for a directory), without a node."""
    from kit.cid import DagParams, path_cid

    version = int(cid_version)
    cid_text = path_cid(path, version=version, raw_leaves=raw_leaves, chunk_size=chunker,
                        wrap=wrap, hidden=hidden)
    result = {
        "cid": cid_text,
        "cid_version": version,
        "raw_leaves": DagParams(version, raw_leaves).raw_leaves,
        "chunk_size": chunker,
        "wrapped": wrap,
        "path": str(path),
    }
    emit(result, as_json, lambda value: value["cid"])
