"""RFC 9580 X25519 (25) and Ed25519 (27) in v4 keys, as Sequoia makes them.

GnuPG 2.2 does not know these algorithms, so Sequoia (pysequoia) is the peer here.
"""

from __future__ import annotations

import os

import pysequoia
import pytest

from haeedge.crypto import pubkey
from haeedge.crypto.openpgp import SYM_AES256, Keyring, decrypt_message, encrypt_literal, esk_summary


@pytest.fixture(scope="module")
def tsk() -> pysequoia.Tsk:
    return pysequoia.Tsk.generate(
        "rfc9580 <r@example.org>",
        profile=pysequoia.Profile.RFC4880,  # v4 key packets ...
        encryption_algorithm=pysequoia.EncryptionAlgorithm.X25519,  # ... with the new algorithms
        signing_algorithm=pysequoia.SigningAlgorithm.Ed25519,
    )


def test_keys_are_v4_with_new_algorithms(tsk: pysequoia.Tsk) -> None:
    sk = pubkey.load_secret_key(bytes(tsk))
    algos = {k.algo for k in sk.cert.keys()}
    assert algos == {pubkey.ALGO_ED25519, pubkey.ALGO_X25519}
    assert sk.cert.encryption_key().algo == pubkey.ALGO_X25519
    assert sk.cert.fingerprint_hex == tsk.extract_certificate().fingerprint.upper()


def test_our_x25519_pkesk_decrypts_with_pysequoia(tsk: pysequoia.Tsk) -> None:
    cert = pubkey.parse_certificate(bytes(tsk.extract_certificate()))
    session = os.urandom(32)
    esk = pubkey.pkesk_packet(cert, SYM_AES256, session)
    for data in (b"", os.urandom(10_000)):
        msg = encrypt_literal(data, session, esk)
        assert pysequoia.decrypt(msg, decryptor=tsk.decryptor()).bytes == data


def test_our_x25519_pkesk_round_trips_in_our_reader(tsk: pysequoia.Tsk) -> None:
    sk = pubkey.load_secret_key(bytes(tsk))
    session = os.urandom(32)
    msg = encrypt_literal(b"x25519", session, pubkey.pkesk_packet(sk.cert, SYM_AES256, session))
    assert esk_summary(msg)[0][1][9] == pubkey.ALGO_X25519
    assert decrypt_message(msg, Keyring(pkesk_decryptors=[sk.decryptor()])) == b"x25519"


def test_ed25519_signatures_both_ways(tsk: pysequoia.Tsk) -> None:
    sk = pubkey.load_secret_key(bytes(tsk))
    data = b"manifest"
    theirs = pysequoia.sign(tsk.signer(), data, mode=pysequoia.SignatureMode.DETACHED, armor=False)
    assert pubkey.verify_detached(sk.cert, data, theirs).ok
    ours = pubkey.sign_detached(sk, data)
    cert = tsk.extract_certificate()
    result = pysequoia.verify(bytes=data, store=lambda _ids: [cert], signature=pysequoia.Sig.from_bytes(ours))
    assert len(result.valid_sigs) == 1
    assert not pubkey.verify_detached(sk.cert, data + b"!", ours).ok
