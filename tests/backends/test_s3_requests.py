"""S3 requests per command, counted on the wire against the real moto server (issue 15.6), and the
local metadata cache (repo/cache.py) that keeps them down: hits, tampered entries, --no-cache.

The counts come from the counting reverse proxy of ``bench/s3_requests.py`` (the same one that
compares haeedge with restic), so a regression in any layer (repository, trust, the S3 client) shows here.
The upper bounds are what this commit makes, each at or below what restic 0.14 makes on the bench.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections import Counter
from pathlib import Path

import pytest
from s3_requests import CountingProxy  # bench/s3_requests.py (pytest pythonpath)

from tests.support.servers import S3Server

TOOL = "haeedge"

#: Requests per step at most: (total, {namespace: {kind: at most}}). restic 0.14 on the bench:
#: init 6, backup 16, unchanged backup 13, changed backup 16, restore 14, check --read-data 22,
#: snapshots 11.
BOUNDS = {
    "init": 6,
    "backup-initial": 11,
    "backup-unchanged": 9,
    "backup-mutated": 12,
    "restore": 11,
    "verify": 22,
    "snapshots": 4,
}


class Wire:
    """haeedge through a counting proxy in front of moto; one prefix of the bucket per test."""

    def __init__(self, srv: S3Server, cli, tmp_path: Path):
        self.cli = cli
        self.trace = tmp_path / "trace.jsonl"
        self.proxy = CountingProxy(srv.port, self.trace)
        self.srv = srv
        self.prefix = f"req-{uuid.uuid4().hex[:10]}"
        self.proxy.prefixes = {TOOL: self.prefix}
        self.cache_dir = tmp_path / "cache"
        self.env = {**srv.env, "AWS_ENDPOINT_URL": self.proxy.endpoint, "AWS_ENDPOINT_URL_S3": self.proxy.endpoint,
                    "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
                    "AWS_EC2_METADATA_DISABLED": "true", "HAEEDGE_REPOSITORY": srv.url_for(self.prefix),
                    "HAEEDGE_CACHE_DIR": str(self.cache_dir)}
        self.n = 0

    def __call__(self, step: str, *args: str | os.PathLike, expect: int = 0):
        """Run one command as ``step``; returns (result, {namespace: Counter of kinds}, total)."""
        self.n += 1
        label = f"{self.n:02d}-{step}"
        self.proxy.begin(TOOL, label)
        try:
            r = self.cli(*args, env=self.env)
        finally:
            self.proxy.begin(TOOL, "idle")
        assert r.code == expect, r.describe()
        self.proxy.trace_fh.flush()
        tally = self.proxy.tally[(TOOL, label)]
        assert tally.errors == 0 or step == "init", f"{step}: {tally.errors} error answers"
        return r, {ns: Counter(c) for ns, c in tally.by_ns.items()}, tally.total

    def requests(self, n: int) -> list[dict]:
        """The requests of the ``n``-th command (one dict per request: kind, key, range, ...)."""
        lines = self.trace.read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["step"].startswith(f"{n:02d}-")]

    def repository_cache(self) -> Path:
        dirs = [p for p in self.cache_dir.iterdir() if p.is_dir() and len(p.name) == 64]
        assert len(dirs) == 1, dirs
        return dirs[0]

    def stored(self, name: str) -> bytes:
        return self.srv.client().get_object(Bucket=self.srv.bucket, Key=f"{self.prefix}/{name}")["Body"].read()

    def close(self) -> None:
        self.proxy.close()


@pytest.fixture
def wire(s3: S3Server, cli, tmp_path: Path):
    w = Wire(s3, cli, tmp_path)
    yield w
    w.close()


def make_tree(root: Path) -> None:
    rng = __import__("random").Random(15)
    for d in range(3):
        for f in range(6):
            p = root / f"d{d}" / f"f{f}.bin"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(rng.randbytes(rng.randint(100, 40000)))
    # 11 MiB: one data pack larger than the 4 MiB a local restore reads at a time
    (root / "big.bin").write_bytes(rng.randbytes(11 << 20))


@pytest.fixture
def src() -> Path:
    """A source whose every ancestor stays unchanged while the test runs: a backup records its
    sources' ancestors, and /tmp or pytest's shared base gain entries from parallel tests (a new
    file list and pack in what should be an unchanged backup)."""
    root = Path(f"/haeedge-s3-requests-{uuid.uuid4().hex[:12]}")
    root.mkdir()
    try:
        yield root / "src"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def same_tree(a: Path, b: Path) -> bool:
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    return files(a) == files(b)


def gets(by_ns: dict[str, Counter], ns: str) -> int:
    c = by_ns.get(ns, Counter())
    return c["get"] + c["get_range"]


def test_requests_per_step_stay_at_or_below_restic(wire: Wire, tmp_path: Path, src: Path) -> None:
    make_tree(src)
    counts: dict[str, int] = {}
    steps: dict[str, dict[str, Counter]] = {}

    def step(name: str, *args: str | os.PathLike) -> None:
        _r, by_ns, total = wire(name, *args)
        counts[name], steps[name] = total, by_ns

    step("init", "init")
    step("backup-initial", "backup", src)
    step("backup-unchanged", "backup", src)
    (src / "d1" / "f2.bin").write_bytes(b"changed" * 1000)
    (src / "d2" / "new.bin").write_bytes(os.urandom(5000))
    step("backup-mutated", "backup", src)
    target = tmp_path / "restored"
    step("restore", "restore", "latest", "--target", target)
    assert same_tree(src, target / src.relative_to("/"))
    step("verify", "verify", "--read-data")
    step("snapshots", "--json", "snapshots")
    over = {s: (counts[s], bound) for s, bound in BOUNDS.items() if counts[s] > bound}
    assert not over, f"more requests than allowed (step: (made, bound)): {over}; all: {counts}; {steps}"
    for name, by_ns in steps.items():
        if name != "init":  # keys/ listed once per command: opening, trust and the registry share it
            assert by_ns["keys"]["list"] == 1, (name, by_ns)
    # What the cache spares: an unchanged backup and a snapshot listing read no key slot, index,
    # snapshot or file list object from storage; restore reads file contents only.
    for name in ("backup-unchanged", "snapshots"):
        assert sum(gets(steps[name], ns) for ns in ("keys", "index", "snapshots", "data")) == 0, steps[name]
    assert sum(gets(steps["restore"], ns) for ns in ("keys", "index", "snapshots")) == 0, steps["restore"]
    # restore reads each data pack in one request, like restic, not in 4 MiB pieces
    data_packs = sum(steps[s]["data"]["put"] for s in ("backup-initial", "backup-mutated"))
    assert gets(steps["restore"], "data") <= data_packs, (data_packs, steps["restore"])
    # verify reads what storage holds, not the cache: every index and snapshot object, every pack
    assert gets(steps["verify"], "index") >= 2 and gets(steps["verify"], "snapshots") == 3, steps["verify"]
    # no locks for backups; a locked command does not read its own lock back
    assert "locks" not in steps["backup-unchanged"]
    assert steps["restore"]["locks"] == Counter({"put": 1, "list": 1, "delete": 1}), steps["restore"]


def test_a_restore_of_many_files_from_s3_reads_each_pack_once(wire: Wire, tmp_path: Path, src: Path) -> None:
    """More files than a local restore plans in one batch: a pack whose blobs fall into two batches
    would be fetched twice (one request each), so from network storage a batch spans more files."""
    rng = __import__("random").Random(16)
    for i in range(2500):
        p = src / f"d{i % 7}" / f"f{i}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(rng.randint(200, 3000)))
    wire("init", "init")
    _r, backup, _total = wire("backup-initial", "backup", src)
    target = tmp_path / "restored"
    wire("restore", "restore", "latest", "--target", target)
    assert same_tree(src, target / src.relative_to("/"))
    reads = [q["key"] for q in wire.requests(wire.n) if q["kind"] in ("get", "get_range") and q["ns"] == "data"]
    # the packs of file contents (the file lists' pack comes from the cache), each read once
    assert 1 <= len(reads) == len(set(reads)) <= backup["data"]["put"], (reads, backup)


def test_no_cache_reads_everything_from_storage_and_writes_no_cache(wire: Wire, tmp_path: Path, src: Path) -> None:
    make_tree(src)
    wire("init", "--no-cache", "init")
    wire("backup", "--no-cache", "backup", src)
    _r, by_ns, _total = wire("backup", "--no-cache", "backup", src)
    assert gets(by_ns, "snapshots") == 1 and gets(by_ns, "index") == 1, by_ns
    # the parent's file lists are read once, not once to check them and again to compare
    reads = [(q["key"], q["range"]) for q in wire.requests(wire.n) if q["kind"] in ("get", "get_range")]
    assert gets(by_ns, "data") >= 1 and len(reads) == len(set(reads)), reads
    assert by_ns["keys"]["list"] == 1, by_ns
    r, by_ns, _total = wire("snapshots", "--no-cache", "--json", "snapshots")
    assert len(r.json()) == 2 and gets(by_ns, "snapshots") == 2, by_ns
    assert not wire.cache_dir.exists()
    # HAEEDGE_NO_CACHE=1 does the same
    wire.env["HAEEDGE_NO_CACHE"] = "1"
    _r, by_ns, _total = wire("snapshots", "--json", "snapshots")
    assert gets(by_ns, "snapshots") == 2 and not wire.cache_dir.exists()


def test_cache_hit_tampered_entries_are_refetched_and_removed_objects_not_served(
        wire: Wire, tmp_path: Path, src: Path) -> None:
    make_tree(src)
    wire("init", "init")
    wire("backup", "backup", src)
    (src / "d0" / "f0.bin").write_bytes(b"second")
    wire("backup", "backup", src)
    r, by_ns, _total = wire("snapshots", "--json", "snapshots")
    snaps = sorted(s["id"] for s in r.json())
    assert len(snaps) == 2 and gets(by_ns, "snapshots") == 0  # hit: both written by this client
    cache = wire.repository_cache()
    assert (wire.cache_dir / "CACHEDIR.TAG").read_bytes().startswith(b"Signature: 8a477f597d28d172789f06886806bc55")
    entry = cache / "snapshots" / snaps[0]
    assert entry.read_bytes() == wire.stored(f"snapshots/{snaps[0]}")

    # A modified entry (another snapshot's authentic bytes under this name) is refused and read again.
    entry.write_bytes((cache / "snapshots" / snaps[1]).read_bytes())
    # Tree blobs rotated among the cache entries: each still decrypts, none matches its id.
    trees = sorted(p for p in (cache / "trees").rglob("*") if p.is_file() and not p.name.startswith("."))
    assert len(trees) >= 2, trees
    original = [p.read_bytes() for p in trees]
    for p, data in zip(trees, original[1:] + original[:1], strict=True):
        p.write_bytes(data)
    target = tmp_path / "restored"
    r, by_ns, _total = wire("restore", "restore", "latest", "--target", target)
    assert same_tree(src, target / src.relative_to("/"))
    assert f"cache entry snapshots/{snaps[0]} does not match its name" in r.stderr, r.stderr
    assert "cached file list blob" in r.stderr and "is damaged or modified" in r.stderr, r.stderr
    assert by_ns["snapshots"]["get"] == 1, by_ns  # the damaged one, again from storage
    assert entry.read_bytes() == wire.stored(f"snapshots/{snaps[0]}")  # and kept, checked
    assert hashlib.sha256(entry.read_bytes()).hexdigest() == snaps[0]
    fixed = [p for p, data in zip(trees, original, strict=True) if p.read_bytes() == data]
    assert fixed, "the file lists restore used were read from the packs and kept again"
    assert gets(by_ns, "data") >= len(fixed)
    # ... so the next restore reads them from the cache again, checked, and the packs' contents only
    r, by_ns2, _total = wire("restore", "restore", "latest", "--target", tmp_path / "again")
    assert "damaged or modified" not in r.stderr and gets(by_ns2, "data") == gets(by_ns, "data") - len(fixed)

    # Garbage in an entry: the same.
    entry.write_bytes(b"not a snapshot")
    r, by_ns, _total = wire("snapshots", "--json", "snapshots")
    assert sorted(s["id"] for s in r.json()) == snaps and by_ns["snapshots"]["get"] == 1

    # A snapshot deleted from storage is not brought back from the cache, and its entry goes.
    wire.srv.client().delete_object(Bucket=wire.srv.bucket, Key=f"{wire.prefix}/snapshots/{snaps[1]}")
    r, _by_ns, _total = wire("snapshots", "--json", "snapshots")
    assert [s["id"] for s in r.json()] == [snaps[0]]
    assert not (cache / "snapshots" / snaps[1]).exists()

    # A removed cache costs downloads only.
    import shutil

    shutil.rmtree(wire.cache_dir)
    r, by_ns, _total = wire("snapshots", "--json", "snapshots")
    assert [s["id"] for s in r.json()] == [snaps[0]] and gets(by_ns, "snapshots") == 1
    assert gets(by_ns, "keys") >= 1  # the key slot too: the cache did not know the repository
    assert json.loads(json.dumps(r.json()))  # well-formed output
