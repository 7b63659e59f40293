"""The blob index: blob id -> (pack, offset, length, raw length, type, compression).

In memory it is a compact open-addressing hash table over two flat arrays
(about 54 bytes per blob at 10 million blobs) instead of a dict of bytes,
which would cost three times as much. On storage it is a set of ``index/<id>``
objects, each a sealed binary list of packs and their entries.

Index object (literal of the OpenPGP message), version 2 (docs/format.md section 7):

    magic "HAEIDX\\x00\\x02"
    uint32 n_superseded, then n_superseded x 32-byte ids of index objects this one replaces
    uint32 n_packs, then for each pack:
        32-byte pack id, uint64 pack size,
        uint16 domain length, domain (UTF-8: "" = the signer's own, "host:NAME", "legacy"),
        uint32 n_entries,
        n_entries x (uint8 type, uint8 compression, 32-byte blob id,
                     uint32 offset, uint32 length, uint32 raw length)
    uint8 signer length, signer fingerprint (ASCII hex), uint32 signature length,
    signature (binary OpenPGP detached signature over every byte before the signer length)
All integers little-endian. Version 1 ("HAEIDX\\x00\\x01") has no domains and no
signature; it is still read. Each record in memory carries the *trust domain* of the
index object that listed it (see repo/provenance.py); a blob listed by several
index objects keeps every location, the first one loaded (the most trusted) first.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from haeedge.errors import FormatError
from haeedge.repo.pack import BLOB_DATA, BLOB_TREE, MAX_BLOB_RAW, MAX_PACK_ENTRIES, PackEntry

INDEX_MAGIC_V1 = b"HAEIDX\x00\x01"
INDEX_MAGIC = b"HAEIDX\x00\x02"
MAX_DOMAIN = 1024
MAX_INDEX_SIGNATURE = 64 << 10
_IDX_ENTRY = struct.Struct("<BB32sIII")
_PACK_HEAD = struct.Struct("<32sQI")  # version 1
_PACK_ID_SIZE = struct.Struct("<32sQ")
_RECORD = struct.Struct("<32sIIII")  # id, pack number, offset, length, raw|flags
RECORD_SIZE = _RECORD.size  # 48
_FLAG_ZSTD = 1 << 31
_FLAG_TREE = 1 << 30
_RAW_MASK = (1 << 30) - 1


@dataclass(frozen=True, slots=True)
class BlobLocation:
    pack_id: str
    offset: int
    length: int
    raw_length: int
    blob_type: int
    compression: int


class BlobIndex:
    """A compact, append-only map from 32-byte blob ids to their locations."""

    def __init__(self, capacity_hint: int = 0) -> None:
        self._records = bytearray()
        self._count = 0
        self._pack_ids: list[bytes] = []
        self._pack_numbers: dict[bytes, int] = {}
        self._pack_sizes: list[int] = []
        #: Per record: its trust domain's number in ``_domain_names``.
        self._domains = array("H")
        self._domain_names: list[str] = []
        self._domain_numbers: dict[str, int] = {}
        #: Further locations of a blob (other packs, or the same one vouched for by another domain):
        #: blob id -> record numbers. Records listed here are not in the hash table.
        self._extra: dict[bytes, list[int]] = {}
        self._n_extra = 0
        cap = 1024
        while cap * 3 < max(capacity_hint, 1) * 4:
            cap *= 2
        # (slots, mask) as one attribute: readers in other threads see both or neither change.
        self._table = (array("I", bytes(4 * cap)), cap - 1)

    def __len__(self) -> int:
        """Distinct blobs (records minus further copies)."""
        return self._count - self._n_extra

    def domain_number(self, domain: str) -> int:
        n = self._domain_numbers.get(domain)
        if n is None:
            n = self._domain_numbers[domain] = len(self._domain_names)
            self._domain_names.append(domain)
        return n

    def memory_bytes(self) -> int:
        return len(self._records) + len(self._domains) * 2 + len(self._table[0]) * 4 + len(self._pack_ids) * 100

    def _grow(self) -> None:
        cap = len(self._table[0]) * 2
        slots = array("I", bytes(4 * cap))
        mask = cap - 1
        rec = self._records
        extra = {i for records in self._extra.values() for i in records}
        for i in range(self._count):
            if i in extra:
                continue
            h = int.from_bytes(rec[i * RECORD_SIZE : i * RECORD_SIZE + 8], "little") & mask
            while slots[h]:
                h = (h + 1) & mask
            slots[h] = i + 1
        self._table = (slots, mask)

    def _find(self, blob_id: bytes) -> int:
        """Record number, or -1."""
        (slots, mask), rec = self._table, self._records
        h = int.from_bytes(blob_id[:8], "little") & mask
        while True:
            s = slots[h]
            if not s:
                return -1
            start = (s - 1) * RECORD_SIZE
            if rec[start : start + 32] == blob_id:
                return s - 1
            h = (h + 1) & mask

    def pack_number(self, pack_id: bytes, size: int = 0) -> int:
        n = self._pack_numbers.get(pack_id)
        if n is None:
            n = len(self._pack_ids)
            self._pack_ids.append(pack_id)
            self._pack_numbers[pack_id] = n
            self._pack_sizes.append(size)
        elif size:
            self._pack_sizes[n] = size
        return n

    def add(self, blob_id: bytes, pack_no: int, offset: int, length: int, raw_length: int,
            blob_type: int = BLOB_DATA, compression: int = 0, domain: str = "") -> bool:
        """Insert; False when the blob was already known (a new location is still kept as a further copy,
        unless the same location in the same domain is already recorded)."""
        if len(blob_id) != 32:
            raise ValueError("blob ids are 32 bytes")
        dom = self.domain_number(domain)
        flags = raw_length & _RAW_MASK
        if compression:
            flags |= _FLAG_ZSTD
        if blob_type == BLOB_TREE:
            flags |= _FLAG_TREE
        first = self._find(blob_id)
        if first >= 0:
            for i in (first, *self._extra.get(blob_id, ())):
                _b, p, o, _l, _f = _RECORD.unpack_from(self._records, i * RECORD_SIZE)
                if p == pack_no and o == offset and self._domains[i] == dom:
                    return False
            self._extra.setdefault(blob_id, []).append(self._count)
            self._records += _RECORD.pack(blob_id, pack_no, offset, length, flags)
            self._domains.append(dom)
            self._count += 1
            self._n_extra += 1
            return False
        if (self._count + 1) * 4 > len(self._table[0]) * 3:
            self._grow()
        self._records += _RECORD.pack(blob_id, pack_no, offset, length, flags)
        self._domains.append(dom)
        slots, mask = self._table
        h = int.from_bytes(blob_id[:8], "little") & mask
        while slots[h]:
            h = (h + 1) & mask
        self._count += 1
        slots[h] = self._count
        return True

    def add_pack(self, pack_id: bytes, pack_size: int, entries: Iterable[PackEntry], domain: str = "") -> int:
        n = self.pack_number(pack_id, pack_size)
        added = 0
        for e in entries:
            added += self.add(e.blob_id, n, e.offset, e.length, e.raw_length, e.blob_type, e.compression, domain)
        return added

    def has_in(self, blob_id: bytes, domains: frozenset[int], excluded_packs: frozenset[int] = frozenset()) -> bool:
        """Is the blob listed by an index object of one of these domains (numbers from ``domain_number``),
        in a pack other than ``excluded_packs`` (numbers from ``pack_numbers_of``)?"""
        i = self._find(blob_id)
        if i < 0:
            return False
        if self._domains[i] in domains and (not excluded_packs or self._pack_at(i) not in excluded_packs):
            return True
        extra = self._extra.get(blob_id)
        return extra is not None and any(self._domains[j] in domains and
                                         (not excluded_packs or self._pack_at(j) not in excluded_packs)
                                         for j in extra)

    def _pack_at(self, record: int) -> int:
        return _RECORD.unpack_from(self._records, record * RECORD_SIZE)[1]

    def pack_numbers_of(self, pack_ids: Iterable[str]) -> frozenset[int]:
        """The numbers of those of ``pack_ids`` (hex) this index knows."""
        nums = (self._pack_numbers.get(bytes.fromhex(p)) for p in pack_ids)
        return frozenset(n for n in nums if n is not None)

    def locations(self, blob_id: bytes) -> list[tuple[BlobLocation, str]]:
        """Every known location of a blob with the domain that vouches for it, the primary one first."""
        i = self._find(blob_id)
        if i < 0:
            return []
        return [(self.entry_at(j)[1], self._domain_names[self._domains[j]])
                for j in (i, *self._extra.get(blob_id, ()))]

    def domain_at(self, record: int) -> str:
        return self._domain_names[self._domains[record]]

    def __contains__(self, blob_id: bytes) -> bool:
        return self._find(blob_id) >= 0

    def lookup(self, blob_id: bytes) -> BlobLocation | None:
        i = self._find(blob_id)
        if i < 0:
            return None
        _bid, pack_no, offset, length, flags = _RECORD.unpack_from(self._records, i * RECORD_SIZE)
        return BlobLocation(self._pack_ids[pack_no].hex(), offset, length, flags & _RAW_MASK,
                            BLOB_TREE if flags & _FLAG_TREE else BLOB_DATA, 1 if flags & _FLAG_ZSTD else 0)

    def pack_ids(self) -> list[str]:
        return [p.hex() for p in self._pack_ids]

    def pack_size(self, pack_id: str) -> int:
        return self._pack_sizes[self._pack_numbers[bytes.fromhex(pack_id)]]

    def has_pack(self, pack_id: str) -> bool:
        return bytes.fromhex(pack_id) in self._pack_numbers

    def iter_entries(self) -> Iterator[tuple[bytes, BlobLocation]]:
        for i in range(self._count):
            yield self.entry_at(i)

    def entry_at(self, record: int) -> tuple[bytes, BlobLocation]:
        """The blob stored as record number ``record`` (0 <= record < len(self))."""
        bid, pack_no, offset, length, flags = _RECORD.unpack_from(self._records, record * RECORD_SIZE)
        return bid, BlobLocation(self._pack_ids[pack_no].hex(), offset, length, flags & _RAW_MASK,
                                 BLOB_TREE if flags & _FLAG_TREE else BLOB_DATA, 1 if flags & _FLAG_ZSTD else 0)

    def records_by_pack(self) -> dict[str, array]:
        """Each pack's record numbers, 4 bytes per blob: a plan over every blob that holds
        no object per blob (``entry_at`` turns a number back into its location)."""
        groups: dict[int, array] = {}
        pack_numbers = memoryview(self._records).cast("I")[8::RECORD_SIZE // 4]  # after the 32-byte id
        for i, pack_no in enumerate(pack_numbers[: self._count]):
            group = groups.get(pack_no)
            if group is None:
                group = groups[pack_no] = array("I")
            group.append(i)
        return {self._pack_ids[n].hex(): g for n, g in groups.items()}


@dataclass
class IndexPack:
    pack_id: str
    size: int
    entries: list[PackEntry]
    #: Trust domain the writer of the index object attributes the pack to ("" = its own).
    domain: str = ""


@dataclass
class IndexObject:
    """One decoded index object: its packs, what it supersedes, and who signed it."""

    packs: list[IndexPack]
    superseded: list[str]
    version: int
    signer: str = ""
    signature: bytes = b""
    #: The bytes the signature covers (version 2), empty for version 1.
    signed: bytes = b""


def encode_index_body(packs: list[IndexPack], superseded: Iterable[str] = ()) -> bytes:
    """Version 2 up to the signer trailer: what the signature covers."""
    sup = [bytes.fromhex(s) for s in superseded]
    parts = [INDEX_MAGIC, struct.pack("<I", len(sup)), *sup, struct.pack("<I", len(packs))]
    for p in packs:
        domain = p.domain.encode()
        if len(domain) > MAX_DOMAIN:
            raise ValueError("index pack domain is too long")
        parts += [_PACK_ID_SIZE.pack(bytes.fromhex(p.pack_id), p.size), struct.pack("<H", len(domain)), domain,
                  struct.pack("<I", len(p.entries))]
        parts += [_IDX_ENTRY.pack(e.blob_type, e.compression, e.blob_id, e.offset, e.length, e.raw_length)
                  for e in p.entries]
    return b"".join(parts)


def split_index(packs: list[IndexPack], part_bytes: int) -> list[list[IndexPack]]:
    """Packs grouped so that each group's index object stays under ``part_bytes`` (at least one group)."""
    groups: list[list[IndexPack]] = [[]]
    size = 0
    for p in packs:
        need = _PACK_ID_SIZE.size + 2 + len(p.domain.encode()) + 4 + len(p.entries) * _IDX_ENTRY.size
        if groups[-1] and size + need > part_bytes:
            groups.append([])
            size = 0
        groups[-1].append(p)
        size += need
    return groups


def encode_index(packs: list[IndexPack], superseded: Iterable[str] = (), signer: str = "",
                 sign: Callable[[bytes], bytes] | None = None) -> bytes:
    """A version 2 index object; signed when ``sign`` (body -> binary detached signature) is given."""
    body = encode_index_body(packs, superseded)
    fpr = signer.encode("ascii") if sign is not None else b""
    signature = sign(body) if sign is not None else b""
    return body + bytes([len(fpr)]) + fpr + struct.pack("<I", len(signature)) + signature


def decode_index(data: bytes) -> tuple[list[IndexPack], list[str]]:
    """Parse an index object literal (packs, superseded ids); hostile-input safe."""
    obj = decode_index_object(data)
    return obj.packs, obj.superseded


def decode_index_object(data: bytes) -> IndexObject:
    """Parse an index object literal of version 1 or 2; hostile-input safe."""
    try:
        if data[:8] == INDEX_MAGIC:
            version = 2
        elif data[:8] == INDEX_MAGIC_V1:
            version = 1
        else:
            raise FormatError("index object has a wrong magic")
        pos = 8
        (nsup,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if nsup * 32 + pos > len(data):
            raise FormatError("index object is truncated")
        superseded = [data[pos + 32 * i : pos + 32 * i + 32].hex() for i in range(nsup)]
        pos += 32 * nsup
        (npacks,) = struct.unpack_from("<I", data, pos)
        pos += 4
        packs = []
        for _ in range(npacks):
            domain = ""
            if version == 1:
                pid, size, n = _PACK_HEAD.unpack_from(data, pos)
                pos += _PACK_HEAD.size
            else:
                pid, size = _PACK_ID_SIZE.unpack_from(data, pos)
                pos += _PACK_ID_SIZE.size
                (dlen,) = struct.unpack_from("<H", data, pos)
                pos += 2
                if dlen > MAX_DOMAIN or pos + dlen > len(data):
                    raise FormatError("index object has an invalid pack domain")
                try:
                    domain = data[pos : pos + dlen].decode()
                except UnicodeDecodeError:
                    raise FormatError("index object has an invalid pack domain") from None
                pos += dlen
                (n,) = struct.unpack_from("<I", data, pos)
                pos += 4
            if n > MAX_PACK_ENTRIES or pos + n * _IDX_ENTRY.size > len(data):
                raise FormatError("index object is truncated")
            entries = []
            for _ in range(n):
                t, c, bid, off, length, raw = _IDX_ENTRY.unpack_from(data, pos)
                pos += _IDX_ENTRY.size
                if t not in (BLOB_DATA, BLOB_TREE) or c > 1 or raw > MAX_BLOB_RAW or off + length > size:
                    raise FormatError("index object has an invalid entry")
                entries.append(PackEntry(t, c, bid, off, length, raw))
            packs.append(IndexPack(pid.hex(), size, entries, domain))
        signer, signature, signed = "", b"", b""
        if version == 2:
            body_end = pos
            flen = data[pos]
            pos += 1
            if pos + flen > len(data):
                raise FormatError("index object is truncated")
            try:
                signer = data[pos : pos + flen].decode("ascii").upper()
            except UnicodeDecodeError:
                raise FormatError("index object has an invalid signer") from None
            pos += flen
            (slen,) = struct.unpack_from("<I", data, pos)
            pos += 4
            if slen > MAX_INDEX_SIGNATURE or pos + slen > len(data):
                raise FormatError("index object has an invalid signature length")
            signature = bytes(data[pos : pos + slen])
            pos += slen
            signed = bytes(data[:body_end]) if signature else b""
        if pos != len(data):
            raise FormatError("index object has trailing bytes")
        return IndexObject(packs, superseded, version, signer, signature, signed)
    except (struct.error, IndexError) as e:
        raise FormatError("index object is truncated") from e
