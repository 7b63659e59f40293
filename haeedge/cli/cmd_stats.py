"""haeedge stats"""

from __future__ import annotations

from dataclasses import dataclass, field

import click

from haeedge.backends.base import NAMESPACES
from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.cli.selection import select_snapshots
from haeedge.repo.repository import Repository
from haeedge.repo.snapshot import Snapshot
from haeedge.repo.tree_cache import TreeBlobCache
from haeedge.ui import messages
from haeedge.ui.format import human_size, table


@dataclass
class Usage:
    """Sizes of one snapshot or a set of them. Blob sets make shared data count once."""

    files: int = 0
    raw_size: int = 0  # bytes of file data a restore writes
    data_blobs: set[str] = field(default_factory=set)
    tree_blobs: set[str] = field(default_factory=set)

    def add_snapshot(self, repo: Repository, cache: TreeBlobCache, snap: Snapshot) -> None:
        seen_links: set[str] = set()
        for s in repo.chain_of(snap):
            self.tree_blobs.update(s.tree)
        for e in cache.entries(snap):
            if e.type != "file":
                continue
            self.files += 1
            link = e.hardlink
            if link:
                if link in seen_links:
                    continue  # one inode, restored once
                seen_links.add(link)
            self.raw_size += e.size or 0
            self.data_blobs.update(c[0] for c in e.chunks or ())

    def merge(self, other: Usage) -> None:
        self.files += other.files
        self.raw_size += other.raw_size
        self.data_blobs |= other.data_blobs
        self.tree_blobs |= other.tree_blobs

    def sizes(self, repo: Repository) -> dict:
        """Deduplicated (unique) and stored sizes from the index; ratios as plain numbers."""
        unique = stored_data = stored_tree = missing = 0
        for bid in self.data_blobs:
            loc = repo.lookup_blob(bytes.fromhex(bid))
            if loc is None:
                missing += 1
                continue
            unique += loc.raw_length
            stored_data += loc.length
        for bid in self.tree_blobs:
            loc = repo.lookup_blob(bytes.fromhex(bid))
            if loc is None:
                missing += 1
                continue
            stored_tree += loc.length
        stored = stored_data + stored_tree
        return {
            "files": self.files,
            "raw_size": self.raw_size,
            "unique_size": unique,
            "stored_size": stored,
            "stored_data_size": stored_data,
            "stored_tree_size": stored_tree,
            "data_blobs": len(self.data_blobs),
            "tree_blobs": len(self.tree_blobs),
            "missing_blobs": missing,
            "dedup_ratio": _ratio(self.raw_size, unique),
            "compression_ratio": _ratio(unique, stored_data),
            "total_ratio": _ratio(self.raw_size, stored),
        }


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 3) if b else None


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


@click.command("stats")
@click.argument("snapshots", nargs=-1)
@click.option("--host", "hosts", multiple=True, help="Only snapshots of this host (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Only snapshots with this tag (repeatable).")
@click.option("--path", "paths", multiple=True, help="Only snapshots that include this path.")
@json_option
@pass_app
def command(app: AppContext, snapshots, hosts, tags, paths) -> None:
    """Show sizes, deduplication and compression, per snapshot and in total.

    Raw size is the file data a restore writes; unique size what is left
    after deduplication; stored size what the blobs take in the repository
    after compression and encryption. dedup = raw / unique, compression =
    unique / stored data, total = raw / stored. Data shared between
    snapshots counts in each snapshot, and once in the total.

    \b
    Examples:
      haeedge stats
      haeedge stats latest --json
    """
    rows: list[dict] = []
    total = Usage()
    with app.open_repo(lock=None) as repo:
        cache = TreeBlobCache(repo)
        for snap in select_snapshots(repo, snapshots, hosts, tags, paths):
            u = Usage()
            u.add_snapshot(repo, cache, snap)
            rows.append(messages.stats_snapshot(snap, u.sizes(repo)))
            total.merge(u)
        totals = {"snapshots": len(rows), **total.sizes(repo)}
        if not snapshots and not hosts and not tags and not paths:
            totals["repository_size"] = sum(i.size for ns in NAMESPACES for i in repo.backend.list(ns))
    if app.json:
        app.emit(messages.stats(rows, totals))
        return
    table_rows = [[r["snapshot_id"][:8], r["time"][:19].replace("T", " "), r["host"], r["kind"], r["files"],
                   human_size(r["raw_size"]), human_size(r["unique_size"]), human_size(r["stored_size"]),
                   _fmt_ratio(r["dedup_ratio"]), _fmt_ratio(r["compression_ratio"])] for r in rows]
    app.out(table(["ID", "Time (UTC)", "Host", "Kind", "Files", "Raw", "Unique", "Stored", "Dedup", "Compr"],
                  table_rows))
    t = totals
    app.out("")
    app.out(f"Total over {t['snapshots']} snapshots:")
    app.out(f"  raw size:      {human_size(t['raw_size'])} ({t['files']} files)")
    app.out(f"  unique size:   {human_size(t['unique_size'])} in {t['data_blobs']} data blobs "
            f"(dedup {_fmt_ratio(t['dedup_ratio'])})")
    app.out(f"  stored size:   {human_size(t['stored_size'])} incl. {human_size(t['stored_tree_size'])} of file "
            f"lists (compression {_fmt_ratio(t['compression_ratio'])}, overall {_fmt_ratio(t['total_ratio'])})")
    if "repository_size" in t:
        app.out(f"  repository:    {human_size(t['repository_size'])} on storage (all objects)")
    if t["missing_blobs"]:
        app.out(f"  missing blobs: {t['missing_blobs']} (run 'haeedge verify')")
