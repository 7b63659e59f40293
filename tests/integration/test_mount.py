"""``haeedge mount`` for real: the CLI in a background process, the kernel's FUSE, a built tree
compared byte for byte and by lstat with what the mount shows (full and incremental snapshots),
a random read that fetches only its chunks, EROFS on writes, and SIGTERM unmounting."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.repos import SMALL_CHUNKS, init_library_repo
from tests.support.trees import scan_tree, tree_differences

needs_fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse on this machine")

BIG = 6 * 1024 * 1024 + 4321
CHUNK_OPTIONS = ("--chunk-min", str(SMALL_CHUNKS.min_size), "--chunk-avg", str(SMALL_CHUNKS.avg_size),
                 "--chunk-max", str(SMALL_CHUNKS.max_size))


def build_tree(root: Path) -> None:
    """Regular files (one of several MiB), symlinks, hardlinks, an empty dir, odd modes and owners."""
    rng = random.Random(14)
    (root / "dir" / "deeper").mkdir(parents=True)
    (root / "empty_dir").mkdir()
    (root / "big.bin").write_bytes(rng.randbytes(BIG))
    (root / "empty").write_bytes(b"")
    (root / "dir" / "small.txt").write_bytes(b"hello\n")
    (root / "dir" / "deeper" / "text").write_bytes(b"".join(b"line %d\n" % i for i in range(20000)))
    (root / "naïve name ✓").write_bytes(b"unicode\n")
    os.link(root / "dir" / "small.txt", root / "hardlink")
    os.symlink("dir/small.txt", root / "relative_link")
    os.symlink("/etc/hostname", root / "absolute_link")
    os.symlink("does/not/exist", root / "dangling")
    for name, mode in (("setuid", 0o4755), ("none", 0o000), ("private", 0o600), ("readonly", 0o444)):
        (root / name).write_bytes(name.encode() * 3)
        os.chmod(root / name, mode)
    (root / "sticky").mkdir()
    os.chmod(root / "sticky", 0o1777)
    (root / "owned").write_bytes(b"1234:5678\n")
    os.chown(root / "owned", 1234, 5678)
    os.mkfifo(root / "fifo")
    os.utime(root / "big.bin", ns=(1_500_000_000_000_000_001, 1_500_000_000_987_654_321))


def change_tree(root: Path) -> None:
    with open(root / "big.bin", "r+b") as f:  # a few bytes in the middle of the big file
        f.seek(BIG // 2)
        f.write(b"changed in the middle")
    (root / "dir" / "small.txt").write_bytes(b"changed through a hardlink\n")
    (root / "empty").unlink()
    (root / "dangling").unlink()
    (root / "added").write_bytes(b"new in the incremental\n")
    os.chmod(root / "private", 0o640)


class Mounted:
    """``haeedge --json mount`` running in the background until ``stop``."""

    def __init__(self, cli, mountpoint: Path, env: dict | None = None, *args: str):
        self.mountpoint = mountpoint
        mountpoint.mkdir(exist_ok=True)
        self.proc = cli.popen("--json", "mount", mountpoint, *args, env=env)
        deadline = time.monotonic() + 120
        while not os.path.ismount(mountpoint):
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                pytest.fail(f"mount exited with {self.proc.returncode}: {err.decode(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail("not mounted after 120 s")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, dict, str]:
        """Send ``sig``; the exit code, the JSON summary and stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=60)
        finally:
            if os.path.ismount(self.mountpoint):  # never leave a mount behind, whatever failed
                subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=False)
        lines = [ln for ln in out.decode().splitlines() if ln.strip()]
        summary = json.loads(lines[-1]) if lines else {}
        return self.proc.returncode, summary, err.decode(errors="replace")

    def __enter__(self) -> Mounted:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.stop()


def snapshot_dirs(mountpoint: Path) -> list[Path]:
    """Oldest first. Names carry whole seconds only, so two snapshots of one second are ordered by
    their directories' mtimes (the snapshot times, to the microsecond), not by name."""
    return sorted((mountpoint / "snapshots").iterdir(), key=lambda p: p.stat().st_mtime_ns)


def in_mount(snapshot_dir: Path, src: Path) -> Path:
    return snapshot_dir / os.path.abspath(src).lstrip("/")


def assert_same(expected: dict, mounted: Path) -> None:
    diffs = tree_differences(expected, scan_tree(mounted))
    assert not diffs, f"{len(diffs)} differences:\n" + "\n".join(diffs[:40])


@pytest.fixture
def chain(cli, tmp_path):
    """A full and an incremental snapshot of a built tree; the scans of the tree at each."""
    init_library_repo(cli.repo_path, chunker=SMALL_CHUNKS)
    src = tmp_path / "src"
    src.mkdir()
    build_tree(src)
    first = scan_tree(src)
    assert cli.backup(src)["kind"] == "full"
    change_tree(src)
    second = scan_tree(src)
    assert cli.backup(src)["kind"] == "incremental"
    return src, first, second


@needs_fuse
@pytest.mark.slow
def test_mounted_snapshots_match_the_source_and_sigterm_unmounts(cli, tmp_path, chain):
    src, first, second = chain
    mnt = tmp_path / "mnt"
    with Mounted(cli, mnt) as m:
        full, incremental = snapshot_dirs(mnt)
        assert sorted(p.name for p in mnt.iterdir()) == ["hosts", "latest", "snapshots", "tags"]
        assert os.readlink(mnt / "latest") == f"snapshots/{incremental.name}"
        # Every file of both snapshots, byte for byte, with mode, owner, mtime, link targets, nlink
        # and hardlinks sharing one inode; the incremental shows its whole effective tree.
        assert_same(first, in_mount(full, src))
        assert_same(second, in_mount(incremental, src))
        assert_same(second, in_mount(mnt / "latest", src))
        hosts = list((mnt / "hosts").iterdir())
        assert len(hosts) == 1 and os.readlink(hosts[0] / "latest") == incremental.name
        assert_same(second, in_mount(hosts[0] / incremental.name, src))
        mounted_big = in_mount(incremental, src) / "big.bin"
        assert os.stat(in_mount(incremental, src) / "hardlink").st_ino == os.stat(
            in_mount(incremental, src) / "dir" / "small.txt").st_ino

        # Read-only: every kind of write fails with EROFS and changes nothing.
        writes = [
            lambda: open(mounted_big, "r+b"),  # noqa: SIM115 - must fail
            lambda: open(in_mount(incremental, src) / "new", "wb"),  # noqa: SIM115 - must fail
            lambda: os.mkdir(in_mount(incremental, src) / "newdir"),
            lambda: os.unlink(mounted_big),
            lambda: os.rename(mounted_big, in_mount(incremental, src) / "moved"),
            lambda: os.chmod(mounted_big, 0o777),
            lambda: os.symlink("x", in_mount(incremental, src) / "newlink"),
            lambda: os.mkdir(mnt / "snapshots" / "mine"),
            lambda: os.truncate(mounted_big, 0),
        ]
        for write in writes:
            with pytest.raises(OSError) as e:
                write()
            assert e.value.errno == errno.EROFS, e.value
        assert mounted_big.stat().st_size == BIG

        code, summary, err = m.stop(signal.SIGTERM)
    assert code == 0, err
    assert not os.path.ismount(mnt), "SIGTERM left the file system mounted"
    assert "Traceback" not in err
    assert summary["message_type"] == "summary" and summary["snapshots"] == 2
    assert summary["blobs_fetched"] > 0
    assert os.listdir(mnt) == []


@needs_fuse
def test_random_read_fetches_only_the_chunks_it_needs(cli, tmp_path, chain, trees):
    src, first, _second = chain
    with cli.repo_handle().open() as repo:
        entry = next(e for e in repo.iter_entries(repo.list_snapshots()[0])
                     if e.path.endswith(b"/big.bin"))
    chunks = entry.chunks
    assert len(chunks) > 100, "the big file should have many chunks"
    original = random.Random(14).randbytes(BIG)  # as build_tree made it, before the change
    mnt = tmp_path / "mnt"
    with Mounted(cli, mnt) as m:
        path = in_mount(snapshot_dirs(mnt)[0], src) / "big.bin"
        offset = BIG // 3 + 12345
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no kernel read-ahead
            assert os.pread(fd, 1000, offset) == original[offset:offset + 1000]
        finally:
            os.close(fd)
        code, summary, err = m.stop(signal.SIGINT)  # Ctrl-C ends it cleanly too
    assert code == 0, err
    assert not os.path.ismount(mnt)
    # The kernel asks for whole pages: at most two chunks cover them, of hundreds.
    assert 1 <= summary["blobs_fetched"] <= 2, summary
    assert summary["bytes_fetched"] <= 2 * SMALL_CHUNKS.max_size, summary


def test_mountpoint_errors_are_one_line_with_exit_2(cli, tmp_path):
    init_library_repo(cli.repo_path)
    r = cli("mount", tmp_path / "missing").expect(2)
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "file").write_bytes(b"")
    r = cli("mount", tmp_path / "file").expect(2)
    assert "not a directory" in r.stderr and "Traceback" not in r.stderr
    r = cli("mount", tmp_path, "--cache-size", "lots").expect(2)
    assert "not a size" in r.stderr


def test_missing_fuse_library_is_one_line_with_exit_1(cli, tmp_path):
    init_library_repo(cli.repo_path)
    (tmp_path / "mnt").mkdir()
    r = cli("mount", tmp_path / "mnt", env={"FUSE_LIBRARY_PATH": str(tmp_path / "no-libfuse.so.3")}).expect(1)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("haeedge: error:")]
    assert len(lines) == 1 and "FUSE" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not os.path.ismount(tmp_path / "mnt")


@needs_fuse
@pytest.mark.slow
def test_mount_of_an_s3_repository(cli, tmp_path, s3):
    env = {**s3.env, "HAEEDGE_REPOSITORY": s3.url_for(f"mount-{os.getpid()}-{time.monotonic_ns()}")}
    cli("init", *CHUNK_OPTIONS, env=env).ok()
    src = tmp_path / "src"
    src.mkdir()
    build_tree(src)
    expected = scan_tree(src)
    r = cli("--json", "backup", src, env=env).ok()
    assert json.loads(r.stdout.splitlines()[-1])["kind"] == "full"
    mnt = tmp_path / "mnt"
    with Mounted(cli, mnt, env) as m:
        (snap,) = snapshot_dirs(mnt)
        assert_same(expected, in_mount(snap, src))
        code, summary, err = m.stop()
    assert code == 0, err
    assert not os.path.ismount(mnt)
    assert summary["bytes_fetched"] >= BIG


@pytest.fixture(autouse=True)
def _no_mount_left_behind(tmp_path):
    yield
    mnt = tmp_path / "mnt"
    with contextlib.suppress(OSError):
        if os.path.ismount(mnt) and shutil.which("fusermount3"):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
