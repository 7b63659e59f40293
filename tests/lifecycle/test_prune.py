"""prune: what it deletes, what it repacks, what it refuses, and that it reports honestly."""

from __future__ import annotations

import shutil

import pytest

from tests.support.lifecycle import (
    MiB,
    files_of,
    flip_byte,
    pack_path,
    random_tree,
    restore_diffs,
    snapshot_ids,
    write_files,
)


@pytest.fixture
def repo(cli, trees):
    return trees.init_library_repo(cli.repo_path, chunker=trees.SMALL_CHUNKS)


def _mixed_history(cli, trees, tmp_path):
    """Two snapshots; forgetting the first leaves a fully unused big pack and packs that are partly unused.

    Returns (source, kept snapshot id, scan of the source for it).
    """
    src = random_tree(tmp_path / "src", seed=5, n_files=40, max_size=30_000, big=2)
    first = cli.backup(src)["snapshot_id"]
    shutil.rmtree(src / "big")  # its own packs become unused
    for i in range(0, 40, 3):  # small files share packs with kept ones: partly unused packs
        (src / f"d{i % 4}" / f"f{i:03d}.bin").unlink()
    write_files(src, {"new.txt": b"after\n"})
    second = cli.backup(src)["snapshot_id"]
    out = cli("forget", first, "--rebase", "--json").ok().json()  # --rebase: frees the full now
    return src, out["rewritten"].get(second, second), trees.scan(src)


def test_dry_run_reports_and_changes_nothing(cli, repo, trees, tmp_path):
    _mixed_history(cli, trees, tmp_path)
    before = files_of(repo.path)
    r = cli("prune", "--dry-run", "--json").ok().json()
    assert r["dry_run"] is True and r["packs_deleted"] >= 2 and r["packs_repacked"] >= 1
    assert r["bytes_freed"] > 2 * MiB * 0.9
    assert files_of(repo.path) == before
    text = cli("prune", "--dry-run").ok().stdout
    assert "would delete" in text and "would free" in text
    assert files_of(repo.path) == before


def test_prune_deletes_repacks_and_reports_the_bytes_freed(cli, repo, trees, tmp_path):
    src, kept, scan = _mixed_history(cli, trees, tmp_path)
    planned = cli("prune", "--dry-run", "--json").ok().json()
    before = repo.size("data")
    index_before = {p.name for p in repo.objects("index")}
    r = cli("prune", "--json").ok().json()
    assert r["packs_deleted"] == planned["packs_deleted"] and r["packs_repacked"] == planned["packs_repacked"]
    assert r["packs_written"] >= 1 and r["blobs_repacked"] == planned["blobs_repacked"]
    assert before - repo.size("data") == r["bytes_freed"] > 2 * MiB * 0.9
    # One new index object replaced all the old ones.
    index_after = {p.name for p in repo.objects("index")}
    assert len(index_after) == 1 and not index_after & index_before
    v = cli("-v", "verify", "--read-data").ok()
    assert "warning" not in v.stdout  # no unindexed packs left behind
    assert not restore_diffs(cli, trees, kept, scan, src, tmp_path / "r")
    # Nothing left to do.
    again = cli("prune", "--json").ok().json()
    assert again["packs_deleted"] == 0 and again["packs_repacked"] == 0 and again["bytes_freed"] == 0


def test_max_unused_controls_repacking(cli, repo, trees, tmp_path):
    _mixed_history(cli, trees, tmp_path)
    lazy = cli("prune", "--max-unused", "unlimited", "--dry-run", "--json").ok().json()
    eager = cli("prune", "--max-unused", "0%", "--dry-run", "--json").ok().json()
    default = cli("prune", "--dry-run", "--json").ok().json()
    assert lazy["packs_repacked"] == 0 and lazy["packs_deleted"] >= 2
    assert eager["packs_repacked"] >= default["packs_repacked"] >= 1
    r = cli("prune", "--max-unused", "unlimited", "--json").ok().json()
    assert r["packs_repacked"] == 0
    cli("verify", "--read-data").ok()
    for bad in ("5", "-1%", "200%", "lots"):
        u = cli("prune", "--max-unused", bad)
        assert u.code == 2 and "--max-unused" in u.stderr, u.describe()


def test_prune_removes_packs_left_by_an_interrupted_backup(cli, repo, trees, tmp_path):
    src = random_tree(tmp_path / "src", seed=8, n_files=10, big=2)
    r = cli("backup", src, env={"HAEEDGE_FAULTS": "put:match=index/:permanent"})
    assert r.code == 1 and "injected fault" in r.stderr, r.describe()
    assert snapshot_ids(cli) == [] and len(repo.objects("data")) >= 2
    v = cli("-v", "verify", "--read-data").ok()
    assert "not in any index" in v.stdout
    out = cli("prune", "--json").ok().json()
    assert out["unindexed_deleted"] >= 2 and out["packs_deleted"] == out["unindexed_deleted"]
    assert repo.objects("data") == []
    scan = trees.scan(src)
    sid = cli.backup(src)["snapshot_id"]
    assert not restore_diffs(cli, trees, sid, scan, src, tmp_path / "r")


def test_prune_refuses_when_data_a_snapshot_uses_is_missing(cli, repo, trees, tmp_path):
    src = random_tree(tmp_path / "src", seed=9, n_files=10, big=1)
    cli.backup(src)
    for p in repo.objects("index"):
        p.unlink()
    before = files_of(repo.path)
    r = cli("prune")
    assert r.code == 4 and "nothing was pruned" in r.stderr and "repair index" in r.stderr, r.describe()
    assert files_of(repo.path) == before
    cli("repair", "index").ok()
    cli("prune").ok()
    cli("verify", "--read-data").ok()


def test_prune_refuses_when_a_snapshot_is_unreadable(cli, repo, trees, tmp_path):
    src = random_tree(tmp_path / "src", seed=9, n_files=5)
    cli.backup(src)
    snap = repo.objects("snapshots")[0]
    flip_byte(snap, 40)
    before = files_of(repo.path)
    r = cli("prune")
    assert r.code == 4 and "nothing was pruned" in r.stderr, r.describe()
    assert files_of(repo.path) == before


def test_prune_keeps_a_damaged_pack_instead_of_copying_bad_data(cli, repo, trees, tmp_path):
    _src, kept, _scan = _mixed_history(cli, trees, tmp_path)
    plan = cli("prune", "--dry-run", "--json").ok().json()
    assert plan["packs_repacked"] >= 1
    # Damage a blob that is still used, inside a pack that prune wants to repack.
    from haeedge.operations.prune import plan_prune

    with repo.open() as r:
        p = plan_prune(r)
        pack_id = p.repack[0]
        entry = p.packs[pack_id].used[0]
    flip_byte(pack_path(repo.path, pack_id), entry.offset + entry.length // 2)
    out = cli("prune", "--json").ok().json()
    assert any(pack_id[:16] in w and "damaged" in w for w in out["warnings"]), out["warnings"]
    assert pack_path(repo.path, pack_id).exists()
    v = cli("verify", "--read-data")
    assert v.code == 4 and pack_id[:16] in v.stdout + v.stderr, v.describe()
