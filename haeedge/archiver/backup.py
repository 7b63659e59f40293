"""Backup: walk -> read -> chunk -> dedup -> pack -> file list -> snapshot.

The walk runs in the calling thread and stays in tree order. Files whose
content must be read go to a thread pool (reading, HMAC and zstd release the
GIL); their results are consumed in walk order so the file list streams out
sorted. The snapshot is written last: it is the commit point.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from haeedge import __version__
from haeedge.archiver.metadata import entry_from_stat, unchanged_file, user_name
from haeedge.archiver.scanner import Scanner
from haeedge.archiver.summary import BackupSummary
from haeedge.archiver.walker import (
    CACHEDIR_TAG,
    Excluder,
    WalkItem,
    exclude_patterns,
    normalize_sources,
    parse_if_present,
    read_files_from,
    walk_sources,
)
from haeedge.archiver.workers import (
    JOB_OFFSET,
    JOB_TOKEN,
    OUT_ERROR,
    OUT_NEXT,
    SEGMENT_BYTES,
    Announcements,
    BatchResult,
    ChunkStore,
    FileJob,
    FileOutcome,
    run_batch,
    set_worker_state,
)
from haeedge.backends.base import repository_local_paths
from haeedge.chunking import Chunker
from haeedge.errors import HaeedgeError, IntegrityError, SnapshotNotFound, UsageError
from haeedge.forking import fork_pool
from haeedge.progress import ProgressSink, SilentProgress
from haeedge.repo.pack import BLOB_DATA, BLOB_TREE
from haeedge.repo.packer import WriteOptions
from haeedge.repo.repository import Repository
from haeedge.repo.snapshot import KIND_FULL, KIND_INCREMENTAL, Snapshot, now_iso
from haeedge.repo.tree import Node, deletion_marker, sort_key

DEFAULT_FULL_IF_OLDER_THAN = timedelta(days=7)
MAX_IN_FLIGHT = 4096
BATCH_FILES = 512
BATCH_BYTES = 4 << 20
#: How often the main process, waiting for a result, looks for announced segments (seconds).
ANNOUNCE_POLL = 0.005
#: Completed files are reported to the progress sink in groups of this many.
PROGRESS_FILES = 64


@dataclass
class BackupOptions:
    paths: list[str]
    excludes: list[str] = field(default_factory=list)
    exclude_files: list[str] = field(default_factory=list)
    #: Case-insensitive patterns (and files of them).
    iexcludes: list[str] = field(default_factory=list)
    iexclude_files: list[str] = field(default_factory=list)
    #: Leave out the contents of directories holding CACHEDIR.TAG (with its signature).
    exclude_caches: bool = False
    #: ``NAME`` or ``NAME:HEADER``: leave out the contents of directories holding such a file.
    exclude_if_present: list[str] = field(default_factory=list)
    #: Leave out regular files larger than this many bytes.
    exclude_larger_than: int | None = None
    #: Files listing more paths to back up: one per line, or NUL-separated (``_raw``).
    files_from: list[str] = field(default_factory=list)
    files_from_raw: list[str] = field(default_factory=list)
    #: Save no snapshot when nothing differs from the parent.
    skip_if_unchanged: bool = False
    one_file_system: bool = False
    tags: list[str] = field(default_factory=list)
    host: str | None = None
    dry_run: bool = False
    full: bool = False
    full_every: int | None = None
    full_if_older_than: timedelta | None = DEFAULT_FULL_IF_OLDER_THAN
    compression_level: int | None = None
    parent: str | None = None
    workers: int = 0  # 0: number of CPUs


@dataclass
class BackupResult:
    snapshot: Snapshot | None
    summary: BackupSummary
    warnings: list[str]
    #: With --skip-if-unchanged: the parent snapshot that already holds exactly this tree.
    unchanged_since: Snapshot | None = None

    @property
    def partial(self) -> bool:
        return bool(self.summary.errors)


def new_snapshot(*, host: str, paths: list[str], kind: str, tree: list[str], tags: list[str], summary: dict,
                 parent: Snapshot | None = None) -> Snapshot:
    """A snapshot taken now by this program and user; ``parent`` links an incremental into its chain."""
    return Snapshot(
        time=now_iso(), host=host, paths=paths, kind=kind, tree=tree,
        parent=parent.id if parent else None,
        chain=parent.chain_root if parent else None,
        depth=parent.depth + 1 if parent else 0,
        tags=sorted(set(tags)), username=user_name(os.getuid()), summary=summary,
        program=f"haeedge {__version__}",
    )


class Archiver:
    def __init__(self, repo: Repository, options: BackupOptions, progress: ProgressSink | None = None):
        self.repo = repo
        self.opts = options
        self.progress = progress or SilentProgress()
        self.chunker = Chunker(repo.config.chunker)
        self.warnings: list[str] = []
        self.counts = BackupSummary()
        self._hardlink_groups: set[str] = set()
        self._hardlink_results: dict[str, tuple[list, int]] = {}
        #: Entries that differ from the parent's (added, changed or removed), of any type.
        self._differences = 0
        #: Tree paths of the directories above the sources.
        self._ancestors: set[bytes] = set()
        self._announcements: Announcements | None = None
        #: Completed files not yet reported to the progress sink.
        self._adv_files = 0
        self._adv_bytes = 0

    # ------------------------------------------------------------------ policy

    def choose_parent(self, host: str, paths: list[str]) -> Snapshot | None:
        if self.opts.parent:
            return self.repo.resolve_snapshot(self.opts.parent)
        snaps = self.repo.list_snapshots(on_error=lambda sid, e: self._warn(f"snapshot {sid[:8]}: {e}"))
        # Never build on a snapshot that is not trusted: its file list would become part of ours.
        candidates = [s for s in snaps if s.host == host and sorted(s.paths) == sorted(paths)
                      and self.repo.is_trusted(s)]
        return candidates[-1] if candidates else None

    def choose_kind(self, parent: Snapshot | None) -> tuple[str, str]:
        """(kind, reason)."""
        if parent is None:
            return KIND_FULL, "no parent snapshot"
        if self.opts.full:
            return KIND_FULL, "--full"
        if self.opts.full_every is not None and parent.depth + 1 >= self.opts.full_every:
            return KIND_FULL, f"--full-every {self.opts.full_every}"
        try:
            chain = self.repo.chain_of(parent)
        except (IntegrityError, SnapshotNotFound) as e:
            self._warn(f"parent snapshot {parent.short_id} has a broken chain ({e}); making a full backup")
            return KIND_FULL, "parent chain is broken"
        try:
            # An incremental is built on the chain's file lists: every one must open with our keys
            # (another host's identical tree blob may be sealed with a tree key we do not hold).
            for link in chain:
                for tree_id in link.tree:
                    self.repo.load_blob(bytes.fromhex(tree_id), BLOB_TREE)
        except HaeedgeError as e:
            self._warn(f"parent snapshot {parent.short_id}: file list unreadable ({e}); making a full backup")
            return KIND_FULL, "parent file list unreadable"
        if self.opts.full_if_older_than is not None:
            root = self.repo.load_snapshot(parent.chain_root)
            if datetime.now(UTC) - root.datetime >= self.opts.full_if_older_than:
                return KIND_FULL, "chain's full snapshot is older than the limit"
        return KIND_INCREMENTAL, f"parent {parent.short_id}"

    # ------------------------------------------------------------------ run

    def run(self) -> BackupResult:
        started = time.monotonic()
        opts = self.opts
        listed = self._listed_paths()
        if not opts.paths and not listed:
            raise UsageError("nothing to back up: give at least one path")
        sources = normalize_sources(list(opts.paths) + listed)
        for s in sources:
            if not os.path.lexists(s):
                raise UsageError(f"{os.fsdecode(s)}: no such file or directory")
        excluder = self._excluder()
        for src in sources:
            parts = src.strip(b"/").split(b"/")
            self._ancestors.update(b"/".join(parts[:i]) for i in range(1, len(parts)))
        host = opts.host or socket.gethostname()
        paths = [os.fsdecode(s) for s in sources]
        self.repo.begin_writes(WriteOptions(compression_level=opts.compression_level, dry_run=opts.dry_run))

        parent = self.choose_parent(host, paths)
        kind, reason = self.choose_kind(parent)
        self.progress.info(f"{kind} backup ({reason})")
        parent_entries: Iterator[Node] = iter(())
        if parent is not None:
            # A full backup reads the parent's list only for its statistics.
            if kind == KIND_FULL:
                parent_entries = self._tolerant(lambda: self.repo.iter_entries(parent))
            else:
                parent_entries = self.repo.iter_entries(parent)

        skip = frozenset(_repository_paths(self.repo))
        walk = walk_sources(sources, excluder, opts.one_file_system, self._walk_error, skip)
        tree = self.repo.tree_writer()
        self.progress.start("backup")
        scanner: Scanner | None = None
        try:
            with self._executor() as pool:
                if self.progress.wants_totals:  # started after the workers fork: no thread is copied into them
                    scanner = Scanner(lambda: walk_sources(sources, excluder, opts.one_file_system,
                                                           lambda _p, _e: None, skip), self.progress,
                                      fork=isinstance(pool, ProcessPoolExecutor)).start()
                self._run_pipeline(walk, parent_entries, kind == KIND_INCREMENTAL, tree, pool)
            tree_ids = tree.finish()
            self.repo.flush()
        except BaseException:
            self.repo.abort_writes()
            raise
        finally:
            if scanner is not None:
                scanner.stop()
            if self._announcements is not None:
                self._announcements.close()
            self.progress.finish()

        summary = self.counts.finish(self.repo.stats, kind, reason, started)
        snap = new_snapshot(host=host, paths=paths, kind=kind, tree=tree_ids, tags=opts.tags, summary=summary.to_doc(),
                            parent=parent if kind == KIND_INCREMENTAL else None)
        if opts.skip_if_unchanged and parent is not None and not self._differences and not self.counts.errors:
            # The parent already restores exactly this tree; what was written is only file lists
            # (a full re-reads and dedups), left for prune.
            summary.skipped = True
            return BackupResult(None, summary, self.warnings, unchanged_since=parent)
        if not opts.dry_run:
            self.repo.save_snapshot(snap)
        return BackupResult(snap if not opts.dry_run else None, summary, self.warnings)

    def _listed_paths(self) -> list[str]:
        out: list[str] = []
        for files, raw in ((self.opts.files_from, False), (self.opts.files_from_raw, True)):
            for f in files:
                try:
                    out += read_files_from(f, nul_separated=raw)
                except OSError as e:
                    raise UsageError(f"cannot read file list {f}: {e.strerror}") from None
        return out

    def _excluder(self) -> Excluder:
        opts = self.opts
        tags = [CACHEDIR_TAG] if opts.exclude_caches else []
        for spec in opts.exclude_if_present:
            try:
                tags.append(parse_if_present(spec))
            except ValueError as e:
                raise UsageError(f"--exclude-if-present {e}") from None
        return Excluder(exclude_patterns(opts.excludes, opts.exclude_files),
                        exclude_patterns(opts.iexcludes, opts.iexclude_files),
                        larger_than=opts.exclude_larger_than, if_present=tags)

    def _tolerant(self, entries: Callable[[], Iterator[Node]]) -> Iterator[Node]:
        try:
            yield from entries()
        except HaeedgeError as e:
            self._warn(f"parent snapshot unreadable, statistics are relative to nothing: {e}")

    def _warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self.progress.warning(msg)

    def _walk_error(self, path: bytes, err: OSError) -> None:
        self.counts.errors += 1
        self._warn(f"{os.fsdecode(path)}: {err.strerror or err}")

    # ------------------------------------------------------------------ pipeline

    def _executor(self) -> Executor:
        """Worker processes (forked, sharing the index) or, where fork is unavailable, threads."""
        workers = self.opts.workers or int(os.environ.get("HAEEDGE_WORKERS", "0")) or (os.cpu_count() or 2)
        repo = self.repo
        # Workers skip only what this host may deduplicate against (docs/security.md D3).
        store = ChunkStore(repo.blob_id_key, repo.sealer("content"), self.chunker, repo.packer.compression_level,
                           repo.dedup_view())
        processes = workers > 1 and "fork" in multiprocessing.get_all_start_methods() and os.environ.get(
            "HAEEDGE_THREADS") != "1"
        # Where workers report the start of a big file's next segment (see _take_announcements).
        self._announcements = announcements = Announcements(processes)
        store.announce = announcements.put
        set_worker_state(store)
        if processes:
            return fork_pool(workers)
        return ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="read")

    def _run_pipeline(self, walk: Iterator[WalkItem], parent_entries: Iterator[Node], incremental: bool,
                      tree, pool: Executor) -> None:
        self._pool = pool
        self._inflight: deque[_Batch] = deque()
        self._workers = max(1, getattr(pool, "_max_workers", 2))
        self._max_inflight = self._workers + 1
        #: Segments announced before their predecessor's result came back, waiting for room.
        self._early: deque[_Batch] = deque()
        self._by_token: dict[int, _Slot] = {}
        self._next_token = 0
        #: Batches whose results are in (appended by the pool's thread), in-flight batches that
        #: may announce segments, and calls of _poll.
        self._finished: deque[_Batch] = deque()
        self._segmenting = 0
        self._polls = 0
        segment_from = min(SEGMENT_BYTES, self.chunker.params.max_size)
        #: (entry, its parent's entry, its read slot, its walk item, the hardlink group whose data it shares)
        pending: deque[tuple[Node, Node | None, _Slot | None, WalkItem | None, str | None]] = deque()
        parent_iter = iter(parent_entries)
        parent_next = next(parent_iter, None)
        parent_key = sort_key(parent_next.path) if parent_next is not None else None
        current = _Batch()
        current_bytes = 0

        def dispatch() -> None:
            nonlocal current, current_bytes
            if current.jobs:
                self._submit(current)
            current, current_bytes = _Batch(), 0

        def emit_deleted_before(key: bytes | None) -> None:
            nonlocal parent_next, parent_key
            while parent_next is not None and (key is None or parent_key < key):
                if incremental:
                    pending.append((deletion_marker(parent_next.path), None, None, None, None))
                self.counts.files_deleted += parent_next.type == "file"
                self._differences += 1
                parent_next = next(parent_iter, None)
                parent_key = sort_key(parent_next.path) if parent_next is not None else None

        def drain(force: bool) -> None:
            self._poll()
            while pending:
                slot = pending[0][2]
                if slot is not None and not force and len(pending) <= MAX_IN_FLIGHT:
                    if slot.batch is current or not slot.ready():
                        return
                if slot is not None and slot.batch is current:
                    dispatch()
                self._complete(pending.popleft(), incremental, tree)

        for item in walk:
            key = sort_key(item.relpath)
            emit_deleted_before(key)
            pe = None
            if parent_next is not None and parent_key == key:
                pe = parent_next
                parent_next = next(parent_iter, None)
                parent_key = sort_key(parent_next.path) if parent_next is not None else None
            try:
                entry = entry_from_stat(item.relpath, item.st, item.abspath)
            except OSError as e:
                self._walk_error(item.abspath, e)
                continue
            slot: _Slot | None = None
            group: str | None = None
            if entry.type == "file":
                if pe is not None and incremental and unchanged_file(pe, item.st):
                    entry.chunks = pe.chunks
                    entry.size = pe.size
                elif entry.hardlink is not None and entry.hardlink in self._hardlink_groups:
                    group = entry.hardlink
                else:
                    if entry.hardlink is not None:
                        self._hardlink_groups.add(entry.hardlink)
                    slot = _Slot(current, len(current.jobs))
                    current.jobs.append((item.abspath, item.st.st_ino, item.st.st_mtime_ns, 0, self._token(slot)))
                    current.slots.append(slot)
                    current_bytes += min(item.st.st_size, SEGMENT_BYTES)
                    if item.st.st_size >= segment_from:
                        current.may_segment = True
                    if len(current.jobs) >= BATCH_FILES or current_bytes >= BATCH_BYTES:
                        dispatch()
            pending.append((entry, pe, slot, item, group))
            drain(force=False)
        emit_deleted_before(None)
        dispatch()
        drain(force=True)
        self._advance()
        # Segments that outlived their file (it failed part-way) are applied too: a worker
        # sends each new blob once, so a result left unapplied could lose a blob that a
        # later file of this run names.
        while self._early:
            b = self._early.popleft()
            if not b.applied:
                self._apply(b, wait=True)
        while self._inflight:
            self._apply(self._inflight[0], wait=True)

    # The scheduler: batches go to workers; finished ones are applied as soon as
    # they are seen (their blobs packed, continuations of big files submitted),
    # in any order; entries are completed strictly in walk order.

    def _token(self, slot: _Slot) -> int:
        """A new job's token, so that an announcement of its file's next segment finds ``slot``."""
        self._next_token += 1
        self._by_token[self._next_token] = slot
        return self._next_token

    def _submit(self, b: _Batch, limit: int | None = None) -> None:
        assert b.future is None and not b.applied, "a batch is submitted once"
        while len(self._inflight) >= (limit or self._max_inflight):
            self._apply(self._inflight[0], wait=True)
            if b.future is not None:  # submitted meanwhile (an announced segment, while we waited)
                return
        b.future = self._pool.submit(run_batch, b.jobs)
        self._inflight.append(b)
        # Finished batches are announced by the pool's thread: a look at a deque per file instead
        # of a locked Future.done() per batch in flight.
        b.future.add_done_callback(lambda _f, b=b: self._finished.append(b))
        if b.may_segment:
            self._segmenting += 1

    def _poll(self) -> None:
        self._polls += 1
        # Only a file that may be read in segments announces (a big one, or one that grew);
        # an announcement nobody reads costs nothing (its result starts the next segment), but
        # the pipe is still emptied now and then.
        if self._segmenting or self._early or not self._polls % 1024:
            self._take_announcements()
        finished = self._finished
        while finished:
            b = finished.popleft()
            if b.future is not None and not b.applied:
                self._apply(b, wait=False)

    def _wait(self, future: Future) -> BatchResult:
        """The result of ``future``; announcements that arrive meanwhile start their segments."""
        while not future.done():
            futures_wait([future], timeout=ANNOUNCE_POLL)
            self._take_announcements()
        return future.result()

    def _take_announcements(self) -> None:
        """Start the next segment of a big file as soon as a worker knows where it begins."""
        for token, offset in self._announcements.take():
            slot = self._by_token.get(token)
            if slot is not None and slot.next_offset is None and not slot.root().done:
                self._continue(slot, offset, submit=False)
        # Announced segments may exceed the in-flight limit by one per worker: the batches
        # ahead of them may wait for the very segment whose successor this is.
        limit = self._max_inflight + self._workers
        while self._early and len(self._inflight) < limit:
            b = self._early.popleft()
            if b.future is None and not b.applied:  # not started meanwhile by a wait for it
                self._submit(b, limit)

    def _continue(self, slot: _Slot, offset: int, submit: bool) -> None:
        """Queue (or submit) the segment of ``slot``'s file that starts at ``offset``."""
        slot.next_offset = offset
        job = slot.batch.jobs[slot.index]
        cont = _Batch()
        cont.may_segment = True
        cont_slot = _Slot(cont, 0, parent=slot)
        cont.jobs.append((job[0], job[1], job[2], offset, self._token(cont_slot)))
        cont.slots.append(cont_slot)
        slot.root().segments.append(cont)
        if submit:
            self._submit(cont)
        else:
            self._early.append(cont)

    def _apply(self, b: _Batch, wait: bool) -> None:
        if b.applied:
            return
        if b.future is None:  # an announced segment still waiting for room
            self._submit(b)
        assert b.future is not None
        res: BatchResult = self._wait(b.future)
        if b.applied:  # applied while we waited (announcements can apply batches to make room)
            return
        b.applied = True
        self._inflight.remove(b)
        if b.may_segment:
            self._segmenting -= 1
        outcomes, blobs = res
        add = self.repo.add_sealed_blob
        for blob_id, compression, sealed, raw_length in blobs:
            add(BLOB_DATA, blob_id, compression, sealed, raw_length)
        # The future would keep every sealed blob alive until its last file is completed.
        blobs.clear()
        b.future = None
        by_token = self._by_token
        for slot, outcome in zip(b.slots, outcomes, strict=True):
            job = b.jobs[slot.index]
            by_token.pop(job[JOB_TOKEN], None)
            slot.take(outcome, job[JOB_OFFSET])
            nxt = outcome[OUT_NEXT]
            if nxt is not None and outcome[OUT_ERROR] is None and not slot.root().done:
                if slot.next_offset is None:  # not announced (yet): start it now
                    self._continue(slot, nxt, submit=True)
                elif slot.next_offset != nxt:
                    raise AssertionError("a segment announced another cut than it returned")

    def _advance(self) -> None:
        """Report the files completed since the last report."""
        if self._adv_files:
            self.progress.advance(files=self._adv_files, nbytes=self._adv_bytes)
            self._adv_files = self._adv_bytes = 0

    def _finish_slot(self, slot: _Slot) -> _Slot:
        """Wait until every segment of the file is in; returns the slot holding the totals."""
        while not slot.done:
            batch = next((b for b in slot.segments if not b.applied), None)
            assert batch is not None, "a file is unfinished with no segment outstanding"
            self._apply(batch, wait=True)
        return slot

    def _complete(self, job: tuple, incremental: bool, tree) -> None:
        entry, pe, slot, item, group = job
        if entry.deleted:
            tree.add(entry)
            return
        self.counts.entries += 1
        kind = entry.type
        if kind == "file":
            if slot is not None:
                self._finish_slot(slot)
                if slot.error is not None:
                    self.counts.errors += 1
                    self._warn(f"{os.fsdecode(item.abspath)}: cannot read: {slot.error}")
                    return
                entry.chunks = slot.chunks
                entry.size = slot.size
                self.counts.bytes_read += slot.size
                if entry.hardlink is not None:
                    self._hardlink_results[entry.hardlink] = (slot.chunks, slot.size)
                if slot.changed:
                    self.counts.errors += 1
                    self._warn(f"{os.fsdecode(item.abspath)}: file changed while it was being read; "
                               "the snapshot holds the bytes read")
            elif group is not None:
                got = self._hardlink_results.get(group)
                if got is None:
                    self.counts.errors += 1
                    self._warn(f"{os.fsdecode(item.abspath)}: hardlinked file could not be read")
                    return
                entry.chunks, entry.size = got
            self.counts.bytes_total += entry.size
            if pe is None:
                self.counts.files_new += 1
            elif pe == entry:
                self.counts.files_unchanged += 1
            else:
                self.counts.files_changed += 1
            # Progress is told in groups of files: one call per file cost more than its lstat.
            self._adv_files += 1
            self._adv_bytes += entry.size
            if self._adv_files >= PROGRESS_FILES:
                self._advance()
        elif kind == "dir":
            self.counts.dirs += 1
        else:
            self.counts.others += 1
        if pe is not None and pe == entry:
            if incremental:
                return
        elif item is None or item.relpath not in self._ancestors:
            # The directories above the sources are recorded only so restore can recreate them:
            # a new mtime of /home says nothing about what was backed up.
            self._differences += 1
        tree.add(entry)


class _Batch:
    __slots__ = ("jobs", "slots", "future", "applied", "may_segment")

    def __init__(self) -> None:
        self.jobs: list[FileJob] = []
        self.slots: list[_Slot] = []
        self.future: Future | None = None
        self.applied = False
        #: Holds a file big enough to be read in segments (or a segment): its worker announces cuts.
        self.may_segment = False


class _Slot:
    """One file's place in a batch. A big file is read in segments, each in a slot of its own
    whose ``parent`` is the previous one; the first (root) slot gathers them in file order,
    whatever order their results arrive in."""

    __slots__ = ("batch", "index", "parent", "next_offset", "segments", "parts", "cursor", "chunks", "size",
                 "changed", "error", "done")

    def __init__(self, batch: _Batch, index: int, parent: _Slot | None = None) -> None:
        self.batch = batch
        self.index = index
        self.parent = parent
        #: Where the segment after this one starts, once known (announced or returned).
        self.next_offset: int | None = None
        # Root only: the batches holding the file's segments, results by segment offset,
        # and the offset of the next segment to append.
        self.segments: list[_Batch] = [batch] if parent is None else []
        self.parts: dict[int, FileOutcome] | None = None
        self.cursor = 0
        self.chunks: list = []
        self.size = 0
        self.changed = False
        self.error: str | None = None
        self.done = False

    def root(self) -> _Slot:
        s = self
        while s.parent is not None:
            s = s.parent
        return s

    def take(self, outcome: FileOutcome, offset: int) -> None:
        root = self.root()
        if root.done:
            return  # an earlier segment failed: the file is settled
        if offset != root.cursor:  # an earlier segment is still out
            if root.parts is None:
                root.parts = {}
            root.parts[offset] = outcome
            return
        part: FileOutcome | None = outcome
        while part is not None:
            chunks, size, changed, error, nxt = part
            if error is not None or chunks is None:
                root.error = error or "unreadable"
                root.done = True
            else:
                root.chunks.extend(chunks)
                root.size += size
                root.changed |= changed
                if nxt is None:
                    root.done = True
                else:
                    root.cursor = nxt
            if root.done:
                root.parts = None
                return
            part = root.parts.pop(root.cursor, None) if root.parts else None

    def ready(self) -> bool:
        return self.done


def _repository_paths(repo: Repository) -> list[bytes]:
    """A local repository inside the backed-up tree is skipped, not backed up into itself
    (the backend layer says which local directories hold it; a remote location holds none)."""
    return [os.fsencode(p) for p in repository_local_paths(repo.backend)]
