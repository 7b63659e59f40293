"""A replica that is down during a backup: the write policy decides, and ``sync`` repairs it.

``--replica-policy fail`` (the default) stops the backup with an error naming
the replica. ``continue`` finishes on the others, reports the replica as
lagging (summary, ``--json``, exit code 3: never silently), ``verify`` lists
what it lacks, and ``sync`` copies exactly that, after which the lagging
replica alone restores the new snapshot.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.lifecycle import MiB
from tests.support.replication import make_files
from tests.support.servers import start_sshd


def test_a_down_replica_under_each_policy_and_sync(make_site, trees, tmp_path: Path) -> None:
    own = start_sshd(tmp_path / "own-sshd")
    try:
        site = make_site("local", "sftp", sshd=own)
        local_loc, sftp_loc = site.locations
        site("init").ok()
        src = make_files(tmp_path / "src", [2 * MiB, 700_000, 30_000])
        first = site.backup(src)
        own.stop()

        # fail (default): no snapshot, one error line naming the replica.
        r = site("backup", src).expect(1)
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("haeedge: error:")]
        assert len(errors) == 1 and sftp_loc in errors[0] and "unreachable" in errors[0], r.describe()
        assert len(site("--json", "snapshots").ok().json()) == 1

        # continue (here from the environment): the backup is made on the live replica and the
        # other is reported lagging, in the summary and on stderr, with exit code 3.
        (src / "d0" / "f000.bin").write_bytes(os.urandom(MiB))
        (src / "added.txt").write_text("written while the fog node was down\n")
        r = site("--json", "backup", src, env={"HAEEDGE_REPLICA_POLICY": "continue"}).expect(3)
        summary = r.json()
        assert summary["snapshot_id"] and summary["errors"] == 0
        [lag] = summary["lagging_replicas"]
        assert lag["location"] == sftp_loc and lag["objects_missed"] >= 3, lag
        assert f"replica {sftp_loc} is lagging" in r.stderr and "haeedge sync" in r.stderr
        scan = trees.scan(src)

        # Any one replica alive is enough to restore, whatever the write policy.
        site("restore", "latest", "--target", tmp_path / "while-down").ok()
        assert not trees.differences(scan, trees.scan(trees.restored_path(tmp_path / "while-down", src)))

        own.restart()
        report = site("--json", "verify").expect(4).json()
        by_loc = {rep["location"]: rep for rep in report["replicas"]}
        assert by_loc[local_loc]["ok"] and not by_loc[local_loc]["missing"]
        lacking = by_loc[sftp_loc]["missing"]
        assert any(n.startswith("snapshots/") for n in lacking) and any(n.startswith("data/") for n in lacking)

        planned = site("--json", "sync", "--dry-run").ok().json()
        assert {r["location"]: r["lacking"] for r in planned["replicas"]} == {local_loc: 0, sftp_loc: len(lacking)}
        assert site("--json", "verify").code == 4, "a dry run changed something"

        synced = site("--json", "sync").ok().json()
        assert synced["objects_copied"] == len(lacking) and synced["bytes_copied"] > MiB
        site("verify", "--read-data").ok()
        again = site("--json", "sync").ok().json()
        assert again["objects_copied"] == 0

        alone = site.cli("-r", sftp_loc, "restore", "latest", "--target", tmp_path / "alone", env=site.env).ok()
        assert alone.code == 0
        assert not trees.differences(scan, trees.scan(trees.restored_path(tmp_path / "alone", src)))
        assert first["snapshot_id"] in [s["id"] for s in site("--json", "snapshots").ok().json()]
    finally:
        own.stop()


def test_sync_refuses_locations_of_different_repositories(make_site, tmp_path: Path) -> None:
    one, two = make_site("local", tag="one"), make_site("local", tag="two")
    one("init").ok()
    two("init").ok()
    both = make_site()
    both.locations = one.locations + two.locations
    r = both("sync").expect(2)
    assert "different repositories" in r.stderr, r.describe()
    assert make_site("local", tag="one")("sync").code == 2  # one location: nothing to sync


def test_sync_fills_a_new_empty_replica(make_site, trees, tmp_path: Path) -> None:
    site = make_site("local", tag="old")
    site("init").ok()
    src = make_files(tmp_path / "src", [MiB, 10_000])
    site.backup(src)
    grown = make_site("local", "sftp", tag="old")  # the same local repository, and an empty SFTP location
    synced = grown("--json", "sync").ok().json()
    assert synced["objects_copied"] > 0
    grown("verify", "--read-data").ok()
    (src / "later.txt").write_text("both replicas up: nothing lags\n")
    summary = grown("--replica-policy", "continue", "--json", "backup", src).ok().json()
    assert summary["lagging_replicas"] == []
    target = tmp_path / "restore"
    grown.cli("-r", grown.locations[1], "restore", "latest", "--target", target, env=grown.env).ok()
    assert not trees.differences(trees.scan(src), trees.scan(trees.restored_path(target, src)))
