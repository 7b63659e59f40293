"""What every command shares: global options, credentials, opening the repository."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import click

from haeedge.backends import open_backend
from haeedge.errors import ExitCode, HaeedgeError, UsageError
from haeedge.repo.repository import Credentials, Repository
from haeedge.ui.format import emit_json
from haeedge.ui.progress import JsonLinesProgress, TerminalProgress


@dataclass
class AppContext:
    repos: list[str] = field(default_factory=list)
    password_file: str | None = None
    password_command: str | None = None
    json: bool = False
    quiet: bool = False
    verbose: int = 0
    debug: bool = False
    progress_enabled: bool = True
    exit_code: int = ExitCode.OK
    #: Per-location options (storage_options, sftp key files, ...), from the config file.
    backend_options: dict[str, dict] = field(default_factory=dict)
    #: What a write does when a replica is down: "all" (fail) or "continue" (report it lagging).
    replica_policy: str = "all"

    # ------------------------------------------------------------------ secrets

    def read_password(self, *, confirm: bool = False, purpose: str = "repository password") -> bytes:
        """From --password-file, --password-command, or a terminal prompt; never from argv."""
        if self.password_file:
            try:
                with open(os.path.expanduser(self.password_file), "rb") as f:
                    pw = f.read().split(b"\n", 1)[0].rstrip(b"\r")
            except OSError as e:
                raise UsageError(f"cannot read password file {self.password_file}: {e.strerror}") from None
            if not pw:
                raise UsageError(f"password file {self.password_file} is empty")
            return pw
        if self.password_command:
            return run_password_command(self.password_command)
        if not sys.stdin.isatty():
            raise UsageError("no password given and no terminal to ask on",
                             hint="use --password-file, --password-command or HAEEDGE_PASSWORD_FILE")
        import getpass

        pw = getpass.getpass(f"enter {purpose}: ").encode()
        if confirm:
            again = getpass.getpass(f"enter {purpose} again: ").encode()
            if again != pw:
                raise UsageError("passwords do not match")
        if not pw:
            raise UsageError("empty passwords are not allowed")
        return pw

    def credentials(self) -> Credentials:
        return Credentials(passphrases=[self.read_password()])

    # ------------------------------------------------------------------ repository

    def location(self) -> str:
        if not self.repos:
            raise UsageError("no repository given", hint="use -r/--repo or set HAEEDGE_REPOSITORY")
        return self.repos[0]

    def backend(self):
        """The repository's storage: one location, or several replicated (``-r`` repeated)."""
        self.location()
        backends = [open_location(loc, self.backend_options.get(loc)) for loc in self.repos]
        if len(backends) == 1:
            return backends[0]
        from haeedge.backends.replicated import ReplicatedBackend

        return ReplicatedBackend(backends, write_policy=self.replica_policy)

    @contextmanager
    def open_repo(self, *, lock: str | None = "shared", command: str = "", load_index: bool = True):
        backend = self.backend()
        repo = Repository.open(backend, self.credentials())
        try:
            if lock is None:
                if load_index:
                    repo.load_index()
                yield repo
            else:
                with repo.lock(exclusive=(lock == "exclusive"), command=command):
                    if load_index:
                        repo.load_index()
                    yield repo
        finally:
            repo.close()

    # ------------------------------------------------------------------ output

    def progress(self):
        if self.json:
            return JsonLinesProgress()
        show = self.progress_enabled and not self.quiet and sys.stderr.isatty()
        return TerminalProgress(show_bar=show, quiet=self.quiet, verbose=self.verbose)

    def out(self, text: str = "") -> None:
        """Human output on stdout, silenced by -q."""
        if not self.quiet and not self.json:
            click.echo(text)

    def emit(self, obj: Any) -> None:
        if self.json:
            emit_json(obj)


def open_location(location: str, options: dict | None = None):
    """One location with retries for transient errors (and injected faults when HAEEDGE_FAULTS is set)."""
    from haeedge.backends.faulty import wrap_from_env
    from haeedge.backends.retry import RetryingBackend

    backend = wrap_from_env(open_backend(location, options))
    if "://" in location and not location.startswith("file://"):
        backend = RetryingBackend(backend, attempts=5, max_total=120)
    return backend


def run_password_command(command: str) -> bytes:
    try:
        proc = subprocess.run(shlex.split(command), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=120)
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        raise UsageError(f"password command failed to run: {type(e).__name__}") from None
    if proc.returncode != 0:
        raise UsageError(f"password command exited with status {proc.returncode}")
    pw = proc.stdout.split(b"\n", 1)[0].rstrip(b"\r")
    if not pw:
        raise UsageError("password command printed nothing")
    return pw


pass_app = click.make_pass_decorator(AppContext)


def json_option(f):
    """``--json`` on each command as well as globally."""

    def callback(ctx: click.Context, _param, value: bool):
        if value:
            ctx.find_object(AppContext).json = True
        return value

    return click.option("--json", "json_", is_flag=True, expose_value=False, callback=callback,
                        help="Print machine-readable JSON.")(f)


def fail_with(code: int) -> None:
    raise click.exceptions.Exit(code)


__all__ = ["AppContext", "HaeedgeError", "pass_app", "json_option", "fail_with"]
