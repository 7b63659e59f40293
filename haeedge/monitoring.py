"""What an unattended run leaves behind: hooks, Prometheus textfile metrics, a log line.

cron and systemd timers only see an exit code and whatever is printed, so a
run also reports its outcome where monitoring looks: ``on_success`` /
``on_failure`` hook commands (outcome in ``HAEEDGE_*`` environment
variables), a node_exporter textfile (replaced atomically, so the collector
never reads half a file) and one appended line per run in a log file.

Secrets never reach any of these: hooks run without a shell, without the
password variables and with the repository password scrubbed from every
value; so are the log line and the metrics labels.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from haeedge.ui.format import message_line

if TYPE_CHECKING:
    from haeedge.archiver.summary import BackupSummary

#: Commands that run hooks unless the profile lists others: what one schedules.
DEFAULT_HOOK_COMMANDS = ("backup", "forget", "prune", "verify", "copy", "sync")
DEFAULT_HOOK_TIMEOUT = 300.0
#: Environment variables a hook (or a stream command) never inherits.
SECRET_ENV_PREFIXES = ("HAEEDGE_PASSWORD", "HAEEDGE_IDENTITY")
METRIC_PREFIX = "haeedge_"
REDACTED = "***"


class HookFailed(Exception):
    """A hook did not run or did not succeed (a warning: the run's own exit code stands)."""


@dataclass
class Hooks:
    on_success: list[str] | None = None
    on_failure: list[str] | None = None
    timeout: float = DEFAULT_HOOK_TIMEOUT
    commands: tuple[str, ...] = DEFAULT_HOOK_COMMANDS


@dataclass
class RunOutcome:
    """One invocation of haeedge, filled in as it goes; reported once at the end."""

    command: str = ""
    profile: str = ""
    repository: str = ""
    #: Set when a command body actually started (not for ``--help``).
    invoked: bool = False
    started: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    exit_code: int = 0
    error: str = ""
    snapshot_id: str | None = None
    bytes_added: int | None = None
    bytes_total: int | None = None
    files: int | None = None
    #: forget: ids of the snapshots kept (unchanged), forgotten, and of those kept hidden as chain support.
    kept: list[str] | None = None
    forgotten: list[str] | None = None
    hidden: list[str] | None = None
    log_file: str | None = None
    metrics_file: str | None = None
    hooks: Hooks = field(default_factory=Hooks)
    #: Values to scrub from everything written (passwords, backend secrets); never written themselves.
    secrets: list[str] = field(default_factory=list, repr=False)

    def add_secret(self, value: str | bytes | None) -> None:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if value and len(value) >= 4 and value not in self.secrets:
            self.secrets.append(value)

    def record_backup(self, snapshot_id: str | None, summary: BackupSummary) -> None:
        self.snapshot_id = snapshot_id
        self.bytes_added = summary.bytes_added
        self.bytes_total = summary.bytes_total
        self.files = summary.files_new + summary.files_changed + summary.files_unchanged

    def record_forget(self, kept: list[str], removed: list[str], hidden: list[str]) -> None:
        self.kept, self.forgotten, self.hidden = list(kept), list(removed), list(hidden)

    @property
    def duration(self) -> float:
        return max(0.0, time.monotonic() - self.started_monotonic)

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, REDACTED)
        return text


_current: ContextVar[RunOutcome | None] = ContextVar("haeedge_run", default=None)


def begin_run() -> RunOutcome:
    """A fresh outcome record for one CLI invocation (main() calls this first)."""
    run = RunOutcome()
    _current.set(run)
    return run


def current_run() -> RunOutcome:
    run = _current.get()
    return run if run is not None else begin_run()


def finish_run(run: RunOutcome, exit_code: int) -> None:
    """Report a finished run. Never raises: a monitoring failure is a warning, not a new exit code."""
    run.exit_code = exit_code
    if not run.invoked and exit_code == 0:
        return  # --help, --version: nothing ran
    run.error = run.scrub(run.error or "") or (f"exited with code {exit_code}" if exit_code else "")
    for step, what in ((_log, "cannot write the log file"), (_metrics, "cannot write the metrics file"),
                       (_hook, "hook")):
        try:
            step(run)
        except HookFailed as e:
            print(message_line("warning", run.scrub(str(e))), file=sys.stderr)
        except Exception as e:  # noqa: BLE001 - report, never mask the run's own outcome
            detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            print(message_line("warning", f"{what}: {run.scrub(detail)}"), file=sys.stderr)


# ---------------------------------------------------------------------- log file


def log_line(run: RunOutcome) -> str:
    """One logfmt line: greppable by people, parseable by log shippers."""
    fields: list[tuple[str, object]] = [
        ("time", datetime.fromtimestamp(run.started, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")),
        ("host", socket.gethostname()), ("pid", os.getpid()), ("command", run.command or "-"),
        ("profile", run.profile or "-"), ("exit_code", run.exit_code),
        ("outcome", "success" if run.exit_code == 0 else "failure"),
        ("duration", f"{run.duration:.3f}"),
    ]
    for name in ("snapshot_id", "bytes_added", "files"):
        value = getattr(run, name)
        if value is not None:
            fields.append((name, value))
    if run.error:
        fields.append(("error", run.error))
    return " ".join(f"{k}={_logfmt_value(run.scrub(str(v)))}" for k, v in fields) + "\n"


def _logfmt_value(v: str) -> str:
    v = v.replace("\n", " ")
    if v and not re.search(r'[\s"=\\]', v):
        return v
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _log(run: RunOutcome) -> None:
    if not run.log_file:
        return
    path = os.path.expanduser(run.log_file)
    # One write() on an O_APPEND descriptor: concurrent runs never interleave within a line.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    try:
        os.write(fd, log_line(run).encode("utf-8", "replace"))
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- metrics

_METRICS = {
    "last_run_timestamp_seconds": "Unix time the last run finished.",
    "last_success_timestamp_seconds": "Unix time of the last run that exited 0.",
    "last_exit_code": "Exit code of the last run (0 success, 3 partial, see README).",
    "last_duration_seconds": "Wall-clock duration of the last run.",
    "last_bytes_added": "Bytes stored by the last run after deduplication and compression.",
    "last_bytes_total": "Bytes of file data in the last snapshot.",
    "last_files": "Files in the last snapshot (new, changed and unchanged).",
}
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+\S+)?\s*$')


def metrics_text(run: RunOutcome, previous: dict[tuple[str, str], str] | None = None) -> str:
    """The whole textfile: this run's series, plus other commands'/profiles' series kept from before."""
    series = dict(previous or {})
    labels = _labels(command=run.command or "unknown", profile=run.profile)
    now = time.time()
    values: dict[str, float | int | None] = {
        "last_run_timestamp_seconds": round(now, 3),
        "last_exit_code": run.exit_code,
        "last_duration_seconds": round(run.duration, 3),
        "last_bytes_added": run.bytes_added,
        "last_bytes_total": run.bytes_total,
        "last_files": run.files,
    }
    if run.exit_code == 0:
        values["last_success_timestamp_seconds"] = round(now, 3)
    for name, value in values.items():
        key = (METRIC_PREFIX + name, labels)
        if value is None:
            series.pop(key, None)  # a stale figure from an older run would mislead
        else:
            series[key] = _number(value)
    lines: list[str] = []
    known = [METRIC_PREFIX + n for n in _METRICS]
    for name in known + sorted({n for n, _ in series} - set(known)):
        samples = sorted((lab, v) for (n, lab), v in series.items() if n == name)
        if not samples:
            continue
        help_text = _METRICS.get(name[len(METRIC_PREFIX):], "haeedge metric.")
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(f"{name}{lab} {v}" for lab, v in samples)
    return "\n".join(lines) + "\n"


def parse_metrics(text: str) -> dict[tuple[str, str], str]:
    """Our own series from an existing textfile: (name, label string) -> value."""
    out: dict[tuple[str, str], str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m and m.group(1).startswith(METRIC_PREFIX):
            out[(m.group(1), m.group(2) or "")] = m.group(3)
    return out


def _labels(**labels: str) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in sorted(labels.items())) + "}"


def _number(v: float | int) -> str:
    return str(int(v)) if isinstance(v, int) or float(v).is_integer() else repr(float(v))


def _metrics(run: RunOutcome) -> None:
    if not run.metrics_file:
        return
    path = os.path.abspath(os.path.expanduser(run.metrics_file))
    directory, base = os.path.split(path)
    # Serialise concurrent runs (read-modify-write); the lock file is not *.prom, so the collector ignores it.
    with open(os.path.join(directory, f".{base}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        previous: dict = {}
        with contextlib.suppress(FileNotFoundError):
            with open(path, encoding="utf-8") as f:
                previous = parse_metrics(f.read())
        text = metrics_text(run, previous)
        tmp = os.path.join(directory, f".{base}.tmp.{os.getpid()}")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(run.scrub(text))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


# ---------------------------------------------------------------------- hooks


def hook_environment(run: RunOutcome, which: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The hook's environment: ours minus secrets, plus the outcome."""
    env = child_environment(base)
    outcome = {
        "HAEEDGE_HOOK": which,
        "HAEEDGE_COMMAND": run.command,
        "HAEEDGE_PROFILE": run.profile,
        "HAEEDGE_EXIT_CODE": str(run.exit_code),
        "HAEEDGE_SUCCESS": "1" if run.exit_code == 0 else "0",
        "HAEEDGE_ERROR": run.error,
        "HAEEDGE_DURATION": f"{run.duration:.3f}",
        "HAEEDGE_STARTED": datetime.fromtimestamp(run.started, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "HAEEDGE_SNAPSHOT_ID": run.snapshot_id or "",
        "HAEEDGE_BYTES_ADDED": "" if run.bytes_added is None else str(run.bytes_added),
        "HAEEDGE_BYTES_TOTAL": "" if run.bytes_total is None else str(run.bytes_total),
        "HAEEDGE_FILES": "" if run.files is None else str(run.files),
        # forget: space-separated full snapshot ids (kept ones keep their ids; hidden ones are forgotten
        # but still stored because a kept incremental needs them).
        "HAEEDGE_KEPT": " ".join(run.kept or ()),
        "HAEEDGE_FORGOTTEN": " ".join(run.forgotten or ()),
        "HAEEDGE_HIDDEN": " ".join(run.hidden or ()),
    }
    env.update({k: run.scrub(v) for k, v in outcome.items()})
    return env


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment without the variables that point at credentials."""
    src = os.environ if base is None else base
    return {k: v for k, v in src.items() if not k.startswith(SECRET_ENV_PREFIXES)}


def _hook(run: RunOutcome) -> None:
    which = "on_success" if run.exit_code == 0 else "on_failure"
    argv = getattr(run.hooks, which)
    if not argv or (run.command not in run.hooks.commands):
        return
    try:
        # No shell, no stdin; the hook's stdout goes to our stderr so that stdout stays machine-readable.
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=_stderr_fd(), env=hook_environment(run, which),
                              timeout=run.hooks.timeout, close_fds=True)
    except subprocess.TimeoutExpired:
        raise HookFailed(f"{which} hook {_name(argv)} did not finish within {run.hooks.timeout:g} s") from None
    except OSError as e:
        raise HookFailed(f"{which} hook {_name(argv)} could not run: {e.strerror or e}") from None
    if proc.returncode != 0:
        raise HookFailed(f"{which} hook {_name(argv)} exited with status {proc.returncode}")


def _stderr_fd() -> int:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr closed or replaced
        return subprocess.DEVNULL


def _name(argv: list[str]) -> str:
    """Only the program's name: its arguments may hold tokens."""
    return shlex.quote(os.path.basename(argv[0]))
