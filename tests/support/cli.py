"""The ``cli`` fixture's runner: the real ``haeedge`` CLI, in this process or in a child.

Most tests only care about what a command prints and returns, so ``Cli`` runs
``haeedge.cli.run()`` in the test's own process (a process start and the
imports cost more than most commands). It gives each call what a fresh process
would have: exactly the environment the child would get, stdin from /dev/null,
stdout and stderr captured at the file descriptors (so output of the
programs haeedge starts, such as ssh or gpg, is captured too), the
run-scoped module state of haeedge reset, and everything it changed (cwd,
umask, signal handlers and mask, logging, sys.argv and the std streams)
restored afterwards. An exception that escapes becomes a traceback on stderr
and exit code 1, as the interpreter would make it; ``SystemExit`` becomes its
exit code.

A test about processes (signals, kills, concurrent runs, memory, cron-like
privileges) asks for a child explicitly: ``cli.subprocess(...)``,
``cli(..., process=True)``, ``cli.popen(...)``, or a ``prefix`` command.
``HAEEDGE_TEST_SUBPROCESS=1`` runs every call in a child, to compare modes.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.repos import PASSWORD, PRUNE_GRACE, RepoHandle

#: Set to 1 to run every ``cli(...)`` call in a child process (the slow, always-faithful mode).
SUBPROCESS_ENV = "HAEEDGE_TEST_SUBPROCESS"


def subprocess_forced() -> bool:
    return os.environ.get(SUBPROCESS_ENV, "") not in ("", "0")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    args: list[str] = field(default_factory=list)

    def __iter__(self):
        return iter((self.code, self.stdout, self.stderr))

    def json(self):
        return json.loads(self.stdout)

    def describe(self) -> str:
        return f"haeedge {' '.join(self.args)} -> {self.code}\n--- stdout\n{self.stdout[-3000:]}\n" \
               f"--- stderr\n{self.stderr[-3000:]}"

    def ok(self) -> Result:
        assert self.code == 0, self.describe()
        return self

    def expect(self, code: int) -> Result:
        assert self.code == code, self.describe()
        return self


def haeedge_executable() -> str:
    exe = shutil.which("haeedge")
    if exe is None:
        pytest.fail("the haeedge console script is not installed (pip install -e .)")
    return exe


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


class Cli:
    """Runs the haeedge CLI as a user would; see the module docstring for in-process versus child."""

    def __init__(self, tmp_path: Path):
        self.exe = haeedge_executable()
        self.tmp_path = tmp_path
        self.repo_path = tmp_path / "repo"
        self.password_file = tmp_path / "password"
        self.password_file.write_bytes(PASSWORD + b"\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HAEEDGE_")}
        env.pop("COLUMNS", None)
        env.pop(SUBPROCESS_ENV, None)
        env.update(HAEEDGE_REPOSITORY=str(self.repo_path), HAEEDGE_PASSWORD_FILE=str(self.password_file),
                   HAEEDGE_TRUST_FILE=str(tmp_path / "trusted_repositories.json"), PYTHONDONTWRITEBYTECODE="1",
                   HAEEDGE_PRUNE_GRACE=PRUNE_GRACE, HAEEDGE_CACHE_DIR=str(tmp_path / "haeedge-cache"))
        self.env = env

    def command(self, *args: str | os.PathLike, prefix: list[str] | None = None) -> list[str]:
        return [*(prefix or []), self.exe, *(os.fspath(a) for a in args)]

    def environ(self, env: dict | None = None, unset: tuple[str, ...] = ()) -> dict:
        e = dict(self.env)
        for k in unset:
            e.pop(k, None)
        e.update(env or {})
        return e

    def __call__(self, *args: str | os.PathLike, env: dict | None = None, unset: tuple[str, ...] = (),
                 timeout: float = 300, prefix: list[str] | None = None, process: bool = False,
                 stdin: bytes | None = None) -> Result:
        """Run one command; in this process unless ``process``, ``prefix`` or HAEEDGE_TEST_SUBPROCESS ask
        for a child. ``stdin``: bytes fed through a pipe, as from a shell pipeline; None: /dev/null, as
        under cron."""
        if process or prefix or subprocess_forced() or not _in_process_possible():
            return self.subprocess(*args, env=env, unset=unset, timeout=timeout, prefix=prefix, stdin=stdin)
        code, out, err = run_in_process([os.fspath(a) for a in args], self.environ(env, unset), stdin, self.exe)
        return Result(code, _decode(out), _decode(err), [os.fspath(a) for a in args])

    def subprocess(self, *args: str | os.PathLike, env: dict | None = None, unset: tuple[str, ...] = (),
                   timeout: float = 300, prefix: list[str] | None = None, stdin: bytes | None = None) -> Result:
        """Run one command in a fresh process, as cron would (for tests about processes)."""
        stdin_kw = {"stdin": subprocess.DEVNULL} if stdin is None else {"input": stdin}
        proc = subprocess.run(self.command(*args, prefix=prefix), capture_output=True, env=self.environ(env, unset),
                              timeout=timeout, **stdin_kw)
        return Result(proc.returncode, _decode(proc.stdout), _decode(proc.stderr), [os.fspath(a) for a in args])

    def popen(self, *args: str | os.PathLike, env: dict | None = None, **kw) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(self.command(*args), stdin=subprocess.DEVNULL, env=self.environ(env), **kw)

    def repo_handle(self) -> RepoHandle:
        return RepoHandle(self.repo_path)

    def backup(self, *args: str | os.PathLike, expect: int = 0) -> dict:
        """``backup --json``; returns the summary object."""
        r = self("--json", "backup", *args)
        assert r.code == expect, r.describe()
        return summary_of(r.stdout)


def _in_process_possible() -> bool:
    """Only the main thread can swap the process-wide state (and set signal handlers), one call at a time:
    calls from a test's own threads (concurrent runs) get a child each."""
    return threading.current_thread() is threading.main_thread() and not _running.locked()


#: Held while a command runs in this process.
_running = threading.Lock()


def summary_of(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert lines, "no JSON output"
    return json.loads(lines[-1])


# ---------------------------------------------------------------------- running in this process

#: Signals whose handlers a run may change; restored after each in-process call.
_SIGNALS = [s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGALRM,
                        signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD, signal.SIGQUIT, signal.SIGTSTP)]


def run_in_process(argv: list[str], env: dict[str, str], stdin: bytes | None = None,
                   exe: str = "haeedge") -> tuple[int, bytes, bytes]:
    """``haeedge argv`` in this process, as if it were a fresh one; returns (exit code, stdout, stderr)."""
    from haeedge import cli as haeedge_cli

    with _running, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        with _process_like(env, out, err, stdin):
            sys.argv = [exe, *argv]
            try:
                haeedge_cli.run()
                code = 0
            except SystemExit as e:
                code = _exit_status(e.code)
            except Exception:  # noqa: BLE001 - what the interpreter does with an uncaught exception
                traceback.print_exc()
                code = 1
        out.seek(0)
        err.seek(0)
        return code, out.read(), err.read()


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


@contextlib.contextmanager
def _process_like(env: dict[str, str], out, err, stdin: bytes | None) -> Iterator[None]:
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_umask = os.umask(0o022)
    os.umask(saved_umask)
    saved_argv = sys.argv
    saved_streams = (sys.stdin, sys.stdout, sys.stderr)
    saved_fds = [os.dup(fd) for fd in (0, 1, 2)]
    saved_handlers = {s: signal.getsignal(s) for s in _SIGNALS}
    saved_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    root = logging.getLogger()
    saved_logging = (root.handlers[:], root.level, logging.root.manager.disable)
    saved_tempdir = tempfile.tempdir
    stdin_fd, feeder = _stdin(stdin)
    for s in _SIGNALS:  # what a fresh interpreter starts with
        with contextlib.suppress(OSError, ValueError):
            signal.signal(s, _FRESH_HANDLERS.get(s, signal.SIG_DFL))
    try:
        os.environ.clear()
        os.environ.update(env)
        tempfile.tempdir = None
        root.handlers = []
        root.setLevel(logging.WARNING)
        logging.disable(logging.NOTSET)
        reset_haeedge_state()
        os.dup2(stdin_fd, 0)
        os.close(stdin_fd)
        for fd, f in ((1, out), (2, err)):
            os.dup2(f.fileno(), fd)
        sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8",
                                     errors="surrogateescape")
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                                      errors="surrogateescape", write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                      errors="backslashreplace", write_through=True)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        for fd, saved in zip((0, 1, 2), saved_fds, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        sys.argv = saved_argv
        if feeder is not None:
            feeder.join()
        for h in root.handlers:
            if h not in saved_logging[0]:
                with contextlib.suppress(Exception):
                    h.close()
        root.handlers, _, disabled = saved_logging
        root.setLevel(saved_logging[1])
        logging.disable(disabled)
        signal.pthread_sigmask(signal.SIG_SETMASK, saved_mask)
        for s, h in saved_handlers.items():
            if h is not None:
                with contextlib.suppress(OSError, ValueError):
                    signal.signal(s, h)
        tempfile.tempdir = saved_tempdir
        os.umask(saved_umask)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        reset_haeedge_state()


def _stdin(data: bytes | None) -> tuple[int, threading.Thread | None]:
    """A descriptor to read stdin from: /dev/null, or a pipe holding ``data`` and then closed (a thread feeds
    what the pipe cannot hold at once: while it writes, processes the command forks share its end)."""
    if data is None:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), None
    r, w = os.pipe()
    if len(data) <= _PIPE_HOLDS:
        with open(w, "wb") as f:
            f.write(data)
        return r, None

    def feed() -> None:
        with contextlib.suppress(OSError), open(w, "wb") as f:  # EPIPE: the command stopped reading
            f.write(data)

    feeder = threading.Thread(target=feed, name="cli-stdin", daemon=True)
    feeder.start()
    return r, feeder


#: What a Linux pipe holds without a reader (the minimum of its default 16 pages).
_PIPE_HOLDS = 64 << 10

#: A fresh CPython: Ctrl-C raises KeyboardInterrupt, SIGPIPE is ignored (writes fail with EPIPE).
_FRESH_HANDLERS = {signal.SIGINT: signal.default_int_handler, signal.SIGPIPE: signal.SIG_IGN}


def reset_haeedge_state() -> None:
    """Module state of haeedge that lives for one run in a real process, back to how a fresh one starts."""
    for name, module in list(sys.modules.items()):
        if not (name == "haeedge" or name.startswith("haeedge.")) or module is None:
            continue
        for value in list(vars(module).values()):
            if callable(getattr(value, "cache_clear", None)) and getattr(value, "__module__", None) == name:
                value.cache_clear()
    _reset_known_state()


def _reset_known_state() -> None:
    modules = sys.modules
    if (fmt := modules.get("haeedge.ui.format")) is not None:
        fmt.set_json_messages(False)
    if (policy := modules.get("haeedge.backends.s3policy")) is not None:
        with policy._hint_lock:
            policy._metadata_packs.clear()
    if (fs := modules.get("haeedge.fs")) is not None:
        fs.LAST_LONG_DIR.close()
    if (checker := modules.get("haeedge.operations.check")) is not None:
        checker._CHECK_REPO = None
        checker._CHECK_WINDOW = None
    if (workers := modules.get("haeedge.archiver.workers")) is not None:
        workers._STATE = None
    if (monitoring := modules.get("haeedge.monitoring")) is not None:
        monitoring._current.set(None)
    if (fsspec_spec := modules.get("fsspec.spec")) is not None:
        # fsspec keeps one file-system object per class and options for the life of the process
        # (memory:// and other fsspec locations): a new process starts without them.
        classes = [fsspec_spec.AbstractFileSystem]
        while classes:
            cls = classes.pop()
            cls.clear_instance_cache()
            classes.extend(cls.__subclasses__())


__all__ = ["Cli", "Result", "SUBPROCESS_ENV", "haeedge_executable", "reset_haeedge_state",
           "run_in_process", "subprocess_forced", "summary_of"]
