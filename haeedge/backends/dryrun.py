"""Dry runs: a backend that takes every write and stores nothing.

``DryRunBackend(inner)`` accepts ``put`` and ``delete`` (and ``create``)
without passing them on, and serves reads from ``inner`` as it is. A run
that writes through it does all its work (chunking, compressing, sealing,
building packs and index objects) and reports what it would have stored, so
``backup --dry-run`` counts exactly what a real backup would add. What the run
"wrote" is not kept: reads see the repository as it was before the run.
"""

from __future__ import annotations

import threading

from haeedge.backends.base import Backend, BackendWrapper


class DryRunBackend(BackendWrapper):
    """Writes and deletes are accepted and dropped; ``puts``/``bytes_put`` say what would have been stored."""

    def __init__(self, inner: Backend):
        super().__init__(inner)
        self._lock = threading.Lock()
        self.puts = 0
        self.bytes_put = 0
        self.deletes = 0

    def put(self, name: str, data: bytes | memoryview) -> None:
        with self._lock:
            self.puts += 1
            self.bytes_put += len(data)

    def delete(self, name: str) -> None:
        with self._lock:
            self.deletes += 1

    def create(self) -> None:
        pass

    def remove_temporaries(self, min_age: float | None = None) -> int:
        return 0

    def _describe(self) -> str:
        return f"puts={self.puts}"
