"""Restore's data phase in forked worker processes (restorer/packs.py) against the thread path.

On a local repository a restore decodes and writes in worker processes; ``HAEEDGE_THREADS=1``
(or a network repository) keeps it in threads. Both must give the same tree, report the same
damage, and a killed restore must leave no file looking whole.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from haeedge.archiver import Archiver, BackupOptions
from haeedge.backends.base import data_name
from haeedge.repo.repository import hex_id
from haeedge.restorer import RestoreOptions, Restorer
from tests.integration.test_restore_existing import _file_rels, _whole, build_tree, init_storage, restore
from tests.support.crash import reap
from tests.support.trees import assert_same_tree, restored_path


@pytest.fixture
def lib_repo(tmp_path, trees):
    return trees.init_library_repo(tmp_path / "repo", chunker=trees.SMALL_CHUNKS)


def _backup(handle, src):
    with handle.open() as repo:
        res = Archiver(repo, BackupOptions(paths=[str(src)])).run()
    assert not res.partial, res.warnings
    return res.snapshot


def _restore(handle, snap_id, target) -> Restorer:
    with handle.open() as repo:
        r = Restorer(repo, RestoreOptions(target=str(target)))
        r.run(repo.load_snapshot(snap_id))
    return r


def _two_workers_as(monkeypatch, mode: str) -> None:
    """Two workers, run as processes or (HAEEDGE_THREADS=1) as threads."""
    monkeypatch.setenv("HAEEDGE_WORKERS", "2")
    if mode == "threads":
        monkeypatch.setenv("HAEEDGE_THREADS", "1")
    else:
        monkeypatch.delenv("HAEEDGE_THREADS", raising=False)


@pytest.mark.parametrize("mode", ["processes", "threads"])
def test_both_paths_restore_the_same_tree(lib_repo, trees, tmp_path, monkeypatch, mode):
    """Bytes, modes, times, holes, hardlinks and long paths, through either path."""
    src = tmp_path / "src"
    info = trees.make_edge_tree(src, devices=False, deep_total=2000, sparse_mib=16)
    snap = _backup(lib_repo, src)
    _two_workers_as(monkeypatch, mode)
    target = tmp_path / "t"
    r = _restore(lib_repo, snap.id, target)
    assert not r.result.damaged and not r.result.skipped, r.result.warnings
    if mode == "processes":
        assert r.processes == 2
        assert r.worker_pids and os.getpid() not in r.worker_pids, "the data was not written by workers"
        assert r.result.bytes_read_by_workers > 0
    else:
        assert r.processes == 0 and r.worker_pids == {os.getpid()}
        assert r.result.bytes_read_by_workers == 0
    trees.assert_same(src, trees.restored_path(target, src))
    trees.assert_sparse(src, trees.restored_path(target, src), info["sparse"])


def test_the_worker_count_is_honoured(lib_repo, tmp_path, monkeypatch):
    src = tmp_path / "src"
    build_tree(src, files=96, size=60_000)
    snap = _backup(lib_repo, src)
    monkeypatch.delenv("HAEEDGE_THREADS", raising=False)
    monkeypatch.setenv("HAEEDGE_WORKERS", "3")
    r = _restore(lib_repo, snap.id, tmp_path / "t")
    assert r.processes == 3
    assert 1 <= len(r.worker_pids) <= 3 and os.getpid() not in r.worker_pids
    monkeypatch.setenv("HAEEDGE_WORKERS", "1")  # one worker: not worth a process
    r = _restore(lib_repo, snap.id, tmp_path / "t1")
    assert r.processes == 0 and r.worker_pids == {os.getpid()}
    assert_same_tree(src, restored_path(tmp_path / "t1", src))


@pytest.mark.parametrize("mode", ["processes", "threads"])
def test_a_damaged_blob_is_reported_and_the_rest_restored(lib_repo, tmp_path, monkeypatch, mode):
    src = tmp_path / "src"
    build_tree(src, files=40, size=60_000)
    snap = _backup(lib_repo, src)
    victim = "d1/f005.bin"
    with lib_repo.open() as repo:
        entry = next(e for e in repo.iter_entries(snap) if e.path.endswith(victim.encode()))
        bad = hex_id(entry.chunks[-1][0])
        loc = repo.lookup_blob(bad)
        assert loc is not None
    pack = lib_repo.path / data_name(loc.pack_id)
    with open(pack, "r+b") as f:  # one flipped byte inside the blob's ciphertext: MDC and keyed id fail
        f.seek(loc.offset + loc.length // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x40]))
    _two_workers_as(monkeypatch, mode)
    target = tmp_path / "t"
    r = _restore(lib_repo, snap.id, target)
    assert (r.processes > 0) == (mode == "processes")
    dst = restored_path(target, src)
    assert [p for p in r.result.damaged] == [str(src / victim).lstrip("/")], r.result.warnings
    # The cause the worker found is reported, not only that the file was left incomplete.
    assert any(victim in w and "damaged" in w and bad.hex()[:16] in w for w in r.result.warnings), r.result.warnings
    # The damaged file does not look whole (its mtime was never set); every other file is intact.
    assert os.lstat(dst / victim).st_mtime_ns != os.lstat(src / victim).st_mtime_ns
    assert_same_tree(src, dst, ignore={victim.encode()})


def test_a_killed_restore_in_worker_processes_leaves_no_file_looking_whole(cli, tmp_path, request):
    """SIGKILL to the restore's main process: its workers die with it, and a file whose size and
    mtime are the snapshot's holds the snapshot's bytes (a resumed restore trusts exactly that)."""
    env = init_storage("local", cli, tmp_path, request)
    src = tmp_path / "src"
    build_tree(src, files=1200, size=30_000)  # about 36 MiB in 1 MiB packs, 1,200 files of one chunk or two
    cli("backup", src, env=env).ok()
    rels = _file_rels(src)
    target = tmp_path / "target"
    dst = restored_path(target, src)
    proc = cli.popen("restore", "latest", "--target", target, env={**env, "HAEEDGE_WORKERS": "2"},
                     start_new_session=True)
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(_whole(src, dst, rels)) >= len(rels) // 10:
                break
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
    reap(proc, 10, "restore workers outlived the killed restore")
    assert proc.returncode == -signal.SIGKILL, "the restore finished before it could be killed"
    whole = _whole(src, dst, rels)
    assert len(whole) < len(rels), "not mid-way"
    for rel in whole:
        assert (dst / rel).read_bytes() == (src / rel).read_bytes(), f"{rel} looks whole but is not"
    again = restore(cli, env, target, "--overwrite", "if-changed")
    assert again["unchanged"] >= len(whole)
    assert_same_tree(src, dst)
