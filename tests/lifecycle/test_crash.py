"""Crash safety: SIGKILL a real ``haeedge backup`` and a real ``haeedge prune`` at 20 random points each.

After every kill: ``verify --read-data`` passes, every snapshot listed before
the kill restores byte for byte, and the next run of the same command
completes. Each kill runs on its own copy of a prepared repository (two at a
time), so the kill points are independent. Only the main process is
killed; backup's worker processes must end by themselves. Backend latency (HAEEDGE_FAULTS)
stretches the writing part of each run over a second or two, and the kill
time is drawn uniformly over that part of a measured uninterrupted run
(counted from the moment backup's workers run, after it opened the
repository and read the index, and from the start of prune: neither takes a
lock any more, so there is no lock to wait for), so kills land
before, between and after every kind of write. Which phase each kill hit is recorded and
must cover the interesting ones.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.crash import check_after_kill, crash_env, kill_at, reap, timed_run, workers_of
from tests.support.lifecycle import MiB, copy_repo, files_of, random_tree, write_files

KILLS = 20
PARALLEL = 2


@pytest.mark.slow
def test_sigkill_backup_at_20_random_points(cli, trees, tmp_path):
    handle = trees.init_library_repo(tmp_path / "baseline", chunker=trees.SMALL_CHUNKS, pack_size=1 << 20)
    base = random_tree(tmp_path / "base", seed=1, n_files=30)
    r = cli("--json", "backup", base, env=crash_env(handle.path)).ok()
    first = trees.summary_of(r.stdout)["snapshot_id"]
    expected = {first: (base, trees.scan(base))}
    big = random_tree(tmp_path / "big", seed=2, n_files=100, max_size=40_000, big=6)
    big_scan = trees.scan(big)
    faults = "put:latency=0.12"
    measure = copy_repo(handle.path, tmp_path / "measure")
    duration = timed_run(cli, measure, ("backup", big), faults)
    shutil.rmtree(measure)
    baseline_files = files_of(handle.path)
    rng = random.Random(20261122)
    # Random delays over the whole run, plus two kills timed to land just around the commit point.
    delays = [rng.uniform(0.0, duration * 1.05) for _ in range(KILLS - 2)] + [duration * 0.97, duration * 0.99]

    def one(n: int) -> str:
        repo_path = copy_repo(handle.path, tmp_path / f"repo{n}")
        killed = kill_at(cli, repo_path, ("backup", big), faults, delays[n])
        new = {k: v for k, v in files_of(repo_path).items() if k not in baseline_files}
        phase = ("not killed" if not killed else
                 "after the snapshot" if any(k.startswith("snapshots/") for k in new) else
                 "after the index" if any(k.startswith("index/") for k in new) else
                 "during pack uploads" if any(k.startswith("data/") for k in new) else "before any pack")
        listed = check_after_kill(cli, trees, repo_path, expected, tmp_path, n)
        mine = {sid: (big, big_scan) for sid in listed if sid != first}
        assert len(mine) <= 1
        if mine:  # a snapshot that made it is complete
            check_after_kill(cli, trees, repo_path, mine, tmp_path, n)
        # The next run completes (and reuses or ignores what the killed one left).
        r = cli("--json", "backup", big, env=crash_env(repo_path)).ok()
        sid = trees.summary_of(r.stdout)["snapshot_id"]
        if n % 4 == 0:
            check_after_kill(cli, trees, repo_path, {sid: (big, big_scan)}, tmp_path, n)
        else:
            cli("verify", env=crash_env(repo_path)).ok()
        shutil.rmtree(repo_path)
        return phase

    with ThreadPoolExecutor(PARALLEL) as pool:
        phases = Counter(pool.map(one, range(KILLS)))
    print(f"\nbackup kill points: {dict(phases)} (uninterrupted run {duration:.2f}s)")
    assert sum(phases.values()) == KILLS
    assert phases["not killed"] <= 4
    assert phases["during pack uploads"] >= 5 and len(phases) >= 3, phases


@pytest.mark.slow
def test_sigkill_prune_at_20_random_points(cli, trees, tmp_path):
    handle = trees.init_library_repo(tmp_path / "baseline", chunker=trees.SMALL_CHUNKS, pack_size=1 << 20)
    env = crash_env(handle.path)
    src = random_tree(tmp_path / "src", seed=3, n_files=120, max_size=40_000, big=5)
    first = trees.summary_of(cli("--json", "backup", src, env=env).ok().stdout)["snapshot_id"]
    for name in ("b00.bin", "b02.bin", "b04.bin"):
        (src / "big" / name).unlink()
    for i in range(0, 120, 3):
        (src / f"d{i % 4}" / f"f{i:03d}.bin").unlink()
    write_files(src, {"later.txt": b"later\n"})
    second = trees.summary_of(cli("--json", "backup", src, env=env).ok().stdout)["snapshot_id"]
    second_scan = trees.scan(src)
    write_files(src, {"third.txt": b"third\n", "big/b01.bin": random.Random(9).randbytes(MiB)})
    third = trees.summary_of(cli("--json", "backup", src, env=env).ok().stdout)["snapshot_id"]
    third_scan = trees.scan(src)
    rewritten = cli("--json", "forget", "--rebase", first, env=env).ok().json()["rewritten"]
    # Leftovers of an interrupted backup, for prune to delete too.
    junk = random_tree(tmp_path / "junk", seed=4, n_files=5, big=2)
    assert cli("backup", junk, env=crash_env(handle.path, "put:match=index/:permanent")).code == 1
    expected = {rewritten.get(second, second): (src, second_scan), rewritten.get(third, third): (src, third_scan)}
    # second_scan was taken before the third backup changed src: restore compares against it.
    plan = cli("--json", "prune", "--dry-run", env=env).ok().json()
    assert plan["packs_deleted"] >= 5 and plan["packs_repacked"] >= 1 and plan["unindexed_deleted"] >= 2

    faults = "put|delete:latency=0.03"
    measure = copy_repo(handle.path, tmp_path / "measure")
    duration = timed_run(cli, measure, ("prune",), faults)
    shutil.rmtree(measure)
    baseline_files = files_of(handle.path)
    rng = random.Random(1122)
    # Most kills at random times; deleting takes most of a run (every delete waits 30 ms), so
    # two kills are aimed at the short phases: right after the first new pack is stored, and
    # right after the new index object is.
    # (Over 95% of the measured run: the measure ran alone, the kills run two at a time beside other
    # tests, so a run may well end sooner than measured and a kill aimed at its very end miss it.)
    delays: list = [rng.uniform(0.0, duration * 0.95) for _ in range(KILLS - 2)]
    delays += ["data/", "index/"]

    def one(n: int) -> str:
        repo_path = copy_repo(handle.path, tmp_path / f"repo{n}")
        delay = delays[n]
        if isinstance(delay, str):
            def delay(prefix=delay, repo_path=repo_path) -> bool:
                return any(k.startswith(prefix) and k not in baseline_files for k in files_of(repo_path))
        killed = kill_at(cli, repo_path, ("prune",), faults, delay)
        now = files_of(repo_path)
        new_index = any(k.startswith("index/") and k not in baseline_files for k in now)
        new_packs = any(k.startswith("data/") and k not in baseline_files for k in now)
        deleted = [k for k in baseline_files if k.startswith(("data/", "index/")) and k not in now]
        phase = ("not killed" if not killed else
                 "deleting" if deleted else
                 "index written" if new_index else
                 "repacking" if new_packs else "planning")
        check_after_kill(cli, trees, repo_path, expected, tmp_path, n)
        r = cli("--json", "prune", env=crash_env(repo_path)).ok()
        assert "Traceback" not in r.stderr
        v = cli("-v", "verify", env=crash_env(repo_path)).ok()
        assert "not in any index" not in v.stdout  # the finishing run left nothing behind
        assert len(os.listdir(repo_path / "index")) == 1
        if n % 4 == 0:
            check_after_kill(cli, trees, repo_path, expected, tmp_path, n)
        shutil.rmtree(repo_path)
        return phase

    with ThreadPoolExecutor(PARALLEL) as pool:
        phases = Counter(pool.map(one, range(KILLS)))
    print(f"\nprune kill points: {dict(phases)} (uninterrupted run {duration:.2f}s)")
    assert phases["not killed"] <= 4
    assert len(phases) >= 3 and phases["deleting"] + phases["index written"] >= 2, phases



def test_killing_backup_leaves_no_orphan_workers(cli, trees, tmp_path):
    """kill -9 of backup's main process: its forked workers notice and end too."""
    handle = trees.init_library_repo(cli.repo_path, chunker=trees.SMALL_CHUNKS, pack_size=1 << 20)
    big = random_tree(tmp_path / "big", seed=2, n_files=20, big=4)
    proc = cli.popen("backup", big, env={"HAEEDGE_FAULTS": "put:latency=0.5"}, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not workers_of(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)
        # The kill must land while the backup runs its workers, or it proves nothing.
        assert proc.poll() is None, "backup ended before it could be killed"
        assert workers_of(proc.pid), "backup runs no worker processes to orphan"
        assert not list((handle.path / "locks").iterdir()), "backup took a lock"
        proc.send_signal(signal.SIGKILL)  # the main process only, as the OOM killer or kill -9 does
    finally:
        reap(proc, 5, "worker processes outlived their killed parent")


@pytest.mark.slow
def test_sigkill_two_phase_prune_at_random_points(cli, trees, tmp_path):
    """The lock-free prune's second phase (repo/marks.py), killed at 8 random points: after each kill
    the repository verifies, every snapshot restores, and the next prune finishes the deletions and
    removes the ripe marks (nothing a killed prune leaves blocks it)."""
    handle = trees.init_library_repo(tmp_path / "baseline", chunker=trees.SMALL_CHUNKS, pack_size=1 << 20)
    env = {**crash_env(handle.path), "HAEEDGE_MAX_CLOCK_SKEW": "0s"}
    src = random_tree(tmp_path / "src", seed=13, n_files=60, max_size=40_000, big=3)
    first = trees.summary_of(cli("--json", "backup", src, env=env).ok().stdout)["snapshot_id"]
    for name in ("b00.bin", "b02.bin"):
        (src / "big" / name).unlink()
    for i in range(0, 60, 3):
        (src / f"d{i % 4}" / f"f{i:03d}.bin").unlink()
    cli("backup", src, env=env).ok()
    expected_scan = trees.scan(src)
    cli("forget", "--rebase", first, env=env).ok()
    time.sleep(1.2)  # older than the grace period: markable
    marked = cli("--json", "prune", "--grace", "1s", env=env).ok().json()
    assert marked["packs_marked"] >= 3 and marked["packs_deleted"] == 0, marked
    time.sleep(1.2)  # the mark is ripe: the next prune deletes
    listed = {s["id"] for s in cli("--json", "snapshots", env=env).ok().json()}
    (kept,) = listed
    expected = {kept: (src, expected_scan)}
    faults = "put|delete:latency=0.03"
    args = ("prune", "--grace", "1s")
    measure = copy_repo(handle.path, tmp_path / "measure")
    duration = timed_run(cli, measure, args, faults)
    shutil.rmtree(measure)
    baseline_files = files_of(handle.path)
    rng = random.Random(1206)
    delays: list = [rng.uniform(0.0, duration * 1.05) for _ in range(6)] + ["index/", "data/"]

    def one(n: int) -> str:
        repo_path = copy_repo(handle.path, tmp_path / f"repo{n}")
        delay = delays[n]
        if isinstance(delay, str):
            prefix = delay

            def delay(prefix=prefix, repo_path=repo_path) -> bool:
                now = files_of(repo_path)
                if prefix == "index/":  # the new index is stored
                    return any(k.startswith(prefix) and k not in baseline_files for k in now)
                return any(k.startswith(prefix) and k not in now for k in baseline_files)  # a pack deleted
        killed = kill_at(cli, repo_path, args, faults, delay)
        now = files_of(repo_path)
        deleted = [k for k in baseline_files if k.startswith("data/") and k not in now]
        marks_gone = not [k for k in baseline_files if k.startswith("marks/") and k in now]
        new_index = any(k.startswith("index/") and k not in baseline_files for k in now)
        phase = ("not killed" if not killed else "marks deleted" if marks_gone else
                 "deleting" if deleted else "index written" if new_index else "planning")
        check_after_kill(cli, trees, repo_path, expected, tmp_path, n)
        r = cli("--json", "prune", "--grace", "1s", env={**crash_env(repo_path), "HAEEDGE_MAX_CLOCK_SKEW": "0s"}).ok()
        assert "Traceback" not in r.stderr
        after = files_of(repo_path)
        assert not [k for k in baseline_files if k.startswith("marks/") and k in after], "a ripe mark was left"
        assert [k for k in baseline_files if k.startswith("data/") and k not in after], "nothing was deleted"
        cli("verify", "--read-data", env=crash_env(repo_path)).ok()
        shutil.rmtree(repo_path)
        return phase

    with ThreadPoolExecutor(PARALLEL) as pool:
        phases = Counter(pool.map(one, range(len(delays))))
    print(f"\ntwo-phase prune kill points: {dict(phases)} (uninterrupted run {duration:.2f}s)")
    assert phases["not killed"] <= 3
    assert phases["deleting"] + phases["index written"] >= 2, phases
