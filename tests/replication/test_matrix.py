"""The core matrix through the real CLI on every kind of location.

init, full backup, incremental backup, byte-identical restore of both
snapshots, and ``verify --read-data``: on a local directory, on SFTP (real
sshd), on S3 (a real moto server process), and on one repository replicated
over S3 + SFTP + local disk, which must also restore from each replica alone.
Plus the SFTP host-key rules and S3 credential errors, as a user meets them.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.lifecycle import MiB
from tests.support.replication import make_files, s3_env
from tests.support.servers import start_s3

KINDS = {"local": ("local",), "sftp": ("sftp",), "s3": ("s3",), "replicated": ("s3", "sftp", "local")}


@pytest.mark.parametrize("kind", list(KINDS))
def test_backup_incremental_restore_verify(kind: str, make_site, trees, tmp_path: Path) -> None:
    site = make_site(*KINDS[kind])
    src = make_files(tmp_path / "src", [3 * MiB, 4 * MiB + 123, 200_000, 70_000, 5000, 1])
    site("init").ok()
    first = site.backup(src)
    assert first["kind"] == "full" and first["errors"] == 0
    scan1 = trees.scan(src)

    (src / "d1" / "f001.bin").write_bytes(os.urandom(300_000))  # changed
    (src / "d0" / "new.bin").write_bytes(os.urandom(123_456))  # added
    (src / "d2" / "f002.bin").unlink()  # removed
    second = site.backup(src)
    assert second["kind"] == "incremental" and second["parent"] == first["snapshot_id"]
    assert second["files_changed"] == 1 and second["files_new"] == 1 and second["files_deleted"] == 1
    assert second["bytes_added"] < MiB, "an incremental stored more than what changed"
    scan2 = trees.scan(src)

    for snap, scan in ((first, scan1), (second, scan2)):
        target = tmp_path / f"restore-{snap['snapshot_id'][:8]}"
        site("restore", snap["snapshot_id"], "--target", target).ok()
        diffs = trees.differences(scan, trees.scan(trees.restored_path(target, src)))
        assert not diffs, f"{kind}: snapshot {snap['kind']} restored differently: {diffs[:10]}"

    report = site("--json", "verify", "--read-data").ok().json()
    assert report["ok"] and report["packs_read"] >= 2 and not report["findings"]

    if kind == "replicated":
        assert [r["location"] for r in report["replicas"]] == site.locations
        assert all(r["ok"] and not r["missing"] for r in report["replicas"]), report["replicas"]
        # Any one replica alone is the whole repository.
        for loc in site.locations:
            alone = make_site()
            alone.locations, alone.env = [loc], site.env
            target = tmp_path / f"alone-{len(loc)}-{site.locations.index(loc)}"
            alone("restore", "latest", "--target", target).ok()
            assert not trees.differences(scan2, trees.scan(trees.restored_path(target, src))), loc


def test_sftp_host_keys_through_the_cli(make_site, sshd, tmp_path: Path) -> None:
    site = make_site("sftp")
    known = tmp_path / "known_hosts"
    env = {"HAEEDGE_SFTP_KNOWN_HOSTS": str(known)}

    r = site("init", env=env).expect(1)
    assert "unknown SSH host key" in r.stderr and "SHA256:" in r.stderr, r.describe()
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("haeedge: error:")]) == 1
    assert not known.exists() or not known.read_text().strip()

    site("--accept-new-host-key", "init", env=env).ok()
    assert sshd.host_key_line().split()[1:] == known.read_text().split()[1:3]
    site("snapshots", env=env).ok()  # now known: no flag needed

    # A changed key is refused loudly, and accepting new keys does not override that.
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True,
                   capture_output=True, stdin=subprocess.DEVNULL)
    pub = (tmp_path / "other_key.pub").read_text().split()
    known.write_text(f"[{sshd.host}]:{sshd.port} {pub[0]} {pub[1]}\n")
    r = site("--accept-new-host-key", "snapshots", env=env).expect(1)
    assert "HAS CHANGED" in r.stderr and "ssh-keygen -R" in r.stderr, r.describe()


def test_s3_wrong_credentials_fail_at_once_naming_the_backend(cli, tmp_path: Path) -> None:
    srv = start_s3(tmp_path, auth=True)
    try:
        env = {**s3_env(srv, tmp_path), "AWS_SECRET_ACCESS_KEY": "wrong-secret"}
        started = time.monotonic()
        r = cli("-r", srv.url_for("repo"), "init", env=env).expect(1)
        assert time.monotonic() - started < 20, "a permanent error was retried"
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("haeedge: error:")]
        assert len(errors) == 1 and srv.url_for("repo") in errors[0], r.describe()
        assert "retry" not in r.stderr.lower(), r.describe()
    finally:
        srv.stop()
