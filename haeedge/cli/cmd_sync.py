"""haeedge sync"""

from __future__ import annotations

import click

from haeedge.backends.replicated import audit_replicas, sync_replicas
from haeedge.cli.context import AppContext, fail_with, json_option, pass_app
from haeedge.errors import BackendError, ExitCode, UsageError
from haeedge.ui import messages
from haeedge.ui.format import human_size


@click.command("sync")
@click.option("--deep", is_flag=True,
              help="Also read and hash every object on every replica, and replace damaged copies.")
@click.option("-n", "--dry-run", is_flag=True, help="Only report what each replica lacks; copy nothing.")
@json_option
@pass_app
def command(app: AppContext, deep: bool, dry_run: bool) -> None:
    """Repair the replicas of a replicated repository (-r given once per replica).

    Copies to each replica what it lacks or holds with the wrong size (with
    --deep: holds damaged), from a replica whose copy hashes to its name, so a
    damaged copy never spreads. A replica that is still down is reported and
    left for the next run. Exits 3 when some replica could not be reached or
    written, 4 when some object has no intact copy on any replica.

    \b
    Examples:
      haeedge -r s3://bucket/repo -r sftp://fog1/srv/repo -r /mnt/backup sync
      haeedge sync --deep --json
    """
    if len(app.repos) < 2:
        raise UsageError("sync needs a replicated repository: give -r once per replica")
    # A replica that is still down must not stop the others' repair (its own is reported).
    app.replica_policy = "continue"
    progress = app.progress()
    backend = app.open_locations(app.repos)  # the replicas themselves: no metadata cache in between
    try:
        _refuse_mixed_repositories(backend)  # before opening: mixed key slots would only confuse that
    except BaseException:
        backend.close()
        raise
    with app.open_repo(lock="shared", command="sync", load_index=False, backend=backend):
        if dry_run:
            audit = audit_replicas(backend, deep=deep)
            report = None
        else:
            progress.start("sync")
            try:
                report = sync_replicas(backend, progress=lambda _done, _total, _name: progress.advance(files=1),
                                       deep=deep)
            finally:
                progress.finish()
            assert report.audit is not None
            audit = report.audit

    replicas = []
    for a in audit.replicas:
        needs = [n for n in [*a.missing, *a.size_mismatch, *a.corrupt] if not n.startswith("locks/")]
        copied = report.copied.get(a.location, []) if report else []
        unwritable = report.unwritable.get(a.location) if report else None
        replicas.append(messages.sync_replica(a.location, a.objects, len(set(needs)), len(a.corrupt), len(copied),
                                              a.error or (f"cannot write: {unwritable}" if unwritable else None)))
    if app.json:
        app.emit(messages.sync(dry_run, deep, replicas, report))
    else:
        for r in replicas:
            if report is not None and r["location"] in report.unwritable:
                state = f"not repaired, {r['lacking']} objects still missing"
            elif r["error"]:
                state = f"unreachable: {r['error']}"
            elif dry_run:
                state = f"lacks {r['lacking']} objects" if r["lacking"] else "up to date"
            else:
                state = f"copied {r['copied']} objects" if r["copied"] else "up to date"
            app.out(f"replica {r['location']}: {state}")
        if report is not None:
            app.out(f"copied {report.objects_copied} objects ({human_size(report.bytes_copied)})")
    if report is None:
        return
    for loc, e in sorted(report.unwritable.items()):
        click.echo(f"haeedge: error: replica {loc} cannot be written, so it was not repaired: {e}", err=True)
    for n, loc, e in report.failed:
        click.echo(f"haeedge: cannot copy {n} to {loc}: {e}", err=True)
    for n in report.conflicts:
        click.echo(f"haeedge: replicas hold different copies of {n}; none was overwritten", err=True)
    for n in report.unrecoverable:
        click.echo(f"haeedge: no replica holds an intact copy of {n}", err=True)
    if report.unrecoverable:
        app.run.error = f"{len(report.unrecoverable)} objects have no intact copy"
        fail_with(ExitCode.INTEGRITY)
    if report.failed or report.unreachable or report.unwritable or report.conflicts:
        app.run.error = "some replicas could not be repaired"
        fail_with(ExitCode.PARTIAL)


def _refuse_mixed_repositories(backend) -> None:
    """Locations that hold different repositories must never be merged.

    ``config`` is written once by ``init`` and copied byte for byte, so every
    replica of one repository holds the same bytes; two repositories differ
    (each is sealed with a random salt).
    """
    seen: dict[bytes, str] = {}
    for r in backend.replicas:
        try:
            seen.setdefault(r.get("config"), r.location)
        except BackendError:
            continue  # absent (a new, empty replica) or unreachable (reported by the sync)
    if len(seen) > 1:
        raise UsageError("these locations hold different repositories: " + ", ".join(seen.values()),
                         hint="give -r only for the replicas of one repository")
