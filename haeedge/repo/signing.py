"""Signed snapshots and signed key records: who wrote what, checkable with ``gpg --verify``.

Why: a write-only host holds ``meta`` (it must write snapshots), so nothing
but a signature stops a compromised host from writing snapshots in another
host's name. Every credential carries an OpenPGP signing key in its slot:
owner slots share the repository's *owner key*, each writer has its own.
Every snapshot carries ``signer`` (fingerprint) and ``signature`` (an armored
detached signature over ``Snapshot.signed_bytes()``, the canonical JSON
without the ``signature`` field).

Trust lives where only the owner can write it: key records (``keys/``
objects sealed with meta, see keys.py) are signed by the owner key, and map
each writer's signing certificate to the one host it may sign for. The trust
anchor is the owner key itself, which the verifier gets from its own slot
(owners: the secret key; writers: ``owner_signing_cert``), never from the
repository's unauthenticated contents.

``before_rewrite`` is the hook ``repo/rewrite.py`` calls for every snapshot it
rewrites: rewritten snapshots are re-signed by the (owner) key that rewrites.

This module sees a repository only through ``SigningRepository``, the few
things it needs of one; ``Repository`` imports this module, never the reverse.
"""

from __future__ import annotations

import json
import logging
import time
from calendar import timegm
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from haeedge.errors import FormatError, HaeedgeError, NoReadAccess, OpenPGPError, UntrustedSnapshot
from haeedge.repo.keys import (
    KIND_CERTIFICATE,
    ROLE_OWNER,
    ROLE_WRITER,
    KeyRecord,
    SealedObjects,
    canonical_json,
    decode_record,
    is_manifest,
    record_document,
    sealed_records,
)

if TYPE_CHECKING:
    from haeedge.crypto.pubkey import Certificate, SecretKey
    from haeedge.repo.config import RepositoryConfig
    from haeedge.repo.keys import MasterKeys
    from haeedge.repo.snapshot import Snapshot
    from haeedge.repo.trust import TrustManifest, TrustState

log = logging.getLogger("haeedge.signing")

#: Signatures we write are ~300 bytes armored; anything far larger is hostile.
MAX_SIGNATURE_TEXT = 64 << 10

GOOD = "good"
UNSIGNED = "unsigned"
BAD = "bad"
UNKNOWN_SIGNER = "unknown-signer"
WRONG_HOST = "wrong-host"
REVOKED = "revoked"


class SigningRepository(SealedObjects, Protocol):
    """What signing needs of a repository: its credential, its trust state, and sealed objects."""

    config: RepositoryConfig
    keys: MasterKeys
    trust: TrustState

    def signer(self) -> Signer | None: ...

    def is_trusted(self, snap: Snapshot) -> bool: ...

    def seal(self, key_name: str, data: bytes | memoryview) -> bytes: ...

    def put_object(self, namespace: str, data: bytes) -> str: ...

    def forget_registry(self) -> None: ...



def generate_key(user_id: str) -> bytes:
    """A new Ed25519 signing key (binary transferable secret key) for a slot."""
    from haeedge.crypto.pubkey import generate_signing_key

    return generate_signing_key(user_id)[0]


class Signer:
    """A credential's unlocked signing key."""

    def __init__(self, secret_key: bytes):
        from haeedge.crypto.pubkey import load_secret_key

        try:
            self.key: SecretKey = load_secret_key(secret_key)
        except HaeedgeError as e:
            raise FormatError(f"the key slot's signing key is unusable: {e}") from e
        self.fingerprint = self.key.fingerprint_hex
        self.cert_bytes = self.key.cert.raw

    @property
    def cert(self) -> Certificate:
        return self.key.cert

    def sign(self, data: bytes) -> str:
        from haeedge.crypto.pubkey import sign_detached

        return sign_detached(self.key, data, armored=True).decode("ascii")

    def sign_document(self, doc: dict) -> dict:
        out = dict(doc)
        out.pop("signature", None)
        out["signer"] = self.fingerprint
        out["signature"] = self.sign(canonical_json(out))
        return out


def sign_snapshot(signer: Signer, snap: Snapshot) -> None:
    """Set ``signer`` and ``signature`` (replacing any earlier ones)."""
    snap.signature = None
    snap.signer = signer.fingerprint
    snap.signature = signer.sign(snap.signed_bytes())


def before_rewrite(repo: SigningRepository, old: Snapshot, new: Snapshot) -> None:
    """Hook for ``rewrite_snapshots``: only an owner key rewrites, and it re-signs what it writes.

    The old signature cannot cover the new document; ``save_snapshot`` signs
    ``new`` with the rewriting credential's key once the signature fields are
    cleared here. A writer must not rewrite: the result would be signed by a
    key that may only speak for its own host, and it cannot read other hosts'
    file lists anyway.
    """
    if repo.keys.is_writer:
        raise NoReadAccess(f"snapshot {old.short_id}: a write-only key cannot rewrite snapshots",
                           hint="run this with the owner's key (--identity-file or an owner password)")
    if not repo.is_trusted(old):  # re-signing with the owner key must never launder a forged snapshot,
        raise UntrustedSnapshot(f"snapshot {old.short_id} (host {old.host}) is not trusted: the owner's key "
                                "will not re-sign it (--allow-untrusted opts in to reading, not signing)",
                                hint="see 'haeedge verify'; 'haeedge forget' removes it")
    new.signer = None
    new.signature = None


# --------------------------------------------------------------------------- trust


@dataclass
class SignatureStatus:
    """The outcome of checking one snapshot's signature."""

    state: str
    signer: str | None = None
    role: str | None = None
    host: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.state == GOOD

    def label(self) -> str:
        """Short text for a table column."""
        if self.state == GOOD:
            return "owner" if self.role == ROLE_OWNER else f"writer:{self.host}"
        return {UNSIGNED: "UNSIGNED", BAD: "BAD SIGNATURE", UNKNOWN_SIGNER: "UNKNOWN KEY",
                WRONG_HOST: f"WRONG HOST (writer:{self.host})", REVOKED: "REVOKED KEY"}.get(self.state, self.state)


@dataclass
class _Trusted:
    cert: Certificate
    role: str
    host: str
    removed: int | None


class SignerRegistry:
    """Which signing keys the owner vouches for, and for which host.

    With a trust manifest (repo/trust.py) the signers are exactly what it
    names; key records then only describe slots (labels, times). Without one
    (format v1, or a repository still waiting for the owner's approval) they
    come from the key records that the anchor signed.
    """

    def __init__(self, anchor: Certificate | None, records: list[KeyRecord], problems: list[tuple[str, str]],
                 manifest: TrustManifest | None = None):
        self.anchor = anchor
        self.records = records
        self.problems = problems
        self.manifest = manifest
        self.signers: dict[str, _Trusted] = {}
        if manifest is not None:
            self._from_manifest(manifest)
            return
        if anchor is not None:
            self.signers[anchor.fingerprint_hex] = _Trusted(anchor, ROLE_OWNER, "", None)
        from haeedge.crypto.pubkey import parse_certificate

        for rec in records:
            fpr = rec.signing_fingerprint.upper()
            try:
                cert = parse_certificate(rec.signing_cert)
            except OpenPGPError as e:
                self.problems.append((rec.record_id, f"key record's signing certificate is unusable: {e}"))
                continue
            if cert.fingerprint_hex != fpr:
                self.problems.append((rec.record_id, "key record's signing certificate does not match its "
                                                     "fingerprint"))
                continue
            removed = _epoch(rec.removed) if rec.removed else None
            prev = self.signers.get(fpr)
            if prev is not None and prev.role == ROLE_OWNER and prev.cert is anchor:
                continue  # owner slots share the owner key: the anchor already speaks for it
            if prev is not None and prev.removed is not None and (removed is None or prev.removed < removed):
                removed = prev.removed  # a removal is never undone by an older copy of the record
            self.signers[fpr] = _Trusted(cert, rec.role, rec.host, removed)

    def _from_manifest(self, m: TrustManifest) -> None:
        from haeedge.crypto.pubkey import parse_certificate

        entries = [(f, c, ROLE_OWNER, "", None) for f, c in m.owner_keys.items()]
        entries += [(f, w.cert, ROLE_WRITER, w.host, None) for f, w in m.writers.items()]
        entries += [(f, w.cert, ROLE_WRITER, w.host, _epoch(w.removed or "")) for f, w in m.removed.items()
                    if f not in m.writers]
        entries += [(f, e.cert, ROLE_OWNER, "", _epoch(e.removed or "")) for f, e in m.retired_owner_keys.items()
                    if f not in m.owner_keys]
        for fpr, raw, role, host, removed in entries:
            try:
                cert = parse_certificate(raw)
            except OpenPGPError as e:
                self.problems.append((m.object_id, f"trust manifest: certificate of {fpr[:16]} is unusable: {e}"))
                continue
            if cert.fingerprint_hex != fpr:
                self.problems.append((m.object_id, f"trust manifest: certificate does not match {fpr[:16]}"))
                continue
            self.signers[fpr] = _Trusted(cert, role, host, removed)
        known = set(self.signers)
        gone = set(m.removed) - set(m.writers)
        # A removed key's old record (put back by whoever kept a copy) must not list it as live again.
        self.records = [r for r in self.records if r.signing_fingerprint.upper() in known
                        and (r.removed or r.signing_fingerprint.upper() not in gone)]

    @property
    def owner_fingerprint(self) -> str | None:
        if self.manifest is not None:
            return next(iter(sorted(self.manifest.owner_keys)), None)
        return self.anchor.fingerprint_hex if self.anchor is not None else None

    def live_records(self) -> list[KeyRecord]:
        """The newest record of every slot that has not been removed."""
        by_slot: dict[str, KeyRecord] = {}
        removed: set[str] = set()
        for rec in self.records:
            if rec.removed:
                removed.add(rec.slot)
                continue
            cur = by_slot.get(rec.slot)
            if cur is None or rec.created > cur.created:
                by_slot[rec.slot] = rec
        return [r for s, r in by_slot.items() if s not in removed]

    def recipients(self) -> list[Certificate]:
        """Certificates of the owner's certificate slots: what writers encrypt to."""
        from haeedge.crypto.pubkey import parse_certificate

        out: dict[str, Certificate] = {}
        if self.manifest is not None:
            for raw in self.manifest.recipients:
                try:
                    cert = parse_certificate(raw)
                    cert.encryption_key()
                except OpenPGPError as e:
                    log.warning("trust manifest: owner certificate unusable for encryption: %s", e)
                    continue
                out[cert.fingerprint_hex] = cert
            return list(out.values())
        for rec in self.live_records():
            if rec.role != ROLE_OWNER or rec.kind != KIND_CERTIFICATE or rec.recipient_cert is None:
                continue
            try:
                cert = parse_certificate(rec.recipient_cert)
                cert.encryption_key()
            except OpenPGPError as e:
                log.warning("key record %s: owner certificate unusable for encryption: %s", rec.record_id[:12], e)
                continue
            out[cert.fingerprint_hex] = cert
        return list(out.values())

    def describe(self, fingerprint: str | None) -> str:
        t = self.signers.get((fingerprint or "").upper())
        if t is None:
            return "unknown key"
        return "owner" if t.role == ROLE_OWNER else f"writer for host {t.host}"

    def check_snapshot(self, snap: Snapshot) -> SignatureStatus:
        """Is ``snap`` signed by a key the owner trusts, for the host it names?"""
        if not snap.signature or not snap.signer:
            return SignatureStatus(UNSIGNED, message="snapshot is not signed")
        fpr = snap.signer.upper()
        t = self.signers.get(fpr)
        if t is None:
            return SignatureStatus(UNKNOWN_SIGNER, fpr, message=f"snapshot is signed by key {fpr}, which the "
                                   "owner has not registered (forged, or its key record is missing)")
        if len(snap.signature) > MAX_SIGNATURE_TEXT:
            return SignatureStatus(BAD, fpr, t.role, t.host, message="snapshot signature is oversized")
        from haeedge.crypto.pubkey import verify_detached

        try:
            res = verify_detached(t.cert, snap.signed_bytes(), snap.signature)
        except OpenPGPError as e:
            return SignatureStatus(BAD, fpr, t.role, t.host, message=f"snapshot signature is malformed: {e}")
        if not res.ok:
            return SignatureStatus(BAD, fpr, t.role, t.host, message="bad signature: the snapshot was modified "
                                   f"after {self.describe(fpr)} signed it, or the signature is not its")
        if t.role == ROLE_WRITER and snap.host != t.host:
            return SignatureStatus(WRONG_HOST, fpr, t.role, t.host,
                                   message=f"wrongly attributed: signed by the write-only key of host {t.host!r} "
                                           f"but claims host {snap.host!r}")
        if t.removed is not None and (res.created or 0) > t.removed:  # both in whole seconds
            return SignatureStatus(REVOKED, fpr, t.role, t.host,
                                   message=f"signed by the {self.describe(fpr)} after that key was removed")
        return SignatureStatus(GOOD, fpr, t.role, t.host, message=f"signed by {self.describe(fpr)}")


def _epoch(iso: str) -> int:
    try:
        return timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))
    except (ValueError, TypeError):
        return 0  # unparsable removal time: treat every signature as made after it


def trust_anchor(repo: SigningRepository) -> Certificate | None:
    """The owner signing certificate, taken from the credential's own slot (never from storage)."""
    signer = repo.signer()
    if signer is not None and not repo.keys.is_writer:
        return signer.cert
    if repo.keys.owner_signing_cert is not None:
        from haeedge.crypto.pubkey import parse_certificate

        try:
            return parse_certificate(repo.keys.owner_signing_cert)
        except OpenPGPError as e:
            log.warning("this key's copy of the owner certificate is unusable: %s", e)
    return None


def read_records(repo: SigningRepository) -> tuple[list[KeyRecord], list[tuple[str, str]]]:
    """Every key record whose owner signature verifies; the others as (object id, problem).

    With a trust manifest, a record must be signed by one of the owner keys it names.
    """
    from haeedge.crypto.pubkey import parse_certificate, verify_detached

    manifest = repo.trust.manifest
    anchors: dict[str, Certificate] = {}
    if manifest is not None:
        for fpr, raw in manifest.owner_keys.items():
            try:
                anchors[fpr] = parse_certificate(raw)
            except OpenPGPError:
                continue
    else:
        a = trust_anchor(repo)
        if a is not None:
            anchors[a.fingerprint_hex] = a
    records: list[KeyRecord] = []
    problems: list[tuple[str, str]] = []
    for oid, plain in sealed_records(repo):
        try:
            if isinstance(plain, HaeedgeError):
                raise plain
            if is_manifest(plain):
                continue  # read by repo/trust.py
            rec = decode_record(oid, plain, repo.config.repository_id)
        except HaeedgeError as e:  # vanished meanwhile, unreadable or forged: report, never abort
            problems.append((oid, str(e)))
            continue
        anchor = anchors.get(rec.signer.upper())
        if not anchors:
            continue  # a key from before signed records: nothing to check them against, trust none
        if anchor is None:
            problems.append((oid, f"key record for slot {rec.slot[:12]} is not signed by the owner key "
                                  "(forged or from another repository)"))
            continue
        try:
            ok = verify_detached(anchor, canonical_json(rec.doc), rec.doc["signature"]).ok
        except OpenPGPError as e:
            problems.append((oid, f"key record for slot {rec.slot[:12]} has a malformed signature: {e}"))
            continue
        if not ok:
            problems.append((oid, f"key record for slot {rec.slot[:12]} has a bad owner signature (modified)"))
            continue
        records.append(rec)
    return records, problems


def load_registry(repo: SigningRepository) -> SignerRegistry:
    records, problems = read_records(repo)
    manifest = repo.trust.manifest
    return SignerRegistry(None if manifest is not None else trust_anchor(repo), records,
                          problems + list(repo.trust.problems), manifest)


def write_record(repo: SigningRepository, slot_id: str, kind: str, role: str, *, label: str, host: str,
                 signing_cert: bytes, signing_fingerprint: str, recipient_cert: bytes | None = None,
                 recipient_fingerprint: str | None = None, created: str | None = None,
                 removed: str | None = None) -> str:
    """Store an owner-signed key record; returns its object id."""
    signer = repo.signer()
    if signer is None or repo.keys.is_writer:
        raise NoReadAccess("only an owner key can register keys",
                           hint="run key management with the owner's key (--identity-file or an owner password)")
    doc = record_document(repo.config.repository_id, slot_id, kind, role, label=label, host=host,
                          signing_cert=signing_cert, signing_fingerprint=signing_fingerprint,
                          recipient_cert=recipient_cert, recipient_fingerprint=recipient_fingerprint,
                          created=created, removed=removed)
    signed = signer.sign_document(doc)
    oid = repo.put_object("keys", repo.seal("meta", json.dumps(signed, sort_keys=True).encode()))
    repo.forget_registry()
    return oid
