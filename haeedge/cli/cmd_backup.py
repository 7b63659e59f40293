"""haeedge backup"""

from __future__ import annotations

import click

from haeedge.archiver import Archiver, BackupOptions
from haeedge.archiver.stream import StreamOptions, backup_stream
from haeedge.cli.context import AppContext, fail_with, json_option, one_setting, pass_app
from haeedge.durations import parse_duration
from haeedge.errors import BackendError, ExitCode, UsageError
from haeedge.ui.format import human_size, warn


def parse_compression(value: str | None) -> int | None:
    if value is None:
        return None
    v = value.strip().lower()
    if v == "off":
        return 0
    if v == "auto":
        return 3
    try:
        n = int(v)
    except ValueError:
        raise UsageError(f"--compression: {value!r} is not off, auto or a zstd level 1-22") from None
    if not 1 <= n <= 22:
        raise UsageError(f"--compression: level {n} is outside 1-22")
    return n


@one_setting("paths", "stdin", "stdin_from_command")  # what to back up: files, standard input or a command
@click.command("backup")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("-e", "--exclude", "excludes", multiple=True, metavar="PATTERN",
              help="Skip files matching PATTERN (a name glob, or a path glob when it has a '/').")
@click.option("--exclude-file", "exclude_files", multiple=True, type=click.Path(), help="Read patterns from FILE.")
@click.option("-x", "--one-file-system", is_flag=True, help="Do not cross filesystem boundaries.")
@click.option("--tag", "tags", multiple=True, help="Add a tag to the snapshot (repeatable).")
@click.option("--host", help="Record this host name instead of this machine's.")
@click.option("-n", "--dry-run", is_flag=True, help="Read and chunk everything, store nothing.")
@click.option("--full", is_flag=True, help="Make a full snapshot even if an incremental would do.")
@click.option("--full-every", type=click.IntRange(min=1), metavar="N",
              help="Make every N-th snapshot of a chain a full one.")
@click.option("--full-if-older-than", default="7d", show_default=True, metavar="DURATION",
              help="Make a full snapshot when the chain's full is older than DURATION ('never' to disable).")
@click.option("--compression", metavar="off|auto|N", help="zstd level for this backup (default: the repository's).")
@click.option("--parent", metavar="SNAPSHOT", help="Compare against this snapshot instead of the latest one.")
@click.option("--stdin", is_flag=True, help="Back up standard input as one file (named by --stdin-filename).")
@click.option("--stdin-filename", default="stdin", show_default=True, metavar="NAME",
              help="The stream's file name in the snapshot (with --stdin or --stdin-from-command).")
@click.option("--stdin-from-command", is_flag=True,
              help="Run the command given after '--' (no shell) and back up what it prints; the snapshot is "
                   "kept only if it exits 0. Its stderr is shown.")
@json_option
@pass_app
def command(app: AppContext, paths, excludes, exclude_files, one_file_system, tags, host, dry_run, full,
            full_every, full_if_older_than, compression, parent, stdin, stdin_filename, stdin_from_command) -> None:
    """Back up files and directories into a new snapshot.

    Exits 3 when some files could not be read (the snapshot is still saved).

    \b
    Examples:
      haeedge backup /etc /home --exclude '*.tmp' --tag nightly
      haeedge backup --full /srv/data
      haeedge backup --stdin-from-command --stdin-filename db.dump -- pg_dump -Fc mydb
      mysqldump --all-databases | haeedge backup --stdin --stdin-filename mysql.sql
    """
    older = None
    if full_if_older_than and full_if_older_than.lower() != "never":
        try:
            older = parse_duration(full_if_older_than)
        except ValueError as e:
            raise UsageError(f"--full-if-older-than: {e}") from None
    opts = BackupOptions(paths=list(paths), excludes=list(excludes), exclude_files=list(exclude_files),
                         one_file_system=one_file_system, tags=list(tags), host=host, dry_run=dry_run, full=full,
                         full_every=full_every, full_if_older_than=older,
                         compression_level=parse_compression(compression), parent=parent)
    stream = _stream_options(paths, stdin, stdin_filename, stdin_from_command, tags, host, dry_run, compression)
    progress = app.progress()
    with app.open_repo(lock="shared", command="backup") as repo:
        if not dry_run:
            _refuse_down_replicas(repo.backend)
        if stream is not None:
            result = backup_stream(repo, stream, progress=progress)
        else:
            result = Archiver(repo, opts, progress).run()
        backend = repo.backend
    lagging = _lagging_replicas(backend)
    app.run.record_backup(result.snapshot.id if result.snapshot else None, result.summary)
    s = result.summary
    snap = result.snapshot
    if app.json:
        app.emit({"message_type": "summary", "snapshot_id": snap.id if snap else None, "dry_run": dry_run,
                  "parent": snap.parent if snap else None, **s, "warnings": result.warnings,
                  **({"lagging_replicas": lagging} if hasattr(backend, "lagging") else {})})
    else:
        if snap:
            parent_txt = f", parent {snap.parent[:8]}" if snap.parent else ""
            app.out(f"snapshot {snap.short_id} saved ({s['kind']}{parent_txt})")
        else:
            app.out(f"dry run: nothing saved ({s['kind']} backup)")
        app.out(f"Files:   {s['files_new']} new, {s['files_changed']} changed, {s['files_unchanged']} unchanged, "
                f"{s['files_deleted']} removed")
        app.out(f"Dirs:    {s['dirs']}; other entries: {s['others']}")
        app.out(f"Read:    {human_size(s['bytes_read'])} of {human_size(s['bytes_total'])} in the snapshot")
        app.out(f"Added:   {human_size(s['bytes_added'])} stored ({s['data_blobs_added']} data blobs, "
                f"{s['tree_blobs_added']} tree blobs) after dedup and compression")
        app.out(f"Time:    {s['duration']:.1f} s")
        if s["errors"]:
            app.out(f"Errors:  {s['errors']} (see warnings above)")
    for lag in lagging:  # never silent, even with --quiet or --json
        warn(f"replica {lag['location']} is lagging: it missed {lag['objects_missed']} "
                   f"objects ({lag['error']}); run 'haeedge sync' when it is reachable", err=True)
    if result.partial:
        app.run.error = f"{result.summary.get('errors')} files could not be read or changed while being read"
        fail_with(ExitCode.PARTIAL)
    if lagging:
        app.run.error = f"replica(s) lagging: {', '.join(lag['location'] for lag in lagging)}"
        fail_with(ExitCode.PARTIAL)


def _refuse_down_replicas(backend) -> None:
    """Under ``--replica-policy fail`` a replica that does not answer stops the backup before any work."""
    if getattr(backend, "write_policy", None) != "all":
        return
    down = backend.unreachable()
    if down:
        raise BackendError("; ".join(f"replica {loc} is unreachable: {err}" for loc, err in sorted(down.items())),
                           hint="--replica-policy continue backs up to the other replicas and reports this one "
                                "as lagging; 'haeedge sync' repairs it when it is back")


def _lagging_replicas(backend) -> list[dict]:
    """Replicas that missed writes under ``--replica-policy continue`` (none for a single location)."""
    missed = getattr(backend, "lagging_objects", {})
    return [{"location": loc, "error": error, "objects_missed": len(missed.get(loc, ()))}
            for loc, error in sorted(getattr(backend, "lagging", {}).items())]


#: Options that mean nothing for a stream; given on the command line with one, they are a mistake.
_TREE_ONLY = ("excludes", "exclude_files", "one_file_system", "full", "full_every", "full_if_older_than", "parent")


def _stream_options(paths, stdin: bool, filename: str, from_command: bool, tags, host, dry_run: bool,
                    compression) -> StreamOptions | None:
    """Check a stream backup's options; ``None`` for an ordinary backup of files."""
    import sys

    ctx = click.get_current_context()
    if not (stdin or from_command):
        if ctx.get_parameter_source("stdin_filename") == click.core.ParameterSource.COMMANDLINE:
            raise UsageError("--stdin-filename needs --stdin or --stdin-from-command")
        return None
    if stdin and from_command:
        raise UsageError("--stdin and --stdin-from-command exclude each other")
    for name in _TREE_ONLY:  # defaults from a profile are fine: they are for file backups
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise UsageError(f"--{name.rstrip('s').replace('_', '-')} cannot be used with a stream backup")
    command_given = ctx.get_parameter_source("paths") == click.core.ParameterSource.COMMANDLINE
    if stdin:
        if command_given and paths:
            raise UsageError("--stdin takes no paths")
        if sys.stdin is None or _is_device(sys.stdin):  # a terminal, or /dev/null under cron: a mistake
            raise UsageError("--stdin: standard input is a terminal or device, not a pipe or file",
                             hint="pipe the data in: pg_dump mydb | haeedge backup --stdin --stdin-filename db.sql")
    elif not paths or (ctx.get_parameter_source("stdin_from_command") == click.core.ParameterSource.COMMANDLINE
                       and not command_given):  # never run a profile's backup paths as a command
        raise UsageError("--stdin-from-command needs the command after '--'",
                         hint="haeedge backup --stdin-from-command --stdin-filename db.dump -- pg_dump -Fc mydb")
    return StreamOptions(filename=filename, tags=list(tags), host=host, dry_run=dry_run,
                         compression_level=parse_compression(compression),
                         command=list(paths) if from_command else None)


def _is_device(f) -> bool:
    import os
    import stat

    try:
        return stat.S_ISCHR(os.fstat(f.fileno()).st_mode)
    except (OSError, ValueError):
        return True  # closed: nothing to read
