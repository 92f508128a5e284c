"""The project config, `agent.toml`: loaded into typed records and validated.

Every invalid key or value raises `ConfigError` naming the key (`section.key`) and what is
allowed. Loading never writes anything.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kit.errors import ConfigError, InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_FILE = "agent.toml"
# "confidential": an OpenAI-compatible GPU-TEE provider whose signatures the contract checks
# against provider.signing_addresses (issue 12; kit.trust.provider, `kit provider attest`)
PROVIDER_KINDS = ("openai", "anthropic", "openai-compatible", "confidential")
CID_VERSIONS = (0, 1)
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
    "openai-compatible": "http://127.0.0.1:8100/v1",
    "confidential": "http://127.0.0.1:8100/v1",  # `kit mock-llm --confidential`
}
DEFAULT_MODELS = {
    "openai": ["gpt-4o-mini", "gpt-4o"],
    "anthropic": ["claude-3-5-haiku-latest", "claude-3-5-sonnet-latest"],
    "openai-compatible": ["gpt-4o-mini"],
    "confidential": ["gpt-4o-mini"],
}
DEFAULT_KEY_SECRETS = {
    "openai": "openaiApiKey",
    "anthropic": "anthropicApiKey",
    "openai-compatible": "apiKey",
    "confidential": "apiKey",
}
PHALA_TESTNET_GATEWAY = "https://wapo-testnet.phala.network"
LOCAL_GATEWAY = "http://127.0.0.1:8000"
LOCAL_IPFS_API = "/ip4/127.0.0.1/tcp/5002/http"
# [verify] answers: how the generated tool checks an answer's proof (kit/trust, issue 11)
VERIFY_ANSWERS = ("attested", "signature", "off")
TOOL_RESULTS = ("json", "text")  # [tool] result: what the tool returns as the mech result

# Every pattern is applied with fullmatch (a `$` would match before a trailing newline).
_AGENT_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}[a-z0-9]")
_PY_IDENT = re.compile(r"[a-z][a-z0-9_]{0,63}")
_JS_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")
_TOOL_PREFIX = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,127}")
# no whitespace or C0/C1 control character anywhere; no user-info (checked apart, see url_problem)
_CONTROL = "\\x00-\\x20\\x7f-\\x9f"
_HTTP_URL = re.compile(rf"https?://[^{_CONTROL}/?#]+(/[^{_CONTROL}?#]*)?")
_MULTIADDR = re.compile(rf"/(ip4|ip6|dns|dns4|dns6)/([^{_CONTROL}/]+)/tcp/(\d{{1,5}})(/https?)?")


def url_problem(value: str) -> str | None:
    """Why `value` is not an http(s) URL the kit accepts (None when it is). Never quotes the
    value: it may hold a credential."""
    from urllib.parse import urlsplit

    if not _HTTP_URL.fullmatch(value):
        if any(ord(c) < 0x21 or 0x7F <= ord(c) <= 0x9F for c in value):
            return "holds whitespace or a control character (a trailing newline counts)"
        return "is not an http(s) URL like https://host/path (no query or fragment)"
    url = urlsplit(value)
    if "@" in url.netloc:
        return ("holds user-info (user:password@host): a credential must never be in a URL "
                "or agent.toml; keep keys in the vault")
    try:
        port = url.port
    except ValueError:
        return "has a port outside 1-65535"
    if not url.hostname:
        return "has no host"
    if port == 0:
        return "has a port outside 1-65535"
    return None


def ipfs_api_problem(value: str) -> str | None:
    """Why `value` is not a node API address (a multiaddr or an http(s) URL); None when it is."""
    import ipaddress

    match = _MULTIADDR.fullmatch(value)
    if match is None:
        if value.startswith(("http://", "https://")):
            return url_problem(value)
        return ("is not a multiaddr like /ip4/127.0.0.1/tcp/5002/http or an http(s) URL"
                if value.isprintable() else "holds a control character (a trailing newline "
                "counts)")
    kind, host, port = match.group(1), match.group(2), int(match.group(3))
    if not 1 <= port <= 65535:
        return f"has port {port}, outside 1-65535"
    if kind in ("ip4", "ip6"):
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return f"has {host!r:.60}, which is not an {kind} address"
        if address.version != int(kind[-1]):
            return f"has {host!r:.60}, which is not an {kind} address"
    return None


def check_option_url(option: str, value: str) -> str:
    """An http(s) URL given on the command line; InputError naming the option if malformed."""
    problem = url_problem(value)
    if problem:
        raise InputError(f"{option}: the URL {problem}; pass e.g. {option} http://127.0.0.1:8000")
    return value


def check_option_ipfs_api(option: str, value: str) -> str:
    """A node API address given on the command line; InputError naming the option if invalid."""
    problem = ipfs_api_problem(value)
    if problem:
        raise InputError(
            f"{option}: the address {problem}; pass e.g. {option} /ip4/127.0.0.1/tcp/5002/http"
        )
    return value


@dataclass(frozen=True)
class AgentConfig:
    name: str
    description: str
    system_prompt: str
    max_prompt_chars: int
    caller_token_secret: str | None


@dataclass(frozen=True)
class ProviderConfig:
    kind: str
    base_url: str
    models: tuple[str, ...]
    default_model: str
    key_secret: str
    accept_key_in_body: bool
    timeout_seconds: int
    max_tokens: int
    # kind "confidential": the attested provider signing addresses (0x, EIP-55 or any case)
    # compiled into the contract, so that its CID pins them; written by `kit provider attest`
    signing_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class GatewayConfig:
    url: str


@dataclass(frozen=True)
class IpfsConfig:
    api: str
    cid_version: int


@dataclass(frozen=True)
class ToolConfig:
    author: str
    name: str
    version: str
    prefix: str
    result: str = "json"  # "json": {"answer", "model", "proof"}; "text": the answer alone
    # replicas of one app (e.g. a dstack app scaled on Phala Cloud): the tool spreads calls over
    # them; empty: gateway.url alone
    gateways: tuple[str, ...] = ()


@dataclass(frozen=True)
class VerifyConfig:
    answers: str = "signature"  # one of VERIFY_ANSWERS; "off" is unsafe (documented)
    # what an SGX quote must show in "attested" mode (kit.trust): the worker app address it
    # binds (32 bytes hex; not derivable from the CID, REFERENCE section 6) and the pinned
    # MRENCLAVE values; empty: unknown signers are refused
    app_address: str = ""
    mr_enclaves: tuple[str, ...] = ()
    # what a TDX quote's OS image must be (kit.trust.tdx step os_measurements): sets of
    # "MRTD:RTMR0:RTMR1:RTMR2" (48-byte hex each); empty: any OS image passes (documented)
    tdx_os_measurements: tuple[str, ...] = ()


@dataclass(frozen=True)
class PrivacyConfig:
    """[privacy] (issue 14, kit/trust/seal.py): whether the contract accepts sealed requests
    (prompts sealed to its attested key, answers sealed to the requester). A provider that is
    not "confidential" reads each prompt in clear, so sealing with one needs
    allow_plain_provider = true, said explicitly."""

    sealed_requests: bool = False
    allow_plain_provider: bool = False


@dataclass(frozen=True)
class ContractConfig:
    """[contract] (issue 13): the preset and, for "json", the schema the answer must meet
    (canonical JSON text; kit.contract.presets checks it and documents the supported subset)."""

    preset: str = "chat"  # one of kit.contract.presets.PRESETS
    output_schema: str = ""


@dataclass(frozen=True)
class ProjectConfig:
    agent: AgentConfig
    provider: ProviderConfig
    gateway: GatewayConfig
    ipfs: IpfsConfig
    tool: ToolConfig
    root: Path = field(compare=False)
    verify: VerifyConfig = VerifyConfig()
    contract: ContractConfig = ContractConfig()
    privacy: PrivacyConfig = PrivacyConfig()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("root")
        return data

    def digest(self) -> str:
        """sha256 of the canonical config: recorded with each deployment."""
        import json

        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# --- validation helpers -------------------------------------------------------------------

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list"}


class _Section:
    """Reads typed values out of one TOML table, naming `section.key` in every error."""

    def __init__(self, name: str, table: Any, allowed: tuple[str, ...]) -> None:
        if not isinstance(table, dict):
            raise ConfigError(name, "must be a table, e.g. [" + name + "]")
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            raise ConfigError(
                f"{name}.{unknown[0]}", f"unknown key; allowed keys: {', '.join(allowed)}"
            )
        self.name, self.table = name, table

    def key(self, key: str) -> str:
        return f"{self.name}.{key}"

    def get(self, key: str, kind: type, default: Any) -> Any:
        value = self.table.get(key, default)
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            expected = _TYPE_NAMES.get(kind, kind.__name__)
            raise ConfigError(self.key(key), f"must be {expected}, got {value!r:.80}")
        return value

    def text(
        self, key: str, default: str, pattern: re.Pattern[str] | None = None, hint: str = ""
    ) -> str:
        value = self.get(key, str, default)
        if pattern is not None and not pattern.fullmatch(value):
            raise ConfigError(self.key(key), f"{value!r:.80} is not valid; {hint}")
        return value

    def url(self, key: str, default: str) -> str:
        value = self.get(key, str, default)
        problem = url_problem(value)
        if problem:
            raise ConfigError(self.key(key), f"the value {problem}; use an http(s) URL")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.get(key, int, default)
        if not low <= value <= high:
            raise ConfigError(self.key(key), f"{value} is out of range; allowed: {low} to {high}")
        return value

    def choice(self, key: str, default: Any, choices: tuple[Any, ...]) -> Any:
        value = self.table.get(key, default)
        # `type(...) is` keeps true and 1.0 from passing as 1
        if not any(type(value) is type(c) and value == c for c in choices):
            allowed = ", ".join(repr(c) for c in choices)
            raise ConfigError(self.key(key), f"{value!r:.80} is not allowed; allowed: {allowed}")
        return value


def _reject_control_chars(key: str, value: str) -> str:
    if any(ord(c) < 32 and c not in "\n\t" for c in value):
        raise ConfigError(key, "contains control characters")
    return value


def _agent(t: _Section) -> AgentConfig:
    token = t.get("caller_token_secret", str, "")
    if token and not _JS_IDENT.fullmatch(token):
        raise ConfigError(t.key("caller_token_secret"), f"{token!r:.80} must be an identifier")
    if "name" not in t.table:
        raise ConfigError(t.key("name"), 'missing; add e.g. name = "my-agent" under [agent]')
    return AgentConfig(
        name=t.text("name", "", _AGENT_NAME, "use 2-64 lowercase letters, digits and '-'"),
        description=_reject_control_chars(t.key("description"), t.get("description", str, "")),
        system_prompt=t.get("system_prompt", str, "You are a helpful assistant."),
        max_prompt_chars=t.integer("max_prompt_chars", 8000, 1, 1_000_000),
        caller_token_secret=token or None,
    )


def _provider(t: _Section) -> ProviderConfig:
    kind = t.choice("kind", "openai", PROVIDER_KINDS)
    models = t.get("models", list, DEFAULT_MODELS[kind])
    if not models:
        raise ConfigError(t.key("models"), "must list at least one model")
    for model in models:
        if not isinstance(model, str) or not _MODEL.fullmatch(model):
            raise ConfigError(t.key("models"), f"{model!r:.80} is not a valid model name")
    if len(set(models)) != len(models):
        raise ConfigError(t.key("models"), "lists a model twice; list each model once")
    default_model = t.get("default_model", str, models[0])
    if default_model not in models:
        raise ConfigError(
            t.key("default_model"), f"{default_model!r:.80} is not one of models: {models}"
        )
    return ProviderConfig(
        kind=kind,
        base_url=t.url("base_url", DEFAULT_BASE_URLS[kind]).rstrip("/"),
        models=tuple(models),
        default_model=default_model,
        key_secret=t.text("key_secret", DEFAULT_KEY_SECRETS[kind], _JS_IDENT, "use an identifier"),
        accept_key_in_body=t.get("accept_key_in_body", bool, False),
        timeout_seconds=t.integer("timeout_seconds", 30, 1, 55),
        max_tokens=t.integer("max_tokens", 1024, 1, 200_000),
        signing_addresses=_signing_addresses(t, kind),
    )


_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def _signing_addresses(t: _Section, kind: str) -> tuple[str, ...]:
    addresses = t.get("signing_addresses", list, [])
    if addresses and kind != "confidential":
        raise ConfigError(t.key("signing_addresses"), 'applies to kind = "confidential" only')
    for address in addresses:
        if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
            raise ConfigError(t.key("signing_addresses"),
                              f"{address!r:.80} is not a 0x address of 40 hex digits")
    if len({a.lower() for a in addresses}) != len(addresses):
        raise ConfigError(t.key("signing_addresses"), "lists an address twice")
    return tuple(addresses)


def _tool(t: _Section, agent_name: str) -> ToolConfig:
    default_name = "tee_" + agent_name.replace("-", "_")
    return ToolConfig(
        author=t.text("author", "dev", _PY_IDENT, "use lowercase letters, digits and '_'"),
        name=t.text("name", default_name, _PY_IDENT, "use lowercase letters, digits and '_'"),
        version=t.text("version", "0.1.0", _SEMVER, "use MAJOR.MINOR.PATCH"),
        prefix=t.text("prefix", f"tee-{agent_name}-", _TOOL_PREFIX, "use a-z, 0-9, '-', '_', '.'"),
        result=t.choice("result", "json", TOOL_RESULTS),
        gateways=_gateway_list(t),
    )


MAX_TOOL_GATEWAYS = 16


def _gateway_list(t: _Section) -> tuple[str, ...]:
    """tool.gateways: distinct http(s) URLs of replicas of one app (trailing '/' dropped)."""
    values = t.get("gateways", list, [])
    if len(values) > MAX_TOOL_GATEWAYS:
        raise ConfigError(t.key("gateways"), f"at most {MAX_TOOL_GATEWAYS} URLs")
    urls: list[str] = []
    for index, value in enumerate(values):
        problem = url_problem(value) if isinstance(value, str) else "is not a string"
        if problem:
            raise ConfigError(f"{t.key('gateways')}[{index}]", f"the value {problem}; use an "
                                                               "http(s) URL")
        if value.rstrip("/") in urls:
            raise ConfigError(f"{t.key('gateways')}[{index}]", "is listed twice")
        urls.append(value.rstrip("/"))
    return tuple(urls)


_HEX32 = re.compile(r"(0x)?[0-9a-fA-F]{64}")
_OS_MEASUREMENTS = re.compile(r"[0-9a-fA-F]{96}(:[0-9a-fA-F]{96}){3}")


def _verify(t: _Section) -> VerifyConfig:
    enclaves = t.get("mr_enclaves", list, [])
    for value in enclaves:
        if not isinstance(value, str) or not _HEX32.fullmatch(value):
            raise ConfigError(t.key("mr_enclaves"), "each must be 32 bytes as 64 hex digits")
    address = t.get("app_address", str, "")
    if address and not _HEX32.fullmatch(address):
        raise ConfigError(t.key("app_address"), "must be 32 bytes as 64 hex digits")
    os_sets = t.get("tdx_os_measurements", list, [])
    for value in os_sets:
        if not isinstance(value, str) or not _OS_MEASUREMENTS.fullmatch(value):
            raise ConfigError(t.key("tdx_os_measurements"), "each must be MRTD:RTMR0:RTMR1:RTMR2, "
                              "48 bytes as 96 hex digits each (kit attest prints the set)")
    return VerifyConfig(
        answers=t.choice("answers", "signature", VERIFY_ANSWERS),
        app_address=address.lower().removeprefix("0x"),
        mr_enclaves=tuple(value.lower().removeprefix("0x") for value in enclaves),
        tdx_os_measurements=tuple(value.lower() for value in os_sets),
    )


def _contract(t: _Section) -> ContractConfig:
    from kit.contract.presets import PRESETS, canonical_output_schema

    preset = t.choice("preset", "chat", PRESETS)
    schema = canonical_output_schema(t.key("output_schema"), t.table.get("output_schema"), preset)
    return ContractConfig(preset=preset, output_schema=schema)


_SECTIONS: dict[str, tuple[str, ...]] = {
    "agent": ("name", "description", "system_prompt", "max_prompt_chars", "caller_token_secret"),
    "provider": (
        "kind", "base_url", "models", "default_model", "key_secret",
        "accept_key_in_body", "timeout_seconds", "max_tokens", "signing_addresses",
    ),
    "gateway": ("url",),
    "ipfs": ("api", "cid_version"),
    "tool": ("author", "name", "version", "prefix", "result", "gateways"),
    "verify": ("answers", "app_address", "mr_enclaves", "tdx_os_measurements"),
    "contract": ("preset", "output_schema"),
    "privacy": ("sealed_requests", "allow_plain_provider"),
}


def _privacy(t: _Section, provider: ProviderConfig) -> PrivacyConfig:
    privacy = PrivacyConfig(sealed_requests=t.get("sealed_requests", bool, False),
                            allow_plain_provider=t.get("allow_plain_provider", bool, False))
    if privacy.sealed_requests and provider.kind != "confidential" \
            and not privacy.allow_plain_provider:
        raise ConfigError(t.key("sealed_requests"), (
            f"provider.kind is {provider.kind!r}: that provider would read every sealed prompt "
            "in clear; use provider.kind = \"confidential\", or say so with [privacy] "
            "allow_plain_provider = true"))
    return privacy


def parse_config(data: dict[str, Any], root: Path) -> ProjectConfig:
    """Validate a parsed TOML document into a `ProjectConfig`."""
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(unknown[0], f"unknown section; allowed: {', '.join(_SECTIONS)}")
    if "agent" not in data:
        raise ConfigError("agent", "missing section [agent]")
    sections: dict[str, _Section] = {
        name: _Section(name, data.get(name, {}), keys) for name, keys in _SECTIONS.items()
    }
    agent = _agent(sections["agent"])
    provider = _provider(sections["provider"])
    if agent.caller_token_secret == provider.key_secret:
        raise ConfigError(
            "agent.caller_token_secret",
            "must differ from provider.key_secret: callers must never need the provider key",
        )
    gateway, ipfs = sections["gateway"], sections["ipfs"]
    api = ipfs.get("api", str, LOCAL_IPFS_API)
    problem = ipfs_api_problem(api)
    if problem:
        raise ConfigError(ipfs.key("api"), f"the value {problem}; use a multiaddr or http(s) URL")
    return ProjectConfig(
        agent=agent,
        provider=provider,
        gateway=GatewayConfig(
            url=gateway.url("url", LOCAL_GATEWAY).rstrip("/")
        ),
        ipfs=IpfsConfig(api=api, cid_version=ipfs.choice("cid_version", 0, CID_VERSIONS)),
        tool=_tool(sections["tool"], agent.name),
        root=root,
        verify=_verify(sections["verify"]),
        contract=_contract(sections["contract"]),
        privacy=_privacy(sections["privacy"], provider),
    )


def load_config(project_dir: Path | str = ".") -> ProjectConfig:
    """Load and validate `<project_dir>/agent.toml`."""
    root = Path(project_dir).resolve()
    path = root / CONFIG_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            CONFIG_FILE, f"not found in {root}; run `kit init DIR` or pass -C DIR"
        ) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(CONFIG_FILE, f"is not valid TOML: {exc}") from None
    return parse_config(data, root)

