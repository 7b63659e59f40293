"""haeedge find"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

import click

from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.cli.selection import select_snapshots
from haeedge.repo.tree_cache import TreeBlobCache
from haeedge.ui import messages
from haeedge.ui.format import human_size


def matcher(patterns: tuple[str, ...], ignore_case: bool) -> Callable[[str], bool]:
    """A glob matches the name, or the whole path when it contains '/' (as --exclude does)."""
    pats = [p.lower() if ignore_case else p for p in patterns]

    def match(path: str) -> bool:
        p = path.lower() if ignore_case else path
        name = p.rsplit("/", 1)[-1]
        for pat in pats:
            if "/" in pat:
                if fnmatch.fnmatchcase(p, pat if pat.startswith("/") else "*/" + pat) or fnmatch.fnmatchcase(p, pat):
                    return True
            elif fnmatch.fnmatchcase(name, pat):
                return True
        return False

    return match


@click.command("find")
@click.argument("patterns", nargs=-1, required=True)
@click.option("-s", "--snapshot", "snapshots", multiple=True, metavar="SNAPSHOT",
              help="Search only this snapshot (repeatable; default: all).")
@click.option("--host", "hosts", multiple=True, help="Only snapshots of this host (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Only snapshots with this tag (repeatable).")
@click.option("--path", "paths", multiple=True, help="Only snapshots that include this path.")
@click.option("-i", "--ignore-case", is_flag=True, help="Match without regard to case.")
@click.option("--type", "types", multiple=True,
              type=click.Choice(["file", "dir", "symlink", "fifo", "socket", "chardev", "blockdev"]),
              help="Only entries of this type (repeatable).")
@click.option("-l", "--long", "long_", is_flag=True, help="Show size and modification time.")
@json_option
@pass_app
def command(app: AppContext, patterns, snapshots, hosts, tags, paths, ignore_case, types, long_) -> None:
    """Find files by name or path glob across snapshots.

    A PATTERN without '/' matches file names ('*.conf'); with '/', whole paths
    ('/etc/nginx/*'). Several patterns match any.

    \b
    Examples:
      haeedge find '*.sql'
      haeedge find --host web1 -i 'nginx*.conf' '/etc/ssl/*'
    """
    from datetime import UTC, datetime

    match = matcher(patterns, ignore_case)
    results = []
    total = hit_snapshots = 0
    with app.open_repo(lock=None) as repo:
        cache = TreeBlobCache(repo)
        for snap in select_snapshots(repo, snapshots, hosts, tags, paths):
            found = []
            for entry in cache.entries(snap):
                if types and entry.type not in types:
                    continue
                path = "/" + entry.path.decode("utf-8", "backslashreplace")
                if match(path):
                    found.append(entry)
            if not found:
                continue
            total += len(found)
            hit_snapshots += 1
            if app.json:
                results.append(messages.find_snapshot(snap, found))
                continue
            app.out(f"snapshot {snap.short_id} ({snap.time[:19].replace('T', ' ')}, {snap.host}):")
            for e in found:
                path = "/" + e.path.decode("utf-8", "backslashreplace")
                if long_:
                    mtime = datetime.fromtimestamp((e.mtime_ns or 0) / 1e9, UTC)
                    app.out(f"  {e.type:<8} {human_size(e.size or 0):>10}  {mtime:%Y-%m-%d %H:%M:%S}  {path}")
                else:
                    app.out(f"  {path}")
    if app.json:
        app.emit(messages.find(patterns, total, results))
    else:
        app.out(f"{total} matches in {hit_snapshots} snapshots")
