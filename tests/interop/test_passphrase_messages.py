"""SKESK + SEIPD: our passphrase messages open in gpg, sqop and pysequoia, and theirs open in ours."""

from __future__ import annotations

import os

import pysequoia
import pytest

from haeedge.crypto.openpgp import Keyring, NoMatchingKey, PassphraseSealer, dearmor, decrypt_message, esk_summary
from tests.support.openpgp import GPG, Sqop

PASSPHRASE = "correct horse battery staple"
#: count byte 0x60 = 65,536 bytes hashed: cheap for tests, still exercises iterated S2K.
SEALERS = {
    "salted": PassphraseSealer(PASSPHRASE.encode()),
    "iterated": PassphraseSealer(PASSPHRASE.encode(), count_byte=0x60),
    "iterated-max": PassphraseSealer(PASSPHRASE.encode(), count_byte=0xFF),
}
#: 65,536 bytes: the smallest blob that encrypt_literal encrypts in pieces instead of one joined call.
PAYLOADS = {"empty": b"", "small": b"haeedge blob\n", "binary-64k": os.urandom(1 << 16),
            "binary-300k": os.urandom(300_000)}


def ours(data: bytes, passphrase: str = PASSPHRASE) -> bytes:
    return decrypt_message(data, Keyring(passphrases=[passphrase.encode()]))


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("mode", SEALERS)
def test_our_skesk_messages_decrypt_with_gpg(gpg: GPG, mode: str, payload: str) -> None:
    msg = SEALERS[mode].seal(PAYLOADS[payload])
    assert gpg.decrypt(msg, passphrase=PASSPHRASE).stdout == PAYLOADS[payload]


@pytest.mark.parametrize("mode", SEALERS)
def test_our_skesk_messages_decrypt_with_sqop(sqop: Sqop, mode: str) -> None:
    data = PAYLOADS["binary-300k"]
    assert sqop.decrypt(SEALERS[mode].seal(data), password=PASSPHRASE).stdout == data


@pytest.mark.parametrize("mode", SEALERS)
def test_our_skesk_messages_decrypt_with_pysequoia(mode: str) -> None:
    data = PAYLOADS["binary-300k"]
    assert pysequoia.decrypt(SEALERS[mode].seal(data), passwords=[PASSPHRASE]).bytes == data


def test_gpg_rejects_our_message_with_the_wrong_passphrase(gpg: GPG) -> None:
    msg = SEALERS["salted"].seal(b"secret")
    proc = gpg.decrypt(msg, passphrase="not it", check=False)
    assert proc.returncode != 0 and proc.stdout == b""


GPG_SYMMETRIC_OPTIONS = {
    "default": [],
    "zip": ["--compress-algo", "zip"],
    "zlib": ["--compress-algo", "zlib"],
    "bzip2": ["--compress-algo", "bzip2"],
    "uncompressed": ["--compress-algo", "none"],
    "aes128-sha1-iterated": ["--cipher-algo", "AES", "--s2k-digest-algo", "SHA1", "--s2k-mode", "3"],
    "aes192-salted": ["--cipher-algo", "AES192", "--s2k-mode", "1"],
    "sha512-count": ["--s2k-digest-algo", "SHA512", "--s2k-count", "65011712"],
    "armored": ["--armor"],
}


@pytest.mark.parametrize("opts", GPG_SYMMETRIC_OPTIONS)
def test_gpg_symmetric_messages_open_in_our_reader(gpg: GPG, opts: str) -> None:
    data = b"from gpg --symmetric\n" * 1000
    msg = gpg.run("--symmetric", *GPG_SYMMETRIC_OPTIONS[opts], input=data, passphrase=PASSPHRASE).stdout
    if opts == "armored":
        msg = dearmor(msg)
    assert ours(msg) == data
    with pytest.raises(NoMatchingKey):
        ours(msg, "wrong")


def test_sqop_password_messages_open_in_our_reader(sqop: Sqop) -> None:
    data = os.urandom(70_000)
    msg = sqop.encrypt(data, password=PASSPHRASE)
    assert [tag for tag, _ in esk_summary(msg)] == [3]
    assert ours(msg) == data


def test_pysequoia_password_messages_open_in_our_reader() -> None:
    data = os.urandom(70_000)
    msg = pysequoia.encrypt(data, passwords=[PASSPHRASE], armor=False)
    assert ours(msg) == data
    with pytest.raises(NoMatchingKey):
        ours(msg, "wrong")
