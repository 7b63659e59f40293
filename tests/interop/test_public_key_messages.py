"""PKESK: messages we encrypt to real certificates open in gpg, sqop and pysequoia;
messages they encrypt open with secret keys exported by them."""

from __future__ import annotations

import os

import pysequoia
import pytest

from haeedge.crypto import pubkey
from haeedge.crypto.openpgp import (
    SYM_AES256,
    Keyring,
    NoMatchingKey,
    PassphraseSealer,
    encrypt_literal,
    esk_summary,
)
from haeedge.crypto.openpgp import (
    decrypt_message as _decrypt_message,
)
from haeedge.errors import OpenPGPError, WrongPassword
from tests.support.openpgp import ENCRYPTION_KEYS, GPG, KeyPair, Sqop


def our_message(cert_bytes: bytes, data: bytes) -> bytes:
    session_key = os.urandom(32)
    esk = pubkey.pkesk_packet(pubkey.parse_certificate(cert_bytes), SYM_AES256, session_key)
    return encrypt_literal(data, session_key, esk)


def ours(message: bytes, kp: KeyPair) -> bytes:
    sk = pubkey.load_secret_key(kp.secret, kp.passphrase)
    return _decrypt_message(message, Keyring(pkesk_decryptors=[sk.decryptor()]))


def pysequoia_tsk(kp: KeyPair) -> pysequoia.Tsk:
    return pysequoia.Tsk.from_bytes(kp.secret)


# --------------------------------------------------------------------------- ours -> theirs


@pytest.mark.parametrize("name", ENCRYPTION_KEYS)
def test_our_pkesk_messages_decrypt_with_gpg(gpg: GPG, keys: dict[str, KeyPair], name: str) -> None:
    kp = keys[name]
    data = os.urandom(50_000)
    assert gpg.decrypt(our_message(kp.cert, data), passphrase=kp.passphrase or "").stdout == data


@pytest.mark.parametrize("name", ENCRYPTION_KEYS)
def test_our_pkesk_messages_decrypt_with_sqop(sqop: Sqop, keys: dict[str, KeyPair], name: str) -> None:
    kp = keys[name]
    data = os.urandom(50_000)
    out = sqop.decrypt(our_message(kp.cert, data), key=kp.secret, key_password=kp.passphrase)
    assert out.stdout == data


@pytest.mark.parametrize("name", ENCRYPTION_KEYS)
def test_our_pkesk_messages_decrypt_with_pysequoia(keys: dict[str, KeyPair], name: str) -> None:
    kp = keys[name]
    data = os.urandom(50_000)
    decryptor = pysequoia_tsk(kp).decryptor(kp.passphrase)
    assert pysequoia.decrypt(our_message(kp.cert, data), decryptor=decryptor).bytes == data


def test_one_pkesk_fronts_many_messages(gpg: GPG, sqop: Sqop, keys: dict[str, KeyPair]) -> None:
    """Write-only hosts: one public-key operation per session, reused for every blob."""
    kp = keys["gpg-cv25519"]
    session_key = os.urandom(32)
    esk = pubkey.pkesk_packet(pubkey.parse_certificate(kp.cert), SYM_AES256, session_key)
    blobs = [os.urandom(n) for n in (0, 1, 1000, 70_000)]
    messages = [encrypt_literal(b, session_key, esk) for b in blobs]
    assert len({m[len(esk) :] for m in messages}) == len(messages)  # fresh CFB prefix each time
    for blob, msg in zip(blobs, messages, strict=True):
        assert gpg.decrypt(msg, passphrase=kp.passphrase).stdout == blob
        assert sqop.decrypt(msg, key=kp.secret, key_password=kp.passphrase).stdout == blob
        assert ours(msg, kp) == blob


def test_key_slot_with_several_recipients(gpg: GPG, keys: dict[str, KeyPair]) -> None:
    """One message may carry PKESKs for several certificates; each opens it alone."""
    session_key = os.urandom(32)
    names = ["gpg-rsa3072", "sqop-cv25519", "gpg-nistp256"]
    esks = b"".join(pubkey.pkesk_packet(pubkey.parse_certificate(keys[n].cert), SYM_AES256, session_key) for n in names)
    msg = encrypt_literal(b"master keys", session_key, esks)
    assert [tag for tag, _ in esk_summary(msg)] == [1, 1, 1]
    for n in names:
        assert ours(msg, keys[n]) == b"master keys"
    assert gpg.decrypt(msg, passphrase=keys["gpg-rsa3072"].passphrase).stdout == b"master keys"


def test_message_for_someone_else_is_no_matching_key(keys: dict[str, KeyPair]) -> None:
    msg = our_message(keys["gpg-cv25519"].cert, b"not for you")
    with pytest.raises(NoMatchingKey):
        ours(msg, keys["sqop-cv25519"])
    with pytest.raises(NoMatchingKey):
        ours(msg, keys["gpg-cv25519-nopass"])


# --------------------------------------------------------------------------- theirs -> ours


@pytest.mark.parametrize("name", ENCRYPTION_KEYS)
@pytest.mark.parametrize("opts", [[], ["--compress-algo", "none"], ["--compress-algo", "bzip2"]])
def test_gpg_encrypt_opens_in_our_reader(gpg: GPG, keys: dict[str, KeyPair], name: str, opts: list[str]) -> None:
    kp = keys[name]
    data = b"gpg --encrypt payload\n" * 500
    msg = gpg.run("--encrypt", *opts, "--recipient", kp.fingerprint, input=data).stdout
    assert ours(msg, kp) == data


def test_gpg_sign_and_encrypt_opens_in_our_reader(gpg: GPG, keys: dict[str, KeyPair]) -> None:
    kp = keys["gpg-cv25519"]
    data = b"signed and encrypted"
    msg = gpg.run(
        "--sign",
        "--encrypt",
        "--local-user",
        kp.fingerprint,
        "--recipient",
        kp.fingerprint,
        input=data,
        passphrase=kp.passphrase,
    ).stdout
    assert ours(msg, kp) == data


def test_gpg_hidden_recipient_opens_in_our_reader(gpg: GPG, keys: dict[str, KeyPair]) -> None:
    """--hidden-recipient writes a wildcard key ID: every key of the right algorithm is tried."""
    for name in ("gpg-cv25519", "gpg-rsa3072"):
        kp = keys[name]
        msg = gpg.run("--encrypt", "--hidden-recipient", kp.fingerprint, input=b"hidden").stdout
        assert esk_summary(msg)[0][1][1:9] == b"\0" * 8
        assert ours(msg, kp) == b"hidden"


@pytest.mark.parametrize("name", ENCRYPTION_KEYS)
def test_sqop_encrypt_opens_in_our_reader(sqop: Sqop, keys: dict[str, KeyPair], name: str) -> None:
    kp = keys[name]
    data = os.urandom(40_000)
    assert ours(sqop.encrypt(data, cert=kp.cert), kp) == data


@pytest.mark.parametrize("name", [n for n in ENCRYPTION_KEYS if n != "pysequoia-rsa3k"])
def test_pysequoia_encrypt_opens_in_our_reader(keys: dict[str, KeyPair], name: str) -> None:
    kp = keys[name]
    data = os.urandom(40_000)
    msg = pysequoia.encrypt(data, recipients=[pysequoia.Cert.from_bytes(kp.cert)], armor=False)
    assert ours(msg, kp) == data


def test_pysequoia_seipd_v2_is_a_clean_error(keys: dict[str, KeyPair]) -> None:
    """Sequoia writes SEIPD v2 (AEAD) to certificates that advertise it; haeedge never writes
    those and does not read them, but must fail cleanly."""
    kp = keys["pysequoia-rsa3k"]
    msg = pysequoia.encrypt(b"aead", recipients=[pysequoia.Cert.from_bytes(kp.cert)], armor=False)
    if esk_summary(msg)[0][1][0] == 3:
        assert ours(msg, kp) == b"aead"
    else:
        with pytest.raises(OpenPGPError):
            ours(msg, kp)


def test_gpg_export_secret_subkeys_stub_primary(gpg: GPG, keys: dict[str, KeyPair]) -> None:
    """``--export-secret-subkeys`` leaves a gnu-dummy primary: the subkey still decrypts."""
    kp = keys["gpg-cv25519"]
    exported = gpg.run("--export-secret-subkeys", kp.fingerprint, passphrase=kp.passphrase).stdout
    sk = pubkey.load_secret_key(exported, kp.passphrase)
    assert [k.is_primary for k in sk.secret_keys()] == [False]
    msg = our_message(kp.cert, b"laptop copy")
    assert _decrypt_message(msg, Keyring(pkesk_decryptors=[sk.decryptor()])) == b"laptop copy"
    with pytest.raises(OpenPGPError, match="signing"):
        pubkey.sign_detached(sk, b"x")


# --------------------------------------------------------------------------- secret key handling


@pytest.mark.parametrize("name", ["gpg-cv25519", "gpg-rsa3072", "gpg-nistp256", "sqop-cv25519-pass"])
def test_protected_secret_keys_need_the_right_passphrase(keys: dict[str, KeyPair], name: str) -> None:
    kp = keys[name]
    with pytest.raises(WrongPassword, match="wrong passphrase"):
        pubkey.load_secret_key(kp.secret, "not the passphrase")
    with pytest.raises(WrongPassword, match="none was given"):
        pubkey.load_secret_key(kp.secret)
    assert pubkey.load_secret_key(kp.secret, kp.passphrase).fingerprint_hex == kp.fingerprint


def test_armored_secret_export(gpg: GPG, keys: dict[str, KeyPair]) -> None:
    kp = keys["gpg-rsa3072"]
    armored = gpg.run("--armor", "--export-secret-keys", kp.fingerprint, passphrase=kp.passphrase).stdout
    assert armored.startswith(b"-----BEGIN PGP PRIVATE KEY BLOCK-----")
    sk = pubkey.load_secret_key(armored.decode(), kp.passphrase)
    assert ours(our_message(kp.cert, b"armored"), KeyPair(kp.name, kp.cert, armored, kp.passphrase, kp.fingerprint))
    assert sk.fingerprint_hex == kp.fingerprint


def test_passphrase_sealer_and_pkesk_keys_are_independent(keys: dict[str, KeyPair]) -> None:
    kp = keys["gpg-cv25519-nopass"]
    msg = PassphraseSealer(b"pw").seal(b"x")
    with pytest.raises(NoMatchingKey):
        ours(msg, kp)
