"""Count the bytes a command reads from storage.

``ReadCountingBackend(inner)`` passes every call through and adds up the bytes
that ``get`` and ``get_range`` returned (config, key slots, index, snapshots,
trees and pack data alike). ``restore --json`` reports the sum as
``bytes_read``: what a resumed restore saved is measured there, in bytes that
really crossed the storage seam, not estimated from file sizes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from haeedge.backends.base import Backend, BackendWrapper, ObjectInfo


class ReadCountingBackend(BackendWrapper):
    """A pass-through backend whose ``bytes_read`` and ``reads`` grow with every read."""

    def __init__(self, inner: Backend):
        super().__init__(inner)
        self._lock = threading.Lock()
        self.bytes_read = 0
        self.reads = 0

    def _count(self, data: bytes) -> bytes:
        with self._lock:
            self.bytes_read += len(data)
            self.reads += 1
        return data

    def put(self, name: str, data: bytes | memoryview) -> None:
        self.inner.put(name, data)

    def get(self, name: str) -> bytes:
        return self._count(self.inner.get(name))

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self._count(self.inner.get_range(name, offset, length))

    def list(self, namespace: str) -> Iterator[ObjectInfo]:
        return self.inner.list(namespace)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def stat(self, name: str) -> ObjectInfo:
        return self.inner.stat(name)

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)

    def _describe(self) -> str:
        return f"bytes_read={self.bytes_read}"
