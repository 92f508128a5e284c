"""The whole local flow on embedded defaults, through the kit's library API:

init → build → node up → deploy → local gateway and stand-in LLM → secrets set → tool → call

Prints the CID, the tool's package hash and the answer, then stops what it started (the IPFS
node only if it was not already running). Running it again reuses the project. Exit codes: 0
when the tool answered, 1 when something outside failed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

from kit.errors import KitError

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "In one sentence: why run an LLM call inside a TEE?"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "hello-agent", help="project directory")
    parser.add_argument("--ipfs-repo", type=Path, help="IPFS repository (default: per user)")
    parser.add_argument("--ipfs-api-port", type=int, default=5002)
    parser.add_argument("--ipfs-gateway-port", type=int, default=9090)
    parser.add_argument("--gateway-port", type=int, default=8000, help="local Phala-style gateway")
    parser.add_argument("--llm-port", type=int, default=8100, help="stand-in LLM")
    parser.add_argument("--prompt", default=PROMPT)
    return parser.parse_args(argv)


def run(args: argparse.Namespace, say=print) -> str:
    """The flow; returns the tool's answer."""
    from kit import node
    from kit.call import call
    from kit.config import load_config
    from kit.deploy import deploy
    from kit.gateway import LocalGateway
    from kit.mechtool import generate_tool
    from kit.mock_llm import DEFAULT_API_KEY, MockLLM
    from kit.project import build_project, init_project
    from kit.secrets import set_secrets

    project = args.dir.resolve()
    with ExitStack() as cleanup:
        info, started = node.up(args.ipfs_repo, api_port=args.ipfs_api_port,
                                gateway_port=args.ipfs_gateway_port)
        if started:
            cleanup.callback(node.down, args.ipfs_repo)
        say(f"ipfs node   {info.api} ({'started' if started else 'already running'})")
        if not (project / "agent.toml").exists():
            init_project(project, name="hello-agent", provider="openai-compatible",
                         base_url=f"http://127.0.0.1:{args.llm_port}/v1",
                         gateway_url=f"http://127.0.0.1:{args.gateway_port}", ipfs_api=info.api)
            say(f"init        {project}")
        say(f"build       {build_project(project).cid}")
        result = deploy(project, ipfs_api=info.api)
        say(f"deploy      {result.cid} pinned and verified through {result.verified_via}")

        llm = MockLLM(port=args.llm_port)
        say(f"stand-in LLM {llm.start()} (a stand-in for the provider, not a real model)")
        cleanup.callback(llm.stop)
        gateway = LocalGateway(project, ipfs_api=info.api, port=args.gateway_port,
                               vault_path=project / ".kit" / "vault.json")
        say(f"gateway     {gateway.start()}")
        cleanup.callback(gateway.stop)

        set_secrets(project, {load_config(project).provider.key_secret: DEFAULT_API_KEY})
        say("secrets     provider key stored in the gateway vault for this CID")
        tool = generate_tool(project)
        say(f"tool        {tool.package_dir.relative_to(project)} package {tool.package_hash}")
        answer = call(project, args.prompt)
        say(f"call        {answer.tool} answered in {answer.seconds:.2f} s")
        say("")
        say(f"CID:          {result.cid}")
        say(f"package hash: {tool.package_hash}")
        say(f"answer:       {answer.answer}")
        if not answer.ok:
            raise KitError(f"the tool answered with an error: {answer.answer}")
        return answer.answer


def main(argv: list[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except KitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
