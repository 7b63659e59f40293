"""Copy snapshots, with their chains, into another repository that may have other keys.

Why every blob is opened and sealed again rather than copied as stored: the
target has its own master keys, and its blob ids are keyed with its own
``blob_id`` secret. So each chunk's plaintext is re-hashed with the target's
key, which is also what deduplicates against what the target already holds:
a chunk the target has (from its own backups or an earlier copy) is not
stored again. Chunk boundaries are kept, so deduplication with the target's
own backups is complete when both repositories use the same chunker
parameters (the default).

Chains stay chains: a full is copied as a full, each incremental as an
incremental whose parent is the copy of its parent; its tree is its own delta
with the chunk ids rewritten for the target. Copies are made parents first,
each committed (packs, index, then the snapshot) before the next, so an
interrupted copy leaves only complete snapshots and the next run resumes.

Each copy records ``copied_from`` ({"snapshot": source id, "repository":
source repository id}) among the snapshot's extra fields; snapshots whose copy
is already in the target are skipped, and an incremental whose parent's copy
exists is linked to it.

A chain link that is hidden in the source (forgotten, kept as chain support:
repo/forgotten.py) and was not asked for is copied as chain support too: when
the target's credential can write forget markers, its copy is hidden there
right after it is stored.
"""

from __future__ import annotations

import copy as copy_module
import dataclasses
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from haeedge.backends.base import data_name
from haeedge.errors import HaeedgeError, IntegrityError, UsageError
from haeedge.progress import ProgressSink, SilentProgress
from haeedge.repo.forgotten import can_write_markers, write_marker
from haeedge.repo.index import BlobLocation
from haeedge.repo.pack import BLOB_DATA
from haeedge.repo.repository import Repository, hex_id
from haeedge.repo.snapshot import KIND_FULL, Snapshot
from haeedge.repo.tree import Node

COPIED_FROM = "copied_from"
#: Raw bytes of new chunks gathered before they are read from the source in one parallel batch.
BATCH_BYTES = 128 << 20
BATCH_ENTRIES = 50_000
#: Ranges of one pack closer than this are read in one request.
MERGE_GAP = 1 << 20


@dataclass
class CopyResult:
    #: (source snapshot id, id of the new copy in the target)
    copied: list[tuple[str, str]] = field(default_factory=list)
    #: (source snapshot id, id of the copy the target already had)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: (source snapshot id, why it was not copied)
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: Distinct source chunks read, decrypted and re-hashed.
    chunks_read: int = 0
    #: Chunks the target already had (not stored again).
    chunks_deduplicated: int = 0
    raw_bytes_read: int = 0
    data_blobs_added: int = 0
    tree_blobs_added: int = 0
    #: Bytes the target's new blobs take (sealed, after compression).
    bytes_added: int = 0


def copies_in(target: Repository, on_error: Callable[[str, HaeedgeError], None] | None = None) -> dict[str, str]:
    """Source snapshot id -> id of its copy in ``target``, from the copies' ``copied_from`` fields."""
    out: dict[str, str] = {}
    for s in target.list_snapshots(on_error=on_error, include_hidden=True):
        src = s.extra.get(COPIED_FROM)
        if isinstance(src, dict) and isinstance(src.get("snapshot"), str):
            out.setdefault(src["snapshot"], s.id)
    return out


def with_chains(source: Repository, snapshots: list[Snapshot]) -> tuple[list[Snapshot], list[tuple[str, str]]]:
    """The snapshots and every link of their chains, parents first; and those whose chain is broken."""
    wanted: dict[str, Snapshot] = {}
    broken: list[tuple[str, str]] = []
    for s in snapshots:
        try:
            for link in source.chain_of(s):
                wanted[link.id] = link
        except IntegrityError as e:
            broken.append((s.id, str(e)))
    # A parent's depth is one less than its child's, so depth order puts every parent first.
    return sorted(wanted.values(), key=lambda s: (s.depth, s.time, s.id)), broken


class SnapshotCopier:
    """Copies snapshots from ``source`` to ``target`` (both open, index loaded, locked by the caller)."""

    def __init__(self, source: Repository, target: Repository, progress: ProgressSink | None = None,
                 workers: int = 4):
        if source.config.repository_id == target.config.repository_id:
            raise UsageError("source and target are the same repository")
        self.source = source
        self.target = target
        self.progress = progress or SilentProgress()
        self.workers = max(1, workers)
        self.result = CopyResult()
        #: Source chunk id -> target chunk id, for chunks handled in this run.
        self._map: dict[bytes, bytes] = {}
        self._same_ids = source.keys.blob_id == target.keys.blob_id
        self._lock = threading.Lock()

    def run(self, snapshots: list[Snapshot]) -> CopyResult:
        ordered, broken = with_chains(self.source, snapshots)
        self.result.failed.extend(broken)
        done = copies_in(self.target, lambda sid, e: self.progress.warning(f"target snapshot {sid[:8]}: {e}"))
        failed: set[str] = set()
        wanted = {s.id for s in snapshots}
        support = self.source.hidden_snapshot_ids() - wanted if can_write_markers(self.target) else set()
        stats_before = (self.target.stats.data_blobs_added, self.target.stats.tree_blobs_added,
                        self.target.stats.stored_bytes_added)
        self.progress.start("copy")
        try:
            for snap in ordered:
                if snap.id in done:
                    self.result.skipped.append((snap.id, done[snap.id]))
                    continue
                if snap.kind != KIND_FULL and (snap.parent not in done or snap.parent in failed):
                    failed.add(snap.id)
                    self.result.failed.append((snap.id, f"its parent {str(snap.parent)[:8]} could not be copied"))
                    continue
                try:
                    new = self._copy_one(snap, done)
                except IntegrityError as e:  # damaged source data: this snapshot and its dependants only
                    # Blobs already stored stay (they are intact and mapped); only the snapshot is not written.
                    failed.add(snap.id)
                    self.result.failed.append((snap.id, str(e)))
                    self.progress.warning(f"snapshot {snap.short_id} not copied: {e}")
                    continue
                done[snap.id] = new.id
                if snap.id in support:
                    write_marker(self.target, new.id)
                self.result.copied.append((snap.id, new.id))
                self.progress.info(f"copied snapshot {snap.short_id} -> {new.short_id} ({new.kind})")
            self.target.flush()
        finally:
            self.progress.finish()
        st = self.target.stats
        self.result.data_blobs_added = st.data_blobs_added - stats_before[0]
        self.result.tree_blobs_added = st.tree_blobs_added - stats_before[1]
        self.result.bytes_added = st.stored_bytes_added - stats_before[2]
        return self.result

    # ------------------------------------------------------------------ one snapshot

    def _copy_one(self, snap: Snapshot, done: dict[str, str]) -> Snapshot:
        writer = self.target.tree_writer()
        batch: list[Node] = []
        pending: dict[bytes, BlobLocation] = {}
        pending_bytes = 0
        for entry in self.source.iter_tree(snap.tree):
            for chunk_id, _length in entry.chunks or ():
                bid = hex_id(chunk_id)
                if bid in self._map or bid in pending:
                    continue
                loc = self.source.lookup_blob(bid)
                if loc is None:
                    raise IntegrityError(f"snapshot {snap.short_id}: blob {chunk_id[:16]} is missing from the "
                                         "source's index")
                pending[bid] = loc
                pending_bytes += loc.raw_length
            batch.append(entry)
            if pending_bytes >= BATCH_BYTES or len(batch) >= BATCH_ENTRIES:
                self._transfer(pending)
                self._write_entries(writer, batch)
                batch, pending, pending_bytes = [], {}, 0
        self._transfer(pending)
        self._write_entries(writer, batch)
        tree = writer.finish()
        self.target.flush()  # packs and index before the snapshot that needs them

        new = Snapshot(time=snap.time, host=snap.host, paths=list(snap.paths), kind=snap.kind, tree=tree,
                       tags=list(snap.tags), username=snap.username, summary=copy_module.deepcopy(snap.summary),
                       program=snap.program, extra=copy_module.deepcopy(snap.extra))
        new.extra[COPIED_FROM] = {"snapshot": snap.id, "repository": self.source.config.repository_id}
        if snap.kind != KIND_FULL:
            # Link below the parent's copy as it is now (a rewrite may have moved it), not as the source says.
            parent = self.target.load_snapshot(done[str(snap.parent)])
            new.parent, new.chain, new.depth = parent.id, parent.chain_root, parent.depth + 1
        self.target.save_snapshot(new)
        return new

    def _write_entries(self, writer, entries: list[Node]) -> None:
        for entry in entries:
            chunks = entry.chunks
            if chunks:
                entry = dataclasses.replace(entry, chunks=[[self._map[hex_id(c)].hex(), n] for c, n in chunks])
            writer.add(entry)

    # ------------------------------------------------------------------ data

    def _transfer(self, blobs: dict[bytes, BlobLocation]) -> None:
        """Read each blob from the source once, pack by pack, and store it in the target unless it is there."""
        if self._same_ids:  # same blob_id key: ids carry over, and what the target has need not be read
            for bid in [b for b in blobs if self.target.has_blob(b)]:
                self._map[bid] = bid
                del blobs[bid]
                self.result.chunks_deduplicated += 1
        by_pack: dict[str, list[tuple[bytes, BlobLocation]]] = defaultdict(list)
        for bid, loc in blobs.items():
            by_pack[loc.pack_id].append((bid, loc))
        if not by_pack:
            return
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="copy") as pool:
            for f in [pool.submit(self._transfer_pack, pack_id, items) for pack_id, items in by_pack.items()]:
                f.result()

    def _transfer_pack(self, pack_id: str, items: list[tuple[bytes, BlobLocation]]) -> None:
        name = data_name(pack_id)
        for group in _groups(sorted(items, key=lambda it: it[1].offset)):
            start = group[0][1].offset
            end = group[-1][1].offset + group[-1][1].length
            data = memoryview(self.source.backend.get_range(name, start, end - start))
            for bid, loc in group:
                sealed = data[loc.offset - start : loc.offset - start + loc.length]
                if len(sealed) != loc.length:
                    raise IntegrityError(f"pack {pack_id[:16]} is truncated")
                raw = self.source.decode_blob(bid, loc, sealed)
                tid = self.target.blob_id(raw)
                _id, added = self.target.save_blob(BLOB_DATA, raw, tid)
                with self._lock:
                    self._map[bid] = tid
                    self.result.chunks_read += 1
                    self.result.raw_bytes_read += len(raw)
                    if not added:
                        self.result.chunks_deduplicated += 1
                self.progress.advance(nbytes=len(raw))


def _groups(items: list[tuple[bytes, BlobLocation]]) -> Iterator[list[tuple[bytes, BlobLocation]]]:
    """Runs of blobs close enough in their pack to fetch with one ranged read."""
    group: list[tuple[bytes, BlobLocation]] = []
    for bid, loc in items:
        if group:
            last = group[-1][1]
            if loc.offset - (last.offset + last.length) > MERGE_GAP:
                yield group
                group = []
        group.append((bid, loc))
    if group:
        yield group


__all__ = ["COPIED_FROM", "CopyResult", "SnapshotCopier", "copies_in", "with_chains"]
