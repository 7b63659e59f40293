"""Resumability: a backup cut off mid-way (server killed, or haeedge killed) leaves a repository
that verifies, and the next run reuses what was already uploaded.

The repositories use 1 MiB packs, so the index checkpoints (every 32 packs)
happen within the first seconds of a backup of a few dozen MiB; each test
cuts the backup once a checkpoint is stored (the first of two: the cut must land
well before the end, even on a loaded machine), and the packs every stored
checkpoint indexes must not be uploaded again.
"""

from __future__ import annotations

import re
from pathlib import Path

from haeedge.repo.packer import INDEX_CHECKPOINT_PACKS
from tests.support.lifecycle import MiB
from tests.support.replication import files_under, kill, make_files, wait_for
from tests.support.servers import start_sshd

TOTAL_FILES = 40  # of 2 MiB: 80 MiB, 80 packs, two checkpoints before the end
#: Uploads are slowed, so that the cut surely lands before the end: 48 packs of
#: two upload threads are still to go after the first checkpoint (over a second).
SLOW_UPLOADS = {"HAEEDGE_FAULTS": "put:latency=0.05:match=data/"}


def _reused_enough(first_total: int, second: dict, checkpoints: int) -> None:
    """The second run stored at most what the stored checkpoints did not cover, plus file lists."""
    assert checkpoints >= 1
    left = first_total - checkpoints * INDEX_CHECKPOINT_PACKS * MiB
    assert second["errors"] == 0
    assert second["bytes_added"] <= left + 4 * MiB, (
        f"the resumed backup stored {second['bytes_added']} bytes of {first_total}: uploaded data was not reused")


def test_backup_cut_by_sftp_server_death_resumes(make_site, trees, tmp_path: Path) -> None:
    own = start_sshd(tmp_path / "own-sshd")
    try:
        site = make_site("sftp", sshd=own)
        site.init_library(pack_size=MiB)
        src = make_files(tmp_path / "src", [2 * MiB] * TOTAL_FILES)
        total = TOTAL_FILES * 2 * MiB
        root = tmp_path / "sftp-a"

        proc = site.popen("backup", src, env=SLOW_UPLOADS)
        wait_for(lambda: len(files_under(root / "index")) >= 1, 120, proc, "an index checkpoint")
        own.kill()  # the fog node dies mid-backup, dropping its connections
        checkpoints = len(files_under(root / "index"))
        _out, err = proc.communicate(timeout=180)
        assert proc.returncode == 1, err.decode()[-2000:]
        assert site.locations[0] in err.decode()
        assert len(files_under(root / "snapshots")) == 0

        own.restart()
        site("verify", "--read-data").ok()  # unindexed leftovers are warnings, not errors
        second = site.backup(src)
        _reused_enough(total, second, checkpoints)
        target = tmp_path / "restore"
        site("restore", "latest", "--target", target).ok()
        assert not trees.differences(trees.scan(src), trees.scan(trees.restored_path(target, src)))
        site("verify").ok()
    finally:
        own.stop()


def test_backup_cut_by_killing_haeedge_on_s3_resumes(make_site, s3, trees, tmp_path: Path) -> None:
    site = make_site("s3")
    site.init_library(pack_size=MiB)
    src = make_files(tmp_path / "src", [2 * MiB] * TOTAL_FILES)
    total = TOTAL_FILES * 2 * MiB
    prefix = site.locations[0].split("/", 3)[3]

    def index_objects() -> int:
        listing = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=f"{prefix}/index/")
        return len(listing.get("Contents", []))

    proc = site.popen("backup", src, env=SLOW_UPLOADS)
    wait_for(lambda: index_objects() >= 1, 120, proc, "an index checkpoint")
    kill(proc)
    assert proc.returncode == -9, "the backup ended before the cut"
    checkpoints = index_objects()

    report = site("--json", "verify", "--read-data").ok().json()
    assert report["ok"]
    second = site.backup(src)
    _reused_enough(total, second, checkpoints)
    target = tmp_path / "restore"
    site("restore", "latest", "--target", target).ok()
    assert not trees.differences(trees.scan(src), trees.scan(trees.restored_path(target, src)))
    site("verify").ok()
    assert re.fullmatch(r"[0-9a-f]{64}", second["snapshot_id"])
