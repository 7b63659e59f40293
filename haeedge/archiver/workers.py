"""The expensive half of backup, runnable in worker processes.

Reading, chunking, HMAC, zstd and AES-CFB cost most of a backup's CPU, and
the Python around them holds the GIL, so threads top out near one core.
Workers are forked after the index is loaded (they share it copy-on-write),
read whole batches of files, skip chunks the repository already had, and
return sealed blobs. The main process stays the only dedup authority: it
packs a blob only if no other worker sent it first, so two workers sealing
the same new chunk cost CPU, never storage. Workers never touch the backend,
so network clients are never forked.
"""

from __future__ import annotations

import hmac
import os
import queue
import stat
import struct
import threading
from collections.abc import Callable, Container

from haeedge.chunking import Chunker, _read_full, chunk_boundaries
from haeedge.crypto.openpgp import PassphraseSealer
from haeedge.fs import open_long
from haeedge.repo.packer import compress_blob

#: A worker returns after about this many bytes of one file, so no result
#: (sealed blobs travel back in it) grows with the file; the next segment
#: restarts at the last chunk boundary, which gives the same chunks.
SEGMENT_BYTES = 4 << 20
#: Ids a worker remembers having sent (about 100 bytes each) before it forgets them all.
SEEN_LIMIT = 200_000
#: A segment reads in steps of this size while it looks for its last chunk boundary.
READ_STEP = 1 << 20


#: What travels between the main process and a worker is plain tuples, not dataclasses:
#: pickling a tuple of builtins costs a fraction of a dataclass's ``__reduce__`` round trip,
#: and a million small files make a million of each (docs/performance.md, issue 16).
#:
#: A job: ``(abspath, inode, mtime_ns, offset, token)``; ``token`` names the job in
#: announcements of where its file's next segment starts.
FileJob = tuple[bytes, int, int, int, int]
JOB_PATH, JOB_INODE, JOB_MTIME, JOB_OFFSET, JOB_TOKEN = range(5)
#: A file's outcome: ``(chunks, size, changed_while_reading, error, next_offset)``; ``chunks`` is
#: ``[[blob id hex, length], ...]`` or None on error, ``next_offset`` is where the next segment
#: starts (None when the file was read to its end).
FileOutcome = tuple[list | None, int, bool, str | None, int | None]
OUT_CHUNKS, OUT_SIZE, OUT_CHANGED, OUT_ERROR, OUT_NEXT = range(5)
#: A new sealed blob: ``(blob id, compression, sealed bytes, raw length)``.
NewBlob = tuple[bytes, int, bytes, int]
#: A batch's result: ``(outcomes in job order, new blobs)``.
BatchResult = tuple[list[FileOutcome], list[NewBlob]]

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOATIME = getattr(os, "O_NOATIME", 0)


def failed(error: str) -> FileOutcome:
    """The outcome of a file that could not be read."""
    return (None, 0, False, error, None)


class Announcements:
    """Where workers report the start of a big file's next segment (see ``ChunkStore._segment``).

    Between processes: a pipe of 16-byte records, read without blocking. A write of at most
    PIPE_BUF bytes to a pipe is atomic, so records of several workers never interleave, and a
    look costs one read(2): the main process looks once per file, and
    ``multiprocessing.SimpleQueue.empty()`` built a selector each time (a third of the main
    process's time on a tree of small files). Between threads: a plain queue.
    """

    _RECORD = struct.Struct("<QQ")

    def __init__(self, processes: bool) -> None:
        self._queue: queue.SimpleQueue | None = None
        self._r = self._w = -1
        if processes:
            self._r, self._w = os.pipe()
            os.set_blocking(self._r, False)
        else:
            self._queue = queue.SimpleQueue()
        self._rest = b""

    def put(self, token: int, offset: int) -> None:
        """Called in a worker: the segment after ``token``'s starts at ``offset``."""
        if self._queue is not None:
            self._queue.put((token, offset))
        else:
            os.write(self._w, self._RECORD.pack(token, offset))

    def take(self) -> list[tuple[int, int]]:
        """Everything announced since the last call; never blocks."""
        if self._queue is not None:
            out = []
            while not self._queue.empty():
                out.append(self._queue.get())
            return out
        try:
            data = os.read(self._r, 1 << 16)
        except BlockingIOError:
            return []
        data = self._rest + data
        whole = len(data) - len(data) % self._RECORD.size
        self._rest = data[whole:]
        return list(self._RECORD.iter_unpack(data[:whole]))

    def close(self) -> None:
        for fd in (self._r, self._w):
            if fd >= 0:
                os.close(fd)
        self._r = self._w = -1


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

    def _store(self, chunk: bytes | memoryview, blobs: list[NewBlob]) -> bytes:
        bid = hmac.digest(self.blob_id_key, chunk, "sha256")
        if bid in self.seen or bid in self.known:
            return bid
        if len(self.seen) >= SEEN_LIMIT:
            # Only a saving (the main process drops a blob it already has), so bounded:
            # a run of millions of new blobs would otherwise hold them all in every worker.
            self.seen.clear()
        self.seen.add(bid)
        compression, stored = compress_blob(self.level, chunk)
        blobs.append((bid, compression, self.sealer.seal(stored), len(chunk)))
        return bid

    def process(self, jobs: list[FileJob]) -> BatchResult:
        outcomes: list[FileOutcome] = []
        blobs: list[NewBlob] = []
        append = outcomes.append
        for job in jobs:
            try:
                append(self._process_file(job, blobs))
            except OSError as e:
                append(failed(e.strerror or str(e)))
        # Ids sent once need not be sealed again by this process; the main process has them now.
        return outcomes, blobs

    def _process_file(self, job: FileJob, blobs: list[NewBlob]) -> FileOutcome:
        abspath, inode, mtime_ns, offset, _token = job
        try:
            fd = open_long(abspath, _OPEN_FLAGS | _NOATIME)
        except PermissionError:
            fd = open_long(abspath, _OPEN_FLAGS)
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode) or before.st_ino != inode:
                raise OSError(0, "file was replaced while the backup ran")
            chunks: list = []
            data = None
            params = self.chunker.params
            if offset == 0 and before.st_size < params.max_size:
                data = _read_full(fd, before.st_size + 1)
                if len(data) > before.st_size:  # grew while we looked: stream it
                    data = None
            if data is not None:
                size = len(data)
                if size <= params.min_size:
                    # One chunk (or none, when empty): what chunk_boundaries gives, without its
                    # generator and slices (most files of a big tree are this small).
                    if size:
                        chunks.append([self._store(data, blobs).hex(), size])
                else:
                    for chunk in self.chunker.chunks_of_bytes(data):
                        chunks.append([self._store(chunk, blobs).hex(), len(chunk)])
                next_offset = None
            else:
                size, next_offset = self._segment(fd, job, chunks, blobs)
            after = os.fstat(fd)
            changed = after.st_mtime_ns != mtime_ns or before.st_mtime_ns != mtime_ns
            if next_offset is None and after.st_size != offset + size:
                changed = True
            return (chunks, size, changed, None, next_offset)
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
        offset = job[JOB_OFFSET]
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
                self.announce(job[JOB_TOKEN], next_offset)
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


def run_batch(jobs: list[FileJob]) -> BatchResult:
    """Entry point in a worker process."""
    assert _STATE is not None, "worker state not set before fork"
    return _STATE.process(jobs)
