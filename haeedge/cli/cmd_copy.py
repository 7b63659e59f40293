"""haeedge copy"""

from __future__ import annotations

import dataclasses

import click

from haeedge.cli.context import AppContext, fail_with, json_option, pass_app
from haeedge.cli.selection import filter_snapshots, latest_options, resolve
from haeedge.errors import ExitCode
from haeedge.operations.copy import SnapshotCopier
from haeedge.ui import messages
from haeedge.ui.format import human_size


@click.command("copy")
@click.argument("snapshots", nargs=-1, metavar="[SNAPSHOT]...")
@click.option("--to", "to", multiple=True, required=True, metavar="LOCATION",
              help="The target repository (repeat for a replicated one). It must exist ('haeedge init').")
@click.option("--to-password-file", envvar="HAEEDGE_TO_PASSWORD_FILE", metavar="FILE",
              help="The target's password (default: the source's). [env: HAEEDGE_TO_PASSWORD_FILE]")
@latest_options()
@json_option
@pass_app
def command(app: AppContext, snapshots, to, to_password_file, hosts, tags, paths) -> None:
    """Copy snapshots, with the chains they belong to, into another repository.

    Every chunk is decrypted with the source's keys and stored with the
    target's, re-hashed with the target's id key, so what the target already
    holds is not stored again. Without SNAPSHOT arguments every snapshot is
    copied (those --host, --tag and --path choose); snapshots copied before are
    skipped. Exits 4 when some snapshot could not be copied because its data
    is damaged in the source.

    \b
    Examples:
      haeedge -r /srv/backup copy --to sftp://fog1/srv/backup --to-password-file ~/.fog-pw
      haeedge copy --to s3://bucket/offsite latest
    """
    target_app = dataclasses.replace(
        app, repos=list(to),
        password_file=to_password_file or app.password_file,
        password_command=None if to_password_file else app.password_command,
        # A target with its own password is opened with it, not with the source's secret key.
        identity_file=None if to_password_file else app.identity_file)
    progress = app.progress()
    with app.open_repo(lock="shared", command="copy") as source:
        selected = ([resolve(app, source, ref, hosts, tags, paths) for ref in snapshots] if snapshots
                    else filter_snapshots(source.trusted_snapshots(source.list_snapshots()), hosts, tags, paths))
        with target_app.open_repo(lock="shared", command="copy") as target:
            target.begin_backup()  # a prune may run on the target: as a backup (docs/lifecycle.md)
            result = SnapshotCopier(source, target, progress).run(selected)
    if app.json:
        app.emit(messages.copy(result))
    else:
        for s, t in result.copied:
            app.out(f"copied {s[:8]} -> {t[:8]}")
        for s, t in result.skipped:
            app.out(f"skipped {s[:8]}: already copied as {t[:8]}")
        app.out(f"{len(result.copied)} snapshots copied, {len(result.skipped)} already there; "
                f"{result.chunks_read} chunks read ({human_size(result.raw_bytes_read)}), "
                f"{result.chunks_deduplicated} already in the target; added {human_size(result.bytes_added)}")
    for s, e in result.failed:
        click.echo(f"haeedge: snapshot {s[:8]} not copied: {e}", err=True)
    if result.failed:
        app.run.error = f"{len(result.failed)} snapshots not copied"
        fail_with(ExitCode.INTEGRITY)
