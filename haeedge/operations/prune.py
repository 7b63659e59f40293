"""Removing snapshots without breaking chains, and removing data no snapshot needs.

``forget_snapshots`` removes snapshots without changing the id of any kept
one. A removed snapshot that a kept snapshot still needs (it is in the kept
one's parent chain) is not deleted but hidden: an owner-signed forget marker
(``repo/forgotten.py``) takes it out of listings, ``latest`` and retention,
while restore, prune and verify still walk through it. A removed snapshot
nothing kept needs is deleted, and so are hidden ones nothing kept needs any
more. Order: markers first, then deletions deepest first, each snapshot
before its marker, so after a crash every snapshot still present has an
intact chain and nothing forgotten reappears.

Rebase mode (``forget --rebase``, and credentials that cannot write markers
readers trust: no owner signing key) frees the space now instead: a kept
incremental whose parent is removed or hidden is rebased onto a new full
(``rewrite.rewrite_snapshots``), which gives it and its dependants new ids
(reported old -> new), and hidden snapshots only they needed are deleted.
Rewritten snapshots name the one they replace (``"replaces"``), so the next
run can drop originals an interrupted run left behind (also those of older
haeedge versions).

``prune`` deletes packs no snapshot needs and repacks packs that are mostly
unused. Order: new packs, then one new index object that supersedes every old
one, then (after checking the lock is still ours) deletions. A crash at any
point leaves only unreferenced leftovers, never a missing blob.

Which copy of a blob counts (repo/provenance.py): a snapshot of host H needs a
copy that an owner-signed or an H-signed index object lists. Prune keeps one
such copy of every blob a snapshot needs and treats other copies as unused;
where no such copy exists it keeps every copy (``verify`` reports the blob).
Only owner-signed index objects supersede others. The index prune writes is
owner-signed and keeps each pack in the domain that vouched for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from haeedge.backends.base import data_name
from haeedge.backends.s3policy import delete_if_allowed
from haeedge.errors import HaeedgeError, IntegrityError, RepositoryLocked
from haeedge.progress import ProgressSink, SilentProgress
from haeedge.repo.forgotten import chain_support, delete_marker, write_marker
from haeedge.repo.index import BlobLocation, IndexPack
from haeedge.repo.marks import (
    Clock,
    Marks,
    check_clock,
    delete_mark,
    grace_from_env,
    mark_name,
    max_skew,
    measure_clock,
    read_marks,
    ripens_at,
    write_mark,
)
from haeedge.repo.pack import PackBuilder, PackEntry
from haeedge.repo.packer import new_pack_builder, store_pack
from haeedge.repo.provenance import (
    LEGACY,
    OWNER,
    UNTRUSTED,
    host_domain,
    rank,
    read_indexes,
)
from haeedge.repo.repository import Repository, hex_id, object_id_of
from haeedge.repo.rewrite import dependants, rewrite_snapshots
from haeedge.repo.snapshot import KIND_FULL, Snapshot

DEFAULT_MAX_UNUSED = 0.05
REPAIR_HINT = ("run 'haeedge repair index' (the index may lack packs), then 'haeedge verify'; "
               "'haeedge repair snapshots' if data is really lost")


# ---------------------------------------------------------------------- forget


@dataclass
class ForgetPlan:
    """What removing ``remove`` from ``snapshots`` takes."""

    #: Every snapshot, hidden ones included.
    snapshots: list[Snapshot]
    #: Forgotten by this run: asked for, plus leftovers.
    remove: list[Snapshot]
    #: Rebase mode only: kept incrementals whose parent is removed (or hidden); each becomes a full snapshot.
    rebase: list[Snapshot]
    #: Originals left by an interrupted rewrite (a newer copy names them in "replaces").
    leftovers: list[Snapshot] = field(default_factory=list)
    #: Of ``remove``: still needed by a kept snapshot, so kept hidden (a marker is written).
    hide: list[Snapshot] = field(default_factory=list)
    #: Hidden earlier and needed by nothing kept any more: deleted now.
    release: list[Snapshot] = field(default_factory=list)
    #: Snapshot id -> its valid forget markers (hidden before this run).
    hidden: dict[str, list[str]] = field(default_factory=dict)
    #: Markers naming snapshots that no longer exist (an interrupted forget left them).
    stale_markers: list[str] = field(default_factory=list)

    @property
    def delete(self) -> list[Snapshot]:
        """Snapshot objects deleted: removed ones nothing kept needs, and released ones."""
        hide = {s.id for s in self.hide}
        return [s for s in self.remove if s.id not in hide] + self.release


@dataclass
class ForgetResult:
    #: Forgotten by this run (no longer listed): deleted or kept hidden.
    removed: list[str] = field(default_factory=list)
    #: Of ``removed``: kept hidden as chain support of a kept snapshot.
    hidden: list[str] = field(default_factory=list)
    #: Hidden earlier, deleted now that nothing kept needs them.
    released: list[str] = field(default_factory=list)
    #: Rebase mode only: old id -> new id of every rewritten snapshot (rebased ones and their re-linked dependants).
    rewritten: dict[str, str] = field(default_factory=dict)
    rebased: list[str] = field(default_factory=list)
    #: Object Lock: forgotten but still under retention (or needed by one that is): hidden, deleted later.
    retained: list[str] = field(default_factory=list)


def leftover_originals(snapshots: Iterable[Snapshot],
                       may_replace: Callable[[Snapshot], bool] | None = None) -> set[str]:
    """Ids of snapshots that a rewritten copy replaces (left by an interrupted forget or repair).

    Originals stay restorable (rewriters store every copy before deleting
    anything), so only ``forget`` removes them, deepest first as always.

    A copy keeps its original's time, host and paths; requiring that keeps a
    stray "replaces" from ever removing an unrelated snapshot. ``may_replace``:
    only a copy it accepts counts (the owner's rewrites: a writer's "replaces"
    must never remove another host's snapshot).
    """
    by_id = {s.id: s for s in snapshots}
    out = set()
    for s in by_id.values():
        if may_replace is not None and not may_replace(s):
            continue
        orig = by_id.get(s.extra.get("replaces"))  # type: ignore[arg-type]
        if orig is not None and orig.id != s.id and (orig.time, orig.host, orig.paths) == (s.time, s.host, s.paths):
            out.add(orig.id)
    return out


def plan_forget(snapshots: list[Snapshot], remove_ids: Iterable[str], hidden: dict[str, list[str]] | None = None,
                *, rebase: bool = False, scope: set[str] | None = None,
                may_replace: Callable[[Snapshot], bool] | None = None) -> ForgetPlan:
    """What forgetting ``remove_ids`` (plus leftovers) takes.

    ``snapshots``: every snapshot, hidden ones included; ``hidden``: snapshot id
    -> markers of the hidden ones. Removed snapshots that kept ones need are
    hidden; hidden ones nothing kept needs are released (deleted).

    ``rebase`` (``forget --rebase``, or a credential that cannot write markers):
    kept incrementals whose parent is removed, or (within ``scope``, the
    snapshots this run considers; None: all) hidden, are rebased onto new
    fulls instead, which gives them and their dependants new ids; hidden
    snapshots only they needed are released. ``may_replace``: see
    ``leftover_originals``.
    """
    hidden = dict(hidden or {})
    leftovers = leftover_originals(snapshots, may_replace)
    remove = set(remove_ids) | leftovers
    by_id = {s.id: s for s in snapshots}
    plan = ForgetPlan(snapshots, [s for s in snapshots if s.id in remove], [],
                      [s for s in snapshots if s.id in leftovers], hidden=hidden)
    plan.stale_markers = sorted(m for sid, ms in hidden.items() if sid not in by_id for m in ms)
    plan.remove = [s for s in plan.remove if s.id not in hidden]  # hidden ones were forgotten earlier
    kept = [s.id for s in snapshots if s.id not in remove and s.id not in hidden]
    if rebase:
        kept_set = set(kept)
        plan.rebase = [s for s in snapshots if s.id in kept_set and s.kind != KIND_FULL and s.parent in by_id
                       and (s.parent in remove or (s.parent in hidden and (scope is None or s.id in scope)))]
    needed = chain_support(snapshots, kept, cut=[s.id for s in plan.rebase])
    plan.hide = [s for s in plan.remove if s.id in needed]
    plan.release = [s for s in snapshots if s.id in hidden and s.id not in needed]
    return plan


def forget_snapshots(repo: Repository, plan: ForgetPlan, progress: ProgressSink | None = None) -> ForgetResult:
    """Carry out a plan: markers (or rebases), then deletions. Needs the index loaded and an exclusive lock."""
    progress = progress or SilentProgress()
    result = ForgetResult()
    for snap in plan.hide:
        write_marker(repo, snap.id)
        result.hidden.append(snap.id)
        progress.info(f"snapshot {snap.short_id}: forgotten, kept hidden as chain support of kept snapshots")
    if plan.rebase:
        _rebase(repo, plan, result, progress)
    deleted = {s.id for s in plan.delete}
    released = {s.id for s in plan.release}
    doomed = plan.delete + [s for s in plan.snapshots if result.rewritten.get(s.id, s.id) != s.id
                            and s.id not in deleted]
    # Deepest first: whatever is still present always has its parent. The snapshot before its
    # markers: a crash in between leaves a marker naming nothing (removed by the next forget),
    # never a forgotten snapshot back in the listings.
    held: set[str] = set()  # Object Lock: retained snapshots, and parents they still need
    for s in sorted(doomed, key=lambda s: s.depth, reverse=True):
        if retained_snapshot(repo, s, plan, held, result, progress):
            continue
        for marker_id in plan.hidden.get(s.id, ()):
            delete_marker(repo, marker_id)
        if s.id in released:
            result.released.append(s.id)
    for marker_id in plan.stale_markers:
        delete_marker(repo, marker_id)
    result.removed = [s.id for s in plan.remove]
    return result


def retained_snapshot(repo: Repository, s: Snapshot, plan: ForgetPlan, held: set[str], result: ForgetResult,
                      progress: ProgressSink) -> bool:
    """Delete snapshot ``s`` unless Object Lock retention keeps it: then hide it (a forget marker) and keep
    its parent too, so that a later forget deletes both when retention allows. True when it stays."""
    until = None if s.id in held else delete_if_allowed(repo.backend, f"snapshots/{s.id}")
    if s.id not in held and until is None:
        return False
    if s.id not in plan.hidden and s.id not in result.hidden:
        write_marker(repo, s.id)
    if s.parent:
        held.add(s.parent)
    result.retained.append(s.id)
    progress.info(f"snapshot {s.short_id}: forgotten and hidden; "
                  + (f"under Object Lock retention until {until}" if until else "a retained snapshot needs it")
                  + ": a later forget deletes it")
    return True


def _rebase(repo: Repository, plan: ForgetPlan, result: ForgetResult, progress: ProgressSink) -> None:
    """Rebase mode (no markers): rebase kept incrementals whose parent goes, re-link their dependants."""
    removed = {s.id for s in plan.remove} | {s.id for s in plan.release}
    new_trees: dict[str, list[str]] = {}
    for snap in plan.rebase:
        # The merged list is read through the old chain, which is complete until the deletions.
        writer = repo.tree_writer()
        for entry in repo.iter_entries(snap):
            writer.add(entry)
        new_trees[snap.id] = writer.finish()
        progress.info(f"snapshot {snap.short_id}: rebased onto a new full file list ({writer.count} entries)")
    repo.flush()
    kept = [s for s in plan.snapshots if s.id not in removed]
    children = dependants(kept)
    changes = {}
    todo = list(new_trees)
    while todo:
        sid = todo.pop()
        if sid in changes:
            continue
        changes[sid] = _rebase_to(sid, new_trees[sid]) if sid in new_trees else replaces(sid)
        todo += [c.id for c in children.get(sid, ())]
    if changes:
        result.rewritten = rewrite_snapshots(repo, changes, snapshots=kept, delete_old=False)
        result.rebased = [result.rewritten[sid] for sid in new_trees]


def _rebase_to(old_id: str, tree: list[str]) -> Callable[[Snapshot], None]:
    def change(s: Snapshot) -> None:
        s.extra["replaces"] = old_id
        s.kind, s.tree, s.parent, s.chain, s.depth = KIND_FULL, tree, None, None, 0

    return change


def replaces(old_id: str) -> Callable[[Snapshot], None]:
    """A rewrite that records its original, so a rerun can tell the two apart."""

    def change(s: Snapshot) -> None:
        s.extra["replaces"] = old_id

    return change


# ---------------------------------------------------------------------- prune


@dataclass
class PackInfo:
    pack_id: str
    size: int
    #: (blob id, offset) -> entry, as the index lists them.
    entries: dict[tuple[bytes, int], PackEntry]
    used: list[PackEntry] = field(default_factory=list)
    #: Trust domains of the index objects that list the pack (repo/provenance.py).
    domains: set[str] = field(default_factory=set)

    @property
    def blob_bytes(self) -> int:
        return sum(e.length for e in self.entries.values())

    @property
    def used_bytes(self) -> int:
        return sum(e.length for e in self.used)


@dataclass
class PrunePlan:
    max_unused: float
    packs: dict[str, PackInfo]
    index_objects: list[str]
    keep: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    repack: list[str] = field(default_factory=list)
    #: On storage but in no index: left by an interrupted backup or prune.
    unindexed: dict[str, int] = field(default_factory=dict)
    #: In the index but not on storage, and holding nothing a snapshot uses.
    vanished: list[str] = field(default_factory=list)
    #: Superseded index objects still stored (an interrupted prune or repair left them).
    superseded_left: int = 0
    used_blobs: int = 0
    used_bytes: int = 0
    unused_bytes: int = 0
    #: Lock-free prune (repo/marks.py); None: the one-run prune under an exclusive lock.
    lockfree: Lockfree | None = None


@dataclass
class Lockfree:
    """What a lock-free prune marks, waits for and deletes (the two phases of repo/marks.py)."""

    grace: float
    clock: Clock
    #: Phase 1: indexed packs no snapshot needs, and stored packs no index lists, not marked yet.
    mark_unused: list[str] = field(default_factory=list)
    mark_unindexed: list[str] = field(default_factory=list)
    #: Marked, grace period not over: left as they are.
    waiting: list[str] = field(default_factory=list)
    #: Unused or unindexed, but stored less than the grace period ago (maybe a running backup's): not marked yet.
    too_new: list[str] = field(default_factory=list)
    #: Marks whose grace period is over: each of their packs is deleted now (still unused) or kept
    #: (used again, or indexed since), so the marks go.
    ripe_marks: list[str] = field(default_factory=list)
    #: The packs each ripe mark names (a mark stays while Object Lock retains one of them).
    ripe_packs: dict[str, frozenset[str]] = field(default_factory=dict)


@dataclass
class PruneResult:
    dry_run: bool
    packs_before: int = 0
    bytes_before: int = 0
    packs_deleted: int = 0
    packs_repacked: int = 0
    packs_written: int = 0
    bytes_deleted: int = 0
    bytes_written: int = 0
    blobs_repacked: int = 0
    unindexed_deleted: int = 0
    index_objects_written: int = 0
    index_objects_deleted: int = 0
    used_bytes: int = 0
    unused_bytes: int = 0
    temporaries_removed: int = 0
    #: Lock-free prune: packs marked by this run (deleted by a later one), packs waiting (marked, or
    #: stored less than the grace period ago),
    #: marks whose packs this run handled, the grace period in seconds and this host's clock offset.
    packs_marked: int = 0
    packs_waiting: int = 0
    marks_deleted: int = 0
    grace_seconds: float = 0.0
    clock_offset_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    #: Object Lock: packs left for a later prune because retention still protects them (the latest end).
    packs_retained: int = 0
    retained_until: str | None = None

    @property
    def bytes_freed(self) -> int:
        return self.bytes_deleted - self.bytes_written


def used_blobs(repo: Repository, snapshots: list[Snapshot]) -> set[bytes]:
    """Every blob some snapshot's own file list names (tree blobs and file chunks)."""
    return set(used_blob_hosts(repo, snapshots))


def used_blob_hosts(repo: Repository, snapshots: list[Snapshot]) -> dict[bytes, set[str]]:
    """Every blob some snapshot's own file list names (tree blobs and file chunks), with the hosts
    of the snapshots that name it.

    Own lists suffice: an incremental's unchanged files are named by its
    ancestors, which are snapshots too. Any unreadable list aborts: prune must
    never guess what is unused.
    """
    used: dict[bytes, set[str]] = {}
    seen_trees: set[tuple[str, tuple[str, ...]]] = set()
    for snap in snapshots:
        key = (snap.host, tuple(snap.tree))
        if key in seen_trees:
            continue
        seen_trees.add(key)
        for tid in snap.tree:
            used.setdefault(hex_id(tid), set()).add(snap.host)
        try:
            for entry in repo.iter_tree(snap.tree):
                for chunk_id, _length in entry.chunks or ():
                    used.setdefault(hex_id(chunk_id), set()).add(snap.host)
        except HaeedgeError as e:
            raise IntegrityError(f"snapshot {snap.short_id}: file list unreadable ({e}); nothing was pruned",
                                 hint=REPAIR_HINT) from e
    return used


def _read_index_packs(repo: Repository) -> tuple[dict[str, PackInfo], list[str], set[str]]:
    """pack id -> PackInfo (entries, domains) from every index object not superseded; every index object
    id; superseded ids (only owner-signed objects supersede)."""
    found = read_indexes(repo)
    packs: dict[str, PackInfo] = {}
    for d in found.current():
        for p in d.packs:
            info = packs.get(p.pack_id)
            if info is None:
                info = packs[p.pack_id] = PackInfo(p.pack_id, p.size, {})
            info.domains.add(d.domain_of(p))
            for e in p.entries:
                info.entries[(e.blob_id, e.offset)] = e
    return packs, [d.object_id for d in found.docs], found.superseded


def _choose_copies(candidates: list[tuple[PackInfo, PackEntry]], hosts: set[str],
                   stored: dict[str, int], marked: set[str] | frozenset[str] = frozenset()
                   ) -> list[tuple[PackInfo, PackEntry]]:
    """Which copies of one blob to keep: one the owner vouches for, else one per snapshot host from
    that host's domain; every copy when some host has none (never drop the last one that might be it)."""
    # Intact packs first, then unmarked ones (a marked pack goes unless it holds the only copy),
    # then the most trusted domain, then a stable order.
    candidates = sorted(candidates, key=lambda c: (stored.get(c[0].pack_id) != c[0].size,
                                                   c[0].pack_id in marked,
                                                   min(rank(d) for d in c[0].domains), c[0].pack_id, c[1].offset))
    for c in candidates:
        if OWNER in c[0].domains:
            return [c]
    chosen: list[tuple[PackInfo, PackEntry]] = []
    for host in sorted(hosts):
        vouched = [c for c in candidates if host_domain(host) in c[0].domains]
        if not vouched:
            return candidates
        if vouched[0] not in chosen:
            chosen.append(vouched[0])
    return chosen


def plan_prune(repo: Repository, max_unused: float = DEFAULT_MAX_UNUSED,
               progress: ProgressSink | None = None, only: set[str] | None = None,
               lockfree: Lockfree | None = None) -> PrunePlan:
    """Decide what to delete and repack. Reads index, snapshots and file lists; writes nothing.

    ``only``: touch just these packs (repack them whatever their unused share,
    or delete them when unused) and nothing else: how ``repair`` drops damaged data.
    ``lockfree``: the two-phase prune of repo/marks.py (grace period, clock): unused
    and unindexed packs are marked, and deleted only once a mark naming them is ripe.
    """
    progress = progress or SilentProgress()
    marked: set[str] = set()
    ripe: set[str] = set()
    ripe_unused: set[str] = set()
    if lockfree is not None:
        # Before the snapshots are listed: a backup that stores its snapshot after this point
        # checked the marks read here (marks.check_before_snapshot).
        marks = read_marks(repo)
        bound = max_skew()
        now = lockfree.clock.storage_now()
        for m in marks.valid:
            at, warning = ripens_at(m, lockfree.grace, lockfree.clock, bound)
            if warning:
                progress.info(warning)
            if at <= now:
                lockfree.ripe_marks.append(m.mark_id)
                lockfree.ripe_packs[m.mark_id] = frozenset(m.packs)
                ripe |= m.packs
                ripe_unused |= m.unused
            else:
                marked |= m.packs
        marked |= ripe
    if not 0 <= max_unused <= 1:
        raise ValueError("max_unused is a share between 0 and 1")
    errors: list[str] = []
    snapshots = repo.list_snapshots(on_error=lambda sid, e: errors.append(f"snapshot {sid[:12]}: {e}"),
                                    include_hidden=True)  # hidden ones are chain support: their data stays
    if errors:
        raise IntegrityError(f"{errors[0]}; nothing was pruned", hint="run 'haeedge verify' and "
                             "'haeedge repair snapshots' (unreadable snapshots would lose their data)")
    # The index after the snapshot listing: a backup that stored its snapshot meanwhile stored its
    # index objects before it, so every listed snapshot's blobs are in it (no lock holds backups off).
    repo.load_index()
    used = used_blob_hosts(repo, snapshots)
    index_packs, index_objects, superseded = _read_index_packs(repo)
    listing = list(repo.backend.list("data"))
    stored = {object_id_of(i.name): i.size for i in listing}
    young: set[str] = set()
    if lockfree is not None and lockfree.grace > 0:
        # Packs stored less than the grace period ago may be a running backup's (its snapshot is
        # not written yet): not marked now; a later prune looks at them again (kopia does the same).
        since = lockfree.clock.storage_now() - lockfree.grace
        young = {object_id_of(i.name) for i in listing if i.mtime is not None and i.mtime > since}
        del since
    del listing
    plan = PrunePlan(max_unused, index_packs, index_objects)
    plan.superseded_left = len(superseded & set(index_objects))
    plan.used_blobs = len(used)
    copies: dict[bytes, list[tuple[PackInfo, PackEntry]]] = {}
    for info in index_packs.values():
        for (bid, _offset), entry in info.entries.items():
            if bid in used:
                copies.setdefault(bid, []).append((info, entry))
    missing = 0
    for bid, hosts in used.items():
        candidates = copies.get(bid)
        if not candidates:
            missing += 1
            continue
        for info, entry in _choose_copies(candidates, hosts, stored, marked):
            info.used.append(entry)
    del copies
    if missing:
        raise IntegrityError(f"{missing} blobs that snapshots use are not in the index; nothing was pruned",
                             hint=REPAIR_HINT)
    for pack_id, info in sorted(plan.packs.items()):
        on_disk = stored.get(pack_id)
        if info.used and on_disk != info.size:
            why = "is missing" if on_disk is None else f"has size {on_disk}, the index says {info.size}"
            raise IntegrityError(f"pack {pack_id[:16]}, which snapshots use, {why}; nothing was pruned",
                                 hint="run 'haeedge verify --read-data' and 'haeedge repair'")
        plan.used_bytes += info.used_bytes
        plan.unused_bytes += info.blob_bytes - info.used_bytes
        if on_disk is None:
            plan.vanished.append(pack_id)
        elif only is not None and pack_id not in only:
            plan.keep.append(pack_id)
        elif not info.used:
            if lockfree is None or lockfree.grace == 0 or pack_id in ripe_unused:
                plan.delete.append(pack_id)
            else:
                plan.keep.append(pack_id)
                if pack_id in marked and (pack_id not in ripe or _still_marked(pack_id, marks, lockfree)):
                    lockfree.waiting.append(pack_id)
                elif pack_id in young:
                    lockfree.too_new.append(pack_id)
                else:  # not marked, or marked only as unindexed by now ripe marks: a new grace period
                    lockfree.mark_unused.append(pack_id)
        elif only is not None or (pack_id not in marked and info.blob_bytes and
                                  (info.blob_bytes - info.used_bytes) / info.blob_bytes > max_unused):
            plan.repack.append(pack_id)
        else:
            plan.keep.append(pack_id)
    if only is None:
        unindexed = {p: s for p, s in stored.items() if p not in plan.packs}
        if lockfree is None or lockfree.grace == 0:
            plan.unindexed = unindexed
        else:
            for p, size in sorted(unindexed.items()):
                if p in ripe:
                    plan.unindexed[p] = size
                elif p in marked:
                    lockfree.waiting.append(p)
                elif p in young:
                    lockfree.too_new.append(p)
                else:
                    lockfree.mark_unindexed.append(p)
    plan.lockfree = lockfree
    progress.info(f"{len(snapshots)} snapshots use {len(used)} blobs")
    return plan


def _still_marked(pack_id: str, marks: Marks, lockfree: Lockfree) -> bool:
    """Marked by a mark that is not ripe yet (and stays after this run)."""
    ripe = set(lockfree.ripe_marks)
    return any(pack_id in m.packs for m in marks.valid if m.mark_id not in ripe)


def attributions(domains: set[str]) -> list[str]:
    """How an owner-signed index attributes a pack (docs/format.md 7): "" (the owner's own) when the owner
    vouches for it, else every writer domain that does, else legacy or untrusted as it was."""
    if OWNER in domains:
        return [""]
    trusted = sorted(d for d in domains if d not in (LEGACY, UNTRUSTED))
    if trusted:
        return trusted
    return [LEGACY] if LEGACY in domains else [UNTRUSTED]


class _PackWriter:
    """Copies sealed blobs into new packs (one blob type and one trust domain per pack), uploading each
    when full. A repacked blob stays in the domain that vouched for it: moving it into the owner's
    would let every host deduplicate against what one writer wrote."""

    def __init__(self, repo: Repository, result: PruneResult):
        self.repo = repo
        self.result = result
        self.builders: dict[tuple[tuple[str, ...], int], PackBuilder] = {}
        self.written: list[IndexPack] = []

    def add(self, entry: PackEntry, sealed: bytes, domains: set[str]) -> None:
        key = (tuple(attributions(domains)), entry.blob_type)
        b = self.builders.get(key)
        if b is None:
            b = self.builders[key] = new_pack_builder(self.repo.backend)
        b.add(entry.blob_type, entry.compression, entry.blob_id, sealed, entry.raw_length)
        if b.size >= self.repo.config.pack_size:
            self._upload(key)

    def _upload(self, key: tuple[tuple[str, ...], int]) -> None:
        b = self.builders.pop(key)
        entries = b.entries
        pack_id = store_pack(b, self.repo.seal, self.repo.backend)
        self.written += [IndexPack(pack_id, b.length, entries, domain) for domain in key[0]]
        self.result.packs_written += 1
        self.result.bytes_written += b.length

    def finish(self) -> list[IndexPack]:
        for key in sorted(self.builders, key=lambda k: (k[1], k[0])):
            if len(self.builders[key]):
                self._upload(key)
        return self.written

    def discard(self) -> None:
        for b in self.builders.values():
            with contextlib.suppress(Exception):
                b.discard()


def execute_prune(repo: Repository, plan: PrunePlan, progress: ProgressSink | None = None) -> PruneResult:
    """Repack, write the new index, mark, then delete. Without ``plan.lockfree``: needs an exclusive lock."""
    progress = progress or SilentProgress()
    result = _summary(plan, dry_run=False)
    lf = plan.lockfree
    # Leftovers of interrupted writes (a killed backup's half-written pack file). Under the
    # exclusive lock no other writer runs; lock-free, only those idle for the grace period.
    result.temporaries_removed = repo.backend.remove_temporaries(lf.grace if lf is not None else None)
    if lf is not None:
        result.packs_waiting = len(lf.waiting) + len(lf.too_new)
    if not (plan.delete or plan.repack or plan.unindexed or plan.vanished or plan.superseded_left
            or (lf is not None and (lf.mark_unused or lf.mark_unindexed or lf.ripe_marks))):
        return result  # nothing to do: leave the index objects as they are
    two_phase = lf is not None and lf.grace > 0
    writer = _PackWriter(repo, result)
    repacked: list[str] = []
    keep_whole: list[str] = []
    progress.start("repack", sum(plan.packs[p].size for p in plan.repack))
    try:
        for pack_id in plan.repack:
            info = plan.packs[pack_id]
            blobs = _verified_blobs(repo, info, result)
            progress.advance(nbytes=info.size)
            if blobs is None:
                keep_whole.append(pack_id)
                continue
            for entry, sealed in blobs:
                writer.add(entry, sealed, info.domains)
                result.blobs_repacked += 1
            repacked.append(pack_id)
        new_packs = writer.finish()
    except BaseException:
        writer.discard()
        raise
    progress.finish()
    result.packs_repacked = len(repacked)

    # Two-phase: a repacked pack stays (indexed) until its mark is ripe; backups still running may
    # reference its blobs. Its blobs' new copies are preferred from now on.
    stays = plan.keep + keep_whole + (repacked if two_phase else [])
    rewrite_index = bool(plan.delete or new_packs or plan.vanished or plan.superseded_left
                         or (not two_phase and (repacked or plan.unindexed)))
    if rewrite_index:
        index_packs = [IndexPack(p, plan.packs[p].size,
                                 sorted(plan.packs[p].entries.values(), key=lambda e: e.offset), domain)
                       for p in stays for domain in attributions(plan.packs[p].domains)]
        repo.write_index(index_packs + new_packs, superseded=plan.index_objects)
        result.index_objects_written = 1

    if two_phase:
        assert lf is not None
        unused = set(lf.mark_unused) | set(repacked)
        if unused or lf.mark_unindexed:
            write_mark(repo, lf.grace, unused, set(lf.mark_unindexed))
            result.packs_marked = len(unused) + len(lf.mark_unindexed)
    else:
        if lf is None:
            assert_lock_still_ours(repo)
    doomed = [(p, plan.packs[p].size) for p in plan.delete + ([] if two_phase else repacked)] + \
        sorted(plan.unindexed.items())
    retained: set[str] = set()
    progress.start("delete", sum(s for _p, s in doomed))
    for pack_id, size in doomed:
        if (until := delete_if_allowed(repo.backend, data_name(pack_id))) is not None:
            note_retained(result, until)  # unindexed now: a later prune deletes it
            retained.add(pack_id)
            continue
        result.packs_deleted += 1
        result.bytes_deleted += size
        result.unindexed_deleted += pack_id in plan.unindexed
        progress.advance(nbytes=size)
    progress.finish()
    if rewrite_index:
        for oid in plan.index_objects:
            if delete_if_allowed(repo.backend, f"index/{oid}") is not None:
                continue  # superseded by the index just written; a later prune deletes it
            result.index_objects_deleted += 1
    if lf is not None:
        # Last: a crash before this leaves ripe marks that the next run handles the same way. A mark
        # naming a pack that Object Lock still retains stays, so that a later prune deletes the pack.
        for mark_id in lf.ripe_marks:
            if lf.ripe_packs.get(mark_id, frozenset()) & retained:
                continue
            if delete_if_allowed(repo.backend, mark_name(mark_id)) is None:
                result.marks_deleted += 1
    return result


def note_retained(result: PruneResult, until: str) -> None:
    """A pack Object Lock retention keeps (until ``until``): counted and reported, not an error."""
    result.packs_retained += 1
    result.retained_until = max(result.retained_until or until, until)


def _verified_blobs(repo: Repository, info: PackInfo, result: PruneResult) -> list[tuple[PackEntry, bytes]] | None:
    """The used blobs of a pack, each checked; None (keep the pack as it is) when one is damaged."""
    data = repo.backend.get(data_name(info.pack_id))
    if len(data) != info.size:
        result.warnings.append(f"pack {info.pack_id[:16]} changed size while prune ran; kept")
        return None
    damaged_pack = hashlib.sha256(data).hexdigest() != info.pack_id
    out = []
    for e in info.used:
        sealed = data[e.offset : e.offset + e.length]
        if damaged_pack:
            loc = BlobLocation(info.pack_id, e.offset, e.length, e.raw_length, e.blob_type, e.compression)
            try:
                repo.decode_blob(e.blob_id, loc, sealed)
            except HaeedgeError as err:
                result.warnings.append(f"pack {info.pack_id[:16]} is damaged ({err}); kept as it is for "
                                       "'haeedge repair snapshots'")
                return None
        out.append((e, sealed))
    return out


def assert_lock_still_ours(repo: Repository) -> None:
    """Before deleting: our exclusive lock must still exist and no one else's live lock may."""
    host, pid = socket.gethostname(), os.getpid()
    locks = repo.list_locks()
    if not any(lk.host == host and lk.pid == pid and lk.exclusive for lk in locks):
        raise RepositoryLocked("our exclusive lock was removed while we ran; stopped before deleting anything",
                               hint="run the command again")
    for lk in locks:
        if (lk.host, lk.pid) != (host, pid) and not lk.is_stale():
            raise RepositoryLocked(f"repository was locked while we ran ({lk.describe()}); "
                                   "stopped before deleting anything")


def _summary(plan: PrunePlan, dry_run: bool) -> PruneResult:
    r = PruneResult(dry_run=dry_run)
    r.packs_before = len(plan.packs) - len(plan.vanished) + len(plan.unindexed)
    r.bytes_before = sum(i.size for p, i in plan.packs.items() if p not in plan.vanished) + \
        sum(plan.unindexed.values())
    r.used_bytes = plan.used_bytes
    r.unused_bytes = plan.unused_bytes
    return r


def dry_run_result(plan: PrunePlan) -> PruneResult:
    """What ``execute_prune`` would do, assuming every repacked pack is intact."""
    r = _summary(plan, dry_run=True)
    r.packs_repacked = len(plan.repack)
    r.blobs_repacked = sum(len(plan.packs[p].used) for p in plan.repack)
    r.bytes_written = sum(sum(e.length for e in plan.packs[p].used) for p in plan.repack)
    r.packs_deleted = len(plan.delete) + len(plan.repack) + len(plan.unindexed)
    r.unindexed_deleted = len(plan.unindexed)
    r.bytes_deleted = sum(plan.packs[p].size for p in plan.delete + plan.repack) + sum(plan.unindexed.values())
    return r


def prune(repo: Repository, max_unused: float = DEFAULT_MAX_UNUSED, dry_run: bool = False,
          progress: ProgressSink | None = None, grace: float | None = None) -> PruneResult:
    """Prune. With a credential that signs marks (an owner key): lock-free, two-phase (repo/marks.py),
    safe beside running backups; ``grace`` (None: $HAEEDGE_PRUNE_GRACE or one hour) 0 deletes in one run
    (only safe when nothing else writes). Otherwise the caller holds an exclusive lock."""
    progress = progress or SilentProgress()
    lockfree = start_lockfree(repo, grace, dry_run, progress) if can_mark(repo) else None
    plan = plan_prune(repo, max_unused, progress, lockfree=lockfree)
    if dry_run:
        result = dry_run_result(plan)
    else:
        result = execute_prune(repo, plan, progress)
    if lockfree is not None:
        result.grace_seconds = lockfree.grace
        result.clock_offset_seconds = round(lockfree.clock.offset, 1)
        result.warnings += lockfree.clock.warnings
        if dry_run:
            result.packs_marked = len(lockfree.mark_unused) + len(lockfree.mark_unindexed) + len(plan.repack)
            result.packs_waiting = len(lockfree.waiting) + len(lockfree.too_new)
    return result


def can_mark(repo: Repository) -> bool:
    """Only an owner credential with a signing key writes marks that prune honours."""
    return not repo.keys.is_writer and repo.signer() is not None


def start_lockfree(repo: Repository, grace: float | None, dry_run: bool, progress: ProgressSink) -> Lockfree:
    """The grace period and this host's clock against the storage's (a probe mark, written and deleted)."""
    grace = grace_from_env() if grace is None else grace
    clock = Clock()
    if grace > 0 and not dry_run:
        probe = write_mark(repo, grace, set(), set())
        try:
            clock = measure_clock(repo, probe)
        finally:
            delete_mark(repo, probe)
        warning = check_clock(clock, max_skew())
        if warning:
            clock.warnings.append(warning)
            progress.info(warning)
    return Lockfree(grace, clock)

