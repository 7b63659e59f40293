"""Key operations: secret-key identities, write-only repositories, list/add/remove/passwd.

Why a module of its own: the CLI stays thin, and every rule about who may do
what with keys (only owners manage keys; the last key able to read is never
removed; a writer cannot restore) lives in one place with its reasons.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from haeedge.backends.base import Backend
from haeedge.crypto.openpgp import PKESKDecryptor
from haeedge.errors import HaeedgeError, NoReadAccess, OpenPGPError, TrustError, UsageError, WrongPassword
from haeedge.repo.config import RepositoryConfig
from haeedge.repo.keys import (
    KIND_CERTIFICATE,
    KIND_PASSPHRASE,
    KIND_WRITER,
    ROLE_OWNER,
    ROLE_WRITER,
    KeyRecord,
    KeySlot,
    MasterKeys,
    key_object_kind,
    seal_slot_for_certificate,
    seal_slot_for_passphrase,
)
from haeedge.repo.repository import Repository, object_id_of
from haeedge.repo.signing import generate_key, write_record
from haeedge.repo.snapshot import now_iso
from haeedge.repo.trust import (
    MODE_UNAPPROVED,
    ROOT_CERTIFICATE,
    ROOT_PASSWORD,
    WriterEntry,
    _root_signer,
    signing_fingerprint_of,
    write_manifest,
)

if TYPE_CHECKING:
    from haeedge.crypto.pubkey import Certificate

MAX_KEY_FILE = 16 << 20

#: Commands a write-only key is refused up front (they need to decrypt backed-up data or
#: rewrite history); everything else either works or fails per object with a clear reason.
WRITER_REFUSED_COMMANDS = frozenset({"restore", "dump", "cat", "mount", "verify", "check", "diff", "prune",
                                     "forget", "tag", "rewrite", "repair", "copy"})


# --------------------------------------------------------------------------- key files


def read_key_file(path: str, option: str) -> bytes:
    try:
        with open(os.path.expanduser(path), "rb") as f:
            data = f.read(MAX_KEY_FILE + 1)
    except OSError as e:
        raise UsageError(f"{option} {path}: {e.strerror}") from None
    if len(data) > MAX_KEY_FILE:
        raise UsageError(f"{option} {path}: file is too large for an OpenPGP key")
    if not data.strip():
        raise UsageError(f"{option} {path}: file is empty")
    return data


def read_certificate(path: str, option: str = "--recipient-file") -> Certificate:
    """One OpenPGP certificate (``gpg --export --armor KEY``) that can receive encrypted data."""
    from haeedge.crypto.pubkey import parse_certificate

    data = read_key_file(path, option)
    try:
        cert = parse_certificate(data)
        cert.encryption_key()
    except OpenPGPError as e:
        raise UsageError(f"{option} {path}: {e}",
                         hint="give one certificate with an encryption subkey, as 'gpg --export --armor KEYID' "
                              "writes it") from None
    return cert


def load_identity(path: str, ask_passphrase: Callable[[str], bytes]) -> list[PKESKDecryptor]:
    """PKESK decryptors for the secret keys in ``path`` (``gpg --export-secret-keys``).

    The passphrase is asked for only when a key is protected; a wrong one is
    exit 12 (WrongPassword), a file that is no secret key is bad usage.
    """
    from haeedge.crypto.pubkey import SecretKeyring, load_secret_keys

    data = read_key_file(path, "--identity-file")
    try:
        try:
            keys = load_secret_keys(data, None)
        except WrongPassword:
            keys = load_secret_keys(data, ask_passphrase(f"passphrase of the secret key in {path}"))
    except WrongPassword:
        raise
    except OpenPGPError as e:
        raise UsageError(f"--identity-file {path}: not a usable OpenPGP secret key: {e}",
                         hint="export it with 'gpg --export-secret-keys --armor KEYID'") from None
    ring = SecretKeyring(keys)
    if not len(ring):
        raise UsageError(f"--identity-file {path}: the key has no secret encryption (sub)key",
                         hint="a repository is opened with the key whose certificate was given to "
                              "--recipient-file")
    return [ring]


# --------------------------------------------------------------------------- creation


def init_write_only(backend: Backend, config: RepositoryConfig, owner_cert: Certificate, writer_passphrase: bytes,
                    host: str, *, label: str = "", s2k_count_byte: int = 0xFF) -> tuple[Repository, str]:
    """A repository whose contents only ``owner_cert``'s secret key reads, plus a writer key for ``host``.

    Returns the repository (opened as owner, for this process only) and the
    writer slot id. The owner slot is sealed to the certificate; the writer
    slot opens with ``writer_passphrase`` (the host's usual password file).
    """
    repo = Repository.init(backend, None, config=config, owner_cert=owner_cert, label=label or "owner")
    writer = add_writer(repo, writer_passphrase, host, label=label, recipients=[owner_cert],
                        count_byte=s2k_count_byte, trust_root=owner_cert.fingerprint_hex)
    return repo, writer


def require_owner(repo: Repository, what: str = "key management") -> None:

    if repo.trust.mode == MODE_UNAPPROVED:
        raise TrustError(f"{what}: this repository is not approved by the owner key yet",
                         hint="approve it first: haeedge --identity-file OWNER-SECRET.asc trust approve")
    if repo.keys.is_writer:
        raise NoReadAccess(f"{what} needs the owner's key; this is a write-only key",
                           hint="run it with the owner's key: --identity-file OWNER-SECRET.asc or an owner password")
    if repo.signer() is None:
        raise UsageError("this repository's owner key slot has no signing key (made by an older haeedge)",
                         hint="add a new owner key with a current haeedge from a fresh 'haeedge init' repository")


def add_passphrase(repo: Repository, passphrase: bytes, *, label: str = "", count_byte: int = 0xFF) -> str:
    require_owner(repo)
    return repo.add_passphrase_slot(passphrase, label, count_byte=count_byte)


def add_certificate(repo: Repository, cert: Certificate, *, label: str = "") -> str:
    """An owner slot only the secret key of ``cert`` opens; writers encrypt to it from their next run."""
    require_owner(repo)
    rid = repo.config.repository_id
    slot_id = repo.put_object("keys", seal_slot_for_certificate(repo.keys, rid, cert, label=label))
    repo.register_slot(KeySlot(slot_id, rid, repo.keys, now_iso(whole_seconds=True), "", KIND_CERTIFICATE, label), cert)
    if repo.trust.manifest is not None:

        write_manifest(repo, add_recipients=[cert.raw])
    return slot_id


def add_writer(repo: Repository, passphrase: bytes, host: str, *, label: str = "",
               recipients: list[Certificate] | None = None, count_byte: int = 0xFF,
               trust_root: str | None = None) -> str:
    """A write-only key for ``host``: meta + blob_id, its own tree and signing keys, no content key.

    The slot names the repository's trust root (the writer checks the manifest
    against it), and the owner-signed manifest approves its key for ``host``.
    """
    require_owner(repo)
    manifest = repo.trust.manifest
    if manifest is not None:

        # Fail before writing anything when this credential cannot sign the manifest.
        _root_signer(repo, repo.trust, manifest.root_kind, manifest.root_fingerprint)
        if manifest.root_kind == ROOT_CERTIFICATE:
            trust_root = manifest.root_fingerprint
    if not host or len(host) > 255 or any(c in host for c in "\n\r\0"):
        raise UsageError(f"--host {host!r} is not a usable host name")
    recipients = recipients or repo.registry().recipients()
    if not recipients:
        raise UsageError("a write-only key encrypts to the owner's OpenPGP certificate, and this repository "
                         "has none", hint="first: haeedge key add --recipient-file OWNER.asc")
    signer = repo.signer()
    assert signer is not None
    wkeys = repo.keys.for_writer(host, generate_key(f"haeedge writer for host {host}"), signer.cert_bytes,
                                 [c.raw for c in recipients])
    if trust_root:
        wkeys.extra["trust_root"] = trust_root
    rid = repo.config.repository_id
    slot_id = repo.put_object("keys", seal_slot_for_passphrase(wkeys, rid, passphrase, label=label,
                                                               count_byte=count_byte, kind=KIND_WRITER, host=host))
    repo.register_slot(KeySlot(slot_id, rid, wkeys, now_iso(whole_seconds=True), host, KIND_WRITER, label))
    if manifest is not None:
        from haeedge.crypto.pubkey import load_secret_key

        cert = load_secret_key(wkeys.signing_key).cert
        write_manifest(repo, add_writers={cert.fingerprint_hex: WriterEntry(host, cert.raw)})
    return slot_id


# --------------------------------------------------------------------------- listing


@dataclass
class KeyInfo:
    """One key slot as ``key list`` shows it."""

    id: str
    kind: str
    role: str
    label: str
    host: str
    created: str
    in_use: bool
    registered: bool
    signing_fingerprint: str | None = None
    recipient_fingerprint: str | None = None


def list_keys(repo: Repository) -> tuple[list[KeyInfo], list[tuple[str, str]]]:
    """Every key slot (joined with its owner-signed record), and problems met reading records."""
    registry = repo.registry()
    records: dict[str, KeyRecord] = {r.slot: r for r in registry.live_records()}
    in_use = repo.slot.slot_id if repo.slot is not None else None
    out: list[KeyInfo] = []
    for info in sorted(repo.keys_listing(), key=lambda i: i.name):
        sid = object_id_of(info.name)
        try:
            kind = key_object_kind(repo.get_object(info.name))
        except HaeedgeError:
            kind = "unknown"
        if kind == "record":
            continue
        rec = records.get(sid)
        if rec is not None:
            out.append(KeyInfo(sid, rec.kind, rec.role, rec.label, rec.host, rec.created, sid == in_use, True,
                               rec.signing_fingerprint, rec.recipient_fingerprint))
        elif sid == in_use and repo.slot is not None:
            s = repo.slot
            out.append(KeyInfo(sid, s.kind, s.keys.role, s.label, s.host, s.created, True, False,
                               repo.signer().fingerprint if repo.signer() else None))
        else:
            out.append(KeyInfo(sid, kind, "?", "", "", "", False, False))
    return out, registry.problems


# --------------------------------------------------------------------------- removal


def _find(infos: list[KeyInfo], prefix: str) -> KeyInfo:
    p = prefix.strip().lower()
    if not p or any(c not in "0123456789abcdef" for c in p):
        raise UsageError(f"{prefix!r} is not a key id (see 'haeedge key list')")
    matches = [i for i in infos if i.id.startswith(p)]
    if not matches:
        raise UsageError(f"no key slot with id {p}")
    if len(matches) > 1:
        raise UsageError(f"key id prefix {p} is ambiguous ({len(matches)} key slots)")
    return matches[0]


def remove_key(repo: Repository, prefix: str) -> KeyInfo:
    """Delete a key slot, never the last one able to read, nor the one in use.

    "Able to read" is an owner slot. While write-only keys exist, their data is
    encrypted to the owner certificates, so the last certificate slot is kept
    too: without it no haeedge credential could open their backups. A removed
    writer's record is kept, marked removed, so its old snapshots still verify.
    """
    require_owner(repo)
    infos, _problems = list_keys(repo)
    target = _find(infos, prefix)
    readers = [i for i in infos if i.role == ROLE_OWNER and i.id != target.id]
    if target.role != ROLE_WRITER:
        if not readers:
            raise UsageError(f"refusing to remove key {target.id[:12]}: it is the last key that can read this "
                             "repository", hint="add another one first: haeedge key add")
        writers = [i for i in infos if i.role == ROLE_WRITER]
        if target.kind == KIND_CERTIFICATE and writers and not [r for r in readers if r.kind == KIND_CERTIFICATE]:
            raise UsageError(f"refusing to remove key {target.id[:12]}: it is the last owner certificate, and "
                             f"{len(writers)} write-only keys encrypt file contents to it",
                             hint="add another certificate first: haeedge key add --recipient-file OWNER.asc")
    if target.in_use:
        raise UsageError(f"refusing to remove key {target.id[:12]}: it is the key in use",
                         hint="remove it with another key, or change its password with 'haeedge key passwd'")
    old_records = [r for r in repo.registry().records if r.slot == target.id]
    if repo.trust.manifest is not None:  # the owner-signed manifest is what makes a removal final

        if target.role == ROLE_WRITER and target.signing_fingerprint:
            write_manifest(repo, remove=[target.signing_fingerprint])
        elif target.kind == KIND_CERTIFICATE and target.recipient_fingerprint:
            write_manifest(repo, drop_recipients=[target.recipient_fingerprint])
    if target.role == ROLE_WRITER:
        rec = next((r for r in old_records if not r.removed), None)
        if rec is not None:
            write_record(repo, rec.slot, rec.kind, rec.role, label=rec.label, host=rec.host,
                         signing_cert=rec.signing_cert, signing_fingerprint=rec.signing_fingerprint,
                         created=rec.created, removed=now_iso(whole_seconds=True))
    repo.delete_key_object(target.id)
    for rec in old_records:
        if not rec.removed:
            repo.delete_key_object(rec.record_id)
    repo.forget_registry()
    return target


def change_passphrase(repo: Repository, new_passphrase: bytes, *, count_byte: int = 0xFF) -> tuple[str, str]:
    """``key passwd``: add a slot with the new passphrase, then remove the one in use. (old id, new id)"""
    require_owner(repo, "changing a password")
    slot = repo.slot
    assert slot is not None
    if slot.kind != KIND_PASSPHRASE:
        raise UsageError("the key in use is not a password key (it is a certificate key): nothing to change",
                         hint="add a key with 'haeedge key add --recipient-file' and remove this one instead")
    new_id = repo.add_passphrase_slot(new_passphrase, slot.label, count_byte=count_byte)
    old_records = [r for r in repo.registry().records if r.slot == slot.slot_id]
    repo.delete_key_object(slot.slot_id)
    for rec in old_records:
        repo.delete_key_object(rec.record_id)
    repo.forget_registry()
    return slot.slot_id, new_id


# --------------------------------------------------------------------------- approval


@dataclass
class Approval:
    """What ``trust approve`` signed."""

    root_fingerprint: str
    sequence: int
    owner_signing_fingerprint: str
    writers: dict[str, str]  # signing fingerprint -> host
    certificates: list[str]  # owner certificates the new slots are sealed to
    replaced_slots: list[str]


def approve_repository(repo: Repository, hosts: tuple[str, ...] = ()) -> Approval:
    """The owner's key signs a trust manifest for a repository made on a backup host (or format v1).

    The host generated the owner signing key it put in the certificate slot,
    and may have kept it, so approval makes a fresh one, seals it in new
    certificate slots (old ones are deleted), re-signs the key records with
    it and signs the manifest with the owner's own key: approving the writer
    keys found in the records (all, or those of ``hosts``).
    """
    from haeedge.crypto.pubkey import load_secret_key

    if repo.slot is None or repo.slot.kind != KIND_CERTIFICATE or not repo.identity_keys or repo.keys.is_writer:
        raise UsageError("trust approve needs the owner's OpenPGP secret key",
                         hint="run: haeedge --identity-file OWNER-SECRET.asc trust approve")
    manifest = repo.trust.manifest
    if manifest is not None and manifest.root_kind == ROOT_PASSWORD:
        raise UsageError("this repository's trust root is its owner password, not a certificate",
                         hint="manage it with the owner password (haeedge key ...)")
    root_key = next((k for k in repo.identity_keys
                     if manifest is None or k.fingerprint_hex == manifest.root_fingerprint), None)
    if root_key is None:
        raise UsageError("the key given with --identity-file is not this repository's trust root")
    registry = repo.registry()
    writers: dict[str, WriterEntry] = {}
    removed: dict[str, WriterEntry] = dict(manifest.removed) if manifest else {}
    writer_records: list[KeyRecord] = []
    for rec in registry.live_records():
        if rec.role != ROLE_WRITER:
            continue
        if hosts and rec.host not in hosts:
            continue
        writers[rec.signing_fingerprint.upper()] = WriterEntry(rec.host, rec.signing_cert)
        writer_records.append(rec)
    for rec in registry.records:
        if rec.role == ROLE_WRITER and rec.removed and rec.signing_fingerprint.upper() not in writers:
            removed.setdefault(rec.signing_fingerprint.upper(), WriterEntry(rec.host, rec.signing_cert, rec.removed))
    missing = set(hosts) - {w.host for w in writers.values()}
    if missing:
        raise UsageError(f"no write-only key registered for host {', '.join(sorted(missing))}",
                         hint="see 'haeedge key list'")
    certs: dict[str, Certificate] = {root_key.fingerprint_hex: root_key.cert}
    for c in registry.recipients():
        certs.setdefault(c.fingerprint_hex, c)
    old_slots = [object_id_of(i.name) for i in repo.keys_listing()
                 if key_object_kind(repo.get_object(i.name)) == KIND_CERTIFICATE]
    old_records = [r.record_id for r in registry.records] + [oid for oid, _why in registry.problems]
    extra = {k: v for k, v in repo.keys.extra.items() if k != "trust_root"}

    retired: dict[str, WriterEntry] = {}
    old_fpr = signing_fingerprint_of(repo.keys)
    old_signer = repo.signer()
    if old_fpr and old_signer is not None and (manifest is None or old_fpr not in manifest.retired_owner_keys):
        # The history signed with the replaced owner key stays trusted: signatures made before now.
        retired[old_fpr] = WriterEntry("", old_signer.cert_bytes, now_iso(whole_seconds=True))
    new_keys = MasterKeys(repo.keys.content, repo.keys.tree, repo.keys.meta, repo.keys.blob_id, ROLE_OWNER, extra,
                          generate_key(f"haeedge repository owner {repo.config.repository_id[:16]}"))
    repo.keys = new_keys
    repo._signer_loaded = None
    rid = repo.config.repository_id
    new_slots = []
    for cert in certs.values():
        label = "owner" if cert.fingerprint_hex == root_key.fingerprint_hex else "owner certificate"
        sid = repo.put_object("keys", seal_slot_for_certificate(new_keys, rid, cert, label=label))
        new_slots.append(sid)
        slot = KeySlot(sid, rid, new_keys, now_iso(whole_seconds=True), "", KIND_CERTIFICATE, label)
        if cert.fingerprint_hex == root_key.fingerprint_hex:
            repo.slot = slot
        repo.register_slot(slot, cert)
    for rec in writer_records:
        write_record(repo, rec.slot, rec.kind, rec.role, label=rec.label, host=rec.host,
                     signing_cert=rec.signing_cert, signing_fingerprint=rec.signing_fingerprint, created=rec.created)
    owner_cert = load_secret_key(new_keys.signing_key).cert
    m = write_manifest(repo, root_key=root_key, owner_keys={owner_cert.fingerprint_hex: owner_cert.raw},
                       writers=writers, removed=removed, recipients=[c.raw for c in certs.values()],
                       retire_owner_keys=retired)
    for oid in [*old_slots, *old_records]:
        if oid not in new_slots:
            with contextlib.suppress(HaeedgeError):
                repo.delete_key_object(oid)
    repo.forget_registry()
    return Approval(m.root_fingerprint, m.sequence, owner_cert.fingerprint_hex, {f: w.host for f, w in writers.items()},
                    sorted(certs), [o for o in old_slots if o not in new_slots])


def check_command(repo: Repository, command: str) -> None:
    """Refuse up front what a write-only key cannot do (exit 12 with one clear line)."""
    if command in WRITER_REFUSED_COMMANDS:
        repo.require_reader(command)


__all__ = ["KIND_PASSPHRASE", "KeyInfo", "add_certificate", "add_passphrase", "add_writer", "change_passphrase",
           "check_command", "init_write_only", "list_keys", "load_identity", "read_certificate", "remove_key"]
