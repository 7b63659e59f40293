"""Locks: none for backup and prune (lock-free), shared for restore/verify, exclusive for forget/repair/tag;
stale takeover; unlock; refresh."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from haeedge.repo import lock as locking
from tests.support.lifecycle import files_of, random_tree


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


def test_backup_and_prune_take_no_lock_and_run_beside_each_other(cli, repo, tmp_path):
    src = random_tree(tmp_path / "src", seed=1, n_files=5, big=1)
    # The backup stalls just before its commit point, until it is killed: it holds no lock.
    proc = cli.popen("backup", src, env={"HAEEDGE_FAULTS": "put:latency=120:match=snapshots/"})
    try:
        deadline = time.monotonic() + 60
        while not files_of(repo.path / "index"):  # its packs and index are stored: it is at the commit point
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        assert _locks(repo) == []
        for args in (("prune",), ("forget", "--keep-last", "1"), ("verify",), ("backup", src)):
            cli(*args).ok()
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.communicate()
    # The killed backup left nothing that blocks anyone.
    assert _locks(repo) == []
    cli("prune").ok()
    cli("verify", "--read-data").ok()


def test_an_exclusive_lock_blocks_readers_and_exclusive_commands_but_not_backups(cli, repo, tmp_path):
    src = random_tree(tmp_path / "src", seed=2, n_files=3)
    sid = cli.backup(src)["snapshot_id"]
    # forget stalls while it lists the snapshots, holding the exclusive lock.
    proc = cli.popen("forget", "--keep-last", "5", env={"HAEEDGE_FAULTS": "list:latency=120:match=snapshots"})
    try:
        lk = _wait_for_lock(repo, proc, exclusive=True)
        assert lk.command == "forget"
        for args in (("restore", sid, "--target", tmp_path / "t"), ("verify",), ("forget", sid),
                     ("repair", "index")):
            r = cli(*args)
            assert r.code == 11, r.describe()
            assert f"exclusive lock held by {lk.user}@{lk.host} pid {proc.pid} (forget)" in _one_error_line(r)
        cli("backup", src).ok()  # lock-free
        cli("prune").ok()  # lock-free, beside forget too
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.communicate()
    r = cli("verify").ok()
    assert "removing stale exclusive lock" in r.stderr
    cli("verify", "--read-data").ok()


def test_stale_locks_are_taken_over_with_a_warning(cli, repo, tmp_path):
    src = random_tree(tmp_path / "src", seed=3, n_files=3)
    cli.backup(src)
    # Dead process on this host.
    _write_lock(repo, socket.gethostname(), _dead_pid(), time.time(), exclusive=True, command="forget")
    r = cli("verify").ok()
    assert "removing stale exclusive lock" in r.stderr, r.stderr
    # Another host's lock not refreshed for 31 minutes.
    _write_lock(repo, "elsewhere", 4242, time.time() - 31 * 60, exclusive=False, command="verify")
    r = cli("forget", "--keep-last", "3").ok()
    assert "removing stale shared lock held by someone@elsewhere pid 4242" in r.stderr, r.stderr
    # A live lock on another host is respected: 11, naming it.
    _write_lock(repo, "elsewhere", 4243, time.time(), exclusive=False, command="restore")
    r = cli("forget", "--keep-last", "3")
    assert r.code == 11 and "someone@elsewhere pid 4243 (restore)" in _one_error_line(r)
    assert "haeedge unlock" in r.stderr  # the hint
    cli("backup", src).ok()  # backups ignore locks


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
