"""Packing and uploading: the write half of a run that stores blobs.

A ``Packer`` takes blobs (compressed and sealed here, or already sealed by
backup's worker processes), gathers them into packs of one blob type, uploads
each full pack on one of two upload threads (at most two more waiting, so
memory stays bounded) and writes index objects for what it stored: a
checkpoint every ``INDEX_CHECKPOINT_*`` packs, blobs or seconds, so that an
interrupted backup leaves its uploads indexed for the next run to reuse, and
the rest at ``flush``.

It knows its repository only through ``PackTarget`` (sealing, what is
already stored, writing and adding index entries). What a run chooses is
given once, when the run starts, as ``WriteOptions``: a dry run is a packer
whose storage is a ``DryRunBackend``, so it does all the work and stores
nothing.
"""

from __future__ import annotations

import contextlib
import hmac
import threading
import time
from collections.abc import Callable, Container
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import zstandard

from haeedge.backends.base import Backend, data_name
from haeedge.backends.dryrun import DryRunBackend
from haeedge.repo.index import IndexPack
from haeedge.repo.pack import (
    BLOB_DATA,
    BLOB_TREE,
    COMPRESSION_NONE,
    COMPRESSION_ZSTD,
    PackBuilder,
    SpooledPackBuilder,
    encode_header,
)

#: Which master key seals which kind of blob.
KEY_FOR_BLOB = {BLOB_DATA: "content", BLOB_TREE: "tree"}
#: An index checkpoint is written after this many stored packs ...
INDEX_CHECKPOINT_PACKS = 32
#: ... or this often, so an interrupted backup loses at most a minute of uploads.
INDEX_CHECKPOINT_SECONDS = 60.0
#: ... or this many blobs: until then each new blob is a Python object (and an id in a set),
#: about 200 bytes; packs of small files hold tens of thousands.
INDEX_CHECKPOINT_BLOBS = 100_000
#: Upload threads, and full packs that may wait for one.
UPLOAD_THREADS = 2


@dataclass(frozen=True)
class WriteOptions:
    """What one run that stores blobs chooses, given when it starts (``Repository.begin_writes``)."""

    #: zstd level of the blobs stored (0: uncompressed); None: the repository config's.
    compression_level: int | None = None
    #: Do all the work, store nothing: packs and index objects go to a ``DryRunBackend``.
    dry_run: bool = False


@dataclass
class WriteStats:
    """What the runs of one opened repository added (the backup summary's counts)."""

    blobs_added: int = 0
    data_blobs_added: int = 0
    tree_blobs_added: int = 0
    raw_bytes_added: int = 0
    stored_bytes_added: int = 0
    packs_written: int = 0
    index_objects_written: int = 0
    #: The packs stored (by id): a lock-free backup checks them against prune marks (repo/marks.py).
    pack_ids: set[str] = field(default_factory=set, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class PackTarget(Protocol):
    """What a ``Packer`` needs of its repository."""

    def seal(self, key_name: str, data: bytes | memoryview) -> bytes:
        """One OpenPGP message of ``data`` under the master key ``key_name``."""

    def dedup_view(self) -> Container[bytes]:
        """The blob ids already stored in a form this credential deduplicates against."""

    def write_index(self, packs: list[IndexPack], superseded: list[str] = (), *,
                    backend: Backend | None = None) -> str:
        """Store index object(s) listing ``packs`` through ``backend``."""

    def add_to_index(self, packs: list[IndexPack]) -> None:
        """Make indexed packs known to this run's readers (called with the packer's lock held)."""

    def tree_blob_sealed(self, blob_id: bytes, compression: int, sealed: bytes) -> None:
        """A file-list blob this run stores (the local metadata cache keeps it for the next backup)."""


_tls = threading.local()


def compress_blob(level: int, data: bytes | memoryview) -> tuple[int, bytes | memoryview]:
    """``(compression, stored bytes)``: zstd at ``level`` when that makes the blob smaller, else as it is."""
    if level <= 0 or len(data) <= 32:
        return COMPRESSION_NONE, data
    cache = getattr(_tls, "compressors", None)
    if cache is None:
        cache = _tls.compressors = {}
    c = cache.get(level)
    if c is None:
        c = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    packed = c.compress(data)
    if len(packed) < len(data):
        return COMPRESSION_ZSTD, packed
    return COMPRESSION_NONE, data


def put_whole(backend: Backend, name: str, data: bytes | memoryview) -> None:
    """Store an object; when the store fails, remove what a non-atomic store may have left.

    A torn object would fail its name check forever; nothing refers to a
    name whose write failed, so removing it is always safe.
    """
    try:
        backend.put(name, data)
    except BaseException:
        with contextlib.suppress(Exception):
            backend.delete(name)
        raise


def new_pack_builder(backend: Backend) -> PackBuilder:
    """A spooled builder where the backend can take a finished file (local disk), else one in memory."""
    if not backend.properties.spooled_writes:
        return PackBuilder()
    return SpooledPackBuilder(backend.open_spool)


def store_pack(builder: PackBuilder, seal: Callable[[str, bytes], bytes], backend: Backend) -> str:
    """Finish ``builder`` with its sealed header and store it (``put_whole``); the pack's id."""
    pack_id = builder.finish(seal("meta", encode_header(builder.entries)))
    builder.store(lambda name, data: put_whole(backend, name, data), data_name(pack_id))
    return pack_id


class Packer:
    """Blobs into packs, packs onto storage, index checkpoints; thread-safe (expensive work outside the lock)."""

    def __init__(self, target: PackTarget, backend: Backend, *, pack_size: int, compression_level: int,
                 dry_run: bool = False, blob_id_key: bytes, stats: WriteStats):
        self.target = target
        #: Where packs and index objects go: the repository's storage, or a DryRunBackend over it.
        self.backend: Backend = DryRunBackend(backend) if dry_run else backend
        self.options = WriteOptions(compression_level, dry_run)
        self.pack_size = pack_size
        self.stats = stats
        self._blob_id_key = blob_id_key
        self._mutex = threading.Lock()
        #: Ids promised (in an open or uploading pack) but not yet in the index.
        self._pending_ids: set[bytes] = set()
        self._builders: dict[int, PackBuilder] = {BLOB_DATA: new_pack_builder(self.backend),
                                                  BLOB_TREE: new_pack_builder(self.backend)}
        self._unindexed: list[IndexPack] = []
        self._unindexed_blobs = 0
        self._last_checkpoint = time.monotonic()
        self._uploads: list[Future] = []
        self._upload_slots = threading.BoundedSemaphore(UPLOAD_THREADS)
        self._uploader: ThreadPoolExecutor | None = None

    @property
    def compression_level(self) -> int:
        assert self.options.compression_level is not None
        return self.options.compression_level

    @property
    def idle(self) -> bool:
        """No blob waits in an open pack and no upload is under way (flushed, aborted, or unused)."""
        with self._mutex:
            return not self._uploads and not any(len(b) for b in self._builders.values())

    # ------------------------------------------------------------------ blobs in

    def has_blob(self, blob_id: bytes) -> bool:
        """Stored (or being stored) in a form this credential deduplicates against."""
        view = self.target.dedup_view()
        with self._mutex:
            return blob_id in view or blob_id in self._pending_ids

    def _promise(self, blob_id: bytes) -> bool:
        """Claim ``blob_id`` for this run; False when it is stored or being stored already."""
        view = self.target.dedup_view()
        with self._mutex:
            if blob_id in view or blob_id in self._pending_ids:
                return False
            self._pending_ids.add(blob_id)
            return True

    def save_blob(self, blob_type: int, data: bytes | memoryview, blob_id: bytes | None = None
                  ) -> tuple[bytes, bool]:
        """Store a blob unless known. Returns (id, newly added)."""
        bid = blob_id or hmac.digest(self._blob_id_key, data, "sha256")
        if not self._promise(bid):
            return bid, False
        compression, stored = compress_blob(self.compression_level, data)
        sealed = self.target.seal(KEY_FOR_BLOB[blob_type], stored)
        if blob_type == BLOB_TREE and not self.options.dry_run:
            self.target.tree_blob_sealed(bid, compression, sealed)  # the next backup's parent
        self._append(blob_type, compression, bid, sealed, len(data))
        return bid, True

    def add_sealed_blob(self, blob_type: int, blob_id: bytes, compression: int, sealed: bytes, raw_len: int) -> bool:
        """Pack a blob sealed elsewhere (a worker process); False when it is already stored."""
        if not self._promise(blob_id):
            return False
        self._append(blob_type, compression, blob_id, sealed, raw_len)
        return True

    def _append(self, blob_type: int, compression: int, bid: bytes, sealed: bytes, raw_len: int) -> None:
        full: PackBuilder | None = None
        with self._mutex:
            builder = self._builders[blob_type]
            builder.add(blob_type, compression, bid, sealed, raw_len)
            if builder.size >= self.pack_size:
                full = builder
                self._builders[blob_type] = new_pack_builder(self.backend)
        with self.stats.lock:
            self.stats.blobs_added += 1
            if blob_type == BLOB_DATA:
                self.stats.data_blobs_added += 1
            else:
                self.stats.tree_blobs_added += 1
            self.stats.raw_bytes_added += raw_len
            self.stats.stored_bytes_added += len(sealed)
        if full is not None:
            self._submit_pack(full)

    # ------------------------------------------------------------------ packs out

    def _submit_pack(self, builder: PackBuilder) -> None:
        if self._uploader is None:
            with self._mutex:
                if self._uploader is None:
                    self._uploader = ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="upload")
        self._upload_slots.acquire()
        try:
            fut = self._uploader.submit(self._write_pack, builder)
        except BaseException:
            self._upload_slots.release()
            raise
        with self._mutex:
            self._uploads.append(fut)

    def _write_pack(self, builder: PackBuilder) -> None:
        try:
            pack_id = store_pack(builder, self.target.seal, self.backend)
            with self.stats.lock:
                self.stats.packs_written += 1
                self.stats.pack_ids.add(pack_id)
            checkpoint: list[IndexPack] = []
            with self._mutex:
                self._unindexed.append(IndexPack(pack_id, builder.length, builder.entries))
                self._unindexed_blobs += len(builder.entries)
                if (len(self._unindexed) >= INDEX_CHECKPOINT_PACKS
                        or self._unindexed_blobs >= INDEX_CHECKPOINT_BLOBS
                        or time.monotonic() - self._last_checkpoint >= INDEX_CHECKPOINT_SECONDS):
                    checkpoint, self._unindexed = self._unindexed, []
                    self._unindexed_blobs = 0
                    self._last_checkpoint = time.monotonic()
            if checkpoint:
                self._commit_index(checkpoint)
        finally:
            self._upload_slots.release()

    def _commit_index(self, packs: list[IndexPack]) -> None:
        self.target.write_index(packs, backend=self.backend)
        with self._mutex:
            self.target.add_to_index(packs)
            for p in packs:
                for e in p.entries:
                    self._pending_ids.discard(e.blob_id)

    def flush(self) -> None:
        """Upload every open pack and write an index for all uploaded packs."""
        for blob_type in (BLOB_DATA, BLOB_TREE):
            with self._mutex:
                builder = self._builders[blob_type]
                self._builders[blob_type] = new_pack_builder(self.backend)
            if len(builder):
                self._submit_pack(builder)
        self._wait_uploads()
        with self._mutex:
            packs, self._unindexed = self._unindexed, []
            self._unindexed_blobs = 0
        if packs:
            self._commit_index(packs)

    def _wait_uploads(self) -> None:
        while True:
            with self._mutex:
                futs, self._uploads = self._uploads, []
            if not futs:
                return
            for f in futs:
                f.result()

    def abort(self) -> None:
        """Drop unfinished packs after a failure; uploaded ones stay for reuse or prune."""
        with self._mutex:
            dropped = self._builders
            self._builders = {BLOB_DATA: new_pack_builder(self.backend), BLOB_TREE: new_pack_builder(self.backend)}
            # Blobs of dropped packs were never stored: forget that they were promised.
            for builder in dropped.values():
                for e in builder.entries:
                    self._pending_ids.discard(e.blob_id)
        for builder in dropped.values():
            with contextlib.suppress(Exception):
                builder.discard()
        with contextlib.suppress(Exception):
            self._wait_uploads()

    def close(self) -> None:
        """Stop the upload threads (after the uploads under way)."""
        if self._uploader is not None:
            self._uploader.shutdown(wait=True)
            self._uploader = None
