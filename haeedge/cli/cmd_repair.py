"""haeedge repair index | snapshots"""

from __future__ import annotations

import click

from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.operations.repair import repair_index, repair_snapshots
from haeedge.ui import messages
from haeedge.ui.format import warn


@click.group("repair")
def command() -> None:
    """Rebuild a damaged index, or rewrite damaged snapshots so what survives restores.

    \b
    Examples:
      haeedge repair index
      haeedge repair snapshots --dry-run
    """


@command.command("index")
@click.option("--read-all-packs", is_flag=True, help="Read every pack's header, not only those the index lacks.")
@click.option("-n", "--dry-run", is_flag=True, help="Show what the new index would hold; write nothing.")
@json_option
@pass_app
def index_command(app: AppContext, read_all_packs, dry_run) -> None:
    """Rebuild the index from the packs on storage (their headers).

    \b
    Example:
      haeedge repair index --read-all-packs
    """
    with app.open_repo(lock="shared" if dry_run else "exclusive", command="repair index", load_index=False) as repo:
        r = repair_index(repo, read_all_packs=read_all_packs, dry_run=dry_run, progress=app.progress())
    if app.json:
        app.emit(messages.repair_index(r))
        return
    app.out(f"{'would index' if dry_run else 'indexed'} {r.blobs} blobs in {r.packs} packs "
            f"({r.headers_read} pack headers read)")
    for pack_id, why in r.unreadable_packs.items():
        warn(f"pack {pack_id[:16]}: header unreadable, its blobs are lost: {why}")
    if r.vanished_packs:
        app.out(f"dropped {len(r.vanished_packs)} packs the index listed but storage lacks")
    if r.unreadable_index:
        app.out(f"replaced {len(r.unreadable_index)} unreadable index objects")
    if not dry_run:
        app.out(f"wrote index {r.new_index[:8] if r.new_index else '-'}, removed {r.index_objects_deleted} old ones; "
                "next: 'haeedge verify', and 'haeedge repair snapshots' if data is missing")


@command.command("snapshots")
@click.option("-n", "--dry-run", is_flag=True, help="Show which snapshots and files are damaged; write nothing.")
@json_option
@pass_app
def snapshots_command(app: AppContext, dry_run) -> None:
    """Rewrite damaged snapshots: files with lost data are kept and marked damaged.

    Reads all data (like 'verify --read-data') to find missing and damaged
    blobs. Each damaged snapshot is replaced by one in which those files are
    marked damaged (restored with zeros where data was lost, and listed by
    'restore'); everything else stays restorable and 'verify' passes again.

    \b
    Example:
      haeedge repair snapshots
    """
    with app.open_repo(lock="shared" if dry_run else "exclusive", command="repair snapshots") as repo:
        r = repair_snapshots(repo, dry_run=dry_run, progress=app.progress())
    if app.json:
        app.emit(messages.repair_snapshots(r))
        return
    for x in r.repaired:
        arrow = f" -> {x.new_id[:8]}" if x.new_id else ""
        app.out(f"snapshot {x.old_id[:8]}{arrow}: {len(x.damaged_files)} damaged files"
                + (f", {len(x.lost_ranges)} unreadable parts of the file list" if x.lost_ranges else "")
                + (", parent missing: now a full snapshot of what it holds" if x.broken_chain else ""))
        for p in x.damaged_files[:20]:
            app.out(f"    damaged {p}")
        for lo, hi in x.lost_ranges_text():
            app.out(f"    entries between {lo or '(start)'} and {hi or '(end)'} could not be read")
    for sid, why in r.unreadable.items():
        app.out(f"snapshot {sid[:8]}: unreadable ({why}); {'would be ' if dry_run else ''}removed")
    verb = "would rewrite" if dry_run else "rewrote"
    app.out(f"{len(r.repaired)} of {r.snapshots} snapshots damaged ({r.bad_blobs} missing or damaged blobs); "
            f"{verb} {len(r.rewritten) or len(r.repaired)} snapshots")
    if r.packs_replaced:
        app.out(f"replaced {r.packs_replaced} damaged packs by copies of their intact blobs")
    for w in r.warnings:
        warn(f"{w}")
