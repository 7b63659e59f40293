"""Locks: shared for backup/restore/verify, exclusive for prune/forget/repair; stale takeover; unlock; refresh."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

from haeedge.repo import lock as locking

from .helpers import files_of, random_tree


@pytest.fixture
def repo(cli, trees):
    return trees.init_library_repo(cli.repo_path, chunker=trees.SMALL_CHUNKS)


def _write_lock(handle, host: str, pid: int, t: float, exclusive: bool, command: str = "backup",
                user: str = "someone") -> str:
    with handle.open(load_index=False) as repo:
        doc = {"haeedge_lock": 1, "host": host, "pid": pid, "user": user, "time": t, "exclusive": exclusive,
               "command": command}
        return repo.put_object("locks", repo.seal("meta", json.dumps(doc).encode()))


def _locks(handle) -> list[locking.LockInfo]:
    with handle.open(load_index=False) as repo:
        return repo.list_locks()


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _wait_for_lock(handle, proc, exclusive: bool, timeout: float = 30) -> locking.LockInfo:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"process ended early: {proc.communicate()}"
        for lk in _locks(handle):
            if lk.pid == proc.pid and lk.exclusive == exclusive:
                return lk
        time.sleep(0.05)
    raise AssertionError("no lock appeared")


def _one_error_line(r) -> str:
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("haeedge: error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.describe()
    return errors[0]


def test_backup_holds_a_shared_lock_that_names_its_holder(cli, repo, tmp_path):
    src = random_tree(tmp_path / "src", seed=1, n_files=5, big=1)
    # The backup stalls just before its commit point, holding its lock, until it is killed.
    proc = cli.popen("backup", src, env={"HAEEDGE_FAULTS": "put:latency=120:match=snapshots/"})
    try:
        lk = _wait_for_lock(repo, proc, exclusive=False)
        assert (lk.host, lk.pid, lk.command, lk.exclusive) == (socket.gethostname(), proc.pid, "backup", False)
        assert lk.user and abs(lk.time - time.time()) < 60
        for args in (("prune",), ("forget", "--keep-last", "1"), ("repair", "index"), ("repair", "snapshots")):
            r = cli(*args)
            assert r.code == 11, r.describe()
            line = _one_error_line(r)
            assert f"shared lock held by {lk.user}@{lk.host} pid {proc.pid} (backup)" in line, line
        assert cli("verify").code == 0  # shared locks coexist
        assert cli("backup", src).code == 0
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.communicate()
    # Its lock is now stale (the process is gone): exclusive commands take it over.
    r = cli("prune").ok()
    assert "removing stale shared lock" in r.stderr
    assert _locks(repo) == []


def test_an_exclusive_lock_blocks_everything_else(cli, repo, tmp_path):
    src = random_tree(tmp_path / "src", seed=2, n_files=3)
    sid = cli.backup(src)["snapshot_id"]
    # prune stalls while it lists the snapshots, holding the exclusive lock.
    proc = cli.popen("prune", env={"HAEEDGE_FAULTS": "list:latency=120:match=snapshots"})
    try:
        lk = _wait_for_lock(repo, proc, exclusive=True)
        assert lk.command == "prune"
        for args in (("backup", src), ("restore", sid, "--target", tmp_path / "t"), ("verify",), ("prune",),
                     ("forget", sid)):
            r = cli(*args)
            assert r.code == 11, r.describe()
            assert f"exclusive lock held by {lk.user}@{lk.host} pid {proc.pid} (prune)" in _one_error_line(r)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.communicate()
    r = cli("backup", src).ok()
    assert "removing stale exclusive lock" in r.stderr
    cli("verify", "--read-data").ok()


def test_stale_locks_are_taken_over_with_a_warning(cli, repo, tmp_path):
    src = random_tree(tmp_path / "src", seed=3, n_files=3)
    # Dead process on this host.
    _write_lock(repo, socket.gethostname(), _dead_pid(), time.time(), exclusive=True, command="prune")
    r = cli("backup", src).ok()
    assert "removing stale exclusive lock" in r.stderr, r.stderr
    # Another host's lock not refreshed for 31 minutes.
    _write_lock(repo, "elsewhere", 4242, time.time() - 31 * 60, exclusive=False)
    r = cli("prune").ok()
    assert "removing stale shared lock held by someone@elsewhere pid 4242" in r.stderr, r.stderr
    # A live lock on another host is respected: 11, naming it.
    _write_lock(repo, "elsewhere", 4243, time.time(), exclusive=False, command="backup")
    r = cli("prune")
    assert r.code == 11 and "someone@elsewhere pid 4243 (backup)" in _one_error_line(r)
    assert "haeedge unlock" in r.stderr  # the hint


def test_unlock_removes_stale_locks_and_remove_all_removes_the_rest(cli, repo):
    _write_lock(repo, socket.gethostname(), _dead_pid(), time.time(), exclusive=False)
    _write_lock(repo, "elsewhere", 1, time.time() - 3600, exclusive=True)
    fresh = _write_lock(repo, "elsewhere", 2, time.time(), exclusive=True)
    assert cli("--json", "unlock").ok().json() == {"removed": 2}
    assert [lk.name for lk in _locks(repo)] == [fresh]
    assert cli("--json", "unlock", "--remove-all").ok().json() == {"removed": 1}
    assert _locks(repo) == []


def test_a_held_lock_is_refreshed(repo, monkeypatch):
    monkeypatch.setattr(locking, "REFRESH_EVERY", 0.3)
    with repo.open(load_index=False) as r, r.lock(exclusive=True, command="test") as held:
        first = held.name
        (t0,) = [lk.time for lk in _locks(repo)]
        deadline = time.monotonic() + 20
        while (repo.path / "locks" / first).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not (repo.path / "locks" / first).exists(), "the lock was never refreshed"
        assert held.name != first
        current = {lk.name: lk for lk in _locks(repo)}
        assert first not in current and (held.name in current or len(current) == 1)
        assert all(lk.time > t0 and lk.exclusive and lk.command == "test" for lk in current.values())
    assert _locks(repo) == []


def test_prune_stops_before_deleting_when_the_lock_is_no_longer_its_own(cli, repo, trees, tmp_path):
    src = random_tree(tmp_path / "src", seed=4, n_files=5, big=2)
    first = cli.backup(src)["snapshot_id"]
    (src / "big" / "b00.bin").unlink()
    cli.backup(src)
    cli("forget", "--rebase", first).ok()
    packs_before = set(files_of(repo.path / "data"))
    index_before = set(files_of(repo.path / "index"))
    # Listing locks is slow: the final check before deleting takes seconds, a window to interfere in.
    proc = cli.popen("prune", env={"HAEEDGE_FAULTS": "list:latency=3:match=locks"})
    deadline = time.monotonic() + 60
    while set(files_of(repo.path / "index")) <= index_before:  # the new index: prune is at its last check
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    # Someone removed our lock (e.g. 'unlock --remove-all' elsewhere) and took the repository.
    for lk in os.listdir(repo.path / "locks"):
        os.unlink(repo.path / "locks" / lk)
    _write_lock(repo, "elsewhere", 7, time.time(), exclusive=True, command="prune")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 11, err
    assert b"stopped before deleting anything" in err
    assert packs_before <= set(files_of(repo.path / "data"))
    cli("unlock", "--remove-all").ok()
    cli("verify", "--read-data").ok()
    assert cli("--json", "prune").ok().json()["packs_deleted"] >= 1
    cli("verify", "--read-data").ok()
