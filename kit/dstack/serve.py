"""`kit gateway serve`: the production face of the local gateway, for a dstack CVM.

The same protocol and runtime as `kit dev` (`kit.local.gateway.LocalGateway`), without the dev
conveniences:

- contracts come only from configured IPFS HTTP gateways (``GET <gateway>/ipfs/<cid>``) or a
  Kubo RPC API, are re-hashed, and bytes that do not hash to the CID are refused (another
  source is tried; if none gives matching bytes, 502 ``cid_mismatch``). Verified code is cached
  in memory and, when a data directory is given, on disk (re-hashed when read back);
- there is no project directory: nothing is auto-loaded from a local build;
- the Wapo globals come from the guest agent (`kit.dstack.guest`): `Wapo.deriveSecret(salt)`
  from ``GetKey`` along a path naming the CID (and mixed with the code's hash, as in `kit dev`),
  so contracts never share keys, replicas of one app share theirs and other apps differ; the
  quote (`Wapo.sgxQuote`) is ``GetQuote``'s TDX quote binding the CID and the message
  (`kit.trust.tdx.tdx_report_data`), with the event log and the compose hash. The runtime's
  worker key (behind `Wapo.workerSign`/`workerPublicKey`) is ``GetKey`` on ``WORKER_KEY_PATH``;
- the vault file is sealed at rest (AES-256-GCM) with a key from the guest agent's ``GetKey``
  on ``SEALING_KEY_PATH``: replicas of one app (same KMS app key) read it, another app cannot.
  Entries stay bound to their CID as in the Phala vault.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from kit.errors import CidMismatch, ExternalError, InputError
from kit.local.gateway import CodeNotFound, CodeStore, LocalGateway, hashes_to
from kit.local.vault import Vault, VaultEntry, VaultFileInvalid

SEALING_KEY_PATH = "agent-contract-kit/vault-sealing/v1"
WORKER_KEY_PATH = "agent-contract-kit/worker-key/v1"
SEALED_MAGIC = b"KIT-SEALED-VAULT-v1\n"
MAX_CODE_BYTES = 8 << 20
FETCH_TIMEOUT = 10.0


def sealing_key(endpoint: str | None = None, timeout: float = 5.0) -> bytes:
    """The vault sealing key: HKDF-SHA256 of the guest agent's key on SEALING_KEY_PATH."""
    return _app_key(SEALING_KEY_PATH, b"agent-contract-kit vault sealing v1", endpoint, timeout)


def worker_key(endpoint: str | None = None, timeout: float = 5.0) -> bytes:
    """The runtime's 32-byte worker key: HKDF-SHA256 of the key on WORKER_KEY_PATH."""
    return _app_key(WORKER_KEY_PATH, b"agent-contract-kit worker key v1", endpoint, timeout)


def _app_key(path: str, label: bytes, endpoint: str | None, timeout: float) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from dstack_sdk import DstackClient

    try:
        material = DstackClient(endpoint, timeout=timeout).get_key(path, label.decode()
                                                                   ).decode_key()
    except (OSError, ValueError, RuntimeError) as exc:
        raise ExternalError(f"the dstack guest agent did not answer GetKey "
                            f"({type(exc).__name__}); is /var/run/dstack.sock mounted "
                            "(or DSTACK_SIMULATOR_ENDPOINT set for `kit dstack-sim`)?") from None
    except Exception as exc:  # httpx errors: the SDK does not wrap them
        raise ExternalError(f"the dstack guest agent did not answer GetKey "
                            f"({type(exc).__name__})") from None
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(material)


class SealedVault(Vault):
    """`kit.local.vault.Vault` whose file is AES-256-GCM sealed: magic || nonce || ciphertext."""

    def __init__(self, path: Path, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(key) != 32:
            raise InputError("the vault sealing key must be 32 bytes")
        self._aead = AESGCM(key)
        super().__init__(path)

    def __repr__(self) -> str:
        return f"SealedVault(path={str(self.path)!r})"

    def _load(self) -> dict[str, VaultEntry]:
        from cryptography.exceptions import InvalidTag

        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        if not blob.startswith(SEALED_MAGIC) or len(blob) < len(SEALED_MAGIC) + 12 + 16:
            raise VaultFileInvalid(f"{self.path} is not a sealed vault; move it aside")
        nonce = blob[len(SEALED_MAGIC):len(SEALED_MAGIC) + 12]
        try:
            plain = self._aead.decrypt(nonce, blob[len(SEALED_MAGIC) + 12:], SEALED_MAGIC)
        except InvalidTag:
            raise VaultFileInvalid(f"{self.path} was sealed by another app (or altered): it "
                                   "cannot be opened with this app's key") from None
        try:
            document = json.loads(plain)
            entries = [VaultEntry(**item) for item in document["entries"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise VaultFileInvalid(f"{self.path}: sealed content is not a vault "
                                   f"({type(exc).__name__})") from None
        return {entry.key: entry for entry in entries}

    def _save(self, entries: dict[str, VaultEntry]) -> None:
        from dataclasses import asdict

        from kit.fsutil import write_private

        document = {"version": 1, "entries": [asdict(e) for e in entries.values()]}
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, json.dumps(document).encode(), SEALED_MAGIC)
        write_private(self.path, SEALED_MAGIC + nonce + sealed)


class RemoteCodeStore(CodeStore):
    """Verified code by CID from IPFS HTTP gateways and/or a Kubo RPC API; never a project."""

    def __init__(self, gateways: Sequence[str], ipfs_api: str | None,
                 cache_dir: Path | None = None, timeout: float = FETCH_TIMEOUT) -> None:
        super().__init__(None, ipfs_api, timeout)
        self.gateways = [g.rstrip("/") for g in gateways]
        self.cache_dir, self.timeout = cache_dir, timeout

    def _fetch_verified(self, cid: str) -> str:
        mismatched = []
        for source, data in self._candidates(cid):
            if data is None:
                continue
            if hashes_to(data, cid):
                self._remember(cid, data)
                return data.decode("utf-8", "replace")
            mismatched.append(source)
        if mismatched:
            raise CidMismatch(f"{', '.join(mismatched)} returned bytes for {cid} that do not "
                              "hash to that CID; refusing to run them")
        raise CodeNotFound(f"no source has {cid} (IPFS gateways: {len(self.gateways)}, RPC "
                           f"API: {'yes' if self.ipfs_api else 'no'})")

    def _candidates(self, cid: str):  # type: ignore[no-untyped-def]
        yield "the disk cache", self._cached(cid)
        if self.ipfs_api:
            yield "the IPFS RPC API", self._from_ipfs(cid)
        for index, gateway in enumerate(self.gateways):
            yield f"IPFS gateway #{index + 1}", self._from_gateway(gateway, cid)

    def _from_gateway(self, gateway: str, cid: str) -> bytes | None:
        import requests

        try:
            with requests.get(f"{gateway}/ipfs/{cid}", timeout=self.timeout, stream=True,
                              allow_redirects=False) as response:
                if response.status_code != 200:
                    return None
                data = b""
                for chunk in response.iter_content(65536):
                    data += chunk
                    if len(data) > MAX_CODE_BYTES:
                        return None
                return data
        except requests.RequestException:
            return None

    def _cache_path(self, cid: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{cid}.js"

    def _cached(self, cid: str) -> bytes | None:
        path = self._cache_path(cid)
        try:
            return path.read_bytes() if path is not None else None
        except OSError:
            return None

    def _remember(self, cid: str, data: bytes) -> None:
        from kit.fsutil import atomic_write

        path = self._cache_path(cid)
        if path is not None:
            try:
                atomic_write(path, data)
            except OSError:
                pass  # a read-only cache is a slower cache, not a failure


def production_gateway(*, gateways: Sequence[str], ipfs_api: str | None, data_dir: Path,
                       dstack_endpoint: str | None = None, host: str = "127.0.0.1",
                       port: int = 8000, max_concurrency: int = 8,
                       **options: Any) -> LocalGateway:
    """A `LocalGateway` with remote, verified code and a sealed vault (module docstring)."""
    from kit.contract.config import check_option_url

    if not gateways and not ipfs_api:
        raise InputError("give at least one --ipfs-gateway URL or --ipfs-api address to fetch "
                         "contracts from")
    from kit.dstack.guest import GuestAgent

    checked = [check_option_url("--ipfs-gateway", url) for url in gateways]
    key = sealing_key(dstack_endpoint)
    options.setdefault("worker_key", worker_key(dstack_endpoint))
    options.setdefault("wapo_for", GuestAgent(dstack_endpoint).wapo_for)
    data_dir = Path(data_dir)
    vault_path = data_dir / "vault.sealed"
    # LocalGateway opens a plain vault at construction; that path is never written (the
    # sealed vault replaces it before the first request).
    gateway = LocalGateway(None, ipfs_api=None, vault_path=data_dir / ".unused-plain-vault",
                           host=host, port=port, max_concurrency=max_concurrency, **options)
    gateway.vault = SealedVault(vault_path, key)
    gateway.code = RemoteCodeStore(checked, ipfs_api, data_dir / "code")
    return gateway
