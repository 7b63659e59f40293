"""Packs: many sealed blobs followed by a sealed header and its length.

    pack   := blob* header_message header_length
    blob   := a complete OpenPGP message (ESK + SEIPD(literal(stored bytes)))
    header := OpenPGP message (meta key) whose literal is PackHeader.encode()
    header_length := uint32 little-endian, length of header_message

Blob offsets are implicit: each starts where the previous ended.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from haeedge.backends.s3policy import note_metadata_pack
from haeedge.errors import FormatError

PACK_HEADER_MAGIC = b"HAEPACK\x01"
ENTRY = struct.Struct("<BB32sII")  # type, compression, id, stored length, raw length
BLOB_DATA = 0
BLOB_TREE = 1
COMPRESSION_NONE = 0
COMPRESSION_ZSTD = 1

#: Hostile-input bounds: no pack we write is near these.
MAX_PACK_ENTRIES = 1 << 20
MAX_HEADER_MESSAGE = 64 << 20
MAX_BLOB_RAW = 256 << 20


@dataclass(frozen=True, slots=True)
class PackEntry:
    blob_type: int
    compression: int
    blob_id: bytes
    offset: int
    length: int
    raw_length: int


def encode_header(entries: list[PackEntry]) -> bytes:
    parts = [PACK_HEADER_MAGIC, struct.pack("<I", len(entries))]
    parts += [ENTRY.pack(e.blob_type, e.compression, e.blob_id, e.length, e.raw_length) for e in entries]
    return b"".join(parts)


def decode_header(data: bytes) -> list[PackEntry]:
    if len(data) < 12 or data[:8] != PACK_HEADER_MAGIC:
        raise FormatError("pack header has a wrong magic")
    (count,) = struct.unpack_from("<I", data, 8)
    if count > MAX_PACK_ENTRIES or len(data) != 12 + count * ENTRY.size:
        raise FormatError("pack header length does not match its entry count")
    out = []
    offset = 0
    for i in range(count):
        t, c, bid, length, raw = ENTRY.unpack_from(data, 12 + i * ENTRY.size)
        if t not in (BLOB_DATA, BLOB_TREE) or c not in (COMPRESSION_NONE, COMPRESSION_ZSTD) or raw > MAX_BLOB_RAW:
            raise FormatError("pack header has an invalid entry")
        out.append(PackEntry(t, c, bid, offset, length, raw))
        offset += length
    return out


class PackBuilder:
    """Accumulates sealed blobs in memory until the pack is full (any backend)."""

    def __init__(self) -> None:
        # One growing buffer: the blobs are copied once, and the pack is never joined again.
        self.buffer = bytearray()
        self.entries: list[PackEntry] = []
        self.length = 0

    @property
    def size(self) -> int:
        return len(self.buffer)

    def add(self, blob_type: int, compression: int, blob_id: bytes, sealed: bytes, raw_length: int) -> None:
        self.entries.append(PackEntry(blob_type, compression, blob_id, len(self.buffer), len(sealed), raw_length))
        self.buffer += sealed

    def __len__(self) -> int:
        return len(self.entries)

    def finish(self, sealed_header: bytes) -> str:
        """Close the pack; its id is the SHA-256 of its bytes."""
        self.buffer += sealed_header
        self.buffer += struct.pack("<I", len(sealed_header))
        self.length = len(self.buffer)
        return hashlib.sha256(self.buffer).hexdigest()

    def store(self, put: Callable[[str, bytes | bytearray], None], name: str) -> None:
        data, self.buffer = self.buffer, bytearray()
        if any(e.blob_type != BLOB_DATA for e in self.entries):
            note_metadata_pack(name)  # file lists stay in the standard storage class (s3policy.py)
        put(name, data)

    def discard(self) -> None:
        self.buffer = bytearray()


class PackSpool(Protocol):
    """A pack being written straight to its storage (see ``LocalBackend.open_spool``)."""

    def write(self, data: bytes | memoryview) -> None: ...
    def commit(self, name: str) -> None: ...
    def discard(self) -> None: ...


class SpooledPackBuilder(PackBuilder):
    """Writes blobs to a spool as they come instead of holding the pack in memory.

    A backend that can place a finished file under its final name (local disk)
    offers spools; a pack then costs page cache, not process memory, and
    storing it is an fsync and a rename.
    """

    #: Small blobs are gathered up to this many bytes and written in one call: a tree of small
    #: files makes a blob per file, and a write(2) per blob cost the main process more than packing.
    WRITE_BYTES = 256 << 10

    def __init__(self, open_spool: Callable[[], PackSpool]) -> None:
        super().__init__()
        self._open_spool = open_spool
        self._spool: PackSpool | None = None
        self._hash = hashlib.sha256()
        self._size = 0
        self._pending = bytearray()

    @property
    def size(self) -> int:
        return self._size

    def _write(self, data: bytes | memoryview) -> None:
        if self._spool is None:
            self._spool = self._open_spool()  # first write: no empty spools for empty packs
        self._spool.write(data)
        self._hash.update(data)

    def _drain(self) -> None:
        if self._pending:
            self._write(self._pending)
            self._pending = bytearray()

    def add(self, blob_type: int, compression: int, blob_id: bytes, sealed: bytes, raw_length: int) -> None:
        if len(sealed) >= self.WRITE_BYTES:
            self._drain()
            self._write(sealed)  # first: a failed write adds no entry
        else:
            self._pending += sealed
            if len(self._pending) >= self.WRITE_BYTES:
                self._drain()  # a failed write raises: the pack is abandoned, as before
        self._size += len(sealed)
        self.entries.append(PackEntry(blob_type, compression, blob_id, self._size - len(sealed), len(sealed),
                                      raw_length))

    def finish(self, sealed_header: bytes) -> str:
        self._pending += sealed_header
        self._pending += struct.pack("<I", len(sealed_header))
        self._size += len(sealed_header) + 4
        self._drain()
        self.length = self._size
        return self._hash.hexdigest()

    def store(self, put: Callable[[str, bytes | bytearray], None], name: str) -> None:
        assert self._spool is not None
        spool, self._spool = self._spool, None
        try:
            spool.commit(name)
        except BaseException:
            spool.discard()
            raise

    def discard(self) -> None:
        self._pending = bytearray()
        spool, self._spool = self._spool, None
        if spool is not None:
            spool.discard()


def split_pack_trailer(pack_size: int, tail: bytes) -> int:
    """Given the last 4 bytes, the length of the header message (checked)."""
    if len(tail) != 4:
        raise FormatError("pack is too short")
    (hlen,) = struct.unpack("<I", tail)
    if hlen + 4 > pack_size or hlen > MAX_HEADER_MESSAGE:
        raise FormatError("pack header length field is out of range")
    return hlen
