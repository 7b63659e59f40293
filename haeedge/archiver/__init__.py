"""Backup: walk -> read -> chunk -> dedup -> pack -> file list -> snapshot.

The walk runs in the calling thread and stays in tree order. Files whose
content must be read go to a thread pool (reading, HMAC and zstd release the
GIL); their results are consumed in walk order so the file list streams out
sorted. The snapshot is written last: it is the commit point.
"""

from __future__ import annotations

import getpass
import os
import socket
import stat
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from haeedge import __version__
from haeedge.archiver.metadata import entry_from_stat, unchanged_file
from haeedge.archiver.walker import Excluder, WalkItem, normalize_sources, read_exclude_file, walk_sources
from haeedge.chunking import Chunker, _read_full
from haeedge.errors import HaeedgeError, IntegrityError, UsageError
from haeedge.progress import ProgressSink, SilentProgress
from haeedge.repo.pack import BLOB_DATA
from haeedge.repo.repository import Repository
from haeedge.repo.snapshot import KIND_FULL, KIND_INCREMENTAL, Snapshot, now_iso
from haeedge.repo.tree import path_bytes, set_path, sort_key

DEFAULT_FULL_IF_OLDER_THAN = timedelta(days=7)
MAX_IN_FLIGHT = 512


@dataclass
class BackupOptions:
    paths: list[str]
    excludes: list[str] = field(default_factory=list)
    exclude_files: list[str] = field(default_factory=list)
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
    summary: dict
    warnings: list[str]

    @property
    def partial(self) -> bool:
        return bool(self.summary.get("errors"))


@dataclass
class _FileResult:
    chunks: list
    size: int
    new_bytes: int
    read_bytes: int
    changed_while_reading: bool = False


class Archiver:
    def __init__(self, repo: Repository, options: BackupOptions, progress: ProgressSink | None = None):
        self.repo = repo
        self.opts = options
        self.progress = progress or SilentProgress()
        self.chunker = Chunker(repo.config.chunker)
        self.warnings: list[str] = []
        self.counts = dict(files_new=0, files_changed=0, files_unchanged=0, dirs=0, others=0,
                           files_deleted=0, errors=0, entries=0, bytes_read=0, bytes_total=0)
        self._hardlinks: dict[str, Future | _FileResult] = {}

    # ------------------------------------------------------------------ policy

    def choose_parent(self, host: str, paths: list[str]) -> Snapshot | None:
        if self.opts.parent:
            return self.repo.resolve_snapshot(self.opts.parent)
        snaps = self.repo.list_snapshots(on_error=lambda sid, e: self._warn(f"snapshot {sid[:8]}: {e}"))
        candidates = [s for s in snaps if s.host == host and sorted(s.paths) == sorted(paths)]
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
            self.repo.chain_of(parent)
        except IntegrityError as e:
            self._warn(f"parent snapshot {parent.short_id} has a broken chain ({e}); making a full backup")
            return KIND_FULL, "parent chain is broken"
        if self.opts.full_if_older_than is not None:
            root = self.repo.load_snapshot(parent.chain_root)
            if datetime.now(UTC) - root.datetime >= self.opts.full_if_older_than:
                return KIND_FULL, "chain's full snapshot is older than the limit"
        return KIND_INCREMENTAL, f"parent {parent.short_id}"

    # ------------------------------------------------------------------ run

    def run(self) -> BackupResult:
        started = time.monotonic()
        opts = self.opts
        if not opts.paths:
            raise UsageError("nothing to back up: give at least one path")
        sources = normalize_sources(opts.paths)
        for s in sources:
            if not os.path.lexists(s):
                raise UsageError(f"{os.fsdecode(s)}: no such file or directory")
        patterns = list(opts.excludes)
        for f in opts.exclude_files:
            try:
                patterns += read_exclude_file(f)
            except OSError as e:
                raise UsageError(f"cannot read exclude file {f}: {e.strerror}") from None
        excluder = Excluder(patterns)
        host = opts.host or socket.gethostname()
        paths = [os.fsdecode(s) for s in sources]
        if opts.compression_level is not None:
            self.repo.compression_level = opts.compression_level
        self.repo.dry_run = opts.dry_run

        parent = self.choose_parent(host, paths)
        kind, reason = self.choose_kind(parent)
        self.progress.info(f"{kind} backup ({reason})")
        parent_entries: Iterator[dict] = iter(())
        if parent is not None:
            # A full backup reads the parent's list only for its statistics.
            parent_entries = self.repo.iter_entries(parent)
            if kind == KIND_FULL:
                parent_entries = self._tolerant(parent_entries)

        skip = frozenset(_repository_paths(self.repo))
        walk = walk_sources(sources, excluder, opts.one_file_system, self._walk_error, skip)
        tree = self.repo.tree_writer()
        self.progress.start("backup")
        workers = opts.workers or min(4, (os.cpu_count() or 2))
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="read") as pool:
                self._run_pipeline(walk, parent_entries, kind == KIND_INCREMENTAL, tree, pool)
            tree_ids = tree.finish()
            self.repo.flush()
        except BaseException:
            self.repo.abort_writes()
            raise
        finally:
            self.progress.finish()

        st = self.repo.stats
        summary = dict(self.counts)
        summary.update(
            kind=kind,
            kind_reason=reason,
            data_blobs_added=st.data_blobs_added,
            tree_blobs_added=st.tree_blobs_added,
            blobs_added=st.blobs_added,
            bytes_added=st.stored_bytes_added,
            raw_bytes_added=st.raw_bytes_added,
            packs_written=st.packs_written,
            duration=round(time.monotonic() - started, 3),
        )
        snap = Snapshot(
            time=now_iso(), host=host, paths=paths, kind=kind, tree=tree_ids,
            parent=parent.id if kind == KIND_INCREMENTAL and parent else None,
            chain=parent.chain_root if kind == KIND_INCREMENTAL and parent else None,
            depth=parent.depth + 1 if kind == KIND_INCREMENTAL and parent else 0,
            tags=sorted(set(opts.tags)), username=_username(), summary=summary,
            program=f"haeedge {__version__}",
        )
        if not opts.dry_run:
            self.repo.save_snapshot(snap)
        return BackupResult(snap if not opts.dry_run else None, summary, self.warnings)

    def _tolerant(self, entries: Iterator[dict]) -> Iterator[dict]:
        try:
            yield from entries
        except HaeedgeError as e:
            self._warn(f"parent snapshot unreadable, statistics are relative to nothing: {e}")

    def _warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self.progress.warning(msg)

    def _walk_error(self, path: bytes, err: OSError) -> None:
        self.counts["errors"] += 1
        self._warn(f"{os.fsdecode(path)}: {err.strerror or err}")

    # ------------------------------------------------------------------ pipeline

    def _run_pipeline(self, walk: Iterator[WalkItem], parent_entries: Iterator[dict], incremental: bool,
                      tree, pool: ThreadPoolExecutor) -> None:
        pending: deque[tuple[dict, dict | None, Future | None, WalkItem]] = deque()
        parent_iter = iter(parent_entries)
        parent_next = next(parent_iter, None)
        parent_key = sort_key(path_bytes(parent_next)) if parent_next is not None else None

        def emit_deleted_before(key: bytes | None) -> None:
            nonlocal parent_next, parent_key
            while parent_next is not None and (key is None or parent_key < key):
                if incremental:
                    marker: dict = {}
                    set_path(marker, path_bytes(parent_next))
                    marker["deleted"] = True
                    pending.append((marker, None, None, None))
                self.counts["files_deleted"] += parent_next.get("type") == "file"
                parent_next = next(parent_iter, None)
                parent_key = sort_key(path_bytes(parent_next)) if parent_next is not None else None

        for item in walk:
            key = sort_key(item.relpath)
            emit_deleted_before(key)
            pe = None
            if parent_next is not None and parent_key == key:
                pe = parent_next
                parent_next = next(parent_iter, None)
                parent_key = sort_key(path_bytes(parent_next)) if parent_next is not None else None
            try:
                entry = entry_from_stat(item.relpath, item.st, item.abspath)
            except OSError as e:
                self._walk_error(item.abspath, e)
                continue
            fut: Future | None = None
            if entry["type"] == "file":
                if pe is not None and incremental and unchanged_file(pe, item.st):
                    entry["chunks"] = pe["chunks"]
                    entry["size"] = pe["size"]
                elif "hardlink" in entry and entry["hardlink"] in self._hardlinks:
                    fut = self._hardlinks[entry["hardlink"]]  # type: ignore[assignment]
                else:
                    fut = pool.submit(self._read_file, item)
                    if "hardlink" in entry:
                        self._hardlinks[entry["hardlink"]] = fut
            pending.append((entry, pe, fut, item))
            while pending and (len(pending) > MAX_IN_FLIGHT or pending[0][2] is None or pending[0][2].done()):
                self._complete(pending.popleft(), incremental, tree)
        emit_deleted_before(None)
        while pending:
            self._complete(pending.popleft(), incremental, tree)

    def _complete(self, job: tuple, incremental: bool, tree) -> None:
        entry, pe, fut, item = job
        if entry.get("deleted"):
            tree.add(entry)
            return
        self.counts["entries"] += 1
        kind = entry["type"]
        if kind == "file":
            if fut is not None:
                try:
                    res: _FileResult = fut.result()
                except OSError as e:
                    self.counts["errors"] += 1
                    self._warn(f"{os.fsdecode(item.abspath)}: cannot read: {e.strerror or e}")
                    return
                entry["chunks"] = res.chunks
                entry["size"] = res.size
                self.counts["bytes_read"] += res.read_bytes
                if res.changed_while_reading:
                    self.counts["errors"] += 1
                    self._warn(f"{os.fsdecode(item.abspath)}: file changed while it was being read; "
                               "the snapshot holds the bytes read")
                    res.changed_while_reading = False  # report a hardlinked file once
                    res.read_bytes = 0
                else:
                    res.read_bytes = 0
            self.counts["bytes_total"] += entry["size"]
            if pe is None:
                self.counts["files_new"] += 1
            elif pe == entry:
                self.counts["files_unchanged"] += 1
            else:
                self.counts["files_changed"] += 1
            self.progress.advance(files=1, nbytes=entry["size"])
        elif kind == "dir":
            self.counts["dirs"] += 1
        else:
            self.counts["others"] += 1
        if incremental and pe is not None and pe == entry:
            return
        tree.add(entry)

    def _read_file(self, item: WalkItem) -> _FileResult:
        """Read, chunk and store one file. Runs in a worker thread."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NOATIME", 0)
        try:
            fd = os.open(item.abspath, flags)
        except PermissionError:
            fd = os.open(item.abspath, flags & ~getattr(os, "O_NOATIME", 0))
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode) or before.st_ino != item.st.st_ino:
                raise OSError(0, "file was replaced while the backup ran")
            chunks: list = []
            size = 0
            new_bytes = 0
            save = self.repo.save_blob
            params = self.chunker.params
            if before.st_size < params.max_size:
                data = _read_full(fd, before.st_size + 1)
                if len(data) <= before.st_size:
                    for chunk in self.chunker.chunks_of_bytes(data):
                        bid, new = save(BLOB_DATA, chunk)
                        chunks.append([bid.hex(), len(chunk)])
                        new_bytes += len(chunk) if new else 0
                    size = len(data)
                else:  # grew while we looked: stream it
                    os.lseek(fd, 0, os.SEEK_SET)
                    data = None
            else:
                data = None
            if data is None:
                for chunk in self.chunker.chunks_of_fd(fd):
                    bid, new = save(BLOB_DATA, chunk)
                    chunks.append([bid.hex(), len(chunk)])
                    size += len(chunk)
                    new_bytes += len(chunk) if new else 0
            after = os.fstat(fd)
            changed = (after.st_mtime_ns != item.st.st_mtime_ns or after.st_size != size
                       or before.st_mtime_ns != item.st.st_mtime_ns)
            return _FileResult(chunks, size, new_bytes, size, changed)
        finally:
            os.close(fd)


def _username() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001
        return ""


def _repository_paths(repo: Repository) -> list[bytes]:
    """A local repository inside the backed-up tree is skipped, not backed up into itself."""
    root = getattr(repo.backend, "root", None)
    return [os.fsencode(root)] if isinstance(root, str) else []
