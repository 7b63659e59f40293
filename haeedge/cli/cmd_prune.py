"""haeedge prune"""

from __future__ import annotations

import click

from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.cli.shared import parse_max_unused, report_prune
from haeedge.operations.prune import can_mark, prune
from haeedge.repo.marks import parse_grace
from haeedge.ui import messages


@click.command("prune")
@click.option("--max-unused", default="5%", show_default=True, metavar="P%",
              help="Repack packs with more than this share of unused data ('unlimited': never repack).")
@click.option("--grace", metavar="DURATION", default=None,
              help="Delete packs only when a mark made at least this long ago named them "
                   "(default $HAEEDGE_PRUNE_GRACE or 1h; 0s deletes in one run: only when nothing else writes).")
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be deleted and repacked; change nothing.")
@json_option
@pass_app
def command(app: AppContext, max_unused, grace, dry_run) -> None:
    """Delete data that no snapshot needs, and repack mostly-unused packs.

    Runs without a lock, beside backups on any host, in two phases: a run
    marks packs that look unused, and a later run, after the grace period,
    deletes those still unused. New packs and a new index are written before
    anything is deleted, so an interruption at any point loses nothing; run
    it again to finish.

    \b
    Examples:
      haeedge prune --dry-run
      haeedge prune --max-unused 10%
      haeedge prune --grace 6h
    """
    share = parse_max_unused(max_unused)
    grace_s = parse_grace(grace) if grace is not None else None
    with app.open_repo(lock=None, command="prune", load_index=False) as repo:  # prune loads it itself
        if can_mark(repo):
            result = prune(repo, share, dry_run=dry_run, progress=app.progress(), grace=grace_s)
        else:  # a key without an owner signing key: the one-run prune under the exclusive lock
            with repo.lock(exclusive=not dry_run, command="prune"):
                result = prune(repo, share, dry_run=dry_run, progress=app.progress())
    if app.json:
        app.emit(messages.prune(result))
    else:
        report_prune(app, result)
