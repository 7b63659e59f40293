"""The storage seam: opaque names and bytes, nothing else.

A backend stores immutable objects under names such as ``config``,
``keys/<id>``, ``data/ab/<id>``. It knows nothing of encryption, packs or
snapshots. Errors are ``ObjectNotFound`` (permanent) or ``BackendError`` with
``transient`` set when a retry may help.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

#: The top-level folders of a repository; ``list`` takes one of these.
NAMESPACES = ("keys", "data", "index", "snapshots", "locks")


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    size: int


@runtime_checkable
class Backend(Protocol):
    """What every storage location provides. Implementations must be thread-safe."""

    #: Where this is, for messages (never contains secrets).
    location: str

    def put(self, name: str, data: bytes | memoryview) -> None:
        """Store ``data`` under ``name`` atomically: readers see all of it or nothing."""

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


def data_name(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"
