"""The restorer against awkward targets and hostile snapshots (library API)."""

from __future__ import annotations

import os
import random
import shutil

import pytest

from haeedge.archiver import Archiver, BackupOptions
from haeedge.errors import HaeedgeError
from haeedge.repo.pack import BLOB_DATA
from haeedge.repo.snapshot import Snapshot, now_iso
from haeedge.repo.tree import Node, encode_entry
from haeedge.restorer import RestoreOptions, Restorer
from haeedge.restorer.packs import SPARSE_BLOCK, _pwrite_sparse


@pytest.fixture
def lib_repo(tmp_path, trees):
    return trees.init_library_repo(tmp_path / "repo", chunker=trees.SMALL_CHUNKS)


def _backup(handle, *paths, **kw):
    with handle.open() as repo:
        res = Archiver(repo, BackupOptions(paths=[str(p) for p in paths], **kw)).run()
    assert not res.partial, res.warnings
    return res.snapshot


def _restore(handle, snap_id, target, **kw):
    with handle.open() as repo:
        return Restorer(repo, RestoreOptions(target=str(target), **kw)).run(repo.load_snapshot(snap_id))


def _forge(handle, entries: list[Node], data: dict[str, bytes] | None = None) -> str:
    """A full snapshot with exactly these (sorted) entries; ``data`` maps a path to file contents."""
    with handle.open() as repo:
        tw = repo.tree_writer()
        for e in entries:
            content = (data or {}).get(e.path.decode("utf-8", "surrogateescape"))
            if content is not None:
                bid, _ = repo.save_blob(BLOB_DATA, content)
                e.chunks = [[bid.hex(), len(content)]]
                e.size = len(content)
            tw.add(e)
        tree = tw.finish()
        repo.flush()
        return repo.save_snapshot(Snapshot(time=now_iso(), host="h", paths=["/x"], kind="full", tree=tree))


def _entry(path: bytes | str, kind: str, **kw) -> Node:
    return Node(path.encode() if isinstance(path, str) else path, kind,
                mode=kw.pop("mode", 0o644 if kind != "dir" else 0o755), uid=0, gid=0, mtime_ns=10**18, **kw)


def test_restore_twice_into_the_same_target(lib_repo, trees, tmp_path):
    src = tmp_path / "src"
    info = trees.make_edge_tree(src, devices=False, deep_total=2000, sparse_mib=16)
    snap = _backup(lib_repo, src)
    target = tmp_path / "t"
    for _ in range(2):
        res = _restore(lib_repo, snap.id, target)
        assert not res.damaged and not res.skipped, res.warnings
        trees.assert_same(src, trees.restored_path(target, src))
    trees.assert_sparse(src, trees.restored_path(target, src), info["sparse"])


def test_directory_in_the_way_of_a_symlink_is_skipped_not_a_crash(lib_repo, trees, tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "f").write_text("x")
    first = _backup(lib_repo, src)
    shutil.rmtree(src / "a")
    os.symlink("elsewhere", src / "a")
    second = _backup(lib_repo, src)
    target = tmp_path / "t"
    _restore(lib_repo, first.id, target)
    res = _restore(lib_repo, second.id, target)
    assert res.skipped and "directory is in the way" in res.skipped[0]
    assert os.path.isdir(trees.restored_path(target, src) / "a")


def test_existing_symlink_in_the_target_is_never_followed(lib_repo, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    sid = _forge(lib_repo, [_entry("d", "dir"), _entry("d/f", "file")], {"d/f": b"payload"})
    target = tmp_path / "t"
    target.mkdir()
    os.symlink(outside, target / "d")
    res = _restore(lib_repo, sid, target)
    assert res.skipped and "symlink" in res.skipped[0]
    assert os.listdir(outside) == []


def test_hostile_symlink_then_file_below_it_stays_inside(lib_repo, tmp_path):
    """A tree with symlink ``a`` -> outside and a file ``a/x``: the file never lands outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    link = _entry("a", "symlink", mode=0o777)
    link.target = os.fsencode(outside)
    sid = _forge(lib_repo, [link, _entry("a/x", "file")], {"a/x": b"must stay inside"})
    target = tmp_path / "t"
    res = _restore(lib_repo, sid, target)
    assert os.listdir(outside) == []
    assert (target / "a" / "x").read_bytes() == b"must stay inside"
    assert not (target / "a").is_symlink()
    assert res.skipped


@pytest.mark.parametrize("bad", [b"../escape", b"a/../../escape", b"/etc/passwd", b"a//b", b"./a", b"a\0b"])
def test_unsafe_paths_are_refused(lib_repo, tmp_path, bad):
    with lib_repo.open() as repo:
        tw = repo.tree_writer()
        # Bypass the writer's own checks: write the raw line the way a hostile repository would.
        e = _entry(bad, "file", size=0)
        tw._buf += encode_entry(e)
        tree = tw.finish()
        repo.flush()
        sid = repo.save_snapshot(Snapshot(time=now_iso(), host="h", paths=["/x"], kind="full", tree=tree))
    target = tmp_path / "t"
    with pytest.raises(HaeedgeError):
        _restore(lib_repo, sid, target)
    assert not (tmp_path / "escape").exists()
    assert not target.exists() or not any(p.is_file() for p in target.rglob("*"))


def test_devices_only_when_asked(lib_repo, tmp_path):
    sid = _forge(lib_repo, [_entry("null", "chardev", rdev=os.makedev(1, 3), mode=0o666)])
    res = _restore(lib_repo, sid, tmp_path / "a")
    assert res.skipped and not os.path.lexists(tmp_path / "a" / "null")
    res = _restore(lib_repo, sid, tmp_path / "b", devices=True)
    assert not res.skipped
    assert os.stat(tmp_path / "b" / "null").st_rdev == os.makedev(1, 3)


def test_dry_run_writes_nothing(lib_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    snap = _backup(lib_repo, src)
    res = _restore(lib_repo, snap.id, tmp_path / "t", dry_run=True)
    assert not (tmp_path / "t").exists()
    assert any(p.endswith("src/f") for p in res.planned) and res.files == 1


def test_exclude_on_restore(lib_repo, tmp_path):
    src = tmp_path / "src"
    (src / "keep").mkdir(parents=True)
    (src / "cache").mkdir()
    (src / "keep" / "a.txt").write_text("a")
    (src / "keep" / "b.tmp").write_text("b")
    (src / "cache" / "c").write_text("c")
    snap = _backup(lib_repo, src)
    target = tmp_path / "t"
    _restore(lib_repo, snap.id, target, excludes=["*.tmp", str(src / "cache")])
    root = target / str(src).lstrip("/")
    assert sorted(os.listdir(root)) == ["keep"]
    assert os.listdir(root / "keep") == ["a.txt"]


# ---------------------------------------------------------------------- sparse writes


@pytest.mark.parametrize("offset", [0, 1, SPARSE_BLOCK - 1, SPARSE_BLOCK, 3 * SPARSE_BLOCK + 7])
def test_pwrite_sparse_writes_the_same_bytes_and_leaves_holes(tmp_path, offset):
    rng = random.Random(offset)
    raw = bytearray(40 * SPARSE_BLOCK)
    for start in (0, 5 * SPARSE_BLOCK + 3, 20 * SPARSE_BLOCK, len(raw) - 10):
        raw[start : start + 5] = rng.randbytes(5)
    raw = bytes(raw)
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, offset + len(raw))
        _pwrite_sparse(fd, raw, offset)
    finally:
        os.close(fd)
    assert path.read_bytes() == bytes(offset) + raw
    assert os.stat(path).st_blocks * 512 <= 8 * SPARSE_BLOCK
