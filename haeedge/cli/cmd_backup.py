"""haeedge backup"""

from __future__ import annotations

import click

from haeedge.archiver import Archiver, BackupOptions
from haeedge.archiver.stream import StreamOptions, backup_stream
from haeedge.backends.replicated import ReplicatedBackend, replica_set
from haeedge.cli.context import AppContext, fail_with, json_option, one_setting, pass_app
from haeedge.cli.shared import parse_compression
from haeedge.durations import parse_duration
from haeedge.errors import BackendError, ExitCode, UsageError
from haeedge.sizes import parse_size
from haeedge.ui import messages
from haeedge.ui.format import human_size, warn


@one_setting("paths", "files_from", "files_from_raw", "stdin", "stdin_from_command")  # what to back up
@click.command("backup")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("-e", "--exclude", "excludes", multiple=True, metavar="PATTERN",
              help="Skip files matching PATTERN (a name glob, or a path glob when it has a '/').")
@click.option("--exclude-file", "exclude_files", multiple=True, type=click.Path(), help="Read patterns from FILE.")
@click.option("--iexclude", "iexcludes", multiple=True, metavar="PATTERN",
              help="Skip files matching PATTERN, ignoring case.")
@click.option("--iexclude-file", "iexclude_files", multiple=True, type=click.Path(),
              help="Read case-insensitive patterns from FILE.")
@click.option("--exclude-caches", is_flag=True,
              help="Leave out the contents of directories holding a CACHEDIR.TAG file (the tag is kept).")
@click.option("--exclude-if-present", multiple=True, metavar="NAME[:HEADER]",
              help="Leave out the contents of directories holding file NAME (starting with HEADER, if given).")
@click.option("--exclude-larger-than", metavar="SIZE", help="Leave out files larger than SIZE (e.g. 500M, 2G).")
@click.option("--files-from", multiple=True, type=click.Path(), metavar="FILE",
              help="Back up the paths listed in FILE, one per line ('#' comments; '-' reads standard input).")
@click.option("--files-from-raw", multiple=True, type=click.Path(), metavar="FILE",
              help="Back up the NUL-separated paths in FILE, taken verbatim (as 'find -print0' writes them).")
@click.option("--skip-if-unchanged", is_flag=True,
              help="Save no snapshot when nothing changed since the parent snapshot.")
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
def command(app: AppContext, paths, excludes, exclude_files, iexcludes, iexclude_files, exclude_caches,
            exclude_if_present, exclude_larger_than, files_from, files_from_raw, skip_if_unchanged, one_file_system,
            tags, host, dry_run, full, full_every, full_if_older_than, compression, parent, stdin, stdin_filename,
            stdin_from_command) -> None:
    """Back up files and directories into a new snapshot.

    Exits 3 when some files could not be read (the snapshot is still saved).

    \b
    Examples:
      haeedge backup /etc /home --exclude '*.tmp' --tag nightly
      haeedge backup --full /srv/data
      haeedge backup /home --exclude-caches --exclude-larger-than 2G --iexclude '*.iso'
      find /srv -name '*.db' -print0 | haeedge backup --files-from-raw -
      haeedge backup --stdin-from-command --stdin-filename db.dump -- pg_dump -Fc mydb
      mysqldump --all-databases | haeedge backup --stdin --stdin-filename mysql.sql
    """
    older = None
    if full_if_older_than and full_if_older_than.lower() != "never":
        try:
            older = parse_duration(full_if_older_than)
        except ValueError as e:
            raise UsageError(f"--full-if-older-than: {e}") from None
    larger = None
    if exclude_larger_than:
        try:
            larger = parse_size(exclude_larger_than)
        except ValueError as e:
            raise UsageError(f"--exclude-larger-than: {e}") from None
    opts = BackupOptions(paths=list(paths), excludes=list(excludes), exclude_files=list(exclude_files),
                         iexcludes=list(iexcludes), iexclude_files=list(iexclude_files),
                         exclude_caches=exclude_caches, exclude_if_present=list(exclude_if_present),
                         exclude_larger_than=larger, files_from=list(files_from),
                         files_from_raw=list(files_from_raw), skip_if_unchanged=skip_if_unchanged,
                         one_file_system=one_file_system, tags=list(tags), host=host, dry_run=dry_run, full=full,
                         full_every=full_every, full_if_older_than=older,
                         compression_level=parse_compression(compression), parent=parent)
    stream = _stream_options(paths, stdin, stdin_filename, stdin_from_command, tags, host, dry_run, compression)
    progress = app.progress()
    backend = app.backend()
    replicated = replica_set(backend)
    if not dry_run and replicated is not None:
        try:  # before opening the repository: no retries, warnings or lock on a replica that is down
            _refuse_down_replicas(replicated)
        except BaseException:
            backend.close()
            raise
    # No lock (docs/lifecycle.md): every host writes only new objects; prune marks before it deletes.
    with app.open_repo(lock=None, command="backup", backend=backend) as repo:
        if not dry_run:
            repo.begin_backup()
        if stream is not None:
            result = backup_stream(repo, stream, progress=progress)
        else:
            result = Archiver(repo, opts, progress).run()
    lagging = _lagging_replicas(replicated) if replicated is not None else []
    app.run.record_backup(result.snapshot.id if result.snapshot else None, result.summary)
    s = result.summary
    snap = result.snapshot
    unchanged = result.unchanged_since
    if app.json:
        app.emit(messages.backup(result, dry_run, lagging if replicated is not None else None))
    else:
        if snap:
            parent_txt = f", parent {snap.parent[:8]}" if snap.parent else ""
            app.out(f"snapshot {snap.short_id} saved ({s.kind}{parent_txt})")
        elif unchanged is not None:
            app.out(f"nothing changed since snapshot {unchanged.short_id}: no snapshot saved (--skip-if-unchanged)")
        else:
            app.out(f"dry run: nothing saved ({s.kind} backup)")
        app.out(f"Files:   {s.files_new} new, {s.files_changed} changed, {s.files_unchanged} unchanged, "
                f"{s.files_deleted} removed")
        app.out(f"Dirs:    {s.dirs}; other entries: {s.others}")
        app.out(f"Read:    {human_size(s.bytes_read)} of {human_size(s.bytes_total)} in the snapshot")
        app.out(f"Added:   {human_size(s.bytes_added)} stored ({s.data_blobs_added} data blobs, "
                f"{s.tree_blobs_added} tree blobs) after dedup and compression")
        app.out(f"Time:    {s.duration:.1f} s")
        if s.errors:
            app.out(f"Errors:  {s.errors} (see warnings above)")
    for lag in lagging:  # never silent, even with --quiet or --json
        warn(f"replica {lag['location']} is lagging: it missed {lag['objects_missed']} "
                   f"objects ({lag['error']}); run 'haeedge sync' when it is reachable")
    if result.partial:
        app.run.error = f"{result.summary.errors} files could not be read or changed while being read"
        fail_with(ExitCode.PARTIAL)
    if lagging:
        app.run.error = f"replica(s) lagging: {', '.join(lag['location'] for lag in lagging)}"
        fail_with(ExitCode.PARTIAL)


def _refuse_down_replicas(backend: ReplicatedBackend) -> None:
    """Under ``--replica-policy fail`` a replica that does not answer stops the backup before any work,
    in one line (cron mails it): a replica that is down names the other policy; one that refuses us
    for good (a changed host key, a failed login) carries its own remedy as the hint."""
    if backend.write_policy != "all":
        return
    down = backend.unreachable()
    if not down:
        return
    parts = [f"replica {loc} {'is unreachable' if err.transient else 'cannot be used'}: {err.message}"
             for loc, err in sorted(down.items())]
    hints = list(dict.fromkeys(err.hint for err in down.values() if not err.transient and err.hint))
    if all(err.transient for err in down.values()):
        parts.append("nothing was backed up (--replica-policy continue backs up to the other replicas and "
                     "reports this one as lagging; 'haeedge sync' repairs it when it is back)")
    raise BackendError("; ".join(parts), hint="; ".join(hints) or None)


def _lagging_replicas(backend: ReplicatedBackend) -> list[dict]:
    """Replicas that missed writes under ``--replica-policy continue``."""
    missed = backend.lagging_objects
    return [{"location": loc, "error": error, "objects_missed": len(missed.get(loc, ()))}
            for loc, error in sorted(backend.lagging.items())]


#: Options that mean nothing for a stream; given on the command line with one, they are a mistake.
_TREE_ONLY = ("excludes", "exclude_files", "iexcludes", "iexclude_files", "exclude_caches", "exclude_if_present",
              "exclude_larger_than", "files_from", "files_from_raw", "skip_if_unchanged", "one_file_system", "full",
              "full_every", "full_if_older_than", "parent")


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
            flag = next(o for p in ctx.command.params if p.name == name for o in p.opts if o.startswith("--"))
            raise UsageError(f"{flag} cannot be used with a stream backup")
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
