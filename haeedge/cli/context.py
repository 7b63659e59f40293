"""What every command shares: global options, credentials, opening the repository."""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import click

from haeedge.backends import open_backend
from haeedge.errors import HaeedgeError, UsageError
from haeedge.monitoring import RunOutcome
from haeedge.repo.repository import Credentials, Repository
from haeedge.ui.format import emit_json, message_line, set_json_messages, warn
from haeedge.ui.progress_display import JsonLinesProgress, TerminalProgress


@dataclass
class AppContext:
    repos: list[str] = field(default_factory=list)
    password_file: str | None = None
    password_command: str | None = None
    #: --identity-file / HAEEDGE_IDENTITY_FILE: an OpenPGP secret key that opens the repository instead
    #: of a password (its own passphrase, when it has one, comes from the password options).
    identity_file: str | None = None
    #: --owner-fingerprint: the trust root pinned up front (else trusted on first use and remembered).
    owner_fingerprint: str | None = None
    #: --allow-untrusted: readers may use snapshots no trusted key signed (warned).
    allow_untrusted: bool = False
    json: bool = False
    quiet: bool = False
    verbose: int = 0
    debug: bool = False
    progress_enabled: bool = True
    #: Per-location options (storage_options, sftp key files, ...), from the config file.
    backend_options: dict[str, dict] = field(default_factory=dict)
    #: What a write does when a replica is down: "all" (fail) or "continue" (report it lagging).
    replica_policy: str = "all"
    #: sftp:// settings from the command line; they override the config file's per-location options.
    accept_new_host_key: bool = False
    sftp_key_file: str | None = None
    sftp_known_hosts: str | None = None
    #: Bandwidth limits in KiB/s (--limit-upload / --limit-download), shared by every transfer of the run.
    limit_upload: int | None = None
    limit_download: int | None = None
    #: --cold-wait: seconds to wait for archived S3 objects to be restored (overrides the cold_wait option).
    cold_wait: float | None = None
    _limits: tuple | None = field(default=None, repr=False)
    #: --no-cache / HAEEDGE_NO_CACHE: no local cache of repository metadata this run (repo/cache.py).
    no_cache: bool = False
    #: The profile's ``backup:`` section (None without a profile): its host, tags and paths choose the
    #: profile's ``latest`` in a repository that several profiles share (cli/selection.py).
    profile_backup: dict | None = None
    #: This invocation's outcome, reported by main() to hooks, metrics and the log file.
    run: RunOutcome = field(default_factory=RunOutcome)

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
            return self._secret(pw)
        if self.password_command:
            return self._secret(run_password_command(self.password_command))
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
        return self._secret(pw)

    def _secret(self, pw: bytes) -> bytes:
        """Remember the password so that hooks, logs and metrics can scrub it."""
        self.run.add_secret(pw)
        return pw

    def credentials(self) -> Credentials:
        """A secret key (--identity-file) or else a password: what opens a key slot."""
        if self.identity_file:
            from haeedge.operations.keys import load_identity

            return Credentials(pkesk_decryptors=load_identity(
                self.identity_file, lambda purpose: self.read_password(purpose=purpose)))
        return Credentials(passphrases=[self.read_password()])

    # ------------------------------------------------------------------ repository

    def location(self) -> str:
        if not self.repos:
            raise UsageError("no repository given", hint="use -r/--repo or set HAEEDGE_REPOSITORY")
        return self.repos[0]

    def backend(self):
        """The repository's storage: one location, or several replicated (``-r`` repeated)."""
        self.location()
        return self.with_cache(self.open_locations(self.repos), self.repos)

    def with_cache(self, backend, locations: list[str]):
        """``backend`` behind the local metadata cache (repo/cache.py) unless --no-cache; local
        repositories are not cached (reading the cache would cost what reading them costs)."""
        from haeedge.repo.cache import cache_disabled_by_env, with_cache

        remote = any("://" in loc and not loc.lower().startswith("file://") for loc in locations)
        if self.no_cache or cache_disabled_by_env() or not remote:
            return backend
        return with_cache(backend, "\n".join(locations))

    def open_locations(self, locations: list[str]):
        """One backend for ``locations`` (replicated when several), with this run's options."""
        replicated = len(locations) > 1
        limits = self.bandwidth_limits()
        backends = [open_location(loc, self.location_options(loc), replicated=replicated, limits=limits)
                    for loc in locations]
        if not replicated:
            return backends[0]
        from haeedge.backends.replicated import ReplicatedBackend

        return ReplicatedBackend(backends, write_policy=self.replica_policy)

    def bandwidth_limits(self):
        """One pair of budgets for the whole run (every location and thread shares them), or ``None``."""
        if not (self.limit_upload or self.limit_download):
            return None
        if self._limits is None:
            from haeedge.backends.ratelimit import TokenBucket

            self._limits = (TokenBucket(self.limit_upload * 1024) if self.limit_upload else None,
                            TokenBucket(self.limit_download * 1024) if self.limit_download else None)
        return self._limits

    def location_options(self, location: str) -> dict:
        """The config file's options for ``location``, overridden by sftp flags given on the command line."""
        options = dict(self.backend_options.get(location) or {})
        if self.cold_wait is not None and location.lower().startswith(("s3://", "s3a://")):
            options["cold_wait"] = self.cold_wait
        if location.lower().startswith("sftp://"):
            if self.sftp_key_file:
                options["key_file"] = self.sftp_key_file
            if self.sftp_known_hosts:
                options["known_hosts"] = self.sftp_known_hosts
            if self.accept_new_host_key:
                options["accept_new_host_key"] = True
        return options

    def trust_policy(self, allow_unapproved: bool = False):
        """Whom to trust: --owner-fingerprint, and this client's memory of repositories (repo/trust.py)."""
        from haeedge.repo.trust import TrustMemory, TrustPolicy, default_memory_path

        fpr = self.owner_fingerprint
        if fpr is not None:
            fpr = "".join(fpr.split()).upper()
            if len(fpr) not in (40, 64) or any(c not in "0123456789ABCDEF" for c in fpr):
                raise UsageError(f"--owner-fingerprint {self.owner_fingerprint!r} is not a key fingerprint",
                                 hint="give the 40 hex digits 'gpg --fingerprint' shows")
        return TrustPolicy(fpr, TrustMemory(default_memory_path()), allow_unapproved)

    def open_trusted(self, backend, *, allow_unapproved: bool = False) -> Repository:
        """Open with the trust checks of repo/trust.py; print first-use notices; migrate format v1."""
        repo = Repository.open(backend, self.credentials(), trust=self.trust_policy(allow_unapproved))
        repo.allow_untrusted = self.allow_untrusted
        for notice in repo.trust.notices:
            self.notice(notice)
        from haeedge.repo.trust import migrate_legacy

        try:
            m = migrate_legacy(repo)
        except HaeedgeError as e:  # read-only storage: keep working as format v1 did
            warn(f"could not write the first trust manifest: {e}")
        else:
            if m is not None:
                self.notice(f"wrote the first trust manifest of repository {repo.config.repository_id[:8]} "
                            f"(owner key {m.root_fingerprint})")
        return repo

    @contextmanager
    def open_repo(self, *, lock: str | None = "shared", command: str = "", load_index: bool = True, backend=None,
                  allow_unapproved: bool = False):
        """Open (and lock) the repository; ``backend``: one already opened by the caller."""
        backend = backend or self.backend()
        repo = self.open_trusted(backend, allow_unapproved=allow_unapproved)
        try:
            if repo.keys.is_writer:  # refuse up front what a write-only key cannot do
                from haeedge.operations.keys import check_command

                ctx = click.get_current_context(silent=True)
                check_command(repo, ctx.command_path.split()[1] if ctx and " " in ctx.command_path else command)
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
            return JsonLinesProgress(quiet=self.quiet or not self.progress_enabled)
        show = self.progress_enabled and not self.quiet and sys.stderr.isatty()
        return TerminalProgress(show_bar=show, quiet=self.quiet, verbose=self.verbose)

    def out(self, text: str = "") -> None:
        """Human output on stdout, silenced by -q."""
        if not self.quiet and not self.json:
            click.echo(text)

    def notice(self, text: str) -> None:
        """Something worth knowing once (a key trusted on first use) on stderr; silenced by -q, a JSON line
        under --json."""
        if not self.quiet:
            sys.stderr.write(message_line("notice", text) + "\n")
            sys.stderr.flush()

    def emit(self, obj: Any) -> None:
        if self.json:
            emit_json(obj)


def open_location(location: str, options: dict | None = None, *, replicated: bool = False, limits=None):
    """One location with retries for transient errors (and injected faults when HAEEDGE_FAULTS is set).

    A replica of a replicated repository retries a failed read only once, and
    a refused connection not at all: another replica can serve it at once,
    while a dead one would otherwise hold every read for the whole backoff
    (about 20 s against a stopped S3). Other failed writes keep the full
    retries, since the write policy needs every replica.
    """
    from haeedge.backends.faulty import wrap_from_env
    from haeedge.backends.retry import RetryingBackend

    if replicated and location.lower().startswith(("s3://", "s3a://")):
        options = {"retries": 1, **(options or {})}  # botocore's own retries would hide a dead replica too
    backend = open_backend(location, options)
    from haeedge.backends.cold import wrap_cold

    backend = wrap_cold(backend)  # S3: archived objects are restored before they are read
    if limits is not None:  # innermost: retried transfers count against the budget too
        from haeedge.backends.ratelimit import RateLimitedBackend

        backend = RateLimitedBackend(backend, *limits)
    backend = wrap_from_env(backend)
    if "://" in location and not location.startswith("file://"):
        backend = RetryingBackend(backend, attempts=5, max_total=120, read_attempts=2 if replicated else None,
                                   retry_refused=not replicated)
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


_pass_app = click.make_pass_decorator(AppContext)

#: Where a value the user gave for this run comes from (a profile's value comes from the default map).
_GIVEN = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT,
          click.core.ParameterSource.PROMPT)


def one_setting(*names: str):
    """Declare options of a command that together choose one thing (``--read-data`` / ``--read-data-subset``).

    A profile lays its values under the command line option by option (click's
    default map), so a profile's ``read_data_subset: 10%`` used to survive a
    command-line ``--read-data`` and win over it. Options declared here are one
    setting: when the command line or the environment gives any of them, the
    profile's values for the others are dropped (see ``profile_under_command_line``).
    """

    def mark(command: click.Command) -> click.Command:
        known = {p.name for p in command.params}
        unknown = set(names) - known
        if unknown:
            raise TypeError(f"{command.name}: one_setting names unknown parameters {sorted(unknown)}")
        command.__dict__.setdefault("settings", []).append(tuple(names))
        return command

    return mark


def settings_of(command: click.Command) -> list[tuple[str, ...]]:
    """The option groups declared with ``one_setting`` (each a tuple of parameter names)."""
    return list(command.__dict__.get("settings", ()))


def profile_under_command_line(ctx: click.Context, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with a profile's values dropped where the command line gave another option of their setting.

    Precedence is command line > environment > profile > defaults for a
    *setting*, not only for one option: every command body gets its options
    through this (``pass_app``), so no command can combine a command-line
    option with a profile's value for a sibling of it.
    """
    out = dict(params)
    for names in settings_of(ctx.command):
        if not any(ctx.get_parameter_source(n) in _GIVEN for n in names):
            continue
        for name in names:
            if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT_MAP or name not in out:
                continue
            out[name] = ctx.params[name] = built_in_default(ctx.command, name)
            ctx.set_parameter_source(name, click.core.ParameterSource.DEFAULT)
    return out


def built_in_default(command: click.Command, name: str) -> Any:
    """A parameter's value when neither the command line, the environment nor a profile gives one."""
    bare = command.make_context(command.name, [], resilient_parsing=True)  # no parent: no default map
    return bare.params.get(name)


def pass_app(f):
    """Pass the AppContext, and note that a command body really ran (``--help`` alone is not a run).

    The command's options pass through ``profile_under_command_line`` first.
    """

    @functools.wraps(f)
    def wrapper(app: AppContext, *args, **kwargs):
        app.run.invoked = True
        ctx = click.get_current_context()
        return f(app, *args, **profile_under_command_line(ctx, kwargs))

    wrapper.resolves_profile = True  # type: ignore[attr-defined] - checked by the precedence test
    return _pass_app(wrapper)


def redact_location(location: str) -> str:
    """A location without any ``user:password@`` part, fit for logs and metrics."""
    from urllib.parse import urlsplit, urlunsplit

    if "://" not in location:
        return location
    try:
        parts = urlsplit(location)
        if parts.password is None:
            return location
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))
    except ValueError:
        return location.split("://", 1)[0] + "://..."


def json_option(f):
    """``--json`` on each command as well as globally."""

    def callback(ctx: click.Context, _param, value: bool):
        if value:
            ctx.find_object(AppContext).json = True
            set_json_messages(True)
        return value

    return click.option("--json", "json_", is_flag=True, expose_value=False, callback=callback,
                        help="Print machine-readable JSON.")(f)


class ReaderGone(Exception):  # noqa: N818 - not an error: the reader chose to stop
    """Standard output's reader went away (``dump ... | head``): the run ends quietly."""


def stdout_reader_gone() -> bool:
    """True when standard output is a pipe or socket whose reading end is closed (poll says error/hang-up)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _fd, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def fail_with(code: int) -> None:
    raise click.exceptions.Exit(code)


__all__ = ["AppContext", "HaeedgeError", "pass_app", "json_option", "fail_with", "one_setting", "settings_of",
           "profile_under_command_line"]
