"""The packer (repo/packer.py): per-run options given when a run starts, dry runs through a backend
that stores nothing, and the one reader of every index object (repo/provenance.read_indexes)."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from haeedge.archiver import Archiver, BackupOptions
from haeedge.backends.dryrun import DryRunBackend
from haeedge.backends.local import LocalBackend
from haeedge.chunking import ChunkerParams
from haeedge.errors import HaeedgeError
from haeedge.repo.config import RepositoryConfig
from haeedge.repo.pack import BLOB_DATA, COMPRESSION_NONE, COMPRESSION_ZSTD
from haeedge.repo.packer import WriteOptions
from haeedge.repo.provenance import read_indexes
from haeedge.repo.repository import Credentials, Repository


def _open(path: Path, *, init: bool = False) -> Repository:
    if init:
        cfg = RepositoryConfig(repository_id=os.urandom(32).hex(), chunker=ChunkerParams(4096, 16384, 65536))
        cfg.pack_size = 1 << 20
        Repository.init(LocalBackend(str(path)), b"pw", config=cfg, s2k_count_byte=0x10).close()
    repo = Repository.open(LocalBackend(str(path)), Credentials([b"pw"]))
    repo.load_index()
    return repo


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def test_a_dry_run_backup_counts_what_the_real_one_stores_and_stores_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(5)
    for i in range(12):
        (src / f"f{i}").write_bytes(rng.randbytes(rng.randrange(1, 400_000)) + bytes(20_000))
    repo = _open(tmp_path / "repo", init=True)
    before = _files(tmp_path / "repo")
    opts = dict(paths=[str(src)], workers=1)
    dry = Archiver(repo, BackupOptions(dry_run=True, **opts)).run()
    assert isinstance(repo.packer.backend, DryRunBackend) and repo.packer.backend.puts >= 2
    repo.close()
    assert dry.snapshot is None and _files(tmp_path / "repo") == before  # not a pack, index object or spool

    repo = _open(tmp_path / "repo")
    real = Archiver(repo, BackupOptions(**opts)).run()
    repo.close()
    assert real.snapshot is not None
    counted = ("data_blobs_added", "tree_blobs_added", "blobs_added", "bytes_added", "raw_bytes_added",
               "packs_written")
    assert {k: getattr(dry.summary, k) for k in counted} == {k: getattr(real.summary, k) for k in counted}
    assert real.summary.packs_written >= 2 and real.summary.data_blobs_added >= 12


def test_the_compression_level_is_given_when_the_run_starts(tmp_path: Path) -> None:
    repo = _open(tmp_path / "repo", init=True)
    data = bytes(50_000)
    repo.begin_writes(WriteOptions(compression_level=0))
    plain, _ = repo.save_blob(BLOB_DATA, data)
    repo.flush()
    repo.begin_writes(WriteOptions())  # the config's level (3)
    packed, _ = repo.save_blob(BLOB_DATA, data + b"x")
    repo.flush()
    assert repo.packer.compression_level == repo.config.compression_level == 3
    repo.close()
    repo = _open(tmp_path / "repo")
    assert repo.lookup_blob(plain).compression == COMPRESSION_NONE
    assert repo.lookup_blob(packed).compression == COMPRESSION_ZSTD
    assert repo.load_blob(plain) == data and repo.load_blob(packed) == data + b"x"
    repo.close()


def test_options_cannot_change_while_blobs_are_being_packed(tmp_path: Path) -> None:
    repo = _open(tmp_path / "repo", init=True)
    repo.save_blob(BLOB_DATA, b"pending blob " * 10)
    with pytest.raises(RuntimeError, match="still being packed"):
        repo.begin_writes(WriteOptions(dry_run=True))
    repo.flush()
    repo.begin_writes(WriteOptions(dry_run=True))  # between runs: fine
    repo.close()


def test_read_indexes_raises_naming_a_damaged_object_or_hands_it_to_on_error(tmp_path: Path) -> None:
    repo = _open(tmp_path / "repo", init=True)
    repo.save_blob(BLOB_DATA, os.urandom(1000))
    repo.flush()
    good = read_indexes(repo)
    assert len(good.docs) == 1 and good.listed == [good.docs[0].object_id] and not good.superseded
    garbage = os.urandom(300)
    bad = hashlib.sha256(garbage).hexdigest()
    repo.backend.put(f"index/{bad}", garbage)
    with pytest.raises(HaeedgeError, match=f"index/{bad}"):
        read_indexes(repo)
    seen: list[str] = []
    found = read_indexes(repo, on_error=lambda name, e: seen.append(name))
    assert seen == [f"index/{bad}"]
    assert [d.object_id for d in found.docs] == [good.docs[0].object_id]
    assert sorted(found.listed) == sorted([bad, good.docs[0].object_id])
    assert len(found.blob_index()) == 1
    repo.close()
