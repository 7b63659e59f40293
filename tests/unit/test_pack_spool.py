"""Packs written straight to local disk: the same bytes and id as in memory, nothing left behind."""

from __future__ import annotations

import hashlib
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from haeedge.backends.local import LocalBackend
from haeedge.repo.pack import BLOB_DATA, PackBuilder, SpooledPackBuilder


def _fill(b: PackBuilder, blobs: list[bytes]) -> str:
    for i, blob in enumerate(blobs):
        b.add(BLOB_DATA, 0, bytes([i]) * 32, blob, len(blob))
    return b.finish(b"header")


def _leftovers(root) -> list[str]:
    return [f for _d, _s, files in os.walk(root) for f in files if f.startswith(".tmp-")]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=2000), min_size=1, max_size=12))
def test_a_spooled_pack_is_byte_for_byte_the_pack_built_in_memory(tmp_path_factory, blobs):
    root = tmp_path_factory.mktemp("repo")
    backend = LocalBackend(str(root))
    backend.create()
    mem, spooled = PackBuilder(), SpooledPackBuilder(backend.open_spool)
    pack_id = _fill(mem, blobs)
    assert _fill(spooled, blobs) == pack_id
    assert spooled.length == mem.length and spooled.entries == mem.entries
    spooled.store(backend.put, f"data/{pack_id[:2]}/{pack_id}")
    stored = backend.get(f"data/{pack_id[:2]}/{pack_id}")
    assert stored == bytes(mem.buffer) and hashlib.sha256(stored).hexdigest() == pack_id
    assert _leftovers(root) == []


@settings(max_examples=25, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=30), st.integers(1, 700))
def test_small_blobs_gathered_into_bigger_writes_give_the_same_pack(tmp_path_factory, blobs, gather):
    # Blobs below WRITE_BYTES are written in groups; blobs at or above it, at once: any mix,
    # the same bytes, entries and id as the pack built in memory.
    root = tmp_path_factory.mktemp("repo")
    backend = LocalBackend(str(root))
    backend.create()
    writes: list[int] = []
    opened = backend.open_spool

    def counting_spool():
        spool = opened()
        real = spool.write
        spool.write = lambda data: (writes.append(len(data)), real(data))[1]
        return spool

    mem, spooled = PackBuilder(), SpooledPackBuilder(counting_spool)
    spooled.WRITE_BYTES = gather  # an instance attribute: the class keeps its own
    pack_id = _fill(mem, blobs)
    assert _fill(spooled, blobs) == pack_id
    assert spooled.entries == mem.entries and spooled.length == mem.length == sum(writes)
    small = [b for b in blobs if len(b) < gather]
    if len(small) > 1 and sum(map(len, small)) < gather:
        assert len(writes) < len(blobs) + 2  # fewer writes than blobs + header + trailer
    spooled.store(backend.put, f"data/{pack_id[:2]}/{pack_id}")
    assert backend.get(f"data/{pack_id[:2]}/{pack_id}") == bytes(mem.buffer)


def test_a_discarded_spool_leaves_nothing(tmp_path):
    backend = LocalBackend(str(tmp_path / "r"))
    backend.create()
    b = SpooledPackBuilder(backend.open_spool)
    b.add(BLOB_DATA, 0, b"\2" * 32, b"small", 5)  # gathered in memory
    b.add(BLOB_DATA, 0, b"\1" * 32, b"s" * SpooledPackBuilder.WRITE_BYTES, SpooledPackBuilder.WRITE_BYTES)
    assert len(_leftovers(backend.root)) == 1  # a big blob is written as it comes, under a temporary name
    b.discard()
    assert _leftovers(backend.root) == []
    assert list(backend.list("data")) == []


def test_an_empty_builder_opens_no_file(tmp_path):
    backend = LocalBackend(str(tmp_path / "r"))
    backend.create()
    SpooledPackBuilder(backend.open_spool).discard()
    assert _leftovers(backend.root) == []


def test_a_backup_leaves_no_temporary_files_and_prune_removes_a_crashed_ones(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(300_000))
    cli("backup", src).ok()
    assert _leftovers(fast_repo.path) == []
    # What a backup killed while filling a pack leaves: invisible to listing, verify and restore.
    (fast_repo.path / "data" / ".tmp-pack-999-0123456789ab").write_bytes(os.urandom(5000))
    cli("verify", "--read-data").ok()
    out = cli("prune", "--json").ok().json()
    assert out["temporaries_removed"] == 1
    assert _leftovers(fast_repo.path) == []
    cli("verify", "--read-data").ok()
