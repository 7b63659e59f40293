"""haeedge prune"""

from __future__ import annotations

import click

from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.cli.shared import parse_max_unused, report_prune
from haeedge.repo.prune import prune


@click.command("prune")
@click.option("--max-unused", default="5%", show_default=True, metavar="P%",
              help="Repack packs with more than this share of unused data ('unlimited': never repack).")
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be deleted and repacked; change nothing.")
@json_option
@pass_app
def command(app: AppContext, max_unused, dry_run) -> None:
    """Delete data that no snapshot needs, and repack mostly-unused packs.

    New packs and a new index are written before anything is deleted, so an
    interruption at any point loses nothing; run it again to finish.

    \b
    Examples:
      haeedge prune --dry-run
      haeedge prune --max-unused 10%
    """
    share = parse_max_unused(max_unused)
    with app.open_repo(lock="shared" if dry_run else "exclusive", command="prune") as repo:
        result = prune(repo, share, dry_run=dry_run, progress=app.progress())
    if app.json:
        app.emit(result.to_json())
    else:
        report_prune(app, result)
