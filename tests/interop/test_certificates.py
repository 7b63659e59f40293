"""Certificates from gpg, sqop and pysequoia: what we read matches what they say, and
what must not be trusted (revoked, expired, forged bindings) is not used."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pysequoia
import pytest

from haeedge.crypto import pubkey
from haeedge.crypto.openpgp import SYM_AES256, Keyring, decrypt_message, encrypt_literal, iter_packets, packet_header
from haeedge.errors import OpenPGPError
from tests.support.openpgp import ENCRYPTION_KEYS, GPG, KeyPair, Sqop


def colons(gpg: GPG, fpr: str) -> list[list[str]]:
    out = gpg.run("--with-colons", "--fixed-list-mode", "--list-keys", fpr).stdout.decode()
    return [line.split(":") for line in out.splitlines()]


@pytest.mark.parametrize("name", ENCRYPTION_KEYS)
def test_fingerprints_user_ids_and_encryption_key_match_gpg(gpg: GPG, keys: dict[str, KeyPair], name: str) -> None:
    kp = keys[name]
    cert = pubkey.parse_certificate(kp.cert)
    rows = colons(gpg, kp.fingerprint)
    fprs = [r[9] for r in rows if r[0] == "fpr"]
    assert [k.fingerprint_hex for k in cert.keys()] == fprs
    assert cert.fingerprint_hex == pysequoia.Cert.from_bytes(kp.cert).fingerprint.upper()
    uids = [r[9] for r in rows if r[0] == "uid"]
    assert cert.user_ids == uids
    # gpg's capability letters per key (pub then subs, in order)
    caps = [r[11] for r in rows if r[0] in ("pub", "sub")]
    for key, cap in zip(cert.keys(), caps, strict=True):
        assert bool(key.flags & pubkey.FLAG_ENCRYPT) == ("e" in cap)
        assert bool(key.flags & pubkey.FLAG_SIGN) == ("s" in cap)
    enc = cert.encryption_key()
    assert "e" in caps[[k.fingerprint_hex for k in cert.keys()].index(enc.fingerprint_hex)]


def test_armored_and_multi_certificate_exports(gpg: GPG, keys: dict[str, KeyPair]) -> None:
    fprs = [keys[n].fingerprint for n in ("gpg-cv25519", "gpg-rsa3072", "sqop-cv25519")]
    armored = gpg.run("--armor", "--export", *fprs).stdout
    certs = pubkey.parse_certificates(armored.decode())
    assert sorted(c.fingerprint_hex for c in certs) == sorted(fprs)
    with pytest.raises(OpenPGPError, match="expected one certificate"):
        pubkey.parse_certificate(armored)


def test_raw_round_trips_through_gpg_and_sqop(sqop: Sqop, keys: dict[str, KeyPair]) -> None:
    """``Certificate.raw`` (public view of a secret export) is a certificate the tools accept."""
    kp = keys["sqop-cv25519"]
    raw = pubkey.load_secret_key(kp.secret).cert.raw
    assert all(p.tag not in (5, 7) for p in iter_packets(raw))
    assert pubkey.parse_certificate(raw).fingerprint_hex == kp.fingerprint
    msg = sqop.encrypt(b"via raw", cert=raw)
    assert sqop.decrypt(msg, key=kp.secret).stdout == b"via raw"


def test_signing_only_certificate_is_refused_for_encryption(gpg: GPG) -> None:
    gpg.run("--quick-gen-key", "signonly <s@example.org>", "ed25519", "sign", "never", passphrase="")
    fpr = gpg.fingerprints("signonly <s@example.org>")[0]
    cert = pubkey.parse_certificate(gpg.export(fpr))
    with pytest.raises(OpenPGPError, match="no usable encryption key"):
        pubkey.pkesk_packet(cert, SYM_AES256, os.urandom(32))
    _, host_cert = pubkey.generate_signing_key("haeedge host <h>")
    with pytest.raises(OpenPGPError, match="no usable encryption key"):
        pubkey.pkesk_packet(pubkey.parse_certificate(host_cert), SYM_AES256, os.urandom(32))


def test_sqop_certificate_without_user_id(sqop: Sqop) -> None:
    secret = sqop.run("generate-key", "--no-armor").stdout
    cert = pubkey.parse_certificate(sqop.extract_cert(secret))
    assert cert.user_ids == []
    key = os.urandom(32)
    msg = encrypt_literal(b"no uid", key, pubkey.pkesk_packet(cert, SYM_AES256, key))
    assert sqop.decrypt(msg, key=secret).stdout == b"no uid"


def test_expired_encryption_subkey_is_skipped(gpg: GPG) -> None:
    uid = "expiring <x@example.org>"
    fpr = gpg.gen_key(uid, "cv25519")
    gpg.run("--quick-add-key", fpr, "cv25519", "encr", "2d", passphrase="")
    cert = pubkey.parse_certificate(gpg.export(fpr))
    forever, expiring = [k for k in cert.subkeys if k.flags & pubkey.FLAG_ENCRYPT]
    assert forever.expires is None and expiring.expires is not None
    later = int(time.time()) + 3 * 86400
    assert cert.encryption_key().fingerprint == expiring.fingerprint  # newest first
    assert cert.encryption_key(now=later).fingerprint == forever.fingerprint
    gpg.run("--quick-set-expire", fpr, "1d", "*", passphrase="")  # every subkey now expires
    cert = pubkey.parse_certificate(gpg.export(fpr))
    with pytest.raises(OpenPGPError, match="expired"):
        cert.encryption_key(now=later)


def test_revoked_certificate_is_refused(gpg: GPG) -> None:
    uid = "revoked <r@example.org>"
    fpr = gpg.gen_key(uid, "cv25519")
    rev = (Path(gpg.home) / "openpgp-revocs.d" / f"{fpr}.rev").read_text()
    gpg.import_(rev.replace(":-----BEGIN", "-----BEGIN").encode())
    cert = pubkey.parse_certificate(gpg.export(fpr))
    assert cert.revoked
    with pytest.raises(OpenPGPError, match="revoked"):
        pubkey.pkesk_packet(cert, SYM_AES256, os.urandom(32))


def test_revoked_subkey_is_skipped(gpg: GPG) -> None:
    uid = "subrev <sr@example.org>"
    fpr = gpg.gen_key(uid, "cv25519")
    gpg.run("--quick-add-key", fpr, "cv25519", "encr", "never", passphrase="")
    # revoke the newest encryption subkey (key 2) through gpg's edit menu
    script = b"key 2\nrevkey\ny\n0\n\ny\nsave\n"
    gpg.run("--command-fd", "0", "--edit-key", fpr, input=script, passphrase="")
    cert = pubkey.parse_certificate(gpg.export(fpr))
    first, second = cert.subkeys
    assert second.revoked and not first.revoked
    assert cert.encryption_key().fingerprint == first.fingerprint
    caps = [r for r in colons(gpg, fpr) if r[0] == "sub"]
    assert caps[1][1] == "r"


def _packets(data: bytes) -> list[tuple[int, bytes]]:
    return [(p.tag, bytes(p.body)) for p in iter_packets(data)]


def _serialise(packets: list[tuple[int, bytes]]) -> bytes:
    return b"".join(packet_header(t, len(b)) + b for t, b in packets)


def test_subkey_grafted_from_another_certificate_is_ignored(keys: dict[str, KeyPair]) -> None:
    """An attacker appends their own encryption subkey (bound by their own primary) to the
    victim's certificate: it must never be chosen, or key slots would be readable by them."""
    victim = _packets(keys["gpg-cv25519-nopass"].cert)
    attacker = _packets(keys["sqop-cv25519"].cert)
    sub_at = max(i for i, (t, _) in enumerate(attacker) if t == 14)
    grafted = _serialise(victim + attacker[sub_at : sub_at + 2])
    cert = pubkey.parse_certificate(grafted)
    assert len(cert.subkeys) == 1
    genuine = pubkey.parse_certificate(keys["gpg-cv25519-nopass"].cert).encryption_key()
    assert cert.encryption_key().fingerprint == genuine.fingerprint


def test_certificate_without_binding_signatures_has_no_encryption_key(keys: dict[str, KeyPair]) -> None:
    packets = _packets(keys["gpg-rsa3072"].cert)
    stripped = []
    after_sub = False
    for tag, body in packets:
        if tag == 14:
            after_sub = True
        elif tag == 2 and after_sub:
            continue
        stripped.append((tag, body))
    cert = pubkey.parse_certificate(_serialise(stripped))
    assert cert.subkeys == []
    with pytest.raises(OpenPGPError, match="no usable encryption key"):
        cert.encryption_key()


def test_forged_user_id_is_dropped(keys: dict[str, KeyPair]) -> None:
    packets = _packets(keys["gpg-cv25519-nopass"].cert)
    forged = [(13, b"Mallory <m@example.org>") if t == 13 else (t, b) for t, b in packets]
    with pytest.raises(OpenPGPError, match="no valid self-signature"):
        pubkey.parse_certificate(_serialise(forged))


def test_secret_key_decrypts_what_gpg_wrote_after_expiry(gpg: GPG) -> None:
    """Expired or revoked keys still decrypt: old backups must stay readable."""
    uid = "oldkey <o@example.org>"
    fpr = gpg.gen_key(uid, "rsa3072")
    msg = gpg.run("--encrypt", "--recipient", fpr, input=b"old backup").stdout
    gpg.run("--quick-set-expire", fpr, "1d", "*", passphrase="")
    sk = pubkey.load_secret_key(gpg.export_secret(fpr), now=int(time.time()) + 5 * 86400)
    assert decrypt_message(msg, Keyring(pkesk_decryptors=[sk.decryptor()])) == b"old backup"
