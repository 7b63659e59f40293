"""Packs, pack headers, index objects, the in-memory blob index and tree streams: round trips and hostile input."""

from __future__ import annotations

import hashlib
import os
import random
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haeedge.backends.local import LocalBackend
from haeedge.chunking import ChunkerParams
from haeedge.errors import FormatError, HaeedgeError, IntegrityError
from haeedge.repo.config import RepositoryConfig
from haeedge.repo.index import BlobIndex, IndexPack, decode_index, encode_index
from haeedge.repo.pack import (
    BLOB_DATA,
    BLOB_TREE,
    PACK_HEADER_MAGIC,
    PackBuilder,
    PackEntry,
    decode_header,
    encode_header,
    split_pack_trailer,
)
from haeedge.repo.packer import WriteOptions
from haeedge.repo.repository import Credentials, Repository
from haeedge.repo.tree import Node, TreeWriter, iter_tree, sort_key

PROPS = settings(max_examples=60, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ids = st.binary(min_size=32, max_size=32)
entry_st = st.builds(lambda t, c, bid, length, raw: (t, c, bid, length, raw),
                     st.sampled_from([BLOB_DATA, BLOB_TREE]), st.sampled_from([0, 1]), ids,
                     st.integers(1, 1 << 24), st.integers(0, 256 << 20))  # packs stay far below 4 GiB


def _entries(raw_entries) -> list[PackEntry]:
    out, off = [], 0
    for t, c, bid, length, raw in raw_entries:
        out.append(PackEntry(t, c, bid, off, length, raw))
        off += length
    return out


# ---------------------------------------------------------------------- pack headers


@PROPS
@given(st.lists(entry_st, max_size=50))
def test_pack_header_round_trip(raw_entries):
    entries = _entries(raw_entries)
    data = encode_header(entries)
    assert data.startswith(PACK_HEADER_MAGIC) and len(data) == 12 + 42 * len(entries)
    assert decode_header(data) == entries


@PROPS
@given(st.binary(max_size=400))
def test_pack_header_hostile_bytes(data):
    try:
        entries = decode_header(data)
    except FormatError:
        return
    assert encode_header(entries) == data  # what is accepted is exactly what a writer would produce


@PROPS
@given(st.lists(entry_st, min_size=1, max_size=10), st.data())
def test_pack_header_damage_is_detected(raw_entries, data):
    enc = bytearray(encode_header(_entries(raw_entries)))
    cut = data.draw(st.integers(0, len(enc) - 1))
    with pytest.raises(FormatError):
        decode_header(bytes(enc[:cut]))
    enc[0] ^= 0xFF
    with pytest.raises(FormatError):
        decode_header(bytes(enc))


@PROPS
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=20), st.binary(min_size=1, max_size=200))
def test_pack_layout_blobs_then_header_then_length(blobs, header):
    b = PackBuilder()
    for i, blob in enumerate(blobs):
        b.add(BLOB_DATA, 0, bytes([i]) * 32, blob, len(blob))
    pack_id = b.finish(header)
    data = bytes(b.buffer)
    assert len(data) == b.length
    assert pack_id == hashlib.sha256(data).hexdigest()
    hlen = split_pack_trailer(len(data), data[-4:])
    assert data[len(data) - 4 - hlen : -4] == header
    for e, blob in zip(b.entries, blobs, strict=True):
        assert data[e.offset : e.offset + e.length] == blob
    with pytest.raises(FormatError):
        split_pack_trailer(len(data), struct.pack("<I", len(data)))


# ---------------------------------------------------------------------- index objects


index_pack_st = st.builds(lambda pid, entries: (pid, entries), ids, st.lists(entry_st, max_size=20))


def _index_packs(raw) -> list[IndexPack]:
    packs = []
    for pid, raw_entries in raw:
        entries = _entries(raw_entries)
        packs.append(IndexPack(pid.hex(), sum(e.length for e in entries) + 100, entries))
    return packs


@PROPS
@given(st.lists(index_pack_st, max_size=6), st.lists(ids, max_size=3))
def test_index_object_round_trip(raw, superseded):
    packs = _index_packs(raw)
    sup = [s.hex() for s in superseded]
    back, back_sup = decode_index(encode_index(packs, sup))
    assert back_sup == sup
    assert [(p.pack_id, p.size, p.entries) for p in back] == [(p.pack_id, p.size, p.entries) for p in packs]


@PROPS
@given(st.lists(index_pack_st, min_size=1, max_size=4), st.data())
def test_index_object_truncation_and_garbage(raw, data):
    enc = encode_index(_index_packs(raw))
    cut = data.draw(st.integers(0, len(enc) - 1))
    with pytest.raises(FormatError):
        decode_index(enc[:cut])
    with pytest.raises(FormatError):
        decode_index(enc + b"\0")
    junk = data.draw(st.one_of(st.binary(max_size=300), st.just(enc[:4]).map(lambda h: h + os.urandom(40))))
    try:
        packs, superseded = decode_index(junk)
    except FormatError:
        return
    assert encode_index(packs, superseded) == junk  # accepted junk must be a well-formed index


# ---------------------------------------------------------------------- the in-memory index


@settings(max_examples=25, deadline=None, database=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6000))
def test_blob_index_behaves_like_a_dict(seed, n):
    rng = random.Random(seed)
    idx = BlobIndex(capacity_hint=rng.choice([0, n]))
    model: dict[bytes, tuple] = {}
    packs = [rng.randbytes(32) for _ in range(5)]
    for _ in range(n):
        bid = rng.randbytes(32) if not model or rng.random() < 0.9 else rng.choice(list(model))
        p = rng.randrange(5)
        loc = (packs[p].hex(), rng.randrange(2**31), rng.randrange(1, 2**31), rng.randrange(2**28),
               rng.choice([BLOB_DATA, BLOB_TREE]), rng.choice([0, 1]))
        added = idx.add(bid, idx.pack_number(packs[p]), loc[1], loc[2], loc[3], loc[4], loc[5])
        assert added == (bid not in model)
        model.setdefault(bid, loc)
    assert len(idx) == len(model)
    for bid, loc in model.items():
        got = idx.lookup(bid)
        assert (got.pack_id, got.offset, got.length, got.raw_length, got.blob_type, got.compression) == loc
        assert bid in idx
    assert idx.lookup(b"\x01" * 32) is None or b"\x01" * 32 in model
    assert {bid for bid, _loc in idx.iter_entries()} == set(model)


# ---------------------------------------------------------------------- tree streams


name_st = st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\0" not in b
                                                   and b not in (b".", b".."))


@PROPS
@given(st.sets(st.lists(name_st, min_size=1, max_size=4).map(lambda parts: b"/".join(parts)), max_size=80),
       st.integers(0, 2**32 - 1))
def test_tree_stream_round_trip(paths, seed):
    rng = random.Random(seed)
    entries = []
    for p in sorted(paths, key=sort_key):
        # mtime_ns over the whole int64 range the entry schema allows
        e = Node(p, "file", 0o644, size=rng.randrange(10**12), mtime_ns=rng.randrange(-(2**63), 2**63),
                 chunks=[[rng.randbytes(32).hex(), rng.randrange(1 << 20)]],
                 extra={"pad": "x" * rng.randrange(3000)})  # so that big lists span several tree blobs
        entries.append(e)
    store: dict[str, bytes] = {}

    def save(mv: memoryview) -> str:
        h = hashlib.sha256(mv).hexdigest()
        store[h] = bytes(mv)
        return h

    w = TreeWriter(save)
    for e in entries:
        w.add(e)
    blob_ids = w.finish()
    back = list(iter_tree(blob_ids, store.__getitem__))
    assert [e.path for e in back] == [e.path for e in entries]
    assert back == entries


def test_tree_writer_refuses_disorder_and_reader_refuses_disorder():
    w = TreeWriter(lambda mv: "00" * 32)
    w.add(Node(b"b", "dir"))
    with pytest.raises(ValueError):
        w.add(Node(b"a", "dir"))
    stream = b'{"path":"b","type":"dir"}\n{"path":"a","type":"dir"}\n'
    with pytest.raises(FormatError):
        list(iter_tree(["x"], lambda _h: stream))
    with pytest.raises(FormatError):
        list(iter_tree(["x"], lambda _h: b'{"path":"a","type":"dir"}\n{"path":"b"'))


# ---------------------------------------------------------------------- a real repository


@pytest.fixture(scope="module")
def small_repo():
    with tempfile.TemporaryDirectory() as d:
        cfg = RepositoryConfig(repository_id=os.urandom(32).hex(), chunker=ChunkerParams(4096, 16384, 65536))
        cfg.pack_size = 1 << 20
        Repository.init(LocalBackend(str(Path(d) / "r")), b"pw", config=cfg, s2k_count_byte=0x10).close()
        yield Path(d) / "r"


@settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200_000), min_size=1, max_size=12), st.integers(0, 22))
def test_blobs_round_trip_through_packs_and_index(small_repo, blobs, level):
    repo = Repository.open(LocalBackend(str(small_repo)), Credentials([b"pw"]))
    repo.load_index()
    repo.begin_writes(WriteOptions(compression_level=level))
    saved = [repo.save_blob(BLOB_DATA, b)[0] for b in blobs]
    repo.flush()
    repo.close()
    repo = Repository.open(LocalBackend(str(small_repo)), Credentials([b"pw"]))
    repo.load_index()
    for bid, b in zip(saved, blobs, strict=True):
        assert repo.load_blob(bid, BLOB_DATA) == b
        loc = repo.lookup_blob(bid)
        header = {e.blob_id: e for e in repo.read_pack_header(loc.pack_id)}
        e = header[bid]
        assert (e.offset, e.length, e.raw_length, e.compression) == (loc.offset, loc.length, loc.raw_length,
                                                                      loc.compression)
    repo.close()


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=5000), st.data())
def test_damaged_blob_never_decodes_to_wrong_bytes(small_repo, blob, data):
    repo = Repository.open(LocalBackend(str(small_repo)), Credentials([b"pw"]))
    repo.load_index()
    bid, _new = repo.save_blob(BLOB_DATA, blob + os.urandom(8))
    repo.flush()
    loc = repo.lookup_blob(bid)
    name = f"data/{loc.pack_id[:2]}/{loc.pack_id}"
    sealed = bytearray(repo.backend.get_range(name, loc.offset, loc.length))
    pos = data.draw(st.integers(0, len(sealed) - 1))
    sealed[pos] ^= data.draw(st.integers(1, 255))
    # Damaged on the way only: the second read gives the stored, intact blob.
    assert repo.decode_blob(bid, loc, bytes(sealed)) == blob + repo.load_blob(bid)[len(blob):]
    # Damaged where it is stored: both reads are bad, so it is an error, never other bytes.
    path = small_repo / name
    stored = bytearray(path.read_bytes())
    stored[loc.offset + pos] = sealed[pos]
    path.write_bytes(bytes(stored))
    with pytest.raises(HaeedgeError):
        repo.decode_blob(bid, loc, bytes(sealed))
    with pytest.raises(IntegrityError):
        repo.decode_blob(bytes(32), loc, repo.backend.get_range(f"data/{loc.pack_id[:2]}/{loc.pack_id}",
                                                                loc.offset, loc.length))
    repo.close()
