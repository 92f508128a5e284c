"""The Kubo RPC API client (through `ipfshttpclient` 0.8.0a2), tolerant of js-ipfs.

`ipfshttpclient.connect()` refuses every current daemon by version, so the client is built
directly. What the library sends is set explicitly: `cid-version`, `raw-leaves` (it defaults to
false, which is not Kubo's CIDv1 recipe) and `cid-base=base32` for CIDv1. Answers are
normalised: `Size` may be an int (js-ipfs) or a string (Kubo), and CIDv1 may come back in
base58btc (js-ipfs lists pins that way), so every returned CIDv1 is rewritten in base32.
Every call carries a timeout: in offline mode js-ipfs hangs on a CID it does not have.
"""

from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from kit.cid import cid_version_of, to_cidv1_base32
from kit.contract.config import LOCAL_IPFS_API
from kit.errors import InputError, NodeUnavailable, PinningError

if TYPE_CHECKING:
    import ipfshttpclient

DEFAULT_TIMEOUT = 30.0


def normalise_cid(cid: str) -> str:
    """CIDv0 as is, CIDv1 in base32: the form two CIDs are compared in."""
    return cid if cid_version_of(cid) == 0 else to_cidv1_base32(cid)


def same_content(cid: str, cids: set[str]) -> bool:
    """Whether `cids` holds `cid` in any form (Qm... and its bafybei... are one pin)."""
    return to_cidv1_base32(cid) in {to_cidv1_base32(other) for other in cids}


def _as_multiaddr(api: str) -> str:
    """ipfshttpclient takes a multiaddr; accept `http://host:port` too."""
    if not api.startswith(("http://", "https://")):
        return api
    from urllib.parse import urlsplit

    url = urlsplit(api)
    kind = "ip4" if (url.hostname or "").replace(".", "").isdigit() else "dns"
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"/{kind}/{url.hostname}/tcp/{port}/{url.scheme}"


class IpfsClient:
    """Add, cat, pin, unpin and list pins on one node; every failure is a kit error."""

    def __init__(self, api: str = LOCAL_IPFS_API, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.api = api
        self.timeout = timeout
        self._client: ipfshttpclient.Client | None = None

    def _rpc(self) -> ipfshttpclient.Client:
        if self._client is None:
            import ipfshttpclient
            from ipfshttpclient.exceptions import AddressError

            try:
                self._client = ipfshttpclient.Client(addr=_as_multiaddr(self.api),
                                                     timeout=self.timeout)
            except AddressError:
                raise InputError(
                    f"the IPFS API address {self.api!r:.80} is not valid; pass --ipfs-api (or "
                    "set ipfs.api) as a multiaddr like /ip4/127.0.0.1/tcp/5002/http or a URL"
                ) from None
        return self._client

    @contextmanager
    def _calling(self, what: str, error: type[Exception] = PinningError) -> Iterator[None]:
        from ipfshttpclient import exceptions as ipfs_errors

        try:
            with warnings.catch_warnings():
                # ipfshttpclient passes urllib3 an argument it deprecates; not the user's concern
                warnings.simplefilter("ignore", FutureWarning)
                yield
        except ipfs_errors.TimeoutError:
            raise NodeUnavailable(
                f"the IPFS node at {self.api} did not answer {what} within {self.timeout:g}s; "
                "check it with `kit node status` (restart with `kit node down && kit node up`)"
            ) from None
        except ipfs_errors.ErrorResponse as exc:
            raise error(f"the IPFS node at {self.api} refused {what}: {exc}") from None
        except ipfs_errors.CommunicationError as exc:
            raise NodeUnavailable(
                f"cannot reach the IPFS node API at {self.api} ({type(exc).__name__}) during "
                f"{what}; start one with `kit node up` or pass --ipfs-api ADDR"
            ) from None

    def add_bytes(self, data: bytes, *, cid_version: int = 0, name: str = "agent.js",
                  pin: bool = True) -> str:
        """Add `data` as one file with Kubo's recipe for `cid_version`; the CID the node gives."""
        stream = io.BytesIO(data)
        stream.name = name  # the multipart part's filename (each part gets a Content-Type)
        # add() writes its own raw-leaves/cid-version over `opts`: pass those as arguments.
        opts = {"cid-base": "base32"} if cid_version == 1 else {}
        with self._calling("add"):
            answer = self._rpc().add(stream, pin=pin, cid_version=cid_version,
                                     raw_leaves=cid_version == 1, opts=opts)
        return normalise_cid(_single(answer)["Hash"])

    def add_directory(self, path: Path, *, wrap: bool = True) -> str:
        """`ipfs add -r [-w] PATH` with Kubo's CIDv0 recipe, pinned; the root CID the node gives."""
        with self._calling("add -r"):
            answer = self._rpc().add(str(path), recursive=True, wrap_with_directory=wrap,
                                     pin=True, cid_version=0)
        # one entry per file and directory, the root last (named "" when wrapped)
        return normalise_cid(_single(answer)["Hash"])

    def cat(self, cid: str, *, timeout: float | None = None) -> bytes:
        with self._calling(f"cat {cid}", error=NodeUnavailable):
            return self._rpc().cat(cid, timeout=timeout or self.timeout)

    def pin(self, cid: str) -> None:
        with self._calling(f"pin add {cid}"):
            self._rpc().pin.add(cid)

    def unpin(self, cid: str) -> None:
        with self._calling(f"pin rm {cid}"):
            self._rpc().pin.rm(cid)

    def pins(self) -> set[str]:
        """Recursively pinned CIDs (the ones `add --pin` and `pin add` create), normalised."""
        with self._calling("pin ls", error=NodeUnavailable):
            answer = self._rpc().pin.ls(type="recursive")
        return {normalise_cid(cid) for cid in answer["Keys"]}

    def is_pinned(self, cid: str) -> bool:
        """Pinned under this CID or another one with the same multihash and codec."""
        return same_content(cid, self.pins())

    def gateway_url(self) -> str:
        """The node's own HTTP gateway, read from its config (0.0.0.0 becomes 127.0.0.1)."""
        from kit.ipfs.node import multiaddr_to_url

        with self._calling("config Addresses.Gateway", error=NodeUnavailable):
            answer = self._rpc().config.get()
        gateway = answer.get("Addresses", {}).get("Gateway")
        if isinstance(gateway, list):
            gateway = gateway[0] if gateway else None
        if not gateway:
            raise NodeUnavailable(
                f"the IPFS node at {self.api} has no HTTP gateway; pass --gateway URL"
            )
        return multiaddr_to_url(gateway).replace("0.0.0.0", "127.0.0.1")

    def is_up(self) -> bool:
        try:
            with self._calling("version", error=NodeUnavailable):
                self._rpc().version()
        except NodeUnavailable:
            return False
        return True


def _single(answer: Any) -> dict[str, Any]:
    """`add` answers one object per added entry; one file gives one (a list on some daemons)."""
    if isinstance(answer, list):
        answer = answer[-1]
    if "Hash" not in answer:
        raise PinningError(f"the IPFS node answered `add` without a Hash: {dict(answer)!r:.200}")
    return dict(answer)
