"""Count the bytes a command reads from storage.

``ReadCountingBackend(inner)`` passes every call through and adds up the bytes
that ``get`` and ``get_range`` returned (config, key slots, index, snapshots,
trees and pack data alike). ``restore --json`` reports the sum as
``bytes_read``: what a resumed restore saved is measured there, in bytes that
really crossed the storage seam, not estimated from file sizes.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from haeedge.backends.base import Backend, BackendWrapper


class ReadCountingBackend(BackendWrapper):
    """A pass-through backend whose ``bytes_read`` and ``reads`` grow with every read."""

    def __init__(self, inner: Backend):
        super().__init__(inner)
        # A count is not worth keeping every read in one process: restore's forked workers read
        # packs of a local repository themselves and report their bytes (bytes_read_by_workers),
        # which the caller adds to this count.
        self.properties = replace(self.properties, cheap_ranged_reads=inner.properties.cheap_ranged_reads)
        self._lock = threading.Lock()
        self.bytes_read = 0
        self.reads = 0

    def _count(self, data: bytes) -> bytes:
        with self._lock:
            self.bytes_read += len(data)
            self.reads += 1
        return data

    def get(self, name: str) -> bytes:
        return self._count(self.inner.get(name))

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self._count(self.inner.get_range(name, offset, length))

    def _describe(self) -> str:
        return f"bytes_read={self.bytes_read}"
