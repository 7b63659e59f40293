"""Bad input and failures: documented exit codes, one-line messages, no tracebacks unless --debug."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all", "--"]


def assert_one_line_error(r, code: int, *needles: str) -> None:
    assert r.code == code, r.describe()
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("haeedge: error:")]
    assert len(errors) == 1, r.stderr
    others = [ln for ln in r.stderr.splitlines() if ln and not ln.startswith(("haeedge: error:", "haeedge: hint:"))]
    assert not others, r.stderr
    for n in needles:
        assert n in errors[0], (n, r.stderr)


# ---------------------------------------------------------------------- repository and credentials


@pytest.mark.parametrize("args", [("snapshots",), ("backup", "/etc/hostname"), ("restore", "latest", "-t", "x"),
                                  ("verify",), ("ls", "latest"), ("unlock",)])
def test_missing_repository_exits_10(cli, tmp_path, args):
    r = cli(*args, env={"HAEEDGE_REPOSITORY": str(tmp_path / "nothing-here")})
    assert_one_line_error(r, 10, "no repository")
    assert not (tmp_path / "nothing-here").exists()


def test_init_twice_fails(cli, fast_repo):
    r = cli("init")
    assert_one_line_error(r, 1, "already exists")


def test_init_into_non_empty_directory_fails(cli, tmp_path):
    d = tmp_path / "busy"
    d.mkdir()
    (d / "precious").write_text("do not touch")
    r = cli("-r", d, "init")
    assert r.code == 1 and "Traceback" not in r.stderr, r.describe()
    assert os.listdir(d) == ["precious"]


def test_wrong_password_exits_12(cli, fast_repo, tmp_path):
    bad = tmp_path / "bad-password"
    bad.write_text("not the password\n")
    for args in (("snapshots",), ("verify",), ("backup", str(tmp_path))):
        r = cli("--password-file", bad, *args)
        assert_one_line_error(r, 12, "wrong password")


def test_password_sources(cli, fast_repo, tmp_path):
    # From a command (no shell), from the environment, and the file's first line only.
    script = tmp_path / "pw.sh"
    script.write_text(f"#!/bin/sh\ncat {cli.password_file}\n")
    script.chmod(0o755)
    cli("--password-command", str(script), "snapshots", unset=("HAEEDGE_PASSWORD_FILE",)).ok()
    cli("snapshots", env={"HAEEDGE_PASSWORD_COMMAND": str(script)}, unset=("HAEEDGE_PASSWORD_FILE",)).ok()
    multi = tmp_path / "multi"
    multi.write_bytes(cli.password_file.read_bytes().strip() + b"\nsecond line\n")
    cli("--password-file", multi, "snapshots").ok()
    r = cli("--password-command", "false", "snapshots", unset=("HAEEDGE_PASSWORD_FILE",))
    assert_one_line_error(r, 2, "password command")


def test_no_password_and_no_terminal_is_a_usage_error(cli, fast_repo):
    r = cli("snapshots", unset=("HAEEDGE_PASSWORD_FILE",))
    assert_one_line_error(r, 2, "no password")


def test_empty_or_missing_password_file(cli, fast_repo, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("")
    assert_one_line_error(cli("--password-file", empty, "snapshots"), 2, "empty")
    assert_one_line_error(cli("--password-file", tmp_path / "nope", "snapshots"), 2, "cannot read password file")


def test_no_repository_given(cli):
    r = cli("snapshots", unset=("HAEEDGE_REPOSITORY",))
    assert_one_line_error(r, 2, "no repository given")


def test_bad_options_exit_2(cli, fast_repo, tmp_path):
    for args in (("backup", "--no-such-option"), ("restore", "latest"), ("frobnicate",), ("ls",),
                 ("backup", "--full-every", "x", str(tmp_path))):
        r = cli(*args)
        assert r.code == 2, r.describe()
        assert "Traceback" not in r.stderr and "Error" in r.stderr, r.stderr


def test_backup_of_missing_path(cli, fast_repo, tmp_path):
    r = cli("backup", tmp_path / "does-not-exist")
    assert_one_line_error(r, 2, "does-not-exist")
    r = cli("backup")
    assert_one_line_error(r, 2, "nothing to back up")


def test_debug_shows_the_traceback(cli, fast_repo, tmp_path):
    bad = tmp_path / "bad"
    bad.write_text("wrong\n")
    r = cli("--debug", "--password-file", bad, "snapshots")
    assert r.code == 12
    assert "Traceback (most recent call last)" in r.stderr and "WrongPassword" in r.stderr
    r = cli("--password-file", bad, "snapshots")
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------- locks

HOLDER = textwrap.dedent("""
    import os, sys, time
    from haeedge.backends.local import LocalBackend
    from haeedge.repo.repository import Credentials, Repository
    repo = Repository.open(LocalBackend(sys.argv[1]), Credentials(passphrases=[sys.argv[2].encode()]))
    ctx = repo.lock(exclusive=True, command="test-holder")
    ctx.__enter__()
    print("locked", flush=True)
    if sys.argv[3] == "crash":
        os._exit(0)  # die holding the lock: it stays behind, naming a dead pid
    sys.stdin.read()  # hold until the test closes our stdin
    ctx.__exit__(None, None, None)
""")


def _hold_lock(repo_handle, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(repo_handle.path), repo_handle.password.decode(), mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_conflict_exits_11(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    holder = _hold_lock(fast_repo, "hold")
    try:
        r = cli("tag", "--add", "x", "--all")  # tag rewrites snapshots: it needs the exclusive lock
        assert_one_line_error(r, 11, "locked", "test-holder", f"pid {holder.pid}")
        assert "haeedge unlock" in r.stderr  # the hint says what to do
        r = cli("verify")  # a shared lock waits for no reader but an exclusive holder
        assert_one_line_error(r, 11, "locked", "test-holder", f"pid {holder.pid}")
        # Commands that take no lock still work: backups too (lock-free, docs/lifecycle.md).
        cli("snapshots").ok()
        cli("backup", src).ok()
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    assert not list((fast_repo.path / "locks").iterdir())
    cli("verify").ok()


def test_stale_lock_of_a_dead_process_is_ignored_and_unlock_removes_it(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    holder = _hold_lock(fast_repo, "crash")
    holder.wait(timeout=30)
    assert len(list((fast_repo.path / "locks").iterdir())) == 1
    cli("verify").ok()  # a stale exclusive lock does not block; it is cleared
    assert not list((fast_repo.path / "locks").iterdir())

    holder = _hold_lock(fast_repo, "crash")
    holder.wait(timeout=30)
    r = cli("unlock").ok()
    assert "removed 1 locks" in r.stdout
    assert not list((fast_repo.path / "locks").iterdir())
    # A live lock is not stale: plain unlock leaves it, --remove-all takes it.
    live = _hold_lock(fast_repo, "hold")
    try:
        assert "removed 0 locks" in cli("unlock").ok().stdout
        assert "removed 1 locks" in cli("unlock", "--remove-all").ok().stdout
    finally:
        live.stdin.close()
        live.wait(timeout=30)


# ---------------------------------------------------------------------- unreadable and changing files


def test_unreadable_file_warns_completes_and_exits_3(cli, fast_repo, trees, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("readable\n")
    (src / "secret").write_text("only root may read this\n")
    os.chmod(src / "secret", 0o000)
    (src / "z-after.txt").write_text("after the bad one\n")
    # uid 0 without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH: mode 000 means no access.
    r = cli("--json", "backup", src, prefix=DROP_DAC)
    assert r.code == 3, r.describe()
    assert "Traceback" not in r.stderr
    warnings = [json.loads(ln) for ln in r.stderr.splitlines() if ln.startswith("{")]
    assert any("secret" in w["message"] and "ermission denied" in w["message"] for w in warnings), r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["errors"] == 1 and summary["snapshot_id"]
    # The snapshot was saved and holds the readable files.
    out = tmp_path / "out"
    cli("restore", summary["snapshot_id"], "--target", out).ok()
    restored = trees.restored_path(out, src)
    assert (restored / "ok.txt").read_text() == "readable\n"
    assert (restored / "z-after.txt").read_text() == "after the bad one\n"
    assert not (restored / "secret").exists()
    # Human output names the file too.
    r = cli("backup", src, prefix=DROP_DAC)
    assert r.code == 3 and "secret" in r.stderr and "warning" in r.stderr, r.describe()


def test_unreadable_directory_warns_and_exits_3(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    (src / "closed").mkdir(parents=True)
    (src / "closed" / "inside").write_text("x")
    (src / "open.txt").write_text("y")
    os.chmod(src / "closed", 0o000)
    r = cli("backup", src, prefix=DROP_DAC)
    assert r.code == 3 and "closed" in r.stderr and "Traceback" not in r.stderr, r.describe()


def test_file_changing_while_read_is_reported(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    growing = src / "growing.log"
    growing.write_bytes(os.urandom(64 << 20))
    stop = threading.Event()
    appended = [0]

    def writer():
        chunk = os.urandom(64 << 10)
        with open(growing, "ab") as f:
            while not stop.is_set():
                f.write(chunk)
                f.flush()
                appended[0] += len(chunk)
                time.sleep(0.002)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        time.sleep(0.05)
        r = cli("--json", "backup", src, timeout=300)
    finally:
        stop.set()
        t.join()
    assert appended[0] > 0
    assert r.code == 3, r.describe()
    assert "changed while" in r.stderr and "growing.log" in r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["errors"] == 1 and summary["snapshot_id"]
    # The next backup (nothing changing any more) is clean and re-reads the file.
    again = cli("--json", "backup", src)
    assert again.code == 0, again.describe()
    assert json.loads(again.stdout.strip().splitlines()[-1])["files_changed"] == 1


# ---------------------------------------------------------------------- damaged repositories


def test_damaged_pack_is_found_and_named(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "victim.bin").write_bytes(os.urandom(200_000))
    (src / "z.txt").write_text("small, in the same pack\n")
    sid = cli.backup(src)["snapshot_id"]
    with fast_repo.open() as repo:
        data_packs = {loc.pack_id for _b, loc in repo.index.iter_entries() if loc.blob_type == 0}
    assert len(data_packs) == 1
    (pack_id,) = data_packs
    pack = fast_repo.path / "data" / pack_id[:2] / pack_id
    raw = bytearray(pack.read_bytes())
    raw[1000] ^= 0x40
    pack.chmod(0o600)
    pack.write_bytes(bytes(raw))

    cli("verify").ok()  # structure only: sizes and index agree
    v = cli("--json", "verify", "--read-data")
    assert v.code == 4, v.describe()
    findings = [f for f in v.json()["findings"] if f["severity"] == "error"]
    named = [f for f in findings if f["snapshots"] == [sid]]
    assert named and any(p.endswith("/victim.bin") for f in named for p in f["files"]), findings
    r = cli("verify", "--read-data")
    assert r.code == 4 and "victim.bin" in r.stderr and sid[:8] in r.stdout + r.stderr

    out = tmp_path / "out"
    r = cli("restore", "latest", "--target", out)
    assert r.code == 4, r.describe()
    assert "victim.bin" in r.stderr and "Traceback" not in r.stderr
    # Intact files are restored anyway.
    assert (out / str(src).lstrip("/") / "z.txt").read_text() == "small, in the same pack\n"


def test_verify_reports_a_damaged_index_object(cli, fast_repo, tmp_path):
    """A damaged index object is a finding of verify, not a fatal error that hides every other finding."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    cli("backup", src).ok()
    (index,) = fast_repo.objects("index")
    index.write_bytes(b"garbage")
    r = cli("--json", "verify")
    assert r.code == 4, r.describe()
    findings = r.json()["findings"]
    assert any(f["object"] == f"index/{index.name}" for f in findings), findings
