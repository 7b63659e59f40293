"""haeedge ls"""

from __future__ import annotations

import stat
from datetime import UTC, datetime

import click

from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.repo.tree import get_bytes_field, is_under, path_bytes

_TYPE_CHAR = {"file": "-", "dir": "d", "symlink": "l", "fifo": "p", "socket": "s", "chardev": "c", "blockdev": "b"}


def entry_json(entry: dict) -> dict:
    out = {k: v for k, v in entry.items() if k not in ("chunks", "path", "path_b64", "target", "target_b64")}
    out["path"] = "/" + path_bytes(entry).decode("utf-8", "backslashreplace")
    t = get_bytes_field(entry, "target")
    if t is not None:
        out["target"] = t.decode("utf-8", "backslashreplace")
    out["chunks"] = len(entry.get("chunks") or ())
    return out


@click.command("ls")
@click.argument("snapshot")
@click.argument("path", required=False)
@click.option("-l", "--long", "long_", is_flag=True, help="Long format: mode, owner, size, time.")
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="List below PATH too.")
@json_option
@pass_app
def command(app: AppContext, snapshot, path, long_, recursive) -> None:
    """List the files of a snapshot (optionally below PATH).

    \b
    Examples:
      haeedge ls latest
      haeedge ls 1a2b3c4d /etc --long
    """
    import os

    prefix = os.fsencode(path).strip(b"/") if path else b""
    with app.open_repo(lock=None) as repo:
        snap = repo.resolve_snapshot(snapshot)
        out = []
        for entry in repo.iter_entries(snap):
            rel = path_bytes(entry)
            if prefix:
                if not is_under(rel, [prefix]):
                    continue
                if not recursive and rel != prefix and rel.rpartition(b"/")[0] != prefix:
                    continue
            if app.json:
                out.append(entry_json(entry))
                continue
            name = "/" + rel.decode("utf-8", "backslashreplace")
            if long_:
                mode = _TYPE_CHAR.get(entry["type"], "?") + stat.filemode(entry.get("mode", 0))[1:]
                owner = entry.get("user") or str(entry.get("uid", ""))
                group = entry.get("group") or str(entry.get("gid", ""))
                mtime = datetime.fromtimestamp(entry.get("mtime_ns", 0) / 1e9, UTC)
                target = get_bytes_field(entry, "target")
                suffix = f" -> {target.decode('utf-8', 'backslashreplace')}" if target is not None else ""
                app.out(f"{mode} {owner:>8} {group:>8} {entry.get('size', 0):>12} "
                        f"{mtime:%Y-%m-%d %H:%M:%S} {name}{suffix}")
            else:
                app.out(name)
    if app.json:
        app.emit({"snapshot_id": snap.id, "entries": out})
