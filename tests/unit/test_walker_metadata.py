"""The walk (order, excludes, deep and long trees) and lstat -> tree entry."""

from __future__ import annotations

import dataclasses
import os
import stat

import pytest

from haeedge.archiver.metadata import entry_from_stat, unchanged_file
from haeedge.archiver.walker import Excluder, normalize_sources, walk_sources
from haeedge.fs import LONG_PATH, lstat_long, open_long, readlink_long
from haeedge.repo.tree import encode_entry, sort_key


def _walk(sources, excludes=(), one_fs=False):
    errors = []
    items = list(walk_sources([os.fsencode(os.path.abspath(s)) for s in sources], Excluder(list(excludes)),
                              one_fs, lambda p, e: errors.append((p, e))))
    return items, errors


def _tree(root):
    for p in ("b/c", "a", "a.b", "a/z", "a/b/c", "A"):
        (root / p).mkdir(parents=True, exist_ok=True)
    for p in ("a/file", "a.b/f", "a-b", "a/b/c/deep", "b/c/x.tmp", "b/c/keep"):
        (root / p).write_text(p)
    with open(os.fsencode(root) + b"/\xff-not-utf8", "wb") as f:
        f.write(b"x")


def test_walk_order_is_tree_order_and_ancestors_come_first(tmp_path):
    _tree(tmp_path)
    items, errors = _walk([tmp_path])
    assert not errors
    rels = [i.relpath for i in items]
    assert rels == sorted(rels, key=sort_key), "the walk must produce entries in tree order"
    assert len(set(rels)) == len(rels)
    parts = os.fsencode(tmp_path).strip(b"/").split(b"/")
    assert rels[: len(parts)] == [b"/".join(parts[: i + 1]) for i in range(len(parts))]
    assert os.fsencode(tmp_path).lstrip(b"/") + b"/\xff-not-utf8" in rels


def test_excludes_by_name_and_by_path(tmp_path):
    _tree(tmp_path)
    items, _ = _walk([tmp_path], excludes=["*.tmp", f"{tmp_path}/a/b", "# a comment", ""])
    rels = {i.abspath for i in items}
    base = os.fsencode(tmp_path)
    assert base + b"/b/c/x.tmp" not in rels and base + b"/b/c/keep" in rels
    assert base + b"/a/b" not in rels and base + b"/a/b/c/deep" not in rels
    assert base + b"/a/file" in rels


def test_normalize_sources():
    assert normalize_sources(["/a/b", "/a", "/a/b/c", "/x/../y", "/y/"]) == [b"/a", b"/y"]
    assert normalize_sources(["/a.b", "/a", "/a/b"]) == [b"/a", b"/a.b"]


def test_thousands_of_nested_directories(tmp_path):
    """A recursive walk would hit Python's recursion limit (about 1000 frames)."""
    p = os.fsencode(tmp_path)
    for _ in range(1500):
        p += b"/d"
        os.mkdir(p)
    with open(p + b"/bottom", "wb") as f:
        f.write(b"x")
    try:
        items, errors = _walk([tmp_path])
        assert not errors
        assert items[-1].abspath == p + b"/bottom"
        assert len(items) > 1500
    finally:  # shutil.rmtree (and so pytest's cleanup) recurses and would fail on this tree
        os.unlink(p + b"/bottom")
        while p != os.fsencode(tmp_path):
            os.rmdir(p)
            p = p.rpartition(b"/")[0]


def test_paths_longer_than_path_max(tmp_path, trees):
    trees.make_deep_dirs(tmp_path, 6000)
    items, errors = _walk([tmp_path])
    assert not errors, [(len(p), e) for p, e in errors]
    deepest = items[-1]
    assert len(deepest.abspath) == 6000 and deepest.abspath.endswith(b"/deep.txt")
    assert stat.S_ISREG(deepest.st.st_mode)
    assert lstat_long(deepest.abspath).st_ino == deepest.st.st_ino
    fd = open_long(deepest.abspath, os.O_RDONLY)
    try:
        assert os.read(fd, 100).startswith(b"at the bottom")
    finally:
        os.close(fd)
    assert len(deepest.abspath) > LONG_PATH


def test_readlink_long(tmp_path, trees):
    rel = trees.make_deep_dirs(tmp_path, 5000)
    deep_dir = rel.rpartition(b"/")[0]
    fd = os.open(os.fsencode(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        for comp in deep_dir.split(b"/"):
            nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.symlink(b"somewhere/\xff", b"lnk", dir_fd=fd)
    finally:
        os.close(fd)
    link = os.fsencode(tmp_path) + b"/" + deep_dir + b"/lnk"
    assert readlink_long(link) == b"somewhere/\xff"
    e = entry_from_stat(link.lstrip(b"/"), lstat_long(link), link)
    assert e.type == "symlink" and e.target == b"somewhere/\xff"


def test_one_file_system(tmp_path):
    if not os.path.ismount("/dev/pts"):
        pytest.skip("needs /dev/pts mounted below /dev")
    items, _ = _walk(["/dev"], one_fs=True)
    paths = {i.abspath for i in items}
    assert b"/dev/pts" in paths  # the mount point itself is recorded ...
    assert not any(p.startswith(b"/dev/pts/") for p in paths)  # ... but not crossed
    items, _ = _walk(["/dev"], one_fs=False)
    assert any(i.abspath.startswith(b"/dev/pts/") for i in items)


# ---------------------------------------------------------------------- metadata


def test_entry_from_stat_fields(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"12345")
    os.chown(f, 1234, 5678)
    os.chmod(f, 0o4750)
    os.utime(f, ns=(5, 1_234_567_890_123_456_789))
    os.link(f, tmp_path / "g")
    st = os.lstat(f)
    e = entry_from_stat(b"x/f", st, os.fsencode(f))
    assert e.path == b"x/f" and e.type == "file" and e.size == 5
    assert e.mode == 0o4750 and e.uid == 1234 and e.gid == 5678
    assert e.user is None and e.group is None  # no names for unknown ids
    assert e.mtime_ns == 1_234_567_890_123_456_789
    assert e.nlink == 2 and e.hardlink == f"{st.st_dev}:{st.st_ino}"
    root = entry_from_stat(b"r", os.lstat("/"), b"/")
    assert root.user == "root" and root.type == "dir"
    e = entry_from_stat(b"\xffname", os.lstat(f), os.fsencode(f))
    assert e.path == b"\xffname" and b'"path_b64"' in encode_entry(e)


def test_unchanged_file_rule(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    st = os.lstat(f)
    parent = entry_from_stat(b"f", st, os.fsencode(f))
    parent.chunks = [["00" * 32, 3]]
    assert unchanged_file(parent, st)
    for key, value in (("size", 4), ("mtime_ns", 1), ("ctime_ns", 1), ("inode", 1)):
        assert not unchanged_file(dataclasses.replace(parent, **{key: value}), st), key
    assert not unchanged_file(dataclasses.replace(parent, damaged=True), st)
    assert not unchanged_file(dataclasses.replace(parent, chunks=None), st)
    assert not unchanged_file(dataclasses.replace(parent, type="symlink"), st)
