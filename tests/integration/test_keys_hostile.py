"""Hostile key slots, key records, identity files and snapshot signatures: clean errors, never a traceback.

Anyone with write access to the storage (a compromised backup host, the
provider) can put any bytes into keys/ or a snapshot's signature fields.
"""

from __future__ import annotations

import hashlib
import json
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haeedge.crypto.openpgp import Keyring, PassphraseSealer, armor
from haeedge.crypto.pubkey import sign_detached
from haeedge.errors import FormatError, HaeedgeError
from haeedge.repo.keys import MasterKeys, decode_record, key_object_kind, open_slot, seal_slot_for_passphrase
from haeedge.repo.signing import Signer, SignerRegistry, generate_key
from haeedge.repo.snapshot import Snapshot, now_iso

PASSWORD = b"correct horse battery staple"


def _put_key_object(repo_path, data: bytes) -> str:
    oid = hashlib.sha256(data).hexdigest()
    (repo_path / "keys" / oid).write_bytes(data)
    return oid


def _clean(r, code: int) -> None:
    assert r.code == code, r.describe()
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.describe()


# ---------------------------------------------------------------------- key slots


def test_garbage_in_keys_does_not_lock_anyone_out(cli, fast_repo, tmp_path):
    junk = [os.urandom(500), b"\xc3\x05\x04\x09\x03\x08", b"", armor(os.urandom(64)).encode()]
    ids = [_put_key_object(cli.repo_path, j) for j in junk]
    (cli.repo_path / "keys" / ("f" * 64)).write_bytes(b"named wrongly")  # damaged: name != hash
    r = cli("--json", "key", "list")
    _clean(r, 0)
    kinds = {k["id"]: k["kind"] for k in r.json()["keys"]}
    assert all(kinds[i] == "unknown" for i in ids)
    _clean(cli("snapshots"), 0)
    r = cli("--json", "verify")
    _clean(r, 4)
    assert [f["object"] for f in r.json()["findings"] if f["severity"] == "error"] == [f"keys/{'f' * 64}"]


def test_slot_with_the_right_password_but_malformed_content(cli, fast_repo):
    (good,) = [p for p in (cli.repo_path / "keys").iterdir() if key_object_kind(p.read_bytes()) == "passphrase"]
    good.unlink()
    for payload in (b"not json", b'{"haeedge_key_slot": 1}', json.dumps(
            {"haeedge_key_slot": 1, "repository_id": "x", "keys": {"meta": "00", "blob_id": "zz"}}).encode(),
            json.dumps({"haeedge_key_slot": 1, "repository_id": "x", "role": "writer",
                        "keys": {k: "11" * 32 for k in ("content", "tree", "meta", "blob_id")}}).encode()):
        oid = _put_key_object(cli.repo_path, PassphraseSealer(PASSWORD, count_byte=0x10).seal(payload))
        r = cli("snapshots")
        _clean(r, 4)
        assert "key slot" in r.stderr and ("malformed" in r.stderr or "writer slot" in r.stderr), r.stderr
        (cli.repo_path / "keys" / oid).unlink()


def test_hostile_identity_files(cli, fast_repo, tmp_path):
    real = armor(random.Random(1).randbytes(3000), "PRIVATE KEY BLOCK")
    cases = {
        "truncated.asc": real[: len(real) // 2],
        "binary-junk.gpg": b"\x95\x01\x00" + os.urandom(300),
        "nested.gpg": b"\xc8" * 200,
        "huge.asc": b"A" * (17 << 20),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        r = cli("--identity-file", path, "snapshots")
        _clean(r, 2)
        assert "--identity-file" in r.stderr


def test_recipient_file_with_two_certificates(cli, fast_repo, tmp_path):
    from haeedge.crypto.pubkey import generate_signing_key

    both = tmp_path / "two.gpg"
    both.write_bytes(generate_signing_key("a")[1] + generate_signing_key("b")[1])
    r = cli("key", "add", "--recipient-file", both)
    _clean(r, 2)
    assert "expected one certificate" in r.stderr


# ---------------------------------------------------------------------- key records


def test_hostile_records_are_findings(cli, fast_repo):
    with fast_repo.open(load_index=False) as repo:
        meta = PassphraseSealer(repo.keys.passphrase("meta"))
        payloads = [b"[]", b"not json at all", b'{"haeedge_key_record": 1}',
                    json.dumps({"haeedge_key_record": 1, "repository_id": repo.config.repository_id,
                                "slot": "ab" * 32, "kind": "writer", "role": "writer", "signing_cert": "!!",
                                "signing_fingerprint": "X", "signer": "Y", "signature": "Z"}).encode(),
                    b"[" * 100_000 + b"]" * 100_000]
        ids = [_put_key_object(cli.repo_path, meta.seal(p)) for p in payloads]
    r = cli("--json", "verify")
    _clean(r, 4)
    flagged = {f["object"] for f in r.json()["findings"] if f["severity"] == "error"}
    assert flagged == {f"keys/{i}" for i in ids}
    r = cli("--json", "key", "list")
    _clean(r, 0)
    assert len(r.json()["problems"]) == len(ids) and len(r.json()["keys"]) == 1
    _clean(cli("snapshots"), 0)


_GOOD_RECORD = {"haeedge_key_record": 1, "repository_id": "r" * 64, "slot": "ab" * 32, "kind": "writer",
                "role": "writer", "label": "", "host": "web1", "created": "2026-01-01T00:00:00Z",
                "signing_cert": "", "signing_fingerprint": "F" * 40, "signer": "E" * 40, "signature": "sig"}
_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=80),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                         max_size=3), max_leaves=6)


@st.composite
def _mutated_records(draw) -> bytes:
    doc = dict(_GOOD_RECORD)
    for name in draw(st.lists(st.sampled_from(sorted(_GOOD_RECORD) + ["removed", "recipient_cert"]), max_size=4)):
        if draw(st.booleans()):
            doc.pop(name, None)
        else:
            doc[name] = draw(_json_values)
    return json.dumps(doc).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=2000), _mutated_records()))
def test_record_decoder_accepts_only_well_typed_records(data):
    try:
        rec = decode_record("0" * 64, data, "r" * 64)
    except FormatError:
        return
    # Whatever passes must be exactly the shape the rest of haeedge relies on.
    assert rec.doc["repository_id"] == "r" * 64 and rec.kind in ("passphrase", "certificate", "writer")
    assert rec.role in ("owner", "writer") and len(rec.slot) == 64 and set(rec.slot) <= set("0123456789abcdef")
    assert all(isinstance(rec.doc[n], str) for n in ("signing_fingerprint", "signer", "signature"))
    assert isinstance(rec.host, str) and isinstance(rec.label, str) and isinstance(rec.signing_cert, bytes)
    assert rec.removed is None or isinstance(rec.removed, str)


def test_record_decoder_accepts_a_well_formed_record():
    assert decode_record("0" * 64, json.dumps(_GOOD_RECORD).encode(), "r" * 64).host == "web1"


# ---------------------------------------------------------------------- snapshot signatures


SIGNATURES = [
    "not a signature",
    "-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n",
    "-----BEGIN PGP SIGNATURE-----\n\n" + "A" * 100 + "\n",
    armor(b"\xc2\x05\x04\x00\x16\x08\x00", "SIGNATURE"),  # truncated signature packet
    armor(os.urandom(400), "SIGNATURE"),
    "x" * 200_000,
    "",
]


def test_hostile_signatures_are_findings_not_crashes(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    cli("backup", src).ok()
    forged = []
    with fast_repo.open() as repo:
        (snap,) = repo.list_snapshots()
        for i, sig in enumerate(SIGNATURES):
            s = Snapshot.from_bytes(snap.to_bytes(), "")
            s.signature = sig
            s.tags = [f"hostile-{i}"]
            forged.append(repo.put_object("snapshots", repo.seal("meta", s.to_bytes())))
        for bad_signer in ("zz", "A" * 40, "A" * 10_000):
            s = Snapshot.from_bytes(snap.to_bytes(), "")
            s.signer, s.tags = bad_signer, [f"signer-{len(bad_signer)}"]
            forged.append(repo.put_object("snapshots", repo.seal("meta", s.to_bytes())))
        doc = json.loads(snap.to_bytes())
        doc["signature"] = {"nested": ["object"]}
        wrong_type = repo.put_object("snapshots", repo.seal("meta", json.dumps(doc).encode()))
    r = cli("--json", "verify")
    _clean(r, 4)
    flagged = {s for f in r.json()["findings"] if f["severity"] == "error" for s in f["snapshots"]}
    assert set(forged) <= flagged
    assert any(f["object"] == f"snapshots/{wrong_type}" and "malformed" in f["message"]
               for f in r.json()["findings"])
    r = cli("snapshots")
    _clean(r, 0)
    assert "BAD SIGNATURE" in r.stdout and "UNKNOWN KEY" in r.stdout


@pytest.fixture(scope="module")
def registry():
    secret = generate_key("haeedge repository owner test")
    signer = Signer(secret)
    return SignerRegistry(signer.cert, [], []), signer


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(signature=st.one_of(st.text(max_size=3000), st.binary(max_size=3000).map(lambda b: armor(b, "SIGNATURE"))),
       mutate=st.integers(min_value=0, max_value=10_000))
def test_signature_checker_never_crashes(registry, signature, mutate):
    reg, signer = registry
    snap = Snapshot(time=now_iso(), host="h", paths=["/"], kind="full", tree=[])
    snap.signer = signer.fingerprint
    snap.signature = signature
    assert not reg.check_snapshot(snap).ok
    # A real signature whose signature value has one byte changed is bad, never an exception.
    good = Snapshot(time=now_iso(), host="h", paths=["/"], kind="full", tree=[])
    good.signer = signer.fingerprint
    good.signature = signer.sign(good.signed_bytes())
    assert reg.check_snapshot(good).ok
    raw = bytearray(sign_detached(signer.key, good.signed_bytes()))
    raw[len(raw) - 1 - mutate % 64] ^= 1 + mutate % 255
    good.signature = armor(bytes(raw), "SIGNATURE")
    assert not reg.check_snapshot(good).ok


@settings(max_examples=100, deadline=None)
@given(flips=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=4),
       cut=st.integers(min_value=0, max_value=10**6))
def test_mutated_slot_is_none_or_clean_error(flips, cut):
    keys = MasterKeys.generate()
    keys.signing_key = b"\x00" * 10
    slot = bytearray(seal_slot_for_passphrase(keys, "r" * 64, PASSWORD, count_byte=0x10))
    for f in flips:
        slot[f % len(slot)] ^= 1 + (f & 0x7F)
    data = bytes(slot[: max(1, cut % (len(slot) + 1))])
    try:
        got = open_slot("s" * 64, data, Keyring([PASSWORD]))
    except HaeedgeError:
        return
    assert got is None or got.keys.meta == keys.meta
