"""Per-host snapshot signatures: ours verify with gpg and sqop, theirs verify with ours,
and tampering is caught by everyone."""

from __future__ import annotations

import os

import pysequoia
import pytest

from haeedge.crypto import pubkey
from haeedge.crypto.openpgp import armor
from haeedge.errors import OpenPGPError, WrongPassword
from tests.support.openpgp import GPG, KeyPair, Sqop, Workdir

MANIFEST = b'{"snapshot": "2026-11-22T00:00:00Z", "parent": null, "tree": "ab12"}\n' * 50


@pytest.fixture(scope="module")
def host_key(gpg: GPG) -> tuple[bytes, bytes]:
    """A generated host key whose certificate the session's gpg knows."""
    secret, cert = pubkey.generate_signing_key("haeedge host <node-1.example.org>")
    gpg.import_(cert)
    return secret, cert


def gpg_verify(gpg: GPG, work: Workdir, data: bytes, sig: bytes):
    return gpg.run("--verify", work.file(sig), work.file(data), check=False)


def test_generated_key_signature_verifies_with_gpg(gpg: GPG, work: Workdir, host_key: tuple[bytes, bytes]) -> None:
    secret, cert = host_key
    sk = pubkey.load_secret_key(secret)
    sig = pubkey.sign_detached(sk, MANIFEST)
    proc = gpg_verify(gpg, work, MANIFEST, sig)
    assert proc.returncode == 0, proc.stderr
    assert b'Good signature from "haeedge host <node-1.example.org>"' in proc.stderr
    check = pubkey.verify_detached(pubkey.parse_certificate(cert), MANIFEST, sig)
    assert check.ok and check.fingerprint == sk.fingerprint and check.created is not None


def test_armored_signature_verifies_with_gpg(gpg: GPG, work: Workdir, host_key: tuple[bytes, bytes]) -> None:
    secret, cert = host_key
    sig = pubkey.sign_detached(pubkey.load_secret_key(secret), MANIFEST, armored=True)
    assert sig.startswith(b"-----BEGIN PGP SIGNATURE-----")
    assert gpg_verify(gpg, work, MANIFEST, sig).returncode == 0
    assert pubkey.verify_detached(pubkey.parse_certificate(cert), MANIFEST, sig.decode()).ok


def test_generated_key_signature_verifies_with_sqop(sqop: Sqop, host_key: tuple[bytes, bytes]) -> None:
    secret, cert = host_key
    sig = pubkey.sign_detached(pubkey.load_secret_key(secret), MANIFEST)
    out = sqop.verify(MANIFEST, sig, cert).stdout.decode()
    assert pubkey.parse_certificate(cert).fingerprint_hex in out


def test_generated_key_signature_verifies_with_pysequoia(host_key: tuple[bytes, bytes]) -> None:
    secret, cert = host_key
    sig = pubkey.sign_detached(pubkey.load_secret_key(secret), MANIFEST)
    c = pysequoia.Cert.from_bytes(cert)
    result = pysequoia.verify(bytes=MANIFEST, store=lambda _ids: [c], signature=pysequoia.Sig.from_bytes(sig))
    assert len(result.valid_sigs) == 1


def test_tampered_data_is_rejected_by_gpg_sqop_and_us(
    gpg: GPG, sqop: Sqop, work: Workdir, host_key: tuple[bytes, bytes]
) -> None:
    secret, cert = host_key
    sig = pubkey.sign_detached(pubkey.load_secret_key(secret), MANIFEST)
    bad = MANIFEST[:-2] + b"!\n"
    proc = gpg_verify(gpg, work, bad, sig)
    assert proc.returncode != 0 and b"BAD signature" in proc.stderr
    assert sqop.verify(bad, sig, cert, check=False).returncode != 0
    check = pubkey.verify_detached(pubkey.parse_certificate(cert), bad, sig)
    assert not check.ok and check.fingerprint == pubkey.parse_certificate(cert).fingerprint


@pytest.mark.parametrize("where", ["left16", "r", "s", "created", "hash-algo"])
def test_tampered_signature_is_rejected_by_gpg_and_us(
    gpg: GPG, work: Workdir, host_key: tuple[bytes, bytes], where: str
) -> None:
    secret, cert = host_key
    sig = bytearray(pubkey.sign_detached(pubkey.load_secret_key(secret), MANIFEST))
    # layout: 2 header, 4 fixed, 2+hashed, 2+unhashed, left16, MPI r, MPI s
    hashed_len = int.from_bytes(sig[6:8], "big")
    unhashed_at = 8 + hashed_len
    left16_at = unhashed_at + 2 + int.from_bytes(sig[unhashed_at : unhashed_at + 2], "big")
    pos = {
        "left16": left16_at,
        "r": left16_at + 2 + 2 + 5,
        "s": len(sig) - 3,
        "created": 8 + sig[8:unhashed_at].index(b"\x05\x02") + 3,  # creation-time subpacket
        "hash-algo": 5,
    }[where]
    sig[pos] ^= 0x01
    # left16 is an unsigned quick-check hint: gpg ignores it, we insist on it (stricter)
    assert (gpg_verify(gpg, work, MANIFEST, bytes(sig)).returncode != 0) or where == "left16"
    try:
        assert not pubkey.verify_detached(pubkey.parse_certificate(cert), MANIFEST, bytes(sig)).ok
    except OpenPGPError:
        pass


def test_signature_from_another_host_is_not_ok(host_key: tuple[bytes, bytes]) -> None:
    other_secret, _ = pubkey.generate_signing_key("haeedge host <other>")
    sig = pubkey.sign_detached(pubkey.load_secret_key(other_secret), MANIFEST)
    check = pubkey.verify_detached(pubkey.parse_certificate(host_key[1]), MANIFEST, sig)
    assert check == (False, None, None)


def test_verify_against_several_host_certificates(host_key: tuple[bytes, bytes]) -> None:
    others = [pubkey.generate_signing_key(f"haeedge host <n{i}>") for i in range(3)]
    certs = [pubkey.parse_certificate(c) for _, c in others] + [pubkey.parse_certificate(host_key[1])]
    sig = pubkey.sign_detached(pubkey.load_secret_key(others[1][0]), MANIFEST)
    check = pubkey.verify_detached(certs, MANIFEST, sig)
    assert check.ok and check.fingerprint == certs[1].fingerprint


def test_protected_generated_key_imports_into_gpg_and_signs(gpg: GPG, work: Workdir) -> None:
    secret, cert = pubkey.generate_signing_key("haeedge host <protected>", passphrase="host key passphrase")
    gpg.import_(secret, passphrase="host key passphrase")
    fpr = pubkey.parse_certificate(cert).fingerprint_hex
    sig = gpg.run("--detach-sign", "--local-user", fpr, input=MANIFEST, passphrase="host key passphrase").stdout
    assert pubkey.verify_detached(pubkey.parse_certificate(cert), MANIFEST, sig).ok
    with pytest.raises(WrongPassword):
        pubkey.load_secret_key(secret, "nope")
    ours = pubkey.sign_detached(pubkey.load_secret_key(secret, "host key passphrase"), MANIFEST)
    assert gpg_verify(gpg, work, MANIFEST, ours).returncode == 0


def test_gpg_and_sqop_accept_our_armored_certificate(gpg: GPG, sqop: Sqop, work: Workdir) -> None:
    secret, cert = pubkey.generate_signing_key("haeedge host <armored>")
    armored = pubkey.parse_certificate(cert).armored()
    gpg.import_(armored.encode())
    sig = pubkey.sign_detached(pubkey.load_secret_key(secret), b"x")
    assert gpg_verify(gpg, work, b"x", sig).returncode == 0
    assert sqop.verify(b"x", sig, armored.encode()).returncode == 0
    assert armor(cert, "PUBLIC KEY BLOCK") == armored


# --------------------------------------------------------------------------- their signatures, our verifier


@pytest.mark.parametrize("name", ["gpg-cv25519", "gpg-rsa3072", "gpg-nistp256"])
def test_gpg_detached_signatures_verify_with_us(gpg: GPG, keys: dict[str, KeyPair], name: str) -> None:
    kp = keys[name]
    sig = gpg.run("--detach-sign", "--local-user", kp.fingerprint, input=MANIFEST, passphrase=kp.passphrase).stdout
    cert = pubkey.parse_certificate(kp.cert)
    assert pubkey.verify_detached(cert, MANIFEST, sig).ok
    assert not pubkey.verify_detached(cert, MANIFEST + b"x", sig).ok


@pytest.mark.parametrize("name", ["sqop-cv25519", "sqop-cv25519-pass"])
def test_sqop_signatures_verify_with_us(sqop: Sqop, work: Workdir, keys: dict[str, KeyPair], name: str) -> None:
    kp = keys[name]
    args = ["sign", "--no-armor"]
    if kp.passphrase:
        args += ["--with-key-password", work.file(kp.passphrase)]
    sig = sqop.run(*args, "--", work.file(kp.secret), input=MANIFEST).stdout
    check = pubkey.verify_detached(pubkey.parse_certificate(kp.cert), MANIFEST, sig)
    assert check.ok
    signing = pubkey.parse_certificate(kp.cert).signing_keys()
    assert check.fingerprint in {k.fingerprint for k in signing}


def test_pysequoia_signatures_verify_with_us(keys: dict[str, KeyPair]) -> None:
    kp = keys["pysequoia-rsa3k"]
    sig = pysequoia.sign(
        pysequoia.Tsk.from_bytes(kp.secret).signer(), MANIFEST, mode=pysequoia.SignatureMode.DETACHED, armor=False
    )
    assert pubkey.verify_detached(pubkey.parse_certificate(kp.cert), MANIFEST, sig).ok


@pytest.mark.parametrize("name", ["gpg-cv25519", "gpg-rsa3072", "gpg-nistp256", "sqop-cv25519"])
def test_our_signatures_with_their_keys_verify_with_gpg(
    gpg: GPG, work: Workdir, keys: dict[str, KeyPair], name: str
) -> None:
    kp = keys[name]
    sig = pubkey.sign_detached(pubkey.load_secret_key(kp.secret, kp.passphrase), MANIFEST)
    proc = gpg_verify(gpg, work, MANIFEST, sig)
    assert proc.returncode == 0, proc.stderr


def test_random_payloads_round_trip(host_key: tuple[bytes, bytes]) -> None:
    sk = pubkey.load_secret_key(host_key[0])
    cert = pubkey.parse_certificate(host_key[1])
    for n in (0, 1, 100, 100_000):
        data = os.urandom(n)
        assert pubkey.verify_detached(cert, data, pubkey.sign_detached(sk, data)).ok
