"""Crash safety: SIGKILL ``haeedge backup`` at several points; the repository stays consistent.

After every kill: ``verify --read-data`` passes, every snapshot listed before
still restores identically, and any snapshot that appeared is complete. At the
end an uninterrupted backup completes and restores.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time

import pytest

MiB = 1 << 20


def _big_tree(root, total_mib: int) -> None:
    rng = random.Random(10)
    root.mkdir()
    for i in range(total_mib // 10):
        (root / f"blob{i:02d}.bin").write_bytes(rng.randbytes(10 * MiB))
    small = root / "small"
    small.mkdir()
    for i in range(500):
        (small / f"s{i:03d}").write_bytes(rng.randbytes(rng.randrange(0, 20_000)))


def _packs(handle) -> int:
    return len(handle.objects("data"))


def _snapshot_ids(cli) -> list[str]:
    return [s["id"] for s in cli("snapshots", "--json").ok().json()]


@pytest.mark.slow
def test_sigkill_during_backup_leaves_a_consistent_repository(cli, fast_repo, trees, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    (small / "keep.txt").write_text("committed before the crashes\n")
    (small / "data.bin").write_bytes(random.Random(1).randbytes(2 * MiB))
    committed = {cli.backup(small)["snapshot_id"]: trees.scan(small)}

    big = tmp_path / "big"
    _big_tree(big, 300)
    big_scan = trees.scan(big)

    # When to kill: after a delay, once N packs are on disk, or right after the snapshot object appears.
    triggers = [("delay", 0.3), ("delay", 1.0), ("packs", 4), ("delay", 2.0), ("packs", 15), ("snapshot", 0)]
    killed = 0
    for n, (kind, value) in enumerate(triggers):
        before = _snapshot_ids(cli)
        packs_before = _packs(fast_repo)
        proc = cli.popen("backup", big, start_new_session=True)
        started = time.monotonic()
        while proc.poll() is None and time.monotonic() - started < 120:
            if kind == "delay" and time.monotonic() - started >= value:
                break
            if kind == "packs" and _packs(fast_repo) - packs_before >= value:
                break
            if kind == "snapshot" and len(fast_repo.objects("snapshots")) > len(before):
                break
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
        _kill_group(proc)  # worker processes, if any, go down with it (see test_no_orphans_after_sigkill)
        proc.communicate(timeout=60)

        v = cli("verify", "--read-data")
        assert v.code == 0, f"after kill #{n} ({kind} {value}):\n{v.describe()}"
        after = _snapshot_ids(cli)
        assert set(before) <= set(after), f"kill #{n} lost a snapshot"
        new = set(after) - set(before)
        assert len(new) <= 1
        for sid in new:  # a snapshot that made it is complete
            committed[sid] = big_scan
        for sid, scan in committed.items():
            target = tmp_path / f"restore-{n}-{sid[:8]}"
            cli("restore", sid, "--target", target).ok()
            root = small if scan is not big_scan else big
            diffs = trees.differences(scan, trees.scan(trees.restored_path(target, root)))
            assert not diffs, f"after kill #{n}, snapshot {sid[:8]}: {diffs[:10]}"
            trees_rm(target)
    assert killed >= 4, "the backup finished before most kill points: the test proves little"

    # An uninterrupted backup completes and restores.
    final = cli.backup(big)
    assert final["errors"] == 0
    target = tmp_path / "final"
    cli("restore", final["snapshot_id"], "--target", target).ok()
    assert not trees.differences(big_scan, trees.scan(trees.restored_path(target, big)))
    cli("verify", "--read-data").ok()


def trees_rm(path) -> None:
    import shutil

    shutil.rmtree(path)


def test_sigint_exits_130_and_leaves_a_clean_repository(cli, fast_repo, tmp_path):
    big = tmp_path / "big"
    _big_tree(big, 120)
    proc = cli.popen("backup", big)
    started = time.monotonic()
    while proc.poll() is None and not _packs(fast_repo) and time.monotonic() - started < 120:
        time.sleep(0.005)
    assert proc.poll() is None, "backup finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert b"interrupted" in err and b"Traceback" not in err
    assert not fast_repo.objects("snapshots")
    assert not fast_repo.objects("locks"), "the lock must be released on Ctrl-C"
    cli("verify", "--read-data").ok()
    cli("backup", big).ok()


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_no_orphans_after_sigkill(cli, fast_repo, tmp_path):
    big = tmp_path / "big"
    _big_tree(big, 100)
    proc = cli.popen("backup", big, start_new_session=True, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    try:
        started = time.monotonic()
        while proc.poll() is None and not _children(proc.pid) and time.monotonic() - started < 60:
            time.sleep(0.01)
        time.sleep(0.5)
        # Only a kill that lands while workers run can show that none outlive it.
        assert proc.poll() is None, "backup ended before it could be killed"
        assert _children(proc.pid), "backup runs no worker processes"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 10
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group_alive(proc.pid), "processes of the killed backup are still running"
    finally:
        _kill_group(proc)
