"""Progress and summary: a bar only on a terminal, a one-screen summary always (unless -q)."""

from __future__ import annotations

import fcntl
import json
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


def _run_on_pty(cli, *args, env: dict | None = None) -> tuple[int, bytes]:
    """Run the CLI with stderr on a pseudo-terminal; its exit code and everything it drew there."""
    master, slave = pty.openpty()
    # A real terminal has a size; tqdm draws nothing into a 0-column one.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    try:
        proc = subprocess.Popen(cli.command(*args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=slave, env=cli.environ(env))
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


def test_progress_bar_on_a_terminal(cli, fast_repo, tmp_path):
    """With stderr on a pseudo-terminal a tqdm bar is drawn (and --no-progress suppresses it)."""
    src = _tree(tmp_path / "src")

    code, err = _run_on_pty(cli, "backup", src, "--full")
    assert code == 0, err
    text = err.decode("utf-8", "replace")
    assert "backup" in text and "\r" in text, repr(text[:300])
    code, err = _run_on_pty(cli, "--no-progress", "backup", src, "--full")
    assert code == 0 and err == b"", err


def _statuses(stderr: str) -> list[dict]:
    lines = [json.loads(ln) for ln in stderr.splitlines() if ln.strip()]  # every stderr line is JSON
    return [m for m in lines if m["message_type"] == "status"]


def test_json_status_lines_count_against_the_scanners_totals(cli, fast_repo, tmp_path):
    src = _tree(tmp_path / "src")
    expected_bytes = 30 * 200_000 + (40 << 20)
    r = cli("--json", "backup", src, env={"HAEEDGE_PROGRESS_INTERVAL": "0"}).ok()
    st = _statuses(r.stderr)
    assert len(st) >= 2 and {s["phase"] for s in st} == {"backup"}
    done = [s["bytes_done"] for s in st]
    assert done == sorted(done)  # never goes back
    last = st[-1]
    assert last["percent_done"] == 1.0 and last["seconds_remaining"] == 0.0 and last["totals_final"]
    assert last["files_done"] == 31 and last["bytes_done"] == expected_bytes
    # The scanner ran alongside: its totals are those of the tree.
    assert last["total_files"] == 31 and last["total_bytes"] == expected_bytes
    assert all(0 <= s["percent_done"] <= 1 for s in st if s["percent_done"] is not None)
    assert r.json()["files_new"] == 31  # stdout keeps the one summary object

    r = cli("--json", "restore", "latest", "--target", tmp_path / "out", env={"HAEEDGE_PROGRESS_INTERVAL": "0"}).ok()
    st = _statuses(r.stderr)
    assert st and st[-1]["phase"] == "restore" and st[-1]["percent_done"] == 1.0
    assert st[-1]["total_bytes"] == expected_bytes and st[-1]["total_files"] == 31
    r = cli("--json", "verify", "--read-data", env={"HAEEDGE_PROGRESS_INTERVAL": "0"}).ok()
    st = _statuses(r.stderr)
    assert st and st[-1]["phase"] == "read-data" and st[-1]["files_done"] == st[-1]["total_files"] > 0

    # -q, --no-progress, or a run shorter than the interval: no status lines.
    for args, env in ((("-q", "--json"), {"HAEEDGE_PROGRESS_INTERVAL": "0"}),
                      (("--no-progress", "--json"), {"HAEEDGE_PROGRESS_INTERVAL": "0"}),
                      (("--json",), {"HAEEDGE_PROGRESS_INTERVAL": "3600"})):
        r = cli(*args, "backup", src, "--full", env=env).ok()
        assert _statuses(r.stderr) == [], (args, r.stderr[:300])


def test_terminal_bar_shows_percentage_eta_and_file_totals(cli, fast_repo, tmp_path):
    src = _tree(tmp_path / "src")
    (src / "big2").write_bytes(os.urandom(80 << 20))  # long enough for the bar to be redrawn with its totals
    code, err = _run_on_pty(cli, "backup", src, env={"HAEEDGE_THREADS": "1"})
    assert code == 0, err
    text = err.decode("utf-8", "replace")
    assert re.search(r"\d+%", text), repr(text[-500:])  # a percentage, so a total was known
    assert re.search(r"\d\d:\d\d<\d\d:\d\d", text), repr(text[-500:])  # elapsed<remaining: an ETA
    assert re.search(r"\d+/32\+? files", text), repr(text[-500:])  # files done against the scanned total
