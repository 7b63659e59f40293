"""Repair: rebuild the index from the packs, and rewrite damaged snapshots so that what survives restores.

``repair_index`` trusts what is stored over what was recorded: every pack on
storage is indexed from a readable index object that lists it with the right
size, or else from its own header (always, with ``read_all_packs``). Packs
that an index lists but storage lacks are dropped. The new index object
supersedes every old one, which is then deleted.

``repair_snapshots`` finds every missing or damaged blob (``verify
--read-data``) and writes a new snapshot for each damaged one:

- a file with bad chunks stays in the list, marked ``"damaged": true``, its
  bad chunks replaced by chunks of zeros of the same length, so everything
  else in the file (and every other file) restores and the repository
  verifies again; ``restore`` still lists the file as damaged;
- a file list with unreadable tree blobs keeps every entry that can be read;
  an incremental's unknown range is filled with its parent's entries marked
  damaged (they may have changed), so nothing silently falls back to an
  older version;
- an incremental whose parent is missing becomes a full snapshot of what it
  holds.

Dependants are re-linked, originals deleted after all new objects exist.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from haeedge.errors import BackendError, HaeedgeError
from haeedge.operations.check import Checker
from haeedge.operations.prune import attributions, execute_prune, plan_prune, replaces
from haeedge.progress import ProgressSink, SilentProgress
from haeedge.repo.index import IndexPack
from haeedge.repo.pack import BLOB_DATA, BLOB_TREE, PackEntry
from haeedge.repo.provenance import LEGACY, OWNER, has_writers, read_indexes
from haeedge.repo.repository import Repository, hex_id, object_id_of
from haeedge.repo.rewrite import dependants, rewrite_snapshots
from haeedge.repo.snapshot import KIND_FULL, Snapshot, now_iso
from haeedge.repo.tree import Node, decode_entry, merge_chain, sort_key

# ---------------------------------------------------------------------- index


@dataclass
class IndexRepairResult:
    dry_run: bool
    packs: int = 0
    blobs: int = 0
    headers_read: int = 0
    #: pack id -> why its header could not be read (its blobs are now missing).
    unreadable_packs: dict[str, str] = field(default_factory=dict)
    #: index objects that could not be read.
    unreadable_index: dict[str, str] = field(default_factory=dict)
    #: packs an index listed that storage does not have.
    vanished_packs: list[str] = field(default_factory=list)
    index_objects_deleted: int = 0
    new_index: str | None = None


def repair_index(repo: Repository, read_all_packs: bool = False, dry_run: bool = False,
                 progress: ProgressSink | None = None) -> IndexRepairResult:
    """Write one index object describing exactly the packs on storage. Needs an exclusive lock."""
    progress = progress or SilentProgress()
    result = IndexRepairResult(dry_run)
    stored = {object_id_of(i.name): i.size for i in repo.backend.list("data")}
    recorded: dict[str, tuple[int, dict[tuple[bytes, int], PackEntry]]] = {}
    #: pack id -> trust domains of the index objects that list it (repo/provenance.py): kept as they were,
    #: so a repair never vouches for one writer's blobs in the owner's name.
    vouched: dict[str, set[str]] = {}

    def unreadable(name: str, e: HaeedgeError) -> None:
        if isinstance(e, BackendError):
            raise e  # possibly transient: stop before anything is replaced
        oid = object_id_of(name)
        result.unreadable_index[oid] = str(e)
        progress.warning(f"index/{oid[:16]}: unreadable ({e}); its packs are read instead")

    found = read_indexes(repo, on_error=unreadable)
    index_ids = found.listed
    for d in found.docs:
        for p in d.packs:
            _size, entries = recorded.setdefault(p.pack_id, (p.size, {}))
            if _size == p.size:
                entries.update({(e.blob_id, e.offset): e for e in p.entries})
                vouched.setdefault(p.pack_id, set()).add(d.domain_of(p))
    # A pack no index object lists has no provenance: the owner's where only owners write, else legacy.
    unlisted = LEGACY if has_writers(repo.registry()) else OWNER
    result.vanished_packs = sorted(p for p in recorded if p not in stored)
    new_packs: list[IndexPack] = []
    progress.start("read pack headers")
    for pack_id, size in sorted(stored.items()):
        known = recorded.get(pack_id)
        entries: list[PackEntry] | None = None
        if read_all_packs or known is None or known[0] != size:
            try:
                entries = repo.read_pack_header(pack_id, size)
                result.headers_read += 1
            except BackendError:
                raise
            except HaeedgeError as e:
                if known is None or known[0] != size:
                    result.unreadable_packs[pack_id] = str(e)
                    progress.warning(f"pack {pack_id[:16]}: header unreadable ({e}); its blobs are lost")
                    continue
        if entries is None:
            entries = sorted(known[1].values(), key=lambda e: e.offset)  # type: ignore[index]
        new_packs += [IndexPack(pack_id, size, entries, domain)
                      for domain in attributions(vouched.get(pack_id) or {unlisted})]
        result.blobs += len(entries)
        progress.advance(files=1)
    progress.finish()
    result.packs = len({p.pack_id for p in new_packs})
    if dry_run:
        return result
    result.new_index = repo.write_index(new_packs, superseded=index_ids)
    for oid in index_ids:
        repo.backend.delete(f"index/{oid}")
        result.index_objects_deleted += 1
    return result


# ---------------------------------------------------------------------- snapshots


@dataclass
class SnapshotRepair:
    old_id: str
    new_id: str = ""
    damaged_files: list[str] = field(default_factory=list)
    #: Raw paths (last readable before, first readable after) around each run of unreadable tree blobs.
    lost_ranges: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)
    dropped_entries: int = 0
    broken_chain: bool = False

    def lost_ranges_text(self) -> list[list[str | None]]:
        return [[_display(lo) if lo is not None else None, _display(hi) if hi is not None else None]
                for lo, hi in self.lost_ranges]


@dataclass
class SnapshotsRepairResult:
    dry_run: bool
    snapshots: int = 0
    repaired: list[SnapshotRepair] = field(default_factory=list)
    #: old id -> new id of every snapshot rewritten (repaired ones and re-linked dependants).
    rewritten: dict[str, str] = field(default_factory=dict)
    #: snapshot objects that could not be read at all, with the reason; they are removed.
    unreadable: dict[str, str] = field(default_factory=dict)
    bad_blobs: int = 0
    #: Damaged packs whose intact blobs were copied to new packs before they were deleted.
    packs_replaced: int = 0
    warnings: list[str] = field(default_factory=list)


def _display(path: bytes) -> str:
    return "/" + path.decode("utf-8", "backslashreplace")


def salvage_tree(repo: Repository, tree: list[str]) -> tuple[list[Node], list[tuple[bytes | None, bytes | None]], int]:
    """Every entry that can still be read: (entries, lost ranges, unparsable entries dropped).

    Tree blobs cut one JSON-lines stream anywhere, so a line that touches an
    unreadable blob is part of the lost range, not counted as dropped.
    """
    segments: list[tuple[bytes, bool, bool]] = []
    cur = bytearray()
    gap_before = False
    for tid in tree:
        try:
            cur += repo.load_blob(hex_id(tid), BLOB_TREE)
        except HaeedgeError:
            if cur or not segments or not gap_before:
                segments.append((bytes(cur), gap_before, True))
            cur, gap_before = bytearray(), True
    segments.append((bytes(cur), gap_before, False))
    entries: list[Node] = []
    lost: list[tuple[bytes | None, bytes | None]] = []
    dropped = 0
    last_key: bytes | None = None
    for data, before, after in segments:
        lines = data.split(b"\n")
        tail = lines.pop()  # after the last newline: nothing, or a line cut by the next gap
        dropped += bool(tail.strip()) and not after  # a stream that ends mid-entry
        for i, line in enumerate(lines):
            try:
                e = decode_entry(line)
                key = sort_key(e.path)
                if last_key is not None and key <= last_key:
                    raise ValueError("out of order")
            except (ValueError, HaeedgeError, RecursionError):
                dropped += not (before and i == 0)
                continue
            if lost and lost[-1][1] is None and before:
                lost[-1] = (lost[-1][0], e.path)
            entries.append(e)
            last_key = key
        if after:
            lost.append((entries[-1].path if entries else None, None))
    return entries, lost, dropped


def _in_range(key: bytes, lo: bytes | None, hi: bytes | None) -> bool:
    return (lo is None or key > sort_key(lo)) and (hi is None or key < sort_key(hi))


class _SnapshotRepairer:
    def __init__(self, repo: Repository, bad: set[bytes], snapshots: list[Snapshot], dry_run: bool):
        self.repo = repo
        self.bad = bad
        self.by_id = {s.id: s for s in snapshots}
        self.dry_run = dry_run
        self.new_trees: dict[str, list[str]] = {}
        self.made_full: set[str] = set()
        self._zero_ids: dict[int, str] = {}

    def link_ok(self, s: Snapshot) -> bool:
        p = self.by_id.get(s.parent or "")
        return p is not None and p.chain_root == s.chain and p.depth == s.depth - 1

    def _zero_chunk(self, length: int) -> str:
        zid = self._zero_ids.get(length)
        if zid is None:
            bid, _new = self.repo.save_blob(BLOB_DATA, bytes(length))
            zid = self._zero_ids[length] = bid.hex()
        return zid

    def _chunk_bad(self, chunk_id: str) -> bool:
        try:
            bid = hex_id(chunk_id)
        except HaeedgeError:
            return True
        return bid in self.bad or self.repo.lookup_blob(bid) is None

    def effective(self, sid: str) -> Iterator[Node]:
        """A snapshot's file list as repaired so far (parents are repaired before children)."""
        chain = []
        s = self.by_id[sid]
        while True:
            chain.append(s)
            if s.kind == KIND_FULL or s.id in self.made_full:
                break
            s = self.by_id[str(s.parent)]
        return merge_chain([self.repo.iter_tree(self.new_trees.get(x.id, x.tree)) for x in reversed(chain)])

    def repair(self, s: Snapshot) -> SnapshotRepair | None:
        rep = SnapshotRepair(s.id)
        entries, rep.lost_ranges, rep.dropped_entries = salvage_tree(self.repo, s.tree)
        rep.broken_chain = s.kind != KIND_FULL and not self.link_ok(s)
        if rep.broken_chain:
            self.made_full.add(s.id)
            entries = [e for e in entries if not e.deleted]
        for e in entries:
            chunks = e.chunks
            if not chunks or not any(self._chunk_bad(c[0]) for c in chunks):
                continue
            e.chunks = [[self._zero_chunk(n), n] if self._chunk_bad(cid) else [cid, n] for cid, n in chunks]
            e.damaged = True
            rep.damaged_files.append(_display(e.path))
        if rep.lost_ranges and s.kind != KIND_FULL and not rep.broken_chain:
            try:
                entries = self._fill_lost(entries, rep, str(s.parent))
            except HaeedgeError:
                if not self.dry_run:
                    raise
        if not (rep.damaged_files or rep.lost_ranges or rep.dropped_entries or rep.broken_chain):
            return None
        if not self.dry_run:
            writer = self.repo.tree_writer()
            for e in entries:
                writer.add(e)
            self.new_trees[s.id] = writer.finish()
            self.repo.flush()  # so that dependants can read this list through ``effective``
        return rep

    def _fill_lost(self, entries: list[Node], rep: SnapshotRepair, parent: str) -> list[Node]:
        """An incremental's unknown range: the parent's entries there, marked damaged."""
        own = {sort_key(e.path) for e in entries}
        extra = []
        for pe in self.effective(parent):
            key = sort_key(pe.path)
            if key not in own and any(_in_range(key, lo, hi) for lo, hi in rep.lost_ranges):
                pe = dataclasses.replace(pe, damaged=True)
                extra.append(pe)
                rep.damaged_files.append(_display(pe.path))
        return sorted(entries + extra, key=lambda e: sort_key(e.path))


def repair_snapshots(repo: Repository, dry_run: bool = False,
                     progress: ProgressSink | None = None) -> SnapshotsRepairResult:
    """Rewrite every damaged snapshot (see the module docstring). Needs an exclusive lock."""
    progress = progress or SilentProgress()
    checker = Checker(repo)
    checker.run(read_data=True)
    result = SnapshotsRepairResult(dry_run)
    unreadable: dict[str, str] = {}
    # Only trusted snapshots are repaired: a repair re-signs with the owner key, which must never launder a
    # snapshot a writer forged (verify keeps flagging those).
    snaps = repo.trusted_snapshots(repo.list_snapshots(on_error=lambda sid, e: unreadable.__setitem__(sid, str(e)),
                                                       include_hidden=True))
    result.unreadable = unreadable
    result.snapshots = len(snaps)
    bad = set(checker.bad_blobs)
    result.bad_blobs = len(bad)
    fixer = _SnapshotRepairer(repo, bad, snaps, dry_run)
    for s in sorted(snaps, key=lambda s: (s.depth, s.time, s.id)):
        rep = fixer.repair(s)
        if rep is not None:
            result.repaired.append(rep)
            progress.info(f"snapshot {s.short_id}: {len(rep.damaged_files)} damaged files, "
                          f"{len(rep.lost_ranges)} unreadable file-list blobs")
    if dry_run:
        return result
    reps = {r.old_id: r for r in result.repaired}
    changes = {}
    children = dependants(snaps)
    todo = list(reps)
    while todo:
        sid = todo.pop()
        if sid not in changes:
            changes[sid] = _repaired(sid, fixer.new_trees[sid], reps[sid]) if sid in reps else replaces(sid)
            todo += [c.id for c in children.get(sid, ())]
    if changes:
        result.rewritten = rewrite_snapshots(repo, changes, snapshots=snaps, delete_old=True)
        for r in result.repaired:
            r.new_id = result.rewritten[r.old_id]
    for sid in sorted(unreadable):
        repo.backend.delete(f"snapshots/{sid}")
    # The damaged bytes and lost packs themselves: no snapshot needs them now, and verify would report
    # them forever. Damaged packs are replaced by copies of their intact blobs; lost ones leave the index.
    damaged_packs = {loc.pack_id for b in bad if (loc := repo.lookup_blob(b)) is not None}
    if damaged_packs:
        stored = {object_id_of(i.name) for i in repo.backend.list("data")}
        pruned = execute_prune(repo, plan_prune(repo, only=damaged_packs & stored), progress)
        result.packs_replaced = pruned.packs_deleted
        result.warnings += pruned.warnings
    return result


def _repaired(old_id: str, tree: list[str], rep: SnapshotRepair) -> Callable[[Snapshot], None]:
    def change(s: Snapshot) -> None:
        s.extra["replaces"] = old_id
        s.extra["repaired"] = {"time": now_iso(), "damaged_files": len(rep.damaged_files),
                               "lost_ranges": rep.lost_ranges_text(),
                               "dropped_entries": rep.dropped_entries, "broken_chain": rep.broken_chain}
        s.tree = tree
        if rep.broken_chain:
            s.kind, s.parent, s.chain, s.depth = KIND_FULL, None, None, 0

    return change
