"""The CIDs `ipfs add` gives, computed offline: a streaming UnixFS (dag-pb) DAG builder.

Kubo's default recipe (REFERENCE section 3): sha2-256, fixed-size chunks, balanced layout with at
most 174 links per node, CIDv0 with dag-pb `File` leaves or CIDv1 with raw leaves, plain
directories with entries sorted by name, optional wrap-with-directory.

Files are read with pread into buffers reused per thread and hashed through memoryviews (leaves
of big files on a few threads: hashlib releases the GIL); the builder keeps only the current
frontier of the DAG (at most 174 links per level), so memory stays flat for any file size.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Union

from kit.errors import InputError

DEFAULT_CHUNK_SIZE = 262144
MAX_CHUNK_SIZE = 1048576  # Kubo refuses larger chunker sizes
MAX_LINKS = 174
HAMT_SHARDING_SIZE = 262144  # Kubo's default threshold for switching a directory to a HAMT
_HASH_THREADS = min(4, os.cpu_count() or 1)
_PARALLEL_FROM_CHUNKS = 4  # below this, starting threads costs more than it saves

DAG_PB = 0x70
RAW = 0x55
SHA2_256 = 0x12

# UnixFS Data.Type values
_DIRECTORY = 1
_FILE = 2
_SYMLINK = 4

StrPath = Union[str, "os.PathLike[str]"]
IncludeFilter = Callable[[Path], bool]


class DagNode:
    """One built block as its parent links to it: CID bytes, cumulative DAG size, file bytes."""

    __slots__ = ("cid", "filesize", "tsize")

    def __init__(self, cid: bytes, tsize: int, filesize: int) -> None:
        self.cid = cid
        self.tsize = tsize
        self.filesize = filesize


class DagParams:
    """How blocks are built: CID version, leaf kind and chunk size (Kubo's `ipfs add` options)."""

    __slots__ = ("chunk_size", "raw_leaves", "version")

    def __init__(
        self, version: int = 0, raw_leaves: bool | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        if version not in (0, 1):
            raise InputError(f"CID version must be 0 or 1, not {version!r}")
        if not isinstance(chunk_size, int) or not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise InputError(
                f"chunk size must be between 1 and {MAX_CHUNK_SIZE} bytes, not {chunk_size!r}"
            )
        self.version = version
        self.raw_leaves = (version == 1) if raw_leaves is None else raw_leaves
        self.chunk_size = chunk_size


# --- protobuf and multiformats encoding -----------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field_bytes(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(payload)) + payload


def _unixfs_data(kind: int, *, data: bytes | None = None, filesize: int | None = None,
                 blocksizes: Iterable[int] = ()) -> bytes:
    parts = [b"\x08" + _varint(kind)]
    if data is not None:
        parts.append(_field_bytes(0x12, data))
    if filesize is not None:
        parts.append(b"\x18" + _varint(filesize))
    parts.extend(b"\x20" + _varint(size) for size in blocksizes)
    return b"".join(parts)


def _pb_node(links: Iterable[tuple[bytes, DagNode]], unixfs: bytes) -> bytes:
    """dag-pb PBNode: Links (field 2) before Data (field 1); link names are always present."""
    parts = [
        _field_bytes(0x12, _field_bytes(0x0A, child.cid) + _field_bytes(0x12, name)
                     + b"\x18" + _varint(child.tsize))
        for name, child in links
    ]
    parts.append(_field_bytes(0x0A, unixfs))
    return b"".join(parts)


def _multihash(digest: bytes) -> bytes:
    return bytes((SHA2_256, len(digest))) + digest


def _cid_bytes(version: int, codec: int, digest: bytes) -> bytes:
    if version == 0:
        return _multihash(digest)
    return b"\x01" + _varint(codec) + _multihash(digest)


def _pb_block(params: DagParams, block: bytes, links_tsize: int, filesize: int) -> DagNode:
    cid = _cid_bytes(params.version, DAG_PB, hashlib.sha256(block).digest())
    return DagNode(cid, len(block) + links_tsize, filesize)


_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {char: index for index, char in enumerate(_B58_ALPHABET)}


def _base58_encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, rest = divmod(number, 58)
        digits.append(_B58_ALPHABET[rest])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(digits))


def _base58_decode(text: str) -> bytes:
    number = 0
    for char in text:
        if char not in _B58_INDEX:
            raise ValueError(f"not base58: {char!r}")
        number = number * 58 + _B58_INDEX[char]
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\0" * zeros + body


def _cid_text(cid: bytes) -> str:
    """CIDv0 as base58btc `Qm...`, CIDv1 as multibase base32 `b...` (what Kubo prints)."""
    if cid[0] == SHA2_256:
        return _base58_encode(cid)
    return "b" + base64.b32encode(cid).decode("ascii").lower().rstrip("=")


# --- files ----------------------------------------------------------------------------------


def _raw_leaf(chunk: memoryview) -> DagNode:
    size = len(chunk)
    return DagNode(_cid_bytes(1, RAW, hashlib.sha256(chunk).digest()), size, size)


def _pb_leaf(params: DagParams, chunk: memoryview) -> DagNode:
    """A UnixFS `File` leaf, hashed as prefix + chunk view + suffix so the chunk is never copied."""
    size = len(chunk)
    data_field = b"\x12" + _varint(size)
    suffix = b"\x18" + _varint(size)
    unixfs_length = 2 + len(data_field) + size + len(suffix)
    prefix = b"\x0a" + _varint(unixfs_length) + b"\x08\x02" + data_field
    hasher = hashlib.sha256(prefix)
    hasher.update(chunk)
    hasher.update(suffix)
    cid = _cid_bytes(params.version, DAG_PB, hasher.digest())
    return DagNode(cid, len(prefix) + size + len(suffix), size)


class _BalancedFile:
    """Kubo's balanced layout, built bottom-up while leaves stream in.

    `levels[i]` holds the finished nodes of depth i not yet linked by a parent; a level is
    folded into one parent as soon as it holds MAX_LINKS nodes, so only the frontier is kept.
    """

    def __init__(self, params: DagParams) -> None:
        self._params = params
        self._levels: list[list[DagNode]] = [[]]

    def add_leaf(self, leaf: DagNode) -> None:
        levels = self._levels
        depth, node = 0, leaf
        while True:
            if depth == len(levels):
                levels.append([])
            levels[depth].append(node)
            if len(levels[depth]) < MAX_LINKS:
                return
            node = self._parent(levels[depth])
            levels[depth] = []
            depth += 1

    def _parent(self, children: list[DagNode]) -> DagNode:
        filesize = sum(child.filesize for child in children)
        unixfs = _unixfs_data(_FILE, filesize=filesize, blocksizes=[c.filesize for c in children])
        block = _pb_node(((b"", child) for child in children), unixfs)
        return _pb_block(self._params, block, sum(child.tsize for child in children), filesize)

    def root(self) -> DagNode:
        levels = self._levels
        for depth, nodes in enumerate(levels):
            is_top = not any(levels[depth + 1:])
            if is_top and len(nodes) == 1:
                return nodes[0]
            if nodes:
                if is_top:
                    levels.append([])
                levels[depth + 1].append(self._parent(nodes))
        return self._empty_file()

    def _empty_file(self) -> DagNode:
        if self._params.raw_leaves:
            return _raw_leaf(memoryview(b""))
        return _pb_block(self._params, _field_bytes(0x0A, _unixfs_data(_FILE, filesize=0)), 0, 0)


def _leaf_maker(params: DagParams) -> Callable[[memoryview], DagNode]:
    if params.raw_leaves:
        return _raw_leaf
    return lambda chunk: _pb_leaf(params, chunk)


def _bytes_dag(data: bytes, params: DagParams) -> DagNode:
    builder, make_leaf, view = _BalancedFile(params), _leaf_maker(params), memoryview(data)
    for start in range(0, len(view), params.chunk_size):
        builder.add_leaf(make_leaf(view[start:start + params.chunk_size]))
    return builder.root()


def _read_exactly(fd: int, view: memoryview, offset: int) -> None:
    filled = 0
    while filled < len(view):
        count = os.preadv(fd, [view[filled:]], offset + filled)
        if not count:
            raise InputError("a file shrank while it was being hashed; hash it again when it is "
                             "no longer being written")
        filled += count


def _leaf_reader(fd: int, size: int, params: DagParams) -> Callable[[int], DagNode]:
    """The leaf at a file offset, read with pread into a buffer reused by the calling thread."""
    from threading import local

    chunk_size, make_leaf, buffers = params.chunk_size, _leaf_maker(params), local()

    def leaf_at(offset: int) -> DagNode:
        if not hasattr(buffers, "view"):
            buffers.view = memoryview(bytearray(chunk_size))
        view = buffers.view[:min(chunk_size, size - offset)]
        _read_exactly(fd, view, offset)
        return make_leaf(view)

    return leaf_at


def _in_threads(leaf_at: Callable[[int], DagNode], offsets: range) -> Iterator[DagNode]:
    """Leaves in order, hashed on a few threads (hashlib releases the GIL) with a bounded
    window in flight, so memory stays at a few chunks whatever the file size."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    with ThreadPoolExecutor(_HASH_THREADS) as pool:
        pending: deque[Future[DagNode]] = deque()
        for offset in offsets:
            pending.append(pool.submit(leaf_at, offset))
            if len(pending) > 2 * _HASH_THREADS:
                yield pending.popleft().result()
        for future in pending:
            yield future.result()


def _file_dag(path: Path, params: DagParams) -> DagNode:
    builder = _BalancedFile(params)
    with open(path, "rb", buffering=0) as handle:
        fd = handle.fileno()
        size = os.fstat(fd).st_size
        leaf_at = _leaf_reader(fd, size, params)
        offsets = range(0, size, params.chunk_size)
        parallel = _HASH_THREADS > 1 and len(offsets) >= _PARALLEL_FROM_CHUNKS
        for leaf in _in_threads(leaf_at, offsets) if parallel else map(leaf_at, offsets):
            builder.add_leaf(leaf)
    return builder.root()


# --- directories and symlinks ---------------------------------------------------------------


def _directory_node(entries: list[tuple[bytes, DagNode]], params: DagParams, where: str) -> DagNode:
    entries = sorted(entries, key=lambda entry: entry[0])
    estimated = sum(len(name) + len(child.cid) for name, child in entries)
    if estimated >= HAMT_SHARDING_SIZE:
        raise InputError(
            f"{where}: {len(entries)} entries are too many for a plain directory (Kubo would "
            "shard it as a HAMT, which `kit cid` does not compute); split the directory"
        )
    block = _pb_node(entries, _unixfs_data(_DIRECTORY))
    return _pb_block(params, block, sum(child.tsize for _, child in entries), 0)


def _symlink_node(path: Path, params: DagParams) -> DagNode:
    block = _field_bytes(0x0A, _unixfs_data(_SYMLINK, data=os.fsencode(os.readlink(path))))
    return _pb_block(params, block, 0, 0)


def _is_visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _tree_node(path: Path, params: DagParams, include: IncludeFilter, *, top: bool) -> DagNode:
    mode = os.stat(path).st_mode if top else os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return _symlink_node(path, params)
    if stat.S_ISREG(mode):
        return _file_dag(path, params)
    if stat.S_ISDIR(mode):
        children = [
            (os.fsencode(child.name), _tree_node(child, params, include, top=False))
            for child in path.iterdir()
            if include(child)
        ]
        return _directory_node(children, params, str(path))
    raise InputError(f"{path}: not a regular file, directory or symlink; remove it or exclude it")


def _wrapped(name: bytes, child: DagNode, params: DagParams) -> DagNode:
    return _directory_node([(name, child)], params, "wrapping directory")


def _existing(path: StrPath) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory; check the path")
    return path


def _wrap_name(path: Path) -> bytes:
    name = os.path.basename(os.path.abspath(path))
    if not name:
        raise InputError(f"{path}: has no base name to wrap it under; pass a named path")
    return os.fsencode(name)


# --- public API -----------------------------------------------------------------------------


def bytes_cid(data: bytes, *, version: int = 0, raw_leaves: bool | None = None,
              chunk_size: int = DEFAULT_CHUNK_SIZE, wrap_name: str | None = None) -> str:
    """The CID `ipfs add` gives `data` (wrapped in a directory under `wrap_name` if given)."""
    params = DagParams(version, raw_leaves, chunk_size)
    node = _bytes_dag(data, params)
    if wrap_name is not None:
        if not wrap_name or "/" in wrap_name:
            raise InputError(f"wrap name {wrap_name!r} must be a non-empty name without '/'")
        node = _wrapped(wrap_name.encode("utf-8"), node, params)
    return _cid_text(node.cid)


def file_cid(path: StrPath, *, version: int = 0, raw_leaves: bool | None = None,
             chunk_size: int = DEFAULT_CHUNK_SIZE, wrap: bool = False) -> str:
    """The CID `ipfs add [-w] FILE` gives; the file is streamed, never loaded whole."""
    path = _existing(path)
    if not path.is_file():
        raise InputError(f"{path}: not a regular file; use path_cid for a directory")
    return path_cid(path, version=version, raw_leaves=raw_leaves, chunk_size=chunk_size, wrap=wrap)


def path_cid(path: StrPath, *, version: int = 0, raw_leaves: bool | None = None,
             chunk_size: int = DEFAULT_CHUNK_SIZE, wrap: bool = False,
             include: IncludeFilter | None = None, hidden: bool = False) -> str:
    """The CID `ipfs add -r [-w] [-H] PATH` gives, for a file or a directory.

    Like Kubo, entries whose name starts with "." are skipped unless `hidden`; `include`, if
    given, must also accept an entry (it is called with each path below PATH). Symlinks inside
    a directory become UnixFS symlink nodes; PATH itself is followed.
    """
    params = DagParams(version, raw_leaves, chunk_size)
    path = _existing(path)

    def accepts(entry: Path) -> bool:
        return (hidden or _is_visible(entry)) and (include is None or include(entry))

    try:
        node = _tree_node(path, params, accepts, top=True)
    except OSError as exc:
        raise InputError(f"{exc.filename}: {exc.strerror}; check that it is readable") from None
    if wrap:
        node = _wrapped(_wrap_name(path), node, params)
    return _cid_text(node.cid)


def parse_chunker(spec: str) -> int:
    """Kubo's `--chunker size-N` as a chunk size in bytes."""
    prefix, _, number = spec.partition("-")
    if prefix != "size" or not number.isdigit():
        raise InputError(f"chunker {spec!r} is not supported; use size-N (e.g. size-262144)")
    size = int(number)
    if not 0 < size <= MAX_CHUNK_SIZE:
        raise InputError(f"chunker {spec!r}: N must be between 1 and {MAX_CHUNK_SIZE}")
    return size


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while offset < len(data) and shift < 64:
        byte = data[offset]
        value |= (byte & 0x7F) << shift
        offset += 1
        if not byte & 0x80:
            return value, offset
        shift += 7
    raise ValueError("truncated varint")


def _decode_multibase(text: str) -> bytes:
    prefix, body = text[:1], text[1:]
    if prefix in ("b", "B"):
        body = body.upper()
        return base64.b32decode(body + "=" * (-len(body) % 8))
    if prefix == "z":
        return _base58_decode(body)
    if prefix in ("f", "F"):
        return bytes.fromhex(body)
    raise ValueError(f"unsupported multibase prefix {prefix!r}")


def _check_multihash(data: bytes, offset: int) -> None:
    _code, offset = _read_varint(data, offset)
    length, offset = _read_varint(data, offset)
    if len(data) - offset != length or length == 0:
        raise ValueError("multihash length does not match its digest")


def _parse_cid(cid: str) -> tuple[int, int, bytes]:
    """(version, codec, multihash) of a CID string; InputError when it is not one."""
    try:
        if len(cid) == 46 and cid.startswith("Qm"):
            raw = _base58_decode(cid)
            if len(raw) != 34 or raw[:2] != b"\x12\x20":
                raise ValueError("not a sha2-256 multihash")
            return 0, DAG_PB, raw
        raw = _decode_multibase(cid)
        version, offset = _read_varint(raw, 0)
        if version != 1:
            raise ValueError(f"unknown CID version {version}")
        codec, offset = _read_varint(raw, offset)
        _check_multihash(raw, offset)
        return 1, codec, raw[offset:]
    except (ValueError, IndexError) as exc:
        raise InputError(f"{cid!r} is not a valid CID ({exc}); copy it again from its source") from None


def cid_version_of(cid: str) -> int:
    """0 or 1; InputError when `cid` is not a valid CID."""
    return _parse_cid(cid)[0]


def to_cidv1_base32(cid: str) -> str:
    """The same content address (multihash and codec) as a CIDv1 in base32."""
    _, codec, multihash = _parse_cid(cid)
    return _cid_text(b"\x01" + _varint(codec) + multihash)


def is_valid_cid(text: str) -> bool:
    try:
        _parse_cid(text)
    except InputError:
        return False
    return True
