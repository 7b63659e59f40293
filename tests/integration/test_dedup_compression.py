"""Deduplication and compression, seen from the CLI (``--json`` summaries and repository size on disk)."""

from __future__ import annotations

import os
import random

import pytest

from haeedge.repo.pack import BLOB_DATA, COMPRESSION_NONE, COMPRESSION_ZSTD

MiB = 1 << 20


def _mixed_tree(root, rng: random.Random) -> int:
    """Random (incompressible) data in files of many sizes; returns the total size."""
    total = 0
    for d in range(6):
        sub = root / f"dir{d}"
        sub.mkdir(parents=True)
        for i in range(40):
            size = rng.choice([0, 10, 1000, 5000, 70_000, 300_000])
            (sub / f"f{i}").write_bytes(rng.randbytes(size))
            total += size
    for i, size in enumerate((3 * MiB, 9 * MiB, 14 * MiB)):
        (root / f"big{i}").write_bytes(rng.randbytes(size))
        total += size
    return total


def test_same_tree_twice_adds_almost_nothing(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    total = _mixed_tree(src, random.Random(1))
    first = cli.backup(src)
    assert first["data_blobs_added"] > 0
    size1 = fast_repo.size()
    assert size1 > total * 0.95  # random data: stored, not lost

    again = cli.backup(src)  # incremental: nothing read
    full = cli.backup(src, "--full")  # full: everything read and hashed, nothing new stored
    for s in (again, full):
        assert s["data_blobs_added"] == 0, s
        assert s["files_new"] == 0 and s["files_changed"] == 0
    assert again["kind"] == "incremental" and full["kind"] == "full"
    assert again["bytes_read"] == 0
    assert full["bytes_read"] == total
    growth = fast_repo.size() - size1
    assert growth < total * 0.01, f"two more backups of the same tree added {growth} bytes to {total}"


def test_identical_files_are_stored_once(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    blob = random.Random(2).randbytes(5 * MiB)
    for p in ("one", "a/two", "a/b/three"):
        (src / p).write_bytes(blob)
    s = cli.backup(src)
    assert s["files_new"] == 3
    single = cli.tmp_path / "single"
    single.mkdir()
    (single / "only").write_bytes(blob)
    # A backup of one copy alone adds no data: the blobs are all known.
    s2 = cli.backup(single)
    assert s2["data_blobs_added"] == 0
    assert fast_repo.size("data") < 5 * MiB * 1.05
    with fast_repo.open() as repo:
        data_blobs = [bid for bid, loc in repo.index.iter_entries() if loc.blob_type == BLOB_DATA]
    assert len(data_blobs) == s["data_blobs_added"] >= 1


def test_inserting_one_byte_at_the_start_of_100mb_adds_at_most_three_chunks(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(3).randbytes(100 * MiB)
    (src / "big").write_bytes(data)
    first = cli.backup(src)
    assert first["data_blobs_added"] >= 50  # ~1 MiB average chunks: the file really was chunked
    (src / "big").write_bytes(b"!" + data)
    second = cli.backup(src)
    assert second["files_changed"] == 1
    assert 1 <= second["data_blobs_added"] <= 3, second
    assert second["bytes_added"] < 20 * MiB


# ---------------------------------------------------------------------- compression


@pytest.mark.parametrize("value", ["off", "auto", "1", "19", "OFF"])
def test_compression_values_accepted(cli, fast_repo, tmp_path, value):
    src = tmp_path / "src"
    src.mkdir()
    (src / "t").write_bytes(b"abc" * 10000)
    cli("backup", src, "--compression", value).ok()


@pytest.mark.parametrize("value", ["none", "0", "23", "-1", "", "3.5", "zstd"])
def test_bad_compression_value_is_a_usage_error(cli, fast_repo, tmp_path, value):
    src = tmp_path / "src"
    src.mkdir()
    r = cli("backup", src, "--compression", value)
    assert r.code == 2, r.describe()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--compression" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not list((fast_repo.path / "snapshots").iterdir())


def test_init_rejects_bad_compression(cli):
    r = cli("init", "--compression", "fast")
    assert r.code == 2 and "Traceback" not in r.stderr, r.describe()
    assert not (cli.repo_path / "config").exists()


def _blob_compressions(handle) -> list[int]:
    with handle.open() as repo:
        return [loc.compression for _bid, loc in repo.index.iter_entries() if loc.blob_type == BLOB_DATA]


def test_compressible_data_shrinks(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    text = b"".join(b"%08d the quick brown fox jumps over the lazy dog\n" % i for i in range(400_000))
    (src / "log.txt").write_bytes(text)
    cli.backup(src)
    assert fast_repo.size("data") < len(text) * 0.25
    comps = _blob_compressions(fast_repo)
    assert comps and set(comps) == {COMPRESSION_ZSTD}


def test_compression_off_stores_raw(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    text = b"all work and no play makes jack a dull boy\n" * 200_000
    (src / "t.txt").write_bytes(text)
    cli("backup", src, "--compression", "off").ok()
    assert fast_repo.size("data") >= len(text)
    assert set(_blob_compressions(fast_repo)) == {COMPRESSION_NONE}


def test_random_data_is_stored_raw(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(20 * MiB)
    (src / "random.bin").write_bytes(data)
    cli.backup(src)  # default level: the attempt to compress is made and rejected
    stored = fast_repo.size("data")
    assert len(data) <= stored <= len(data) * 1.002 + 64 * 1024, stored
    assert set(_blob_compressions(fast_repo)) == {COMPRESSION_NONE}


def test_init_compression_off_is_the_default_for_backups(cli, tmp_path):
    cli("init", "--compression", "off").ok()
    handle = cli.repo_handle()
    with handle.open() as repo:
        assert repo.config.compression_level == 0
    src = tmp_path / "src"
    src.mkdir()
    (src / "t").write_bytes(b"z" * 1_000_000)
    cli.backup(src)
    assert set(_blob_compressions(handle)) == {COMPRESSION_NONE}
