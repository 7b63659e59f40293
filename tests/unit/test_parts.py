"""Small pure parts: durations, option parsing, documents (snapshot, config), locks, tree ordering."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import timedelta

import pytest

from haeedge.chunking import ChunkerParams
from haeedge.cli.shared import parse_compression
from haeedge.durations import parse_duration
from haeedge.errors import ExitCode, FormatError, HaeedgeError, UsageError
from haeedge.operations.check import parse_subset
from haeedge.repo.config import RepositoryConfig
from haeedge.repo.lock import STALE_AFTER, LockInfo, decode_lock, encode_lock
from haeedge.repo.snapshot import Snapshot
from haeedge.repo.tree import Node, decode_entry, encode_entry, is_under, merge_chain, sort_key


@pytest.mark.parametrize("text,seconds", [("7d", 7 * 86400), ("12h", 43200), ("1w2d", 9 * 86400), ("90m", 5400),
                                          ("1y", 365 * 86400), ("2mo", 60 * 86400), ("0s", 0), (" 3D ", 3 * 86400)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "7", "d", "7 d", "-1d", "1.5h", "7days", "1d x"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_compression():
    assert parse_compression(None) is None
    assert parse_compression("off") == 0 and parse_compression("auto") == 3 and parse_compression("22") == 22
    for bad in ("0", "23", "x", ""):
        with pytest.raises(UsageError):
            parse_compression(bad)


def test_parse_subset():
    assert parse_subset(None) is None
    ids = [f"{i:08x}" + "0" * 56 for i in range(300)]
    assert len(parse_subset("2/3")(ids)) == 100
    parts = [set(parse_subset(f"{n}/3")(ids)) for n in (1, 2, 3)]
    assert set.union(*parts) == set(ids) and sum(map(len, parts)) == len(ids)  # the parts partition the packs
    assert parse_subset("100%")(ids) == ids
    half = parse_subset("50%")
    picks = [half(ids) for _ in range(3)]
    assert all(len(p) == 150 and set(p) <= set(ids) for p in picks)
    assert len({tuple(p) for p in picks}) > 1  # a random share, not the same packs every time
    assert len(parse_subset("1%")(ids[:10])) == 1  # never none of them
    assert parse_subset("1%")([]) == []
    for bad in ("0/3", "4/3", "x", "0%", "101%", "1/0"):
        with pytest.raises(UsageError):
            parse_subset(bad)


def test_exit_codes_are_the_documented_ones():
    assert (ExitCode.OK, ExitCode.FATAL, ExitCode.USAGE, ExitCode.PARTIAL, ExitCode.INTEGRITY) == (0, 1, 2, 3, 4)
    assert (ExitCode.NO_REPOSITORY, ExitCode.LOCKED, ExitCode.WRONG_PASSWORD, ExitCode.INTERRUPTED) == \
        (10, 11, 12, 130)
    assert HaeedgeError("x").exit_code == 1


# ---------------------------------------------------------------------- documents


def _snap(**kw) -> Snapshot:
    base = dict(time="2026-01-02T03:04:05.000006Z", host="h", paths=["/a"], kind="full", tree=["ab" * 32])
    base.update(kw)
    return Snapshot(**base)


def test_snapshot_round_trip_keeps_unknown_fields():
    s = _snap(tags=["t"], summary={"files_new": 1}, extra={"future_field": [1, 2]})
    back = Snapshot.from_bytes(s.to_bytes(), "cd" * 32)
    assert back.tags == ["t"] and back.summary == {"files_new": 1} and back.extra == {"future_field": [1, 2]}
    assert back.id == "cd" * 32 and back.chain_root == back.id


@pytest.mark.parametrize("change", [
    {"kind": "weird"},
    {"kind": "incremental"},  # no parent, chain, depth
    {"kind": "full", "parent": "ab" * 32},
    {"tree": ["not hex"]},
    {"time": "yesterday"},
    {"kind": "incremental", "parent": "ab" * 32, "chain": "ab" * 32, "depth": 0},
])
def test_snapshot_validation(change):
    doc = json.loads(_snap().to_bytes())
    doc.update(change)
    with pytest.raises(FormatError):
        Snapshot.from_bytes(json.dumps(doc).encode(), "00" * 32)
    with pytest.raises(FormatError):
        Snapshot.from_bytes(b"\xff not json", "00" * 32)


def test_config_round_trip_and_validation():
    c = RepositoryConfig(repository_id="r1", chunker=ChunkerParams(4096, 16384, 65536), compression_level=7)
    back = RepositoryConfig.from_bytes(c.to_bytes())
    assert back == c
    doc = json.loads(c.to_bytes())
    for key, value in (("haeedge_repository", 2), ("pack_size", 10), ("key_scheme", "rot13")):
        bad = dict(doc, **{key: value})
        with pytest.raises(FormatError):
            RepositoryConfig.from_bytes(json.dumps(bad).encode())
    bad = dict(doc, chunker={"algorithm": "fastcdc-2020-gear", "min": 10, "avg": 5, "max": 1})
    with pytest.raises(FormatError):
        RepositoryConfig.from_bytes(json.dumps(bad).encode())


def test_chunker_params_validation():
    ChunkerParams().validate()
    for bad in (ChunkerParams(0, 1024, 4096), ChunkerParams(8192, 4096, 65536), ChunkerParams(64, 128, 512),
                ChunkerParams(1 << 20, 1 << 21, 1 << 27)):
        with pytest.raises(ValueError):
            bad.validate()


# ---------------------------------------------------------------------- locks


def test_lock_documents_and_staleness():
    info = decode_lock("n", encode_lock(True, "prune"))
    assert info.exclusive and info.pid == os.getpid() and info.host == socket.gethostname()
    assert info.command == "prune" and not info.is_stale()
    assert info.is_stale(now=time.time() + STALE_AFTER + 1)
    dead = LockInfo("d", socket.gethostname(), 2**22 + 12345, "u", time.time(), True)
    assert dead.is_stale()  # no such process here
    remote = LockInfo("r", "another-host.example", 2**22 + 12345, "u", time.time(), True)
    assert not remote.is_stale()  # cannot check another host's processes: trust the refresh time
    with pytest.raises(FormatError):
        decode_lock("x", b"{}")


# ---------------------------------------------------------------------- tree order and chains


def test_sort_key_is_component_wise():
    paths = [b"a.b", b"a/b", b"a", b"a/b/c", b"a-b", b"a/b.c", b"\xff", b"A"]
    assert sorted(paths, key=sort_key) == [b"A", b"a", b"a/b", b"a/b/c", b"a/b.c", b"a-b", b"a.b", b"\xff"]
    assert is_under(b"a/b", [b"a"]) and is_under(b"a", [b"a"]) and not is_under(b"ab", [b"a"])


def test_merge_chain_overlays_newest_first():
    def e(path, v=None, deleted=None):
        return Node(path.encode(), None if deleted else "file", size=v, deleted=deleted)

    full = [e("a", v=0), e("a/x", v=0), e("b", v=0), e("c", v=0)]
    inc1 = [e("a/x", deleted=True), e("b", v=1), e("bb", v=1)]
    inc2 = [e("a/x", v=2), e("c", deleted=True)]
    merged = list(merge_chain([iter(full), iter(inc1), iter(inc2)]))
    assert [(m.path, m.size) for m in merged] == [(b"a", 0), (b"a/x", 2), (b"b", 1), (b"bb", 1)]
    assert [m.path for m in merge_chain([iter(full), iter(inc1)])] == [b"a", b"b", b"bb", b"c"]


def test_signing_and_repository_do_not_import_each_other():
    """repo/repository.py imports repo/signing.py at the top; signing sees a repository only through
    its SigningRepository protocol, so neither hides an import of the other inside a function."""
    import ast
    import inspect
    from pathlib import Path

    import haeedge.repo.repository as repository
    import haeedge.repo.signing as signing

    def imports(module) -> list[tuple[str, bool]]:
        """(imported module, at the top level) for every import in ``module``'s source."""
        tree = ast.parse(Path(module.__file__).read_text())
        top = {id(n) for n in tree.body}
        return [(n.module or "", id(n) in top) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]

    assert ("haeedge.repo.signing", True) in imports(repository)
    assert [m for m, top in imports(repository) if m == "haeedge.repo.signing" and not top] == []
    assert [m for m, _ in imports(signing) if m == "haeedge.repo.repository"] == []
    # Repository is a SigningRepository: it has every method and sets every attribute the protocol names.
    protocols = [c for c in signing.SigningRepository.__mro__ if c.__module__.startswith("haeedge.")]
    methods = {n for c in protocols for n, v in vars(c).items() if callable(v) and not n.startswith("_")}
    assert len(methods) == 7 and all(callable(getattr(repository.Repository, n, None)) for n in methods)
    attributes = {a for c in protocols for a in vars(c).get("__annotations__", {})}
    assert attributes == {"backend", "config", "keys", "trust"}
    init = inspect.getsource(repository.Repository.__init__)
    assert all(f"self.{a}: " in init or f"self.{a} = " in init for a in attributes)


@pytest.mark.parametrize("line", [
    b'{"path":"a/f","type":"file","mode":420,"uid":0,"gid":0,"user":"root","group":"root","mtime_ns":-5,'
    b'"ctime_ns":7,"inode":9,"size":3,"nlink":2,"hardlink":"1:9","chunks":[["' + b"ab" * 32 + b'",3]],'
    b'"damaged":true}',
    b'{"path_b64":"/25hbWU=","type":"symlink","mode":511,"uid":1,"gid":2,"mtime_ns":0,"ctime_ns":0,"inode":1,'
    b'"target_b64":"/w=="}',
    b'{"path":"caf\xc3\xa9","type":"chardev","mode":0,"rdev":1025,"damaged":false}',
    b'{"path":"x","deleted":true}',
    b'{"path":"y","type":"file","size":0,"chunks":[],"atime_ns":5,"later_field":{"k":[1,2]}}',
])
def test_tree_entries_decode_and_encode_to_the_same_bytes(line):
    """Format v1 lines, including non-UTF-8 names, explicit false flags and fields of a later version."""
    node = decode_entry(line)
    assert encode_entry(node) == line + b"\n"


def test_node_fields_hold_raw_bytes_and_keep_unknown_fields():
    node = decode_entry(b'{"path_b64":"/25hbWU=","type":"symlink","target_b64":"/w==","future":1}')
    assert node.path == b"\xffname" and node.target == b"\xff" and node.extra == {"future": 1}
    assert node.size is None and node.damaged is None
    assert encode_entry(Node(b"d", "dir", 0o755)) == b'{"path":"d","type":"dir","mode":493}\n'
