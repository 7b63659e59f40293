"""haeedge backup"""

from __future__ import annotations

import click

from haeedge.archiver import Archiver, BackupOptions
from haeedge.cli.context import AppContext, fail_with, json_option, pass_app
from haeedge.durations import parse_duration
from haeedge.errors import ExitCode, UsageError
from haeedge.ui.format import human_size


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
@json_option
@pass_app
def command(app: AppContext, paths, excludes, exclude_files, one_file_system, tags, host, dry_run, full,
            full_every, full_if_older_than, compression, parent) -> None:
    """Back up files and directories into a new snapshot.

    Exits 3 when some files could not be read (the snapshot is still saved).

    \b
    Examples:
      haeedge backup /etc /home --exclude '*.tmp' --tag nightly
      haeedge backup --full /srv/data
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
    progress = app.progress()
    with app.open_repo(lock="shared", command="backup") as repo:
        result = Archiver(repo, opts, progress).run()
    s = result.summary
    snap = result.snapshot
    if app.json:
        app.emit({"message_type": "summary", "snapshot_id": snap.id if snap else None, "dry_run": dry_run,
                  "parent": snap.parent if snap else None, **s, "warnings": result.warnings})
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
    if result.partial:
        fail_with(ExitCode.PARTIAL)
