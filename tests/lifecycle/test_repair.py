"""repair index / repair snapshots, and restoring damaged snapshots (intact files restore, damaged are listed)."""

from __future__ import annotations

import hashlib
import random

import pytest

from haeedge.repo.pack import BLOB_DATA, BLOB_TREE
from tests.support.lifecycle import flip_byte, pack_path, random_tree, restore_diffs, snapshot_list, write_files


@pytest.fixture
def repo(cli, trees):
    return trees.init_library_repo(cli.repo_path, chunker=trees.SMALL_CHUNKS, pack_size=1 << 20)


def _blobs_of(handle, snapshot_id: str) -> dict[str, list]:
    """file path -> [(pack id, offset, length, blob type)] of its chunks."""
    out = {}
    with handle.open() as repo:
        for entry in repo.iter_entries(repo.load_snapshot(snapshot_id)):
            locs = [repo.lookup_blob(bytes.fromhex(c)) for c, _n in entry.chunks or ()]
            out["/" + entry.path.decode()] = [(loc.pack_id, loc.offset, loc.length, loc.blob_type)
                                                     for loc in locs]
    return out


def _tree_blobs(handle, snapshot_id: str) -> list:
    with handle.open() as repo:
        snap = repo.load_snapshot(snapshot_id)
        return [repo.lookup_blob(bytes.fromhex(t)) for t in snap.tree]


# ---------------------------------------------------------------------- repair index


def test_repair_index_rebuilds_a_lost_index(cli, repo, trees, tmp_path):
    src = random_tree(tmp_path / "src", seed=1, n_files=20, big=3)
    sid = cli.backup(src)["snapshot_id"]
    scan = trees.scan(src)
    for p in repo.objects("index"):
        p.unlink()
    v = cli("verify")
    assert v.code == 4 and "not in the index" in v.stderr, v.describe()
    r = cli("repair", "index", "--json").ok().json()
    assert r["headers_read"] == len(repo.objects("data")) == r["packs"] and r["blobs"] > 20
    assert len(repo.objects("index")) == 1
    cli("-v", "verify", "--read-data").ok()
    assert not restore_diffs(cli, trees, sid, scan, src, tmp_path / "r")


def test_repair_index_replaces_a_damaged_index_object_and_drops_vanished_packs(cli, repo, trees, tmp_path):
    src = random_tree(tmp_path / "src", seed=2, n_files=20, big=2)
    cli.backup(src)
    write_files(src, {"more.bin": b"m" * 200_000})
    sid = cli.backup(src)["snapshot_id"]
    scan = trees.scan(src)
    damaged = repo.objects("index")[0]
    flip_byte(damaged, 100)
    v = cli("verify")
    assert v.code == 4 and damaged.name in v.stderr, v.describe()
    dry = cli("repair", "index", "--dry-run", "--json").ok().json()
    assert damaged.name in dry["unreadable_index"] and damaged.exists()
    r = cli("repair", "index", "--json").ok().json()
    assert damaged.name in r["unreadable_index"] and not damaged.exists()
    cli("verify", "--read-data").ok()
    assert not restore_diffs(cli, trees, sid, scan, src, tmp_path / "r")
    # A pack the index lists but storage lost: dropped from the index (its data is then missing).
    victim = repo.objects("data")[0]
    victim.unlink()
    r = cli("repair", "index", "--read-all-packs", "--json").ok().json()
    assert r["vanished_packs"] == [victim.name] and r["headers_read"] == len(repo.objects("data"))


# ---------------------------------------------------------------------- repair snapshots


@pytest.fixture
def damaged_repo(cli, repo, trees, tmp_path):
    """A chain (full + incremental) with one data pack gone. Returns facts about the damage."""
    src = random_tree(tmp_path / "src", seed=3, n_files=40, max_size=60_000, big=4)
    full = cli.backup(src)["snapshot_id"]
    write_files(src, {"d0/new.txt": b"added later\n"})
    inc = cli.backup(src)["snapshot_id"]
    scan = trees.scan(src)
    blobs = _blobs_of(repo, inc)
    lost_pack = next(locs[0][0] for p, locs in blobs.items() if "/big/" in p and locs)
    damaged = {p for p, locs in blobs.items() if any(loc[0] == lost_pack for loc in locs)}
    pack_path(repo.path, lost_pack).unlink()
    return src, full, inc, scan, damaged


def _rel(src, paths) -> set[bytes]:
    prefix = str(src).lstrip("/")
    return {p.lstrip("/")[len(prefix) + 1:].encode() for p in paths}


def test_restore_of_a_damaged_snapshot_restores_every_intact_file(cli, repo, trees, tmp_path, damaged_repo):
    src, _full, inc, scan, damaged = damaged_repo
    target = tmp_path / "r"
    r = cli("restore", inc, "--target", target)
    assert r.code == 4 and "Traceback" not in r.stderr, r.describe()
    for p in damaged:
        assert p in r.stderr
    got = trees.scan(trees.restored_path(target, src))
    diffs = trees.differences(scan, got, fields=("type", "size", "sha256"), ignore=_rel(src, damaged))
    assert not diffs, diffs[:10]


def test_repair_snapshots_marks_damaged_files_and_the_repository_verifies_again(cli, repo, trees, tmp_path,
                                                                                damaged_repo):
    src, full, inc, scan, damaged = damaged_repo
    v = cli("verify", "--json")
    assert v.code == 4
    # Only the full's own list names the lost data; the incremental inherits it and is re-linked.
    dry = cli("repair", "snapshots", "--dry-run", "--json").ok().json()
    assert [x["old_id"] for x in dry["repaired"]] == [full]
    assert {s["id"] for s in snapshot_list(cli)} == {full, inc}

    out = cli("repair", "snapshots", "--json").ok().json()
    (rep,) = out["repaired"]
    assert rep["old_id"] == full and set(rep["damaged_files"]) == damaged
    assert set(out["rewritten"]) == {full, inc}
    new_full, new_inc = out["rewritten"][full], out["rewritten"][inc]
    snaps = {s["id"]: s for s in snapshot_list(cli)}
    assert set(snaps) == {new_full, new_inc}
    assert snaps[new_inc]["parent"] == new_full and snaps[new_inc]["kind"] == "incremental"

    v = cli("-v", "verify", "--read-data")
    assert v.code == 0, v.describe()
    assert "marked damaged" in v.stdout
    target = tmp_path / "r"
    r = cli("restore", new_inc, "--target", target)
    assert r.code == 4, r.describe()
    for p in damaged:
        assert p in r.stderr
    got = trees.scan(trees.restored_path(target, src))
    assert not trees.differences(scan, got, fields=("type", "size", "sha256"), ignore=_rel(src, damaged))
    for rel in _rel(src, damaged):  # damaged files keep their size: zeros where data was lost
        assert got[rel]["size"] == scan[rel]["size"] and got[rel]["sha256"] != scan[rel]["sha256"]
    # Prune works again (it refuses while used data is missing).
    cli("prune").ok()
    cli("verify", "--read-data").ok()


def test_repair_snapshots_salvages_a_file_list_with_an_unreadable_blob(cli, repo, trees, tmp_path):
    src = tmp_path / "src"
    write_files(src, {f"names/{'x' * 120}{i:05d}": b"%d\n" % i for i in range(2500)})
    cli.backup(src)
    write_files(src, {f"names/{'x' * 120}{i:05d}": b"changed %d\n" % i for i in range(0, 2500, 2)})
    inc = cli.backup(src)["snapshot_id"]
    scan = trees.scan(src)
    tree = _tree_blobs(repo, inc)
    assert len(tree) >= 3, "the incremental's file list should span several tree blobs"
    lost = tree[1]
    flip_byte(pack_path(repo.path, lost.pack_id), lost.offset + lost.length // 2)
    assert lost.blob_type == BLOB_TREE
    v = cli("verify")
    assert v.code == 4 and "file list unreadable" in v.stderr, v.describe()

    out = cli("repair", "snapshots", "--json").ok().json()
    (rep,) = [x for x in out["repaired"] if x["old_id"] == inc]
    assert len(rep["lost_ranges"]) == 1 and rep["damaged_files"]
    lo, hi = rep["lost_ranges"][0]
    assert lo is not None and hi is not None and lo < hi
    cli("verify", "--read-data").ok()
    new_inc = out["rewritten"][inc]
    target = tmp_path / "r"
    r = cli("restore", new_inc, "--target", target)
    assert r.code == 4, r.describe()
    got = trees.scan(trees.restored_path(target, src))
    unknown = _rel(src, rep["damaged_files"])
    # Everything outside the unreadable part is exact; inside it the parent's versions stand, marked damaged.
    assert not trees.differences(scan, got, fields=("type", "size", "sha256"), ignore=unknown)
    assert all(rel in got for rel in unknown)
    assert len(unknown) < 2500 // 2


def test_restore_stops_at_an_unreadable_file_list_blob_with_every_file_whole_or_named(cli, repo, trees, tmp_path):
    """A stored, damaged file-list blob (a second read gives the same bytes): restore cannot go on
    past it, but the files it already created are finished, never left sized but empty."""
    src = tmp_path / "src"
    rng = random.Random(7)
    write_files(src, {f"many/{'n' * 100}{i:04d}.bin": rng.randbytes(40_000) for i in range(600)})
    sid = cli.backup(src)["snapshot_id"]
    scan = trees.scan(src)
    tree = _tree_blobs(repo, sid)
    assert len(tree) >= 3, "the file list should span several tree blobs"
    lost = tree[1]
    flip_byte(pack_path(repo.path, lost.pack_id), lost.offset + lost.length // 2)

    target = tmp_path / "r"
    r = cli("restore", sid, "--target", target)
    assert r.code == 4, r.describe()
    assert "restore stopped early" in r.stderr and "haeedge: error:" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    got = trees.scan(trees.restored_path(target, src))
    files = {p for p, v in got.items() if v["type"] == "file"}
    assert 10 < len(files) < 600, len(files)  # the part before the damaged blob, not more
    reached = {p: v for p, v in scan.items() if p in got}
    assert not trees.differences(reached, got, fields=("type", "size", "sha256"))


def test_repair_snapshots_turns_an_orphaned_incremental_into_a_full(cli, repo, trees, tmp_path):
    src = random_tree(tmp_path / "src", seed=5, n_files=10)
    full = cli.backup(src)["snapshot_id"]
    write_files(src, {"extra.txt": b"extra\n"})
    inc = cli.backup(src)["snapshot_id"]
    flip_byte(repo.path / "snapshots" / full, 30)  # unreadable now
    v = cli("verify")
    assert v.code == 4 and full in v.stderr, v.describe()
    out = cli("repair", "snapshots", "--json").ok().json()
    assert list(out["unreadable"]) == [full]
    (rep,) = out["repaired"]
    assert rep["old_id"] == inc and rep["broken_chain"] is True
    snaps = snapshot_list(cli)
    assert [s["kind"] for s in snaps] == ["full"] and snaps[0]["id"] == out["rewritten"][inc]
    cli("verify", "--read-data").ok()
    target = tmp_path / "r"
    cli("restore", snaps[0]["id"], "--target", target).ok()
    assert (trees.restored_path(target, src) / "extra.txt").read_bytes() == b"extra\n"


def test_repair_on_an_intact_repository_changes_nothing(cli, repo, tmp_path):
    src = random_tree(tmp_path / "src", seed=6, n_files=5)
    sid = cli.backup(src)["snapshot_id"]
    out = cli("repair", "snapshots", "--json").ok().json()
    assert out["repaired"] == [] and out["rewritten"] == {}
    assert [s["id"] for s in snapshot_list(cli)] == [sid]
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in repo.objects("data")}
    cli("repair", "index").ok()
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in repo.objects("data")} == before
    cli("verify", "--read-data").ok()


def test_blob_types_are_as_expected(repo):
    assert BLOB_DATA != BLOB_TREE
