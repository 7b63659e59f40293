"""haeedge snapshots"""

from __future__ import annotations

import click

from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.cli.selection import select_snapshots
from haeedge.ui import messages
from haeedge.ui.format import human_size, table, warn


@click.command("snapshots")
@click.option("--host", "hosts", multiple=True, help="Only snapshots of this host (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Only snapshots with this tag (repeatable; any matches).")
@click.option("--path", "paths", multiple=True, help="Only snapshots that include this path.")
@json_option
@pass_app
def command(app: AppContext, hosts, tags, paths) -> None:
    """List snapshots with their kind, chain and size.

    \b
    Example:
      haeedge snapshots --host web1 --json
    """
    with app.open_repo(lock=None, load_index=False) as repo:
        snaps = select_snapshots(repo, (), hosts, tags, paths, trusted_only=False)
        registry = repo.registry()  # who signed each snapshot (repo/signing.py)
        signed = {s.id: registry.check_snapshot(s) for s in snaps}
    if app.json:
        app.emit(messages.snapshots(snaps, signed))
        return
    rows = []
    for s in snaps:
        chain = s.chain_root[:8] if s.kind != "full" else "-"
        rows.append([s.short_id, s.time[:19].replace("T", " "), s.host, s.kind, chain,
                     human_size(s.summary.get("bytes_total", 0)), human_size(s.summary.get("bytes_added", 0)),
                     ",".join(s.tags), signed[s.id].label(), " ".join(s.paths)])
    app.out(table(["ID", "Time (UTC)", "Host", "Kind", "Chain", "Size", "Added", "Tags", "Signed by", "Paths"], rows))
    bad = [s for s in snaps if not signed[s.id].ok]
    if bad:
        warn(f"{len(bad)} snapshots are untrusted: unsigned or not signed by a key the owner trusts for their "
             "host; other commands ignore them ('haeedge verify' explains each)")
    app.out(f"{len(snaps)} snapshots")
