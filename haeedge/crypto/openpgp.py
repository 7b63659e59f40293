"""OpenPGP message writer and reader (RFC 4880 / RFC 9580), the parts haeedge uses.

Writes: SKESK v4 (salted or iterated+salted S2K, SHA-256, AES-256) or any
pre-built ESK packets, followed by SEIPD v1 (AES-256 CFB with MDC) holding one
binary literal data packet. Every object haeedge stores is such a message, so
``gpg --decrypt`` opens any of them.

Reads: the same, plus what other implementations write for us to accept:
old- and new-format headers, partial body lengths, compressed data packets
(ZIP, ZLIB, BZip2), marker packets, PKESK packets (handed to a caller-supplied
session-key decryptor) and signatures around the literal (skipped).

Input is hostile: every length is checked against what is left, decompression
is bounded, nesting is bounded, and every failure is an ``OpenPGPError``.
"""

from __future__ import annotations

import bz2
import hashlib
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from haeedge.errors import OpenPGPError

log = logging.getLogger("haeedge.openpgp")

TAG_PKESK = 1
TAG_SIGNATURE = 2
TAG_SKESK = 3
TAG_ONE_PASS_SIG = 4
TAG_COMPRESSED = 8
TAG_SED = 9
TAG_MARKER = 10
TAG_LITERAL = 11
TAG_SEIPD = 18
TAG_MDC = 19
TAG_PADDING = 21

SYM_AES128 = 7
SYM_AES192 = 8
SYM_AES256 = 9
SYM_KEY_SIZES = {SYM_AES128: 16, SYM_AES192: 24, SYM_AES256: 32}

HASH_SHA1 = 2
HASH_SHA256 = 8
HASH_SHA384 = 9
HASH_SHA512 = 10
HASH_SHA224 = 11
HASH_NAMES = {
    HASH_SHA1: "sha1",
    HASH_SHA256: "sha256",
    HASH_SHA384: "sha384",
    HASH_SHA512: "sha512",
    HASH_SHA224: "sha224",
}

S2K_SIMPLE = 0
S2K_SALTED = 1
S2K_ITERATED = 3

#: Largest iteration count OpenPGP can express (coded byte 0xFF): 65,011,712 bytes hashed.
S2K_MAX_COUNT_BYTE = 0xFF

#: Upper bound on any message we read or any decompressed literal (hostile input).
DEFAULT_MAX_PLAINTEXT = 1 << 30
MAX_NESTING = 4
#: Each SKESK may cost an iterated S2K (up to 65 MB hashed), each PKESK a public-key
#: operation: bound them so a hostile message cannot buy unbounded work.
MAX_SKESK = 16
MAX_ESK = 256
#: Iterated-S2K work (see ``s2k_cost``) one message may cost per passphrase beyond its cheapest
#: SKESK: one derivation at the largest count, what haeedge writes for a person's slot.
S2K_MESSAGE_WORK = (16 + 15) << (15 + 6)
#: Partial body chunks shorter than this are allowed only ``MAX_SMALL_PARTIAL_CHUNKS`` times per
#: packet: RFC 4880 4.2.2.4 asks for 512 bytes at least in the first chunk, and GnuPG and Sequoia
#: write chunks of 8 KiB and more. One-byte chunks would cost a loop step (and formerly an object)
#: per byte of a hostile message.
MIN_PARTIAL_CHUNK = 512
MAX_SMALL_PARTIAL_CHUNKS = 64


def s2k_count(coded: int) -> int:
    return (16 + (coded & 15)) << ((coded >> 4) + 6)


def s2k_derive(passphrase: bytes, spec: S2K, key_size: int) -> bytes:
    """Derive a symmetric key from a passphrase per RFC 4880 3.7.1."""
    name = HASH_NAMES.get(spec.hash_algo)
    if name is None:
        raise OpenPGPError(f"unsupported S2K hash algorithm {spec.hash_algo}")
    if spec.type == S2K_SALTED and spec.hash_algo == HASH_SHA256 and key_size <= 32:
        # What every blob haeedge writes uses: one SHA-256, no loop (a blob is opened per read).
        return hashlib.sha256(spec.salt + passphrase).digest()[:key_size]
    out = b""
    preload = 0
    while len(out) < key_size:
        h = hashlib.new(name)
        h.update(b"\0" * preload)
        if spec.type == S2K_SIMPLE:
            h.update(passphrase)
        elif spec.type == S2K_SALTED:
            h.update(spec.salt + passphrase)
        elif spec.type == S2K_ITERATED:
            unit = spec.salt + passphrase
            total = max(s2k_count(spec.count_byte), len(unit))
            # Hash a large repeated block many times: the bytes stay in C.
            reps = max(1, (1 << 20) // len(unit))
            block = unit * reps
            full, rest = divmod(total, len(block))
            for _ in range(full):
                h.update(block)
            h.update((unit * (rest // len(unit) + 1))[:rest])
        else:
            raise OpenPGPError(f"unsupported S2K type {spec.type}")
        out += h.digest()
        preload += 1
    return out[:key_size]


class S2K(NamedTuple):
    """A string-to-key specifier. A named tuple, not a dataclass: one is parsed per message read."""

    type: int
    hash_algo: int = HASH_SHA256
    salt: bytes = b""
    count_byte: int = 0

    def encode(self) -> bytes:
        if self.type == S2K_SIMPLE:
            return bytes([self.type, self.hash_algo])
        if self.type == S2K_SALTED:
            return bytes([self.type, self.hash_algo]) + self.salt
        return bytes([self.type, self.hash_algo]) + self.salt + bytes([self.count_byte])


# --------------------------------------------------------------------------- framing


def packet_header(tag: int, length: int) -> bytes:
    """New-format header with a definite length."""
    if length < 192:
        return bytes([0xC0 | tag, length])
    if length < 8384:
        length -= 192
        return bytes([0xC0 | tag, (length >> 8) + 192, length & 0xFF])
    if length > 0xFFFFFFFF:
        raise OpenPGPError("packet too large for a definite length")
    return bytes([0xC0 | tag, 0xFF]) + struct.pack(">I", length)


@dataclass
class Packet:
    tag: int
    body: bytes | bytearray | memoryview


def iter_packets(data: bytes | memoryview, limit: int = DEFAULT_MAX_PLAINTEXT) -> Iterable[Packet]:
    """Split a byte string into packets; partial lengths are joined. Hostile input safe.

    A packet in partial body lengths is measured in a first pass over its
    chunk headers (integers only, no per-chunk objects) and copied into one
    buffer of its exact size in a second: cost and memory are linear in its
    length. Chunks below ``MIN_PARTIAL_CHUNK`` bytes are what no writer emits
    (the RFC asks for 512 at least for the first one; GnuPG and Sequoia write
    far larger ones): past ``MAX_SMALL_PARTIAL_CHUNKS`` of them the message is
    refused, so one-byte chunks cannot turn a file into millions of steps.
    """
    mv = memoryview(data)
    pos = 0
    n = len(mv)
    while pos < n:
        first = mv[pos]
        pos += 1
        if not first & 0x80:
            raise OpenPGPError("not an OpenPGP packet (bit 7 of the header is clear)")
        body: bytes | bytearray | memoryview
        if first & 0x40:  # new format
            tag = first & 0x3F
            start, pos, total, chunks = _scan_new_format_body(mv, pos, limit)
            if chunks == 1:
                body = mv[pos - total : pos]
            else:
                body = _join_partial_body(mv, start, total)
        else:  # old format
            tag = (first >> 2) & 0x0F
            ltype = first & 3
            if ltype == 3:  # indeterminate: to the end
                length = n - pos
            else:
                size = 1 << ltype
                if pos + size > n:
                    raise OpenPGPError("truncated packet header")
                length = int.from_bytes(mv[pos : pos + size], "big")
                pos += size
            if pos + length > n:
                raise OpenPGPError("truncated packet body")
            if length > limit:
                raise OpenPGPError("packet larger than the allowed maximum")
            body = mv[pos : pos + length]
            pos += length
        yield Packet(tag, body)


def _new_format_length(mv: memoryview, pos: int) -> tuple[int, bool, int]:
    """(length, partial, position after the length field) of one new-format length field."""
    n = len(mv)
    if pos >= n:
        raise OpenPGPError("truncated packet header")
    l1 = mv[pos]
    pos += 1
    if l1 < 192:
        return l1, False, pos
    if l1 < 224:
        if pos >= n:
            raise OpenPGPError("truncated packet header")
        return ((l1 - 192) << 8) + mv[pos] + 192, False, pos + 1
    if l1 == 255:
        if pos + 4 > n:
            raise OpenPGPError("truncated packet header")
        return struct.unpack_from(">I", mv, pos)[0], False, pos + 4
    return 1 << (l1 & 0x1F), True, pos


def _scan_new_format_body(mv: memoryview, pos: int, limit: int) -> tuple[int, int, int, int]:
    """Walk a new-format body's length fields: (start, end, body length, number of chunks)."""
    start = pos
    n = len(mv)
    total = chunks = small = 0
    while True:
        length, partial, pos = _new_format_length(mv, pos)
        if pos + length > n:
            raise OpenPGPError("truncated packet body")
        total += length
        chunks += 1
        if total > limit:
            raise OpenPGPError("packet larger than the allowed maximum")
        pos += length
        if not partial:
            return start, pos, total, chunks
        if length < MIN_PARTIAL_CHUNK:
            small += 1
            if small > MAX_SMALL_PARTIAL_CHUNKS:
                raise OpenPGPError(f"more than {MAX_SMALL_PARTIAL_CHUNKS} partial body chunks shorter than "
                                   f"{MIN_PARTIAL_CHUNK} bytes (no OpenPGP writer emits them; refusing the cost)")


def _join_partial_body(mv: memoryview, pos: int, total: int) -> bytearray:
    """Copy the chunks of a body already checked by ``_scan_new_format_body`` into one buffer."""
    out = bytearray(total)
    filled = 0
    while filled < total:
        length, partial, pos = _new_format_length(mv, pos)
        out[filled : filled + length] = mv[pos : pos + length]
        filled += length
        pos += length
        if not partial:
            break
    return out


# --------------------------------------------------------------------------- writing


def skesk_packet(s2k: S2K, sym_algo: int = SYM_AES256) -> bytes:
    """SKESK v4 without an encrypted session key: the S2K output is the session key."""
    body = bytes([4, sym_algo]) + s2k.encode()
    return packet_header(TAG_SKESK, len(body)) + body


def literal_header(data_len: int) -> bytes:
    """Header + fixed fields of a binary literal packet, no file name, date 0."""
    fields = b"b\x00\x00\x00\x00\x00"
    return packet_header(TAG_LITERAL, len(fields) + data_len) + fields


_MDC_HEADER = b"\xd3\x14"
#: OpenPGP CFB starts from a zero IV (the random prefix does an IV's work); the mode object is immutable.
_CFB_ZERO_IV = CFB(b"\0" * 16)
#: Blobs up to this size are encrypted in one call (prefix, literal and MDC joined: fewer calls
#: into the cipher); larger ones are encrypted where they lie, without a copy.
_JOIN_BELOW = 64 << 10


def seipd_encrypt(session_key: bytes, pieces: Sequence[bytes | memoryview]) -> list[bytes]:
    """SEIPD v1 over the concatenated inner packet bytes; returns the output pieces."""
    inner_len = sum(len(p) for p in pieces)
    prefix = os.urandom(16)
    prefix += prefix[-2:]
    sha = hashlib.sha1(prefix)
    enc = Cipher(algorithms.AES(session_key), _CFB_ZERO_IV).encryptor()
    out = [packet_header(TAG_SEIPD, 1 + 18 + inner_len + 22), b"\x01", enc.update(prefix)]
    for p in pieces:
        sha.update(p)
        out.append(enc.update(p))
    sha.update(_MDC_HEADER)
    out.append(enc.update(_MDC_HEADER + sha.digest()))
    out.append(enc.finalize())
    return out


def encrypt_literal(
    data: bytes | memoryview,
    session_key: bytes,
    esk_packets: bytes,
) -> bytes:
    """A complete message: ESK packet(s) + SEIPD(literal(data)).

    The same bytes ``seipd_encrypt`` gives for ``[literal_header, data]``, built with
    one copy of the blob (the final join) and, for small blobs, one cipher call.
    """
    n = len(data)
    prefix = os.urandom(16)
    head = prefix + prefix[-2:] + literal_header(n)
    sha = hashlib.sha1(head)
    sha.update(data)
    sha.update(_MDC_HEADER)
    mdc = _MDC_HEADER + sha.digest()
    enc = Cipher(algorithms.AES(session_key), _CFB_ZERO_IV).encryptor()
    seipd = packet_header(TAG_SEIPD, 1 + len(head) + n + 22) + b"\x01"
    if n < _JOIN_BELOW:
        return b"".join((esk_packets, seipd, enc.update(b"".join((head, data, mdc))), enc.finalize()))
    return b"".join((esk_packets, seipd, enc.update(head), enc.update(data), enc.update(mdc), enc.finalize()))


#: The SKESK v4 packet of a salted SHA-256 S2K for AES-256, up to its 8-byte salt (what
#: ``skesk_packet(S2K(S2K_SALTED, HASH_SHA256, salt))`` writes; a test holds them equal).
_SALTED_SKESK_HEAD = packet_header(TAG_SKESK, 12) + bytes([4, SYM_AES256, S2K_SALTED, HASH_SHA256])


class PassphraseSealer:
    """Seals bytes as messages any OpenPGP tool opens with ``passphrase``.

    Each message gets a fresh 8-byte salt, hence its own AES key.
    ``count_byte=None`` selects salted S2K (cheap: for high-entropy machine
    passphrases); otherwise iterated+salted with that coded count (for people).
    """

    def __init__(self, passphrase: bytes, count_byte: int | None = None):
        self.passphrase = passphrase
        self.count_byte = count_byte

    def seal(self, data: bytes | memoryview) -> bytes:
        salt = os.urandom(8)
        if self.count_byte is None:
            key = hashlib.sha256(salt + self.passphrase).digest()
            return encrypt_literal(data, key, _SALTED_SKESK_HEAD + salt)
        spec = S2K(S2K_ITERATED, HASH_SHA256, salt, self.count_byte)
        return encrypt_literal(data, s2k_derive(self.passphrase, spec, 32), skesk_packet(spec))


# --------------------------------------------------------------------------- reading


#: Given a PKESK body, return (sym_algo, session_key) or None when it is not for us.
PKESKDecryptor = Callable[[bytes], "tuple[int, bytes] | None"]


class S2KBudget:
    """Iterated-S2K work (bytes hashed, see ``s2k_cost``) a reader may still spend.

    Shared by the messages of one task (opening a repository tries every key
    slot): a storage holder who adds slots with costly S2K specifiers buys a
    bounded delay, not an unbounded one. ``skipped`` counts the session key
    packets left untried because the budget was spent.
    """

    def __init__(self, work: int):
        self.remaining = work
        self.skipped = 0

    def take(self, cost: int) -> bool:
        if cost > self.remaining:
            self.skipped += 1
            return False
        self.remaining -= cost
        return True


@dataclass
class Keyring:
    """What a reader may use to open a message."""

    passphrases: Sequence[bytes] = ()
    pkesk_decryptors: Sequence[PKESKDecryptor] = ()
    #: Cache S2K results for iterated S2K (costly) by (spec, passphrase index).
    cache_iterated: bool = True
    #: Shared across messages when set (see ``S2KBudget``); each message is bounded anyway.
    s2k_budget: S2KBudget | None = None


def _parse_s2k(body: bytes | memoryview, pos: int) -> tuple[S2K, int]:
    if pos + 2 > len(body):
        raise OpenPGPError("truncated S2K specifier")
    t, h = body[pos], body[pos + 1]
    pos += 2
    if t == S2K_SIMPLE:
        return S2K(t, h), pos
    if t == S2K_SALTED:
        if pos + 8 > len(body):
            raise OpenPGPError("truncated S2K salt")
        return S2K(t, h, bytes(body[pos : pos + 8])), pos + 8
    if t == S2K_ITERATED:
        if pos + 9 > len(body):
            raise OpenPGPError("truncated S2K salt")
        return S2K(t, h, bytes(body[pos : pos + 8]), body[pos + 8]), pos + 9
    raise OpenPGPError(f"unsupported S2K type {t}")


@dataclass(frozen=True)
class _SKESK:
    cost: int
    algo: int
    spec: S2K
    esk: bytes


def _parse_skesk(body: bytes | memoryview) -> _SKESK:
    if len(body) < 2 or body[0] != 4:
        raise OpenPGPError("unsupported SKESK version" if len(body) >= 1 else "truncated SKESK")
    algo = body[1]
    if algo not in SYM_KEY_SIZES:
        raise OpenPGPError(f"unsupported symmetric algorithm {algo}")
    spec, pos = _parse_s2k(body, 2)
    return _SKESK(s2k_cost(spec, SYM_KEY_SIZES[algo]), algo, spec, bytes(body[pos:]))


def s2k_cost(spec: S2K, key_size: int = 32) -> int:
    """Work of one derivation in SHA-256-byte units: bytes hashed x passes x hash slowness.

    Salted and simple S2K hash a few dozen bytes: cost 0. SHA-384/512 count
    double (no hardware support on common CPUs: measured at twice SHA-256).
    """
    if spec.type != S2K_ITERATED:
        return 0
    digest = hashlib.new(HASH_NAMES.get(spec.hash_algo, "sha256")).digest_size
    passes = -(-key_size // digest)
    slowness = 2 if spec.hash_algo in (HASH_SHA384, HASH_SHA512) else 1
    return s2k_count(spec.count_byte) * passes * slowness


def _skesk_session_key(skesk: _SKESK, passphrase: bytes) -> tuple[int, bytes] | None:
    key = s2k_derive(passphrase, skesk.spec, SYM_KEY_SIZES[skesk.algo])
    if not skesk.esk:
        return skesk.algo, key
    dec = Cipher(algorithms.AES(key), CFB(b"\0" * 16)).decryptor()
    plain = dec.update(skesk.esk) + dec.finalize()
    if len(plain) < 2 or plain[0] not in SYM_KEY_SIZES or len(plain) - 1 != SYM_KEY_SIZES[plain[0]]:
        return None
    return plain[0], plain[1:]


def seipd_decrypt(body: bytes | memoryview, algo: int, key: bytes) -> memoryview | None:
    """Decrypt a SEIPD v1 body; None when the key is wrong (quick check and MDC).

    A view into the decrypted buffer, not a copy: blobs are megabytes, and the
    literal packet is copied out of it once anyway. One cipher context: the
    18-byte prefix is decrypted first (the quick check, so a wrong key costs
    nothing whatever the body's size), then the rest continues the same CFB stream.
    """
    if len(body) < 1 or body[0] != 1:
        raise OpenPGPError("unsupported SEIPD version (only v1 is accepted)")
    if algo not in SYM_KEY_SIZES or len(key) != SYM_KEY_SIZES[algo]:
        return None
    if len(body) < 1 + 18 + 22:
        raise OpenPGPError("truncated encrypted data packet")
    mv = memoryview(body)
    dec = Cipher(algorithms.AES(key), _CFB_ZERO_IV).decryptor()
    head = dec.update(mv[1:19])
    if head[14:16] != head[16:18]:
        return None
    rest = dec.update(mv[19:]) + dec.finalize()
    if rest[-22:-20] != _MDC_HEADER:
        return None
    plain = memoryview(rest)
    sha = hashlib.sha1(head)
    sha.update(plain[:-20])
    if sha.digest() != rest[-20:]:
        return None
    return plain[:-22]


def _decompress(algo: int, data: bytes | memoryview, limit: int) -> bytes:
    if algo == 0:
        return bytes(data)
    try:
        if algo in (1, 2):
            d = zlib.decompressobj(-15 if algo == 1 else 15)
            out = d.decompress(data, limit + 1)
        elif algo == 3:
            d = bz2.BZ2Decompressor()
            out = d.decompress(data, max_length=limit + 1)
        else:
            raise OpenPGPError(f"unsupported compression algorithm {algo}")
    except (zlib.error, OSError, EOFError, ValueError) as e:
        raise OpenPGPError(f"corrupt compressed data packet: {e}") from None
    if len(out) > limit:
        raise OpenPGPError("compressed packet expands beyond the allowed maximum")
    return out


def _literal_from_packets(data: bytes | memoryview, limit: int, depth: int) -> bytes:
    if depth > MAX_NESTING:
        raise OpenPGPError("packets nested too deeply")
    literal: bytes | None = None
    for pkt in iter_packets(data, limit):
        if pkt.tag == TAG_LITERAL:
            if literal is not None:
                raise OpenPGPError("more than one literal data packet")
            b = pkt.body
            if len(b) < 6:
                raise OpenPGPError("truncated literal data packet")
            nlen = b[1]
            start = 2 + nlen + 4
            if start > len(b):
                raise OpenPGPError("truncated literal data packet")
            literal = bytes(b[start:])
        elif pkt.tag == TAG_COMPRESSED:
            if len(pkt.body) < 1:
                raise OpenPGPError("truncated compressed data packet")
            inner = _decompress(pkt.body[0], memoryview(pkt.body)[1:], limit)
            if literal is not None:
                raise OpenPGPError("more than one literal data packet")
            literal = _literal_from_packets(inner, limit, depth + 1)
        elif pkt.tag in (TAG_ONE_PASS_SIG, TAG_SIGNATURE, TAG_MARKER, TAG_PADDING):
            continue
        else:
            raise OpenPGPError(f"unexpected packet type {pkt.tag} inside encrypted data")
    if literal is None:
        raise OpenPGPError("no literal data packet in message")
    return literal


def _literal_view(data: bytes | memoryview, limit: int, depth: int) -> memoryview:
    """The literal data of decrypted packets, as a view when they are one literal packet with a
    definite length (what every OpenPGP writer haeedge meets emits for blobs); else a copy as
    ``_literal_from_packets`` finds it, with all its checks."""
    mv = memoryview(data)
    if len(mv) >= 8 and mv[0] == 0xC0 | TAG_LITERAL:
        length, partial, pos = _new_format_length(mv, 1)
        if not partial and pos + length == len(mv) and 6 <= length <= limit:
            start = pos + 2 + mv[pos + 1] + 4
            if start <= len(mv):
                return mv[start:]
    return memoryview(_literal_from_packets(mv, limit, depth))


def _salted_skesk_seipd(data: memoryview, limit: int) -> tuple[bytes, memoryview] | None:
    """(salt, SEIPD body) when ``data`` is exactly what haeedge writes for a blob: one SKESK v4
    (AES-256, salted SHA-256 S2K, no encrypted session key) and one SEIPD packet with a
    definite length that ends the message; None for any other shape (read the general way)."""
    if len(data) < 14 + 2 + 41 or len(data) > limit or bytes(data[:6]) != _SALTED_SKESK_HEAD:
        return None
    if data[14] != 0xC0 | TAG_SEIPD:
        return None
    length, partial, pos = _new_format_length(data, 15)
    if partial or pos + length != len(data):
        return None
    return bytes(data[6:14]), data[pos:]


def _open_salted(data: memoryview, keyring: Keyring, limit: int) -> memoryview | None:
    """The literal of a message in the shape haeedge writes for every blob (SKESK with salted
    S2K + SEIPD), recognised without the general packet walk (for small files most of the
    cost of reading one); None for any other shape, or when no passphrase opens it (the
    general way then gives the precise error). Every check is the same: quick check, MDC,
    literal packet bounds."""
    found = _salted_skesk_seipd(data, limit)
    if found is None:
        return None
    salt, body = found
    for pw in keyring.passphrases:
        plain = seipd_decrypt(body, SYM_AES256, hashlib.sha256(salt + pw).digest())
        if plain is not None:
            return _literal_view(plain, limit, 0)
    return None


def decrypt_literal_view(
    data: bytes | memoryview,
    keyring: Keyring,
    *,
    limit: int = DEFAULT_MAX_PLAINTEXT,
) -> memoryview:
    """``decrypt_message`` as a view of the decrypted buffer, without copying the literal out:
    for blobs, which are decompressed or hashed straight from it."""
    mv = memoryview(data)
    got = _open_salted(mv, keyring, limit)
    return got if got is not None else memoryview(_decrypt_general(mv, keyring, limit))


def decrypt_message(
    data: bytes | memoryview,
    keyring: Keyring,
    *,
    limit: int = DEFAULT_MAX_PLAINTEXT,
) -> bytes:
    """Open a complete encrypted message and return the literal data.

    Raises ``OpenPGPError`` on malformed input, and ``NoMatchingKey`` when no
    ESK packet could be opened with the keyring (the message is well-formed).
    """
    mv = memoryview(data)
    got = _open_salted(mv, keyring, limit)
    return bytes(got) if got is not None else _decrypt_general(mv, keyring, limit)


def _decrypt_general(data: bytes | memoryview, keyring: Keyring, limit: int) -> bytes:
    """Any message we accept: every packet walked, ESKs tried in order (see ``decrypt_message``)."""
    if len(data) > limit + (1 << 20):
        raise OpenPGPError("message larger than the allowed maximum")
    candidates: list[tuple[int, bytes]] = []
    skesks: list[_SKESK] = []
    saw_esk = False
    encrypted: Packet | None = None
    n_skesk = n_esk = 0
    for pkt in iter_packets(data, limit + (1 << 20)):
        if pkt.tag in (TAG_SKESK, TAG_PKESK):
            n_esk += 1
            n_skesk += pkt.tag == TAG_SKESK
            if n_skesk > MAX_SKESK or n_esk > MAX_ESK:
                raise OpenPGPError("too many session key packets in message")
        if pkt.tag == TAG_SKESK:
            saw_esk = True
            skesks.append(_parse_skesk(pkt.body))
        elif pkt.tag == TAG_PKESK:
            saw_esk = True
            for dec in keyring.pkesk_decryptors:
                try:
                    got = dec(bytes(pkt.body))
                except OpenPGPError:
                    got = None
                if got is not None:
                    candidates.append(got)
        elif pkt.tag == TAG_MARKER:
            continue
        elif pkt.tag == TAG_SEIPD:
            if encrypted is not None:
                raise OpenPGPError("more than one encrypted data packet")
            encrypted = pkt
        elif pkt.tag == TAG_SED:
            raise OpenPGPError("refusing encrypted data without integrity protection (no MDC)")
        else:
            raise OpenPGPError(f"unexpected packet type {pkt.tag} in encrypted message")
    if encrypted is None:
        raise OpenPGPError("no encrypted data packet in message")
    if not saw_esk:
        raise OpenPGPError("no session key packet in message")
    for algo, key in candidates:
        plain = seipd_decrypt(encrypted.body, algo, key)
        if plain is not None:
            return _literal_from_packets(plain, limit, 0)
    skipped = _try_skesks(encrypted, skesks, keyring, limit)
    if isinstance(skipped, bytes):
        return skipped
    if skipped:
        log.warning("left %d passphrase session key packet(s) untried: their S2K would cost more than "
                    "the allowed work (one derivation at the largest OpenPGP iteration count)", skipped)
        raise NoMatchingKey(f"no key in the keyring opens this message ({skipped} passphrase packet(s) with "
                            "too costly S2K parameters left untried)")
    raise NoMatchingKey("no key in the keyring opens this message (wrong passphrase or key, or the data was modified)")


def _try_skesks(encrypted: Packet, skesks: list[_SKESK], keyring: Keyring, limit: int) -> bytes | int:
    """The literal once a passphrase opens one SKESK, else how many SKESKs were skipped for cost.

    Cheapest first. Per passphrase the first SKESK is always tried (whatever
    legitimate writer made the message chose its cost); further ones only while
    their total stays within ``S2K_MESSAGE_WORK``. A shared ``keyring.s2k_budget``
    bounds the work over many messages.
    """
    skipped = 0
    order = sorted(skesks, key=lambda k: k.cost)
    for pw in keyring.passphrases:
        spent = 0
        for n, skesk in enumerate(order):
            if n > 0 and spent + skesk.cost > S2K_MESSAGE_WORK:
                skipped += 1
                continue
            if keyring.s2k_budget is not None and not keyring.s2k_budget.take(skesk.cost):
                skipped += 1
                continue
            spent += skesk.cost
            got = _skesk_session_key(skesk, pw)
            plain = seipd_decrypt(encrypted.body, *got) if got is not None else None
            if plain is not None:
                return _literal_from_packets(plain, limit, 0)
    return skipped


class NoMatchingKey(OpenPGPError):
    pass


def esk_summary(data: bytes | memoryview) -> list[tuple[int, bytes]]:
    """(tag, body) of the ESK packets that open a message; for diagnostics and key checks."""
    out = []
    for pkt in iter_packets(data):
        if pkt.tag in (TAG_SKESK, TAG_PKESK):
            out.append((pkt.tag, bytes(pkt.body)))
        elif pkt.tag == TAG_MARKER:
            continue
        else:
            break
    return out


def armor(data: bytes, kind: str = "MESSAGE") -> str:
    """ASCII armor (RFC 4880 section 6) for messages meant for people to copy."""
    import base64

    crc = _crc24(data)
    b64 = base64.b64encode(data).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    tail = base64.b64encode(crc.to_bytes(3, "big")).decode()
    return f"-----BEGIN PGP {kind}-----\n\n" + "\n".join(lines) + f"\n={tail}\n-----END PGP {kind}-----\n"


def dearmor(text: str | bytes) -> bytes:
    """Undo ASCII armor; binary input is returned unchanged."""
    import base64

    if isinstance(text, bytes):
        if not text.lstrip().startswith(b"-----BEGIN PGP"):
            return text
        text = text.decode("ascii", "replace")
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("-----BEGIN PGP"):
        raise OpenPGPError("not ASCII-armored OpenPGP data")
    body: list[str] = []
    i = 1
    while i < len(lines) and lines[i].strip():  # armor headers
        if ":" not in lines[i]:
            break
        i += 1
    for line in lines[i:]:
        s = line.strip()
        if not s:
            continue
        if s.startswith("-----END PGP"):
            break
        if s.startswith("=") and len(s) == 5:
            continue
        body.append(s)
    try:
        return base64.b64decode("".join(body), validate=True)
    except ValueError as e:
        raise OpenPGPError("bad base64 in ASCII armor") from e


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:  # armor is only for small key material, never for the data path
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF
