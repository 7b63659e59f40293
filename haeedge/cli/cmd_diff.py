"""haeedge diff"""

from __future__ import annotations

from collections.abc import Iterator
from operator import attrgetter

import click

from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.cli.selection import latest_options, resolve
from haeedge.repo.tree import Node, is_under, sort_key
from haeedge.repo.tree_cache import TreeBlobCache
from haeedge.ui import messages
from haeedge.ui.format import human_size

#: What a file *is*: a change here is a modification.
CONTENT_FIELDS = ("type", "size", "rdev", "damaged")
#: What restore sets besides the content: a change only here is "metadata only".
#: ctime, inode and the hardlink key change whenever a file is copied or restored, so they are not compared.
METADATA_FIELDS = ("mode", "uid", "gid", "user", "group", "mtime_ns", "nlink")
_content = attrgetter(*CONTENT_FIELDS)
_metadata = attrgetter(*METADATA_FIELDS)


def classify(a: Node, b: Node) -> str | None:
    """``modified``, ``metadata`` or None (same) for two entries at one path."""
    if _content(a) != _content(b):
        return "modified"
    if [c[0] for c in a.chunks or ()] != [c[0] for c in b.chunks or ()]:
        return "modified"
    if a.target != b.target:
        return "modified"
    if _metadata(a) != _metadata(b):
        return "metadata"
    return None


def diff_entries(old: Iterator[Node], new: Iterator[Node]) -> Iterator[tuple[str, Node | None, Node | None]]:
    """Merge two sorted file lists: (``added``|``removed``|``modified``|``metadata``, old, new)."""
    a, b = next(old, None), next(new, None)
    while a is not None or b is not None:
        ka = sort_key(a.path) if a is not None else None
        kb = sort_key(b.path) if b is not None else None
        if b is None or (a is not None and ka < kb):
            yield "removed", a, None
            a = next(old, None)
        elif a is None or kb < ka:
            yield "added", None, b
            b = next(new, None)
        else:
            change = classify(a, b)
            if change:
                yield change, a, b
            a, b = next(old, None), next(new, None)


_MARK = {"added": "+", "removed": "-", "modified": "M", "metadata": "U"}


@click.command("diff")
@click.argument("snapshot1")
@click.argument("snapshot2")
@click.option("--path", "prefix", metavar="PATH", help="Compare only PATH and what is below it.")
@click.option("--no-metadata", is_flag=True, help="Do not list metadata-only changes (still counted).")
@latest_options(with_path=False)
@json_option
@pass_app
def command(app: AppContext, snapshot1, snapshot2, prefix, no_metadata, hosts, tags) -> None:
    """Show what changed between two snapshots.

    Each path is marked + (added), - (removed), M (modified: content, type or
    link target) or U (metadata only: mode, owner or modification time).

    \b
    Examples:
      haeedge diff 1a2b3c4d latest
      haeedge diff 1a2b3c4d 5e6f7a8b --path /etc --json
    """
    import os

    rel = os.fsencode(prefix).strip(b"/") if prefix else b""

    def within(entries: Iterator[Node]) -> Iterator[Node]:
        return (e for e in entries if not rel or is_under(e.path, [rel]))

    lists: dict[str, list[str]] = {"added": [], "removed": [], "modified": [], "metadata": []}
    bytes_added = bytes_removed = 0
    with app.open_repo(lock=None) as repo:
        s1 = resolve(app, repo, snapshot1, hosts, tags)
        s2 = resolve(app, repo, snapshot2, hosts, tags)
        cache = TreeBlobCache(repo)
        for change, a, b in diff_entries(within(cache.entries(s1)), within(cache.entries(s2))):
            path = "/" + (a if a is not None else b).path.decode("utf-8", "backslashreplace")
            lists[change].append(path)
            if change in ("added", "modified") and b is not None:
                bytes_added += (b.size or 0) if b.type == "file" else 0
            if change in ("removed", "modified") and a is not None:
                bytes_removed += (a.size or 0) if a.type == "file" else 0
            if not app.json and not (change == "metadata" and no_metadata):
                app.out(f"{_MARK[change]}    {path}")
    counts = {k: len(v) for k, v in lists.items()}
    if app.json:
        app.emit(messages.diff(s1, s2, lists, no_metadata, bytes_added, bytes_removed))
        return
    app.out(f"\n{s1.short_id} -> {s2.short_id}: {counts['added']} added, {counts['removed']} removed, "
            f"{counts['modified']} modified, {counts['metadata']} metadata only; "
            f"{human_size(bytes_added)} added, {human_size(bytes_removed)} removed")
