"""What more than one command uses, so that a command module never imports another one.

Option parsers (``--compression``, ``--max-unused``), the prune report that
``prune`` and ``forget --prune`` print, the JSON form of a file-list entry
(``ls``, ``find``) and the tree-blob cache (``find``, ``diff``, ``stats``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from haeedge.cli.context import AppContext
from haeedge.errors import UsageError
from haeedge.repo.pack import BLOB_TREE
from haeedge.repo.prune import DEFAULT_MAX_UNUSED, PruneResult
from haeedge.repo.repository import Repository, hex_id
from haeedge.repo.snapshot import Snapshot
from haeedge.repo.tree import get_bytes_field, iter_tree, merge_chain, path_bytes
from haeedge.ui.format import human_size, warn


def parse_compression(value: str | None) -> int | None:
    """``off``, ``auto`` or a zstd level 1-22 (None: the repository's default)."""
    if value is None:
        return None
    v = value.strip().lower()
    if v == "off":
        return 0
    if v == "auto":
        return 3
    try:
        n = int(v)
    except ValueError:
        raise UsageError(f"--compression: {value!r} is not off, auto or a zstd level 1-22") from None
    if not 1 <= n <= 22:
        raise UsageError(f"--compression: level {n} is outside 1-22")
    return n


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


def report_prune(app: AppContext, r: PruneResult) -> None:
    """The text report of a prune (its JSON form is ``PruneResult.to_json``)."""
    delete, repack = ("would delete", "would repack") if r.dry_run else ("deleted", "repacked")
    app.out(f"snapshots use {human_size(r.used_bytes)}; {human_size(r.unused_bytes)} in indexed packs is unused")
    app.out(f"{delete} {r.packs_deleted} packs ({r.unindexed_deleted} left by interrupted runs); "
            f"{repack} {r.packs_repacked} packs ({r.blobs_repacked} blobs"
            + (f", into {r.packs_written} new packs)" if not r.dry_run else ")"))
    app.out(f"{'would free' if r.dry_run else 'freed'} {human_size(r.bytes_freed)} "
            f"(repository: {human_size(r.bytes_before)} -> {human_size(r.bytes_before - r.bytes_freed)})")
    for w in r.warnings:
        warn(f"{w}")


def entry_json(entry: dict) -> dict:
    """A file-list entry as ``ls --json`` and ``find --json`` print it (docs/json.md)."""
    out = {k: v for k, v in entry.items() if k not in ("chunks", "path", "path_b64", "target", "target_b64")}
    out["path"] = "/" + path_bytes(entry).decode("utf-8", "backslashreplace")
    t = get_bytes_field(entry, "target")
    if t is not None:
        out["target"] = t.decode("utf-8", "backslashreplace")
    out["chunks"] = len(entry.get("chunks") or ())
    return out


class TreeBlobCache:
    """Tree blobs shared by many snapshots (consecutive fulls, chains) are read once per command."""

    def __init__(self, repo: Repository, max_bytes: int = 256 << 20):
        self.repo = repo
        self.max_bytes = max_bytes
        self._blobs: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0

    def load(self, blob_id: str) -> bytes:
        data = self._blobs.get(blob_id)
        if data is not None:
            self._blobs.move_to_end(blob_id)
            return data
        data = self.repo.load_blob(hex_id(blob_id), BLOB_TREE)
        self._blobs[blob_id] = data
        self._size += len(data)
        while self._size > self.max_bytes and len(self._blobs) > 1:
            _, old = self._blobs.popitem(last=False)
            self._size -= len(old)
        return data

    def entries(self, snap: Snapshot) -> Iterator[dict]:
        """The effective file list of ``snap`` (as ``Repository.iter_entries``), through the cache."""
        chain = self.repo.chain_of(snap)
        return merge_chain([iter_tree(s.tree, self.load) for s in chain])
