"""haeedge dump"""

from __future__ import annotations

import sys
from typing import BinaryIO

import click

from haeedge.cli.context import AppContext, fail_with, json_option, pass_app
from haeedge.cli.selection import latest_options, resolve
from haeedge.errors import ExitCode, UsageError
from haeedge.operations.dump import plan_dump, write_dump
from haeedge.ui import messages
from haeedge.ui.format import warn as warn_line


@click.command("dump")
@click.argument("snapshot")
@click.argument("path_in_snapshot", metavar="PATH")  # not "path": --path chooses the snapshot
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Write to FILE instead of standard output.")
@latest_options()
@json_option
@pass_app
def command(app: AppContext, snapshot, path_in_snapshot, output, hosts, tags, paths) -> None:
    """Write a file of a snapshot to stdout, or a directory as a tar stream.

    A stream saved with --stdin-filename db.sql is found as 'db.sql' and as
    '/db.sql'. Directories (and '/' for the whole snapshot) become a POSIX tar
    archive whose member names are the original paths without the leading '/'.
    With --json, a summary object goes to stdout when --output is given, else
    to stderr (stdout carries the data). With a profile, 'latest' is the newest
    snapshot of the profile's backup (its host, tags and paths).

    \b
    Examples:
      haeedge dump latest db.sql | psql mydb
      haeedge dump latest /postgres/app.dump | pg_restore -d app_restored
      haeedge dump latest --path /postgres/app.dump /postgres/app.dump > app.dump
      haeedge dump 1a2b3c4d /etc > etc.tar
    """
    path = path_in_snapshot
    if output is None and sys.stdout.isatty() and not app.json:
        raise UsageError("refusing to write file data to a terminal", hint="redirect stdout or use --output FILE")
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        warn_line(msg)  # a JSON line under --json

    with app.open_repo(lock=None) as repo:
        snap = resolve(app, repo, snapshot, hosts, tags, paths)
        plan = plan_dump(repo, snap, path)
        out: BinaryIO = open(output, "wb") if output else sys.stdout.buffer  # noqa: SIM115 - closed below
        try:
            r = write_dump(repo, plan, out, warn)
        finally:
            if output:
                out.close()
    shown, kind, count, nbytes, damaged = r.shown, r.kind, r.count, r.nbytes, r.damaged
    summary = messages.dump(snap.id, shown, kind, count, nbytes, damaged, warnings, output)
    if app.json:
        if output:
            app.emit(summary)
        else:
            import json

            click.echo(json.dumps(summary, sort_keys=True, allow_nan=False), err=True)
    elif output:
        app.out(f"wrote {shown} of snapshot {snap.short_id} to {output} "
                f"({'tar, ' if kind == 'tar' else ''}{nbytes} bytes)")
    if damaged:
        app.run.error = f"{len(damaged)} damaged files left out"
        fail_with(ExitCode.INTEGRITY)
