"""Verify (library API): every kind of damage is found and blamed on the snapshots and files it hurts."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haeedge.archiver import Archiver, BackupOptions
from haeedge.backends.faulty import FaultyBackend
from haeedge.backends.local import LocalBackend
from haeedge.errors import IntegrityError
from haeedge.operations.check import Checker, _windows, check_pack
from haeedge.repo.index import BlobLocation
from haeedge.repo.pack import BLOB_DATA, BLOB_TREE
from haeedge.repo.repository import Credentials, Repository
from haeedge.restorer import RestoreOptions, Restorer


@pytest.fixture
def populated(tmp_path, trees):
    handle = trees.init_library_repo(tmp_path / "repo", chunker=trees.SMALL_CHUNKS)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "one").write_bytes(os.urandom(50_000))
    (src / "two").write_bytes(os.urandom(30_000))
    with handle.open() as repo:
        first = Archiver(repo, BackupOptions(paths=[str(src)])).run().snapshot
    (src / "three").write_bytes(os.urandom(20_000))
    with handle.open() as repo:
        second = Archiver(repo, BackupOptions(paths=[str(src)])).run().snapshot
    assert second.kind == "incremental"
    return handle, src, first, second


def _check(handle, read_data=True):
    with handle.open() as repo:
        return Checker(repo).run(read_data=read_data)


def _pack_of(handle, blob_type):
    with handle.open() as repo:
        packs = {loc.pack_id for _b, loc in repo.index.iter_entries() if loc.blob_type == blob_type}
    return [handle.path / "data" / p[:2] / p for p in sorted(packs)]


def test_clean_repository(populated):
    handle, _src, _a, _b = populated
    report = _check(handle)
    assert report.ok and report.snapshots == 2 and report.packs_read == report.packs >= 2
    assert report.blobs_checked > 0 and not report.findings


def test_missing_data_pack_names_snapshots_and_files(populated):
    handle, src, first, second = populated
    packs = _pack_of(handle, BLOB_DATA)
    for p in packs:
        p.unlink()
    report = _check(handle, read_data=False)
    assert not report.ok
    assert any("missing" in f.message for f in report.errors)
    blamed = [f for f in report.errors if f.snapshots]
    assert {s for f in blamed for s in f.snapshots} == {first.id, second.id}
    files = {p for f in blamed for p in f.files}
    assert f"{src}/two" in files and f"{src}/d/one" in files and f"{src}/three" in files


def test_flipped_bit_in_a_data_blob_is_found_by_read_data_only(populated):
    handle, src, first, second = populated
    with handle.open() as repo:
        entries = {e.path: e for e in repo.iter_entries(first)}
        victim = entries[os.fsencode(src).lstrip(b"/") + b"/two"]
        loc = repo.lookup_blob(bytes.fromhex(victim.chunks[0][0]))
        same_pack = {e_path for e_path, e in entries.items() for cid, _l in e.chunks or ()
                     if repo.lookup_blob(bytes.fromhex(cid)).pack_id == loc.pack_id}
    assert len(same_pack) > 1, "the test needs an innocent file in the damaged pack"
    pack = handle.path / "data" / loc.pack_id[:2] / loc.pack_id
    raw = bytearray(pack.read_bytes())
    raw[loc.offset + loc.length // 2] ^= 1
    pack.write_bytes(bytes(raw))
    assert _check(handle, read_data=False).ok  # sizes still agree
    report = _check(handle, read_data=True)
    assert not report.ok
    assert any("does not match its name" in f.message for f in report.errors)
    blamed = [f for f in report.errors if f.files]
    assert {p for f in blamed for p in f.files} == {f"{src}/two"}, "only the damaged file is blamed"
    assert {s for f in blamed for s in f.snapshots} == {first.id, second.id}
    # And restore agrees: the innocent files of the same pack come back.
    with handle.open() as repo:
        res = Restorer(repo, RestoreOptions(target=str(handle.path.parent / "out"))).run(second)
    assert res.damaged == [f"{str(src).lstrip('/')}/two"]


def test_damaged_tree_blob_pack(populated):
    handle, _src, first, _second = populated
    for pack in _pack_of(handle, BLOB_TREE):
        raw = bytearray(pack.read_bytes())
        raw[100] ^= 0xFF
        pack.write_bytes(bytes(raw))
    report = _check(handle)
    assert not report.ok
    assert any(first.id in f.snapshots for f in report.errors)


def test_damaged_snapshot_object(populated):
    handle, _src, _first, second = populated
    snap = handle.path / "snapshots" / second.id
    snap.write_bytes(snap.read_bytes()[:-1] + b"\x00")
    report = _check(handle, read_data=False)
    assert [f.object for f in report.errors] == [f"snapshots/{second.id}"]


def test_pack_missing_from_index_is_a_warning(populated, tmp_path):
    handle, _src, _a, _b = populated
    for idx in handle.objects("index"):
        idx.unlink()
    report = _check(handle, read_data=False)
    assert any(f.severity == "warning" and "not in any index" in f.message for f in report.findings)
    # ... but the snapshots now point at blobs nobody can find: that is an error.
    assert not report.ok


def test_a_damaged_read_is_read_again_but_damage_on_storage_stays_an_error(populated):
    """Bits flipped on the way (the first read of each pack) cost a second read, not the file;
    the same flip on disk is still reported."""
    handle, src, first, _second = populated

    faulty = FaultyBackend(LocalBackend(str(handle.path)), "get_range:flip:once:match=data/")
    repo = Repository.open(faulty, Credentials(passphrases=[handle.password]))
    try:
        repo.load_index()
        entries = {e.path: e for e in repo.iter_entries(first)}
        victim = entries[os.fsencode(src).lstrip(b"/") + b"/two"]
        chunk = bytes.fromhex(victim.chunks[0][0])
        assert repo.load_blob(chunk) == (src / "two").read_bytes()[: victim.chunks[0][1]]
        assert faulty.injected["get_range"] >= 1
        loc = repo.lookup_blob(chunk)
    finally:
        repo.close()
    pack = handle.path / "data" / loc.pack_id[:2] / loc.pack_id
    raw = bytearray(pack.read_bytes())
    raw[loc.offset + loc.length // 2] ^= 1
    pack.write_bytes(bytes(raw))
    with handle.open() as repo, pytest.raises(IntegrityError):
        repo.load_blob(chunk)


@given(size=st.integers(0, 5000), window=st.integers(1, 3000),
       spans=st.lists(st.tuples(st.integers(0, 6000), st.integers(1, 900)), max_size=30))
def test_read_windows_cover_the_pack_once_and_hold_every_blob_whole(size, window, spans):
    blobs = [(bytes([i % 256]) * 32, BlobLocation(pack_id="p" * 64, offset=off, length=length, raw_length=length,
                                                   blob_type=BLOB_DATA, compression=0))
             for i, (off, length) in enumerate(spans)]
    pieces = _windows(size, blobs, window)
    assert [p[0] for p in pieces[1:]] == [p[1] for p in pieces[:-1]]  # contiguous
    if size:
        assert pieces[0][0] == 0 and pieces[-1][1] == size
    placed = [b for _s, _e, inside in pieces for b in inside]
    assert sorted(id(b) for b in placed) == sorted(id(b) for b in blobs)  # every blob exactly once
    for start, end, inside in pieces:
        for _bid, loc in inside:
            if loc.offset + loc.length <= size:
                assert start <= loc.offset and loc.offset + loc.length <= end


def test_windowed_and_whole_pack_reads_find_the_same_damage(populated):
    handle, _src, _first, _second = populated
    pack = _pack_of(handle, BLOB_DATA)[0]
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 3] ^= 0x10
    pack.write_bytes(bytes(raw))
    with handle.open() as repo:
        blobs = [(bid, loc) for bid, loc in repo.index.iter_entries() if loc.pack_id == pack.name]
        whole = check_pack(repo, pack.name, blobs)
        pieces = check_pack(repo, pack.name, blobs, window=7000)
    assert whole.errors and sorted(whole.errors) == sorted(pieces.errors)
    assert sorted(whole.bad_blobs) == sorted(pieces.bad_blobs) and whole.bad_blobs
    assert whole.bytes_read == pieces.bytes_read == len(raw)
    assert whole.blobs_checked == pieces.blobs_checked == len(blobs) - len(whole.bad_blobs)


@pytest.mark.parametrize("window", [None, 7000])
def test_each_kind_of_blob_damage_is_its_own_finding(populated, window):
    """An index that disagrees with an intact pack: every blob check (keyed id, length, compression,
    bounds, header) speaks for itself, and only the blobs it concerns are blamed."""
    from dataclasses import replace

    from haeedge.repo.pack import COMPRESSION_NONE, COMPRESSION_ZSTD

    handle, _src, _first, _second = populated
    with handle.open() as repo:
        entries = list(repo.index.iter_entries())
        pack = max(_pack_of(handle, BLOB_DATA), key=lambda p: sum(loc.pack_id == p.name for _b, loc in entries))
        blobs = sorted(((bid, loc) for bid, loc in entries if loc.pack_id == pack.name), key=lambda b: b[1].offset)
        assert len(blobs) >= 4, "the test needs four blobs in one pack"
        (b0, l0), (b1, l1), (b2, l2), (b3, l3) = blobs[:4]
        other = COMPRESSION_ZSTD if l1.compression == COMPRESSION_NONE else COMPRESSION_NONE
        forged = [
            (bytes(32), l0),                           # an id the plaintext does not hash to
            (b1, replace(l1, compression=other)),      # read as what it is not
            (b2, replace(l2, raw_length=l2.raw_length + 1)),
            (b3, replace(l3, offset=pack.stat().st_size + 10)),  # beyond the pack
        ]
        clean = check_pack(repo, pack.name, blobs, window=window)
        r = check_pack(repo, pack.name, forged + blobs[4:], window=window)
    assert not clean.errors and clean.blobs_checked == len(blobs)
    assert {bid for bid, _why in r.bad_blobs} == {bytes(32), b1, b2, b3}
    whys = dict(r.bad_blobs)
    assert "does not match its id" in whys[bytes(32)] and "does not match its id" in whys[b2]
    assert "lies outside" in whys[b3]
    assert r.blobs_checked == len(blobs) - 4 and r.packs_read == 1
    messages = [m for _o, m in r.errors]
    assert not any("does not match its name" in m for m in messages), "the pack itself is intact"
    # The header check compares id, offset and length; a wrong compression or raw length is the blob's own finding.
    assert sum("not in the pack header" in m for m in messages) == 2
