"""Key operations: secret-key identities, write-only repositories, list/add/remove/passwd.

Why a module of its own: the CLI stays thin, and every rule about who may do
what with keys (only owners manage keys; the last key able to read is never
removed; a writer cannot restore) lives in one place with its reasons.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from haeedge.backends.base import Backend
from haeedge.crypto.openpgp import PKESKDecryptor
from haeedge.errors import HaeedgeError, NoReadAccess, OpenPGPError, UsageError, WrongPassword
from haeedge.repo.config import RepositoryConfig
from haeedge.repo.keys import (
    KIND_CERTIFICATE,
    KIND_PASSPHRASE,
    KIND_WRITER,
    ROLE_OWNER,
    ROLE_WRITER,
    KeyRecord,
    KeySlot,
    key_object_kind,
    now_iso,
    seal_slot_for_certificate,
    seal_slot_for_passphrase,
)
from haeedge.repo.repository import Repository, object_id_of
from haeedge.repo.signing import generate_key, write_record

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
                        count_byte=s2k_count_byte)
    return repo, writer


def require_owner(repo: Repository, what: str = "key management") -> None:
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
    repo.register_slot(KeySlot(slot_id, rid, repo.keys, now_iso(), "", KIND_CERTIFICATE, label), cert)
    return slot_id


def add_writer(repo: Repository, passphrase: bytes, host: str, *, label: str = "",
               recipients: list[Certificate] | None = None, count_byte: int = 0xFF) -> str:
    """A write-only key for ``host``: meta + blob_id, its own tree and signing keys, no content key."""
    require_owner(repo)
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
    rid = repo.config.repository_id
    slot_id = repo.put_object("keys", seal_slot_for_passphrase(wkeys, rid, passphrase, label=label,
                                                               count_byte=count_byte, kind=KIND_WRITER, host=host))
    repo.register_slot(KeySlot(slot_id, rid, wkeys, now_iso(), host, KIND_WRITER, label))
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

    def to_json(self) -> dict:
        return asdict(self)


def list_keys(repo: Repository) -> tuple[list[KeyInfo], list[tuple[str, str]]]:
    """Every key slot (joined with its owner-signed record), and problems met reading records."""
    registry = repo.registry()
    records: dict[str, KeyRecord] = {r.slot: r for r in registry.live_records()}
    in_use = repo.slot.slot_id if repo.slot is not None else None
    out: list[KeyInfo] = []
    for info in sorted(repo.backend.list("keys"), key=lambda i: i.name):
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
    if target.role == ROLE_WRITER:
        rec = next((r for r in old_records if not r.removed), None)
        if rec is not None:
            write_record(repo, rec.slot, rec.kind, rec.role, label=rec.label, host=rec.host,
                         signing_cert=rec.signing_cert, signing_fingerprint=rec.signing_fingerprint,
                         created=rec.created, removed=now_iso())
    repo.backend.delete(f"keys/{target.id}")
    for rec in old_records:
        if not rec.removed:
            repo.backend.delete(f"keys/{rec.record_id}")
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
    repo.backend.delete(f"keys/{slot.slot_id}")
    for rec in old_records:
        repo.backend.delete(f"keys/{rec.record_id}")
    repo.forget_registry()
    return slot.slot_id, new_id


def check_command(repo: Repository, command: str) -> None:
    """Refuse up front what a write-only key cannot do (exit 12 with one clear line)."""
    if command in WRITER_REFUSED_COMMANDS:
        repo.require_reader(command)


__all__ = ["KIND_PASSPHRASE", "KeyInfo", "add_certificate", "add_passphrase", "add_writer", "change_passphrase",
           "check_command", "init_write_only", "list_keys", "load_identity", "read_certificate", "remove_key"]
