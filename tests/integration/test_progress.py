"""Progress and summary: a bar only on a terminal, a one-screen summary always (unless -q)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios

BAR_CHARS = re.compile("[\r\u2588\u258f\u258e\u258d\u258c\u258b\u258a\u2589]|it/s|B/s")


def _tree(root):
    root.mkdir()
    for i in range(30):
        (root / f"f{i}").write_bytes(os.urandom(200_000))
    (root / "big").write_bytes(os.urandom(40 << 20))
    return root


def test_no_progress_bar_when_stderr_is_not_a_terminal(cli, fast_repo, tmp_path):
    src = _tree(tmp_path / "src")
    r = cli("backup", src).ok()
    assert not BAR_CHARS.search(r.stderr), repr(r.stderr[:500])
    assert r.stderr == ""
    # The summary: files new/changed/unchanged, bytes read and added, duration.
    out = r.stdout
    assert re.search(r"^snapshot [0-9a-f]{8} saved \(full\)$", out, re.M), out
    assert re.search(r"^Files:\s+31 new, 0 changed, 0 unchanged, 0 removed$", out, re.M), out
    assert re.search(r"^Read:\s+\d+\.\d MiB of \d+\.\d MiB", out, re.M), out
    assert re.search(r"^Added:\s+[\d.]+ MiB stored \(\d+ data blobs, \d+ tree blobs\) after dedup and compression$",
                     out, re.M), out
    assert re.search(r"^Time:\s+\d+\.\d s$", out, re.M), out
    assert len(out.splitlines()) <= 24  # one screen

    (src / "f0").write_bytes(b"changed")
    r = cli("backup", src).ok()
    assert re.search(r"^Files:\s+0 new, 1 changed, 30 unchanged, 0 removed$", r.stdout, re.M), r.stdout
    assert re.search(r"incremental, parent [0-9a-f]{8}", r.stdout)

    r = cli("restore", "latest", "--target", tmp_path / "out").ok()
    assert not BAR_CHARS.search(r.stderr) and "restored snapshot" in r.stdout
    r = cli("verify", "--read-data").ok()
    assert not BAR_CHARS.search(r.stderr) and "no errors found" in r.stdout


def test_quiet_prints_nothing_on_success(cli, fast_repo, tmp_path):
    src = _tree(tmp_path / "src")
    r = cli("-q", "backup", src).ok()
    assert r.stdout == "" and r.stderr == ""


def test_json_summary_is_one_object(cli, fast_repo, tmp_path):
    src = _tree(tmp_path / "src")
    r = cli("--json", "backup", src).ok()
    (line,) = r.stdout.strip().splitlines()
    s = r.json()
    for key in ("snapshot_id", "kind", "files_new", "files_changed", "files_unchanged", "bytes_read", "bytes_added",
                "data_blobs_added", "duration", "errors"):
        assert key in s, key
    assert s["files_new"] == 31 and s["bytes_read"] == 30 * 200_000 + (40 << 20)


def test_progress_bar_on_a_terminal(cli, fast_repo, tmp_path):
    """With stderr on a pseudo-terminal a tqdm bar is drawn (and --no-progress suppresses it)."""
    src = _tree(tmp_path / "src")

    def run_on_pty(*args) -> tuple[int, bytes]:
        master, slave = pty.openpty()
        # A real terminal has a size; tqdm draws nothing into a 0-column one.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        try:
            proc = subprocess.Popen(cli.command(*args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=slave, env=cli.environ())
            os.close(slave)
            chunks = []
            while True:
                ready, _, _ = select.select([master], [], [], 60)
                if not ready:
                    break
                try:
                    b = os.read(master, 65536)
                except OSError:  # EIO: the child closed its end
                    break
                if not b:
                    break
                chunks.append(b)
            return proc.wait(timeout=120), b"".join(chunks)
        finally:
            os.close(master)

    code, err = run_on_pty("backup", src, "--full")
    assert code == 0, err
    text = err.decode("utf-8", "replace")
    assert "backup" in text and "\r" in text, repr(text[:300])
    code, err = run_on_pty("--no-progress", "backup", src, "--full")
    assert code == 0 and err == b"", err
