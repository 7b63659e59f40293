"""The local metadata cache (repo/cache.py) on its own, over a real backend (local disk): what it
serves, what it refuses, and how it stays bounded. End-to-end tests against S3 are in
tests/backends/test_s3_requests.py."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from haeedge.backends.local import LocalBackend
from haeedge.repo.cache import CachingBackend, ObjectCache

RID = "ab" * 32


def stored(backend: LocalBackend, namespace: str, data: bytes) -> str:
    name = f"{namespace}/{hashlib.sha256(data).hexdigest()}"
    backend.put(name, data)
    return name


def make(tmp_path: Path) -> tuple[LocalBackend, CachingBackend, ObjectCache]:
    inner = LocalBackend(str(tmp_path / "repo"))
    inner.create()
    cache = ObjectCache(tmp_path / "cache", "s3://bucket/repo")
    cache.bind(RID)
    return inner, CachingBackend(inner, cache), cache


def test_serves_listed_objects_only_and_checks_every_entry(tmp_path: Path) -> None:
    inner, cb, cache = make(tmp_path)
    name = stored(inner, "snapshots", b"snapshot one")
    assert list(cb.list("snapshots"))[0].name == name
    assert cb.get(name) == b"snapshot one" and cache.misses == 1  # first read: from storage, kept
    assert (tmp_path / "cache" / RID / name).read_bytes() == b"snapshot one"
    assert cb.get(name) == b"snapshot one" and cache.hits == 1
    # an entry that does not match its name is deleted and the object read from storage again
    (tmp_path / "cache" / RID / name).write_bytes(b"snapshot two")
    assert cb.get(name) == b"snapshot one" and cache.dropped == 1
    assert (tmp_path / "cache" / RID / name).read_bytes() == b"snapshot one"
    # an object storage no longer lists is not served from the cache, and the listing removes it
    inner.delete(name)
    assert list(cb.list("snapshots")) == []
    assert not (tmp_path / "cache" / RID / name).exists()
    # names outside the cached namespaces, or not a SHA-256, never touch the cache
    lock = stored(inner, "locks", b"lock")
    assert cb.get(lock) == b"lock" and not (tmp_path / "cache" / RID / "locks").exists()
    cache.write("snapshots/../../escape", b"x")
    assert not (tmp_path / "escape").exists()


def test_verify_mode_reads_storage_and_still_keeps_what_it_read(tmp_path: Path) -> None:
    inner, cb, cache = make(tmp_path)
    name = stored(inner, "index", b"index object")
    list(cb.list("index"))
    cb.get(name)
    cache.reads = False
    (tmp_path / "repo" / "index").joinpath(name.split("/")[1]).write_bytes(b"damaged in storage")
    assert cb.get(name) == b"damaged in storage"  # what storage holds, for verify to find
    assert (tmp_path / "cache" / RID / name).read_bytes() == b"index object"  # the checked copy stays


def test_writes_are_kept_and_unbound_reads_wait_for_the_repository(tmp_path: Path) -> None:
    inner = LocalBackend(str(tmp_path / "repo"))
    inner.create()
    key = stored(inner, "keys", b"key slot")
    cache = ObjectCache(tmp_path / "cache", "s3://bucket/other")
    cb = CachingBackend(inner, cache)
    list(cb.list("keys"))
    assert cb.get(key) == b"key slot" and cache.dir is None  # repository not known yet: kept in memory
    cache.bind(RID)
    assert (tmp_path / "cache" / RID / key).read_bytes() == b"key slot"
    # the next run finds the repository's directory through the location
    again = ObjectCache(tmp_path / "cache", "s3://bucket/other")
    assert again.dir == tmp_path / "cache" / RID
    snap = f"snapshots/{hashlib.sha256(b'new').hexdigest()}"
    cb.put(snap, b"new")
    assert (tmp_path / "cache" / RID / snap).read_bytes() == b"new"
    assert (tmp_path / "cache" / "CACHEDIR.TAG").read_bytes().startswith(b"Signature: 8a477f597d28d172789f06886806bc55")


def test_tree_blobs_are_trimmed_least_recently_used_first(tmp_path: Path) -> None:
    _inner, _cb, cache = make(tmp_path)
    ids = [f"{i:02x}" * 32 for i in range(8)]
    for n, bid in enumerate(ids):
        cache.write_blob(bid, 1, os.urandom(1000))
        path = cache._blob_path(bid, 1)
        assert path is not None
        os.utime(path, (time.time() - 1000 + n, time.time() - 1000 + n))
    assert cache.read_blob(ids[0], 1) is not None  # used now: kept
    cache.trim_trees(max_bytes=4000, every=0)
    left = {bid for bid in ids if cache._blob_path(bid, 1).exists()}
    assert ids[0] in left and len(left) <= 3 and ids[1] not in left
    cache.trim_trees(max_bytes=0, every=3600)  # looked at within the hour: left alone
    assert {bid for bid in ids if cache._blob_path(bid, 1).exists()} == left
