"""The expensive half of backup, runnable in worker processes.

Reading, chunking, HMAC, zstd and AES-CFB cost most of a backup's CPU, and
AES-CFB in ``cryptography`` holds the GIL, so threads top out near one core.
Workers are forked after the index is loaded (they share it copy-on-write),
read whole batches of files, skip chunks the repository already had, and
return sealed blobs. The main process stays the only dedup authority: it
packs a blob only if no other worker sent it first, so two workers sealing
the same new chunk cost CPU, never storage. Workers never touch the backend,
so network clients are never forked.
"""

from __future__ import annotations

import gc
import hmac
import multiprocessing
import os
import stat
import threading
from collections.abc import Callable, Container
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from haeedge.chunking import Chunker, _read_full, chunk_boundaries
from haeedge.crypto.openpgp import PassphraseSealer
from haeedge.repo.packer import compress_blob

#: A worker returns after about this many bytes of one file, so no result
#: (sealed blobs travel back in it) grows with the file; the next segment
#: restarts at the last chunk boundary, which gives the same chunks.
SEGMENT_BYTES = 4 << 20
#: Ids a worker remembers having sent (about 100 bytes each) before it forgets them all.
SEEN_LIMIT = 200_000
#: A segment reads in steps of this size while it looks for its last chunk boundary.
READ_STEP = 1 << 20


@dataclass(slots=True)
class FileJob:
    abspath: bytes
    inode: int
    mtime_ns: int
    offset: int = 0
    #: Names the job in announcements of where its file's next segment starts.
    token: int = 0


@dataclass(slots=True)
class FileOutcome:
    chunks: list | None
    size: int = 0
    read_bytes: int = 0
    changed_while_reading: bool = False
    error: str | None = None
    #: Where the next segment starts; None when the file was read to its end.
    next_offset: int | None = None


@dataclass(slots=True)
class NewBlob:
    blob_id: bytes
    compression: int
    sealed: bytes
    raw_length: int


@dataclass
class BatchResult:
    outcomes: list[FileOutcome]
    blobs: list[NewBlob] = field(default_factory=list)


class ChunkStore:
    """Per-process state: keys, chunker and the ids known when the process started."""

    def __init__(self, blob_id_key: bytes, sealer: PassphraseSealer, chunker: Chunker, compression_level: int,
                 known: Container[bytes]):
        self.blob_id_key = blob_id_key
        self.sealer = sealer
        self.chunker = chunker
        self.level = compression_level
        self.known = known
        self.seen: set[bytes] = set()
        #: Called with (job token, next segment's offset) as soon as a segment's cut is known.
        self.announce: Callable[[int, int], None] | None = None
        # Per thread: in the thread fallback one ChunkStore serves several threads.
        self._local = threading.local()

    def _store(self, chunk: memoryview, blobs: list[NewBlob]) -> bytes:
        bid = hmac.digest(self.blob_id_key, chunk, "sha256")
        if bid in self.seen or bid in self.known:
            return bid
        if len(self.seen) >= SEEN_LIMIT:
            # Only a saving (the main process drops a blob it already has), so bounded:
            # a run of millions of new blobs would otherwise hold them all in every worker.
            self.seen.clear()
        self.seen.add(bid)
        compression, stored = compress_blob(self.level, chunk)
        blobs.append(NewBlob(bid, compression, self.sealer.seal(stored), len(chunk)))
        return bid

    def process(self, jobs: list[FileJob]) -> BatchResult:
        result = BatchResult([])
        for job in jobs:
            try:
                result.outcomes.append(self._process_file(job, result.blobs))
            except OSError as e:
                result.outcomes.append(FileOutcome(None, error=e.strerror or str(e)))
        # Ids sent once need not be sealed again by this process; the main process has them now.
        return result

    def _process_file(self, job: FileJob, blobs: list[NewBlob]) -> FileOutcome:
        from haeedge.fs import open_long

        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        noatime = getattr(os, "O_NOATIME", 0)
        try:
            fd = open_long(job.abspath, flags | noatime)
        except PermissionError:
            fd = open_long(job.abspath, flags)
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode) or before.st_ino != job.inode:
                raise OSError(0, "file was replaced while the backup ran")
            chunks: list = []
            data = None
            if job.offset == 0 and before.st_size < self.chunker.params.max_size:
                data = _read_full(fd, before.st_size + 1)
                if len(data) > before.st_size:  # grew while we looked: stream it
                    data = None
            if data is not None:
                for chunk in self.chunker.chunks_of_bytes(data):
                    chunks.append([self._store(chunk, blobs).hex(), len(chunk)])
                size, next_offset = len(data), None
            else:
                size, next_offset = self._segment(fd, job, chunks, blobs)
            after = os.fstat(fd)
            changed = after.st_mtime_ns != job.mtime_ns or before.st_mtime_ns != job.mtime_ns
            if next_offset is None and after.st_size != job.offset + size:
                changed = True
            return FileOutcome(chunks, size, size, changed, None, next_offset)
        finally:
            os.close(fd)

    def _segment(self, fd: int, job: FileJob, chunks: list, blobs: list[NewBlob]) -> tuple[int, int | None]:
        """Chunk from ``job.offset`` (a chunk boundary) for about SEGMENT_BYTES; (bytes done, next offset).

        The cut is found first, and announced, before any chunk is sealed: the main
        process can then hand the next segment to another worker at once, so one
        big file keeps every core busy. Reading goes on in steps until a real chunk
        boundary at or past SEGMENT_BYTES is seen (the piece at the end of what was
        read is not one: more data could move it). One reused buffer per thread.
        """
        offset = job.offset
        os.lseek(fd, offset, os.SEEK_SET)
        params = self.chunker.params
        buf = getattr(self._local, "buffer", None)
        if buf is None:
            buf = self._local.buffer = bytearray(SEGMENT_BYTES + params.max_size + READ_STEP)
        view = memoryview(buf)
        take: list[tuple[int, int]] = []
        done = filled = 0
        eof = False
        try:
            while True:
                target = min(len(buf), max(filled, SEGMENT_BYTES) + READ_STEP)
                while filled < target:
                    n = os.readv(fd, [view[filled:target]])
                    if n == 0:
                        eof = True
                        break
                    filled += n
                bounds = chunk_boundaries(view[done:filled], params)
                if not eof and bounds:
                    bounds.pop()
                for off, length in bounds:
                    take.append((done + off, length))
                    if done + off + length >= SEGMENT_BYTES and not eof:
                        break
                if take:
                    done = take[-1][0] + take[-1][1]
                if eof or done >= SEGMENT_BYTES:
                    break
                if filled >= len(buf):  # cannot happen: a chunk is at most max_size long
                    raise OSError(0, "no chunk boundary found in a full read buffer")
            next_offset = None if eof else offset + done
            if next_offset is not None and self.announce is not None:
                self.announce(job.token, next_offset)
            for off, length in take:
                chunks.append([self._store(view[off : off + length], blobs).hex(), length])
            return done, next_offset
        finally:
            view.release()


#: Set in the parent before the pool forks; each worker inherits it.
_STATE: ChunkStore | None = None


def set_worker_state(store: ChunkStore) -> None:
    global _STATE
    _STATE = store


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: a killed backup must not leave workers behind holding its pipes."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _ready() -> None:
    """A no-op task: submitting it makes the pool fork its workers now."""


def fork_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes forked from this one, sharing its memory copy-on-write.

    The garbage collector is frozen while they fork: a collection in a child
    walks every object it inherited and so copies every page holding one. Frozen,
    those objects are never walked and their pages stay shared.
    """
    gc.collect()
    gc.freeze()
    try:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=die_with_parent, initargs=(os.getpid(),))
        pool.submit(_ready).result()  # with fork, the first task starts every worker at once
    finally:
        gc.unfreeze()
    return pool


def run_batch(jobs: list[FileJob]) -> BatchResult:
    """Entry point in a worker process."""
    assert _STATE is not None, "worker state not set before fork"
    return _STATE.process(jobs)
