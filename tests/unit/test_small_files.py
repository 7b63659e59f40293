"""Trees of many tiny files: what the per-file shortcuts of the backup must not change.

The walk, the worker round trip (tuples), the pack writes gathered per 256 KiB,
the direct encoding of file-list lines and the path check by substring tests
are all shortcuts for the small-file case; each test here fails if one of them
loses a byte, a time stamp, an unchanged file or the full/incremental choice.
"""

from __future__ import annotations

import json
import os
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haeedge.archiver import Archiver, BackupOptions
from haeedge.archiver import backup as backup_mod
from haeedge.backends.local import LocalBackend
from haeedge.errors import FormatError
from haeedge.repo.config import RepositoryConfig
from haeedge.repo.repository import Credentials, Repository
from haeedge.repo.snapshot import KIND_FULL, KIND_INCREMENTAL
from haeedge.repo.tree import Node, decode_entry, encode_entry, validate_entry
from haeedge.restorer import RestoreOptions, Restorer


def _repo(path) -> Repository:
    cfg = RepositoryConfig(repository_id=os.urandom(32).hex())
    Repository.init(LocalBackend(str(path)), b"pw", config=cfg, s2k_count_byte=0x10)
    return _open(path)


def _open(path) -> Repository:
    repo = Repository.open(LocalBackend(str(path)), Credentials([b"pw"]))
    repo.load_index()
    return repo


def _tiny_tree(root, rng: random.Random, n: int) -> None:
    """n files of 0-2 KiB (a tenth empty, some identical) in nested directories, odd modes and times."""
    for i in range(n):
        d = root / f"d{i % 7}" / f"e{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        size = 0 if i % 10 == 0 else rng.randrange(1, 2048)
        data = b"same content" if i % 13 == 0 else rng.randbytes(size)
        p = d / f"f{i:04d}"
        p.write_bytes(data)
        os.chmod(p, 0o600 if i % 2 else 0o644)
        os.utime(p, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_000_000_000 + 7 * i))


def _metadata(root) -> dict[str, tuple]:
    out = {}
    for p in sorted(root.rglob("*")):
        st_ = p.lstat()
        out[str(p.relative_to(root))] = (p.is_dir(), st_.st_mode, st_.st_mtime_ns,
                                         None if p.is_dir() else p.read_bytes())
    return out


def _restore(repo: Repository, snap, target) -> None:
    Restorer(repo, RestoreOptions(target=str(target))).run(snap)


@pytest.mark.parametrize("mode", ["processes", "threads"])
def test_many_tiny_and_empty_files_round_trip_bytes_and_metadata(tmp_path, monkeypatch, mode):
    if mode == "threads":
        monkeypatch.setenv("HAEEDGE_THREADS", "1")
    monkeypatch.setattr(backup_mod, "BATCH_FILES", 17)  # many batches, finished in any order
    src = tmp_path / "src"
    _tiny_tree(src, random.Random(3), 600)
    repo = _repo(tmp_path / "repo")
    res = Archiver(repo, BackupOptions(paths=[str(src)], workers=2)).run()
    assert res.summary.errors == 0 and res.summary.files_new == 600
    repo.close()
    repo = _open(tmp_path / "repo")
    _restore(repo, repo.resolve_snapshot("latest"), tmp_path / "out")
    assert _metadata(tmp_path / "out" / str(src).lstrip("/")) == _metadata(src)
    # Empty files have no chunks; the others exactly one (below the chunker's minimum size).
    for e in repo.iter_entries(res.snapshot):
        if e.type == "file":
            assert len(e.chunks) == (0 if e.size == 0 else 1), e.path


def test_unchanged_detection_and_the_incremental_choice(tmp_path):
    src = tmp_path / "src"
    _tiny_tree(src, random.Random(5), 300)
    def backup(**opts):
        repo = _open(tmp_path / "repo")  # a run per process, as the command line does
        try:
            return Archiver(repo, BackupOptions(paths=[str(src)], workers=2, **opts)).run()
        finally:
            repo.close()

    _repo(tmp_path / "repo").close()
    first = backup()
    assert first.snapshot.kind == KIND_FULL

    # Unchanged: nothing read, nothing stored but the (empty) file list, an incremental.
    second = backup()
    s = second.summary
    assert second.snapshot.kind == KIND_INCREMENTAL and second.snapshot.parent == first.snapshot.id
    assert (s.files_unchanged, s.files_changed, s.files_new, s.bytes_read, s.data_blobs_added) == (300, 0, 0, 0, 0)

    # One file rewritten with the same size and mtime but a new ctime and inode, one
    # touched, one removed, one added: exactly those count, and the result restores.
    victim = src / "d1" / "e1" / "f0001"
    st_ = victim.stat()
    data = bytearray(victim.read_bytes())
    data[0] ^= 1
    victim.unlink()
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st_.st_atime_ns, st_.st_mtime_ns))
    os.utime(src / "d2" / "e2" / "f0002", ns=(1, 2))
    (src / "d0" / "e0" / "f0000").unlink()
    (src / "d0" / "new").write_bytes(b"new")
    third = backup()
    s = third.summary
    assert third.snapshot.kind == KIND_INCREMENTAL
    assert (s.files_changed, s.files_new, s.files_deleted, s.files_unchanged) == (2, 1, 1, 297)
    # --full re-reads every file but stores nothing new.
    fourth = backup(full=True)
    assert fourth.snapshot.kind == KIND_FULL and fourth.summary.data_blobs_added == 0
    assert fourth.summary.bytes_read == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    repo = _open(tmp_path / "repo")
    for snap, name in ((third.snapshot, "out3"), (fourth.snapshot, "out4")):
        _restore(repo, repo.resolve_snapshot(snap.id), tmp_path / name)
        assert _metadata(tmp_path / name / str(src).lstrip("/")) == _metadata(src)


def test_a_parent_whose_file_list_is_unreadable_gives_a_full(tmp_path):
    src = tmp_path / "src"
    _tiny_tree(src, random.Random(9), 40)
    repo = _repo(tmp_path / "repo")
    Archiver(repo, BackupOptions(paths=[str(src)], workers=2)).run()
    repo.close()
    repo = _open(tmp_path / "repo")
    # Pretend the parent's file list cannot be opened with our keys (another host's tree key).
    real = repo.load_blob

    def refuse(blob_id, blob_type=None):
        from haeedge.errors import IntegrityError
        from haeedge.repo.pack import BLOB_TREE

        if blob_type == BLOB_TREE:
            raise IntegrityError("not our tree key")
        return real(blob_id, blob_type)

    repo.load_blob = refuse
    res = Archiver(repo, BackupOptions(paths=[str(src)], workers=2)).run()
    assert res.snapshot.kind == KIND_FULL and res.summary.kind_reason == "parent file list unreadable"
    assert res.summary.files_new == 40 or res.summary.bytes_read > 0


# ---------------------------------------------------------------- file-list lines

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", "é", '"', "\\", "\x00", "\u2028", "\udcff", "a/b", "😀"])
_ints = st.integers(0, (1 << 63) - 1)
_path = st.lists(st.binary(min_size=1, max_size=6).filter(lambda b: b"/" not in b and b"\0" not in b
                                                          and b not in (b".", b"..")),
                 min_size=1, max_size=4).map(b"/".join)


@settings(max_examples=400, deadline=None)
@given(path=_path, kind=st.sampled_from(["file", "dir", "symlink"]), mode=st.none() | st.integers(0, 0xFFFF),
       uid=st.integers(0, (1 << 32) - 1), gid=st.integers(0, (1 << 32) - 1), user=st.none() | _text,
       group=st.none() | _text, mtime=st.integers(-(1 << 62), 1 << 62),
       inode=_ints, size=st.none() | _ints, nlink=st.none() | _ints,
       chunks=st.none() | st.lists(st.tuples(st.binary(min_size=32, max_size=32).map(bytes.hex),
                                             st.integers(0, 1 << 28)).map(list), max_size=3),
       flag=st.none() | st.booleans(), extra=st.none() | st.dictionaries(st.sampled_from(["atime_ns", "zz"]), _ints))
def test_a_line_is_what_json_dumps_writes(path, kind, mode, uid, gid, user, group, mtime, inode, size, nlink, chunks,
                                          flag, extra):
    """The direct encoding of common entries gives json.dumps's bytes exactly, for any field values."""
    node = Node(path, kind, mode, uid, gid, user, group, mtime, mtime - 1, inode, size, chunks, nlink,
                damaged=flag, extra=extra)
    want = json.dumps(node.to_doc(), separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogateescape")
    assert encode_entry(node) == want + b"\n"
    if path.decode("utf-8", "replace").encode() == path:
        assert encode_entry(decode_entry(want)) == want + b"\n"


def test_a_bool_or_float_where_an_int_belongs_is_written_as_json_writes_it():
    # Never produced by the walker, but a direct encoder must not turn True into 1.
    for node in (Node(b"a", "file", True, 0, 0), Node(b"a", "file", 0o644, 0, 0, size=1.5),
                 Node(b"a", "file", 0o644, 0, 0, chunks=[("ab", 1)])):
        want = json.dumps(node.to_doc(), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        assert encode_entry(node) == want


@pytest.mark.parametrize("path", ["a//b", "/a", "a/", ".", "..", "./a", "../a", "a/.", "a/..", "a/./b",
                                  "a/../b", "a/b/..", ".//a", "a\x00b"])
def test_unsafe_paths_are_refused(path):
    with pytest.raises(FormatError):
        validate_entry({"path": path, "type": "file"})


@pytest.mark.parametrize("path", ["a", "a/b", ".a", "a/.b", "..a", "a/..b", "a.", "a/b.", "a../b", "...", "a/.../b"])
def test_clean_paths_pass(path):
    assert validate_entry({"path": path, "type": "file"}).path == path.encode()


@pytest.mark.parametrize("processes", [True, False])
def test_announcements_from_several_writers_arrive_whole(processes):
    """Records written at once by several processes never interleave or get lost (the pipe takes
    writes of up to PIPE_BUF bytes atomically), and a look at an empty channel returns at once."""
    import multiprocessing
    import threading

    from haeedge.archiver.workers import Announcements

    ann = Announcements(processes)
    try:
        assert ann.take() == []

        def writer(base: int) -> None:
            for i in range(3000):
                ann.put(base + i, (base + i) * 7)

        if processes:
            ctx = multiprocessing.get_context("fork")
            runners = [ctx.Process(target=writer, args=(b,)) for b in (0, 1 << 40)]
        else:
            runners = [threading.Thread(target=writer, args=(b,)) for b in (0, 1 << 40)]
        for r in runners:
            r.start()
        got: list[tuple[int, int]] = []
        deadline = time.monotonic() + 60
        while len(got) < 6000 and time.monotonic() < deadline:  # read while they write (a pipe holds 64 KiB)
            got += ann.take()
        for r in runners:
            r.join()
        assert sorted(got) == sorted((b + i, (b + i) * 7) for b in (0, 1 << 40) for i in range(3000))
        assert ann.take() == []
    finally:
        ann.close()
