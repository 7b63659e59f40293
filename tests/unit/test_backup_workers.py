"""The backup pipeline gives the same chunks with worker processes, threads and any segmenting."""

from __future__ import annotations

import os
import random

import pytest

from haeedge.archiver import Archiver, BackupOptions
from haeedge.archiver import workers as workers_mod
from haeedge.backends.local import LocalBackend
from haeedge.chunking import Chunker, ChunkerParams
from haeedge.repo.config import RepositoryConfig
from haeedge.repo.repository import Credentials, Repository
from haeedge.restorer import RestoreOptions, Restorer

SMALL = ChunkerParams(4096, 16384, 65536)


def _tree(root, rng: random.Random) -> None:
    (root / "d").mkdir(parents=True)
    big = rng.randbytes(3 << 20)
    (root / "big1").write_bytes(big)
    (root / "big2").write_bytes(b"x" + big)  # shares all but the first chunk
    (root / "d" / "same1").write_bytes(rng.randbytes(20000))
    (root / "d" / "same2").write_bytes((root / "d" / "same1").read_bytes())
    for i in range(40):
        (root / "d" / f"f{i}").write_bytes(rng.randbytes(rng.randrange(0, 9000)))


def _repo(path, pack_size: int | None = None) -> Repository:
    cfg = RepositoryConfig(repository_id=os.urandom(32).hex(), chunker=SMALL)
    if pack_size is not None:
        cfg.pack_size = pack_size
    Repository.init(LocalBackend(str(path)), b"pw", config=cfg, s2k_count_byte=0x10)
    repo = Repository.open(LocalBackend(str(path)), Credentials([b"pw"]))
    repo.load_index()
    return repo


@pytest.mark.parametrize("mode", ["processes", "threads"])
def test_modes_agree_and_restore(tmp_path, monkeypatch, mode):
    src = tmp_path / "src"
    _tree(src, random.Random(7))
    monkeypatch.setattr(workers_mod, "SEGMENT_BYTES", 100_000)  # many segments per big file
    if mode == "threads":
        monkeypatch.setenv("HAEEDGE_THREADS", "1")
    repo = _repo(tmp_path / "repo")
    first = Archiver(repo, BackupOptions(paths=[str(src)], workers=2)).run()
    # Identical files and the shifted copy dedup within one run.
    whole = Chunker(SMALL)
    expected = {bytes(c) for f in ("big1", "big2", "d/same1") for c in whole.chunks_of_bytes((src / f).read_bytes())}
    expected |= {bytes(c) for i in range(40) for c in whole.chunks_of_bytes((src / "d" / f"f{i}").read_bytes())}
    assert first.summary.data_blobs_added == len(expected)
    # Segments finish in any order (the next one starts as soon as its offset is announced);
    # each file's chunk list must still be the one pass over it, in file order.
    entries = {e.path.rsplit(b"/", 1)[-1].decode(): e for e in repo.iter_entries(first.snapshot)}
    for name in ("big1", "big2"):
        data = (src / name).read_bytes()
        one_pass = [(repo.blob_id(bytes(c)).hex(), len(c)) for c in whole.chunks_of_bytes(data)]
        assert [tuple(c) for c in entries[name].chunks] == one_pass, name

    # The other mode, forced full: every chunk must already be known.
    if mode == "threads":
        monkeypatch.delenv("HAEEDGE_THREADS")
    else:
        monkeypatch.setenv("HAEEDGE_THREADS", "1")
    repo2 = Repository.open(LocalBackend(str(tmp_path / "repo")), Credentials([b"pw"]))
    repo2.load_index()
    second = Archiver(repo2, BackupOptions(paths=[str(src)], full=True, workers=2)).run()
    assert second.summary.data_blobs_added == 0

    snap = repo2.resolve_snapshot("latest")
    Restorer(repo2, RestoreOptions(target=str(tmp_path / "out"))).run(snap)
    out = tmp_path / "out" / str(src).lstrip("/")
    for p in src.rglob("*"):
        if p.is_file():
            assert (out / p.relative_to(src)).read_bytes() == p.read_bytes(), p


def test_tiny_seen_sets_and_index_checkpoints_change_nothing_stored(tmp_path, monkeypatch):
    """Workers forget the ids they sent (bounded memory) and the index is written every few
    blobs: the main process still stores each chunk once, and everything restores."""
    from haeedge.operations.check import Checker
    from haeedge.repo import packer as packer_mod

    src = tmp_path / "src"
    _tree(src, random.Random(11))
    monkeypatch.setattr(workers_mod, "SEEN_LIMIT", 3)
    monkeypatch.setattr(packer_mod, "INDEX_CHECKPOINT_BLOBS", 5)
    monkeypatch.setattr(workers_mod, "SEGMENT_BYTES", 100_000)
    repo = _repo(tmp_path / "repo", pack_size=1 << 20)
    result = Archiver(repo, BackupOptions(paths=[str(src)], workers=2)).run()
    whole = Chunker(SMALL)
    expected = {bytes(c) for p in src.rglob("*") if p.is_file() for c in whole.chunks_of_bytes(p.read_bytes())}
    assert result.summary.data_blobs_added == len(expected)
    # Fewer than 32 packs, each over 5 blobs: without the blob count there would be one index
    # object (or one a minute); with it, every pack is indexed as soon as it is stored.
    assert 3 <= result.summary.packs_written < 32
    assert len(os.listdir(tmp_path / "repo" / "index")) >= 3
    repo.close()
    repo2 = Repository.open(LocalBackend(str(tmp_path / "repo")), Credentials([b"pw"]))
    repo2.load_index()
    assert Checker(repo2).run(read_data=True).ok
    Restorer(repo2, RestoreOptions(target=str(tmp_path / "out"))).run(repo2.resolve_snapshot("latest"))
    out = tmp_path / "out" / str(src).lstrip("/")
    for p in src.rglob("*"):
        if p.is_file():
            assert (out / p.relative_to(src)).read_bytes() == p.read_bytes(), p
