"""Content-defined chunking with FastCDC, through the compiled ``fastcdc`` build.

The chunker never touches bytes in Python: ``fastcdc_cy`` scans a buffer in C
and returns offsets; we slice memoryviews. Streams are chunked in large reads;
the last, possibly cut, chunk of each read is carried into the next one, so
boundaries are the same as if the whole stream had been chunked at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

try:
    from fastcdc.fastcdc_cy import fastcdc_cy as _fastcdc
except ImportError as e:  # pragma: no cover - the wheel ships the compiled build
    raise ImportError("haeedge needs the compiled fastcdc build (fastcdc_cy)") from e

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class ChunkerParams:
    min_size: int = 512 * KiB
    avg_size: int = 1 * MiB
    max_size: int = 8 * MiB

    def validate(self) -> None:
        if not (64 <= self.min_size <= self.avg_size <= self.max_size <= 64 * MiB):
            raise ValueError(f"invalid chunker parameters {self}")
        if self.avg_size < 256 or self.max_size < 1024:
            raise ValueError(f"invalid chunker parameters {self}")

    def to_json(self) -> dict:
        return {"algorithm": "fastcdc-2020-gear", "min": self.min_size, "avg": self.avg_size, "max": self.max_size}

    @classmethod
    def from_json(cls, d: dict) -> ChunkerParams:
        if d.get("algorithm") != "fastcdc-2020-gear":
            raise ValueError(f"unknown chunker {d.get('algorithm')!r}")
        p = cls(int(d["min"]), int(d["avg"]), int(d["max"]))
        p.validate()
        return p


#: File lists are chunked smaller so that a change in a big tree rewrites little.
TREE_PARAMS = ChunkerParams(16 * KiB, 64 * KiB, 256 * KiB)


def chunk_boundaries(buf: bytes | bytearray | memoryview, params: ChunkerParams) -> list[tuple[int, int]]:
    """(offset, length) of each chunk of ``buf`` treated as a whole stream."""
    if len(buf) <= params.min_size:
        return [(0, len(buf))] if len(buf) else []
    return [(c.offset, c.length) for c in _fastcdc(buf, params.min_size, params.avg_size, params.max_size)]


class Chunker:
    """Splits a stream (a file descriptor or bytes) into content-defined chunks."""

    def __init__(self, params: ChunkerParams, read_size: int | None = None):
        self.params = params
        self.read_size = max(read_size or 16 * MiB, 2 * params.max_size)

    def chunks_of_bytes(self, data: bytes | bytearray | memoryview) -> Iterator[memoryview]:
        mv = memoryview(data)
        for off, length in chunk_boundaries(mv, self.params):
            yield mv[off : off + length]

    def chunks_of_fd(self, fd: int) -> Iterator[memoryview]:
        """Yield chunks of an open file; each is valid until the next is requested."""
        pending = b""
        while True:
            block = _read_full(fd, self.read_size - len(pending))
            eof = len(block) < self.read_size - len(pending)
            buf = pending + block if pending else block
            pending = b""
            if not buf:
                return
            mv = memoryview(buf)
            bounds = chunk_boundaries(mv, self.params)
            if not eof and bounds:
                # The last chunk may have been cut by the end of the read.
                last_off, _ = bounds.pop()
                pending = bytes(mv[last_off:])
            for off, length in bounds:
                yield mv[off : off + length]
            if eof:
                if pending:
                    yield memoryview(pending)
                return


def _read_full(fd: int, size: int) -> bytes:
    """Read up to ``size`` bytes, looping over short reads (pipes, network filesystems)."""
    data = os.read(fd, size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.read(fd, size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
