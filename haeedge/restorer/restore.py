"""Restore: walk the chain, recreate the tree, fetch each pack once per batch.

Safety (the repository may be hostile):
- entry paths are validated by the tree reader (relative, no ``..``, no NUL);
- every directory on the way to an entry is checked to be a real directory,
  never a symlink; symlinks are created last, after all data is written, so
  no write can pass through one; hardlinks only point at files restored here;
- device nodes are created only when asked for (``devices=True``);
- memory per batch is bounded and every blob is checked against its keyed id.

Throughput: files are planned in batches; the blobs of a batch are grouped
by pack and each pack is read once (nearby blobs in one ranged read), in
worker processes on a local repository and in threads otherwise (packs.py);
blobs are written with ``pwrite`` at their offsets. Chunks that are all zeros
are skipped, so sparse files stay sparse. This module keeps every file's state:
the workers report what they wrote and what failed.
"""

from __future__ import annotations

import errno
import fnmatch
import grp
import os
import pwd
import stat
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, as_completed
from dataclasses import dataclass, field
from functools import lru_cache

from haeedge.errors import HaeedgeError, UsageError
from haeedge.fs import LAST_LONG_DIR, at_nofollow, open_nofollow
from haeedge.operations import coldreads
from haeedge.progress import ProgressSink, SilentProgress
from haeedge.repo.index import BlobLocation
from haeedge.repo.pack import BLOB_DATA
from haeedge.repo.packer import KEY_FOR_BLOB
from haeedge.repo.repository import Repository, hex_id
from haeedge.repo.snapshot import Snapshot
from haeedge.repo.tree import Node, is_under
from haeedge.restorer.delete import delete_extraneous
from haeedge.restorer.existing import Decision, ExistingEntries
from haeedge.restorer.packs import (
    FRESH,
    IN_PLACE,
    SIMPLE,
    PackOutcome,
    PackRestorer,
    Target,
    apply_meta_fd,
    pack_executor,
)
from haeedge.restorer.verify import content_mismatch

BATCH_BYTES = 128 << 20
BATCH_FILES = 1_000
#: From network storage a batch spans more files: a pack whose blobs fall into two batches is
#: fetched once for each, and every fetch is a request (a 115 MiB restore from S3 made 12 data
#: reads with batches of 1,000 files, 8 with 5,000, as many as restic).
NETWORK_BATCH_FILES = 5_000


@dataclass
class RestoreOptions:
    target: str
    includes: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    dry_run: bool = False
    devices: bool = False
    owners: bool | None = None  # None: restore ownership only when running as root
    workers: int = 4
    #: What to do with entries already in the target: always, if-changed, if-newer, never (existing.py).
    overwrite: str = "always"
    #: Remove what the snapshot does not hold below the restored paths (delete.py).
    delete: bool = False
    #: Re-read every written file and compare it with the snapshot's blob ids (and compare content in if-changed).
    verify: bool = False


@dataclass
class RestoreResult:
    files: int = 0
    dirs: int = 0
    others: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)  # dry run: what would be restored
    #: The file list broke off: entries after that point were not restored at all.
    stopped_early: bool = False
    #: Includes that matched no entry of the snapshot (as given, with a leading '/').
    unmatched: list[str] = field(default_factory=list)
    #: Files already in the target equal to the snapshot's (--overwrite if-changed): data not fetched.
    unchanged: int = 0
    #: Existing entries left exactly as they were (--overwrite if-newer / never).
    kept: int = 0
    #: Bytes of the snapshot's files that were not written because of the two counts above.
    bytes_skipped: int = 0
    #: --delete: what was removed (with dry_run: what would be), relative to the target.
    deleted: list[str] = field(default_factory=list)
    #: --verify: files re-read after writing, and those whose content did not match the snapshot.
    verified: int = 0
    mismatched: list[str] = field(default_factory=list)
    #: Pack bytes that worker processes read themselves (the caller's backend wrappers do not see them).
    bytes_read_by_workers: int = 0


@dataclass
class _FileJob:
    rel: bytes
    path: bytes
    entry: Node
    remaining: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    failed: bool = False
    #: One chunk: created, written and finished in one go by the data phase.
    simple: bool = False
    #: --overwrite if-changed: an existing file completed in place; these chunks (by index) are intact.
    reuse: frozenset[int] = frozenset()
    #: Names the job in what the pack workers report.
    key: int = 0


class Restorer:
    def __init__(self, repo: Repository, options: RestoreOptions, progress: ProgressSink | None = None):
        self.repo = repo
        self.opts = options
        self.progress = progress or SilentProgress()
        self.result = RestoreResult()
        self.target = os.fsencode(os.path.abspath(options.target))
        self.owners = (os.geteuid() == 0) if options.owners is None else options.owners
        self._dirs_ok: set[bytes] = set()
        #: Directories this run created: nothing can be in the way inside them.
        self._fresh: set[bytes] = set()
        self._dir_meta: list[tuple[bytes, Node]] = []
        self._symlinks: list[tuple[bytes, Node]] = []
        self._hardlinks: list[tuple[bytes, str]] = []
        self._link_sources: dict[str, bytes] = {}
        self._result_lock = threading.Lock()
        self._in_flight: list[tuple[list[Future], list[_FileJob]]] = []
        #: Jobs of the batches in flight, by key.
        self._jobs: dict[int, _FileJob] = {}
        self._next_key = 0
        self._pool: Executor | None = None
        self._submit_fn: Callable[..., PackOutcome] | None = None
        #: Worker processes the data phase used (0: threads), and the ids of those that did work.
        self.processes = 0
        self.worker_pids: set[int] = set()
        self._existing = ExistingEntries(options.overwrite, options.verify, repo.blob_id)
        #: Existing files to complete in place: path -> indexes of the chunks they hold intact.
        self._reuse: dict[bytes, frozenset[int]] = {}
        #: --delete: every path of the selection, to tell what the target holds besides.
        self._selected: set[bytes] | None = set() if options.delete else None

    # ------------------------------------------------------------------ selection

    def _selector(self):
        inc = [os.fsencode(p).strip(b"/") for p in self.opts.includes]
        inc = [p for p in inc if p] if inc else []
        exc = [os.fsencode(p) for p in self.opts.excludes]

        def wanted(rel: bytes, entry: Node) -> bool:
            if inc:
                if not is_under(rel, inc) and not any(p.startswith(rel + b"/") for p in inc):
                    return False
            if exc:
                name = rel.rsplit(b"/", 1)[-1]
                full = b"/" + rel
                for p in exc:
                    pat = p.rstrip(b"/")
                    if b"/" in pat:
                        if fnmatch.fnmatchcase(full, pat) or is_under(full, [pat]):
                            return False
                    elif fnmatch.fnmatchcase(name, pat):
                        return False
            return True

        return wanted, exc

    def _entries(self, snap: Snapshot) -> Iterator[tuple[bytes, Node]]:
        wanted, exc = self._selector()
        excluded_dirs: list[bytes] = []
        # An include that matches nothing is a mistyped path, not an empty success (see ``unmatched``).
        unmatched = {p for p in (os.fsencode(i).strip(b"/") for i in self.opts.includes) if p}
        for entry in self.repo.iter_entries(snap):
            rel = entry.path
            if unmatched:
                unmatched -= {p for p in unmatched if is_under(rel, [p])}
            if excluded_dirs and is_under(rel, excluded_dirs):
                continue
            if not wanted(rel, entry):
                if exc and entry.type == "dir":
                    excluded_dirs.append(rel)
                continue
            if self._selected is not None:
                self._selected.add(rel)
            yield rel, entry
        self.result.unmatched = sorted("/" + os.fsdecode(p) for p in unmatched)

    # ------------------------------------------------------------------ run

    def run(self, snap: Snapshot) -> RestoreResult:
        try:
            return self._run(snap)
        finally:
            LAST_LONG_DIR.close()

    def _run(self, snap: Snapshot) -> RestoreResult:
        if not self.opts.dry_run:
            try:
                if not os.path.lexists(self.target) or (os.path.isdir(self.target) and not os.listdir(self.target)):
                    self._fresh.add(b"")
                os.makedirs(self.target, exist_ok=True)
            except OSError as e:
                raise UsageError(f"cannot create target {os.fsdecode(self.target)}: {e.strerror}") from None
            if not os.path.isdir(self.target):
                raise UsageError(f"target {os.fsdecode(self.target)} is not a directory")
        summary = snap.summary
        files_total = sum(summary.get(k, 0) for k in ("files_new", "files_changed", "files_unchanged")
                          if isinstance(summary.get(k, 0), int))
        bytes_total = summary.get("bytes_total")
        if not self.opts.dry_run and coldreads.wanted(self.repo):  # archived packs: restore them all first
            coldreads.prepare_entries(self.repo, (entry for _rel, entry in self._entries(snap)))
        if not self.opts.dry_run:
            try:  # derived once here, not in every worker
                self.repo.keyring(KEY_FOR_BLOB[BLOB_DATA])
            except HaeedgeError:
                pass  # a write-only key: decoding a blob says so
        packs = PackRestorer(self.repo, self.target, keeping=not self._existing.replaces_all,
                             local=bool(self.repo.backend.properties.local_paths))
        pool, self._submit_fn, self.processes = (pack_executor(packs, self.opts.workers) if not self.opts.dry_run
                                                 else (None, None, 0))
        self._pool = pool
        self.progress.start("restore", bytes_total if isinstance(bytes_total, int) else None, files_total or None)
        batch: list[_FileJob] = []
        batch_bytes = 0
        batch_files = BATCH_FILES if self.repo.backend.properties.local_paths else NETWORK_BATCH_FILES
        stopped: HaeedgeError | None = None
        reached = 0
        try:
            entries = self._entries(snap)
            while True:
                try:
                    rel, entry = next(entries)
                except StopIteration:
                    break
                except HaeedgeError as e:
                    # The file list cannot be read on (a damaged list blob, storage gone). Files
                    # already created must not be left looking whole: finish their data below,
                    # so each one is either complete or named damaged, then report the error.
                    if self.opts.dry_run or not reached:
                        raise  # nothing was written: the error alone says it all
                    stopped = e
                    break
                reached += 1
                if self.opts.dry_run:
                    self.result.planned.append(os.fsdecode(rel))
                    self._count(entry)
                    continue
                try:
                    job = self._create(rel, entry)
                except OSError as e:
                    self._warn(f"{os.fsdecode(rel)}: {e.strerror or e}", skipped=True)
                    continue
                except _Unsafe as e:
                    self._warn(f"{os.fsdecode(rel)}: {e}", skipped=True)
                    continue
                if job is not None:
                    batch.append(job)
                    batch_bytes += entry.size or 0
                    if batch_bytes >= BATCH_BYTES or len(batch) >= batch_files:
                        self._restore_batch(batch)
                        batch, batch_bytes = [], 0
            if batch:
                self._restore_batch(batch)
            while self._in_flight:
                self._settle_batch()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        if not self.opts.dry_run:
            self._finish_links()
        if self._selected is not None and stopped is None:
            self._delete_extraneous(snap)
        if not self.opts.dry_run:
            self._finish_dirs()
        self.progress.finish()
        if stopped is not None:
            self.result.stopped_early = True
            raise stopped
        return self.result

    def _count(self, entry: Node) -> None:
        t = entry.type
        if t == "file":
            self.result.files += 1
            self.result.bytes += entry.size or 0
        elif t == "dir":
            self.result.dirs += 1
        else:
            self.result.others += 1

    def _warn(self, msg: str, skipped: bool = False) -> None:
        with self._result_lock:
            self.result.warnings.append(msg)
            if skipped:
                self.result.skipped.append(msg)
        self.progress.warning(msg)

    # ------------------------------------------------------------------ filesystem (safe)

    def _abs(self, rel: bytes) -> bytes:
        return self.target + b"/" + rel

    def _ensure_parent(self, rel: bytes) -> None:
        """Every directory from the target down to ``rel``'s parent is a real directory."""
        missing = []
        parent = rel.rpartition(b"/")[0]
        while parent and parent not in self._dirs_ok:  # a loop, not recursion: trees nest thousands deep
            missing.append(parent)
            parent = parent.rpartition(b"/")[0]
        for d in reversed(missing):
            self._make_dir(d)

    def _make_dir(self, rel: bytes) -> None:
        path = self._abs(rel)
        with at_nofollow(path) as (dir_fd, name):
            try:
                os.mkdir(name, 0o700, dir_fd=dir_fd)
                if rel.rpartition(b"/")[0] in self._fresh:
                    self._fresh.add(rel)
                    self._dirs_ok.add(rel)
                    return
            except FileExistsError:
                pass
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            if stat.S_ISLNK(st.st_mode):
                raise _Unsafe("refusing to restore through an existing symlink")
            raise _Unsafe("exists and is not a directory")
        self._dirs_ok.add(rel)

    def _create(self, rel: bytes, entry: Node) -> _FileJob | None:
        if entry.damaged:
            self.result.damaged.append(os.fsdecode(rel))
        self._ensure_parent(rel)
        path = self._abs(rel)
        kind = entry.type
        if kind == "dir":
            untouched = self._keep_existing_dir(rel, path)
            self._make_dir(rel)
            if untouched:
                self.result.kept += 1
            else:
                self._dir_meta.append((path, entry))
            self.result.dirs += 1
            return None
        if kind == "symlink":
            self._symlinks.append((path, entry))
            self.result.others += 1
            return None
        group = entry.hardlink if kind == "file" else None
        if group is None or group not in self._link_sources:  # later names of a group: _finish_links
            if self._keep_existing(path, entry):
                self._count(entry)
                return None
            if rel.rpartition(b"/")[0] not in self._fresh and path not in self._reuse:
                _remove_existing(path)
        if kind == "file":
            if group is not None and group in self._link_sources:
                self._hardlinks.append((path, group, entry))
                self.result.files += 1
                return None
            if group is not None:
                self._link_sources[group] = path
            chunks = entry.chunks or []
            size = entry.size or 0
            self.result.files += 1
            self.result.bytes += size
            if entry.damaged and not chunks:
                return None
            if path in self._reuse:
                job = self._complete_in_place(rel, path, entry, self._reuse.pop(path))
                if job is not None:
                    return job
                _remove_existing(path)  # not writable in place (a read-only file): replaced whole
            if len(chunks) == 1:
                return _FileJob(rel, path, entry, 1, simple=True)
            fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                if size:
                    os.ftruncate(fd, size)
                if not chunks:
                    self._apply_meta_fd(fd, path, entry)
            finally:
                os.close(fd)
            if not chunks:
                return None
            return _FileJob(rel, path, entry, len(chunks))
        self.result.others += 1
        mode = (entry.mode if entry.mode is not None else 0o600) & 0o7777
        if kind in ("chardev", "blockdev") and not self.opts.devices:
            self._warn(f"{os.fsdecode(rel)}: device node skipped (restore with --devices, as root)", skipped=True)
            return None
        with at_nofollow(path) as (dir_fd, name):
            if kind == "fifo":
                os.mkfifo(name, mode, dir_fd=dir_fd)
            elif kind == "socket":
                os.mknod(name, stat.S_IFSOCK | mode, dir_fd=dir_fd)
            elif kind in ("chardev", "blockdev"):
                fmt = stat.S_IFCHR if kind == "chardev" else stat.S_IFBLK
                os.mknod(name, fmt | mode, entry.rdev or 0, dir_fd=dir_fd)
        self._apply_meta_path(path, entry)
        return None

    # ------------------------------------------------------------------ data

    def _restore_batch(self, batch: list[_FileJob]) -> None:
        targets: dict[str, dict[bytes, list[Target]]] = defaultdict(lambda: defaultdict(list))
        by_pack: dict[str, dict[bytes, BlobLocation]] = defaultdict(dict)
        for job in batch:
            job.key = self._next_key
            self._next_key += 1
            self._jobs[job.key] = job
            if job.simple:
                entry = job.entry
                meta = ((entry.mode if entry.mode is not None else 0o600) & 0o7777, entry.mtime_ns or 0,
                        _owner_ids(entry) if self.owners else None)
                kind = SIMPLE
            else:
                meta = None
                kind = IN_PLACE if job.reuse else FRESH
            offset = 0
            for i, (chunk_id, length) in enumerate(job.entry.chunks):
                if i in job.reuse:
                    offset += length
                    continue
                try:
                    bid = hex_id(chunk_id)
                except HaeedgeError:
                    self._fail(job, f"bad chunk id {chunk_id[:16]!r}")
                    offset += length
                    continue
                loc = self.repo.lookup_blob(bid)
                if loc is None:
                    self._fail(job, f"blob {chunk_id[:16]} is missing")
                    offset += length
                    continue
                targets[loc.pack_id][bid].append((job.key, job.path, offset, kind, meta))
                by_pack[loc.pack_id][bid] = loc
                offset += length
            if offset != (job.entry.size or 0):
                self._fail(job, "chunk lengths do not add up to the file size")
        assert self._pool is not None and self._submit_fn is not None
        futures = [self._pool.submit(self._submit_fn, pack_id, list(blobs.items()), dict(targets[pack_id]))
                   for pack_id, blobs in by_pack.items()]
        # Plan the next batch while this one is written; at most two are in flight.
        self._in_flight.append((futures, batch))
        while len(self._in_flight) > 1:
            self._settle_batch()

    def _settle_batch(self) -> None:
        futures, batch = self._in_flight.pop(0)
        for f in as_completed(futures):
            self._merge(f.result())
        for job in batch:
            del self._jobs[job.key]
            if job.remaining > 0 and not job.failed:
                self._fail(job, "not all data could be restored")
            elif self.opts.verify and not job.failed:
                self._verify_written(job)

    def _merge(self, out: PackOutcome) -> None:
        """Account one pack's work: progress, failures, and a file's metadata when its last blob landed."""
        self.result.bytes_read_by_workers += out.bytes_read if self.processes else 0
        self.worker_pids.add(out.pid)
        for msg in out.warnings:
            self._warn(msg)
        for key, why in out.failed:
            self._fail(self._jobs[key], why)
        nbytes = 0
        for key, n in out.finished:
            self._jobs[key].remaining = 0
            nbytes += n
        if out.finished:
            self.progress.advance(files=len(out.finished), nbytes=nbytes)
        for key, n in out.written:
            job = self._jobs[key]
            self.progress.advance(nbytes=n)
            job.remaining -= 1
            if job.remaining == 0 and not job.failed:
                self._apply_meta_path(job.path, job.entry)
                self.progress.advance(files=1)

    def _fail(self, job: _FileJob, why: str) -> None:
        with job.lock:
            if job.failed:
                return
            job.failed = True
        with self._result_lock:
            self.result.damaged.append(os.fsdecode(job.rel))
        self._warn(f"{os.fsdecode(job.rel)}: damaged: {why}")

    # ------------------------------------------------------------------ metadata

    def _apply_meta_fd(self, fd: int, path: bytes, entry: Node) -> None:
        why = apply_meta_fd(fd, (entry.mode if entry.mode is not None else 0o600) & 0o7777, entry.mtime_ns or 0,
                            _owner_ids(entry) if self.owners else None)
        if why:
            self._warn(f"{os.fsdecode(path[len(self.target) + 1:])}: cannot set metadata: {why}")

    def _apply_meta_path(self, path: bytes, entry: Node, follow: bool = False) -> None:
        try:
            with at_nofollow(path) as (dir_fd, name):
                if self.owners:
                    uid, gid = _owner_ids(entry)
                    os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
                if entry.type != "symlink":
                    # Never a symlink here: those are created last and skip this branch.
                    os.chmod(name, (entry.mode if entry.mode is not None else 0o600) & 0o7777, dir_fd=dir_fd)
                mtime = entry.mtime_ns or 0
                os.utime(name, ns=(mtime, mtime), dir_fd=dir_fd, follow_symlinks=False)
        except OSError as e:
            self._warn(f"{os.fsdecode(path[len(self.target) + 1:])}: cannot set metadata: {e.strerror}")

    def _finish_links(self) -> None:
        for path, group, entry in self._hardlinks:
            src = self._link_sources.get(group)
            if src is None:
                continue
            try:
                if self._keep_existing(path, entry, link_source=src):
                    continue
                _remove_existing(path)
                with at_nofollow(src) as (src_fd, src_name), at_nofollow(path) as (dst_fd, dst_name):
                    os.link(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
            except OSError as e:
                self._warn(f"{os.fsdecode(path[len(self.target) + 1:])}: cannot create hardlink: {e.strerror}")
            except _Unsafe as e:
                self._warn(f"{os.fsdecode(path[len(self.target) + 1:])}: hardlink not created: {e}", skipped=True)
        # Symlinks come last: nothing is written after them, so nothing can pass through one.
        for path, entry in self._symlinks:
            target = entry.target
            if target is None:
                self._warn(f"{os.fsdecode(path)}: symlink without target", skipped=True)
                continue
            try:
                if self._keep_existing(path, entry):
                    continue
                _remove_existing(path)
                with at_nofollow(path) as (dir_fd, name):
                    os.symlink(target, name, dir_fd=dir_fd)
                self._apply_meta_path(path, entry)
            except OSError as e:
                self._warn(f"{os.fsdecode(path[len(self.target) + 1:])}: cannot create symlink: {e.strerror}")
            except _Unsafe as e:
                self._warn(f"{os.fsdecode(path[len(self.target) + 1:])}: symlink not created: {e}", skipped=True)

    def _finish_dirs(self) -> None:
        for path, entry in sorted(self._dir_meta, key=lambda pe: pe[0].count(b"/"), reverse=True):
            self._apply_meta_path(path, entry)

    # ------------------------------------------------------------------ existing target (--overwrite, --delete)

    def _keep_existing(self, path: bytes, entry: Node, link_source: bytes | None = None) -> bool:
        """Whether the entry already at ``path`` stays instead of being replaced (existing.py).

        A kept file is counted as such and, when unchanged, gets the snapshot's metadata; a
        kept first name of a hardlink group is what the group's later names link to.
        """
        rel = path[len(self.target) + 1 :]
        if self._existing.replaces_all or rel.rpartition(b"/")[0] in self._fresh:
            return False
        st = _lstat(path)
        source_st = _lstat(link_source) if link_source is not None else None

        def open_file() -> int:
            return open_nofollow(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)

        if entry.type == "file" and link_source is None:
            decision, reuse = self._existing.decide_file(entry, st, open_file)
            if reuse:
                self._reuse[path] = reuse
        else:
            decision = self._existing.decide(entry, st, link_source=source_st, open_file=open_file,
                                             read_target=lambda: _readlink(path))
        if decision is Decision.WRITE:
            return False
        kind = entry.type
        size = (entry.size or 0) if kind == "file" and link_source is None else 0
        with self._result_lock:
            if decision is Decision.UNCHANGED:
                self.result.unchanged += 1
                if kind == "file" and self.opts.verify:
                    self.result.verified += 1  # its content was compared before keeping it
            else:
                self.result.kept += 1
            self.result.bytes_skipped += size
        if kind == "file" and link_source is None and entry.hardlink is not None and stat.S_ISREG(st.st_mode):
            self._link_sources[entry.hardlink] = path
        if decision is Decision.UNCHANGED:
            if kind == "file":
                self._apply_meta_existing_file(path, entry)
            else:
                self._apply_meta_path(path, entry)
        self.progress.advance(files=1, nbytes=size)
        return True

    def _complete_in_place(self, rel: bytes, path: bytes, entry: Node, reuse: frozenset[int]) -> _FileJob | None:
        """if-changed: fetch only the chunks an existing file of the right size lacks (existing.py).

        Its mtime becomes "now" first, so that until every chunk is written and the snapshot's
        mtime set, the file cannot look whole to a later run, however this one ends.
        """
        try:
            fd = open_nofollow(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except PermissionError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _Unsafe("changed while being looked at")
            os.utime(fd)
        finally:
            os.close(fd)
        reused = sum(int(entry.chunks[i][1]) for i in reuse)
        with self._result_lock:
            self.result.bytes_skipped += reused
        self.progress.advance(nbytes=reused)
        return _FileJob(rel, path, entry, len(entry.chunks) - len(reuse), reuse=reuse)

    def _keep_existing_dir(self, rel: bytes, path: bytes) -> bool:
        """--overwrite never: a directory that was already there keeps its own metadata."""
        return self._existing.mode == "never" and rel.rpartition(b"/")[0] not in self._fresh \
            and _lstat(path) is not None

    def _apply_meta_existing_file(self, path: bytes, entry: Node) -> None:
        try:
            fd = open_nofollow(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            self._warn(f"{os.fsdecode(path[len(self.target) + 1:])}: cannot set metadata: {e.strerror}")
            return
        try:
            self._apply_meta_fd(fd, path, entry)
        finally:
            os.close(fd)

    def _verify_written(self, job: _FileJob) -> None:
        """--verify: read the file back and compare it with the snapshot's blob ids."""
        try:
            fd = open_nofollow(job.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                why = content_mismatch(fd, job.entry, self.repo.blob_id)
            finally:
                os.close(fd)
        except OSError as e:
            why = f"cannot read it back: {e.strerror or e}"
        with self._result_lock:
            self.result.verified += 1
            if why is not None:
                self.result.mismatched.append(os.fsdecode(job.rel))
        if why is not None:
            self._warn(f"{os.fsdecode(job.rel)}: verify: {why}")

    def _delete_extraneous(self, snap: Snapshot) -> None:
        """--delete, below the included paths that matched, or else below the snapshot's paths."""
        if self.opts.includes:
            unmatched = {os.fsencode(p).strip(b"/") for p in self.result.unmatched}
            roots = [p for p in (os.fsencode(i).strip(b"/") for i in self.opts.includes) if p not in unmatched]
        else:
            roots = [os.fsencode(p).strip(b"/") for p in snap.paths]
        wanted, _ = self._selector()
        selected = self._selected or set()
        done = delete_extraneous(self.target, roots, selected.__contains__, lambda rel: not wanted(rel, {}),
                                 dry_run=self.opts.dry_run)
        self.result.deleted = [os.fsdecode(p) for p in done.deleted]
        for msg in done.failed:
            self._warn(msg, skipped=True)


class _Unsafe(Exception):
    pass


def _remove_existing(path: bytes) -> None:
    with at_nofollow(path) as (dir_fd, name):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise _Unsafe("a directory is in the way")
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise


def _lstat(path: bytes) -> os.stat_result | None:
    try:
        with at_nofollow(path) as (dir_fd, name):
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _readlink(path: bytes) -> bytes:
    with at_nofollow(path) as (dir_fd, name):
        return os.readlink(name, dir_fd=dir_fd)


def _owner_ids(entry: Node) -> tuple[int, int]:
    """Names win over numbers when this machine knows them (like tar)."""
    uid = entry.uid if entry.uid is not None else -1
    gid = entry.gid if entry.gid is not None else -1
    user, group = entry.user, entry.group
    if user:
        uid = _uid_of(user, uid)
    if group:
        gid = _gid_of(group, gid)
    return uid, gid


@lru_cache(maxsize=4096)
def _uid_of(name: str, default: int) -> int:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return default


@lru_cache(maxsize=4096)
def _gid_of(name: str, default: int) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return default
