"""Lock-free prune in two phases (repo/marks.py): mark, wait for the grace period, delete what is still unused.

These tests run with real grace periods of a few seconds (the suite's default is 0s: one-run prune)
and ``HAEEDGE_MAX_CLOCK_SKEW=0s``, so that the clock allowance does not stretch them.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from haeedge.repo import marks as marks_mod
from haeedge.repo.marks import Clock, Mark, check_clock, ripens_at
from tests.support.lifecycle import files_of, random_tree, restore_diffs

SHORT = {"HAEEDGE_MAX_CLOCK_SKEW": "0s"}


@pytest.fixture
def repo(cli, trees):
    return trees.init_library_repo(cli.repo_path, chunker=trees.SMALL_CHUNKS)


def _forgotten_history(cli, tmp_path, seed: int):
    """Two snapshots of different trees; the first is forgotten, so its packs are unused."""
    old = random_tree(tmp_path / "old", seed=seed, n_files=6, big=1)
    first = cli.backup(old)["snapshot_id"]
    src = random_tree(tmp_path / "src", seed=seed + 1, n_files=6)
    kept = cli.backup(src)["snapshot_id"]
    cli("forget", first).ok()
    _age(cli.repo_path / "data", 3600)  # written an hour ago: not a running backup's
    return old, src, kept


def _age(folder, seconds: float) -> None:
    """Set back the storage time of every object under ``folder`` (prune does not mark packs younger
    than the grace period: they may be a running backup's)."""
    then = time.time() - seconds
    for path in folder.rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))


def _marks(repo) -> list[str]:
    return sorted(files_of(repo.path / "marks")) if (repo.path / "marks").is_dir() else []


def test_first_run_marks_and_a_run_after_the_grace_period_deletes(cli, repo, trees, tmp_path):
    old, src, kept = _forgotten_history(cli, tmp_path, seed=10)
    scan = trees.scan(src)
    data_before = files_of(repo.path / "data")
    r = cli("--json", "prune", "--grace", "15s", env=SHORT).ok().json()
    marked_at = time.monotonic()
    assert r["packs_marked"] >= 1 and r["packs_deleted"] == 0 and r["grace_seconds"] == 15
    assert files_of(repo.path / "data") == data_before  # phase 1 deletes nothing
    assert len(_marks(repo)) == 1
    text = cli("prune", "--grace", "15s", env=SHORT).ok().stdout
    if time.monotonic() - marked_at < 14:  # before the grace period: still nothing
        assert "packs wait (marked, or stored less than the grace period of 15s ago)" in text, text
        assert files_of(repo.path / "data") == data_before
    # A backup after the mark does not deduplicate against marked packs: it stores the data again.
    again = cli.backup(old)
    assert again["data_blobs_added"] >= 1, again
    cli("forget", again["snapshot_id"]).ok()
    time.sleep(max(0.0, marked_at + 15.5 - time.monotonic()))
    r2 = cli("--json", "prune", "--grace", "15s", env=SHORT).ok().json()
    assert r2["packs_deleted"] >= r["packs_marked"] and r2["marks_deleted"] >= 1, r2
    assert set(data_before) - set(files_of(repo.path / "data"))  # the marked packs are gone
    cli("verify", "--read-data").ok()
    assert not restore_diffs(cli, trees, kept, scan, src, tmp_path / "r")


def test_a_marked_pack_that_a_later_snapshot_uses_is_kept_and_unmarked(cli, repo, trees, tmp_path):
    old, src, kept = _forgotten_history(cli, tmp_path, seed=20)
    r = cli("--json", "prune", "--grace", "2s", env=SHORT).ok().json()
    assert r["packs_marked"] >= 1
    # A backup that began before the mark and ended long before it ripens (simulated: the library,
    # with no marks read, so it deduplicates against the marked packs) references their blobs.
    with repo.open() as lib:
        from haeedge.archiver import Archiver, BackupOptions

        result = Archiver(lib, BackupOptions(paths=[str(old)], host="late"), None).run()
    assert result.snapshot is not None
    time.sleep(2.5)
    r2 = cli("--json", "prune", "--grace", "2s", env=SHORT).ok().json()
    assert r2["marks_deleted"] == 1
    cli("verify", "--read-data").ok()
    scan_old = trees.scan(old)
    assert not restore_diffs(cli, trees, result.snapshot.id, scan_old, old, tmp_path / "r")
    assert _marks(repo) == []


def test_a_backup_that_a_ripening_mark_endangers_saves_no_snapshot(cli, repo, trees, tmp_path):
    old, src, kept = _forgotten_history(cli, tmp_path, seed=30)
    before = {s["id"] for s in cli("--json", "snapshots").ok().json()}
    # The backup deduplicates against the forgotten snapshot's packs, then stalls before its
    # final check of the marks (the second listing of marks/); prune marks those packs meanwhile.
    proc = cli.popen("backup", old, env={**SHORT, "HAEEDGE_FAULTS": "list:latency=8:match=marks:after=1"})
    time.sleep(4)
    assert proc.poll() is None
    cli("prune", "--grace", "1s", env=SHORT).ok()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 11, err
    assert b"a prune marked data this backup uses as unused while the backup ran" in err
    assert err.count(b"haeedge: error:") == 1 and b"Traceback" not in err
    assert {s["id"] for s in cli("--json", "snapshots").ok().json()} == before
    time.sleep(1.5)
    cli("prune", "--grace", "1s", env=SHORT).ok()
    cli("verify", "--read-data").ok()
    sid = cli.backup(old)["snapshot_id"]  # the next run stores the data again
    cli("verify", "--read-data").ok()
    assert not restore_diffs(cli, trees, sid, trees.scan(old), old, tmp_path / "r")


def test_young_packs_are_not_marked(cli, repo, tmp_path):
    old = random_tree(tmp_path / "old", seed=50, n_files=4, big=1)
    cli("forget", cli.backup(old)["snapshot_id"]).ok()
    r = cli("--json", "prune", "--grace", "1h", env=SHORT).ok().json()
    assert r["packs_marked"] == 0 and r["packs_waiting"] >= 1 and r["packs_deleted"] == 0
    assert _marks(repo) == []
    _age(repo.path / "data", 2 * 3600)
    r = cli("--json", "prune", "--grace", "1h", env=SHORT).ok().json()
    assert r["packs_marked"] >= 1 and r["packs_deleted"] == 0
    assert len(_marks(repo)) == 1


def test_a_mark_not_signed_by_the_owner_deletes_nothing(cli, repo, trees, tmp_path):
    old, src, kept = _forgotten_history(cli, tmp_path, seed=40)
    r = cli("--json", "prune", "--dry-run", "--grace", "1h").ok().json()
    assert r["packs_marked"] >= 1
    data_before = files_of(repo.path / "data")
    from haeedge.repo.signing import Signer, generate_key

    with repo.open() as lib:
        unused = sorted(p.rsplit("/", 1)[-1] for p in data_before)
        doc = {"haeedge_mark": 1, "repository": lib.config.repository_id, "time": "2020-01-01T00:00:00Z",
               "grace": 0.0, "host": "attacker", "unused": unused, "unindexed": []}
        forged = Signer(generate_key("not the owner")).sign_document(doc)  # a writer host's key, say
        lib.put_object("marks", lib.seal("meta", json.dumps(forged).encode()))
    r = cli("--json", "prune", "--grace", "1s", env=SHORT).ok().json()
    assert r["packs_deleted"] == 0 and r["marks_deleted"] == 0
    assert files_of(repo.path / "data") == data_before
    v = cli("verify").ok()
    assert v.code == 0


def test_grace_is_checked(cli, repo):
    r = cli("prune", "--grace", "soon")
    assert r.code == 2 and "--grace: 'soon' is not a duration" in r.stderr, r.describe()
    r = cli("prune", env={"HAEEDGE_PRUNE_GRACE": "1 hour"})
    assert r.code == 2 and "$HAEEDGE_PRUNE_GRACE" in r.stderr, r.describe()


def test_clock_skew_widens_the_grace_period():
    """The storage's time of a mark counts; a marking host whose clock is off by more than the bound
    gets the difference added, and this host's own offset is reported."""
    m = Mark("ab" * 32, time=1000.0, grace=60.0, unused=frozenset(), unindexed=frozenset(), stored=1000.5)
    assert ripens_at(m, 30.0, Clock(), 300.0) == (1060.5, None)
    off = Mark("cd" * 32, time=1000.0, grace=60.0, unused=frozenset(), unindexed=frozenset(), stored=2000.0)
    at, warning = ripens_at(off, 60.0, Clock(), 300.0)
    assert at == 2000.0 + 1000.0 + 60.0 and "differs from the storage's by +1000 s" in warning
    unknown = Mark("ef" * 32, time=1000.0, grace=60.0, unused=frozenset(), unindexed=frozenset())
    assert ripens_at(unknown, 0.0, Clock(), 300.0) == (1360.0, None)
    assert check_clock(Clock(offset=-900.0, measured=True), 300.0).startswith(
        "this host's clock differs from the storage's by -900 s")
    assert check_clock(Clock(offset=10.0, measured=True), 300.0) is None
    assert marks_mod.DEFAULT_GRACE == 3600.0
