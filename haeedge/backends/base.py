"""The storage seam: opaque names and bytes, nothing else.

A backend stores immutable objects under names such as ``config``,
``keys/<id>``, ``data/ab/<id>``. It knows nothing of encryption, packs or
snapshots. Errors are ``ObjectNotFound`` (permanent) or ``BackendError`` with
``transient`` set when a retry may help.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar, runtime_checkable

from haeedge.errors import BackendError, ObjectNotFound

#: The top-level folders of a repository; ``list`` takes one of these.
NAMESPACES = ("keys", "data", "index", "snapshots", "locks", "forgotten", "marks")
#: The empty folders ``create`` makes where a store has folders: finding only these is no reason to refuse.
SKELETON_FOLDERS = frozenset(NAMESPACES) | {f"data/{i:02x}" for i in range(256)}


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    size: int
    #: When the storage last wrote it (seconds since the epoch, the storage's clock), where the
    #: backend knows it; prune compares it with the local clock to detect clock skew.
    mtime: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class BackendProperties:
    """What a backend is and can do, declared once, so that callers never probe attributes.

    A wrapper states which of its inner backend's properties still hold through
    it (``BackendWrapper.properties``); a replicated set combines its replicas'.
    """

    #: Local directories that hold this repository's objects: a local disk, or each local
    #: replica of a replicated set. Empty for remote storage, whose paths name no local directory.
    local_paths: tuple[str, ...] = ()
    #: Range reads cost what a local ``pread`` costs and the backend may be used from forked
    #: processes: verify reads packs in big windows with forked workers.
    cheap_ranged_reads: bool = False
    #: ``open_spool()`` writes a pack in place as it is built, instead of ``put`` of the whole pack.
    spooled_writes: bool = False
    #: Independent copies of every object: more than one for a replicated set, whose
    #: ``recover_range`` can then find a good copy of a range found damaged.
    replicas: int = 1
    #: An S3 bucket (``s3.S3Backend``): Object Lock, storage classes and cold reads apply.
    s3: bool = False


@runtime_checkable
class Backend(Protocol):
    """What every storage location provides. Implementations must be thread-safe."""

    #: Where this is, for messages (never contains secrets).
    location: str
    #: What this backend is and can do.
    properties: BackendProperties

    def put(self, name: str, data: bytes | memoryview) -> None:
        """Store ``data`` under ``name`` atomically: readers see all of it or nothing.

        Create-only: an object that already exists under ``name`` is left as it is (every name
        but ``config`` is the SHA-256 of the bytes, so the existing object holds the same bytes,
        or is damaged and fails its name check either way). Many hosts write into one repository
        without a lock; none may replace what another wrote (docs/backends.md)."""

    def get(self, name: str) -> bytes:
        """The whole object; ``ObjectNotFound`` when absent."""

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``; fewer only at the end of the object."""

    def list(self, namespace: str) -> Iterator[ObjectInfo]:
        """Every object under ``namespace`` (one of NAMESPACES), full names, any order."""

    def delete(self, name: str) -> None:
        """Remove; absent objects are not an error."""

    def stat(self, name: str) -> ObjectInfo:
        """Size of an object; ``ObjectNotFound`` when absent."""

    def exists(self, name: str) -> bool: ...

    def create(self) -> None:
        """Prepare an empty location for a new repository (create folders)."""

    def close(self) -> None: ...

    def unwrap(self) -> Backend | None:
        """The backend this one wraps (retries, injected faults), or ``None`` for a storage backend."""

    def replica_backends(self) -> tuple[Backend, ...]:
        """The stacks a replicated set combines, one per location; empty for every other backend."""

    def open_spool(self) -> PackSpool:
        """A pack written in place; only where ``properties.spooled_writes`` is true."""

    def remove_temporaries(self, min_age: float | None = None) -> int:
        """Delete leftovers of interrupted writes; how many. ``min_age``: only those not written to for
        that many seconds (a running backup's pack in progress is younger); None: all of them."""

    def recover_range(self, name: str, offset: int, length: int) -> bytes | None:
        """A range from a copy whose whole object verifies, after a read of it was found damaged;
        ``None`` when there is no other copy (``properties.replicas`` is 1) or none verifies."""


class PackSpool(Protocol):
    """One pack being written to its final storage as blobs arrive."""

    def write(self, data: bytes | memoryview) -> None: ...

    def commit(self, name: str) -> None: ...

    def discard(self) -> None: ...


class StorageBackend:
    """Base of the storage backends (local, SFTP, fsspec, replicated): the optional parts of
    the protocol, for backends that lack them. A backend that can do more overrides them
    and declares it in ``properties``."""

    properties: BackendProperties = BackendProperties()
    location: str

    def unwrap(self) -> Backend | None:
        return None

    def replica_backends(self) -> tuple[Backend, ...]:
        return ()

    def open_spool(self) -> PackSpool:
        raise BackendError(f"{self.location}: this backend writes packs whole, not spooled")

    def remove_temporaries(self, min_age: float | None = None) -> int:
        return 0  # writes are atomic objects: nothing is left behind

    def exists(self, name: str) -> bool:
        """Whether ``name`` is stored: one ``stat`` (a backend with a cheaper test overrides it)."""
        try:
            self.stat(name)  # type: ignore[attr-defined]
            return True
        except ObjectNotFound:
            return False

    def recover_range(self, name: str, offset: int, length: int) -> bytes | None:
        return None


B = TypeVar("B")


def as_backend(backend: Backend, kind: type[B]) -> B | None:
    """``backend`` or the first backend it wraps that is a ``kind``, else ``None`` (restic's AsBackend)."""
    current: Backend | None = backend
    while current is not None:
        if isinstance(current, kind):
            return current
        current = current.unwrap()
    return None


def backend_stack(backend: Backend) -> Iterator[Backend]:
    """``backend`` and every backend beneath it: what each wrapper wraps (``unwrap``) and each replica
    of a replicated set (``replica_backends``), each once."""
    pending = [backend]
    seen: set[int] = set()
    while pending:
        b = pending.pop()
        if id(b) in seen:
            continue
        seen.add(id(b))
        yield b
        pending.extend(b.replica_backends())
        inner = b.unwrap()
        if inner is not None:
            pending.append(inner)


def _path_forms(path: str | bytes) -> set[str]:
    text = os.fsdecode(path)
    return {os.path.abspath(text), os.path.realpath(text)}


def repository_local_paths(backend: Backend) -> frozenset[str]:
    """The local directories that hold ``backend``'s repository, as given and with symlinks resolved.

    The one answer to "is this local path the repository?": a local backup source skips these,
    so a repository inside the backed-up tree is not backed up into itself. It comes from the
    declared ``local_paths`` of every replica, never from a remote path (an ``sftp://`` or
    ``s3://`` location names no local directory).
    """
    return frozenset(form for p in backend.properties.local_paths for form in _path_forms(p))


def is_repository_path(backend: Backend, path: str | bytes) -> bool:
    """Whether the local directory ``path`` holds ``backend``'s repository (see ``repository_local_paths``)."""
    return bool(_path_forms(path) & repository_local_paths(backend))


def foreign_entries(list_dir: Callable[[str], list[tuple[str, bool]]]) -> list[str]:
    """What a location holds besides the empty folders ``create`` makes (``SKELETON_FOLDERS``).

    ``list_dir(rel)`` gives ``(name, is_folder)`` for each entry of the folder ``rel`` ("" is the
    location itself). Empty when the location is empty or holds only that skeleton, as an
    ``init`` stopped after creating it leaves it (a replicated init stopped by another replica):
    ``create`` then finishes the job instead of calling the location "not empty".
    """
    found: list[str] = []
    pending = [""]
    while pending:
        folder = pending.pop()
        for name, is_folder in sorted(list_dir(folder)):
            rel = f"{folder}/{name}" if folder else name
            if is_folder and rel in SKELETON_FOLDERS:
                pending.append(rel)
            else:
                found.append(rel)
    return sorted(found)


def not_empty_error(location: str, path: str, found: list[str]) -> BackendError:
    """The refusal to create a repository where ``found`` (``foreign_entries``) already is.

    Key slots alone, with no ``config``, are what an ``init`` that stopped midway leaves:
    the message names exactly what to remove to run it again.
    """
    if all(rel.startswith("keys/") for rel in found):
        names = ", ".join(f"{path}/{rel}" for rel in found[:5]) + (" ..." if len(found) > 5 else "")
        return BackendError(f"{location}: holds key slots of an init that did not finish (there is no config): "
                            f"remove {names}, then run init again")
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    return BackendError(f"{location}: directory is not empty (it holds {', '.join(found[:3])}{more})")


def check_name(location: str, name: str) -> str:
    """An object name every backend accepts: relative, no ``..``, no empty or trailing part,
    no backslash (a path separator on some SFTP servers). Names come from the repository
    format, so a bad one is a bug or a hostile caller, never user input."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise BackendError(f"{location}: invalid object name {name!r}")
    return name


def data_name(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"


class BackendWrapper:
    """Base of backends that wrap another one (retries, faults, rate limits, cold reads, counting, dry runs).

    A subclass overrides the protocol methods it changes. Nothing passes through
    implicitly (no ``__getattr__``): every method of the protocol is forwarded
    here by name, and the properties say what still holds through the wrapper.
    Code that needs the wrapped backend itself asks ``unwrap()`` (or ``as_backend``).
    """

    def __init__(self, inner: Backend):
        self.inner = inner
        self.location = inner.location
        # Packs go through ``put`` here, so that retries and injected faults see them, and reads
        # stay in this process (a forked reader would not share this wrapper's state).
        self.properties = replace(inner.properties, spooled_writes=False, cheap_ranged_reads=False)

    def unwrap(self) -> Backend:
        return self.inner

    def replica_backends(self) -> tuple[Backend, ...]:
        return ()

    def put(self, name: str, data: bytes | memoryview) -> None:
        self.inner.put(name, data)

    def get(self, name: str) -> bytes:
        return self.inner.get(name)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self.inner.get_range(name, offset, length)

    def list(self, namespace: str) -> Iterator[ObjectInfo]:
        return self.inner.list(namespace)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def stat(self, name: str) -> ObjectInfo:
        return self.inner.stat(name)

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)

    def create(self) -> None:
        self.inner.create()

    def close(self) -> None:
        self.inner.close()

    def open_spool(self) -> PackSpool:
        raise BackendError(f"{self.location}: packs are written whole through {type(self).__name__}")

    def remove_temporaries(self, min_age: float | None = None) -> int:
        return self.inner.remove_temporaries(min_age)

    def recover_range(self, name: str, offset: int, length: int) -> bytes | None:
        return self.inner.recover_range(name, offset, length)

    def _describe(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self._describe()
        return f"{type(self).__name__}({self.inner!r}{', ' + extra if extra else ''})"
