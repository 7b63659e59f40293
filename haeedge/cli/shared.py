"""What more than one command uses, so that a command module never imports another one.

Option parsers (``--compression``, ``--max-unused``), the prune report that
``prune`` and ``forget --prune`` print, the JSON form of a file-list entry
(``ls``, ``find``). The tree-blob cache of ``find``, ``diff`` and ``stats`` is
not a CLI matter: ``repo/tree_cache.py``.
"""

from __future__ import annotations

from haeedge.cli.context import AppContext
from haeedge.errors import UsageError
from haeedge.operations.prune import DEFAULT_MAX_UNUSED, PruneResult
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
    """The text report of a prune (its JSON form is ``ui.messages.prune``)."""
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
    if r.packs_marked or r.packs_waiting:
        app.out(f"{'would mark' if r.dry_run else 'marked'} {r.packs_marked} packs as unused; {r.packs_waiting} "
                f"packs wait (marked, or stored less than the grace period of {_duration(r.grace_seconds)} ago): "
                "a later prune deletes those still unused")
    for w in r.warnings:
        warn(f"{w}")


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
