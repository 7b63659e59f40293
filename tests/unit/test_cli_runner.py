"""The ``cli`` fixture's in-process runner gives what a child process gives, and leaves nothing behind.

Most tests run the CLI in the test's own process (tests/support/cli.py); these
tests hold it to the console script: the same exit codes and output, a
traceback where the interpreter would print one, and every process-wide
setting it touched put back.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import pytest

import haeedge.cli
from tests.support.cli import SUBPROCESS_ENV


@pytest.fixture(autouse=True)
def in_process(monkeypatch):
    """These tests are about the in-process mode, whatever HAEEDGE_TEST_SUBPROCESS says."""
    monkeypatch.delenv(SUBPROCESS_ENV, raising=False)


def _state() -> dict:
    root = logging.getLogger()
    return {"env": dict(os.environ), "cwd": os.getcwd(), "umask": os.umask(os.umask(0o022)),
            "streams": (sys.stdin, sys.stdout, sys.stderr), "argv": list(sys.argv),
            "fds": [os.path.realpath(f"/proc/self/fd/{fd}") for fd in (0, 1, 2)],
            "handlers": {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE)},
            "mask": signal.pthread_sigmask(signal.SIG_BLOCK, []), "logging": (root.handlers[:], root.level)}


@pytest.mark.parametrize("args", [("--version",), ("snapshots",), ("--json", "snapshots"), ("no-such-command",),
                                  ("init", "--no-such-option")])
def test_in_process_matches_the_console_script(cli, args):
    """Exit code, stdout and stderr are those of the real ``haeedge`` process (no repository yet:
    errors, usage errors, and JSON error lines)."""
    inproc = cli(*args)
    child = cli.subprocess(*args)
    assert (inproc.code, inproc.stdout, inproc.stderr) == (child.code, child.stdout, child.stderr), \
        f"in process:\n{inproc.describe()}\nchild:\n{child.describe()}"


def test_a_repository_made_in_process_is_read_by_a_child(cli, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"in process\n" * 1000)
    cli("init").ok()
    sid = cli.backup(src)["snapshot_id"]
    listed = cli.subprocess("--json", "snapshots").ok().json()
    assert [s["id"] for s in listed] == [sid]
    assert cli("--json", "snapshots").ok().json() == listed


def test_process_wide_state_is_restored(cli, tmp_path):
    before = _state()
    assert cli("snapshots").code != 0
    cli("init").ok()
    cli("--json", "--debug", "snapshots").ok()
    assert _state() == before


def test_the_environment_is_exactly_the_childs(cli, monkeypatch):
    """A variable of the test's process that the child would not get is not seen in process either."""
    monkeypatch.setenv("HAEEDGE_REPOSITORY", "/nonexistent/only-in-the-test-process")
    r = cli("snapshots")
    assert "only-in-the-test-process" not in r.stderr and str(cli.repo_path) in r.stderr, r.describe()
    assert r.code == cli.subprocess("snapshots").code


def test_an_escaping_exception_is_a_traceback_and_exit_code_1(cli, monkeypatch):
    """What the interpreter does with an exception nothing caught: the test sees it on stderr."""
    def boom(argv=None):
        raise RuntimeError("escaped the CLI")

    monkeypatch.setattr(haeedge.cli, "main", boom)
    r = cli("--version")
    assert r.code == 1 and "Traceback (most recent call last)" in r.stderr and "escaped the CLI" in r.stderr


@pytest.mark.parametrize(("exit_arg", "code", "stderr"), [(None, 0, ""), (3, 3, ""), ("bye", 1, "bye\n")])
def test_system_exit_is_the_exit_status(cli, monkeypatch, exit_arg, code, stderr):
    def leave(argv=None):
        sys.exit(exit_arg)

    monkeypatch.setattr(haeedge.cli, "main", leave)
    r = cli("--version")
    assert (r.code, r.stderr) == (code, stderr)


def test_stdin_is_dev_null_unless_given(cli, tmp_path):
    """As under cron, stdin is /dev/null (``backup --stdin`` refuses it); given bytes come through a pipe."""
    cli("init").ok()
    devnull = cli("backup", "--stdin")
    assert (devnull.code, devnull.stderr) == (2, cli.subprocess("backup", "--stdin").stderr)
    assert "not a pipe or file" in devnull.stderr
    big = os.urandom(1 << 20)  # more than a pipe holds: the runner must feed it while the command reads
    given = cli("--json", "backup", "--stdin-filename", "given.bin", "--stdin", stdin=big)
    assert given.code == 0, given.describe()
    out = cli.tmp_path / "out.bin"
    cli("dump", "latest", "given.bin", "--output", out).ok()
    assert out.read_bytes() == big


def test_forced_subprocess_mode_runs_a_child(cli, monkeypatch):
    """HAEEDGE_TEST_SUBPROCESS=1: every call is a fresh process (a broken in-process CLI goes unseen)."""
    monkeypatch.setattr(haeedge.cli, "main", lambda argv=None: 99)
    assert cli("--version").code == 99
    monkeypatch.setenv(SUBPROCESS_ENV, "1")
    assert cli("--version").ok().stdout.startswith("haeedge")
