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
from dataclasses import dataclass

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
    """Accumulates sealed blobs in memory until the pack is full."""

    def __init__(self) -> None:
        # One growing buffer: the blobs are copied once, and the pack is never joined again.
        self.buffer = bytearray()
        self.entries: list[PackEntry] = []

    @property
    def size(self) -> int:
        return len(self.buffer)

    def add(self, blob_type: int, compression: int, blob_id: bytes, sealed: bytes, raw_length: int) -> None:
        self.entries.append(PackEntry(blob_type, compression, blob_id, len(self.buffer), len(sealed), raw_length))
        self.buffer += sealed

    def __len__(self) -> int:
        return len(self.entries)

    def finish(self, sealed_header: bytes) -> tuple[str, bytearray]:
        """(pack id, pack bytes). The id is the SHA-256 of the bytes."""
        self.buffer += sealed_header
        self.buffer += struct.pack("<I", len(sealed_header))
        data, self.buffer = self.buffer, bytearray()
        return hashlib.sha256(data).hexdigest(), data


def split_pack_trailer(pack_size: int, tail: bytes) -> int:
    """Given the last 4 bytes, the length of the header message (checked)."""
    if len(tail) != 4:
        raise FormatError("pack is too short")
    (hlen,) = struct.unpack("<I", tail)
    if hlen + 4 > pack_size or hlen > MAX_HEADER_MESSAGE:
        raise FormatError("pack header length field is out of range")
    return hlen
