"""Pinning backends behind one small interface: the node, the IPFS Pinning Service API, Pinata.

Each backend's `pin` answers the CID the backend itself reports (the caller compares it with
the locally computed one) and whether this call created the pin, so that a caller undoing a
bad pin never removes one it did not create. Tokens come from environment variables and never
appear in a message. Remote calls retry only what is retryable (429 honouring Retry-After, 5xx,
connection failures), a bounded number of times.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from kit.errors import InputError, PinningError

if TYPE_CHECKING:
    import requests

    from kit.ipfs import IpfsClient

PINNING_TOKEN_ENV = "KIT_PINNING_TOKEN"
PINATA_TOKEN_ENV = "PINATA_JWT"
PINATA_API = "https://api.pinata.cloud"
PINATA_GATEWAY = "https://gateway.pinata.cloud"
PINATA_PREFIX = "pinata+"  # `pinata+http://127.0.0.1:PORT` selects Pinata at another address
MAX_ATTEMPTS = 4
MAX_RETRY_AFTER = 10.0
POLL_TIMEOUT = 60.0


@dataclass(frozen=True)
class Pinned:
    cid: str  # as the backend reports it, normalised (CIDv1 in base32)
    created: bool  # False when the backend already had this pin


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
    gateway = None

    def __init__(self, client: IpfsClient) -> None:
        self.client = client

    def pin(self, data: bytes, cid: str, filename: str, cid_version: int) -> Pinned:
        from kit.ipfs import same_content

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


class PinningServicePinner:
    """Adds the bytes to the node (where the service fetches them), then `POST /pins {cid}`
    and polls `GET /pins/{requestid}` until `pinned` or `failed`, within `poll_timeout`."""

    name = "pinning-service"
    gateway = None  # the bytes were added to the node as well

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
        answer = self.remote.json(
            self.remote.request("POST", "/pins", json={"cid": added, "name": filename}),
            "requestid", "status", "pin",
        )
        self._request_ids[added] = answer["requestid"]
        final = self._wait_pinned(answer)
        returned = _normalised(final["pin"].get("cid", ""), self.remote.service)
        self._request_ids[returned] = answer["requestid"]
        return Pinned(returned, created)

    def _wait_pinned(self, answer: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + self.poll_timeout
        delay = 0.2
        while answer["status"] in ("queued", "pinning"):
            if time.monotonic() > deadline:
                raise PinningError(
                    f"the pinning service still reports '{answer['status']}' after "
                    f"{self.poll_timeout:g}s (request {answer['requestid']}); check it later"
                )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            response = self.remote.request("GET", f"/pins/{answer['requestid']}")
            answer = self.remote.json(response, "requestid", "status", "pin")
        if answer["status"] != "pinned":
            raise PinningError(
                f"the pinning service reports status '{answer['status']}' for request "
                f"{answer['requestid']}; check that the content is reachable and try again"
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
    from kit.ipfs import normalise_cid

    if not isinstance(cid, str) or not is_valid_cid(cid):
        raise PinningError(f"{service} answered with an invalid CID {cid!r:.80}")
    return normalise_cid(cid)


def make_pinner(spec: str | None, node: IpfsClient) -> Pinner:
    """None: the node; `pinata` or `pinata+URL`: Pinata; an http(s) URL: a Pinning Service API.

    Pinata at another URL (`pinata+URL`) has no known gateway: pass one to deploy."""
    if spec is None:
        return NodePinner(node)
    if spec == "pinata":
        return PinataPinner()
    if spec.startswith(PINATA_PREFIX + "http"):
        return PinataPinner(spec[len(PINATA_PREFIX):], gateway=None)
    if spec.startswith(("http://", "https://")):
        return PinningServicePinner(spec, node)
    raise InputError(
        f"--pinning-service {spec!r} is not valid; use a Pinning Service API URL, "
        f"'pinata' or 'pinata+URL'"
    )
