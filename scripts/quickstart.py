"""The whole local flow on embedded defaults, through the kit's library API:

init → build → node up → deploy → local gateway and stand-in LLM → secrets set → tool → call

With `--runtime dstack` the gateway is the production one (`kit gateway serve`) under the
STAND-IN guest agent (`kit dstack-sim`): the contract is fetched by CID from the IPFS node's
gateway and re-hashed, the vault is sealed with a guest-agent key, `Wapo.deriveSecret` and the
quote come from the guest agent, the attestation (a TDX *dev* quote, accepted only because the
quickstart allows dev quotes) is verified against the compose hash, and the answer's proof is
checked against the attested signer.

With `--confidential` the provider is the stand-in's confidential kind (`kit mock-llm
--confidential`): `kit provider attest --allow-dev-quote` pins its signing address in agent.toml
(a dev quote: the stand-in has no GPU TEE), the contract refuses any completion that address did
not sign, and both signers, provider and contract, are checked in the delivered proof.

Prints the CID, the tool's package hash and the answer, then stops what it started (the IPFS
node only if it was not already running). Running it again reuses the project. Exit codes: 0
when the tool answered, 1 when something outside failed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from kit.errors import KitError

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "In one sentence: why run an LLM call inside a TEE?"
# No image is built offline: the compose names this placeholder, pinned by a digest that is
# sha256 of its own label (the compose hash it gives is what the stand-in measures).
STAND_IN_IMAGE = "localhost/kit-gateway:quickstart-stand-in@sha256:" + hashlib.sha256(
    b"kit quickstart: no image built offline").hexdigest()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="project directory (default: hello-agent, or "
                                                 "hello-confidential-agent with --confidential)")
    parser.add_argument("--ipfs-repo", type=Path, help="IPFS repository (default: per user)")
    parser.add_argument("--ipfs-api-port", type=int, default=5002)
    parser.add_argument("--ipfs-gateway-port", type=int, default=9090)
    parser.add_argument("--gateway-port", type=int, default=8000, help="local Phala-style gateway")
    parser.add_argument("--llm-port", type=int, default=8100, help="stand-in LLM")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--runtime", choices=("dev", "dstack"), default="dev",
                        help="dev: `kit dev`'s gateway; dstack: `kit gateway serve` under the "
                             "stand-in guest agent, with a TDX dev attestation")
    parser.add_argument("--private", action="store_true",
                        help="also a private round trip (issue 14): seal the prompt to the "
                             "contract's attested key, call through the mech tool, decrypt "
                             "and verify the sealed answer")
    parser.add_argument("--confidential", action="store_true",
                        help="a confidential provider (the stand-in's, with a dev attestation): "
                             "the contract checks the provider's signature of every completion")
    args = parser.parse_args(argv)
    if args.dir is None:
        args.dir = ROOT / ("hello-confidential-agent" if args.confidential else "hello-agent")
    return args


def run(args: argparse.Namespace, say=print) -> str:
    """The flow; returns the tool's answer."""
    from kit.ipfs import node
    from kit.mech.call import call
    from kit.contract.config import load_config
    from kit.ipfs.deploy import deploy
    from kit.local.gateway import LocalGateway
    from kit.mech.package import generate_tool
    from kit.local.mock_llm import DEFAULT_API_KEY, MockLLM
    from kit.contract.project import build_project, init_project
    from kit.mech.secrets import set_secrets
    from kit.trust.attestation import attest_deployment
    from kit.trust.quotes import AttestationPolicy

    project = args.dir.resolve()
    with ExitStack() as cleanup:
        info, started = node.up(args.ipfs_repo, api_port=args.ipfs_api_port,
                                gateway_port=args.ipfs_gateway_port)
        if started:
            cleanup.callback(node.down, args.ipfs_repo)
        say(f"ipfs node   {info.api} ({'started' if started else 'already running'})")
        if not (project / "agent.toml").exists():
            init_project(project, name=project.name,
                         provider="confidential" if args.confidential else "openai-compatible",
                         base_url=f"http://127.0.0.1:{args.llm_port}/v1",
                         gateway_url=f"http://127.0.0.1:{args.gateway_port}", ipfs_api=info.api)
            say(f"init        {project}")
        if args.private:
            _enable_sealed_requests(project, say)
        llm = MockLLM(port=args.llm_port, confidential=args.confidential)
        say(f"stand-in LLM {llm.start()} (a stand-in for the provider, not a real model)")
        cleanup.callback(llm.stop)
        if args.confidential:
            _attest_provider(project, say)
        say(f"build       {build_project(project).cid}")
        result = deploy(project, ipfs_api=info.api)
        say(f"deploy      {result.cid} pinned and verified through {result.verified_via}")
        if args.runtime == "dstack":
            gateway = _dstack_gateway(project, info.gateway_url, args.gateway_port, cleanup, say)
        else:
            gateway = LocalGateway(project, ipfs_api=info.api, port=args.gateway_port,
                                   vault_path=project / ".kit" / "vault.json")
            say(f"gateway     {gateway.start()}")
        cleanup.callback(gateway.stop)

        set_secrets(project, {load_config(project).provider.key_secret: DEFAULT_API_KEY})
        say("secrets     provider key stored in the gateway vault for this CID")
        attested = _attest(project, say) if args.runtime == "dstack" else None
        target = attested
        if attested is None:  # the answer signer, attested by the local runtime's dev quote
            signer = attest_deployment(project, policy=AttestationPolicy(allow_dev=True))
            say(f"attest      signer {signer.attested.signer} (dev quote: the local runtime)")
            target = signer.attested
        tool = generate_tool(project)
        say(f"tool        {tool.package_dir.relative_to(project)} package {tool.package_hash}")
        answer = call(project, args.prompt)
        say(f"call        {answer.tool} answered in {answer.seconds:.2f} s")
        text = answer.answer
        if attested is not None and answer.ok:
            text = _checked_answer(answer.result, args.prompt, result.cid, attested.signer)
        say("")
        say(f"CID:          {result.cid}")
        say(f"package hash: {tool.package_hash}")
        say(f"answer:       {text}")
        if not answer.ok:
            raise KitError(f"the tool answered with an error: {answer.answer}")
        if attested is not None:
            say("proof: verified (tdx dev quote accepted with --allow-dev-quote)")
        elif answer.verified and answer.proof:
            say(f"proof: verified (signer {answer.proof['signer']})")
        if args.confidential:
            say(f"provider proof: verified (signer {_provider_signer(project, answer.result)})")
        if args.private:
            return _private_round_trip(project, result.cid, target, args.prompt, say)
        return text


PRIVACY_BLOCK = """
[privacy]
sealed_requests = true
# the stand-in LLM is not a confidential provider: it reads the prompt in clear
allow_plain_provider = true
"""


def _enable_sealed_requests(project: Path, say) -> None:
    """`[privacy] sealed_requests = true` in agent.toml (added once)."""
    config = project / "agent.toml"
    text = config.read_text(encoding="utf-8")
    if "[privacy]" not in text:
        config.write_text(text + PRIVACY_BLOCK, encoding="utf-8")
        say("privacy     sealed requests enabled in agent.toml")


def _private_round_trip(project: Path, cid: str, target, prompt: str, say) -> str:
    """`kit encrypt`, the mech tool, `kit decrypt`: the prompt sealed to the key the verified
    attestation names, the sealed answer opened with a throwaway requester key (a requester's
    own is the key file mech-client keeps, ethereum_private_key.txt)."""
    import secrets

    from kit.mech.call import call
    from kit.trust.seal import key_from_hex, open_answer, seal_request

    key = key_from_hex(secrets.token_hex(32))
    request = seal_request(prompt, target.encryption_key, key)
    say(f"encrypt     prompt sealed to {target.encryption_key} (attested with the signer)")
    answer = call(project, request.text)
    if not answer.ok:
        raise KitError(f"the tool answered the sealed request with an error: {answer.answer}")
    say(f"call        {answer.tool} returned a sealed answer in {answer.seconds:.2f} s")
    opened = open_answer(answer.result, key, signers=[target.signer], cid=cid,
                         request=request, prompt=prompt)
    say(f"private:      {opened.answer}")
    say("answer decrypted and verified")
    return opened.answer


def _attest_provider(project: Path, say) -> None:
    """`kit provider attest --allow-dev-quote`: pins the stand-in's signing address."""
    from kit.trust.provider import attest_provider

    done = attest_provider(project, allow_dev=True)
    for attestation in done.attested:
        say(f"provider    signer {attestation.signing_address} attested (dev quote: a stand-in)")


def _provider_signer(project: Path, delivered: str) -> str:
    """The provider signer of the delivered answer's provider proof, checked against the
    addresses the deployed contract pins (the contract checked it too before answering)."""
    import json

    from kit.trust.provider import check_provider_proof, contract_signing_addresses

    result = json.loads(delivered)
    pinned = contract_signing_addresses((project / "dist" / "agent.js").read_bytes())
    return check_provider_proof(result.get("provider_proof"), pinned)


def _dstack_gateway(project: Path, ipfs_gateway: str, port: int, cleanup: ExitStack, say):
    """`kit gateway serve` under the stand-in guest agent, with the project's compose."""
    import json

    from kit.dstack.compose import write_compose
    from kit.dstack.serve import production_gateway
    from kit.dstack.simulator import GuestAgentStandIn, StandInServer

    record = write_compose(project, image=STAND_IN_IMAGE, ipfs_gateways=[ipfs_gateway])
    say(f"compose     {record.app_compose} hash {record.compose_hash}")
    document = json.loads((project / record.app_compose).read_text(encoding="utf-8"))
    socket_dir = Path(tempfile.mkdtemp(prefix="kit-qs-", dir="/tmp"))  # short: a socket path
    cleanup.callback(shutil.rmtree, socket_dir, True)
    agent = StandInServer(GuestAgentStandIn(document), socket_path=socket_dir / "dstack.sock",
                          port=None).start()
    cleanup.callback(agent.stop)
    say(f"guest agent {agent.socket_path} (kit dstack-sim: a STAND-IN, dev TDX quotes only)")
    gateway = production_gateway(gateways=[ipfs_gateway], ipfs_api=None,
                                 data_dir=project / ".kit" / "cvm-data",
                                 dstack_endpoint=str(agent.socket_path), port=port)
    say(f"gateway     {gateway.start()} (kit gateway serve: code by CID, vault sealed)")
    return gateway


def _attest(project: Path, say):
    """`kit attest --allow-dev-quote`: the TDX (dev) quote checked against the compose hash."""
    from kit.dstack.compose import load_record
    from kit.trust.attestation import attest_deployment
    from kit.trust.quotes import AttestationPolicy

    record = load_record(project)
    policy = AttestationPolicy(allow_dev=True, options={"compose_hash": record.compose_hash})
    done = attest_deployment(project, policy=policy).attested
    if done.quote.quote_type != "tdx":
        raise KitError(f"expected a tdx quote from the gateway, got {done.quote.quote_type}")
    say(f"attest      signer {done.signer} (tdx dev quote, compose hash measured in RTMR3)")
    return done


def _checked_answer(delivered: str, prompt: str, cid: str, signer: str) -> str:
    """The delivered answer once its proof verifies against the attested signer."""
    from kit.errors import ExternalError, InputError
    from kit.trust.answer import parse_result, verify_answer

    try:
        result = parse_result(delivered)
    except InputError as exc:
        raise ExternalError(f"the tool delivered no verifiable result ({exc}); the dstack path "
                            "needs a tool that returns {answer, model, proof} "
                            "(tool.result = \"json\")") from None
    verify_answer(result, prompt=prompt, signers=[signer], cid=cid)
    return result.answer


def main(argv: list[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except KitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
