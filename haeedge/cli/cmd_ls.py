"""haeedge ls"""

from __future__ import annotations

import stat
from datetime import UTC, datetime

import click

from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.cli.selection import latest_options, resolve
from haeedge.errors import PathNotFound
from haeedge.repo.tree import is_under
from haeedge.ui import messages

_TYPE_CHAR = {"file": "-", "dir": "d", "symlink": "l", "fifo": "p", "socket": "s", "chardev": "c", "blockdev": "b"}


@click.command("ls")
@click.argument("snapshot")
@click.argument("path_in_snapshot", metavar="[PATH]", required=False)  # not "path": --path chooses the snapshot
@click.option("-l", "--long", "long_", is_flag=True, help="Long format: mode, owner, size, time.")
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="List below PATH too.")
@latest_options()
@json_option
@pass_app
def command(app: AppContext, snapshot, path_in_snapshot, long_, recursive, hosts, tags, paths) -> None:
    """List the files of a snapshot (optionally below PATH).

    Exits 1 when PATH is not in the snapshot. With a profile, 'latest' is the
    newest snapshot of the profile's backup (its host, tags and paths).

    \b
    Examples:
      haeedge ls latest
      haeedge ls 1a2b3c4d /etc --long
      haeedge ls latest --host web1 --path /etc /etc/nginx
    """
    import os

    prefix = os.fsencode(path_in_snapshot).strip(b"/") if path_in_snapshot else b""
    with app.open_repo(lock=None) as repo:
        snap = resolve(app, repo, snapshot, hosts, tags, paths)
        out = []
        found = False
        for entry in repo.iter_entries(snap):
            rel = entry.path
            if prefix:
                if not is_under(rel, [prefix]):
                    continue
                found = True
                if not recursive and rel != prefix and rel.rpartition(b"/")[0] != prefix:
                    continue
            if app.json:
                out.append(messages.entry(entry))
                continue
            name = "/" + rel.decode("utf-8", "backslashreplace")
            if long_:
                mode = _TYPE_CHAR.get(entry.type, "?") + stat.filemode(entry.mode or 0)[1:]
                owner = entry.user or str(entry.uid if entry.uid is not None else "")
                group = entry.group or str(entry.gid if entry.gid is not None else "")
                mtime = datetime.fromtimestamp((entry.mtime_ns or 0) / 1e9, UTC)
                target = entry.target
                suffix = f" -> {target.decode('utf-8', 'backslashreplace')}" if target is not None else ""
                app.out(f"{mode} {owner:>8} {group:>8} {entry.size or 0:>12} "
                        f"{mtime:%Y-%m-%d %H:%M:%S} {name}{suffix}")
            else:
                app.out(name)
    if prefix and not found:
        shown = "/" + prefix.decode("utf-8", "backslashreplace")
        raise PathNotFound(f"{shown}: not in snapshot {snap.short_id}",
                           hint=f"list what it holds with: haeedge ls {snap.short_id}")
    if app.json:
        app.emit(messages.ls(snap.id, out))
