"""The blob path's shortcut (openpgp._open_salted) opens exactly what the general reader opens and
refuses exactly what it refuses: every blob of a verify or restore goes through it."""

from __future__ import annotations

import os

import pytest

from haeedge.crypto import openpgp as op
from haeedge.errors import OpenPGPError

PW = b"machine passphrase"
SIZES = [0, 1, 100, 8000, op._JOIN_BELOW - 1, op._JOIN_BELOW, 300_000]


def _keyring(*pws: bytes) -> op.Keyring:
    return op.Keyring(passphrases=list(pws))


def test_the_written_skesk_is_what_skesk_packet_writes():
    salt = os.urandom(8)
    spec = op.S2K(op.S2K_SALTED, op.HASH_SHA256, salt)
    assert op._SALTED_SKESK_HEAD + salt == op.skesk_packet(spec)
    msg = op.PassphraseSealer(PW).seal(b"x")
    assert msg[:6] == op._SALTED_SKESK_HEAD and op.esk_summary(msg)[0][0] == op.TAG_SKESK
    assert op.s2k_derive(PW, spec, 32) == op.s2k_derive(PW, op.S2K(op.S2K_SALTED, op.HASH_SHA256, salt), 32)


@pytest.mark.parametrize("size", SIZES)
def test_shortcut_and_general_reader_agree(size):
    data = os.urandom(size)
    msg = op.PassphraseSealer(PW).seal(data)
    assert op._open_salted(memoryview(msg), _keyring(PW), op.DEFAULT_MAX_PLAINTEXT) is not None, "shortcut taken"
    assert op._decrypt_general(msg, _keyring(PW), op.DEFAULT_MAX_PLAINTEXT) == data
    assert op.decrypt_message(msg, _keyring(PW)) == data
    assert bytes(op.decrypt_literal_view(msg, _keyring(PW))) == data
    # The same message built the general way (seipd_encrypt) opens to the same bytes.
    salt = os.urandom(8)
    spec = op.S2K(op.S2K_SALTED, op.HASH_SHA256, salt)
    other = op.skesk_packet(spec) + b"".join(op.seipd_encrypt(op.s2k_derive(PW, spec, 32),
                                                               [op.literal_header(size), data]))
    assert len(other) == len(msg) and op.decrypt_message(other, _keyring(PW)) == data


def test_every_flipped_byte_is_refused():
    data = b"blob of a small file\n" * 5
    msg = op.PassphraseSealer(PW).seal(data)
    for pos in range(len(msg)):
        for mask in (0x01, 0x80):
            bad = bytearray(msg)
            bad[pos] ^= mask
            with pytest.raises(OpenPGPError):
                op.decrypt_literal_view(bytes(bad), _keyring(PW))
            with pytest.raises(OpenPGPError):
                op.decrypt_message(bytes(bad), _keyring(PW))


def test_truncated_or_extended_messages_are_refused():
    msg = op.PassphraseSealer(PW).seal(os.urandom(5000))
    for bad in (msg[:-1], msg[:20], msg + b"\x00", msg + msg):
        with pytest.raises(OpenPGPError):
            op.decrypt_literal_view(bad, _keyring(PW))


def test_wrong_passphrase_is_no_matching_key_and_a_later_right_one_opens():
    msg = op.PassphraseSealer(PW).seal(b"secret")
    with pytest.raises(op.NoMatchingKey):
        op.decrypt_literal_view(msg, _keyring(b"wrong"))
    assert bytes(op.decrypt_literal_view(msg, _keyring(b"wrong", PW))) == b"secret"


def _with_inner(*inner: bytes) -> bytes:
    salt = os.urandom(8)
    spec = op.S2K(op.S2K_SALTED, op.HASH_SHA256, salt)
    return op.skesk_packet(spec) + b"".join(op.seipd_encrypt(op.s2k_derive(PW, spec, 32), list(inner)))


def test_other_inner_shapes_are_read_the_general_way():
    lit = op.literal_header(4) + b"data"
    marker = op.packet_header(op.TAG_MARKER, 3) + b"PGP"
    assert op.decrypt_message(_with_inner(lit, marker), _keyring(PW)) == b"data"
    assert bytes(op.decrypt_literal_view(_with_inner(marker, lit), _keyring(PW))) == b"data"
    with pytest.raises(OpenPGPError, match="more than one literal"):
        op.decrypt_literal_view(_with_inner(lit, lit), _keyring(PW))


def test_the_limit_holds_on_the_shortcut():
    msg = op.PassphraseSealer(PW).seal(os.urandom(10_000))
    with pytest.raises(OpenPGPError):
        op.decrypt_literal_view(msg, _keyring(PW), limit=5_000)
