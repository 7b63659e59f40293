"""The repository's trust root, its signed trust manifest, and the client's memory of both.

Why: a key slot proves little on its own. Anyone can encrypt a certificate
slot to the owner's public certificate, and a writer host holds ``meta``, so it
can write anything that is sealed with it. What the owner's commands rely on
must therefore be *signed by the trust root*, and the client must remember
which root it trusted, as ssh remembers host keys:

- trust root: in a password repository, the owner signing key kept in the
  password slots (only a password holder can make a slot the password opens);
  in a certificate repository, the owner's OpenPGP certificate (its primary
  key fingerprint), whose secret key signs;
- trust manifest (a ``keys/`` object sealed with ``meta``, docs/format.md 3.3):
  repository id, SHA-256 of the config, a check value of the master keys, the
  delegated owner signing keys, every approved writer key with its host, the
  removed keys and the certificates writers encrypt to; a sequence number that
  only grows. Readers use the valid manifest with the highest sequence;
- client memory (``$HAEEDGE_TRUST_FILE``, else
  ``$XDG_CONFIG_HOME/haeedge/trusted_repositories.json``): repository id ->
  root fingerprint and newest sequence seen. A changed root or a lower
  sequence is refused (TrustError, exit 13).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from haeedge.errors import FormatError, HaeedgeError, IntegrityError, NoReadAccess, OpenPGPError, TrustError
from haeedge.repo.keys import (
    KIND_CERTIFICATE,
    KIND_WRITER,
    KeySlot,
    MasterKeys,
    canonical_json,
    is_manifest,
    sealed_records,
)
from haeedge.repo.snapshot import now_iso

if TYPE_CHECKING:
    from haeedge.crypto.pubkey import Certificate, SecretKey
    from haeedge.repo.repository import Repository

log = logging.getLogger("haeedge.trust")

MANIFEST_VERSION = 1
ROOT_PASSWORD = "password"
ROOT_CERTIFICATE = "certificate"
#: Trust modes of an opened repository.
MODE_MANIFEST = "manifest"  # a valid manifest signed by the expected root
MODE_LEGACY = "legacy"  # format v1 without a manifest, opened by a password (owner or writer) slot
MODE_UNAPPROVED = "unapproved"  # a certificate slot and no manifest of its root: only 'trust approve' opens it
MAX_MANIFEST_ENTRIES = 4096


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not a base64 string")
    return base64.b64decode(value, validate=True)


def master_key_check(keys: MasterKeys) -> str | None:
    """A check value of the four master keys (None without content and tree keys: a writer).

    A manifest names it, so a certificate slot planted with the real ``meta``
    but content/tree keys of an attacker's choosing is refused.
    """
    if keys.content is None or keys.tree is None:
        return None
    return hashlib.sha256(b"haeedge master key check\0" + keys.content + keys.tree + keys.meta
                          + keys.blob_id).hexdigest()


def config_digest(config_plain: bytes) -> str:
    return hashlib.sha256(config_plain).hexdigest()


def signing_fingerprint_of(keys: MasterKeys) -> str | None:
    if keys.signing_key is None:
        return None
    from haeedge.crypto.pubkey import load_secret_key

    try:
        return load_secret_key(keys.signing_key).fingerprint_hex
    except HaeedgeError:
        return None


# --------------------------------------------------------------------------- the manifest


@dataclass
class WriterEntry:
    host: str
    cert: bytes
    removed: str | None = None


@dataclass
class TrustManifest:
    """A decoded manifest whose signature by its own root certificate verified."""

    object_id: str
    doc: dict
    root_cert: Certificate
    owner_keys: dict[str, bytes]
    writers: dict[str, WriterEntry]
    removed: dict[str, WriterEntry]
    recipients: list[bytes]
    #: Owner signing keys replaced by ``trust approve``: their signatures made before the time count.
    retired_owner_keys: dict[str, WriterEntry] = field(default_factory=dict)

    @property
    def sequence(self) -> int:
        return self.doc["sequence"]

    @property
    def root_fingerprint(self) -> str:
        return self.root_cert.fingerprint_hex

    @property
    def root_kind(self) -> str:
        return self.doc["root"]["kind"]

    @property
    def config_sha256(self) -> str:
        return self.doc["config_sha256"]

    @property
    def master_key_check(self) -> str:
        return self.doc["master_key_check"]


def manifest_document(repository_id: str, sequence: int, root_kind: str, root_cert: bytes, config_sha256: str,
                      key_check: str, owner_keys: dict[str, bytes], writers: dict[str, WriterEntry],
                      removed: dict[str, WriterEntry], recipients: list[bytes]) -> dict:
    """The unsigned manifest document (``signer`` and ``signature`` are added by the root's key)."""
    return {
        "haeedge_trust_manifest": MANIFEST_VERSION,
        "repository_id": repository_id,
        "sequence": sequence,
        "created": now_iso(whole_seconds=True),
        "root": {"kind": root_kind, "cert": _b64(root_cert)},
        "config_sha256": config_sha256,
        "master_key_check": key_check,
        "owner_keys": {f: _b64(c) for f, c in sorted(owner_keys.items())},
        "writers": {f: {"host": w.host, "cert": _b64(w.cert)} for f, w in sorted(writers.items())},
        "removed": {f: {"host": w.host, "cert": _b64(w.cert), "removed": w.removed}
                    for f, w in sorted(removed.items())},
        "recipients": [_b64(c) for c in recipients],
    }



def decode_manifest(object_id: str, plain: bytes, repository_id: str) -> TrustManifest:
    """Parse, type-check and verify a manifest against the root certificate it carries.

    Whether that root is the one to trust is the caller's decision; here only
    "this document was signed by the key it names as root".
    """
    from haeedge.crypto.pubkey import parse_certificate, verify_detached

    try:
        doc = json.loads(plain)
        if not isinstance(doc, dict) or doc.get("haeedge_trust_manifest") != MANIFEST_VERSION:
            raise ValueError("not a trust manifest of a known version")
        if doc.get("repository_id") != repository_id:
            raise ValueError("manifest belongs to another repository")
        seq = doc.get("sequence")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq < 1 << 53:
            raise ValueError("bad sequence")
        root = doc.get("root")
        if not isinstance(root, dict) or root.get("kind") not in (ROOT_PASSWORD, ROOT_CERTIFICATE):
            raise ValueError("bad root")
        for name in ("config_sha256", "master_key_check", "signer", "signature"):
            if not isinstance(doc.get(name), str):
                raise ValueError(f"{name} is missing")
        for name in ("owner_keys", "writers", "removed"):
            if not isinstance(doc.get(name), dict) or len(doc[name]) > MAX_MANIFEST_ENTRIES:
                raise ValueError(f"bad {name}")
        if not isinstance(doc.get("recipients"), list) or len(doc["recipients"]) > MAX_MANIFEST_ENTRIES:
            raise ValueError("bad recipients")
        owner_keys = {str(f).upper(): _unb64(c) for f, c in doc["owner_keys"].items()}
        writers: dict[str, WriterEntry] = {}
        removed: dict[str, WriterEntry] = {}
        for name, out in (("writers", writers), ("removed", removed)):
            for f, e in doc[name].items():
                if not isinstance(e, dict) or not isinstance(e.get("host"), str):
                    raise ValueError(f"bad {name} entry")
                when = e.get("removed")
                if when is not None and not isinstance(when, str):
                    raise ValueError(f"bad {name} entry")
                out[str(f).upper()] = WriterEntry(e["host"], _unb64(e.get("cert")), when)
        recipients = [_unb64(c) for c in doc["recipients"]]
        retired_raw = doc.get("retired_owner_keys", {})
        if not isinstance(retired_raw, dict) or len(retired_raw) > MAX_MANIFEST_ENTRIES:
            raise ValueError("bad retired_owner_keys")
        retired: dict[str, WriterEntry] = {}
        for f, e in retired_raw.items():
            if not isinstance(e, dict) or not isinstance(e.get("removed"), str):
                raise ValueError("bad retired_owner_keys entry")
            retired[str(f).upper()] = WriterEntry("", _unb64(e.get("cert")), e["removed"])
        root_cert = parse_certificate(_unb64(root.get("cert")))
    except OpenPGPError as e:
        raise FormatError(f"trust manifest {object_id[:12]}: its root certificate is unusable: {e}") from e
    except (ValueError, TypeError, AttributeError, RecursionError) as e:
        raise FormatError(f"trust manifest {object_id[:12]} is malformed: {e}") from e
    if doc["signer"].upper() != root_cert.fingerprint_hex or len(doc["signature"]) > 64 << 10:
        raise IntegrityError(f"trust manifest {object_id[:12]} is not signed by the root it names")
    try:
        ok = verify_detached(root_cert, canonical_json(doc), doc["signature"]).ok
    except OpenPGPError as e:
        raise IntegrityError(f"trust manifest {object_id[:12]} has a malformed signature: {e}") from e
    if not ok:
        raise IntegrityError(f"trust manifest {object_id[:12]} has a bad signature (modified or forged)")
    return TrustManifest(object_id, doc, root_cert, owner_keys, writers, removed, recipients, retired)


def read_manifests(repo: Repository) -> tuple[list[TrustManifest], list[tuple[str, str]]]:
    """Every manifest in ``keys/`` that its own root signed; the others as (object id, problem)."""
    out: list[TrustManifest] = []
    problems: list[tuple[str, str]] = []
    for oid, plain in sealed_records(repo):
        try:  # vanished, unreadable or forged: report, never abort
            if isinstance(plain, HaeedgeError):
                raise plain
            if is_manifest(plain):
                out.append(decode_manifest(oid, plain, repo.config.repository_id))
        except HaeedgeError as e:
            problems.append((oid, str(e)))
    return out, problems


# --------------------------------------------------------------------------- client memory


#: Slots remembered per location (a credential opens one; a few for password changes and shared machines).
MAX_SLOT_HINTS = 4
#: Slot ids (or prefixes of at least 8 hex digits, comma-separated) to try first, e.g. on a new writer host.
KEY_HINT_ENV = "HAEEDGE_KEY_HINT"


def default_memory_path() -> str:
    """``$HAEEDGE_TRUST_FILE``, else the haeedge directory of ``$XDG_CONFIG_HOME`` (or ~/.config)."""
    env = os.environ.get("HAEEDGE_TRUST_FILE")
    if env:
        return os.path.expanduser(env)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "haeedge", "trusted_repositories.json")


class TrustMemory:
    """What this client trusted before, per repository id: root fingerprint and newest sequence."""

    def __init__(self, path: str):
        self.path = path

    def _load_document(self) -> dict:
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read(16 << 20))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise TrustError(f"cannot read the trust memory {self.path}: {e}",
                             hint="fix or remove the file (then every repository is trusted anew on first use)"
                             ) from None
        return doc if isinstance(doc, dict) else {}

    def _load(self) -> dict:
        repos = self._load_document().get("repositories")
        return repos if isinstance(repos, dict) else {}

    def get(self, repository_id: str) -> tuple[str, int] | None:
        e = self._load().get(repository_id)
        if not isinstance(e, dict) or not isinstance(e.get("root"), str):
            return None
        seq = e.get("sequence")
        return e["root"].upper(), seq if isinstance(seq, int) else 0

    def record(self, repository_id: str, root: str, sequence: int) -> None:
        doc = self._load_document()
        repos = doc.get("repositories") if isinstance(doc.get("repositories"), dict) else {}
        old = repos.get(repository_id)
        if isinstance(old, dict) and old.get("root") == root and old.get("sequence", 0) >= sequence:
            return
        repos[repository_id] = {"root": root, "sequence": sequence, "updated": now_iso(whole_seconds=True)}
        self._store(doc | {"repositories": repos})

    # Key slots this client opened, per location (a hash of it: the file need not list where the
    # repositories are). Opening tries these first, so a host finds its own slot among a thousand
    # writers' within the bound on slots tried (repo/keys.py: SlotAttempts). Order only: a hinted
    # slot is checked against the trust root like any other.

    @staticmethod
    def _location_key(location: str) -> str:
        return hashlib.sha256(location.encode("utf-8", "surrogateescape")).hexdigest()[:32]

    def slot_hints(self, location: str) -> list[str]:
        slots = self._load_document().get("slots")
        hints = slots.get(self._location_key(location)) if isinstance(slots, dict) else None
        return [h for h in hints if isinstance(h, str)][:MAX_SLOT_HINTS] if isinstance(hints, list) else []

    def record_slot(self, location: str, slot_id: str) -> None:
        doc = self._load_document()
        slots = doc.get("slots") if isinstance(doc.get("slots"), dict) else {}
        key = self._location_key(location)
        old = slots.get(key) if isinstance(slots.get(key), list) else []
        if old[:1] == [slot_id]:
            return
        slots[key] = [slot_id] + [h for h in old if h != slot_id and isinstance(h, str)][:MAX_SLOT_HINTS - 1]
        self._store(doc | {"slots": slots})

    def _store(self, doc: dict) -> None:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".trust-", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc | {"haeedge_trust_memory": 1}, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            log.warning("cannot update the trust memory %s: %s", self.path, e.strerror)


@dataclass
class TrustPolicy:
    """How a client decides whom to trust: a pinned root, its memory, and whether to open unapproved."""

    owner_fingerprint: str | None = None
    memory: TrustMemory | None = None
    allow_unapproved: bool = False


@dataclass
class TrustState:
    """The outcome of checking an opened slot against the repository's trust root."""

    mode: str
    root_fingerprint: str | None = None
    manifest: TrustManifest | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    #: The highest sequence of any valid manifest of this root (to continue from).
    sequence: int = 0


def _normal_fpr(fpr: str) -> str:
    return "".join(fpr.split()).upper()


def expected_roots(slot: KeySlot, identity_fprs: list[str]) -> tuple[set[str], bool]:
    """Roots this credential accepts, and whether the credential itself vouches for its slot.

    A password (owner or writer) slot is authentic: only the password holder
    could make it, so the root it names (or, format v1, its own owner signing
    key) is the root. A certificate slot is not: anyone can encrypt to a public
    certificate; only the identity's own key, or a pinned fingerprint, is.
    """
    if slot.kind == KIND_CERTIFICATE:
        return {_normal_fpr(f) for f in identity_fprs}, False
    named = slot.keys.extra.get("trust_root")
    if isinstance(named, str) and named:
        return {_normal_fpr(named)}, True
    if slot.kind == KIND_WRITER or slot.keys.is_writer:
        if slot.keys.owner_signing_cert is None:
            return set(), True
        from haeedge.crypto.pubkey import parse_certificate

        try:
            return {parse_certificate(slot.keys.owner_signing_cert).fingerprint_hex}, True
        except OpenPGPError:
            return set(), True
    own = signing_fingerprint_of(slot.keys)
    return ({own} if own else set()), True


def evaluate(repo: Repository, slot: KeySlot, config_plain: bytes, identity_fprs: list[str],
             policy: TrustPolicy) -> TrustState:
    """Check ``slot`` (opened from ``repo``) against the repository's manifests and the client's memory.

    Raises TrustError when the slot must not be used.
    """
    rid = repo.config.repository_id
    roots, authentic = expected_roots(slot, identity_fprs)
    remembered = policy.memory.get(rid) if policy.memory is not None else None
    pinned = _normal_fpr(policy.owner_fingerprint) if policy.owner_fingerprint else None
    if pinned and remembered and remembered[0] != pinned:
        raise TrustError(f"trust root changed: this client remembers owner key {remembered[0]} for repository "
                         f"{rid[:8]}, --owner-fingerprint says {pinned}",
                         hint=f"if the owner really changed keys, remove the entry from {policy.memory.path}")
    pin = pinned or (remembered[0] if remembered else None)
    v1_writer_root: str | None = None
    if pin is not None:
        if (authentic and roots and pin not in roots and slot.keys.is_writer
                and not slot.keys.extra.get("trust_root")):
            # A writer slot of format v1 names the owner key its creator made; after 'trust approve' the
            # pinned root's manifest lists that key as retired, which vouches for the slot (checked below).
            v1_writer_root = sorted(roots)[0]
        elif authentic and roots and pin not in roots:
            what = "remembered" if not pinned else "pinned"
            raise TrustError(f"trust root changed: this client {what} owner key {pin} for repository {rid[:8]}, "
                             f"but this key slot names {sorted(roots)[0]}",
                             hint="someone replaced the repository or its keys; if the owner really changed "
                                  "keys, remove the entry from the trust memory")
        roots = {pin}
    manifests, problems = read_manifests(repo)
    valid = [m for m in manifests if m.root_fingerprint in roots]
    for m in manifests:
        if m.root_fingerprint not in roots:
            problems.append((m.object_id, f"trust manifest signed by key {m.root_fingerprint}, which is not this "
                                          "repository's trust root for this credential"))
    state = TrustState(MODE_LEGACY, pin or (sorted(roots)[0] if len(roots) == 1 else None), problems=problems)
    if not valid:
        if v1_writer_root is not None:
            raise TrustError(f"trust root changed: this client remembered owner key {pin} for repository "
                             f"{rid[:8]}, but this key slot names {v1_writer_root}",
                             hint="someone replaced the repository or its keys")
        if remembered and remembered[1] > 0:
            if problems:  # a damaged object may be the manifest: name it (exit 4, as any damage)
                oid, why = problems[0]
                raise IntegrityError(f"keys/{oid}: {why}; the owner-signed trust manifest of repository {rid[:8]} "
                                     f"cannot be read (this client saw sequence {remembered[1]})",
                                     hint="restore the object from a replica")
            raise TrustError(f"the owner-signed trust manifest of repository {rid[:8]} is missing (this client saw "
                             f"sequence {remembered[1]}): keys/ was rolled back or tampered with",
                             hint="restore the newest manifest from a replica, or have the owner re-approve")
        if slot.kind == KIND_CERTIFICATE:
            if policy.allow_unapproved:
                state.mode = MODE_UNAPPROVED
                return state
            others = sorted({m.root_fingerprint for m in manifests})
            if others:
                raise TrustError(f"repository {rid[:8]} is vouched for by owner key {others[0]}, not by the key "
                                 "given with --identity-file",
                                 hint=f"if that is your key, pin it: --owner-fingerprint {others[0]}")
            raise TrustError(f"repository {rid[:8]} is not approved by the owner key: a certificate key slot alone "
                             "proves nothing (anyone can encrypt one to a public certificate)",
                             hint="if you created it with 'init --recipient-file' on a backup host, approve it: "
                                  "haeedge --identity-file OWNER-SECRET.asc trust approve")
        if remembered is None and state.root_fingerprint:
            state.notices.append(f"repository {rid[:8]} has no trust manifest yet (made by an older haeedge)")
        return state
    m = max(valid, key=lambda m: (m.sequence, m.object_id))
    if v1_writer_root is not None and v1_writer_root not in m.retired_owner_keys:
        raise TrustError(f"trust root changed: this client remembered owner key {pin} for repository {rid[:8]}, "
                         f"but this key slot names {v1_writer_root}",
                         hint="someone replaced the repository or its keys; if the owner really changed "
                              "keys, remove the entry from the trust memory")
    state.sequence = m.sequence
    if remembered and remembered[1] > m.sequence:
        raise TrustError(f"trust manifest of repository {rid[:8]} went back in time: sequence {m.sequence}, this "
                         f"client saw {remembered[1]} (old key lists were put back)",
                         hint="someone replayed old objects in keys/; restore the newest from a replica")
    if config_digest(config_plain) != m.config_sha256:
        raise TrustError(f"the config of repository {rid[:8]} is not the one the owner signed (it was rewritten)",
                         hint="restore the config object from a replica or backup of the repository")
    own_fpr = signing_fingerprint_of(slot.keys)
    if slot.keys.is_writer:
        if own_fpr not in m.writers:
            removed = own_fpr in m.removed
            raise TrustError(f"this write-only key {'was removed' if removed else 'is not approved'} by the owner "
                             f"of repository {rid[:8]}", hint="ask the owner for a new key: haeedge key add --writer")
    else:
        if master_key_check(slot.keys) != m.master_key_check:
            raise TrustError(f"key slot {slot.slot_id[:12]} holds keys the owner never signed (planted)",
                             hint="remove it with the owner's key: haeedge key remove")
        if own_fpr not in m.owner_keys:
            raise TrustError(f"key slot {slot.slot_id[:12]} holds an owner signing key the trust manifest does "
                             "not name (an old or planted slot)",
                             hint="open the repository with another owner key and add this one again")
    state.mode = MODE_MANIFEST
    state.manifest = m
    state.root_fingerprint = m.root_fingerprint
    if remembered is None and policy.memory is not None:
        how = "pinned with --owner-fingerprint" if pinned else "trusted on first use"
        state.notices.append(f"repository {rid[:8]}: owner key {m.root_fingerprint} {how}; remembered in "
                             f"{policy.memory.path}")
    if policy.memory is not None:
        policy.memory.record(rid, m.root_fingerprint, m.sequence)
    return state


def remember_created(repo: Repository) -> None:
    """The client that made a repository trusts its owner key from the start (no first-use notice later)."""
    if repo.trust.manifest is not None:
        TrustMemory(default_memory_path()).record(repo.config.repository_id, repo.trust.manifest.root_fingerprint,
                                                  repo.trust.manifest.sequence)


# --------------------------------------------------------------------------- writing manifests


def _root_signer(repo: Repository, state: TrustState, root_kind: str, root_fpr: str):
    """(sign(bytes)->armored str, root cert bytes) for the root; NoReadAccess when this credential lacks it."""
    if root_kind == ROOT_PASSWORD:
        signer = repo.signer()
        if signer is None or repo.keys.is_writer or signer.fingerprint != root_fpr:
            raise NoReadAccess("changing the trust manifest needs the repository's owner key",
                               hint="run it with the owner's password")
        return signer.sign, signer.cert_bytes
    for sk in repo.identity_keys:
        if sk.fingerprint_hex == root_fpr:
            from haeedge.crypto.pubkey import sign_detached

            return (lambda data, sk=sk: sign_detached(sk, data, armored=True).decode("ascii")), sk.cert.raw
    raise NoReadAccess(f"changing who is trusted needs the owner's OpenPGP secret key {root_fpr}",
                       hint="run it with --identity-file OWNER-SECRET.asc")


def write_manifest(repo: Repository, *, root_kind: str | None = None, root_key: SecretKey | None = None,
                   owner_keys: dict[str, bytes] | None = None, add_writers: dict[str, WriterEntry] | None = None,
                   writers: dict[str, WriterEntry] | None = None, remove: list[str] = (),
                   add_recipients: list[bytes] = (), drop_recipients: list[str] = (),
                   recipients: list[bytes] | None = None, removed: dict[str, WriterEntry] | None = None,
                   retire_owner_keys: dict[str, WriterEntry] | None = None) -> TrustManifest:
    """Sign and store the next manifest: the current one with the given changes. Deletes older ones.

    Without a current manifest (a new or format v1 repository) every field
    must be given (``writers``, ``recipients``, ``owner_keys``...).
    """
    from haeedge.crypto.pubkey import parse_certificate

    state: TrustState = repo.trust
    cur = state.manifest
    if root_key is not None:
        kind, root_fpr = ROOT_CERTIFICATE, root_key.fingerprint_hex
    elif cur is not None:
        kind, root_fpr = cur.root_kind, cur.root_fingerprint
    else:
        kind = root_kind or ROOT_PASSWORD
        signer = repo.signer()
        if signer is None:
            raise NoReadAccess("this key has no owner signing key")
        root_fpr = signer.fingerprint
    sign, root_cert = _root_signer(repo, state, kind, root_fpr)
    new_owner_keys = dict(owner_keys if owner_keys is not None else (cur.owner_keys if cur else {}))
    new_writers = dict(writers if writers is not None else (cur.writers if cur else {}))
    new_removed = dict(removed if removed is not None else (cur.removed if cur else {}))
    new_writers.update(add_writers or {})
    for fpr in remove:
        fpr = fpr.upper()
        entry = new_writers.pop(fpr, None)
        if entry is not None:
            new_removed[fpr] = WriterEntry(entry.host, entry.cert, now_iso(whole_seconds=True))
    rec = list(recipients if recipients is not None else (cur.recipients if cur else []))
    seen = set()
    out_recipients = []
    for c in [*rec, *add_recipients]:
        try:
            f = parse_certificate(c).fingerprint_hex
        except OpenPGPError:
            continue
        if f in seen or f in {d.upper() for d in drop_recipients}:
            continue
        seen.add(f)
        out_recipients.append(c)
    key_check = master_key_check(repo.keys)
    if key_check is None:
        raise NoReadAccess("a write-only key cannot change the trust manifest")
    remembered = state.sequence
    if repo.trust_policy.memory is not None:
        got = repo.trust_policy.memory.get(repo.config.repository_id)
        if got is not None:
            remembered = max(remembered, got[1])
    seq = max(remembered, cur.sequence if cur else 0) + 1
    doc = manifest_document(repo.config.repository_id, seq, kind, root_cert, config_digest(repo.config_plain),
                            key_check, new_owner_keys, new_writers, new_removed, out_recipients)
    retired = dict(cur.retired_owner_keys if cur else {})
    retired.update(retire_owner_keys or {})
    if retired:
        doc["retired_owner_keys"] = {f: {"cert": _b64(e.cert), "removed": e.removed}
                                     for f, e in sorted(retired.items())}
    doc["signer"] = root_fpr
    doc["signature"] = sign(canonical_json(doc))
    plain = json.dumps(doc, sort_keys=True).encode()
    oid = repo.put_object("keys", repo.seal("meta", plain))
    m = decode_manifest(oid, plain, repo.config.repository_id)
    old = [x.object_id for x in read_manifests(repo)[0] if x.object_id != oid]
    for x in old:
        with contextlib.suppress(HaeedgeError):
            repo.delete_key_object(x)
    state.manifest, state.mode, state.root_fingerprint, state.sequence = m, MODE_MANIFEST, m.root_fingerprint, seq
    repo.forget_registry()
    if repo.trust_policy.memory is not None:
        repo.trust_policy.memory.record(repo.config.repository_id, m.root_fingerprint, seq)
    return m


def migrate_legacy(repo: Repository) -> TrustManifest | None:
    """Format v1 (no manifest): the owner's password writes the first one from the owner-signed key records.

    Only a password owner slot can: its signing key is the root of a password
    repository. Returns None when this credential cannot (writers, certificate
    slots).
    """
    if repo.trust.mode != MODE_LEGACY or repo.keys.is_writer or repo.signer() is None:
        return None
    if repo.slot is None or repo.slot.kind == KIND_CERTIFICATE or repo.keys.extra.get("trust_root"):
        return None
    registry = repo.registry()
    signer = repo.signer()
    assert signer is not None
    writers: dict[str, WriterEntry] = {}
    removed: dict[str, WriterEntry] = {}
    for fpr, t in registry.signers.items():
        if t.role != "writer":
            continue
        entry = WriterEntry(t.host, t.cert.raw, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t.removed))
                            if t.removed is not None else None)
        (removed if t.removed is not None else writers)[fpr] = entry
    recipients = [c.raw for c in registry.recipients()]
    return write_manifest(repo, root_kind=ROOT_PASSWORD, owner_keys={signer.fingerprint: signer.cert_bytes},
                          writers=writers, removed=removed, recipients=recipients)
