"""Bandwidth limits (``--limit-upload`` / ``--limit-download``): one budget shared by every transfer thread.

A token bucket per direction: each transfer takes its size from the bucket
and waits while the bucket is in debt, so any number of threads together stay
at the rate. Objects move whole (a pack is one ``put``), so the limit holds on
average over seconds, not within one object.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from haeedge.backends.base import Backend, BackendWrapper

#: How much may pass at once after an idle spell, in seconds' worth of the rate.
BURST_SECONDS = 0.25


class TokenBucket:
    """``rate`` bytes per second; ``take(n)`` blocks until ``n`` bytes fit within the rate."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise ValueError("a rate must be above 0")
        self.rate = float(rate)
        self.burst = self.rate * BURST_SECONDS
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._last = clock()

    def take(self, n: int) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n  # into debt: whoever comes next waits for it too
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


class RateLimitedBackend(BackendWrapper):
    """Uploads (``put``) and downloads (``get``, ``get_range``) of the wrapped backend within the budgets."""

    def __init__(self, inner: Backend, upload: TokenBucket | None, download: TokenBucket | None):
        super().__init__(inner)
        self.upload = upload
        self.download = download

    def put(self, name: str, data: bytes | memoryview) -> None:
        if self.upload is not None:
            self.upload.take(len(data))
        self.inner.put(name, data)

    def get(self, name: str) -> bytes:
        data = self.inner.get(name)
        if self.download is not None:
            self.download.take(len(data))
        return data

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        data = self.inner.get_range(name, offset, length)
        if self.download is not None:
            self.download.take(len(data))
        return data

    def _describe(self) -> str:
        kib = [f"{label} {int(b.rate) // 1024} KiB/s" for label, b in (("up", self.upload), ("down", self.download))
               if b is not None]
        return ", ".join(kib)
