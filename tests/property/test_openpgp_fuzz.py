"""Hostile input against the OpenPGP reader and the key/signature parsers.

Why: repositories live on storage we do not trust, and write-only hosts send
messages the owner's reader must open. Whatever the bytes, the reader must
answer with an ``OpenPGPError`` (or a subclass, or ``WrongPassword`` for keys)
in bounded time, never another exception, never a wrong plaintext.
"""

from __future__ import annotations

import bz2
import hashlib
import os
import random
import time
import zlib
from functools import cache

import pysequoia
import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haeedge.crypto import openpgp as op
from haeedge.crypto import pubkey
from haeedge.errors import HaeedgeError, OpenPGPError

PW = b"fuzzing passphrase"
TIME_LIMIT = 10.0
FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


# --------------------------------------------------------------------------- material


@cache
def secret_keys() -> tuple[pubkey.SecretKey, pubkey.SecretKey]:
    """A cv25519 and an RSA-2048 key made by Sequoia (cheap, in-process)."""
    out = []
    for suite in (pysequoia.CipherSuite.Cv25519, pysequoia.CipherSuite.RSA2k):
        tsk = pysequoia.Tsk.generate("fuzz <f@example.org>", profile=pysequoia.Profile.RFC4880, cipher_suite=suite)
        out.append(pubkey.load_secret_key(bytes(tsk)))
    return out[0], out[1]


def keyring() -> op.Keyring:
    return op.Keyring(passphrases=[PW], pkesk_decryptors=[pubkey.SecretKeyring(secret_keys())])


def salted_key(salt: bytes) -> bytes:
    return hashlib.sha256(salt + PW).digest()


def seal_inner(inner: bytes) -> bytes:
    """A SKESK (salted S2K over PW) + SEIPD around arbitrary inner packet bytes."""
    salt = os.urandom(8)
    skesk = op.skesk_packet(op.S2K(op.S2K_SALTED, op.HASH_SHA256, salt))
    return skesk + b"".join(op.seipd_encrypt(salted_key(salt), [inner]))


def literal(data: bytes) -> bytes:
    return op.literal_header(len(data)) + data


def compressed(algo: int, inner: bytes) -> bytes:
    if algo == 1:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = c.compress(inner) + c.flush()
    elif algo == 2:
        body = zlib.compress(inner)
    elif algo == 3:
        body = bz2.compress(inner)
    else:
        body = inner
    return op.packet_header(op.TAG_COMPRESSED, 1 + len(body)) + bytes([algo]) + body


def pkesk_message(sk: pubkey.SecretKey, data: bytes) -> bytes:
    session = os.urandom(32)
    return op.encrypt_literal(data, session, pubkey.pkesk_packet(sk.cert, op.SYM_AES256, session))


@cache
def valid_messages() -> dict[str, tuple[bytes, bytes]]:
    """name -> (message, plaintext)."""
    cv, rsa = secret_keys()
    plain = b"a haeedge blob " * 20
    big = os.urandom(100_000)
    return {
        "skesk": (op.PassphraseSealer(PW).seal(plain), plain),
        "skesk-iterated": (op.PassphraseSealer(PW, count_byte=0x10).seal(plain), plain),
        "skesk-empty": (op.PassphraseSealer(PW).seal(b""), b""),
        "skesk-big": (op.PassphraseSealer(PW).seal(big), big),
        "pkesk-cv25519": (pkesk_message(cv, plain), plain),
        "pkesk-rsa": (pkesk_message(rsa, plain), plain),
        "zlib": (seal_inner(compressed(2, literal(plain))), plain),
        "bzip2": (seal_inner(compressed(3, literal(plain))), plain),
    }


def rejects(data: bytes | bytearray, *, kr: op.Keyring | None = None, limit: int = op.DEFAULT_MAX_PLAINTEXT) -> None:
    """decrypt_message raises an OpenPGPError, quickly."""
    t0 = time.monotonic()
    with pytest.raises(OpenPGPError):
        op.decrypt_message(bytes(data), kr or keyring(), limit=limit)
    assert time.monotonic() - t0 < TIME_LIMIT


def opens_or_rejects(data: bytes | bytearray, expected: bytes) -> None:
    """Never another exception; if it opens, it is the original plaintext (the MDC held)."""
    t0 = time.monotonic()
    try:
        got = op.decrypt_message(bytes(data), keyring())
    except OpenPGPError:
        got = None
    assert time.monotonic() - t0 < TIME_LIMIT
    assert got is None or got == expected


def test_valid_messages_open() -> None:
    for msg, plain in valid_messages().values():
        assert op.decrypt_message(msg, keyring()) == plain


# --------------------------------------------------------------------------- modified ciphertexts


@pytest.mark.parametrize("name", ["skesk", "skesk-iterated", "skesk-empty", "pkesk-cv25519", "pkesk-rsa", "zlib"])
def test_a_modified_byte_anywhere_is_rejected(name: str) -> None:
    msg, _ = valid_messages()[name]
    rng = random.Random(name)
    for pos in range(len(msg)):
        mutated = bytearray(msg)
        mutated[pos] ^= rng.randrange(1, 256)
        rejects(mutated)


def test_a_modified_byte_in_a_large_message_is_rejected_at_sampled_positions() -> None:
    msg, _ = valid_messages()["skesk-big"]
    rng = random.Random(7)
    positions = list(range(64)) + list(range(len(msg) - 64, len(msg))) + rng.sample(range(len(msg)), 300)
    for pos in positions:
        mutated = bytearray(msg)
        mutated[pos] ^= 1 << rng.randrange(8)
        rejects(mutated)


@pytest.mark.parametrize("name", ["skesk", "pkesk-cv25519", "pkesk-rsa", "bzip2"])
def test_every_truncation_is_rejected(name: str) -> None:
    msg, _ = valid_messages()[name]
    for n in range(len(msg)):
        rejects(msg[:n])


@FUZZ
@given(
    name=st.sampled_from(sorted(["skesk", "skesk-iterated", "pkesk-cv25519", "pkesk-rsa", "zlib", "bzip2"])),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=8),
)
def test_random_byte_flips(name: str, flips: list[tuple[float, int]]) -> None:
    msg, plain = valid_messages()[name]
    mutated = bytearray(msg)
    for where, xor in flips:
        mutated[int(where * len(msg))] ^= xor
    opens_or_rejects(mutated, plain)
    # Packet framing outside the encrypted packet is not integrity-protected in OpenPGP: a flip
    # there may give an equivalent encoding (a new-format header byte turned into the old-format
    # one with the same length), which still opens to the same plaintext. Any flip inside the
    # encrypted packet (the last one here) must be rejected.
    seipd = list(op.iter_packets(msg))[-1]
    assert seipd.tag == op.TAG_SEIPD
    body_start = len(msg) - len(seipd.body)
    if any(mutated[i] != msg[i] for i in range(body_start, len(msg))):
        rejects(mutated)


@FUZZ
@given(
    name=st.sampled_from(["skesk", "pkesk-cv25519", "zlib"]),
    cut=st.floats(0, 1),
    junk=st.binary(max_size=64),
)
def test_splices_and_appended_junk(name: str, cut: float, junk: bytes) -> None:
    msg, plain = valid_messages()[name]
    at = int(cut * len(msg))
    opens_or_rejects(msg[:at] + junk + msg[at:], plain)
    opens_or_rejects(msg + junk, plain)


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes(data: bytes) -> None:
    opens_or_rejects(data, b"\0never")


@FUZZ
@given(tag=st.integers(0, 63), body=st.binary(max_size=300), count=st.integers(1, 4))
def test_arbitrary_packet_sequences(tag: int, body: bytes, count: int) -> None:
    pkt = op.packet_header(tag, len(body)) + body
    opens_or_rejects(pkt * count, b"\0never")
    opens_or_rejects(valid_messages()["skesk"][0][:24] + pkt, b"\0never")


# --------------------------------------------------------------------------- crafted structures


def test_oversized_length_fields_are_rejected_without_allocating() -> None:
    msg, _ = valid_messages()["skesk"]
    skesk_len = 2 + msg[1]
    body = msg[skesk_len + 2 :] if msg[skesk_len + 1] < 192 else msg[skesk_len + 3 :]
    for header in (
        b"\xd2\xff\xff\xff\xff\xff",  # 4 GiB definite length
        b"\xd2\xfe",  # partial 2**30
        b"\xd2\xfe" + b"\x00" * 100,
        b"\xd2\xdf\xff",  # two-octet maximum
        b"\xcb\xff\x7f\xff\xff\xff",  # literal claiming 2 GiB
        b"\x8b\x03\xff\xff\xff\xff",  # old format, 4-octet length overflow
    ):
        rejects(msg[:skesk_len] + header + body)
    # inside the encryption: a literal packet that claims more than it holds
    rejects(seal_inner(b"\xcb\xff\x7f\xff\xff\xff" + b"b\0\0\0\0\0abc"))
    rejects(seal_inner(b"\xcb\xe0" + b"b\0\0\0\0\0abc"))  # partial length chunk of 1 that runs out


def test_nested_compressed_packets_are_bounded() -> None:
    inner = literal(b"nested")
    for depth in range(1, 12):
        inner = compressed((0, 1, 2, 3)[depth % 4], inner)
        msg = seal_inner(inner)
        if depth <= op.MAX_NESTING:
            assert op.decrypt_message(msg, keyring()) == b"nested"
        else:
            rejects(msg)


def test_compression_bomb_is_bounded() -> None:
    bomb = compressed(2, literal(b"\0" * (32 << 20)))
    assert len(bomb) < 100_000
    rejects(seal_inner(bomb), limit=1 << 20)
    rejects(seal_inner(compressed(3, literal(b"\0" * (32 << 20)))), limit=1 << 20)


@pytest.mark.parametrize("algo", [1, 2, 3, 99])
def test_corrupt_compressed_data_under_a_valid_mdc(algo: int) -> None:
    good = compressed(algo if algo != 99 else 0, literal(b"x" * 1000))
    bad = good[:3] + bytes(b ^ 0x5A for b in good[3:20]) + good[20:]
    if algo == 99:
        bad = good[:2] + b"\x63" + good[3:]  # unknown algorithm id
    rejects(seal_inner(bad))


def test_two_literals_and_unexpected_packets_are_rejected() -> None:
    rejects(seal_inner(literal(b"a") + literal(b"b")))
    rejects(seal_inner(literal(b"a") + compressed(0, literal(b"b"))))
    rejects(seal_inner(op.packet_header(op.TAG_SEIPD, 3) + b"\x01ab"))
    rejects(seal_inner(b""))
    rejects(seal_inner(op.packet_header(op.TAG_LITERAL, 3) + b"b\x05a"))  # name runs past the end


def _seipd_custom(key: bytes, inner: bytes, *, mdc: bytes | None = None, version: int = 1) -> bytes:
    prefix = os.urandom(16)
    prefix += prefix[-2:]
    digest = hashlib.sha1(prefix + inner + b"\xd3\x14").digest()
    tail = b"\xd3\x14" + (digest if mdc is None else mdc)
    enc = Cipher(algorithms.AES(key), CFB(b"\0" * 16)).encryptor()
    body = bytes([version]) + enc.update(prefix + inner + tail) + enc.finalize()
    return op.packet_header(op.TAG_SEIPD, len(body)) + body


def _skesk(salt: bytes, version: int = 4) -> bytes:
    body = bytes([version, op.SYM_AES256]) + op.S2K(op.S2K_SALTED, op.HASH_SHA256, salt).encode()
    return op.packet_header(op.TAG_SKESK, len(body)) + body


def test_bad_mdc_and_wrong_versions_are_rejected() -> None:
    salt = os.urandom(8)
    key = salted_key(salt)
    inner = literal(b"payload")
    assert op.decrypt_message(_skesk(salt) + _seipd_custom(key, inner), keyring()) == b"payload"
    rejects(_skesk(salt) + _seipd_custom(key, inner, mdc=b"\0" * 20))
    rejects(_skesk(salt) + _seipd_custom(key, inner, mdc=b"\0" * 19))
    rejects(_skesk(salt) + _seipd_custom(key, inner, version=2))
    rejects(_skesk(salt, version=5) + _seipd_custom(key, inner))
    rejects(_skesk(salt, version=6) + _seipd_custom(key, inner))
    # PKESK v6 (goes with SEIPD v2) and an unknown PKESK algorithm: not ours, cleanly
    rejects(op.packet_header(op.TAG_PKESK, 30) + b"\x06" + os.urandom(29) + _seipd_custom(key, inner))
    rejects(op.packet_header(op.TAG_PKESK, 12) + b"\x03" + b"\1" * 8 + b"\x63ab" + _seipd_custom(key, inner))
    # SED (tag 9, no MDC) is refused outright
    rejects(_skesk(salt) + op.packet_header(9, 40) + os.urandom(40))
    # no ESK at all, or no encrypted data
    rejects(_seipd_custom(key, inner))
    rejects(_skesk(salt))


def test_wrong_keys_are_no_matching_key() -> None:
    cv, rsa = secret_keys()
    other = pubkey.load_secret_key(bytes(pysequoia.Tsk.generate("other <o@x>", profile=pysequoia.Profile.RFC4880)))
    wrong = op.Keyring(passphrases=[b"not it"], pkesk_decryptors=[other.decryptor()])
    for name in ("skesk", "pkesk-cv25519", "pkesk-rsa"):
        with pytest.raises(op.NoMatchingKey):
            op.decrypt_message(valid_messages()[name][0], wrong)
    # the cv25519 message, opened with the RSA key only (and vice versa)
    with pytest.raises(op.NoMatchingKey):
        op.decrypt_message(valid_messages()["pkesk-cv25519"][0], op.Keyring(pkesk_decryptors=[rsa.decryptor()]))
    with pytest.raises(op.NoMatchingKey):
        op.decrypt_message(valid_messages()["pkesk-rsa"][0], op.Keyring(pkesk_decryptors=[cv.decryptor()]))


def test_many_session_key_packets_are_bounded() -> None:
    msg, _ = valid_messages()["skesk"]
    skesk_len = 2 + msg[1]
    body = bytes([4, op.SYM_AES256]) + op.S2K(op.S2K_ITERATED, op.HASH_SHA256, os.urandom(8), 0xFF).encode()
    iterated = op.packet_header(op.TAG_SKESK, len(body)) + body
    rejects(iterated * 40 + msg[skesk_len:])
    pk = op.packet_header(op.TAG_PKESK, 12) + b"\x03" + b"\0" * 8 + b"\x01\x00\x00"
    rejects(pk * 1000 + msg)


# --------------------------------------------------------------------------- keys and signatures


def _parse_any(data: bytes) -> list[pubkey.Certificate]:
    """Read ``data`` as certificates and as secret keys: each refuses it with a HaeedgeError or returns
    keys that are whole, in bounded time."""
    t0 = time.monotonic()
    accepted: list[pubkey.Certificate] = []
    for fn in (
        lambda: pubkey.parse_certificates(data),
        lambda: pubkey.load_secret_keys(data),
        lambda: pubkey.load_secret_keys(data, "pw"),
    ):
        try:
            got = fn()
        except HaeedgeError:
            continue
        for k in got:
            if isinstance(k, pubkey.SecretKey):
                assert k._private, "a secret key without any secret half was accepted"
                k = k.cert
            accepted.append(k)
    for cert in accepted:
        # What was accepted is a certificate haeedge would write back and read the same again.
        assert len(cert.fingerprint) in (20, 32) and cert.raw
        again = pubkey.parse_certificates(cert.raw)
        assert [(c.fingerprint, c.user_ids, [s.fingerprint for s in c.subkeys]) for c in again] == \
            [(cert.fingerprint, cert.user_ids, [s.fingerprint for s in cert.subkeys])]
    assert time.monotonic() - t0 < 3 * TIME_LIMIT
    return accepted


@cache
def key_material() -> dict[str, bytes]:
    cv, rsa = secret_keys()
    host_secret, host_cert = pubkey.generate_signing_key("haeedge host <fuzz>")
    prot_secret, _ = pubkey.generate_signing_key("haeedge host <fuzz2>", passphrase="pw")
    tsk = pysequoia.Tsk.generate("p <p@x>", profile=pysequoia.Profile.RFC4880)
    return {
        "cv-cert": cv.cert.raw,
        "rsa-cert": rsa.cert.raw,
        "host-cert": host_cert,
        "host-secret": host_secret,
        "protected-secret": prot_secret,
        "sequoia-secret": bytes(tsk),
    }


@FUZZ
@given(
    name=st.sampled_from(["cv-cert", "rsa-cert", "host-cert", "host-secret", "protected-secret", "sequoia-secret"]),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=6),
    cut=st.none() | st.floats(0, 1),
)
def test_mutated_keys_fail_cleanly(name: str, flips: list[tuple[float, int]], cut: float | None) -> None:
    data = bytearray(key_material()[name])
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    if cut is not None:
        data = data[: int(cut * len(data))]
    _parse_any(bytes(data))


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_as_keys(data: bytes) -> None:
    _parse_any(data)


def test_every_truncation_of_a_secret_key_fails_cleanly() -> None:
    data = key_material()["protected-secret"]
    whole = _parse_any(data)
    assert len(whole) == 2  # the certificate, and the key unlocked with its passphrase
    for n in range(len(data)):
        for cert in _parse_any(data[:n]):  # a cut in the trailing signatures may leave a whole key
            assert cert.fingerprint == whole[0].fingerprint


def test_hostile_key_sizes_are_refused() -> None:
    # an RSA key packet claiming a 65535-bit modulus
    body = b"\x04\0\0\0\0\x01" + b"\xff\xff" + b"\x80" * 8192 + b"\x00\x11\x01\x00\x01"
    with pytest.raises(OpenPGPError, match="oversized"):
        pubkey.parse_certificates(op.packet_header(6, len(body)) + body)
    with pytest.raises(OpenPGPError):
        pubkey.parse_certificates(b"\xc6\xff\xff\xff\xff\xff" + b"\x04")
    many_uids = key_material()["host-cert"][:-1] + (op.packet_header(13, 1) + b"u") * 2000
    with pytest.raises(OpenPGPError):
        pubkey.parse_certificates(many_uids)


@FUZZ
@given(
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_mutated_signatures_never_verify_and_fail_cleanly(flips: list[tuple[float, int]]) -> None:
    secret = pubkey.load_secret_key(key_material()["host-secret"])
    cert = pubkey.parse_certificate(key_material()["host-cert"])
    original = _host_signature()
    sig = bytearray(original)
    for where, xor in flips:
        sig[int(where * len(sig))] ^= xor
    only_hints = _same_signed_content(original, bytes(sig))
    try:
        check = pubkey.verify_detached(cert, b"snapshot", bytes(sig))
    except OpenPGPError:
        return
    assert not check.ok or only_hints
    assert secret.fingerprint == cert.fingerprint


def _same_signed_content(original: bytes, mutated: bytes) -> bool:
    """Packet framing and the unhashed subpacket area (issuer hints) are outside the
    signature by design: a change confined to them may still verify."""
    try:
        packets = list(op.iter_packets(mutated))
    except OpenPGPError:
        return False
    if len(packets) != 1 or packets[0].tag != op.TAG_SIGNATURE:
        return False
    a, b = next(iter(op.iter_packets(original))).body, bytes(packets[0].body)
    start = 6 + int.from_bytes(a[4:6], "big")
    end = start + 2 + int.from_bytes(a[start : start + 2], "big")
    return len(a) == len(b) and a[:start] == b[:start] and a[end:] == b[end:]


@cache
def _host_signature() -> bytes:
    return pubkey.sign_detached(pubkey.load_secret_key(key_material()["host-secret"]), b"snapshot")


def test_signature_round_trip_baseline() -> None:
    cert = pubkey.parse_certificate(key_material()["host-cert"])
    assert pubkey.verify_detached(cert, b"snapshot", _host_signature()).ok


@FUZZ
@given(body=st.binary(max_size=600))
def test_arbitrary_pkesk_bodies_never_raise(body: bytes) -> None:
    ring = pubkey.SecretKeyring(secret_keys())
    for variant in (body, b"\x03" + body, b"\x03\0\0\0\0\0\0\0\0\x12" + body, b"\x03\0\0\0\0\0\0\0\0\x01" + body):
        got = ring(variant)  # a PKESK decryptor answers None for what it cannot open, never raises
        assert got is None or isinstance(got, tuple)
