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

from haeedge.errors import BackendError

#: The top-level folders of a repository; ``list`` takes one of these.
NAMESPACES = ("keys", "data", "index", "snapshots", "locks", "forgotten")


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
    """Base of backends that wrap another one (retries, injected faults).

    A subclass overrides the protocol methods it changes; everything else,
    including extras a concrete backend offers (``remove_temporaries``,
    ``recover_range``), passes through to ``inner``.
    """

    #: Packs go through ``put`` here, so that retries and injected faults see them.
    open_spool = None

    def __init__(self, inner: Backend):
        self.inner = inner
        self.location = inner.location

    def create(self) -> None:
        self.inner.create()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, attr: str):  # noqa: ANN204 - any attribute of the wrapped backend
        if attr == "inner":  # not set yet (during unpickling or a failed __init__): no recursion
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def _describe(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self._describe()
        return f"{type(self).__name__}({self.inner!r}{', ' + extra if extra else ''})"
