"""Failover per object: a replica that dies mid-restore, and a replica that holds damaged copies.

The repository is S3 + SFTP + local disk (or SFTP + local). Restores must
finish with identical bytes from the replicas that still answer correctly,
and ``verify`` must name the replica that is bad, which ``sync`` repairs.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.lifecycle import MiB
from tests.support.replication import files_under, make_files, wait_for
from tests.support.servers import start_s3


def _s3_data_reads(log: str) -> int:
    # No leading quote: werkzeug may wrap the request line in ANSI colour codes (206 replies).
    return len(re.findall(r'GET /[^ ]*/data/[0-9a-f]{2}/[0-9a-f]{64}', log))


def test_restore_completes_when_s3_is_killed_in_the_middle(make_site, sshd, trees, tmp_path: Path) -> None:
    srv = start_s3(tmp_path / "own-s3")
    try:
        site = make_site("s3", "sftp", "local", s3=srv)  # S3 first: it serves until it dies
        site.init_library(pack_size=MiB)  # small packs: a restore is many reads, so "the middle" is real
        src = make_files(tmp_path / "src", [600_000] * 40 + [3 * MiB])
        snap = site.backup(src)
        packs = len(files_under(tmp_path / "local-a" / "data"))
        assert packs >= 20
        scan = trees.scan(src)

        target = tmp_path / "restore"
        reads_before = _s3_data_reads(srv.log)
        # Every replica answers range reads slowly, so the restore takes a few seconds.
        proc = site.popen("restore", snap["snapshot_id"], "--target", target,
                          env={"HAEEDGE_FAULTS": "get_range:latency=0.5:match=data/"})
        wait_for(lambda: _s3_data_reads(srv.log) - reads_before >= 3, 120, proc, "S3 to serve part of the restore")
        srv.kill()
        served_by_s3 = _s3_data_reads(srv.log) - reads_before
        assert proc.poll() is None, "the restore ended before S3 was killed"
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-3000:]
        assert served_by_s3 < packs // 2, f"S3 served {served_by_s3} of {packs} packs before it died: not the middle"
        assert not trees.differences(scan, trees.scan(trees.restored_path(target, src)))
        assert site.locations[0] in err.decode(), "the failing replica was not named"
    finally:
        srv.kill()


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_damaged_copies_on_one_replica(make_site, trees, tmp_path: Path) -> None:
    site = make_site("sftp", "local")  # the damaged replica is the one read first
    # ... for everything: the local metadata cache would serve the file lists (and the snapshot
    # object) the backup kept, whatever damage the sftp replica holds.
    site.env["HAEEDGE_NO_CACHE"] = "1"
    site("init").ok()
    src = make_files(tmp_path / "src", [2 * MiB, 5 * MiB, 300_000, 40_000])
    snap = site.backup(src)
    scan = trees.scan(src)
    sftp_root = tmp_path / "sftp-a"
    sftp_loc, local_loc = site.locations

    # Damage every pack in the middle (inside a blob), truncate one more, damage the snapshot object.
    packs = files_under(sftp_root / "data")
    assert len(packs) >= 2
    for p in packs[1:]:
        _flip(p, p.stat().st_size // 2)
    with packs[0].open("r+b") as f:
        f.truncate(packs[0].stat().st_size - 100)
    snap_obj = sftp_root / "snapshots" / snap["snapshot_id"]
    _flip(snap_obj, 10)

    target = tmp_path / "restore"
    r = site("restore", "latest", "--target", target).ok()
    assert not trees.differences(scan, trees.scan(trees.restored_path(target, src)))
    assert "damaged" in r.stderr and sftp_loc in r.stderr, r.describe()

    # verify names the bad replica and what is wrong on it; the other replica is clean.
    shallow = site("--json", "verify").expect(4).json()
    by_loc = {rep["location"]: rep for rep in shallow["replicas"]}
    assert by_loc[local_loc]["ok"] and not by_loc[sftp_loc]["ok"]
    assert by_loc[sftp_loc]["size_mismatch"] == [str(packs[0].relative_to(sftp_root))]
    deep = site("--json", "verify", "--read-data").expect(4).json()
    by_loc = {rep["location"]: rep for rep in deep["replicas"]}
    assert by_loc[local_loc]["ok"]
    damaged = set(by_loc[sftp_loc]["damaged"]) | set(by_loc[sftp_loc]["size_mismatch"])
    expected = {str(p.relative_to(sftp_root)) for p in packs} | {f"snapshots/{snap['snapshot_id']}"}
    assert damaged == expected
    assert all(sftp_loc in f["message"] for f in deep["findings"] if f["severity"] == "error"), deep["findings"]
    text = site("verify", "--read-data").expect(4)
    assert f"replica {sftp_loc}" in text.stdout and f"replica {local_loc}: " in text.stdout

    # sync --deep puts intact copies back; then everything verifies and the replica alone restores.
    synced = site("--json", "sync", "--deep").ok().json()
    assert synced["objects_copied"] == len(expected) and not synced["unrecoverable"]
    site("verify", "--read-data").ok()
    alone = site.cli("-r", sftp_loc, "restore", "latest", "--target", tmp_path / "alone", env=site.env).ok()
    assert alone.code == 0
    assert not trees.differences(scan, trees.scan(trees.restored_path(tmp_path / "alone", src)))


def test_every_copy_damaged_is_reported_not_hidden(make_site, trees, tmp_path: Path) -> None:
    site = make_site("local", "sftp")
    site("init").ok()
    src = make_files(tmp_path / "src", [1 * MiB, 200_000])
    site.backup(src)
    for root in (tmp_path / "local-a", tmp_path / "sftp-a"):
        for p in files_under(root / "data"):
            _flip(p, p.stat().st_size // 3)
    r = site("restore", "latest", "--target", tmp_path / "restore").expect(4)
    assert "damaged" in r.stderr
    synced = site("--json", "sync", "--deep").expect(4).json()
    assert synced["unrecoverable"], synced
