"""Restore's byte path: read a pack's ranges, open each blob, write it to every place it occurs.

Decrypting, decompressing, checking keyed ids (and the per-blob Python around them, which holds the GIL)
and creating the many small files cost most of a restore's CPU, so on a local repository this
runs in worker processes forked after the index and keys are loaded (they share them
copy-on-write; the garbage collector is frozen while they fork). A worker reads its pack
ranges itself and writes files itself; it never touches a network client (network
repositories use threads, and ``HAEEDGE_THREADS=1`` forces them). The parent keeps every
decision: which paths are written (it made and checked every directory on the way), how many
blobs a file still lacks, when its metadata is set, what counts as damaged.

Workers write only paths the parent sent, inside the target, through the same no-follow opens
as the thread path: a hostile repository chooses bytes, never where they go.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

from haeedge.backends.base import data_name
from haeedge.errors import HaeedgeError, IntegrityError
from haeedge.forking import fork_pool
from haeedge.fs import open_nofollow
from haeedge.repo.index import BlobLocation
from haeedge.repo.repository import Repository
from haeedge.restorer.existing import write_at

MERGE_GAP = 1 << 20
#: When existing files may be kept (--overwrite other than always), the gaps between needed blobs are
#: often the data of those files: reading over them would fetch again what a resumed restore skips.
KEEPING_MERGE_GAP = 64 << 10
#: One ranged read from local disk covers at most this much (more if one blob is bigger):
#: with a few readers, what a restore holds in flight stays small next to a 16 MiB pack.
MAX_READ = 1 << 20
#: From network storage one request per pack of the default size (16 MiB): each request
#: costs a round trip and, on S3, money, so fewer and larger reads win over a smaller peak.
MAX_NETWORK_READ = 32 << 20
_ZERO = bytes(8 << 20)
#: Zero runs this long, aligned in the file, are left as holes (sparse files stay sparse).
SPARSE_BLOCK = 64 << 10
_ZERO_BLOCK = bytes(SPARSE_BLOCK)

#: How a target is written: a fresh file (zero blocks stay holes), an existing file completed in
#: place (zeros are data there), or a file of one chunk created, written and finished in one go.
FRESH, IN_PLACE, SIMPLE = 0, 1, 2

#: (job key, absolute path, offset, kind, metadata for SIMPLE: (mode, mtime_ns, (uid, gid) or None))
Target = tuple[int, bytes, int, int, "tuple[int, int, tuple[int, int] | None] | None"]


@dataclass
class PackOutcome:
    """What one pack's work did, for the parent to account (it owns every file's state)."""

    #: Blobs written to multi-blob files: (job key, bytes).
    written: list[tuple[int, int]] = field(default_factory=list)
    #: Files of one chunk created, written and finished: (job key, bytes).
    finished: list[tuple[int, int]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Bytes read from storage (a worker's reads are not seen by the parent's backend wrappers).
    bytes_read: int = 0
    pid: int = 0


class PackRestorer:
    """Reads, opens and writes the blobs of one pack; the same code runs in a thread or a worker."""

    def __init__(self, repo: Repository, target: bytes, keeping: bool, local: bool):
        self.repo = repo
        self.target = target
        self.merge_gap = KEEPING_MERGE_GAP if keeping else MERGE_GAP
        self.max_read = MAX_READ if local else MAX_NETWORK_READ

    def restore(self, pack_id: str, blobs: list[tuple[bytes, BlobLocation]],
                targets: dict[bytes, list[Target]]) -> PackOutcome:
        out = PackOutcome(pid=os.getpid())
        name = data_name(pack_id)
        for group in self._groups(blobs):
            start = group[0][1].offset
            end = group[-1][1].offset + group[-1][1].length
            try:
                data = memoryview(self.repo.backend.get_range(name, start, end - start))
            except HaeedgeError as e:
                for bid, _loc in group:
                    for t in targets[bid]:
                        out.failed.append((t[0], f"pack {pack_id[:16]} unreadable: {e}"))
                continue
            out.bytes_read += len(data)
            for bid, loc in group:
                sealed = data[loc.offset - start : loc.offset - start + loc.length]
                try:
                    if len(sealed) != loc.length:
                        raise IntegrityError(f"pack {pack_id[:16]} is truncated")
                    raw = self.repo.decode_blob(bid, loc, sealed)
                except HaeedgeError as e:
                    raw = self._other_copy(bid)
                    if raw is None:
                        for t in targets[bid]:
                            out.failed.append((t[0], str(e)))
                        continue
                zero = len(raw) <= len(_ZERO) and _ZERO.startswith(raw)  # memcmp, no copy
                for t in targets[bid]:
                    self._write(t, raw, zero, out)
            data.release()
        return out

    def _groups(self, blobs: list[tuple[bytes, BlobLocation]]) -> list[list[tuple[bytes, BlobLocation]]]:
        """Blobs in pack order, nearby ones merged into one ranged read."""
        groups: list[list[tuple[bytes, BlobLocation]]] = []
        for bid, loc in sorted(blobs, key=lambda kv: kv[1].offset):
            if groups:
                first, last = groups[-1][0][1], groups[-1][-1][1]
                if (loc.offset - (last.offset + last.length) <= self.merge_gap
                        and loc.offset + loc.length - first.offset <= self.max_read):
                    groups[-1].append((bid, loc))
                    continue
            groups.append([(bid, loc)])
        return groups

    def _other_copy(self, bid: bytes) -> bytes | None:
        """A blob stored more than once whose first copy is bad (another writer may have planted it
        under the id, docs/security.md D3): the first copy that matches its keyed id, else None."""
        if len(self.repo.index.locations(bid)) < 2:
            return None
        try:
            return self.repo.load_blob(bid)
        except HaeedgeError:
            return None

    def _write(self, t: Target, raw: bytes, zero: bool, out: PackOutcome) -> None:
        key, path, offset, kind, meta = t
        try:
            if kind == SIMPLE:
                fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                try:
                    # The size is set last only when the write does not reach the end (a hole there):
                    # one system call less per small file.
                    if zero or _pwrite_sparse(fd, raw, 0) < len(raw):
                        os.ftruncate(fd, len(raw))
                    assert meta is not None
                    why = apply_meta_fd(fd, *meta)
                    if why:
                        out.warnings.append(f"{os.fsdecode(path[len(self.target) + 1:])}: cannot set metadata: {why}")
                finally:
                    os.close(fd)
                out.finished.append((key, len(raw)))
                return
            if not zero or kind == IN_PLACE:  # in place, zeros must be written: the file holds other bytes there
                fd = open_nofollow(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    if kind == IN_PLACE:
                        write_at(fd, raw, offset)
                    else:
                        _pwrite_sparse(fd, raw, offset)
                finally:
                    os.close(fd)
            out.written.append((key, len(raw)))
        except OSError as e:
            out.failed.append((key, e.strerror or str(e)))


def apply_meta_fd(fd: int, mode: int, mtime_ns: int, owner: tuple[int, int] | None) -> str | None:
    """Owner, mode and times through an open descriptor; the error text, or None."""
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        os.utime(fd, ns=(mtime_ns, mtime_ns))
    except OSError as e:
        return e.strerror or str(e)
    return None


def _pwrite_sparse(fd: int, raw: bytes | memoryview, offset: int) -> int:
    """Write ``raw`` at ``offset`` but skip whole zero blocks (aligned in the file): they stay holes.

    The file must already read as zeros there (freshly created, and truncated to size unless the
    caller truncates when the returned end of the last written byte, relative to ``raw``, falls short).
    """
    if not isinstance(raw, bytes):
        raw = bytes(raw)
    n = len(raw)
    runs = []
    start = 0
    b = (-offset) % SPARSE_BLOCK  # first block boundary inside ``raw``
    while b + SPARSE_BLOCK <= n:
        if raw.startswith(_ZERO_BLOCK, b):  # memcmp in C, no copy
            if b > start:
                runs.append((start, b))
            start = b + SPARSE_BLOCK
        b += SPARSE_BLOCK
    if start < n:
        runs.append((start, n))
    view = memoryview(raw)
    for lo, hi in runs:
        part = view[lo:hi]
        pos = offset + lo
        while part:
            w = os.pwrite(fd, part, pos)
            part = part[w:]
            pos += w
    return runs[-1][1] if runs else 0


# ---------------------------------------------------------------------------- executors

#: Set in the parent before the pool forks; each worker inherits it.
_WORKER: PackRestorer | None = None


def _restore_in_worker(pack_id: str, blobs: list[tuple[bytes, BlobLocation]],
                       targets: dict[bytes, list[Target]]) -> PackOutcome:
    assert _WORKER is not None, "worker state not set before fork"
    return _WORKER.restore(pack_id, blobs, targets)


def worker_count() -> int:
    """``HAEEDGE_WORKERS``, else the number of cores (as backup and verify)."""
    return int(os.environ.get("HAEEDGE_WORKERS", "0")) or (os.cpu_count() or 2)


def use_processes(repo: Repository) -> bool:
    """Forked workers for a local repository where fork exists; threads otherwise.

    Network clients are never forked, and a wrapper that counts or caches reads for the
    parent declares itself not cheap to read from (``cheap_ranged_reads``).
    """
    return (repo.backend.properties.cheap_ranged_reads and worker_count() > 1
            and "fork" in multiprocessing.get_all_start_methods() and os.environ.get("HAEEDGE_THREADS") != "1")


def pack_executor(packs: PackRestorer, threads: int) -> tuple[Executor, Callable[..., PackOutcome], int]:
    """(executor, the function to submit ``(pack_id, blobs, targets)`` to, worker processes or 0)."""
    global _WORKER
    if use_processes(packs.repo):
        _WORKER = packs
        try:
            n = worker_count()
            return fork_pool(n), _restore_in_worker, n
        finally:
            _WORKER = None  # the workers hold their copy; the parent no longer needs it
    return ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="restore"), packs.restore, 0
