"""haeedge rewrite"""

from __future__ import annotations

import click

from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.cli.selection import all_snapshots, select_snapshots
from haeedge.operations.rewrite import KEEP, REBASE, build_matcher, rewrite_paths
from haeedge.ui import messages
from haeedge.ui.format import human_size

#: Removed paths printed per snapshot in the text output (--json lists up to 1000).
SHOWN_PATHS = 20


@click.command("rewrite")
@click.argument("snapshots", nargs=-1, metavar="[SNAPSHOT]...")
@click.option("-e", "--exclude", "excludes", multiple=True, metavar="PATTERN",
              help="Remove paths matching PATTERN, as backup's --exclude (a name glob, or a path glob with a "
                   "'/'); repeatable.")
@click.option("--exclude-file", "exclude_files", multiple=True, type=click.Path(), metavar="FILE",
              help="Read patterns from FILE.")
@click.option("--iexclude", "iexcludes", multiple=True, metavar="PATTERN",
              help="Remove paths matching PATTERN, ignoring case.")
@click.option("--iexclude-file", "iexclude_files", multiple=True, type=click.Path(), metavar="FILE",
              help="Read case-insensitive patterns from FILE.")
@click.option("--host", "hosts", multiple=True, metavar="HOST", help="Only snapshots of this host (repeatable).")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Only snapshots with this tag (repeatable).")
@click.option("--path", "paths", multiple=True, metavar="PATH", help="Only snapshots that include PATH.")
@click.option("--keep-old", is_flag=True, help="Keep the original snapshots (listed beside the rewritten ones).")
@click.option("-n", "--dry-run", is_flag=True, help="List what would be removed from each snapshot; change nothing.")
@json_option
@pass_app
def command(app: AppContext, snapshots, excludes, exclude_files, iexcludes, iexclude_files, hosts, tags, paths,
            keep_old, dry_run) -> None:
    """Remove paths from existing snapshots (a secret backed up by mistake).

    Without SNAPSHOT ids, every snapshot that passes --host/--tag/--path is
    rewritten. Incrementals built on a rewritten snapshot are rewritten too
    (they lose the paths as well) and get new ids; snapshots that hold none
    of the paths anywhere in their chain keep theirs. The new snapshots are
    signed by the owner key; the originals are forgotten unless --keep-old.
    Run 'prune' afterwards to free the data only they used.

    \b
    Examples:
      haeedge rewrite --exclude '/home/*/.aws/credentials' --dry-run
      haeedge rewrite --exclude secret.key --host web1 && haeedge prune
      haeedge rewrite 1a2b3c4d --exclude '*.pem' --keep-old
    """
    match, pats, ipats = build_matcher(list(excludes), list(exclude_files), list(iexcludes), list(iexclude_files))
    lock = "shared" if dry_run else "exclusive"
    with app.open_repo(lock=lock, command="rewrite") as repo:
        everything = all_snapshots(repo, include_hidden=True)  # trusted only: never re-sign a forgery
        chosen = select_snapshots(repo, tuple(snapshots), tuple(hosts), tuple(tags), tuple(paths))
        r = rewrite_paths(repo, chosen, everything, match, excludes=pats, iexcludes=ipats, keep_old=keep_old,
                          dry_run=dry_run, progress=app.progress())
    if app.json:
        app.emit(messages.rewrite(r, {KEEP: "relink"}))
        return
    for x in r.rewritten:
        arrow = f" -> {x.new_id[:8]}" if x.new_id else ""
        how = {KEEP: "re-linked (below a rewritten snapshot)",
               REBASE: "becomes a full snapshot (its older, unchosen chain holds the paths)"}.get(x.action, "")
        verb = "would remove" if dry_run else "removed"
        line = f"snapshot {x.old_id[:8]}{arrow}  {x.time[:19].replace('T', ' ')}  {x.host}: "
        line += f"{verb} {x.removed_entries} entries ({human_size(x.removed_bytes)})"
        app.out(line + (f"; {how}" if how else ""))
        for p in x.removed_paths[:SHOWN_PATHS]:
            app.out(f"    {p}")
        if x.removed_entries > SHOWN_PATHS:
            app.out(f"    ... and {x.removed_entries - SHOWN_PATHS} more")
    total = sum(x.removed_bytes for x in r.rewritten)
    verb = "would rewrite" if dry_run else "rewrote"
    app.out(f"{verb} {len(r.rewritten)} snapshots ({human_size(total)} of files removed from their lists); "
            f"{len(r.unchanged)} of {r.chosen} chosen unchanged")
    if r.forget is not None:
        app.out(f"forgot {len(r.forget.removed) + len(r.forget.released)} original snapshots; "
                "run 'haeedge prune' to free their data")
    elif keep_old and r.rewritten and not dry_run:
        app.out("the original snapshots were kept (--keep-old): 'haeedge forget' them before 'prune' frees "
                "their data")
