"""haeedge restore"""

from __future__ import annotations

import click

from haeedge.backends.counting import ReadCountingBackend
from haeedge.cli.context import AppContext, fail_with, json_option, pass_app
from haeedge.cli.selection import latest_options, resolve
from haeedge.errors import ExitCode, HaeedgeError, PathNotFound
from haeedge.restorer import RestoreOptions, Restorer, RestoreResult
from haeedge.restorer.existing import OVERWRITE_MODES
from haeedge.ui import messages
from haeedge.ui.format import human_size


@click.command("restore")
@click.argument("snapshot")
@click.option("-t", "--target", required=True, type=click.Path(), help="Directory to restore into.")
@click.option("-i", "--include", "includes", multiple=True, metavar="PATH",
              help="Restore only PATH (as shown by 'ls') and what is below it (repeatable).")
@click.option("-e", "--exclude", "excludes", multiple=True, metavar="PATTERN", help="Skip entries matching PATTERN.")
@click.option("-n", "--dry-run", is_flag=True, help="List what would be restored, write nothing.")
@click.option("--devices", is_flag=True, help="Create device nodes (needs root). Off by default.")
@click.option("--overwrite", type=click.Choice(OVERWRITE_MODES), default="always", show_default=True,
              help="What to do with entries already in the target: replace them (always), keep those equal to "
                   "the snapshot's (if-changed: same size and mtime, or else same content; files partly written "
                   "are completed), keep those as new or newer (if-newer), or keep everything (never).")
@click.option("--delete", is_flag=True,
              help="Remove what the snapshot does not hold, only below the restored paths (with --dry-run: list it).")
@click.option("--verify", is_flag=True,
              help="Re-read every written file and check it against the snapshot (exit 4 on a mismatch).")
@latest_options()
@json_option
@pass_app
def command(app: AppContext, snapshot, target, includes, excludes, dry_run, devices, overwrite, delete, verify,
            hosts, tags, paths) -> None:
    """Restore a snapshot (an id, a unique id prefix, or 'latest') into a directory.

    Files are restored under TARGET by their full original path. Exits 4 when
    some files were damaged (every intact file is still restored) or --verify
    read one back that differs, 1 when an --include matches nothing in the
    snapshot. An interrupted restore resumes with --overwrite if-changed. With a profile, 'latest' is the
    newest snapshot of the profile's backup (its host, tags and paths).

    \b
    Examples:
      haeedge restore latest --target /tmp/restore
      haeedge restore 1a2b3c4d --target /tmp/r --include /etc/nginx
      haeedge restore latest --host web1 --path /etc --target /tmp/r
      haeedge restore latest --target /srv/r --overwrite if-changed --delete
    """
    progress = app.progress()
    app.location()
    # bytes_read: what a resumed restore did not fetch again; counted below the local cache, so
    # metadata the cache served does not count as read from storage.
    counter = ReadCountingBackend(app.open_locations(app.repos))
    storage = app.with_cache(counter, app.repos)
    with app.open_repo(lock="shared", command="restore", backend=storage) as repo:
        snap = resolve(app, repo, snapshot, hosts, tags, paths)
        restorer = Restorer(repo, RestoreOptions(target=target, includes=list(includes), excludes=list(excludes),
                                                 dry_run=dry_run, devices=devices, overwrite=overwrite,
                                                 delete=delete, verify=verify), progress)
        try:
            result = restorer.run(snap)
        except HaeedgeError:
            if restorer.result.stopped_early:
                _report_stopped(restorer.result)
            raise
    if app.json:
        app.emit(messages.restore(snap, result, overwrite, counter.bytes_read + result.bytes_read_by_workers, dry_run))
    else:
        if dry_run:
            for p in result.planned:
                app.out(f"/{p}")
            for p in result.deleted:
                app.out(f"would delete /{p}")
            app.out(f"would restore {result.files} files, {result.dirs} dirs, {human_size(result.bytes)}"
                    + (f", delete {len(result.deleted)} entries" if delete else ""))
        else:
            app.out(f"restored snapshot {snap.short_id}: {result.files} files, {result.dirs} dirs, "
                    f"{result.others} other entries, {human_size(result.bytes)}")
            _report_existing(app, result, delete, verify)
        _list_damaged(result)
    if result.unmatched:
        app.run.error = f"--include matched nothing: {', '.join(result.unmatched)}"
        raise PathNotFound(f"not in snapshot {snap.short_id}: {', '.join(result.unmatched)} (--include matched "
                           "nothing there)", hint=f"list what it holds with: haeedge ls {snap.short_id}")
    if result.damaged or result.mismatched:
        fail_with(ExitCode.INTEGRITY)
    if result.skipped:
        fail_with(ExitCode.PARTIAL)


def _list_damaged(result: RestoreResult) -> None:
    if result.damaged:
        click.echo(f"haeedge: {len(result.damaged)} damaged files could not be fully restored:", err=True)
        for p in result.damaged:  # every one: an operator must know exactly what to recover elsewhere
            click.echo(f"  /{p}", err=True)
    if result.mismatched:
        click.echo(f"haeedge: {len(result.mismatched)} files read back differ from the snapshot (--verify):",
                   err=True)
        for p in result.mismatched:
            click.echo(f"  /{p}", err=True)


def _report_existing(app: AppContext, result: RestoreResult, delete: bool, verify: bool) -> None:
    if result.unchanged or result.kept:
        app.out(f"already in the target: {result.unchanged} unchanged, {result.kept} kept as they were "
                f"({human_size(result.bytes_skipped)} not fetched)")
    if delete:
        app.out(f"deleted {len(result.deleted)} entries the snapshot does not hold")
    if verify:
        app.out(f"verified {result.verified} files: {len(result.mismatched)} differ")


def _report_stopped(result: RestoreResult) -> None:
    """The error that follows says why; this says what is on disk: whole files and the named damaged ones."""
    click.echo(f"haeedge: restore stopped early: {result.files} files were reached and written "
               "(entries after them in the snapshot were not restored)", err=True)
    _list_damaged(result)
