"""Hostile repositories, written by hand with the Repository API: restore must not harm the machine.

Each test builds a repository an attacker (who holds the keys) could write,
restores it through the CLI into ``target`` and checks that nothing outside
``target`` changed, the error is clean (no traceback, documented exit code)
and memory and time stay bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
import zlib

import pytest
import zstandard

from haeedge.repo.pack import COMPRESSION_ZSTD
from haeedge.repo.snapshot import Snapshot, now_iso
from tests.support.lifecycle import (
    MiB,
    dir_entry,
    file_entry,
    maxrss_kib,
    rss_prefix,
    save_data,
    save_raw_tree,
    save_snapshot,
    store_crafted_blob,
)


@pytest.fixture
def world(tmp_path):
    """An ``outside`` directory with a file in it, to prove restore never touches it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"precious\n")
    return outside


def _state(path):
    return sorted((str(p.relative_to(path)), p.lstat().st_mode, p.lstat().st_size, p.lstat().st_mtime_ns)
                  for p in path.rglob("*"))


def _clean(r) -> None:
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.describe()


def _restore(cli, sid, target, *args, prefix=None):
    started = time.monotonic()
    r = cli("restore", sid, "--target", target, *args, prefix=prefix, timeout=120)
    _clean(r)
    return r, time.monotonic() - started


def _hostile(fast_repo, build) -> str:
    with fast_repo.open() as repo:
        sid = build(repo)
        repo.flush()
    return sid


@pytest.mark.parametrize("bad_path", ["{outside}/evil", "../outside/evil", "a/../../outside/evil", "a/./b",
                                      "a//b", "", "a/\u0000/b"])
def test_unsafe_paths_are_refused(cli, fast_repo, world, tmp_path, bad_path):
    path = bad_path.format(outside=world)
    before = _state(world)
    sid = _hostile(fast_repo, lambda repo: save_snapshot(
        repo, save_raw_tree(repo, [file_entry(path, [save_data(repo, b"pwned\n")])])))
    target = tmp_path / "target"
    r, _t = _restore(cli, sid, target)
    assert r.code == 4, r.describe()
    assert "unsafe path" in r.stderr
    assert _state(world) == before
    assert not (tmp_path / "evil").exists()


def test_path_b64_cannot_smuggle_dotdot(cli, fast_repo, world, tmp_path):
    import base64

    entry = file_entry("x", [])
    del entry["path"]
    entry["path_b64"] = base64.b64encode(b"../outside/evil").decode()
    sid = _hostile(fast_repo, lambda repo: save_snapshot(repo, save_raw_tree(repo, [entry])))
    r, _t = _restore(cli, sid, tmp_path / "target")
    assert r.code == 4 and "unsafe path" in r.stderr, r.describe()
    assert not (world / "evil").exists()


def test_symlink_then_file_through_it(cli, fast_repo, world, tmp_path):
    before = _state(world)

    def build(repo):
        payload = save_data(repo, b"pwned\n")
        return save_snapshot(repo, save_raw_tree(repo, [
            {"path": "a", "type": "symlink", "target": str(world), "mode": 0o777, "mtime_ns": 0},
            file_entry("a/evil", [payload]),
            file_entry("a/victim", [payload]),
            {"path": "b", "type": "symlink", "target": "../outside", "mode": 0o777, "mtime_ns": 0},
            dir_entry("b/sub"),
            file_entry("b/sub/evil", [payload]),
        ]))

    sid = _hostile(fast_repo, build)
    target = tmp_path / "target"
    r, _t = _restore(cli, sid, target)
    assert r.code in (3, 4), r.describe()
    assert _state(world) == before
    assert (world / "victim").read_bytes() == b"precious\n"
    # Whatever was restored is inside the target, and no symlink points a later write outside.
    for p in target.rglob("*"):
        assert os.path.realpath(p).startswith(str(target)) or p.is_symlink()


def test_symlink_in_target_from_an_earlier_restore_is_not_followed(cli, fast_repo, world, tmp_path):
    before = _state(world)

    def build(repo):
        first = save_snapshot(repo, save_raw_tree(repo, [
            {"path": "a", "type": "symlink", "target": str(world), "mode": 0o777, "mtime_ns": 0}]))
        second = save_snapshot(repo, save_raw_tree(repo, [dir_entry("a"), file_entry("a/evil",
                                                                                     [save_data(repo, b"x\n")])]))
        return first + " " + second

    first, second = _hostile(fast_repo, build).split()
    target = tmp_path / "target"
    r, _t = _restore(cli, first, target)
    assert r.code == 0, r.describe()
    assert (target / "a").is_symlink()
    r, _t = _restore(cli, second, target)
    assert r.code == 3, r.describe()
    assert "symlink" in r.stderr
    assert _state(world) == before


def test_hardlinks_never_reach_outside(cli, fast_repo, world, tmp_path):
    victim = world / "victim"

    def build(repo):
        payload = save_data(repo, b"inside\n")
        return save_snapshot(repo, save_raw_tree(repo, [
            file_entry("h1", [payload], hardlink=str(victim), nlink=2),
            file_entry("h2", [payload], hardlink=str(victim), nlink=2),
            {"path": "s", "type": "symlink", "target": str(victim), "mode": 0o777, "mtime_ns": 0},
            file_entry("t1", [payload], hardlink="s", nlink=2),
        ]))

    sid = _hostile(fast_repo, build)
    target = tmp_path / "target"
    r, _t = _restore(cli, sid, target)
    assert r.code == 0, r.describe()
    victim_ino = victim.stat().st_ino
    for name in ("h1", "h2", "t1"):
        st = (target / name).lstat()
        assert stat.S_ISREG(st.st_mode) and st.st_ino != victim_ino
    assert (target / "h1").stat().st_ino == (target / "h2").stat().st_ino
    assert victim.read_bytes() == b"precious\n" and victim.stat().st_nlink == 1


def test_device_nodes_only_when_asked(cli, fast_repo, tmp_path):
    def build(repo):
        return save_snapshot(repo, save_raw_tree(repo, [
            {"path": "blk", "type": "blockdev", "mode": 0o666, "rdev": os.makedev(7, 0), "mtime_ns": 0},
            {"path": "null", "type": "chardev", "mode": 0o666, "rdev": os.makedev(1, 3), "mtime_ns": 0},
            file_entry("ok.txt", [save_data(repo, b"fine\n")]),
        ]))

    sid = _hostile(fast_repo, build)
    target = tmp_path / "target"
    r, _t = _restore(cli, sid, target)
    assert r.code == 3, r.describe()
    assert "device node skipped" in r.stderr
    assert not os.path.lexists(target / "null") and not os.path.lexists(target / "blk")
    assert (target / "ok.txt").read_bytes() == b"fine\n"
    if os.geteuid() == 0:
        r, _t = _restore(cli, sid, tmp_path / "t2", "--devices")
        assert r.code == 0, r.describe()
        assert stat.S_ISCHR((tmp_path / "t2" / "null").lstat().st_mode)


def test_decompression_bomb_with_lying_raw_length(cli, fast_repo, tmp_path):
    """The zstd frame declares 512 MiB; the index says 4 KiB. Memory must stay near the truth."""
    zeros = bytes(512 * MiB)
    bomb = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(zeros)
    bomb_no_size = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(zeros)
    del zeros
    assert len(bomb) < 64 * 1024

    def build(repo):
        fake1 = hashlib.sha256(b"bomb-1").digest()
        fake2 = hashlib.sha256(b"bomb-2").digest()
        store_crafted_blob(repo, fake1, bomb, 4096, COMPRESSION_ZSTD)
        store_crafted_blob(repo, fake2, bomb_no_size, 4096, COMPRESSION_ZSTD)
        return save_snapshot(repo, save_raw_tree(repo, [
            file_entry("bomb1", [[fake1.hex(), 4096]]),
            file_entry("bomb2", [[fake2.hex(), 4096]]),
            file_entry("ok.txt", [save_data(repo, b"fine\n")]),
        ]))

    sid = _hostile(fast_repo, build)
    r, elapsed = _restore(cli, sid, tmp_path / "target", prefix=rss_prefix())
    assert r.code == 4, r.describe()
    assert "bomb1" in r.stderr and "bomb2" in r.stderr
    assert (tmp_path / "target" / "ok.txt").read_bytes() == b"fine\n"
    assert maxrss_kib(r.stderr) < 200 * 1024, f"restore used {maxrss_kib(r.stderr) // 1024} MiB"
    assert elapsed < 30
    v = cli("verify", "--read-data", prefix=rss_prefix())
    assert v.code == 4 and "Traceback" not in v.stderr, v.describe()
    assert maxrss_kib(v.stderr) < 200 * 1024, f"verify used {maxrss_kib(v.stderr) // 1024} MiB"


def test_huge_length_fields(cli, fast_repo, tmp_path):
    """Sizes and lengths far beyond the data: clean refusals, no giant files, no giant allocations."""

    def build(repo):
        ok = save_data(repo, b"x" * 100)
        return " ".join([
            save_snapshot(repo, save_raw_tree(repo, [file_entry("huge_chunk", [[ok[0], 1 << 40]])])),
            save_snapshot(repo, save_raw_tree(repo, [file_entry("liar", [ok], size=8 << 40)])),
            save_snapshot(repo, save_raw_tree(repo, [file_entry("empty_liar", [], size=1 << 62)])),
            save_snapshot(repo, save_raw_tree(repo, b'{"path": "' + b"a" * (80 << 20))),
        ])

    huge_chunk, liar, empty_liar, long_line = _hostile(fast_repo, build).split()
    r, _t = _restore(cli, huge_chunk, tmp_path / "t1")
    assert r.code == 4 and "chunk list" in r.stderr, r.describe()
    for n, sid in enumerate((liar, empty_liar)):
        target = tmp_path / f"t{n + 2}"
        r, elapsed = _restore(cli, sid, target)
        assert r.code in (3, 4), r.describe()
        for p in target.rglob("*"):
            assert p.lstat().st_size <= 100, f"{p} restored with attacker-chosen size {p.lstat().st_size}"
        assert elapsed < 30
    r, elapsed = _restore(cli, long_line, tmp_path / "t4", prefix=rss_prefix())
    assert r.code == 4, r.describe()
    assert maxrss_kib(r.stderr) < 400 * 1024


def test_huge_index_and_pack_fields(cli, fast_repo, tmp_path):
    """An index entry pointing past its pack, and a pack trailer claiming a 4 GiB header."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(1000))
    cli.backup(src)
    pack = next(p for p in (fast_repo.path / "data").rglob("*") if p.is_file())
    data = pack.read_bytes()
    forged = data[:-4] + (0xFFFFFFFF).to_bytes(4, "little")
    name = hashlib.sha256(forged).hexdigest()
    (fast_repo.path / "data" / name[:2]).mkdir(exist_ok=True)
    (fast_repo.path / "data" / name[:2] / name).write_bytes(forged)
    v = cli("verify", "--read-data")
    _clean(v)
    assert v.code == 4 and name[:16] in v.stdout + v.stderr, v.describe()
    r = cli("repair", "index", "--read-all-packs")
    _clean(r)
    assert r.code == 0 and "header unreadable" in r.stderr, r.describe()

    from haeedge.repo.index import INDEX_MAGIC_V1 as INDEX_MAGIC
    with fast_repo.open(load_index=False) as repo:
        body = INDEX_MAGIC + (0).to_bytes(4, "little") + (1).to_bytes(4, "little") + bytes.fromhex(name) + \
            len(forged).to_bytes(8, "little") + (1).to_bytes(4, "little") + \
            bytes([0, 0]) + bytes(32) + (10).to_bytes(4, "little") + (0xFFFFFFF0).to_bytes(4, "little") + \
            (5).to_bytes(4, "little")
        repo.put_object("index", repo.seal("meta", body))
    r = cli("restore", "latest", "--target", tmp_path / "t")
    _clean(r)
    assert r.code == 4 and "index object" in r.stderr, r.describe()


def test_chain_loops_and_lies_are_refused(cli, fast_repo, tmp_path):
    def build(repo):
        tree = save_raw_tree(repo, [file_entry("f", [save_data(repo, b"1\n")])])
        full = save_snapshot(repo, tree)
        inc = save_snapshot(repo, tree, kind="incremental", parent=full, chain=full, depth=1)
        # Depth that does not decrease: a loop in disguise.
        lying = save_snapshot(repo, tree, kind="incremental", parent=inc, chain=full, depth=1)
        # Claims a chain it does not belong to.
        alien = save_snapshot(repo, tree, kind="incremental", parent=inc, chain=inc, depth=2)
        # A link to an object stored under another snapshot's name (a cycle needs a hash collision).
        fake_parent = "ab" * 32
        swapped = save_snapshot(repo, tree, kind="incremental", parent=fake_parent, chain=full, depth=2)
        repo.backend.put(f"snapshots/{fake_parent}", repo.get_object(f"snapshots/{swapped}"))
        return " ".join([lying, alien, swapped])

    for sid in _hostile(fast_repo, build).split():
        r, elapsed = _restore(cli, sid, tmp_path / f"t-{sid[:8]}")
        assert r.code == 4, r.describe()
        assert "chain" in r.stderr or "does not match its name" in r.stderr, r.stderr
        assert elapsed < 30


def test_long_chain_restores_in_bounded_time(cli, fast_repo, tmp_path):
    def build(repo):
        parent = save_snapshot(repo, save_raw_tree(repo, [file_entry("f0", [save_data(repo, b"0\n")])]))
        root = parent
        for depth in range(1, 301):
            tree = save_raw_tree(repo, [file_entry(f"f{depth}", [save_data(repo, b"%d\n" % depth)])])
            doc = Snapshot(time=now_iso(), host="evil", paths=["/"], kind="incremental", tree=tree, parent=parent,
                           chain=root, depth=depth)
            parent = repo.save_snapshot(doc)
        repo.flush()
        return parent

    sid = _hostile(fast_repo, build)
    r, elapsed = _restore(cli, sid, tmp_path / "t")
    assert r.code == 0, r.describe()
    assert len(list((tmp_path / "t").iterdir())) == 301
    assert elapsed < 60


def test_malformed_tree_json(cli, fast_repo, tmp_path):
    deep = b"[" * 100_000 + b"]" * 100_000
    cases = [b"not json\n", deep + b"\n", json.dumps({"path": "x", "type": "file", "chunks": "zz"}).encode() + b"\n",
             json.dumps({"path": "x", "type": "weird"}).encode() + b"\n", zlib.compress(b"junk")]
    for n, raw in enumerate(cases):
        sid = _hostile(fast_repo, lambda repo, raw=raw: save_snapshot(repo, save_raw_tree(repo, raw)))
        r, _t = _restore(cli, sid, tmp_path / f"t{n}")
        assert r.code == 4, r.describe()
