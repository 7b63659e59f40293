"""dump: a file of a snapshot as its bytes, a directory as a POSIX tar stream, read ahead in threads."""

from __future__ import annotations

import itertools
import os
import tarfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

from haeedge.errors import IntegrityError, PathNotFound, UsageError
from haeedge.operations import coldreads
from haeedge.repo.pack import BLOB_DATA
from haeedge.repo.repository import Repository, hex_id
from haeedge.repo.snapshot import Snapshot
from haeedge.repo.tree import Node, is_under, sort_key

READ_AHEAD = 6

_TAR_TYPES = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "fifo": tarfile.FIFOTYPE,
              "chardev": tarfile.CHRTYPE, "blockdev": tarfile.BLKTYPE}


def file_data(repo: Repository, entry: Node, pool: ThreadPoolExecutor) -> Iterator[bytes]:
    """A file's bytes, blob by blob, fetched a few blobs ahead (each checked against its keyed id)."""
    if entry.damaged:
        raise IntegrityError(f"/{entry.path.decode('utf-8', 'replace')} is marked damaged in this snapshot")
    chunks = entry.chunks or []
    if sum(length for _bid, length in chunks) != (entry.size or 0):
        raise IntegrityError(f"/{entry.path.decode('utf-8', 'replace')}: chunk list does not add up "
                             "to the file size")
    ahead: deque[tuple[Future, int]] = deque()
    todo = iter(chunks)
    for bid, length in todo:
        ahead.append((pool.submit(repo.load_blob, hex_id(bid), BLOB_DATA), length))
        if len(ahead) >= READ_AHEAD:
            break
    while ahead:
        fut, length = ahead.popleft()
        nxt = next(todo, None)
        if nxt is not None:
            ahead.append((pool.submit(repo.load_blob, hex_id(nxt[0]), BLOB_DATA), nxt[1]))
        data = fut.result()
        if len(data) != length:
            raise IntegrityError(f"/{entry.path.decode('utf-8', 'replace')}: a blob has the wrong length")
        yield data


class _BlobReader:
    """A read() interface over a file's blobs, for tarfile."""

    def __init__(self, blobs: Iterator[bytes]):
        self._blobs = blobs
        self._buf = memoryview(b"")

    def read(self, n: int = -1) -> bytes:
        """Exactly ``n`` bytes unless the data ends (tarfile treats a short read as truncation)."""
        parts: list[bytes] = []
        want = n
        while want != 0:
            if not len(self._buf):
                nxt = next(self._blobs, None)
                if nxt is None:
                    break
                self._buf = memoryview(nxt)
            take = len(self._buf) if want < 0 else min(want, len(self._buf))
            parts.append(bytes(self._buf[:take]))
            self._buf = self._buf[take:]
            if want > 0:
                want -= take
        return b"".join(parts)


def tar_info(entry: Node, name: str) -> tarfile.TarInfo | None:
    """A tar header for an entry (sockets cannot be archived: None)."""
    ti = tarfile.TarInfo(name)
    kind = entry.type
    if kind == "file":
        ti.type = tarfile.REGTYPE
        ti.size = entry.size or 0
    elif kind in _TAR_TYPES:
        ti.type = _TAR_TYPES[kind]
    else:
        return None
    ti.mode = (entry.mode if entry.mode is not None else 0o644) & 0o7777
    ti.uid, ti.gid = entry.uid or 0, entry.gid or 0
    ti.uname, ti.gname = entry.user or "", entry.group or ""
    ti.mtime = (entry.mtime_ns or 0) / 1e9
    if kind == "symlink":
        ti.linkname = os.fsdecode(entry.target or b"")
    if kind in ("chardev", "blockdev"):
        rdev = entry.rdev or 0
        ti.devmajor, ti.devminor = os.major(rdev), os.minor(rdev)
    return ti


def write_tar(repo: Repository, entries: Iterator[Node], out: BinaryIO,
              warn: Callable[[str], None]) -> tuple[int, int, list[str]]:
    """Stream entries as a POSIX (pax) tar. Returns (entries written, file bytes, damaged paths)."""
    count = nbytes = 0
    damaged: list[str] = []
    first_of_group: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="dump") as pool, \
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8",
                         errors="surrogateescape") as tar:
        for entry in entries:
            name = os.fsdecode(entry.path)
            ti = tar_info(entry, name)
            if ti is None:
                warn(f"/{name}: a {entry.type} cannot be stored in a tar archive; skipped")
                continue
            group = entry.hardlink
            if ti.type == tarfile.REGTYPE and group:
                if group in first_of_group:
                    ti.type, ti.size, ti.linkname = tarfile.LNKTYPE, 0, first_of_group[group]
                    tar.addfile(ti)
                    count += 1
                    continue
                first_of_group[group] = name
            if ti.type == tarfile.REGTYPE:
                if entry.damaged:
                    damaged.append("/" + name)
                    warn(f"/{name}: damaged in this snapshot; not in the archive")
                    continue
                tar.addfile(ti, _BlobReader(file_data(repo, entry, pool)))
                nbytes += ti.size
            else:
                tar.addfile(ti)
            count += 1
    return count, nbytes, damaged


def find_entries(repo: Repository, snap: Snapshot, path: str) -> tuple[Node | None, Iterator[Node]]:
    """The entry at ``path`` (None for the snapshot root or when absent) and a stream of what is below it.

    File lists are sorted component by component, so everything below a
    directory follows it directly: nothing is held in memory.
    """
    rel = os.fsencode(path).strip(b"/")
    entries = repo.iter_entries(snap)
    if not rel:
        return None, entries
    key = sort_key(rel)
    for entry in entries:
        p = entry.path
        if p == rel:
            return entry, itertools.takewhile(lambda e: is_under(e.path, [rel]), entries)
        if sort_key(p) > key:
            break
    return None, iter(())


@dataclass
class DumpPlan:
    """What a dump will write, found before any output is opened (a missing path truncates nothing)."""

    shown: str  # the path asked for, as shown: "/" + its bytes, decoded
    kind: str  # "file" (its bytes) or "tar"
    target: Node | None
    below: Iterator[Node]


@dataclass
class DumpResult:
    shown: str
    kind: str
    count: int = 0
    nbytes: int = 0
    damaged: list[str] = field(default_factory=list)


def plan_dump(repo: Repository, snap: Snapshot, path: str) -> DumpPlan:
    """Find ``path`` in ``snap``: a file dumps as its bytes, a directory (or "/") as a tar stream."""
    target, below = find_entries(repo, snap, path)
    if coldreads.wanted(repo):  # archived packs: restore every one the dump needs before its first byte
        coldreads.prepare_entries(repo, itertools.chain([target] if target else [], below))
        target, below = find_entries(repo, snap, path)
    shown = "/" + os.fsencode(path).strip(b"/").decode("utf-8", "replace")
    if target is None and os.fsencode(path).strip(b"/"):
        raise PathNotFound(f"{shown}: not in snapshot {snap.short_id}",
                           hint=f"list it with: haeedge ls {snap.short_id}")
    if target is not None and target.type == "file":
        return DumpPlan(shown, "file", target, iter(()))
    if target is None or target.type == "dir":
        return DumpPlan(shown, "tar", target, below)
    raise UsageError(f"{shown} is a {target.type}; only files and directories can be dumped")


def write_dump(repo: Repository, plan: DumpPlan, out: BinaryIO, warn: Callable[[str], None]) -> DumpResult:
    if plan.kind == "file":
        assert plan.target is not None
        result = DumpResult(plan.shown, "file", 1)
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="dump") as pool:
            for data in file_data(repo, plan.target, pool):
                out.write(data)
                result.nbytes += len(data)
    else:
        entries = itertools.chain([plan.target] if plan.target is not None else [], plan.below)
        count, nbytes, damaged = write_tar(repo, entries, out, warn)
        result = DumpResult(plan.shown, "tar", count, nbytes, damaged)
    out.flush()
    return result
