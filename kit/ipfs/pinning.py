"""Pinning backends behind one small interface: the node, the IPFS Pinning Service API, Pinata.

Each backend's `pin` answers the CID the backend itself reports (the caller compares it with
the locally computed one) and whether this call created the pin, so that a caller undoing a
bad pin never removes one it did not create. Tokens come from environment variables and never
appear in a message. Remote calls retry only what is retryable (429 honouring Retry-After, 5xx,
connection failures), a bounded number of times.

A Pinning Service API pins by CID: the service must fetch the bytes from some peer. The pin
request therefore names the node's own multiaddrs (`origins`, from the node's `id`), and the
node dials the `delegates` the service answers with (bounded; a failed dial is a note, not an
error). A service can only fetch from a node it can reach: the local dev node listens on
loopback only, so a public deploy needs a reachable node, or Pinata's upload API.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Protocol

from kit.errors import InputError, KitError, NodeUnavailable, PinningError

if TYPE_CHECKING:
    import requests

    from kit.ipfs.client import IpfsClient

PINNING_TOKEN_ENV = "KIT_PINNING_TOKEN"
PINATA_TOKEN_ENV = "PINATA_JWT"
PINATA_API = "https://api.pinata.cloud"
PINATA_GATEWAY = "https://gateway.pinata.cloud"
PINATA_PREFIX = "pinata+"  # `pinata+http://127.0.0.1:PORT` selects Pinata at another address
MAX_ATTEMPTS = 4
MAX_RETRY_AFTER = 10.0
POLL_TIMEOUT = 60.0
MAX_ORIGINS = 20  # the Pinning Service API's limit for `origins`
MAX_DELEGATES = 8  # delegates dialled per pin, each within DIAL_TIMEOUT
DIAL_TIMEOUT = 10.0


@dataclass(frozen=True)
class Pinned:
    cid: str  # as the backend reports it, normalised (CIDv1 in base32)
    created: bool  # False when the backend already had this pin
    notes: tuple[str, ...] = ()  # things worth telling the user (e.g. a delegate not dialled)


class Pinner(Protocol):
    name: str
    gateway: str | None  # where the pinned content is served; None: the node's own gateway

    def pin(self, data: bytes, cid: str, filename: str, cid_version: int) -> Pinned: ...

    def unpin(self, cid: str) -> None: ...

    def is_pinned(self, cid: str) -> bool: ...


# --- the node -------------------------------------------------------------------------------


class NodePinner:
    """`add --pin` on the node: the node's own chunking gives the CID."""

    name = "node"
    gateway: str | None = None

    def __init__(self, client: IpfsClient) -> None:
        self.client = client

    def pin(self, data: bytes, cid: str, filename: str, cid_version: int) -> Pinned:
        from kit.ipfs.client import same_content

        before = self.client.pins()
        returned = self.client.add_bytes(data, cid_version=cid_version, name=filename)
        return Pinned(returned, created=not same_content(returned, before))

    def unpin(self, cid: str) -> None:
        self.client.unpin(cid)

    def is_pinned(self, cid: str) -> bool:
        return self.client.is_pinned(cid)


# --- HTTP with bounded retries --------------------------------------------------------------


class _Remote:
    """One pinning service over HTTPS with a bearer token; errors never include the token."""

    def __init__(self, base_url: str, token: str, service: str, timeout: float) -> None:
        import requests

        self.base_url = base_url.rstrip("/")
        self.service = service
        self.timeout = timeout
        self._token = token
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            response = self._send(method, path, attempt, **kwargs)
            if response is not None and response.status_code < 500 and response.status_code != 429:
                return self._checked(response)
            if attempt < MAX_ATTEMPTS:
                time.sleep(_delay(response, attempt))
        raise PinningError(self._gave_up(method, path, response))

    def _send(
        self, method: str, path: str, attempt: int, **kwargs: Any
    ) -> requests.Response | None:
        import requests

        try:
            return self._session.request(
                method, self.base_url + path, timeout=self.timeout, **kwargs
            )
        except requests.Timeout:
            if attempt == MAX_ATTEMPTS:
                raise PinningError(
                    f"{self.service} at {self.base_url} did not answer {method} {path} within "
                    f"{self.timeout:g}s ({MAX_ATTEMPTS} attempts); try again later"
                ) from None
        except requests.RequestException as exc:
            if attempt == MAX_ATTEMPTS:
                raise PinningError(
                    f"cannot reach {self.service} at {self.base_url} ({type(exc).__name__}); "
                    "check the URL and your network"
                ) from None
        return None

    def _checked(self, response: requests.Response) -> requests.Response:
        if response.status_code in (401, 403):
            raise PinningError(
                f"{self.service} rejected the token (HTTP {response.status_code}); check the "
                f"token in {self._token_env()} and its permissions"
            )
        if response.status_code >= 400:
            raise PinningError(
                f"{self.service} answered HTTP {response.status_code} to {response.request.method} "
                f"{response.request.path_url}: {self._excerpt(response)}"
            )
        return response

    def _gave_up(self, method: str, path: str, response: requests.Response | None) -> str:
        if response is not None and response.status_code == 429:
            return (
                f"{self.service} kept rate-limiting (HTTP 429) {method} {path} after "
                f"{MAX_ATTEMPTS} attempts; wait and deploy again"
            )
        status = "no answer" if response is None else f"HTTP {response.status_code}"
        return (
            f"{self.service} failed {method} {path} ({status}) after {MAX_ATTEMPTS} attempts; "
            "try again later or use another backend"
        )

    def _excerpt(self, response: requests.Response) -> str:
        return response.text[:200].replace(self._token, "<token>") or "(empty body)"

    def _token_env(self) -> str:
        return PINATA_TOKEN_ENV if self.service == "Pinata" else PINNING_TOKEN_ENV

    def json(self, response: requests.Response, *keys: str) -> dict[str, Any]:
        try:
            value = response.json()
        except ValueError:
            value = None
        if not isinstance(value, dict) or any(key not in value for key in keys):
            raise PinningError(
                f"{self.service} answered without {', '.join(keys)}: {self._excerpt(response)}"
            )
        return value


def _delay(response: requests.Response | None, attempt: int) -> float:
    """Retry-After (seconds) when the service gives one, else exponential backoff."""
    if response is not None:
        retry_after = response.headers.get("Retry-After", "")
        if retry_after.strip().isdigit():
            return min(float(retry_after), MAX_RETRY_AFTER)
    return min(0.25 * 2 ** (attempt - 1), MAX_RETRY_AFTER)


def _token(*names: str) -> str:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    raise InputError(f"no pinning token: set {' or '.join(names)} in the environment")


# --- IPFS Pinning Service API ---------------------------------------------------------------


def node_origins(node: IpfsClient) -> list[str]:
    """The node's multiaddrs from its `id` API, each ending in /p2p/<peer id>, at most
    MAX_ORIGINS: where a pinning service can fetch the content (if it can reach them)."""
    with node._calling("id", error=NodeUnavailable):  # noqa: SLF001 - the node's RPC boundary
        identity = node._rpc().id()  # noqa: SLF001
    peer = str(identity.get("ID") or "")
    origins: list[str] = []
    for address in identity.get("Addresses") or []:
        address = str(address)
        if peer and "/p2p/" not in address and "/ipfs/" not in address:
            address = f"{address}/p2p/{peer}"
        if address.startswith("/") and address not in origins:
            origins.append(address)
    return origins[:MAX_ORIGINS]


def is_public(multiaddr: str) -> bool:
    """Whether a multiaddr names a host a remote service could reach (a global IP or a DNS
    name other than localhost)."""
    parts = multiaddr.split("/")
    if len(parts) < 3:
        return False
    kind, host = parts[1], parts[2]
    if kind in ("ip4", "ip6"):
        try:
            return ipaddress.ip_address(host).is_global
        except ValueError:
            return False
    return kind in ("dns", "dns4", "dns6", "dnsaddr") and host != "localhost"


def dial_delegates(node: IpfsClient, delegates: list[Any]) -> list[str]:
    """`swarm connect` the node to each delegate (at most MAX_DELEGATES, each bounded by
    DIAL_TIMEOUT); returns one note per failure, never raises for one."""
    notes = []
    for delegate in delegates[:MAX_DELEGATES]:
        try:
            with node._calling(f"swarm connect {delegate!s:.200}"):  # noqa: SLF001
                node._rpc().swarm.connect(_OneAddress(str(delegate)),  # noqa: SLF001
                                          timeout=DIAL_TIMEOUT)
        except KitError as exc:
            notes.append(f"could not connect the node to the service's delegate: {exc}")
    if len(delegates) > MAX_DELEGATES:
        notes.append(f"dialled the first {MAX_DELEGATES} of {len(delegates)} delegates only")
    return notes


class _OneAddress:
    """A multiaddr for ipfshttpclient 0.8.0a2's `swarm.connect`, which sends `str(address)` and
    then every item of `address` itself (a slip for `addresses`): a plain string would add each
    of its characters as another `arg`. This one converts to the address and iterates empty."""

    def __init__(self, address: str) -> None:
        self.address = address

    def __str__(self) -> str:
        return self.address

    def __iter__(self) -> Iterator[str]:
        return iter(())


class PinningServicePinner:
    """Adds the bytes to the node (where the service fetches them), then `POST /pins {cid,
    origins}`, connects the node to the answer's `delegates`, and polls `GET /pins/{requestid}`
    until `pinned` or `failed`, within `poll_timeout`."""

    name = "pinning-service"
    gateway: str | None = None  # the bytes were added to the node as well

    def __init__(self, base_url: str, node: IpfsClient, *, token: str | None = None,
                 timeout: float = 30.0, poll_timeout: float = POLL_TIMEOUT) -> None:
        self.remote = _Remote(base_url, token or _token(PINNING_TOKEN_ENV),
                              "the pinning service", timeout)
        self.node = node
        self.poll_timeout = poll_timeout
        self._request_ids: dict[str, str] = {}

    def pin(self, data: bytes, cid: str, filename: str, cid_version: int) -> Pinned:
        added = self.node.add_bytes(data, cid_version=cid_version, name=filename)
        created = not self.is_pinned(added)
        origins, notes = self._origins()
        request: dict[str, Any] = {"cid": added, "name": filename}
        if origins:
            request["origins"] = origins
        answer = self.remote.json(self.remote.request("POST", "/pins", json=request),
                                  "requestid", "status", "pin")
        self._request_ids[added] = answer["requestid"]
        delegates = answer.get("delegates")
        notes += dial_delegates(self.node, delegates if isinstance(delegates, list) else [])
        final = self._wait_pinned(answer, origins, notes)
        returned = _normalised(final["pin"].get("cid", ""), self.remote.service)
        self._request_ids[returned] = answer["requestid"]
        return Pinned(returned, created, tuple(notes))

    def _origins(self) -> tuple[list[str], list[str]]:
        try:
            origins = node_origins(self.node)
        except KitError as exc:
            return [], [f"sent no origins: {exc}"]
        if not any(is_public(origin) for origin in origins):
            return origins, [unreachable_note(self.node.api, origins)]
        return origins, []

    def _wait_pinned(self, answer: dict[str, Any], origins: list[str],
                     notes: list[str]) -> dict[str, Any]:
        deadline = time.monotonic() + self.poll_timeout
        delay = 0.2
        while answer["status"] in ("queued", "pinning"):
            if time.monotonic() > deadline:
                raise PinningError(
                    f"the pinning service still reports '{answer['status']}' after "
                    f"{self.poll_timeout:g}s (request {answer['requestid']}); "
                    + "; ".join([*notes, "check it later"] if notes else ["check it later"])
                )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            response = self.remote.request("GET", f"/pins/{answer['requestid']}")
            answer = self.remote.json(response, "requestid", "status", "pin")
        if answer["status"] != "pinned":
            raise PinningError(
                f"the pinning service reports status '{answer['status']}' for request "
                f"{answer['requestid']}; "
                + "; ".join([*notes, "check that the content is reachable and try again"])
            )
        return answer

    def _request_ids_for(self, cid: str) -> list[str]:
        if cid in self._request_ids:
            return [self._request_ids[cid]]
        response = self.remote.request("GET", "/pins", params={"cid": cid})
        return [item["requestid"] for item in self.remote.json(response, "results")["results"]]

    def unpin(self, cid: str) -> None:
        for request_id in self._request_ids_for(cid):
            self.remote.request("DELETE", f"/pins/{request_id}")
        self._request_ids.pop(cid, None)

    def is_pinned(self, cid: str) -> bool:
        response = self.remote.request("GET", "/pins", params={"cid": cid, "status": "pinned"})
        return self.remote.json(response, "count")["count"] > 0


def unreachable_note(api: str, origins: list[str]) -> str:
    where = ", ".join(origins[:3]) if origins else "no address (an offline node)"
    return (
        f"the IPFS node at {api} announces {where}: a remote pinning service cannot fetch the "
        "content from it; deploy through a node the service can reach (--ipfs-api) or upload "
        "with --pinning-service pinata"
    )


# --- Pinata ---------------------------------------------------------------------------------


class PinataPinner:
    """Pinata's upload (`POST /pinning/pinFileToIPFS`): Pinata chunks the bytes itself."""

    name = "pinata"

    def __init__(self, base_url: str = PINATA_API, *, token: str | None = None,
                 timeout: float = 60.0, gateway: str | None = PINATA_GATEWAY) -> None:
        self.gateway = gateway
        self.remote = _Remote(base_url, token or _token(PINATA_TOKEN_ENV, PINNING_TOKEN_ENV),
                              "Pinata", timeout)

    def pin(self, data: bytes, cid: str, filename: str, cid_version: int) -> Pinned:
        options = {"cidVersion": cid_version, "wrapWithDirectory": False}
        response = self.remote.request(
            "POST", "/pinning/pinFileToIPFS",
            files={"file": (filename, data, "application/javascript")},
            data={"pinataOptions": json.dumps(options),
                  "pinataMetadata": json.dumps({"name": filename})},
        )
        answer = self.remote.json(response, "IpfsHash")
        return Pinned(_normalised(answer["IpfsHash"], "Pinata"),
                      created=not answer.get("isDuplicate", False))

    def unpin(self, cid: str) -> None:
        self.remote.request("DELETE", f"/pinning/unpin/{cid}")

    def is_pinned(self, cid: str) -> bool:
        response = self.remote.request(
            "GET", "/data/pinList", params={"hashContains": cid, "status": "pinned"}
        )
        return self.remote.json(response, "count")["count"] > 0


def _normalised(cid: str, service: str) -> str:
    from kit.cid import is_valid_cid
    from kit.ipfs.client import normalise_cid

    if not isinstance(cid, str) or not is_valid_cid(cid):
        raise PinningError(f"{service} answered with an invalid CID {cid!r:.80}")
    return normalise_cid(cid)


def make_pinner(spec: str | None, node: IpfsClient, *, timeout: float = 30.0) -> Pinner:
    """None: the node; `pinata` or `pinata+URL`: Pinata; an http(s) URL: a Pinning Service API.
    `timeout`: seconds for each remote call (deploy's --timeout).

    Pinata at another URL (`pinata+URL`) has no known gateway: pass one to deploy."""
    if spec is None:
        return NodePinner(node)
    if spec == "pinata":
        return PinataPinner(timeout=timeout)
    if spec.startswith(PINATA_PREFIX + "http"):
        return PinataPinner(spec[len(PINATA_PREFIX):], gateway=None, timeout=timeout)
    if spec.startswith(("http://", "https://")):
        return PinningServicePinner(spec, node, timeout=timeout)
    raise InputError(
        f"--pinning-service {spec!r} is not valid; use a Pinning Service API URL, "
        f"'pinata' or 'pinata+URL'"
    )
