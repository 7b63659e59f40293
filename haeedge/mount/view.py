"""The mounted file system's content, without FUSE: path lookup, attributes, listings, reads.

Layout (names of snapshots are ``<UTC time>_<short id>``)::

    snapshots/<name>/...          every snapshot, its whole effective tree
    hosts/<host>/<name>/...       the same snapshots by host, and hosts/<host>/latest
    tags/<tag>/<name>/...         ... and by tag
    latest -> snapshots/<name>    the newest snapshot

A snapshot's tree is the merged file list of its chain (``Repository.iter_entries``,
the walk restore uses), loaded when the snapshot is first entered and kept in a
small LRU of trees. File reads find the chunks covering the requested range by
bisecting the file's cumulative chunk offsets and go through a bounded blob
cache; sequential reads fetch a few blobs ahead in background threads.

Inode numbers are stable for the life of a mount (a tree dropped from the cache
and loaded again gets the same numbers): snapshot *k* owns ``(k+1) << 32`` and
its entries count up from there; the files of a hardlink group share one node,
so they share ``st_ino`` and report the group's size as ``st_nlink``.

Everything here raises ``OSError`` with an errno, which the FUSE layer returns.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import signal
import stat
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from haeedge.errors import HaeedgeError
from haeedge.mount.blobcache import BlobCache
from haeedge.repo.pack import BLOB_DATA
from haeedge.repo.repository import Repository, hex_id
from haeedge.repo.snapshot import Snapshot
from haeedge.repo.tree import Node as TreeEntry

log = logging.getLogger("haeedge.mount")

DEFAULT_CACHE_BYTES = 256 << 20
#: Merged trees kept in memory (each costs about 1 KiB per entry).
MAX_TREES = 8
#: How far ahead of a sequential reader blobs are fetched.
READ_AHEAD_BYTES = 16 << 20
FETCH_THREADS = 4
_SNAPSHOT_SHIFT = 32
_SYNTH_OFFSET = 1 << 31

_FORMAT = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "fifo": stat.S_IFIFO,
           "socket": stat.S_IFSOCK, "chardev": stat.S_IFCHR, "blockdev": stat.S_IFBLK}


#: What a virtual node (no tree entry) reads as: an empty file.
_NO_ENTRY = TreeEntry(b"")


def _error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


@dataclass(eq=False, slots=True)
class Node:
    """One inode: a directory, file, symlink or special file of a snapshot, or a virtual directory/link."""

    ino: int
    kind: str
    entry: TreeEntry | None = None
    #: Directories: name -> node. None for a snapshot's root until its tree is loaded (see ``snapshot``).
    children: dict[bytes, Node] | None = None
    target: bytes | None = None
    nlink: int = 1
    #: Set on the root directory of a snapshot: its children come from the snapshot's merged tree.
    snapshot: Snapshot | None = None
    mtime_ns: int = 0
    #: Files: cumulative start offset of each chunk (computed on first read).
    starts: list[int] | None = None


@dataclass
class ReadState:
    """Per open file: where the last read ended, to notice a sequential reader."""

    node: Node
    last_end: int = -1
    lock: threading.Lock = field(default_factory=threading.Lock)


def snapshot_dir_name(snap: Snapshot) -> str:
    return f"{snap.datetime.strftime('%Y-%m-%dT%H:%M:%SZ')}_{snap.short_id}"


def safe_name(name: str) -> bytes:
    """A host or tag as one path component: '/' and NUL escaped, '', '.' and '..' made visible."""
    b = os.fsencode(name).replace(b"%", b"%25").replace(b"/", b"%2F").replace(b"\0", b"%00")
    if b in (b"", b".", b".."):
        b = b.replace(b".", b"%2E") or b"%00"
    return b


class RepositoryView:
    """The directory tree of a mounted repository; thread-safe (FUSE calls from several threads)."""

    def __init__(self, repo: Repository, snapshots: list[Snapshot], *, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 max_trees: int = MAX_TREES, read_ahead: int = READ_AHEAD_BYTES):
        self.repo = repo
        self.cache = BlobCache(lambda bid: repo.load_blob(bid, BLOB_DATA), cache_bytes)
        self.read_ahead = read_ahead
        self.max_trees = max(1, max_trees)
        self.trees_loaded = 0
        self._trees: OrderedDict[str, Node] = OrderedDict()
        self._tree_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.uid, self.gid = os.geteuid(), os.getegid()
        self._next_virtual = 1
        self.mounted_ns = time.time_ns()
        self.root = self._virtual_dir()
        self._build_layout(snapshots)

    # ------------------------------------------------------------------ layout

    def _virtual_dir(self, mtime_ns: int = 0) -> Node:
        node = Node(self._next_virtual, "dir", children={}, nlink=2, mtime_ns=mtime_ns or self.mounted_ns)
        self._next_virtual += 1
        return node

    def _virtual_link(self, target: bytes, mtime_ns: int) -> Node:
        node = Node(self._next_virtual, "symlink", target=target, mtime_ns=mtime_ns)
        self._next_virtual += 1
        return node

    def _add_dir(self, parent: Node, name: bytes, node: Node) -> Node:
        assert parent.children is not None
        parent.children[name] = node
        parent.nlink += 1
        return node

    def _build_layout(self, snapshots: list[Snapshot]) -> None:
        snapshots = sorted(snapshots, key=lambda s: (s.time, s.id))
        top = self.root
        all_dir = self._add_dir(top, b"snapshots", self._virtual_dir())
        hosts_dir = self._add_dir(top, b"hosts", self._virtual_dir())
        tags_dir = self._add_dir(top, b"tags", self._virtual_dir())
        self.names: dict[str, bytes] = {}
        for k, snap in enumerate(snapshots):
            when = int(snap.datetime.timestamp() * 1e9)
            name = snapshot_dir_name(snap).encode()
            if name in all_dir.children:  # same second and same 8-digit prefix: longer ids
                name = f"{name.decode().rsplit('_', 1)[0]}_{snap.id}".encode()
            self.names[snap.id] = name
            node = Node((k + 1) << _SNAPSHOT_SHIFT, "dir", nlink=2, snapshot=snap, mtime_ns=when)
            self._add_dir(all_dir, name, node)
            host = hosts_dir.children.get(safe_name(snap.host)) or self._add_dir(
                hosts_dir, safe_name(snap.host), self._virtual_dir())
            self._add_dir(host, name, node)
            host.children[b"latest"] = self._virtual_link(name, when)  # sorted: the last one stays
            host.mtime_ns = when
            for tag in dict.fromkeys(snap.tags):
                tag_dir = tags_dir.children.get(safe_name(tag)) or self._add_dir(
                    tags_dir, safe_name(tag), self._virtual_dir())
                self._add_dir(tag_dir, name, node)
                tag_dir.mtime_ns = when
            top.children[b"latest"] = self._virtual_link(b"snapshots/" + name, when)
            all_dir.mtime_ns = top.mtime_ns = when

    # ------------------------------------------------------------------ trees

    def _tree(self, snap_root: Node) -> Node:
        """The merged tree of a snapshot's root node (loaded on first use, LRU-bounded)."""
        snap = snap_root.snapshot
        assert snap is not None
        with self._lock:
            tree = self._trees.get(snap.id)
            if tree is not None:
                self._trees.move_to_end(snap.id)
                return tree
            lock = self._tree_locks.setdefault(snap.id, threading.Lock())
        with lock:
            with self._lock:
                tree = self._trees.get(snap.id)
            if tree is not None:
                return tree
            try:
                tree = build_tree(self.repo.iter_entries(snap), snap_root)
            except HaeedgeError as e:
                log.warning("snapshot %s: cannot read its file list: %s", snap.short_id, e)
                raise _error(errno.EIO) from None
            with self._lock:
                self._trees[snap.id] = tree
                self.trees_loaded += 1
                while len(self._trees) > self.max_trees:
                    self._trees.popitem(last=False)
            return tree

    def children(self, node: Node) -> dict[bytes, Node]:
        if node.kind != "dir":
            raise _error(errno.ENOTDIR)
        if node.snapshot is not None:
            return self._tree(node).children  # type: ignore[return-value]
        assert node.children is not None
        return node.children

    # ------------------------------------------------------------------ lookups

    def lookup(self, path: str | bytes) -> Node:
        """The node at an absolute path of the mount (``/snapshots/<name>/etc/hosts``)."""
        node = self.root
        for comp in os.fsencode(path).split(b"/"):
            if not comp:
                continue
            child = self.children(node).get(comp)
            if child is None:
                raise _error(errno.ENOENT)
            node = child
        return node

    def list_dir(self, path: str | bytes) -> list[bytes]:
        return list(self.children(self.lookup(path)))

    def dir_entries(self, path: bytes) -> list[tuple[bytes, int, int]]:
        """(name, file type bits, inode) of a directory's entries, '.' and '..' first."""
        node = self.lookup(path)
        up = path.rstrip(b"/").rpartition(b"/")[0]
        parent = self.lookup(up) if path.strip(b"/") else node
        out = [(b".", stat.S_IFDIR, node.ino), (b"..", stat.S_IFDIR, parent.ino)]
        out += [(name, _FORMAT[child.kind], child.ino) for name, child in self.children(node).items()]
        return out

    def readlink(self, path: str | bytes) -> bytes:
        node = self.lookup(path)
        if node.kind != "symlink":
            raise _error(errno.EINVAL)
        if node.target is None:
            raise _error(errno.EIO)
        return node.target

    def attributes(self, node: Node) -> dict:
        """``stat`` fields (times in nanoseconds) as FUSE bindings take them."""
        entry = node.entry
        if node.snapshot is not None:
            tree = self._trees.get(node.snapshot.id)  # no load just for a stat of the root
            nlink = tree.nlink if tree is not None else node.nlink
            return self._virtual_attrs(node, 0o755, nlink, node.mtime_ns)
        if entry is None:
            return self._virtual_attrs(node, 0o777 if node.kind == "symlink" else 0o555, node.nlink, node.mtime_ns)
        mtime = entry.mtime_ns or 0
        size = 0
        if node.kind == "file":
            size = entry.size or 0
        elif node.kind == "symlink":
            size = len(node.target or b"")
        return {
            "st_mode": _FORMAT[node.kind] | ((entry.mode or 0) & 0o7777),
            "st_ino": node.ino,
            "st_nlink": node.nlink,
            "st_uid": entry.uid or 0,
            "st_gid": entry.gid or 0,
            "st_size": size,
            "st_blocks": (size + 511) // 512,
            "st_blksize": 4096,
            "st_rdev": entry.rdev or 0,
            "st_mtime": mtime,
            "st_ctime": (entry.ctime_ns if entry.ctime_ns is not None else mtime),
            "st_atime": entry.extra.get("atime_ns", mtime) if entry.extra else mtime,
        }

    def _virtual_attrs(self, node: Node, mode: int, nlink: int, mtime_ns: int) -> dict:
        size = len(node.target) if node.target is not None else 0
        return {"st_mode": _FORMAT[node.kind] | mode, "st_ino": node.ino, "st_nlink": nlink, "st_uid": self.uid,
                "st_gid": self.gid, "st_size": size, "st_blocks": 0, "st_blksize": 4096, "st_mtime": mtime_ns,
                "st_ctime": mtime_ns, "st_atime": mtime_ns}

    def getattr(self, path: str | bytes) -> dict:
        return self.attributes(self.lookup(path))

    # ------------------------------------------------------------------ reads

    def open(self, path: str | bytes) -> ReadState:
        node = self.lookup(path)
        if node.kind == "dir":
            raise _error(errno.EISDIR)
        if node.kind != "file":
            raise _error(errno.ENXIO)  # fifos, sockets and devices have no data here
        return ReadState(node)

    def read(self, state: ReadState, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` (fewer at the end of the file)."""
        node = state.node
        entry = node.entry or _NO_ENTRY
        if entry.damaged:
            raise _error(errno.EIO)
        starts = self._starts(node)
        total = entry.size or 0
        if offset < 0 or size < 0:
            raise _error(errno.EINVAL)
        end = min(offset + size, total)
        if offset >= end:
            return b""
        chunks = entry.chunks
        first = bisect.bisect_right(starts, offset) - 1
        last = bisect.bisect_left(starts, end) - 1
        ids = [self._blob_id(chunks[i][0]) for i in range(first, last + 1)]
        with state.lock:
            sequential = offset == state.last_end
            state.last_end = end
        if len(ids) > 1:  # a read across several blobs fetches them in parallel
            for bid in ids[1:]:
                if bid not in self.cache:
                    self._submit(self._fetch_quietly, bid)
        if sequential and self.read_ahead:
            self._read_ahead(chunks, last + 1, ids)
        parts = []
        for i, bid in zip(range(first, last + 1), ids, strict=True):
            data = self._get(bid)
            if len(data) != chunks[i][1]:
                log.warning("%s: a blob has the wrong length", _shown(entry))
                raise _error(errno.EIO)
            lo = max(offset, starts[i]) - starts[i]
            hi = min(end, starts[i] + len(data)) - starts[i]
            parts.append(data[lo:hi] if (lo, hi) != (0, len(data)) else data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _starts(self, node: Node) -> list[int]:
        starts = node.starts
        if starts is None:
            entry = node.entry or _NO_ENTRY
            chunks = entry.chunks or []
            starts, pos = [], 0
            for _bid, length in chunks:
                starts.append(pos)
                pos += length
            if pos != (entry.size or 0):
                log.warning("%s: chunk list does not add up to the file size", _shown(entry))
                raise _error(errno.EIO)
            node.starts = starts
        return starts

    def _blob_id(self, h: str) -> bytes:
        try:
            return hex_id(h)
        except HaeedgeError:
            raise _error(errno.EIO) from None

    def _get(self, bid: bytes) -> bytes:
        try:
            return self.cache.get(bid)
        except HaeedgeError as e:
            log.warning("blob %s: %s", bid.hex()[:16], e)
            raise _error(errno.EIO) from None

    def _fetch_quietly(self, bid: bytes) -> None:
        try:
            self.cache.get(bid)
        except Exception as e:  # noqa: BLE001 - a failed read-ahead is reported when the data is read
            log.debug("read-ahead of blob %s failed: %s", bid.hex()[:16], e)

    def _read_ahead(self, chunks: list, start: int, already: list[bytes]) -> None:
        budget = self.read_ahead
        for i in range(start, len(chunks)):
            if budget <= 0:
                break
            budget -= chunks[i][1]
            try:
                bid = hex_id(chunks[i][0])
            except HaeedgeError:
                return
            if bid not in self.cache and bid not in already:
                self._submit(self._fetch_quietly, bid)

    def _submit(self, fn, *args) -> None:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="mount-fetch",
                                                initializer=block_stop_signals)
            pool = self._pool
        pool.submit(fn, *args)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def stats(self) -> dict:
        return {**self.cache.stats.to_dict(), "trees_loaded": self.trees_loaded}


def block_stop_signals() -> None:
    """Helper threads never take SIGINT/SIGTERM/SIGHUP: libfuse's handler must run in the thread
    that waits for the session to end, else the mount would not notice Ctrl-C."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def build_tree(entries, snap_root: Node) -> Node:
    """A snapshot's directory tree from its merged, sorted entries.

    Returns a new root node (the snapshot root's number and times). Directories
    a file list does not name (the parents of the backed-up paths) are made up;
    an entry below something that is not a directory is skipped.
    """
    base = snap_root.ino
    root = Node(base, "dir", children={}, nlink=2, snapshot=None, mtime_ns=snap_root.mtime_ns)
    dirs: dict[bytes, Node] = {b"": root}
    groups: dict[str, Node] = {}
    made_up = 0

    def parent_of(path: bytes) -> Node | None:
        """The directory at ``path``, made up (with its missing parents) when the list does not name it."""
        nonlocal made_up
        node = dirs.get(path)
        if node is not None:
            return node
        missing = []  # a loop, not recursion: paths may nest thousands deep
        up = path
        while up and up not in dirs:
            missing.append(up)
            up = up.rpartition(b"/")[0]
        parent = dirs[up]
        for p in reversed(missing):
            name = p.rpartition(b"/")[2]
            if name in parent.children:  # type: ignore[operator]
                return None  # the name is taken by a file: nothing can be below it
            made_up += 1
            node = Node(base + _SYNTH_OFFSET + made_up, "dir", children={}, nlink=2, mtime_ns=snap_root.mtime_ns)
            parent.children[name] = node  # type: ignore[index]
            parent.nlink += 1
            dirs[p] = parent = node
        return parent

    for i, entry in enumerate(entries, 1):
        rel = entry.path
        up, _, name = rel.rpartition(b"/")
        parent = parent_of(up)
        if parent is None or name in parent.children:  # type: ignore[operator]
            log.debug("skipping %r: its parent is not a directory", rel)
            continue
        kind = entry.type
        group = entry.hardlink if kind == "file" else None
        if group is not None and group in groups:
            node = groups[group]
            node.nlink += 1
        else:
            node = Node(base + i, kind, entry)
            if kind == "dir":
                node.children, node.nlink = {}, 2
                dirs[rel] = node
                parent.nlink += 1
            elif kind == "symlink":
                node.target = entry.target
            if group is not None:
                groups[group] = node
        parent.children[name] = node  # type: ignore[index]
    return root


def _shown(entry: TreeEntry) -> str:
    try:
        return "/" + entry.path.decode("utf-8", "replace")
    except (ValueError, KeyError):
        return "a file"
