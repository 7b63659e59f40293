"""The parts of restore into an existing target: overwrite decisions, content comparison, --delete's walk."""

from __future__ import annotations

import hashlib
import os

import pytest

from haeedge.repo.tree import Node
from haeedge.restorer.delete import delete_extraneous
from haeedge.restorer.existing import Decision, ExistingEntries
from haeedge.restorer.verify import content_mismatch


def blob_id(data: bytes) -> bytes:
    return hashlib.sha256(b"key" + data).digest()


def entry_for(data: bytes, mtime_ns: int, piece: int = 5) -> Node:
    chunks = [[blob_id(data[i:i + piece]).hex(), len(data[i:i + piece])] for i in range(0, len(data), piece)]
    return Node(b"f", "file", size=len(data), mtime_ns=mtime_ns, chunks=chunks)


def _open(path) -> int:
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW)


@pytest.fixture
def file_and_entry(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"hello, restored world")
    t = 1_600_000_000_123_456_789
    os.utime(p, ns=(t, t))
    return p, entry_for(b"hello, restored world", t)


@pytest.mark.parametrize(("content", "mtime_delta", "verify", "mode", "expected"), [
    (b"hello, restored world", 0, False, "if-changed", Decision.UNCHANGED),
    (b"hello, restored world", 1, False, "if-changed", Decision.UNCHANGED),  # another mtime: content read
    (b"HELLO, restored world", 1, False, "if-changed", Decision.WRITE),
    (b"hello, restored world", 1, True, "if-changed", Decision.UNCHANGED),  # content decides
    (b"HELLO, restored world", 0, False, "if-changed", Decision.UNCHANGED),  # size and mtime only
    (b"HELLO, restored world", 0, True, "if-changed", Decision.WRITE),
    (b"hello", 0, False, "if-changed", Decision.WRITE),
    (b"HELLO, restored world", 0, False, "if-newer", Decision.KEEP),  # equal mtime
    (b"HELLO, restored world", -1, False, "if-newer", Decision.WRITE),
    (b"HELLO, restored world", 1, False, "if-newer", Decision.KEEP),
    (b"hello, restored world", 0, False, "always", Decision.WRITE),
    (b"x", -5, False, "never", Decision.KEEP),
])
def test_file_decisions(file_and_entry, content, mtime_delta, verify, mode, expected):
    path, entry = file_and_entry
    path.write_bytes(content)
    t = entry.mtime_ns + mtime_delta
    os.utime(path, ns=(t, t))
    got = ExistingEntries(mode, verify, blob_id).decide(entry, os.lstat(path), open_file=lambda: _open(path))
    assert got is expected


def test_nothing_there_is_written_and_kinds_must_match(tmp_path, file_and_entry):
    path, entry = file_and_entry
    for mode in ("always", "if-changed", "if-newer", "never"):
        assert ExistingEntries(mode, False, blob_id).decide(entry, None) is Decision.WRITE
    link = tmp_path / "link"
    os.symlink(path, link)  # a symlink to an identical file is not that file
    os.utime(link, ns=(entry.mtime_ns,) * 2, follow_symlinks=False)
    assert ExistingEntries("if-changed", True, blob_id).decide(
        entry, os.lstat(link), open_file=lambda: _open(link)) is Decision.WRITE
    sym = Node(b"link", "symlink", mtime_ns=0, target=os.fsencode(path))
    assert ExistingEntries("if-changed", False, blob_id).decide(
        sym, os.lstat(link), read_target=lambda: os.fsencode(os.readlink(link))) is Decision.UNCHANGED
    sym.target = b"elsewhere"
    assert ExistingEntries("if-changed", False, blob_id).decide(
        sym, os.lstat(link), read_target=lambda: os.fsencode(os.readlink(link))) is Decision.WRITE
    with pytest.raises(ValueError):
        ExistingEntries("sometimes", False, blob_id)


def test_partly_intact_files_are_completed_in_place(file_and_entry, tmp_path):
    path, entry = file_and_entry  # chunks of 5 bytes: "hello", ", res", "tored", " worl", "d"
    path.write_bytes(b"hello, resXXXXX worlX")
    policy = ExistingEntries("if-changed", False, blob_id)
    decision, reuse = policy.decide_file(entry, os.lstat(path), lambda: _open(path))
    assert decision is Decision.WRITE and reuse == {0, 1, 3}
    os.link(path, tmp_path / "other_name")  # in place would change the other name too: rewrite it whole
    assert policy.decide_file(entry, os.lstat(path), lambda: _open(path)) == (Decision.WRITE, frozenset())
    os.unlink(tmp_path / "other_name")
    path.write_bytes(b"hello, restored worl")  # another size: nothing is reused
    assert policy.decide_file(entry, os.lstat(path), lambda: _open(path)) == (Decision.WRITE, frozenset())


@pytest.mark.parametrize(("content", "why"), [
    (b"hello, restored world", None),
    (b"hello, restored worlD", "content differs in the chunk at offset 20"),
    (b"hello, restored", "size 15 instead of 21"),
])
def test_content_mismatch(tmp_path, content, why):
    entry = entry_for(b"hello, restored world", 0)
    p = tmp_path / "f"
    p.write_bytes(content)
    fd = _open(p)
    try:
        assert content_mismatch(fd, entry, blob_id) == why
    finally:
        os.close(fd)


def test_content_mismatch_with_lying_chunk_lengths(tmp_path):
    entry = entry_for(b"hello, restored world", 0)
    entry.chunks[-1][1] = 10  # claims more than the recorded size
    p = tmp_path / "f"
    p.write_bytes(b"hello, restored world")
    fd = _open(p)
    try:
        assert content_mismatch(fd, entry, blob_id) is not None
    finally:
        os.close(fd)


def test_delete_walk_never_leaves_the_target(tmp_path):
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "dir" / "keep").write_bytes(b"x")
    target = tmp_path / "target"
    (target / "r" / "sub").mkdir(parents=True)
    (target / "r" / "sub" / "held").write_bytes(b"in the snapshot")
    (target / "r" / "sub" / "extra").write_bytes(b"not")
    os.symlink(outside / "dir", target / "r" / "link_out")  # not in the snapshot: removed as a link
    os.symlink(outside / "dir", target / "r" / "held_link")  # in the snapshot as a directory: not descended
    os.symlink(outside, target / "root_link")  # a root reached through a symlink: skipped
    (target / "beside").write_bytes(b"not below a root")
    held = {b"r/sub", b"r/sub/held", b"r/held_link", b"r/held_link/keep"}

    dry = delete_extraneous(os.fsencode(target), [b"r", b"root_link/dir", b"r/sub"], held.__contains__,
                            dry_run=True)
    assert sorted(dry.deleted) == [b"r/link_out", b"r/sub/extra"]
    assert (target / "r" / "sub" / "extra").exists()
    done = delete_extraneous(os.fsencode(target), [b"r", b"root_link/dir"], held.__contains__)
    assert sorted(done.deleted) == [b"r/link_out", b"r/sub/extra"] and not done.failed
    assert not os.path.lexists(target / "r" / "link_out")
    assert (outside / "dir" / "keep").exists() and (target / "beside").exists()
    assert (target / "r" / "held_link").is_symlink()


def test_delete_removes_whole_directories_and_lists_them_first(tmp_path):
    target = tmp_path / "t"
    (target / "a" / "b" / "c").mkdir(parents=True)
    (target / "a" / "b" / "c" / "f").write_bytes(b"x")
    (target / "a" / "b" / "g").write_bytes(b"y")
    done = delete_extraneous(os.fsencode(target), [b""], lambda rel: rel == b"a")
    assert done.deleted == [b"a/b", b"a/b/c", b"a/b/c/f", b"a/b/g"]
    assert os.listdir(target / "a") == []
    assert delete_extraneous(os.fsencode(tmp_path / "absent"), [b""], lambda rel: False).deleted == []


def test_delete_roots_that_climb_out_are_refused(tmp_path):
    """A snapshot's recorded paths are hostile data: a root of '../x' must not reach outside the target."""
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "file").write_bytes(b"outside the target")
    target = tmp_path / "t"
    (target / "a").mkdir(parents=True)
    for root in (b"../victim", b"a/../../victim", b"./../victim"):
        done = delete_extraneous(os.fsencode(target), [root], lambda rel: False)
        assert done.deleted == [] and done.failed, root
    assert (tmp_path / "victim" / "file").exists()


def test_restore_delete_with_a_hostile_snapshot_path(tmp_path, trees):
    """A forged snapshot whose recorded path climbs out of the target: --delete removes nothing outside."""
    from haeedge.repo.snapshot import Snapshot, now_iso
    from haeedge.repo.tree import Node
    from haeedge.restorer import RestoreOptions, Restorer

    handle = trees.init_library_repo(tmp_path / "repo")
    with handle.open() as repo:
        tw = repo.tree_writer()
        tw.add(Node(b"x", "dir", 0o755, 0, 0, mtime_ns=10**18))
        tree = tw.finish()
        repo.flush()
        sid = repo.save_snapshot(Snapshot(time=now_iso(), host="h", paths=["/../victim", "/x"], kind="full",
                                          tree=tree))
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "file").write_bytes(b"outside the target")
    target = tmp_path / "t"
    (target / "x").mkdir(parents=True)
    (target / "x" / "extra").write_bytes(b"not in the snapshot")
    with handle.open() as repo:
        res = Restorer(repo, RestoreOptions(target=str(target), delete=True)).run(repo.load_snapshot(sid))
    assert res.deleted == ["x/extra"]
    assert any("not a plain path" in w for w in res.skipped), res.warnings
    assert (tmp_path / "victim" / "file").exists()
