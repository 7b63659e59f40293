"""OpenPGP certificates, secret keys, PKESK packets and signatures.

Why this exists: a key slot may be wrapped to a user's existing OpenPGP
certificate (PKESK), a repository may be opened with a key from ``gpg
--export-secret-keys``, a write-only backup host encrypts to the owner's
public key without being able to read anything back, and each host signs its
snapshots so that ``gpg --verify`` can check them in a disaster.

Scope (RFC 4880, RFC 6637, RFC 9580), v4 keys only:

* public-key algorithms: RSA; ECDH over Curve25519 and NIST P-256/384/521;
  EdDSA (legacy, Ed25519); ECDSA over NIST curves; X25519 and Ed25519 (the
  RFC 9580 algorithms 25 and 27);
* certificates as ``gpg --export`` and ``sqop extract-cert`` write them, with
  their self-signatures verified (user ID certifications, direct-key
  signatures, subkey bindings with back-signatures, revocations);
* secret keys as ``gpg --export-secret-keys`` and ``sqop generate-key`` write
  them: unprotected, or protected with S2K usage 254 (SHA-1 check) or 255
  (two-octet checksum); GnuPG stubs (``gpg --export-secret-subkeys``) are
  recognised and skipped;
* PKESK v3 writing and reading, detached v4 signatures over binary data.

Everything read is hostile: every length is bounded, and every failure is an
``OpenPGPError`` (``WrongPassword`` for a passphrase that does not unlock a
key), never another exception.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers import algorithms as decrepit
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from haeedge.crypto.openpgp import (
    HASH_NAMES,
    HASH_SHA256,
    HASH_SHA384,
    HASH_SHA512,
    S2K,
    S2K_ITERATED,
    S2K_SALTED,
    S2K_SIMPLE,
    SYM_AES256,
    SYM_KEY_SIZES,
    TAG_MARKER,
    TAG_PADDING,
    TAG_SIGNATURE,
    armor,
    dearmor,
    iter_packets,
    packet_header,
    s2k_derive,
)
from haeedge.errors import OpenPGPError, WrongPassword

# --------------------------------------------------------------------------- constants

TAG_PKESK = 1
TAG_SECRET_KEY = 5
TAG_PUBLIC_KEY = 6
TAG_SECRET_SUBKEY = 7
TAG_TRUST = 12
TAG_USER_ID = 13
TAG_PUBLIC_SUBKEY = 14
TAG_USER_ATTRIBUTE = 17

ALGO_RSA = 1
ALGO_RSA_ENCRYPT = 2
ALGO_RSA_SIGN = 3
ALGO_ELGAMAL = 16
ALGO_DSA = 17
ALGO_ECDH = 18
ALGO_ECDSA = 19
ALGO_EDDSA = 22
ALGO_X25519 = 25
ALGO_X448 = 26
ALGO_ED25519 = 27
ALGO_ED448 = 28

ALGO_NAMES = {
    ALGO_RSA: "rsa",
    ALGO_RSA_ENCRYPT: "rsa (encrypt-only)",
    ALGO_RSA_SIGN: "rsa (sign-only)",
    ALGO_ELGAMAL: "elgamal",
    ALGO_DSA: "dsa",
    ALGO_ECDH: "ecdh",
    ALGO_ECDSA: "ecdsa",
    ALGO_EDDSA: "eddsa",
    ALGO_X25519: "x25519",
    ALGO_X448: "x448",
    ALGO_ED25519: "ed25519",
    ALGO_ED448: "ed448",
}

OID_CV25519 = bytes.fromhex("2B060104019755010501")
OID_ED25519 = bytes.fromhex("2B06010401DA470F01")
OID_P256 = bytes.fromhex("2A8648CE3D030107")
OID_P384 = bytes.fromhex("2B81040022")
OID_P521 = bytes.fromhex("2B81040023")
_NIST_CURVES: dict[bytes, tuple[type[ec.EllipticCurve], int, str]] = {
    OID_P256: (ec.SECP256R1, HASH_SHA256, "nistp256"),
    OID_P384: (ec.SECP384R1, HASH_SHA384, "nistp384"),
    OID_P521: (ec.SECP521R1, HASH_SHA512, "nistp521"),
}
_CURVE_NAMES = {OID_CV25519: "cv25519", OID_ED25519: "ed25519"} | {k: v[2] for k, v in _NIST_CURVES.items()}

FLAG_CERTIFY = 0x01
FLAG_SIGN = 0x02
FLAG_ENCRYPT_COMMS = 0x04
FLAG_ENCRYPT_STORAGE = 0x08
FLAG_ENCRYPT = FLAG_ENCRYPT_COMMS | FLAG_ENCRYPT_STORAGE
FLAG_AUTH = 0x20

SIG_BINARY = 0x00
SIG_CERT_GENERIC = 0x10
SIG_CERT_POSITIVE = 0x13
SIG_SUBKEY_BINDING = 0x18
SIG_PRIMARY_BINDING = 0x19
SIG_DIRECT_KEY = 0x1F
SIG_KEY_REVOCATION = 0x20
SIG_SUBKEY_REVOCATION = 0x28
SIG_CERT_REVOCATION = 0x30

SUB_CREATED = 2
SUB_SIG_EXPIRES = 3
SUB_KEY_EXPIRES = 9
SUB_PREF_SYM = 11
SUB_ISSUER = 16
SUB_PREF_HASH = 21
SUB_PREF_COMPRESSION = 22
SUB_PRIMARY_UID = 25
SUB_KEY_FLAGS = 27
SUB_FEATURES = 30
SUB_EMBEDDED = 32
SUB_ISSUER_FPR = 33
#: Subpacket types we understand; an unknown one marked critical voids a signature (RFC 4880 5.2.3.1).
_KNOWN_SUBPACKETS = frozenset(
    {2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 16, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 37, 39}
)

#: Bounds for hostile input.
MAX_KEY_BYTES = 16 << 20
MAX_SIGNATURE_BYTES = 1 << 20
MAX_MPI_BITS = 16384
MAX_SUBKEYS = 256
MAX_USER_IDS = 1024
MAX_USER_ID_BYTES = 4096
#: Self-signature candidates verified per component (bounds verification work).
MAX_SELF_SIGS = 64
MAX_SIGS_PER_DETACHED = 16
MAX_SIGS_PER_CERT = 20000
#: Each protected secret key costs an S2K (up to 65 MB hashed) to unlock.
MAX_PROTECTED_UNLOCKS = 32
MIN_RSA_ENCRYPT_BITS = 2048

_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    2: hashes.SHA1,
    8: hashes.SHA256,
    9: hashes.SHA384,
    10: hashes.SHA512,
    11: hashes.SHA224,
}
#: Data signatures: no SHA-1 (collisions are practical); self-signatures accept it for old keys.
_DATA_SIG_HASHES = frozenset({8, 9, 10, 11})

# Symmetric algorithms for secret-key protection: id -> (key size, block size, cipher class).
_SYM_CIPHERS: dict[int, tuple[int, int, type]] = {
    1: (16, 8, decrepit.IDEA),
    2: (24, 8, decrepit.TripleDES),
    3: (16, 8, decrepit.CAST5),
    4: (16, 8, decrepit.Blowfish),
    7: (16, 16, algorithms.AES),
    8: (24, 16, algorithms.AES),
    9: (32, 16, algorithms.AES),
    11: (16, 16, decrepit.Camellia),
    12: (24, 16, decrepit.Camellia),
    13: (32, 16, decrepit.Camellia),
}
#: Session key sizes a PKESK may carry (Twofish 10 included: recognised, not usable).
_SESSION_KEY_SIZES = {k: v[0] for k, v in _SYM_CIPHERS.items()} | {10: 32}

_ANONYMOUS_SENDER = b"Anonymous Sender    "
_ZERO_KEY_ID = b"\0" * 8

# --------------------------------------------------------------------------- low-level helpers


class _Reader:
    """Bounds-checked cursor over a packet body: every overrun is an OpenPGPError."""

    __slots__ = ("buf", "pos", "what")

    def __init__(self, buf: bytes | memoryview, what: str):
        self.buf = bytes(buf)
        self.pos = 0
        self.what = what

    def left(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise OpenPGPError(f"truncated {self.what}")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def mpi(self, exact: bool = False) -> bytes:
        """A multiprecision integer's bytes. With ``exact``, its bit count must be the value's
        (RFC 9580 3.2): that count is outside what a signature covers, so a value whose count
        was changed would otherwise still verify."""
        bits = self.u16()
        if bits > MAX_MPI_BITS:
            raise OpenPGPError(f"oversized number in {self.what}")
        value = self.take((bits + 7) // 8)
        if exact and bits and value[0].bit_length() != bits - 8 * (len(value) - 1):
            raise OpenPGPError(f"number with a wrong bit count in {self.what}")
        return value

    def rest(self) -> bytes:
        return self.take(self.left())

    def end(self) -> None:
        if self.left():
            raise OpenPGPError(f"trailing bytes in {self.what}")


def _mpi(value: bytes | int) -> bytes:
    """Encode a multiprecision integer (leading zero bits stripped, as RFC 4880 3.2 requires)."""
    if isinstance(value, bytes):
        value = int.from_bytes(value, "big")
    bits = value.bit_length()
    return bits.to_bytes(2, "big") + value.to_bytes((bits + 7) // 8, "big")


def _fixed(value: bytes, size: int, what: str) -> bytes:
    """An MPI that stands for a fixed-size string (EdDSA values, curve scalars): left-pad it."""
    if len(value) > size:
        raise OpenPGPError(f"{what} is too long")
    return value.rjust(size, b"\0")


def _checksum(data: bytes) -> bytes:
    return (sum(data) & 0xFFFF).to_bytes(2, "big")


def _packet(tag: int, body: bytes) -> bytes:
    return packet_header(tag, len(body)) + body


def _subpacket(typ: int, data: bytes) -> bytes:
    n = len(data) + 1
    if n < 192:
        head = bytes([n])
    elif n < 8384:
        n -= 192
        head = bytes([(n >> 8) + 192, n & 0xFF])
    else:
        head = b"\xff" + n.to_bytes(4, "big")
    return head + bytes([typ]) + data


def _now(now: int | None) -> int:
    return int(time.time()) if now is None else now


def _as_binary(data: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(data, str):
        return dearmor(data)
    return dearmor(bytes(data))


def _passphrase_bytes(passphrase: bytes | str | None) -> bytes | None:
    if passphrase is None or isinstance(passphrase, bytes):
        return passphrase
    return passphrase.encode("utf-8")


# --------------------------------------------------------------------------- keys


@dataclass(eq=False)
class Key:
    """One component key (primary or subkey): its public half and what its self-signatures say."""

    version: int
    algo: int
    created: int
    #: The public key packet body: what fingerprints and signatures hash.
    body: bytes
    fingerprint: bytes
    is_primary: bool = False
    rsa_n: int = 0
    rsa_e: int = 0
    #: Curve OID for algorithms 18, 19, 22.
    curve: bytes = b""
    #: Public point: native 32 bytes for Curve25519/Ed25519 (any algorithm), SEC1 for NIST curves.
    point: bytes = b""
    kdf_hash: int = 0
    kdf_sym: int = 0
    #: Key flags from the binding self-signature (or defaults for the algorithm).
    flags: int = 0
    #: Absolute POSIX time after which the key is expired, or None.
    expires: int | None = None
    revoked: bool = False

    def __repr__(self) -> str:
        role = "primary" if self.is_primary else "subkey"
        return f"<Key {role} {self.fingerprint_hex} {self.algorithm_name} flags={self.flags:#04x}>"

    @property
    def key_id(self) -> bytes:
        return self.fingerprint[-8:]

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex().upper()

    @property
    def key_id_hex(self) -> str:
        return self.key_id.hex().upper()

    @property
    def algorithm_name(self) -> str:
        name = ALGO_NAMES.get(self.algo, f"algorithm {self.algo}")
        if self.algo in (ALGO_RSA, ALGO_RSA_ENCRYPT, ALGO_RSA_SIGN):
            return f"rsa{self.rsa_n.bit_length()}"
        if self.curve:
            return f"{name} {_CURVE_NAMES.get(self.curve, 'unknown curve ' + self.curve.hex())}"
        return name

    def hash_prefix(self) -> bytes:
        """What a v4 signature over this key hashes (RFC 4880 5.2.4)."""
        return b"\x99" + len(self.body).to_bytes(2, "big") + self.body

    def encryption_problem(self, now: int | None = None) -> str | None:
        """Why this key cannot receive a PKESK now, or None when it can."""
        if not self.flags & FLAG_ENCRYPT:
            return "not flagged for encryption"
        if self.revoked:
            return "revoked"
        if self.expires is not None and _now(now) >= self.expires:
            return "expired"
        if not _can_pkesk(self):
            return f"{self.algorithm_name} is not supported for encryption"
        return None

    def can_sign(self, now: int | None = None) -> bool:
        return (
            bool(self.flags & FLAG_SIGN)
            and not self.revoked
            and (self.expires is None or _now(now) < self.expires)
            and _can_verify(self)
        )


def _can_pkesk(key: Key) -> bool:
    if key.algo in (ALGO_RSA, ALGO_RSA_ENCRYPT):
        return key.rsa_n.bit_length() >= MIN_RSA_ENCRYPT_BITS
    if key.algo == ALGO_ECDH:
        return (
            (key.curve == OID_CV25519 or key.curve in _NIST_CURVES)
            and key.kdf_hash in (HASH_SHA256, HASH_SHA384, HASH_SHA512)
            and key.kdf_sym in SYM_KEY_SIZES
        )
    return key.algo == ALGO_X25519


def _can_verify(key: Key) -> bool:
    if key.algo in (ALGO_RSA, ALGO_RSA_SIGN, ALGO_ED25519):
        return True
    if key.algo == ALGO_EDDSA:
        return key.curve == OID_ED25519
    if key.algo == ALGO_ECDSA:
        return key.curve in _NIST_CURVES
    return False


def _default_flags(algo: int) -> int:
    if algo == ALGO_RSA:
        return FLAG_CERTIFY | FLAG_SIGN | FLAG_ENCRYPT
    if algo in (ALGO_RSA_ENCRYPT, ALGO_ELGAMAL, ALGO_ECDH, ALGO_X25519, ALGO_X448):
        return FLAG_ENCRYPT
    return FLAG_CERTIFY | FLAG_SIGN


def _parse_key_fields(body: bytes, *, public_packet: bool, is_primary: bool) -> tuple[Key, int]:
    """Parse the public fields of a key packet; returns the key and where they end."""
    r = _Reader(body, "key packet")
    version = r.u8()
    if version != 4:
        raise OpenPGPError(f"unsupported key packet version {version} (haeedge reads v4 keys)")
    created = r.u32()
    algo = r.u8()
    n = e = 0
    curve = point = b""
    kdf_hash = kdf_sym = 0
    if algo in (ALGO_RSA, ALGO_RSA_ENCRYPT, ALGO_RSA_SIGN):
        n = int.from_bytes(r.mpi(), "big")
        e = int.from_bytes(r.mpi(), "big")
    elif algo == ALGO_DSA:
        for _ in range(4):
            r.mpi()
    elif algo == ALGO_ELGAMAL:
        for _ in range(3):
            r.mpi()
    elif algo in (ALGO_ECDH, ALGO_ECDSA, ALGO_EDDSA):
        oid_len = r.u8()
        if oid_len in (0, 0xFF):
            raise OpenPGPError("malformed curve identifier in key packet")
        curve = r.take(oid_len)
        point = r.mpi()
        if curve in (OID_CV25519, OID_ED25519):
            if len(point) != 33 or point[0] != 0x40:
                raise OpenPGPError("malformed Curve25519 point in key packet")
            point = point[1:]
        if algo == ALGO_ECDH:
            kdf = r.take(r.u8())
            if len(kdf) < 3 or kdf[0] != 1:
                raise OpenPGPError("malformed ECDH KDF parameters in key packet")
            kdf_hash, kdf_sym = kdf[1], kdf[2]
    elif algo in (ALGO_X25519, ALGO_ED25519):
        point = r.take(32)
    elif algo == ALGO_X448:
        point = r.take(56)
    elif algo == ALGO_ED448:
        point = r.take(57)
    elif public_packet:
        r.rest()  # unknown algorithm: the whole body is public; keep it for fingerprints
    else:
        raise OpenPGPError(f"unsupported public-key algorithm {algo} in secret key")
    end = r.pos
    pub = bytes(body[:end])
    if public_packet and end != len(body):
        raise OpenPGPError("trailing bytes in public key packet")
    if len(pub) > 0xFFFF:
        raise OpenPGPError("key packet too large")
    fpr = hashlib.sha1(b"\x99" + len(pub).to_bytes(2, "big") + pub).digest()
    key = Key(
        version=version,
        algo=algo,
        created=created,
        body=pub,
        fingerprint=fpr,
        is_primary=is_primary,
        rsa_n=n,
        rsa_e=e,
        curve=curve,
        point=point,
        kdf_hash=kdf_hash,
        kdf_sym=kdf_sym,
    )
    return key, end


def _public_object(key: Key) -> object:
    """The ``cryptography`` public key object for a supported key."""
    try:
        if key.algo in (ALGO_RSA, ALGO_RSA_ENCRYPT, ALGO_RSA_SIGN):
            return rsa.RSAPublicNumbers(key.rsa_e, key.rsa_n).public_key()
        if key.algo == ALGO_ED25519 or (key.algo == ALGO_EDDSA and key.curve == OID_ED25519):
            return ed25519.Ed25519PublicKey.from_public_bytes(key.point)
        if key.algo == ALGO_X25519 or (key.algo == ALGO_ECDH and key.curve == OID_CV25519):
            return x25519.X25519PublicKey.from_public_bytes(key.point)
        if key.algo in (ALGO_ECDH, ALGO_ECDSA) and key.curve in _NIST_CURVES:
            curve = _NIST_CURVES[key.curve][0]()
            return ec.EllipticCurvePublicKey.from_encoded_point(curve, key.point)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise OpenPGPError(f"invalid public key material in key {key.fingerprint_hex}") from exc
    raise OpenPGPError(f"unsupported key {key.algorithm_name}")


# --------------------------------------------------------------------------- signatures


@dataclass(eq=False)
class _Signature:
    sigtype: int
    pk_algo: int
    hash_algo: int
    #: body[:6 + hashed length]: hashed along with the signed content.
    hashed_part: bytes
    left16: bytes
    material: list[bytes]
    created: int | None = None
    expires_after: int | None = None
    key_expires_after: int | None = None
    key_flags: int | None = None
    primary_uid: bool = False
    issuer_ids: set[bytes] = field(default_factory=set)
    issuer_fprs: set[bytes] = field(default_factory=set)
    embedded: list[bytes] = field(default_factory=list)
    critical_unknown: bool = False

    def may_be_from(self, key: Key) -> bool:
        if self.issuer_fprs:
            return key.fingerprint in self.issuer_fprs
        if self.issuer_ids:
            return key.key_id in self.issuer_ids
        return True

    def live(self, now: int) -> bool:
        """Usable as a statement now: created, not expired, no unknown critical subpacket."""
        if self.created is None or self.critical_unknown:
            return False
        return not (self.expires_after and now >= self.created + self.expires_after)


def _iter_subpackets(area: bytes) -> Iterable[tuple[int, bool, bytes]]:
    r = _Reader(area, "signature subpacket")
    while r.left():
        l1 = r.u8()
        if l1 < 192:
            n = l1
        elif l1 < 255:
            n = ((l1 - 192) << 8) + r.u8() + 192
        else:
            n = r.u32()
        if n == 0:
            raise OpenPGPError("empty signature subpacket")
        data = r.take(n)
        yield data[0] & 0x7F, bool(data[0] & 0x80), data[1:]


def _parse_signature(body: bytes | memoryview) -> _Signature | None:
    """Parse a v4 signature packet; None for other versions (which we ignore)."""
    r = _Reader(body, "signature packet")
    version = r.u8()
    if version != 4:
        return None
    sigtype, pk_algo, hash_algo = r.u8(), r.u8(), r.u8()
    hashed_area = r.take(r.u16())
    hashed_part = r.buf[: r.pos]
    unhashed_area = r.take(r.u16())
    left16 = r.take(2)
    if pk_algo in (ALGO_RSA, ALGO_RSA_ENCRYPT, ALGO_RSA_SIGN):
        material = [r.mpi(exact=True)]
    elif pk_algo in (ALGO_DSA, ALGO_ECDSA, ALGO_EDDSA):
        material = [r.mpi(exact=True), r.mpi(exact=True)]
    elif pk_algo == ALGO_ED25519:
        material = [r.take(64)]
    else:
        material = [r.rest()]
    r.end()
    sig = _Signature(sigtype, pk_algo, hash_algo, hashed_part, left16, material)
    for typ, critical, data in _iter_subpackets(hashed_area):
        if typ == SUB_CREATED and len(data) == 4:
            sig.created = int.from_bytes(data, "big")
        elif typ == SUB_SIG_EXPIRES and len(data) == 4:
            sig.expires_after = int.from_bytes(data, "big")
        elif typ == SUB_KEY_EXPIRES and len(data) == 4:
            sig.key_expires_after = int.from_bytes(data, "big")
        elif typ == SUB_KEY_FLAGS:
            sig.key_flags = data[0] if data else 0
        elif typ == SUB_PRIMARY_UID:
            sig.primary_uid = bool(data and data[0])
        elif typ == SUB_ISSUER and len(data) == 8:
            sig.issuer_ids.add(data)
        elif typ == SUB_ISSUER_FPR and len(data) == 21 and data[0] == 4:
            sig.issuer_fprs.add(data[1:])
        elif typ == SUB_EMBEDDED:
            sig.embedded.append(data)
        elif critical and typ not in _KNOWN_SUBPACKETS:
            sig.critical_unknown = True
    # Unhashed issuer hints only steer the search (the math decides); embedded
    # back-signatures authenticate themselves.
    for typ, _critical, data in _iter_subpackets(unhashed_area):
        if typ == SUB_ISSUER and len(data) == 8:
            sig.issuer_ids.add(data)
        elif typ == SUB_ISSUER_FPR and len(data) == 21 and data[0] == 4:
            sig.issuer_fprs.add(data[1:])
        elif typ == SUB_EMBEDDED:
            sig.embedded.append(data)
    if sig.issuer_fprs:
        sig.issuer_ids |= {f[-8:] for f in sig.issuer_fprs}
    return sig


def _sig_digest(sig: _Signature, chunks: Iterable[bytes | memoryview]) -> bytes | None:
    name = HASH_NAMES.get(sig.hash_algo)
    if name is None:
        return None
    h = hashlib.new(name)
    for c in chunks:
        h.update(c)
    h.update(sig.hashed_part)
    h.update(b"\x04\xff" + len(sig.hashed_part).to_bytes(4, "big"))
    return h.digest()


def _verify_raw(key: Key, sig: _Signature, digest: bytes) -> bool:
    """Check the signature math over ``digest`` (already hashed with the trailer)."""
    if digest[:2] != sig.left16 or sig.hash_algo not in _HASHES:
        return False
    rsa_algos = (ALGO_RSA, ALGO_RSA_SIGN)
    if not (sig.pk_algo == key.algo or (sig.pk_algo in rsa_algos and key.algo in rsa_algos)):
        return False
    if not _can_verify(key):
        return False
    try:
        pub = _public_object(key)
        halg = _HASHES[sig.hash_algo]()
        if isinstance(pub, rsa.RSAPublicKey):
            size = (key.rsa_n.bit_length() + 7) // 8
            pub.verify(_fixed(sig.material[0], size, "RSA signature"), digest, padding.PKCS1v15(), Prehashed(halg))
        elif isinstance(pub, ed25519.Ed25519PublicKey):
            if key.algo == ALGO_ED25519:
                raw = sig.material[0]
            else:
                r_, s_ = sig.material
                raw = _fixed(r_, 32, "EdDSA signature") + _fixed(s_, 32, "EdDSA signature")
            pub.verify(raw, digest)
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            r_, s_ = sig.material
            der = encode_dss_signature(int.from_bytes(r_, "big"), int.from_bytes(s_, "big"))
            pub.verify(der, digest, ec.ECDSA(Prehashed(halg)))
        else:
            return False
    except (InvalidSignature, OpenPGPError, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _check(signer: Key, sig: _Signature, chunks: Sequence[bytes], now: int, *, not_before: int) -> bool:
    """A self-signature that is live now, not older than the key it speaks about, and verifies."""
    if not sig.live(now) or sig.created is None or sig.created < not_before:
        return False
    digest = _sig_digest(sig, chunks)
    return digest is not None and _verify_raw(signer, sig, digest)


# --------------------------------------------------------------------------- certificates


@dataclass(eq=False)
class Certificate:
    """A transferable public key: primary key, valid subkeys and user IDs (self-signatures verified)."""

    primary: Key
    subkeys: list[Key]
    user_ids: list[str]
    revoked: bool
    #: The certificate as binary OpenPGP packets (secret halves never included).
    raw: bytes

    @property
    def fingerprint(self) -> bytes:
        return self.primary.fingerprint

    @property
    def fingerprint_hex(self) -> str:
        return self.primary.fingerprint_hex

    def __repr__(self) -> str:
        return f"<Certificate {self.fingerprint_hex} {self.user_ids!r} subkeys={len(self.subkeys)}>"

    def keys(self) -> list[Key]:
        return [self.primary, *self.subkeys]

    def armored(self) -> str:
        return armor(self.raw, "PUBLIC KEY BLOCK")

    def _primary_problem(self, now: int) -> str | None:
        if self.revoked:
            return "the certificate is revoked"
        if self.primary.expires is not None and now >= self.primary.expires:
            return "the certificate is expired"
        return None

    def encryption_keys(self, now: int | None = None) -> list[Key]:
        """Keys a PKESK may be addressed to now, newest first."""
        t = _now(now)
        if self._primary_problem(t):
            return []
        usable = [(i, k) for i, k in enumerate(self.keys()) if k.encryption_problem(t) is None]
        # subkeys before the primary, then newest first; ties go to the later subkey
        usable.sort(key=lambda ik: (not ik[1].is_primary, ik[1].created, ik[0]), reverse=True)
        return [k for _, k in usable]

    def encryption_key(self, now: int | None = None) -> Key:
        """The key to encrypt to now; a clear OpenPGPError when there is none."""
        t = _now(now)
        keys = self.encryption_keys(t)
        if keys:
            return keys[0]
        why = self._primary_problem(t)
        if why is None:
            reasons = "; ".join(f"{k.key_id_hex} ({k.algorithm_name}): {k.encryption_problem(t)}" for k in self.keys())
            why = f"no usable encryption key [{reasons}]"
        raise OpenPGPError(f"cannot encrypt to certificate {self.fingerprint_hex}: {why}")

    def signing_keys(self, now: int | None = None) -> list[Key]:
        t = _now(now)
        if self._primary_problem(t):
            return []
        return [k for k in self.keys() if k.can_sign(t)]

    def keys_by_id(self, key_id: bytes) -> list[Key]:
        return [k for k in self.keys() if k.key_id == key_id or k.fingerprint == key_id]


@dataclass
class _Block:
    packet_tag: int
    body: bytes
    sigs: list[_Signature] = field(default_factory=list)
    #: Every signature packet body as read (kept verbatim in ``Certificate.raw``).
    sig_bodies: list[bytes] = field(default_factory=list)
    key: Key | None = None
    #: Where the public fields of a key packet end (secret material follows in tags 5/7).
    pub_end: int = 0


def _split_transferable(data: bytes) -> list[list[_Block]]:
    """Group packets into certificates, each a list of blocks (key / user ID / subkey + their signatures)."""
    certs: list[list[_Block]] = []
    sig_count: list[int] = []
    for pkt in iter_packets(data, MAX_KEY_BYTES):
        tag = pkt.tag
        if tag in (TAG_MARKER, TAG_TRUST, TAG_PADDING):
            continue
        if tag in (TAG_PUBLIC_KEY, TAG_SECRET_KEY):
            certs.append([_Block(tag, bytes(pkt.body))])
            sig_count.append(0)
            continue
        if not certs:
            raise OpenPGPError(f"expected a key packet, found packet type {tag}")
        blocks = certs[-1]
        if tag == TAG_SIGNATURE:
            try:
                sig = _parse_signature(pkt.body)
            except OpenPGPError:
                sig = None  # a signature we cannot parse says nothing; third-party ones may be odd
            if sig is not None:
                blocks[-1].sigs.append(sig)
            blocks[-1].sig_bodies.append(bytes(pkt.body))
            sig_count[-1] += 1
            if sig_count[-1] > MAX_SIGS_PER_CERT:
                raise OpenPGPError("too many signatures in certificate")
        elif tag in (TAG_USER_ID, TAG_USER_ATTRIBUTE, TAG_PUBLIC_SUBKEY, TAG_SECRET_SUBKEY):
            blocks.append(_Block(tag, bytes(pkt.body)))
            if len(blocks) > MAX_SUBKEYS + MAX_USER_IDS + 1:
                raise OpenPGPError("too many subkeys or user IDs in certificate")
        elif tag < 40:  # RFC 9580 4.3: tags 40-63 are non-critical and may be skipped
            raise OpenPGPError(f"unexpected packet type {tag} in a certificate")
    if not certs:
        raise OpenPGPError("no OpenPGP key found")
    return certs


def _self_sigs(block: _Block, signer: Key, types: Iterable[int]) -> list[_Signature]:
    wanted = set(types)
    out = [s for s in block.sigs if s.sigtype in wanted and s.may_be_from(signer)]
    return out[-MAX_SELF_SIGS:]


def _latest_valid(
    sigs: list[_Signature], signer: Key, chunks: Sequence[bytes], now: int, not_before: int
) -> _Signature | None:
    best: _Signature | None = None
    for s in sigs:
        if (best is None or (s.created or 0) >= (best.created or 0)) and _check(
            signer, s, chunks, now, not_before=not_before
        ):
            best = s
    return best


def _any_valid(sigs: list[_Signature], signer: Key, chunks: Sequence[bytes], now: int) -> bool:
    return any(_check(signer, s, chunks, now, not_before=0) for s in sigs)


def _backsig_ok(sig: _Signature, primary: Key, subkey: Key, now: int) -> bool:
    """A signing subkey must sign its binding back (RFC 4880 5.2.1, 0x19) or anyone could claim it."""
    chunks = (primary.hash_prefix(), subkey.hash_prefix())
    for raw in sig.embedded[:4]:
        try:
            back = _parse_signature(raw)
        except OpenPGPError:
            continue
        if back is not None and back.sigtype == SIG_PRIMARY_BINDING and _check(subkey, back, chunks, now, not_before=0):
            return True
    return False


def _build_certificate(blocks: list[_Block], now: int) -> Certificate:
    head = blocks[0]
    primary, head.pub_end = _parse_key_fields(
        head.body, public_packet=head.packet_tag == TAG_PUBLIC_KEY, is_primary=True
    )
    head.key = primary
    if not _can_verify(primary):
        raise OpenPGPError(
            f"certificate {primary.fingerprint_hex} uses {primary.algorithm_name}, "
            "whose self-signatures haeedge cannot verify"
        )
    pk = primary.hash_prefix()
    revoked = _any_valid(_self_sigs(head, primary, [SIG_KEY_REVOCATION]), primary, [pk], now)
    direct = _latest_valid(_self_sigs(head, primary, [SIG_DIRECT_KEY]), primary, [pk], now, primary.created)

    uid_sigs: list[tuple[str, _Signature]] = []
    raw = [_packet(TAG_PUBLIC_KEY, primary.body), *_sig_packets(head)]
    subkeys: list[Key] = []
    for block in blocks[1:]:
        if block.packet_tag == TAG_USER_ID:
            uid = block.body
            if len(uid) > MAX_USER_ID_BYTES:
                continue
            chunks = [pk, b"\xb4" + len(uid).to_bytes(4, "big") + uid]
            certs = _self_sigs(block, primary, range(SIG_CERT_GENERIC, SIG_CERT_POSITIVE + 1))
            best = _latest_valid(certs, primary, chunks, now, primary.created)
            if best is None:
                continue
            if _any_valid(_self_sigs(block, primary, [SIG_CERT_REVOCATION]), primary, chunks, now):
                continue
            uid_sigs.append((uid.decode("utf-8", "replace"), best))
            raw.append(_packet(TAG_USER_ID, uid))
            raw.extend(_sig_packets(block))
        elif block.packet_tag in (TAG_PUBLIC_SUBKEY, TAG_SECRET_SUBKEY):
            if block.body[:1] != b"\x04":
                continue  # a subkey of another key version cannot belong to a v4 certificate
            sub, block.pub_end = _parse_key_fields(
                block.body, public_packet=block.packet_tag == TAG_PUBLIC_SUBKEY, is_primary=False
            )
            block.key = sub
            chunks = [pk, sub.hash_prefix()]
            binding = _latest_valid(_self_sigs(block, primary, [SIG_SUBKEY_BINDING]), primary, chunks, now, sub.created)
            if binding is None:
                block.key = None  # unbound subkeys are not part of the certificate
                continue
            flags = binding.key_flags if binding.key_flags is not None else _default_flags(sub.algo)
            if flags & (FLAG_SIGN | FLAG_CERTIFY) and not _backsig_ok(binding, primary, sub, now):
                flags &= ~(FLAG_SIGN | FLAG_CERTIFY)
            sub.flags = flags
            if binding.key_expires_after:
                sub.expires = sub.created + binding.key_expires_after
            sub.revoked = _any_valid(_self_sigs(block, primary, [SIG_SUBKEY_REVOCATION]), primary, chunks, now)
            subkeys.append(sub)
            raw.append(_packet(TAG_PUBLIC_SUBKEY, sub.body))
            raw.extend(_sig_packets(block))
        # user attributes (photos) are dropped: nothing here uses them

    chosen: _Signature | None = None
    if uid_sigs:
        chosen = max(uid_sigs, key=lambda us: (us[1].primary_uid, us[1].created or 0))[1]
    if chosen is None and direct is None:
        raise OpenPGPError(f"certificate {primary.fingerprint_hex} has no valid self-signature")
    flags = [s.key_flags for s in (chosen, direct) if s is not None and s.key_flags is not None]
    primary.flags = flags[0] if flags else _default_flags(primary.algo)
    expiry = [s.key_expires_after for s in (chosen, direct) if s is not None and s.key_expires_after is not None]
    if expiry and expiry[0]:
        primary.expires = primary.created + expiry[0]
    primary.revoked = revoked
    return Certificate(primary, subkeys, [u for u, _ in uid_sigs], revoked, b"".join(raw))


def _sig_packets(block: _Block) -> list[bytes]:
    return [_packet(TAG_SIGNATURE, b) for b in block.sig_bodies]


def parse_certificates(data: bytes | bytearray | memoryview | str, *, now: int | None = None) -> list[Certificate]:
    """Every certificate in ``data`` (binary or ASCII-armored; secret keys give their public view)."""
    blob = _as_binary(data)
    if len(blob) > MAX_KEY_BYTES:
        raise OpenPGPError("key data larger than the allowed maximum")
    t = _now(now)
    return [_build_certificate(blocks, t) for blocks in _split_transferable(blob)]


def parse_certificate(data: bytes | bytearray | memoryview | str, *, now: int | None = None) -> Certificate:
    """Exactly one certificate, as ``gpg --export KEY`` or ``sqop extract-cert`` write it."""
    certs = parse_certificates(data, now=now)
    if len(certs) != 1:
        raise OpenPGPError(f"expected one certificate, found {len(certs)}")
    return certs[0]


# --------------------------------------------------------------------------- secret keys

_S2K_GNU = 101


@dataclass
class _Locked:
    """The secret part of a key packet, still as stored."""

    usage: int
    sym: int = 0
    s2k: S2K | None = None
    iv: bytes = b""
    data: bytes = b""
    #: A GnuPG stub (gnu-dummy or divert-to-card): the secret is not here.
    stub: bool = False


def _parse_secret_fields(key: Key, body: bytes, start: int) -> _Locked:
    fpr = key.fingerprint_hex
    r = _Reader(memoryview(body)[start:], "secret key packet")
    usage = r.u8()
    if usage == 0:
        return _Locked(0, data=r.rest())
    if usage in (254, 255):
        sym = r.u8()
        s2k_type, hash_algo = r.u8(), r.u8()
        if s2k_type == _S2K_GNU:
            if r.take(3) != b"GNU":
                raise OpenPGPError(f"unknown S2K extension protecting secret key {fpr}")
            return _Locked(usage, stub=True)
        if s2k_type == S2K_SIMPLE:
            spec = S2K(S2K_SIMPLE, hash_algo)
        elif s2k_type == S2K_SALTED:
            spec = S2K(S2K_SALTED, hash_algo, r.take(8))
        elif s2k_type == S2K_ITERATED:
            spec = S2K(S2K_ITERATED, hash_algo, r.take(8), r.u8())
        else:
            raise OpenPGPError(f"unsupported S2K type {s2k_type} protecting secret key {fpr}")
        if sym not in _SYM_CIPHERS:
            raise OpenPGPError(f"unsupported cipher {sym} protecting secret key {fpr}")
        iv = r.take(_SYM_CIPHERS[sym][1])
        return _Locked(usage, sym, spec, iv, r.rest())
    if usage == 253:
        raise OpenPGPError(f"secret key {fpr} is AEAD-protected (RFC 9580), which haeedge does not read")
    raise OpenPGPError(f"secret key {fpr} uses obsolete protection (mode {usage}); re-protect it with gpg")


def _can_hold_secret(key: Key) -> bool:
    return _can_verify(key) or _can_pkesk_decrypt(key)


def _can_pkesk_decrypt(key: Key) -> bool:
    if key.algo in (ALGO_RSA, ALGO_RSA_ENCRYPT, ALGO_X25519):
        return True
    return key.algo == ALGO_ECDH and (key.curve == OID_CV25519 or key.curve in _NIST_CURVES)


def _private_object(key: Key, material: bytes) -> object:
    """Build the private key from decrypted material and check it matches the public half."""
    r = _Reader(material, "secret key material")
    obj: object
    if key.algo in (ALGO_RSA, ALGO_RSA_ENCRYPT, ALGO_RSA_SIGN):
        d, p, q = (int.from_bytes(r.mpi(), "big") for _ in range(3))
        r.mpi()  # u = p^-1 mod q; recomputed below in the form cryptography wants
        if p < 3 or q < 3 or p * q != key.rsa_n:
            raise ValueError("RSA factors do not match the modulus")
        pub = rsa.RSAPublicNumbers(key.rsa_e, key.rsa_n)
        obj = rsa.RSAPrivateNumbers(
            p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q), pub
        ).private_key()
        public_ok = True
    elif key.algo == ALGO_ECDH and key.curve == OID_CV25519:
        # Stored as a big-endian MPI: the reverse of the native X25519 string.
        obj = x25519.X25519PrivateKey.from_private_bytes(_fixed(r.mpi(), 32, "X25519 secret")[::-1])
        public_ok = obj.public_key().public_bytes_raw() == key.point
    elif key.algo == ALGO_EDDSA and key.curve == OID_ED25519:
        obj = ed25519.Ed25519PrivateKey.from_private_bytes(_fixed(r.mpi(), 32, "Ed25519 secret"))
        public_ok = obj.public_key().public_bytes_raw() == key.point
    elif key.algo in (ALGO_ECDH, ALGO_ECDSA) and key.curve in _NIST_CURVES:
        obj = ec.derive_private_key(int.from_bytes(r.mpi(), "big"), _NIST_CURVES[key.curve][0]())
        public_ok = obj.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint) == key.point
    elif key.algo == ALGO_X25519:
        obj = x25519.X25519PrivateKey.from_private_bytes(r.take(32))
        public_ok = obj.public_key().public_bytes_raw() == key.point
    elif key.algo == ALGO_ED25519:
        obj = ed25519.Ed25519PrivateKey.from_private_bytes(r.take(32))
        public_ok = obj.public_key().public_bytes_raw() == key.point
    else:
        raise ValueError("unsupported algorithm")
    r.end()
    if not public_ok:
        raise ValueError("secret does not match the public key")
    return obj


def _unlock(key: Key, locked: _Locked, passphrase: bytes | None) -> object:
    fpr = key.fingerprint_hex
    if locked.usage == 0:
        plain = locked.data
        if len(plain) < 2 or _checksum(plain[:-2]) != plain[-2:]:
            raise OpenPGPError(f"secret key {fpr} is damaged (checksum mismatch)")
        try:
            return _private_object(key, plain[:-2])
        except (OpenPGPError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise OpenPGPError(f"secret key {fpr} is damaged or does not match its public key") from exc
    if passphrase is None:
        raise WrongPassword(f"secret key {fpr} is protected by a passphrase, and none was given")
    if locked.s2k is None:
        raise OpenPGPError(f"secret key {fpr} has no S2K specifier")
    size, _block, cls = _SYM_CIPHERS[locked.sym]
    kek = s2k_derive(passphrase, locked.s2k, size)
    dec = Cipher(cls(kek), CFB(locked.iv)).decryptor()
    plain = dec.update(locked.data) + dec.finalize()
    wrong = WrongPassword(f"wrong passphrase for secret key {fpr}")
    if locked.usage == 254:
        if len(plain) < 20 or hashlib.sha1(plain[:-20]).digest() != plain[-20:]:
            raise wrong
        material = plain[:-20]
    else:
        if len(plain) < 2 or _checksum(plain[:-2]) != plain[-2:]:
            raise wrong
        material = plain[:-2]
    try:
        return _private_object(key, material)
    except (OpenPGPError, ValueError, TypeError, UnsupportedAlgorithm):
        raise wrong from None


@dataclass(eq=False)
class SecretKey:
    """A certificate together with the secret halves it carried, unlocked."""

    cert: Certificate
    _private: dict[bytes, object]

    def __repr__(self) -> str:
        return f"<SecretKey {self.fingerprint_hex} secrets={len(self._private)}>"

    @property
    def fingerprint(self) -> bytes:
        return self.cert.fingerprint

    @property
    def fingerprint_hex(self) -> str:
        return self.cert.fingerprint_hex

    def has_secret(self, key: Key) -> bool:
        return key.fingerprint in self._private

    def secret_keys(self) -> list[Key]:
        return [k for k in self.cert.keys() if k.fingerprint in self._private]

    def decryptor(self) -> SecretKeyring:
        """A PKESK decryptor for ``openpgp.Keyring(pkesk_decryptors=[...])``."""
        return SecretKeyring([self])

    def signing_key(self, now: int | None = None) -> Key:
        """The newest signing-capable key whose secret we hold."""
        keys = [k for k in self.cert.signing_keys(now) if k.fingerprint in self._private]
        if not keys:
            raise OpenPGPError(f"secret key {self.fingerprint_hex} has no usable signing key")
        return max(keys, key=lambda k: (k.created, not k.is_primary))


def load_secret_keys(
    data: bytes | bytearray | memoryview | str,
    passphrase: bytes | str | None = None,
    *,
    now: int | None = None,
) -> list[SecretKey]:
    """Every transferable secret key in ``data`` (``gpg --export-secret-keys``), unlocked.

    Raises ``WrongPassword`` when a protected key is given no passphrase or the
    wrong one, and ``OpenPGPError`` for malformed input or a mere certificate.
    """
    blob = _as_binary(data)
    if len(blob) > MAX_KEY_BYTES:
        raise OpenPGPError("key data larger than the allowed maximum")
    pw = _passphrase_bytes(passphrase)
    t = _now(now)
    out = []
    unlocks = 0
    for blocks in _split_transferable(blob):
        cert = _build_certificate(blocks, t)
        private: dict[bytes, object] = {}
        found = False
        for block in blocks:
            if block.packet_tag not in (TAG_SECRET_KEY, TAG_SECRET_SUBKEY) or block.key is None:
                continue
            locked = _parse_secret_fields(block.key, block.body, block.pub_end)
            if locked.stub:
                continue
            found = True
            if _can_hold_secret(block.key):
                unlocks += locked.usage != 0
                if unlocks > MAX_PROTECTED_UNLOCKS:
                    raise OpenPGPError("too many protected secret keys in one file")
                private[block.key.fingerprint] = _unlock(block.key, locked, pw)
        if not found:
            raise OpenPGPError(
                f"no secret key material for {cert.fingerprint_hex} "
                "(a certificate or a stub; export with gpg --export-secret-keys)"
            )
        if not private:
            raise OpenPGPError(f"secret key {cert.fingerprint_hex} uses only algorithms haeedge cannot use")
        out.append(SecretKey(cert, private))
    return out


def load_secret_key(
    data: bytes | bytearray | memoryview | str,
    passphrase: bytes | str | None = None,
    *,
    now: int | None = None,
) -> SecretKey:
    """Exactly one transferable secret key, unlocked with ``passphrase`` when protected."""
    keys = load_secret_keys(data, passphrase, now=now)
    if len(keys) != 1:
        raise OpenPGPError(f"expected one secret key, found {len(keys)}")
    return keys[0]


# --------------------------------------------------------------------------- PKESK


def _session_plain(sym_algo: int, session_key: bytes) -> bytes:
    return bytes([sym_algo]) + session_key + _checksum(session_key)


def _session_from_plain(m: bytes) -> tuple[int, bytes] | None:
    if len(m) < 3:
        return None
    algo, key, check = m[0], m[1:-2], m[-2:]
    if _SESSION_KEY_SIZES.get(algo) != len(key) or _checksum(key) != check:
        return None
    return algo, key


def _ecdh_kek(key: Key, shared: bytes) -> bytes:
    """RFC 6637 section 7: KDF(Z) = Hash(00 00 00 01 || Z || Param), truncated to the KEK size."""
    param = (
        bytes([len(key.curve)])
        + key.curve
        + bytes([ALGO_ECDH, 3, 1, key.kdf_hash, key.kdf_sym])
        + _ANONYMOUS_SENDER
        + key.fingerprint
    )
    digest = hashlib.new(HASH_NAMES[key.kdf_hash], b"\x00\x00\x00\x01" + shared + param).digest()
    return digest[: SYM_KEY_SIZES[key.kdf_sym]]


def _x25519_kek(ephemeral: bytes, recipient: bytes, shared: bytes) -> bytes:
    """RFC 9580 5.1.6: HKDF-SHA256 over ephemeral || recipient || shared, info "OpenPGP X25519"."""
    return HKDF(hashes.SHA256(), 16, None, b"OpenPGP X25519").derive(ephemeral + recipient + shared)


def _pkcs5_pad(m: bytes) -> bytes:
    n = 8 - len(m) % 8
    return m + bytes([n]) * n


def _pkcs5_unpad(m: bytes) -> bytes | None:
    if not m or not 1 <= m[-1] <= 8 or len(m) < m[-1] or m[-m[-1] :] != bytes([m[-1]]) * m[-1]:
        return None
    return m[: -m[-1]]


def pkesk_packet(recipient: Certificate | Key, sym_algo: int, session_key: bytes, *, now: int | None = None) -> bytes:
    """A v3 PKESK packet carrying ``session_key`` to ``recipient``.

    The caller chooses the session key, so one PKESK (one public-key
    operation) can front many SEIPD messages: write-only hosts make one per
    session. A certificate is resolved to its newest usable encryption key.
    """
    if isinstance(recipient, Certificate):
        key = recipient.encryption_key(now)
    else:
        key = recipient
        problem = key.encryption_problem(now)
        if problem:
            raise OpenPGPError(f"cannot encrypt to key {key.key_id_hex}: {problem}")
    if SYM_KEY_SIZES.get(sym_algo) != len(session_key):
        raise OpenPGPError("session key does not fit the symmetric algorithm")
    pub = _public_object(key)
    if isinstance(pub, rsa.RSAPublicKey):
        c = pub.encrypt(_session_plain(sym_algo, session_key), padding.PKCS1v15())
        fields = _mpi(c)
    elif key.algo == ALGO_X25519:
        eph = x25519.X25519PrivateKey.generate()
        eph_pub = eph.public_key().public_bytes_raw()
        kek = _x25519_kek(eph_pub, key.point, eph.exchange(pub))  # type: ignore[arg-type]
        wrapped = bytes([sym_algo]) + aes_key_wrap(kek, session_key)
        fields = eph_pub + bytes([len(wrapped)]) + wrapped
    elif isinstance(pub, x25519.X25519PublicKey):
        eph = x25519.X25519PrivateKey.generate()
        shared = eph.exchange(pub)
        wrapped = aes_key_wrap(_ecdh_kek(key, shared), _pkcs5_pad(_session_plain(sym_algo, session_key)))
        fields = _mpi(b"\x40" + eph.public_key().public_bytes_raw()) + bytes([len(wrapped)]) + wrapped
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        eph_ec = ec.generate_private_key(pub.curve)
        shared = eph_ec.exchange(ec.ECDH(), pub)
        wrapped = aes_key_wrap(_ecdh_kek(key, shared), _pkcs5_pad(_session_plain(sym_algo, session_key)))
        point = eph_ec.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        fields = _mpi(point) + bytes([len(wrapped)]) + wrapped
    else:
        raise OpenPGPError(f"cannot encrypt to {key.algorithm_name}")
    return _packet(TAG_PKESK, bytes([3]) + key.key_id + bytes([key.algo]) + fields)


def _pkesk_decrypt(key: Key, priv: object, fields: bytes) -> tuple[int, bytes] | None:
    r = _Reader(fields, "public-key encrypted session key packet")
    if isinstance(priv, rsa.RSAPrivateKey):
        size = (key.rsa_n.bit_length() + 7) // 8
        c = _fixed(r.mpi(), size, "RSA ciphertext")
        r.end()
        return _session_from_plain(priv.decrypt(c, padding.PKCS1v15()))
    if key.algo == ALGO_X25519 and isinstance(priv, x25519.X25519PrivateKey):
        eph = r.take(32)
        data = r.take(r.u8())
        r.end()
        if len(data) < 2:
            return None
        shared = priv.exchange(x25519.X25519PublicKey.from_public_bytes(eph))
        session = aes_key_unwrap(_x25519_kek(eph, key.point, shared), data[1:])
        return (data[0], session) if _SESSION_KEY_SIZES.get(data[0]) == len(session) else None
    point = r.mpi()
    wrapped = r.take(r.u8())
    r.end()
    if isinstance(priv, x25519.X25519PrivateKey):
        if len(point) != 33 or point[0] != 0x40:
            return None
        shared = priv.exchange(x25519.X25519PublicKey.from_public_bytes(point[1:]))
    elif isinstance(priv, ec.EllipticCurvePrivateKey):
        eph = ec.EllipticCurvePublicKey.from_encoded_point(priv.curve, point)
        shared = priv.exchange(ec.ECDH(), eph)
    else:
        return None
    m = _pkcs5_unpad(aes_key_unwrap(_ecdh_kek(key, shared), wrapped))
    return None if m is None else _session_from_plain(m)


class SecretKeyring:
    """Opens PKESK packets with unlocked secret keys.

    An instance is a ``PKESKDecryptor``: pass it in
    ``openpgp.Keyring(pkesk_decryptors=[...])``. It tries the keys whose key
    ID matches, or every key of the right algorithm for a wildcard (zero) ID.
    Expired or revoked keys still decrypt: old backups must stay readable.
    """

    def __init__(self, keys: Iterable[SecretKey]):
        self._entries: list[tuple[Key, object]] = []
        #: The whole keys (their primary fingerprints are what a repository's trust root is checked against).
        self.secret_keys: list[SecretKey] = list(keys)
        for sk in self.secret_keys:
            for k in sk.cert.keys():
                obj = sk._private.get(k.fingerprint)
                if obj is not None and k.flags & FLAG_ENCRYPT and _can_pkesk_decrypt(k):
                    self._entries.append((k, obj))

    def __len__(self) -> int:
        return len(self._entries)

    def __call__(self, body: bytes) -> tuple[int, bytes] | None:
        if len(body) < 10 or body[0] != 3:
            return None  # v6 PKESKs go with SEIPD v2, which haeedge does not read
        key_id, algo, fields = bytes(body[1:9]), body[9], bytes(body[10:])
        rsa_algos = (ALGO_RSA, ALGO_RSA_ENCRYPT)
        for key, priv in self._entries:
            if not (algo == key.algo or (algo in rsa_algos and key.algo in rsa_algos)):
                continue
            if key_id not in (_ZERO_KEY_ID, key.key_id):
                continue
            try:
                got = _pkesk_decrypt(key, priv, fields)
            except (OpenPGPError, ValueError, TypeError, InvalidUnwrap, UnsupportedAlgorithm):
                got = None
            if got is not None:
                return got
        return None


# --------------------------------------------------------------------------- signatures over data


class SignatureCheck(NamedTuple):
    """Outcome of ``verify_detached``.

    ``fingerprint`` is the (sub)key that made a good signature, or the key a
    bad one claims to be from; ``created`` is its POSIX creation time.
    """

    ok: bool
    fingerprint: bytes | None
    created: int | None


def _sign_raw(key: Key, priv: object, digest: bytes, hash_algo: int) -> bytes:
    halg = _HASHES[hash_algo]()
    if isinstance(priv, rsa.RSAPrivateKey):
        return _mpi(priv.sign(digest, padding.PKCS1v15(), Prehashed(halg)))
    if isinstance(priv, ed25519.Ed25519PrivateKey):
        raw = priv.sign(digest)
        return raw if key.algo == ALGO_ED25519 else _mpi(raw[:32]) + _mpi(raw[32:])
    if isinstance(priv, ec.EllipticCurvePrivateKey):
        r_, s_ = decode_dss_signature(priv.sign(digest, ec.ECDSA(Prehashed(halg))))
        return _mpi(r_) + _mpi(s_)
    raise OpenPGPError(f"cannot sign with {key.algorithm_name}")


def _signature_body(
    sigtype: int,
    key: Key,
    priv: object,
    chunks: Sequence[bytes | memoryview],
    hashed_subpackets: bytes,
    hash_algo: int = HASH_SHA256,
) -> bytes:
    hashed_part = (
        bytes([4, sigtype, key.algo, hash_algo]) + len(hashed_subpackets).to_bytes(2, "big") + hashed_subpackets
    )
    h = hashlib.new(HASH_NAMES[hash_algo])
    for c in chunks:
        h.update(c)
    h.update(hashed_part)
    h.update(b"\x04\xff" + len(hashed_part).to_bytes(4, "big"))
    digest = h.digest()
    unhashed = _subpacket(SUB_ISSUER, key.key_id)
    return (
        hashed_part + len(unhashed).to_bytes(2, "big") + unhashed + digest[:2] + _sign_raw(key, priv, digest, hash_algo)
    )


def _hash_for(key: Key) -> int:
    if key.algo == ALGO_ECDSA:
        return _NIST_CURVES[key.curve][1]
    return HASH_SHA256


def sign_detached(
    secret_key: SecretKey,
    data: bytes | memoryview,
    *,
    created: int | None = None,
    armored: bool = False,
) -> bytes:
    """A detached v4 binary-document signature that ``gpg --verify sig data`` accepts."""
    key = secret_key.signing_key(created)
    priv = secret_key._private[key.fingerprint]
    when = _now(created)
    hashed = _subpacket(SUB_ISSUER_FPR, b"\x04" + key.fingerprint) + _subpacket(SUB_CREATED, when.to_bytes(4, "big"))
    body = _signature_body(SIG_BINARY, key, priv, [data], hashed, _hash_for(key))
    pkt = _packet(TAG_SIGNATURE, body)
    return armor(pkt, "SIGNATURE").encode() if armored else pkt


def verify_detached(
    certs: Certificate | Sequence[Certificate],
    data: bytes | memoryview,
    signature: bytes | str,
    *,
    now: int | None = None,
) -> SignatureCheck:
    """Check a detached signature over ``data`` against one or more certificates.

    Good means: a binary-document signature (SHA-2 family) made by a
    signing-capable, unrevoked key of one of ``certs``, at a time when that
    key and its certificate were valid. Malformed signature bytes raise
    ``OpenPGPError``; a well-formed signature that fails is ``ok=False``.
    """
    cert_list = [certs] if isinstance(certs, Certificate) else list(certs)
    blob = _as_binary(signature)
    if len(blob) > MAX_SIGNATURE_BYTES:
        raise OpenPGPError("signature larger than the allowed maximum")
    packets = list(iter_packets(blob, MAX_SIGNATURE_BYTES))
    if not packets or any(p.tag != TAG_SIGNATURE for p in packets):
        raise OpenPGPError("not a detached OpenPGP signature")
    if len(packets) > MAX_SIGS_PER_DETACHED:
        raise OpenPGPError("too many signatures in a detached signature")
    t = _now(now)
    claimed: tuple[bytes | None, int | None] = (None, None)
    for pkt in packets:
        sig = _parse_signature(pkt.body)
        if sig is None or sig.sigtype != SIG_BINARY:
            continue
        candidates = [k for c in cert_list for k in c.keys() if sig.may_be_from(k)]
        if candidates and claimed[0] is None:
            claimed = (candidates[0].fingerprint, sig.created)
        if sig.hash_algo not in _DATA_SIG_HASHES or not sig.live(t) or sig.created is None:
            continue
        digest: bytes | None = None
        for c in cert_list:
            if c.revoked or (c.primary.expires is not None and sig.created >= c.primary.expires):
                continue
            for k in c.keys():
                if not sig.may_be_from(k) or not k.flags & FLAG_SIGN or k.revoked:
                    continue
                if sig.created < k.created or (k.expires is not None and sig.created >= k.expires):
                    continue
                if digest is None:
                    digest = _sig_digest(sig, [data])
                if digest is not None and _verify_raw(k, sig, digest):
                    return SignatureCheck(True, k.fingerprint, sig.created)
    return SignatureCheck(False, *claimed)


# --------------------------------------------------------------------------- host signing keys


_PROTECT_COUNT_BYTE = 0xE0  # 16 MiB hashed per unlock: a host key is unlocked once per run


def _secret_fields(material: bytes, passphrase: bytes | None) -> bytes:
    if passphrase is None:
        return b"\x00" + material + _checksum(material)
    salt, iv = os.urandom(8), os.urandom(16)
    spec = S2K(S2K_ITERATED, HASH_SHA256, salt, _PROTECT_COUNT_BYTE)
    kek = s2k_derive(passphrase, spec, 32)
    enc = Cipher(algorithms.AES(kek), CFB(iv)).encryptor()
    sealed = enc.update(material + hashlib.sha1(material).digest()) + enc.finalize()
    return bytes([254, SYM_AES256]) + spec.encode() + iv + sealed


def default_host_user_id() -> str:
    return f"haeedge host <{socket.gethostname()}>"


def generate_signing_key(
    user_id: str | None = None,
    *,
    passphrase: bytes | str | None = None,
    created: int | None = None,
) -> tuple[bytes, bytes]:
    """A fresh Ed25519 signing key for one backup host: ``(secret_key_bytes, cert_bytes)``.

    Both are binary transferable keys (primary EdDSA key flagged certify+sign,
    one self-signed user ID); ``gpg --import`` takes either, so snapshots this
    host signs verify with plain ``gpg --verify``. EdDSA (algorithm 22) rather
    than RFC 9580 Ed25519 because GnuPG 2.2 only knows the former.
    """
    uid = (user_id if user_id is not None else default_host_user_id()).encode("utf-8")
    if not uid or len(uid) > MAX_USER_ID_BYTES or b"\n" in uid or b"\r" in uid:
        raise OpenPGPError("a user ID must be one non-empty line")
    when = _now(created)
    priv = ed25519.Ed25519PrivateKey.generate()
    pub_raw = priv.public_key().public_bytes_raw()
    pub_body = (
        b"\x04"
        + when.to_bytes(4, "big")
        + bytes([ALGO_EDDSA, len(OID_ED25519)])
        + OID_ED25519
        + _mpi(b"\x40" + pub_raw)
    )
    key, _ = _parse_key_fields(pub_body, public_packet=True, is_primary=True)
    hashed = (
        _subpacket(SUB_ISSUER_FPR, b"\x04" + key.fingerprint)
        + _subpacket(SUB_CREATED, when.to_bytes(4, "big"))
        + _subpacket(SUB_KEY_FLAGS, bytes([FLAG_CERTIFY | FLAG_SIGN]))
        + _subpacket(SUB_PREF_SYM, bytes([SYM_AES256, 8, 7]))
        + _subpacket(SUB_PREF_HASH, bytes([HASH_SHA256, HASH_SHA512, HASH_SHA384]))
        + _subpacket(SUB_PREF_COMPRESSION, bytes([2, 1, 0]))
        + _subpacket(SUB_FEATURES, b"\x01")
        + _subpacket(SUB_PRIMARY_UID, b"\x01")
    )
    uid_hash = b"\xb4" + len(uid).to_bytes(4, "big") + uid
    selfsig = _signature_body(SIG_CERT_POSITIVE, key, priv, [key.hash_prefix(), uid_hash], hashed)
    seed = priv.private_bytes_raw()
    secret_body = pub_body + _secret_fields(_mpi(seed), _passphrase_bytes(passphrase))
    tail = _packet(TAG_USER_ID, uid) + _packet(TAG_SIGNATURE, selfsig)
    return _packet(TAG_SECRET_KEY, secret_body) + tail, _packet(TAG_PUBLIC_KEY, pub_body) + tail
