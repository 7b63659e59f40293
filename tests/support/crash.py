"""Killing real haeedge processes: start one in its own process group, kill it at a moment, reap it and
its workers, and check the repository after the kill (the crash tests of tests/lifecycle/)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable

import pytest


def crash_env(repo_path, faults: str | None = None) -> dict:
    # Two backup workers on any machine: the kills must find worker processes to orphan.
    env = {"HAEEDGE_REPOSITORY": str(repo_path), "HAEEDGE_WORKERS": "2"}
    if faults:
        env["HAEEDGE_FAULTS"] = faults
    return env


def start(cli, repo_path, args, faults):
    """Start the command in its own process group; returns (process, the time it began its work).

    Backup and prune take no lock to wait for. A backup has begun its work when its worker processes
    run (after opening the repository and loading the index, where it used to take its lock); a
    prune is timed from its start.
    """
    proc = cli.popen(*args, env=crash_env(repo_path, faults), start_new_session=True)
    if args[0] == "backup":
        deadline = time.monotonic() + 60
        while not workers_of(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.poll() is None and not workers_of(proc.pid):  # the kills below would time nothing
            proc.kill()
            _out, err = proc.communicate(timeout=60)
            pytest.fail(f"backup never started its workers: {err[-2000:]!r}")
    return proc, time.monotonic()


def timed_run(cli, repo_path, args, faults) -> float:
    """Seconds from the start to the end of an uninterrupted run."""
    proc, locked = start(cli, repo_path, args, faults)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return time.monotonic() - locked


def kill_at(cli, repo_path, args, faults, delay: float | Callable[[], bool]) -> bool:
    """SIGKILL the command ``delay`` seconds after it started, or as soon as ``delay()``
    holds; True when it was still running.

    Only the main process is killed (kill -9, the OOM killer); backup's worker
    processes must then end by themselves before anything else runs.
    """
    proc, locked = start(cli, repo_path, args, faults)
    if callable(delay):
        deadline = time.monotonic() + 120
        while proc.poll() is None and not delay() and time.monotonic() < deadline:
            time.sleep(0.001)
    while proc.poll() is None and not callable(delay) and time.monotonic() < locked + delay:
        time.sleep(0.002)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    reap(proc, 10, "worker processes outlived the killed command")
    return killed


def reap(proc, grace: float, message: str) -> None:
    """Wait for the killed command; its process group (the workers) must be gone within ``grace`` s."""
    try:
        proc.wait(timeout=60)
        deadline = time.monotonic() + grace
        while group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not group_alive(proc.pid), message
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)


def check_after_kill(cli, trees, repo_path, expected: dict, tmp, n: int) -> dict:
    """verify --read-data and byte-for-byte restores of every expected snapshot; returns the snapshot list."""
    v = cli("verify", "--read-data", env=crash_env(repo_path))
    assert v.code == 0, f"after kill #{n}:\n{v.describe()}"
    listed = {s["id"]: s for s in cli("snapshots", "--json", env=crash_env(repo_path)).ok().json()}
    for sid, (src, scan) in expected.items():
        assert sid in listed, f"after kill #{n}: snapshot {sid[:8]} was lost"
        target = tmp / f"restore-{n}-{sid[:8]}"
        r = cli("restore", sid, "--target", target, env=crash_env(repo_path))
        assert r.code == 0, f"after kill #{n}:\n{r.describe()}"
        diffs = trees.differences(scan, trees.scan(trees.restored_path(target, src)))
        assert not diffs, f"after kill #{n}, snapshot {sid[:8]}: {diffs[:10]}"
        shutil.rmtree(target)
    return listed


def workers_of(pid: int) -> list[int]:
    """Child processes of ``pid`` (the forked workers of a backup)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
