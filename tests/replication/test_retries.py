"""Retries driven by HAEEDGE_FAULTS through the real CLI, against real servers.

Transient faults (errors every Nth call, connection resets, reads cut short)
are retried with backoff and the commands succeed with identical data; a
permanent fault fails at once with one line naming the backend, and leaves a
repository that still verifies.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support.lifecycle import MiB
from tests.support.replication import make_files

TRANSIENT = {
    "backup": "put:every=3,get:every=4:raw,list:every=3,stat:every=4",
    "restore": "get_range:every=3,get:every=4,list:every=3",
    "truncated": "get_range:once:truncate=0.5,get:every=5:raw",  # one read per pack: cut each once
    "verify": "get:every=3,get_range:every=3:raw,list:every=4",
}


@pytest.mark.parametrize("kind", ["sftp", "s3"])
def test_transient_faults_are_retried(kind: str, make_site, trees, tmp_path: Path) -> None:
    site = make_site(kind)
    site("init").ok()
    src = make_files(tmp_path / "src", [3 * MiB, 1 * MiB, 100_000, 5000])

    r = site("--json", "backup", src, env={"HAEEDGE_FAULTS": TRANSIENT["backup"]})
    assert r.code == 0, r.describe()
    assert "injected fault" in r.stderr and "retry" in r.stderr, "no fault fired: the test proves nothing"
    scan = trees.scan(src)
    for name in ("restore", "truncated"):
        target = tmp_path / name
        r = site("restore", "latest", "--target", target, env={"HAEEDGE_FAULTS": TRANSIENT[name]})
        assert r.code == 0, r.describe()
        assert ("cut short" if name == "truncated" else "retry") in r.stderr, r.describe()
        assert not trees.differences(scan, trees.scan(trees.restored_path(target, src))), name
    r = site("verify", "--read-data", env={"HAEEDGE_FAULTS": TRANSIENT["verify"]})
    assert r.code == 0, r.describe()
    site("verify", "--read-data").ok()


def test_a_permanent_fault_fails_at_once_and_harms_nothing(make_site, trees, tmp_path: Path) -> None:
    site = make_site("s3")
    site("init").ok()
    src = make_files(tmp_path / "src", [2 * MiB, 10_000])
    site.backup(src)
    (src / "new.bin").write_bytes(os.urandom(MiB))

    started = time.monotonic()
    r = site("backup", src, env={"HAEEDGE_FAULTS": "put:permanent:match=data/"}).expect(1)
    assert time.monotonic() - started < 30
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("haeedge: error:")]
    assert len(errors) == 1 and site.locations[0] in errors[0] and "injected fault" in errors[0], r.describe()
    assert "retry" not in r.stderr, "a permanent error was retried"

    site("verify", "--read-data").ok()
    assert len(site("--json", "snapshots").ok().json()) == 1
    site.backup(src)
    target = tmp_path / "restore"
    site("restore", "latest", "--target", target).ok()
    assert not trees.differences(trees.scan(src), trees.scan(trees.restored_path(target, src)))
