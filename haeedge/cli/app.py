"""The ``haeedge`` command group and its global options."""

from __future__ import annotations

import errno
import importlib

import click

from haeedge import __version__
from haeedge.backends.replicated import REPLICA_POLICIES, write_policy_of
from haeedge.cli.context import AppContext, ReaderGone, redact_location, stdout_reader_gone
from haeedge.errors import HaeedgeError
from haeedge.monitoring import current_run
from haeedge.ui.format import set_json_messages

#: Every command's module (``haeedge.cli.cmd_NAME`` defines the command NAME), listed here and nowhere
#: else (a test checks that no cmd_*.py module is left out). A module is imported when its command is
#: used: a cron run of ``backup`` does not pay for the import of restore, mount or prune.
COMMAND_MODULES = (
    "cmd_backup",
    "cmd_completion",
    "cmd_copy",
    "cmd_diff",
    "cmd_dump",
    "cmd_find",
    "cmd_forget",
    "cmd_init",
    "cmd_key",
    "cmd_ls",
    "cmd_mount",
    "cmd_prune",
    "cmd_repair",
    "cmd_restore",
    "cmd_rewrite",
    "cmd_snapshots",
    "cmd_stats",
    "cmd_sync",
    "cmd_tag",
    "cmd_trust",
    "cmd_unlock",
    "cmd_verify",
)


class _Group(click.Group):
    """The root group: commands loaded on use, and a closed standard output is the reader's choice.

    click itself turns any EPIPE into a bare ``exit 1`` with nothing on stderr,
    so it is caught here first: the reader went away (``dump ... | head``) ends
    the run quietly; a broken pipe anywhere else (a connection) is an error.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._unloaded = {m.removeprefix("cmd_"): m for m in COMMAND_MODULES}

    @property
    def commands(self) -> dict[str, click.Command]:  # type: ignore[override]
        """Every command, each module imported (help, profiles and tests walk them all)."""
        for name in list(getattr(self, "_unloaded", ())):
            self._load(name)
        return self._commands

    @commands.setter
    def commands(self, value: dict[str, click.Command]) -> None:
        self._commands = value

    def _load(self, name: str) -> None:
        module = self._unloaded.pop(name, None)
        if module is not None:
            command = importlib.import_module(f"haeedge.cli.{module}").command
            self._commands[command.name] = command

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self._commands) | set(self._unloaded))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load(cmd_name)
        return self._commands.get(cmd_name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OSError as e:
            if e.errno != errno.EPIPE:
                raise
            if stdout_reader_gone():
                raise ReaderGone() from None
            raise HaeedgeError(f"broken pipe: {e.strerror or e}") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="haeedge")
@click.option("-r", "--repo", "repos", multiple=True, envvar="HAEEDGE_REPOSITORY", metavar="LOCATION",
              help="Repository location: a path, sftp://, s3:// or another fsspec URL. [env: HAEEDGE_REPOSITORY]")
@click.option("--password-file", envvar="HAEEDGE_PASSWORD_FILE", metavar="FILE",
              help="Read the repository password from the first line of FILE. [env: HAEEDGE_PASSWORD_FILE]")
@click.option("--password-command", envvar="HAEEDGE_PASSWORD_COMMAND", metavar="CMD",
              help="Run CMD (no shell) and use the first line it prints. [env: HAEEDGE_PASSWORD_COMMAND]")
@click.option("--identity-file", envvar="HAEEDGE_IDENTITY_FILE", metavar="FILE",
              help="Open the repository with this OpenPGP secret key (gpg --export-secret-keys) instead of a "
                   "password; its passphrase, if any, comes from the password options. [env: HAEEDGE_IDENTITY_FILE]")
@click.option("--owner-fingerprint", envvar="HAEEDGE_OWNER_FINGERPRINT", metavar="FPR",
              help="The repository owner's key fingerprint (the trust root), pinned up front instead of trusted "
                   "on first use. [env: HAEEDGE_OWNER_FINGERPRINT]")
@click.option("--allow-untrusted", is_flag=True,
              help="Let readers use snapshots not signed by the owner or an approved writer for their host "
                   "(each one is warned about).")
@click.option("--json", "json_", is_flag=True, help="Print machine-readable JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors (for cron).")
@click.option("-v", "--verbose", count=True, help="Print more detail.")
@click.option("--no-progress", is_flag=True, help="Never show a progress bar.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("--replica-policy", type=click.Choice(list(REPLICA_POLICIES)), envvar="HAEEDGE_REPLICA_POLICY",
              help="With several -r locations: when one cannot be written, fail (the default), or continue and "
                   "report it as lagging (repair with 'haeedge sync'). [env: HAEEDGE_REPLICA_POLICY]")
@click.option("--accept-new-host-key", is_flag=True,
              help="sftp://: trust and record the host key of a server not yet in known_hosts (a changed key "
                   "is still refused).")
@click.option("--sftp-key-file", envvar="HAEEDGE_SFTP_KEY_FILE", metavar="FILE",
              help="sftp://: private key to log in with (default: ssh-agent and ~/.ssh/id_*). "
                   "[env: HAEEDGE_SFTP_KEY_FILE]")
@click.option("--sftp-known-hosts", envvar="HAEEDGE_SFTP_KNOWN_HOSTS", metavar="FILE",
              help="sftp://: known_hosts file to verify host keys against (default ~/.ssh/known_hosts). "
                   "[env: HAEEDGE_SFTP_KNOWN_HOSTS]")
@click.option("--limit-upload", type=click.IntRange(min=1), envvar="HAEEDGE_LIMIT_UPLOAD", metavar="KIB/S",
              help="Upload at most this many KiB/s, all transfers together. [env: HAEEDGE_LIMIT_UPLOAD]")
@click.option("--limit-download", type=click.IntRange(min=1), envvar="HAEEDGE_LIMIT_DOWNLOAD", metavar="KIB/S",
              help="Download at most this many KiB/s, all transfers together. [env: HAEEDGE_LIMIT_DOWNLOAD]")
@click.option("--cold-wait", type=click.FloatRange(min=0), envvar="HAEEDGE_COLD_WAIT", metavar="SECONDS",
              help="s3://: how long to wait for archived (GLACIER, DEEP_ARCHIVE) packs to be restored before giving "
                   "up with exit code 14 (default: the cold_wait option, else 24 hours). [env: HAEEDGE_COLD_WAIT]")
@click.option("--no-cache", is_flag=True, envvar="HAEEDGE_NO_CACHE",
              help="Do not use the local cache of repository metadata (index, snapshots, keys, file lists) for "
                   "remote repositories; by default it lives in $HAEEDGE_CACHE_DIR, else $XDG_CACHE_HOME/haeedge "
                   "or ~/.cache/haeedge. [env: HAEEDGE_NO_CACHE]")
@click.option("-c", "--config", "config_file", envvar="HAEEDGE_CONFIG", metavar="FILE",
              help="Take defaults from this YAML file (see config.example.yaml). [env: HAEEDGE_CONFIG]")
@click.option("--profile", envvar="HAEEDGE_PROFILE", metavar="NAME",
              help="The config file's profile to use. [env: HAEEDGE_PROFILE]")
@click.option("--log-file", envvar="HAEEDGE_LOG_FILE", metavar="FILE",
              help="Append one line per run with its outcome to FILE. [env: HAEEDGE_LOG_FILE]")
@click.option("--metrics-file", envvar="HAEEDGE_METRICS_FILE", metavar="FILE",
              help="Write Prometheus textfile metrics (node_exporter) to FILE. [env: HAEEDGE_METRICS_FILE]")
@click.pass_context
def cli(ctx: click.Context, repos, password_file, password_command, json_, quiet, verbose, no_progress, debug,
        replica_policy, accept_new_host_key, sftp_key_file, sftp_known_hosts, limit_upload, limit_download,
        config_file, profile, log_file, metrics_file, identity_file, owner_fingerprint, allow_untrusted,
        cold_wait=None, no_cache=False):
    """Encrypted, deduplicated backups in OpenPGP format.

    \b
    Example:
      haeedge -r /srv/backup --password-file ~/.haeedge-pw init
      haeedge -r /srv/backup --password-file ~/.haeedge-pw backup /etc /home
    """
    if isinstance(repos, str):
        repos = [repos]
    ctx.obj = AppContext(repos=list(repos or []), password_file=password_file, password_command=password_command,
                         identity_file=identity_file, owner_fingerprint=owner_fingerprint,
                         allow_untrusted=allow_untrusted,
                         json=json_, quiet=quiet, verbose=verbose, debug=debug, progress_enabled=not no_progress,
                         replica_policy=write_policy_of(replica_policy),
                         accept_new_host_key=accept_new_host_key, sftp_key_file=sftp_key_file,
                         sftp_known_hosts=sftp_known_hosts, limit_upload=limit_upload,
                         limit_download=limit_download)
    ctx.obj.cold_wait = cold_wait
    ctx.obj.no_cache = bool(no_cache)
    if json_:
        set_json_messages(True)
    # The profile lies under the command line; main() reads the run's outcome for hooks, metrics and the log.
    run = current_run()
    run.command = ctx.invoked_subcommand or ""
    run.log_file, run.metrics_file = log_file, metrics_file
    ctx.obj.run = run
    if config_file or profile:
        from haeedge.cli.profiles import apply_profile  # YAML costs import time; only load it when used

        apply_profile(ctx, ctx.obj, config_file, profile)
    run.repository = redact_location(ctx.obj.repos[0]) if ctx.obj.repos else ""
