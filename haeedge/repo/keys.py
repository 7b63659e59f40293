"""Master keys, key slots, key records and the write-only sealers.

A repository has four 256-bit secrets. Objects are sealed with OpenPGP SKESK
(salted S2K) using the lowercase hex of a secret as the passphrase, so that
``gpg --passphrase-file`` opens them with nothing but that hex string:

- ``content``: data blobs (file contents);
- ``tree``: tree blobs (file lists);
- ``meta``: config, pack headers, index, snapshots, locks, key records;
- ``blob_id``: HMAC-SHA-256 key for blob ids (never a passphrase).

``keys/`` holds two kinds of objects (docs/format.md section 3):

- key slots: an OpenPGP message holding these secrets as JSON, sealed to a
  person's passphrase (SKESK, iterated+salted S2K) or to an OpenPGP
  certificate (PKESK). A *writer* slot (a write-only backup host) holds
  ``meta``, ``blob_id``, its own ``tree`` key and no ``content`` key.
- key records: the public description of a slot (kind, role, host, label,
  signing certificate), sealed with ``meta`` and signed by the repository
  owner's signing key, so that anyone holding ``meta`` can list keys and
  check snapshot signatures, and no writer can register keys.

Writers seal blobs with one random session key per run, fronted by one PKESK
per owner certificate (and, for tree blobs, a SKESK with the writer's own tree
key): one public-key operation per run, not per blob.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from haeedge.crypto.openpgp import (
    HASH_SHA256,
    S2K,
    S2K_ITERATED,
    S2K_MAX_COUNT_BYTE,
    S2K_MESSAGE_WORK,
    S2K_SALTED,
    SYM_AES256,
    TAG_PKESK,
    TAG_SKESK,
    Keyring,
    NoMatchingKey,
    PassphraseSealer,
    S2KBudget,
    decrypt_message,
    encrypt_literal,
    esk_summary,
    packet_header,
    s2k_derive,
)
from haeedge.errors import (
    ExitCode,
    FormatError,
    HaeedgeError,
    NoReadAccess,
    OpenPGPError,
    SnapshotNotFound,
    WrongPassword,
)
from haeedge.repo.snapshot import now_iso

if TYPE_CHECKING:  # pubkey is imported only where public keys are used: it costs CLI start-up time
    from haeedge.backends.base import Backend
    from haeedge.crypto.pubkey import Certificate

SLOT_VERSION = 1
RECORD_VERSION = 1
KEY_NAMES = ("content", "tree", "meta", "blob_id")

ROLE_OWNER = "owner"
ROLE_WRITER = "writer"
KIND_PASSPHRASE = "passphrase"
KIND_CERTIFICATE = "certificate"
KIND_WRITER = "writer"
SLOT_KINDS = (KIND_PASSPHRASE, KIND_CERTIFICATE, KIND_WRITER)

#: Fields of a slot document that describe the slot, not the keys it carries.
_SLOT_FIELDS = ("haeedge_key_slot", "repository_id", "kind", "label", "created", "host")
#: Hostile-input bounds.
MAX_SLOT_BYTES = 1 << 20
MAX_RECORD_BYTES = 1 << 20
MAX_RECIPIENTS = 16
MAX_LABEL = 200
#: Opening a repository tries at most this many key slots, spending at most this much S2K work
#: (in units of ``openpgp.s2k_cost``: 32 derivations at the largest count, about 5 s) on all of
#: them: whoever can write to keys/ can add slots, each costing up to one strong derivation.
MAX_SLOTS_TRIED = 64
OPEN_S2K_WORK = 32 * S2K_MESSAGE_WORK
#: Objects in keys/ larger than this are not even downloaded (slots and records hold < 1 MiB).
MAX_KEY_OBJECT_BYTES = 2 << 20


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise ValueError(f"{what} is not base64") from None


@dataclass
class MasterKeys:
    """The secrets a credential holds, plus its signing key and (writers) whom to encrypt to."""

    content: bytes | None
    tree: bytes | None
    meta: bytes
    blob_id: bytes
    role: str = ROLE_OWNER
    extra: dict = field(default_factory=dict)
    #: Binary transferable secret key (unprotected; the slot itself is encrypted). Owners share
    #: the repository's owner key; each writer has its own.
    signing_key: bytes | None = None
    #: Writers: the owner's signing certificate, which signs the key records.
    owner_signing_cert: bytes | None = None
    #: Writers: certificates to encrypt to when the key records name none.
    recipients: list[bytes] = field(default_factory=list)

    @classmethod
    def generate(cls) -> MasterKeys:
        return cls(os.urandom(32), os.urandom(32), os.urandom(32), os.urandom(32))

    @property
    def is_writer(self) -> bool:
        return self.role == ROLE_WRITER

    def passphrase(self, name: str) -> bytes:
        key = getattr(self, name)
        if key is None:
            raise KeyError(name)
        return key.hex().encode()

    def for_writer(self, host: str, signing_key: bytes, owner_signing_cert: bytes,
                   recipients: list[bytes]) -> MasterKeys:
        """A writer's keys: shared meta and blob_id, its host's tree key, no content key."""
        assert self.tree is not None
        return MasterKeys(None, host_tree_key(self.tree, host), self.meta, self.blob_id, ROLE_WRITER, {},
                          signing_key, owner_signing_cert, list(recipients))

    def to_json(self) -> dict:
        keys = {n: getattr(self, n).hex() for n in KEY_NAMES if getattr(self, n) is not None}
        doc: dict = {**self.extra, "keys": keys, "role": self.role}
        if self.signing_key is not None:
            doc["signing_key"] = _b64(self.signing_key)
        if self.owner_signing_cert is not None:
            doc["owner_signing_cert"] = _b64(self.owner_signing_cert)
        if self.recipients:
            doc["recipients"] = [_b64(c) for c in self.recipients]
        return doc

    @classmethod
    def from_json(cls, d: dict) -> MasterKeys:
        try:
            keys = d["keys"]
            if not isinstance(keys, dict):
                raise ValueError("keys is not an object")
            got: dict[str, bytes | None] = {}
            for n in KEY_NAMES:
                v = keys.get(n)
                if v is not None:
                    if not isinstance(v, str):
                        raise ValueError(n)
                    b = bytes.fromhex(v)
                    if len(b) != 32:
                        raise ValueError(n)
                    got[n] = b
                else:
                    got[n] = None
            if got["meta"] is None or got["blob_id"] is None:
                raise ValueError("meta and blob_id keys are required")
            role = str(d.get("role", ROLE_OWNER))
            if role not in (ROLE_OWNER, ROLE_WRITER):
                raise ValueError(f"unknown role {role!r}")
            if role == ROLE_WRITER and got["content"] is not None:
                raise ValueError("a writer slot must not hold the content key")
            signing = _unb64(d["signing_key"], "signing_key") if d.get("signing_key") is not None else None
            owner_cert = (_unb64(d["owner_signing_cert"], "owner_signing_cert")
                          if d.get("owner_signing_cert") is not None else None)
            recipients_raw = d.get("recipients") or []
            if not isinstance(recipients_raw, list) or len(recipients_raw) > MAX_RECIPIENTS:
                raise ValueError("bad recipients list")
            recipients = [_unb64(r, "recipient") for r in recipients_raw]
            known = {"keys", "role", "signing_key", "owner_signing_cert", "recipients", *_SLOT_FIELDS}
            extra = {k: v for k, v in d.items() if k not in known}
            return cls(got["content"], got["tree"], got["meta"], got["blob_id"], role,  # type: ignore[arg-type]
                       extra, signing, owner_cert, recipients)
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise FormatError(f"key slot holds malformed keys ({e})") from e


def host_tree_key(tree_master_key: bytes, host: str) -> bytes:
    """The tree key of one backup host: HMAC-SHA-256(tree master key, "haeedge host tree key" NUL host).

    Per host, not per credential: a host whose write-only key is replaced must
    still read the file lists it wrote before (tree blobs are shared by id with
    its earlier backups). Only the owner can derive it.
    """
    return hmac.digest(tree_master_key, b"haeedge host tree key\0" + host.encode("utf-8"), "sha256")


@dataclass
class KeySlot:
    """What a slot says about itself once opened."""

    slot_id: str
    repository_id: str
    keys: MasterKeys
    created: str
    host: str
    kind: str  # "passphrase", "certificate" or "writer"
    label: str = ""


# --------------------------------------------------------------------------- slots


def slot_payload(keys: MasterKeys, repository_id: str, kind: str, label: str = "", host: str | None = None) -> bytes:
    doc = {
        **keys.to_json(),
        "haeedge_key_slot": SLOT_VERSION,
        "repository_id": repository_id,
        "kind": kind,
        "label": label,
        "created": now_iso(whole_seconds=True),
        "host": host if host is not None else socket.gethostname(),
    }
    return json.dumps(doc, sort_keys=True).encode()


def seal_slot_for_passphrase(keys: MasterKeys, repository_id: str, passphrase: bytes, *, label: str = "",
                             count_byte: int = S2K_MAX_COUNT_BYTE, kind: str | None = None,
                             host: str | None = None) -> bytes:
    """A slot any OpenPGP tool opens with ``passphrase`` (iterated+salted S2K, SHA-256)."""
    kind = kind or (KIND_WRITER if keys.is_writer else KIND_PASSPHRASE)
    payload = slot_payload(keys, repository_id, kind, label, host)
    return PassphraseSealer(passphrase, count_byte=count_byte).seal(payload)


def seal_slot_for_certificate(keys: MasterKeys, repository_id: str, cert: Certificate, *, label: str = "",
                              host: str | None = None) -> bytes:
    """A slot that ``gpg --decrypt`` opens with the secret key of ``cert`` (PKESK)."""
    from haeedge.crypto.pubkey import pkesk_packet

    payload = slot_payload(keys, repository_id, KIND_CERTIFICATE, label, host)
    session_key = os.urandom(32)
    return encrypt_literal(payload, session_key, pkesk_packet(cert, SYM_AES256, session_key))


class NotInWriterView(SnapshotNotFound):
    """A write-only key asked for a snapshot it cannot read (another host's, or an owner's rewrite).

    A SnapshotNotFound, so chain walks treat it as a missing link (a backup then
    starts a new full); exit 12 when a user asked for it, as for any key that
    cannot read what was asked.
    """

    exit_code = ExitCode.WRONG_PASSWORD


class SlotMalformed(FormatError):
    """A slot the credential opened whose content is not a valid slot (as opposed to damaged bytes)."""


def open_slot(slot_id: str, message: bytes, keyring: Keyring) -> KeySlot | None:
    """Try to open one slot; None when the keyring does not fit it."""
    try:
        plain = decrypt_message(message, keyring, limit=MAX_SLOT_BYTES)
    except NoMatchingKey:
        return None
    except OpenPGPError as e:
        raise FormatError(f"key slot {slot_id[:12]} is damaged: {e}") from e
    try:
        doc = json.loads(plain)
        if not isinstance(doc, dict) or doc.get("haeedge_key_slot") != SLOT_VERSION:
            raise ValueError("not a haeedge key slot")
        kind = str(doc.get("kind", KIND_PASSPHRASE))
        if kind not in SLOT_KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        keys = MasterKeys.from_json(doc)
        return KeySlot(slot_id, str(doc["repository_id"]), keys, str(doc.get("created", "")),
                       str(doc.get("host", "")), kind, str(doc.get("label", "")))
    except FormatError as e:
        raise SlotMalformed(f"key slot {slot_id[:12]}: {e}") from e
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise SlotMalformed(f"key slot {slot_id[:12]} is malformed: {e}") from e


class SlotAttempts:
    """What one ``Repository.open`` may spend on trying key slots (see ``MAX_SLOTS_TRIED``).

    ``admit`` before trying a slot; ``keyring`` carries the shared S2K budget;
    ``limit_error`` says, when no slot opened, whether a cap (not the credential)
    was the reason.
    """

    def __init__(self, keyring: Keyring):
        self.budget = S2KBudget(OPEN_S2K_WORK)
        self.keyring = Keyring(keyring.passphrases, keyring.pkesk_decryptors, s2k_budget=self.budget)
        self.tried = 0
        self.oversized = 0

    def admit_size(self, size: int | None) -> bool:
        if size is not None and size > MAX_KEY_OBJECT_BYTES:
            self.oversized += 1
            return False
        return True

    def admit(self) -> bool:
        self.tried += 1
        return self.tried <= MAX_SLOTS_TRIED

    def limit_error(self) -> WrongPassword | None:
        if self.tried <= MAX_SLOTS_TRIED and not self.budget.skipped:
            return None
        return WrongPassword(f"no key slot opened with these credentials before the limits on key slots were "
                             f"reached ({MAX_SLOTS_TRIED} slots tried at most, S2K work of "
                             f"{OPEN_S2K_WORK // S2K_MESSAGE_WORK} strongest derivations); keys/ holds more "
                             "or costlier slots than haeedge writes",
                             hint="set HAEEDGE_KEY_HINT to your slot's id ('haeedge key add' printed it) to try it "
                                  "first; or someone planted slots in keys/: 'haeedge key list' with the owner's "
                                  "key shows the registered ones")


def key_object_kind(data: bytes | memoryview) -> str:
    """What a ``keys/`` object is, from its session-key packets alone (no key needed).

    ``passphrase`` (owner or writer slot: SKESK with iterated S2K), ``certificate``
    (slot: PKESK), ``record`` (SKESK with salted S2K: sealed with the meta key),
    or ``unknown``. Lets readers skip records when trying credentials and skip
    costly slots when reading records.
    """
    try:
        esks = esk_summary(data)
    except OpenPGPError:
        return "unknown"
    if not esks:
        return "unknown"
    if any(tag == TAG_PKESK for tag, _b in esks):
        return KIND_CERTIFICATE
    tag, body = esks[0]
    if tag == TAG_SKESK and len(body) >= 3 and body[0] == 4:
        if body[2] == S2K_ITERATED:
            return KIND_PASSPHRASE
        if body[2] == S2K_SALTED:
            return "record"
    return "unknown"


class SealedObjects(Protocol):
    """A repository as far as reading the owner-sealed objects of ``keys/`` goes."""

    backend: Backend

    def get_object(self, name: str, size: int | None = None) -> bytes: ...

    def open_sealed(self, key_name: str, data: bytes | memoryview, limit: int = ...) -> bytes: ...


def sealed_records(repo: SealedObjects) -> Iterator[tuple[str, bytes | HaeedgeError]]:
    """Every object in ``keys/`` sealed with the meta key (key records and trust manifests), opened:
    (object id, plaintext), or (object id, error) for one that vanished or does not open. Slots are skipped."""
    listing = getattr(repo, "keys_listing", None)  # one listing per run where the repository keeps it
    for info in (listing() if listing is not None else repo.backend.list("keys")):
        oid = info.name.rsplit("/", 1)[-1]
        try:
            data = repo.get_object(info.name)
            if key_object_kind(data) != "record":
                continue
            plain: bytes | HaeedgeError = repo.open_sealed("meta", data, limit=MAX_RECORD_BYTES)
        except HaeedgeError as e:
            plain = e
        yield oid, plain


def wrong_password() -> WrongPassword:
    return WrongPassword("wrong password or no key slot matches the given credentials",
                         hint="check --password-file / --password-command / HAEEDGE_PASSWORD_FILE "
                              "(or --identity-file for a key added with --recipient-file)")


# --------------------------------------------------------------------------- key records


@dataclass
class KeyRecord:
    """The public, owner-signed description of one key slot (``keys/<id>`` sealed with meta)."""

    record_id: str
    doc: dict

    @property
    def slot(self) -> str:
        return self.doc["slot"]

    @property
    def kind(self) -> str:
        return self.doc["kind"]

    @property
    def role(self) -> str:
        return self.doc["role"]

    @property
    def host(self) -> str:
        return self.doc.get("host", "")

    @property
    def label(self) -> str:
        return self.doc.get("label", "")

    @property
    def created(self) -> str:
        return self.doc.get("created", "")

    @property
    def removed(self) -> str | None:
        return self.doc.get("removed")

    @property
    def signer(self) -> str:
        return self.doc.get("signer", "")

    @property
    def signing_fingerprint(self) -> str:
        return self.doc["signing_fingerprint"]

    @property
    def signing_cert(self) -> bytes:
        return _unb64(self.doc["signing_cert"], "signing_cert")

    @property
    def recipient_cert(self) -> bytes | None:
        v = self.doc.get("recipient_cert")
        return _unb64(v, "recipient_cert") if v is not None else None

    @property
    def recipient_fingerprint(self) -> str | None:
        return self.doc.get("recipient_fingerprint")


def record_document(repository_id: str, slot_id: str, kind: str, role: str, *, label: str, host: str,
                    signing_cert: bytes, signing_fingerprint: str, recipient_cert: bytes | None = None,
                    recipient_fingerprint: str | None = None, created: str | None = None,
                    removed: str | None = None) -> dict:
    """The unsigned record document (``signer`` and ``signature`` are added by the signer)."""
    return {
        "haeedge_key_record": RECORD_VERSION,
        "repository_id": repository_id,
        "slot": slot_id,
        "kind": kind,
        "role": role,
        "label": label,
        "host": host,
        "created": created or now_iso(whole_seconds=True),
        "removed": removed,
        "signing_cert": _b64(signing_cert),
        "signing_fingerprint": signing_fingerprint,
        "recipient_cert": _b64(recipient_cert) if recipient_cert is not None else None,
        "recipient_fingerprint": recipient_fingerprint,
    }


def decode_record(record_id: str, plain: bytes, repository_id: str) -> KeyRecord:
    """Parse and type-check a record (not its signature: see signing.py)."""
    try:
        doc = json.loads(plain)
        if not isinstance(doc, dict) or doc.get("haeedge_key_record") != RECORD_VERSION:
            raise ValueError("not a haeedge key record")
        if doc.get("repository_id") != repository_id:
            raise ValueError("record belongs to another repository")
        for name in ("slot", "kind", "role", "signing_cert", "signing_fingerprint", "signer", "signature"):
            if not isinstance(doc.get(name), str):
                raise ValueError(f"{name} is missing")
        for name in ("label", "host", "created"):
            if not isinstance(doc.get(name, ""), str) or len(doc.get(name, "")) > 4 * MAX_LABEL:
                raise ValueError(f"bad {name}")
        for name in ("removed", "recipient_cert", "recipient_fingerprint"):
            if doc.get(name) is not None and not isinstance(doc[name], str):
                raise ValueError(f"bad {name}")
        if doc["kind"] not in SLOT_KINDS or doc["role"] not in (ROLE_OWNER, ROLE_WRITER):
            raise ValueError("unknown kind or role")
        if len(doc["slot"]) != 64 or any(c not in "0123456789abcdef" for c in doc["slot"]):
            raise ValueError("bad slot id")
        rec = KeyRecord(record_id, doc)
        rec.signing_cert  # noqa: B018 - validates the base64
        rec.recipient_cert  # noqa: B018
        return rec
    except (ValueError, TypeError, RecursionError) as e:
        raise FormatError(f"key record {record_id[:12]} is malformed: {e}") from e


# --------------------------------------------------------------------------- write-only sealing


class SessionSealer:
    """Seals with one session key behind fixed ESK packets: no per-blob key work.

    Used by writers: the ESK packets (PKESK to every owner certificate, plus a
    SKESK with the writer's own tree key for tree blobs) are computed once per
    run. Each message still gets its own random 16-byte SEIPD prefix, so reusing
    the session key is what OpenPGP CFB with a random IV allows. Picklable, so
    forked worker processes can use it.
    """

    __slots__ = ("esk", "session_key")

    def __init__(self, esk: bytes, session_key: bytes):
        self.esk = esk
        self.session_key = session_key

    def seal(self, data: bytes | memoryview) -> bytes:
        return encrypt_literal(data, self.session_key, self.esk)


def skesk_with_session_key(passphrase: bytes, session_key: bytes) -> bytes:
    """SKESK v4, salted S2K (SHA-256), carrying ``session_key`` encrypted (RFC 4880 5.3)."""
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    spec = S2K(S2K_SALTED, HASH_SHA256, os.urandom(8))
    kek = s2k_derive(passphrase, spec, 32)
    enc = Cipher(algorithms.AES(kek), CFB(b"\0" * 16)).encryptor()
    esk = enc.update(bytes([SYM_AES256]) + session_key) + enc.finalize()
    body = bytes([4, SYM_AES256]) + spec.encode() + esk
    return packet_header(TAG_SKESK, len(body)) + body


def writer_sealer(recipients: list[Certificate], own_key_passphrase: bytes | None = None) -> SessionSealer:
    """A session sealer: PKESK to each owner certificate (+ a SKESK the writer can open itself)."""
    if not recipients:
        raise NoReadAccess("this write-only key knows no owner certificate to encrypt to",
                           hint="the owner adds one with 'haeedge key add --recipient-file OWNER.asc'")
    from haeedge.crypto.pubkey import pkesk_packet

    session_key = os.urandom(32)
    esk = b"".join(pkesk_packet(c, SYM_AES256, session_key) for c in recipients)
    if own_key_passphrase is not None:
        esk += skesk_with_session_key(own_key_passphrase, session_key)
    return SessionSealer(esk, session_key)


class CachingDecryptor:
    """A PKESK decryptor that remembers answers: a writer's run shares one PKESK over many blobs."""

    MAX_ENTRIES = 4096

    def __init__(self, inner):
        self.inner = inner
        self._cache: dict[bytes, tuple[int, bytes] | None] = {}

    def __call__(self, body: bytes) -> tuple[int, bytes] | None:
        body = bytes(body)
        try:
            return self._cache[body]
        except KeyError:
            pass
        got = self.inner(body)
        if len(self._cache) < self.MAX_ENTRIES:
            self._cache[body] = got
        return got


def needs_identity(body: bytes) -> tuple[int, bytes] | None:
    """PKESK decryptor for credentials without a secret key: say what is missing, clearly."""
    key_id = bytes(body[1:9]).hex().upper() if len(body) >= 9 else "unknown"
    raise NoReadAccess(f"this data was written by a write-only host and is encrypted to an OpenPGP key "
                       f"(key id {key_id}); this credential holds no secret key for it",
                       hint="open the repository with the owner's secret key: --identity-file OWNER-SECRET.asc")


def canonical_json(doc: dict) -> bytes:
    """The bytes a document's signature covers: sorted keys, no spaces, ASCII, no ``signature``."""
    return json.dumps({k: v for k, v in doc.items() if k != "signature"}, sort_keys=True,
                      separators=(",", ":")).encode()


def is_manifest(plain: bytes) -> bool:
    """Cheap test before parsing: key records and manifests share the meta sealing."""
    return b'"haeedge_trust_manifest"' in plain[:1 << 16] and plain.lstrip().startswith(b"{")
