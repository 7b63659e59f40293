"""A bounded, thread-safe LRU cache of decrypted data blobs.

A FUSE read asks for 4-128 KiB at a time while a blob is about 1 MiB, so
without a cache every request would fetch, decrypt and check a whole blob
again. The cache holds at most ``max_bytes`` of blob data; a blob being
fetched by one thread is waited for by the others (never fetched twice at
once). It counts what it fetched, which is how tests and ``mount --json``
tell that a random read fetched only the chunks it needed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass


@dataclass
class CacheStats:
    #: Blobs fetched from the repository (misses), and their decrypted bytes.
    blobs_fetched: int = 0
    bytes_fetched: int = 0
    #: Requests served from memory (including ones that waited for another thread's fetch).
    hits: int = 0
    #: Blobs dropped to stay within the size bound.
    evicted: int = 0

    def to_dict(self) -> dict:
        return {"blobs_fetched": self.blobs_fetched, "bytes_fetched": self.bytes_fetched, "cache_hits": self.hits,
                "cache_evicted": self.evicted}


class BlobCache:
    """``get(blob_id)`` -> the blob's bytes, from memory or through ``fetch``."""

    def __init__(self, fetch: Callable[[bytes], bytes], max_bytes: int):
        self._fetch = fetch
        self.max_bytes = max(0, max_bytes)
        self._blobs: OrderedDict[bytes, bytes] = OrderedDict()
        self._size = 0
        self._inflight: dict[bytes, Future] = {}
        self._lock = threading.Lock()
        self.stats = CacheStats()

    def __contains__(self, blob_id: bytes) -> bool:
        with self._lock:
            return blob_id in self._blobs or blob_id in self._inflight

    @property
    def size(self) -> int:
        return self._size

    def get(self, blob_id: bytes) -> bytes:
        with self._lock:
            data = self._blobs.get(blob_id)
            if data is not None:
                self._blobs.move_to_end(blob_id)
                self.stats.hits += 1
                return data
            fut = self._inflight.get(blob_id)
            if fut is not None:
                self.stats.hits += 1
                owner = False
            else:
                fut = self._inflight[blob_id] = Future()
                owner = True
        if not owner:
            return fut.result()
        try:
            data = self._fetch(blob_id)
        except BaseException as e:
            with self._lock:
                del self._inflight[blob_id]
            fut.set_exception(e)
            raise
        with self._lock:
            del self._inflight[blob_id]
            self.stats.blobs_fetched += 1
            self.stats.bytes_fetched += len(data)
            if len(data) <= self.max_bytes:
                self._blobs[blob_id] = data
                self._size += len(data)
                while self._size > self.max_bytes:
                    _old, dropped = self._blobs.popitem(last=False)
                    self._size -= len(dropped)
                    self.stats.evicted += 1
        fut.set_result(data)
        return data
