"""A local cache of immutable repository objects, so that repeated commands do not download the same
metadata again (restic and borg keep one too).

What is kept, per repository (``<cache>/<repository id>/``):

- whole objects of ``keys/``, ``index/`` and ``snapshots/``: each is named by the SHA-256 of its
  stored bytes, so a cached copy is checked against its name exactly as a download is, and then
  goes through the same decryption and signature checks;
- the sealed bytes of tree blobs (``trees/``, named by blob id): opened and checked against their
  keyed id exactly as bytes read from a pack are; a backup keeps the ones it writes. Trimmed to
  ``MAX_TREE_BYTES``, least recently used first.

The cache is as hostile as the storage. An entry that fails its check is deleted and the object
is read from storage again; a deleted cache only costs downloads. The cache serves only names that
this run's listing of storage shows, so an object removed from storage (a forgotten snapshot, an
index object a prune replaced) is never brought back from it, and a listing removes the entries
storage no longer lists. Local repositories are not cached (reading them costs what reading the
cache would).

Where: ``$HAEEDGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/haeedge``, else ``~/.cache/haeedge``.
``--no-cache`` (``HAEEDGE_NO_CACHE=1``) turns it off for a run. Every failure to read or write the
cache is only logged: the cache is never needed for correctness.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from haeedge.backends.base import Backend, BackendWrapper, ObjectInfo, as_backend

log = logging.getLogger("haeedge.cache")

CACHE_DIR_ENV = "HAEEDGE_CACHE_DIR"
NO_CACHE_ENV = "HAEEDGE_NO_CACHE"
#: Namespaces whose objects are named by the SHA-256 of their bytes and never change.
CACHED_NAMESPACES = frozenset({"keys", "index", "snapshots"})
#: Objects read before the repository is known (key slots while opening) wait in memory up to this much.
MAX_PENDING_BYTES = 4 << 20
#: Cached tree blobs are trimmed to this size (least recently used first), checked once a day.
MAX_TREE_BYTES = 1 << 30
TRIM_EVERY = 86400.0
CACHEDIR_TAG = (b"Signature: 8a477f597d28d172789f06886806bc55\n"
                b"# This file is a cache directory tag created by haeedge.\n"
                b"# For information about cache directory tags see https://bford.info/cachedir/\n")


def default_cache_root() -> Path:
    """``$HAEEDGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/haeedge``, else ``~/.cache/haeedge``."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "haeedge"


def cache_disabled_by_env() -> bool:
    return os.environ.get(NO_CACHE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _is_hex(s: str, length: int | None = None) -> bool:
    return bool(s) and (length is None or len(s) == length) and all(c in "0123456789abcdef" for c in s)


def content_ok(name: str, data: bytes) -> bool:
    """Whether ``data`` is what an object called ``name`` holds (its name is the SHA-256 of its bytes)."""
    return hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[-1]


class ObjectCache:
    """The cache directory of one repository (found through its location until the repository is known)."""

    def __init__(self, root: Path, location: str):
        self.root = root
        self.location_key = hashlib.sha256(location.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        self.dir: Path | None = None
        #: False: read whole objects from storage only (verify), still keeping what was read.
        self.reads = True
        #: The same for tree blobs.
        self.tree_reads = True
        self.hits = 0
        self.misses = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._pending: list[tuple[str, bytes]] = []
        self._pending_bytes = 0
        try:
            rid = (root / "locations" / self.location_key).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            rid = ""
        if _is_hex(rid, 64):
            self.dir = root / rid

    # ------------------------------------------------------------------ binding

    def bind(self, repository_id: str) -> None:
        """Use the directory of ``repository_id`` (known once the repository is open), and remember
        which repository this location holds, so the next run can read its key slots from the cache."""
        if not _is_hex(repository_id, 64):
            return
        directory = self.root / repository_id
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            tag = self.root / "CACHEDIR.TAG"
            if not tag.exists():
                self._write_file(tag, CACHEDIR_TAG)
            directory.mkdir(mode=0o700, exist_ok=True)
            loc = self.root / "locations" / self.location_key
            if self.dir != directory or not loc.exists():
                loc.parent.mkdir(mode=0o700, exist_ok=True)
                self._write_file(loc, repository_id.encode())
        except OSError as e:
            log.debug("cache %s unusable: %s", self.root, e)
            return
        with self._lock:
            self.dir = directory
            pending, self._pending, self._pending_bytes = self._pending, [], 0
        for name, data in pending:
            self.write(name, data)
        self.trim_trees()

    # ------------------------------------------------------------------ whole objects

    def _path(self, name: str) -> Path | None:
        if self.dir is None:
            return None
        ns, _, oid = name.partition("/")
        if ns not in CACHED_NAMESPACES or not _is_hex(oid, 64):
            return None
        return self.dir / ns / oid

    def read(self, name: str) -> bytes | None:
        """The cached bytes of ``name`` when they match its name; a bad entry is deleted."""
        path = self._path(name)
        if path is None or not self.reads:
            return None
        try:
            data = path.read_bytes()
        except OSError:
            with self._lock:
                self.misses += 1
            return None
        if not content_ok(name, data):
            log.warning("cache entry %s does not match its name (damaged or modified): read from storage", name)
            self._unlink(path)
            with self._lock:
                self.dropped += 1
            return None
        with self._lock:
            self.hits += 1
        return data

    def write(self, name: str, data: bytes) -> None:
        """Keep ``data`` for ``name`` (only when it matches the name: nothing unchecked is kept)."""
        if name.partition("/")[0] not in CACHED_NAMESPACES or not content_ok(name, data):
            return
        path = self._path(name)
        if path is None:
            if self.dir is None and name.startswith("keys/"):
                with self._lock:
                    if self._pending_bytes + len(data) <= MAX_PENDING_BYTES:
                        self._pending.append((name, data))
                        self._pending_bytes += len(data)
            return
        if path.exists():
            return
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._write_file(path, data)
        except OSError as e:
            log.debug("cannot write cache entry %s: %s", name, e)

    def drop(self, name: str) -> None:
        path = self._path(name)
        if path is not None:
            self._unlink(path)

    def prune(self, namespace: str, listed: Iterable[str]) -> None:
        """Delete the entries of ``namespace`` that storage no longer lists."""
        if self.dir is None or namespace not in CACHED_NAMESPACES:
            return
        keep = {n.rsplit("/", 1)[-1] for n in listed}
        try:
            names = os.listdir(self.dir / namespace)
        except OSError:
            return
        for n in names:
            if n not in keep:
                self._unlink(self.dir / namespace / n)

    # ------------------------------------------------------------------ tree blobs

    def _blob_path(self, blob_id: str, compression: int) -> Path | None:
        if self.dir is None or not _is_hex(blob_id, 64):
            return None
        return self.dir / "trees" / blob_id[:2] / f"{blob_id}-{int(compression)}"

    def read_blob(self, blob_id: str, compression: int) -> bytes | None:
        """The sealed bytes cached for a tree blob (the caller opens them and checks the keyed id)."""
        path = self._blob_path(blob_id, compression)
        if path is None or not self.tree_reads:
            return None
        try:
            data = path.read_bytes()
        except OSError:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: kept longest when the cache is trimmed
        with self._lock:
            self.hits += 1
        return data

    def write_blob(self, blob_id: str, compression: int, sealed: bytes | memoryview) -> None:
        path = self._blob_path(blob_id, compression)
        if path is None or path.exists():
            return
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._write_file(path, bytes(sealed))
        except OSError as e:
            log.debug("cannot write cached tree blob: %s", e)

    def drop_blob(self, blob_id: str, compression: int) -> None:
        """Forget a cached tree blob that failed its check."""
        path = self._blob_path(blob_id, compression)
        if path is not None:
            log.warning("cached file list blob %s is damaged or modified: read from storage", blob_id[:16])
            self._unlink(path)
            with self._lock:
                self.dropped += 1

    def trim_trees(self, max_bytes: int = MAX_TREE_BYTES, every: float = TRIM_EVERY) -> None:
        """Keep the cached tree blobs under ``max_bytes`` (least recently used go first); looked at once
        per ``every`` seconds (file lists of forgotten snapshots are not otherwise removed)."""
        if self.dir is None:
            return
        base = self.dir / "trees"
        stamp = base / ".trimmed"
        try:
            if time.time() - stamp.stat().st_mtime < every:
                return
        except OSError:
            pass
        files: list[tuple[float, int, str]] = []
        try:
            for sub in os.scandir(base):
                if not sub.is_dir(follow_symlinks=False):
                    continue
                for f in os.scandir(sub.path):
                    st = f.stat(follow_symlinks=False)
                    files.append((st.st_mtime, st.st_size, f.path))
            base.mkdir(mode=0o700, parents=True, exist_ok=True)
            stamp.touch()
        except OSError:
            return
        total = sum(size for _t, size, _p in files)
        if total <= max_bytes:
            return
        files.sort()
        for _t, size, p in files:
            if total <= max_bytes * 3 // 4:
                break
            self._unlink(Path(p))
            total -= size

    # ------------------------------------------------------------------ files

    @staticmethod
    def _write_file(path: Path, data: bytes) -> None:
        """Atomically: a reader sees the whole entry or none."""
        tmp = path.with_name(f".tmp-{path.name}-{os.urandom(4).hex()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @staticmethod
    def _unlink(path: Path) -> None:
        with contextlib.suppress(OSError):
            os.unlink(path)


class CachingBackend(BackendWrapper):
    """Serves reads of listed ``keys/``, ``index/`` and ``snapshots/`` objects from an ``ObjectCache``
    and keeps what it reads and writes there (see the module docstring for why this is safe)."""

    def __init__(self, inner: Backend, cache: ObjectCache):
        super().__init__(inner)
        self.properties = inner.properties
        self.cache = cache
        self._listed: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def _served(self, name: str) -> bool:
        ns = name.partition("/")[0]
        with self._lock:
            listed = self._listed.get(ns)
            return listed is not None and name in listed

    def put(self, name: str, data: bytes | memoryview) -> None:
        self.inner.put(name, data)
        ns = name.partition("/")[0]
        if ns in CACHED_NAMESPACES:
            self.cache.write(name, data if isinstance(data, bytes) else bytes(data))  # kept if it matches its name
            with self._lock:
                if ns in self._listed:  # stored now: served from the cache if the cache kept it
                    self._listed[ns].add(name)

    def get(self, name: str) -> bytes:
        if name.partition("/")[0] not in CACHED_NAMESPACES:
            return self.inner.get(name)
        if self._served(name):
            data = self.cache.read(name)
            if data is not None:
                return data
        data = self.inner.get(name)
        self.cache.write(name, data)
        return data

    def list(self, namespace: str) -> Iterator[ObjectInfo]:
        infos = list(self.inner.list(namespace))
        if namespace in CACHED_NAMESPACES:
            names = {i.name for i in infos}
            with self._lock:
                self._listed[namespace] = names
            self.cache.prune(namespace, names)
        yield from infos

    def delete(self, name: str) -> None:
        try:
            self.inner.delete(name)
        finally:
            ns = name.partition("/")[0]
            if ns in CACHED_NAMESPACES:
                self.cache.drop(name)
                with self._lock:
                    self._listed.get(ns, set()).discard(name)

    def _describe(self) -> str:
        return f"cache={self.cache.dir or self.cache.root}"


def object_cache_of(backend: Backend) -> ObjectCache | None:
    """The ``ObjectCache`` in ``backend``'s wrapper chain, if any."""
    caching = as_backend(backend, CachingBackend)
    return caching.cache if caching is not None else None


def with_cache(backend: Backend, location: str, *, root: Path | None = None) -> Backend:
    """``backend`` wrapped in a ``CachingBackend`` (the caller decides whether the location deserves one)."""
    return CachingBackend(backend, ObjectCache(root or default_cache_root(), location))
