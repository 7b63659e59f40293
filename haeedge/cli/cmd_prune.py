"""haeedge prune"""

from __future__ import annotations

import click

from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.errors import UsageError
from haeedge.repo.prune import DEFAULT_MAX_UNUSED, PruneResult, prune
from haeedge.ui.format import human_size, warn


def parse_max_unused(value: str | None) -> float:
    """``5%``, ``0%`` or ``unlimited`` (never repack) as a share."""
    if value is None:
        return DEFAULT_MAX_UNUSED
    v = value.strip().lower()
    if v == "unlimited":
        return 1.0
    try:
        if not v.endswith("%"):
            raise ValueError
        share = float(v[:-1]) / 100
    except ValueError:
        raise UsageError(f"--max-unused: {value!r} is not a percentage like 5% (or 'unlimited')") from None
    if not 0 <= share <= 1:
        raise UsageError(f"--max-unused: {value!r} is not between 0% and 100%")
    return share


def prune_json(r: PruneResult) -> dict:
    return r.to_json()


def report_prune(app: AppContext, r: PruneResult) -> None:
    delete, repack = ("would delete", "would repack") if r.dry_run else ("deleted", "repacked")
    app.out(f"snapshots use {human_size(r.used_bytes)}; {human_size(r.unused_bytes)} in indexed packs is unused")
    app.out(f"{delete} {r.packs_deleted} packs ({r.unindexed_deleted} left by interrupted runs); "
            f"{repack} {r.packs_repacked} packs ({r.blobs_repacked} blobs"
            + (f", into {r.packs_written} new packs)" if not r.dry_run else ")"))
    app.out(f"{'would free' if r.dry_run else 'freed'} {human_size(r.bytes_freed)} "
            f"(repository: {human_size(r.bytes_before)} -> {human_size(r.bytes_before - r.bytes_freed)})")
    if r.packs_retained:
        app.out(f"left {r.packs_retained} packs for a later prune: under Object Lock retention until "
                f"{r.retained_until}")
    for w in r.warnings:
        warn(f"{w}")


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
        app.emit(prune_json(result))
    else:
        report_prune(app, result)
