"""kit.cid and `kit cid` against independent implementations: the published vectors of
REFERENCE section 3, PyPI `aleph-cid` (Rust) and npm `ipfs-only-hash` (js UnixFS importer)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aleph_cid
import pytest

from kit.cid import (
    bytes_cid,
    cid_version_of,
    file_cid,
    is_valid_cid,
    path_cid,
    to_cidv1_base32,
)
from kit.errors import InputError

CHUNK = 262144
SIZES = [0, 1, 11, CHUNK, CHUNK + 1, 174 * CHUNK, 174 * CHUNK + 1, 50 * 2**20]
ORACLE_JS = Path(__file__).with_name("oracle_unixfs.js")
MiB = 2**20

Oracle = Callable[[list[dict]], list[str]]


def pseudo_random(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def aleph_stream(path: Path, version: int) -> str:
    hasher = (aleph_cid.CidHasher.for_ipfs() if version == 0
              else aleph_cid.CidHasher.for_ipfs_v1_raw_leaves())
    with open(path, "rb") as handle:
        while block := handle.read(MiB):
            hasher.update(block)
    return hasher.finalize()


def run_kit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kit", "cid", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def tree_listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.lstat().st_size) for p in root.rglob("*"))


@pytest.fixture(scope="session")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Oracle:
    """Runs tests/oracle_unixfs.js over a freshly installed, pinned ipfs-only-hash."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("npm/node not installed: the ipfs-only-hash oracle cannot run")
    workdir = tmp_path_factory.mktemp("ipfs-only-hash")
    install = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--silent", "ipfs-only-hash@4.0.0"],
        cwd=workdir, capture_output=True, text=True, timeout=300, check=False,
    )
    assert install.returncode == 0, f"npm install ipfs-only-hash failed: {install.stderr[-2000:]}"
    script = workdir / "oracle.js"
    shutil.copy(ORACLE_JS, script)

    def compute(jobs: list[dict]) -> list[str]:
        done = subprocess.run(["node", str(script)], input=json.dumps(jobs), cwd=workdir,
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)

    return compute


@pytest.fixture(scope="session")
def sized_files(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    directory = tmp_path_factory.mktemp("sized")
    files = {}
    for size in SIZES:
        files[size] = directory / f"data-{size}.bin"
        files[size].write_bytes(pseudo_random(size, seed=size))
    return files


@pytest.fixture(scope="session")
def js_sized_cids(oracle: Oracle, sized_files: dict[int, Path]) -> dict[tuple[int, int], str]:
    keys = [(size, version) for size in SIZES for version in (0, 1)]
    jobs = [{"path": str(sized_files[size]),
             "options": {"cidVersion": version, "rawLeaves": version == 1}}
            for size, version in keys]
    return dict(zip(keys, oracle(jobs), strict=True))


# --- files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "version", "expected"), [
    (b"hello world", 0, "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"),
    (b"hello world", 1, "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"),
    (b"", 0, "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"),
])
def test_published_vectors(data: bytes, version: int, expected: str) -> None:
    assert bytes_cid(data, version=version) == expected


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("size", SIZES)
def test_file_matches_aleph_cid(sized_files: dict[int, Path], size: int, version: int) -> None:
    assert file_cid(sized_files[size], version=version) == aleph_stream(sized_files[size], version)


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("size", SIZES)
def test_file_matches_ipfs_only_hash(sized_files: dict[int, Path], js_sized_cids: dict,
                                     size: int, version: int) -> None:
    assert file_cid(sized_files[size], version=version) == js_sized_cids[(size, version)]


@pytest.mark.parametrize("size", [0, 11, CHUNK + 1])
def test_bytes_cid_matches_aleph_one_shot(size: int) -> None:
    assert bytes_cid(pseudo_random(size, seed=7)) == aleph_cid.compute_cid(pseudo_random(size, 7))


# 174*174+1 one-byte chunks need three levels of internal nodes: the balanced layout's third tier.
LEAF_OPTION_CASES = [
    (174 * 174 + 1, 1, 0, None), (174 * 174 + 1, 1, 1, None), (174 * 174, 1, 0, None),
    (5000, 7, 0, True), (5000, 7, 1, False), (CHUNK + 1, CHUNK, 0, True),
    (CHUNK + 1, CHUNK, 1, False), (3 * MiB + 5, MiB, 1, None), (11, CHUNK, 1, False),
]


def test_chunker_and_leaf_options_match_ipfs_only_hash(oracle: Oracle, tmp_path: Path) -> None:
    jobs, ours = [], []
    for index, (size, chunk, version, raw) in enumerate(LEAF_OPTION_CASES):
        path = tmp_path / f"case-{index}"
        path.write_bytes(pseudo_random(size, seed=index))
        options = {"cidVersion": version, "maxChunkSize": chunk,
                   "rawLeaves": (version == 1) if raw is None else raw}
        jobs.append({"path": str(path), "options": options})
        ours.append(file_cid(path, version=version, raw_leaves=raw, chunk_size=chunk))
    assert ours == oracle(jobs)


def test_memory_stays_flat_on_a_200_mib_file(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse.bin"
    with open(sparse, "wb") as handle:
        handle.truncate(200 * MiB)
    probe = ("import resource, sys\nfrom kit.cid import file_cid\n"
             "print(file_cid(sys.argv[1], version=int(sys.argv[2])))\n"
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    for version in (0, 1):
        cid, peak_kib = subprocess.run([sys.executable, "-c", probe, str(sparse), str(version)],
                                       capture_output=True, text=True, check=True).stdout.split()
        _, baseline_kib = subprocess.run([sys.executable, "-c", probe, str(empty), str(version)],
                                         capture_output=True, text=True, check=True).stdout.split()
        assert cid == aleph_stream(sparse, version)
        assert int(peak_kib) - int(baseline_kib) < 16 * 1024, (peak_kib, baseline_kib)


# --- directories and wrapping ---------------------------------------------------------------


def make_tree(root: Path) -> Path:
    """Names created out of byte order; an empty file, an empty dir, nesting, a hidden file."""
    for name in ["z.txt", "b", "ä", "B", "10", "9", "a"]:
        (root / name).write_bytes(pseudo_random(len(name) * 1000, seed=len(name)))
    (root / "empty-file").write_bytes(b"")
    (root / "empty-dir").mkdir()
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "deeper" / "big.bin").write_bytes(pseudo_random(CHUNK * 3 + 17, seed=3))
    (root / "sub" / "x").write_bytes(b"hello world")
    (root / ".hidden").write_bytes(b"secret-looking but not secret")
    (root / "sub" / ".cache").mkdir()
    (root / "sub" / ".cache" / "c").write_bytes(b"c")
    return root


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    return make_tree(root)


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("hidden", [False, True])
def test_directory_matches_ipfs_only_hash(oracle: Oracle, tree: Path, wrap: bool,
                                          hidden: bool) -> None:
    jobs = [{"path": str(tree), "hidden": hidden,
             "options": {"cidVersion": v, "rawLeaves": v == 1, "wrapWithDirectory": wrap}}
            for v in (0, 1)]
    ours = [path_cid(tree, version=v, wrap=wrap, hidden=hidden) for v in (0, 1)]
    assert ours == oracle(jobs)


@pytest.mark.parametrize("version", [0, 1])
def test_directory_matches_aleph_hash_folder(tree: Path, version: int) -> None:
    # Found by experiment: hash_folder gives the unwrapped directory, includes hidden entries and
    # drops empty directories (Kubo keeps them), so compare on a tree without one.
    (tree / "empty-dir").rmdir()
    expected = aleph_cid.hash_folder(tree, cid_version=version)
    assert path_cid(tree, version=version, hidden=True) == expected


def test_symlinks_inside_a_directory_match_oracle(oracle: Oracle, tree: Path) -> None:
    (tree / "link-to-x").symlink_to("sub/x")
    (tree / "dangling").symlink_to("does/not/exist")
    jobs = [{"path": str(tree), "options": {"cidVersion": v, "rawLeaves": v == 1}} for v in (0, 1)]
    assert [path_cid(tree, version=v) for v in (0, 1)] == oracle(jobs)


def test_include_filter_matches_the_filtered_copy(oracle: Oracle, tree: Path,
                                                  tmp_path: Path) -> None:
    (tree / "sub" / "__pycache__").mkdir()
    (tree / "sub" / "__pycache__" / "x.pyc").write_bytes(b"\0" * 10)
    (tree / "a.pyc").write_bytes(b"\1")
    copy = tmp_path / "copy" / "site"
    shutil.copytree(tree, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    def include(path: Path) -> bool:
        return path.name != "__pycache__" and path.suffix != ".pyc"

    jobs = [{"path": str(copy), "options": {"wrapWithDirectory": True}}]
    assert [path_cid(tree, wrap=True, include=include)] == oracle(jobs)


def test_wrapped_file_and_wrapped_bytes_match_oracle(oracle: Oracle, tmp_path: Path) -> None:
    path = tmp_path / "agent.js"
    path.write_bytes(b"export default function main() {}\n")
    jobs = [{"path": str(path), "options": {"wrapWithDirectory": True, "cidVersion": v,
                                            "rawLeaves": v == 1}} for v in (0, 1)]
    expected = oracle(jobs)
    assert [file_cid(path, version=v, wrap=True) for v in (0, 1)] == expected
    data = path.read_bytes()
    assert [bytes_cid(data, version=v, wrap_name="agent.js") for v in (0, 1)] == expected


def test_empty_directory_matches_oracle(oracle: Oracle, tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    jobs = [{"path": str(empty), "options": {"cidVersion": v, "rawLeaves": v == 1}} for v in (0, 1)]
    assert [path_cid(empty, version=v) for v in (0, 1)] == oracle(jobs)


def test_directory_kubo_would_shard_is_refused(tmp_path: Path) -> None:
    huge = tmp_path / "huge"
    huge.mkdir()
    for index in range(2000):  # 2000 * (130-byte name + 34-byte CID) > 256 KiB of links
        (huge / f"{index:0130d}").write_bytes(b"")
    before = tree_listing(tmp_path)
    with pytest.raises(InputError, match="HAMT.*split the directory"):
        path_cid(huge)
    done = run_kit(str(huge))
    assert done.returncode == 2
    assert "error:" in done.stderr and "HAMT" in done.stderr
    assert tree_listing(tmp_path) == before


# --- CID strings ----------------------------------------------------------------------------


def test_cid_strings_against_oracle_v1_dagpb(oracle: Oracle, tmp_path: Path) -> None:
    # A one-chunk file with dag-pb leaves is the same block in v0 and v1, so its v1 CID (from the
    # oracle) is the base32 form of its v0 CID.
    path = tmp_path / "one"
    path.write_bytes(b"hello world")
    v0, v1 = oracle([{"path": str(path), "options": {}},
                     {"path": str(path), "options": {"cidVersion": 1, "rawLeaves": False}}])
    assert to_cidv1_base32(v0) == v1
    assert to_cidv1_base32(v1) == v1
    assert (cid_version_of(v0), cid_version_of(v1)) == (0, 1)
    assert is_valid_cid(v0) and is_valid_cid(v1) and is_valid_cid(v1.upper())
    raw = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    assert to_cidv1_base32(raw) == raw and cid_version_of(raw) == 1


@pytest.mark.parametrize("text", [
    "", "hello", "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyf0",
    "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD1",
    "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5",
    "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e7",
    "xafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e",
    "bcfkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e",
])
def test_invalid_cid_strings(text: str) -> None:
    assert not is_valid_cid(text)
    with pytest.raises(InputError, match="not a valid CID"):
        cid_version_of(text)
    with pytest.raises(InputError, match="not a valid CID"):
        to_cidv1_base32(text)


# --- bad input to the library ---------------------------------------------------------------


@pytest.mark.parametrize(("call", "message"), [
    (lambda p: file_cid(p / "site"), "not a regular file; use path_cid"),
    (lambda p: path_cid(p / "missing"), "no such file or directory"),
    (lambda p: file_cid(p / "site" / "b", version=2), "CID version must be 0 or 1"),
    (lambda p: file_cid(p / "site" / "b", chunk_size=0), "chunk size must be between"),
    (lambda p: file_cid(p / "site" / "b", chunk_size=2 * MiB), "chunk size must be between"),
    (lambda p: bytes_cid(b"x", wrap_name="a/b"), "without '/'"),
])
def test_bad_input_is_refused_and_changes_nothing(tree: Path, call: Callable, message: str) -> None:
    before = tree_listing(tree.parent)
    with pytest.raises(InputError, match=message):
        call(tree.parent)
    assert tree_listing(tree.parent) == before


def test_special_file_in_directory_is_refused(tree: Path) -> None:
    os.mkfifo(tree / "pipe")
    with pytest.raises(InputError, match="pipe: not a regular file, directory or symlink"):
        path_cid(tree)


# --- the CLI --------------------------------------------------------------------------------


def test_cli_prints_the_cid_and_json(oracle: Oracle, tree: Path) -> None:
    expected = oracle([
        {"path": str(tree / "sub" / "x"), "options": {}},
        {"path": str(tree), "options": {"cidVersion": 1, "rawLeaves": False, "maxChunkSize": 1000,
                                        "wrapWithDirectory": True}},
        {"path": str(tree), "hidden": True, "options": {"rawLeaves": True}},
    ])
    plain = run_kit(str(tree / "sub" / "x"))
    assert (plain.returncode, plain.stdout) == (0, expected[0] + "\n")

    done = run_kit(str(tree), "--cid-version", "1", "--no-raw-leaves", "--chunker", "size-1000",
                   "--wrap", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "cid": expected[1], "cid_version": 1, "raw_leaves": False, "chunk_size": 1000,
        "wrapped": True, "path": str(tree),
    }
    hidden = run_kit(str(tree), "--raw-leaves", "--hidden")
    assert (hidden.returncode, hidden.stdout.strip()) == (0, expected[2])


@pytest.mark.parametrize(("args", "message"), [
    (["--chunker", "size-0"], "Invalid value for '--chunker'"),
    (["--chunker", "rabin-1-2-3"], "Invalid value for '--chunker'"),
    (["--chunker", "size-2000000"], "Invalid value for '--chunker'"),
    (["--cid-version", "2"], "Invalid value for '--cid-version'"),
])
def test_cli_bad_options_exit_2(tree: Path, args: list[str], message: str) -> None:
    done = run_kit(str(tree), *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""


def test_cli_missing_path_exits_2(tmp_path: Path) -> None:
    done = run_kit(str(tmp_path / "missing"))
    assert done.returncode == 2
    assert "does not exist" in done.stderr
