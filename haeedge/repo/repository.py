"""Repository facade: the one object operations talk to.

It owns sealing and opening of every object, the blob index, snapshots and
chains, and locks. Pack building, upload and index checkpoints are the
``Packer``'s (repo/packer.py), which a run starts with its ``WriteOptions``
(``begin_writes``); blob saving is thread-safe, so callers can feed it from
several threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import zstandard

from haeedge.backends.base import Backend, ObjectInfo, data_name
from haeedge.backends.s3policy import apply_object_lock
from haeedge.crypto.openpgp import Keyring, NoMatchingKey, PassphraseSealer, decrypt_literal_view, decrypt_message
from haeedge.errors import (
    BackendError,
    FormatError,
    HaeedgeError,
    IntegrityError,
    NoReadAccess,
    ObjectNotFound,
    OpenPGPError,
    RepositoryExists,
    RepositoryNotFound,
    SnapshotNotFound,
    TrustError,
    UntrustedSnapshot,
    UsageError,
)
from haeedge.repo import lock as locking
from haeedge.repo.cache import object_cache_of
from haeedge.repo.config import RepositoryConfig
from haeedge.repo.forgotten import Markers, read_markers
from haeedge.repo.ids import INDEX_PART_BYTES, MAX_INDEX_ENV, hex_id, object_id_of, stored_cap
from haeedge.repo.index import BlobIndex, BlobLocation, IndexPack, encode_index, split_index
from haeedge.repo.keys import (
    KIND_CERTIFICATE,
    KIND_PASSPHRASE,
    CachingDecryptor,
    KeySlot,
    MasterKeys,
    NotInWriterView,
    SessionSealer,
    SlotAttempts,
    SlotMalformed,
    key_object_kind,
    needs_identity,
    open_slot,
    seal_slot_for_certificate,
    seal_slot_for_passphrase,
    writer_sealer,
    wrong_password,
)
from haeedge.repo.marks import check_before_snapshot, read_marks
from haeedge.repo.pack import (
    BLOB_TREE,
    COMPRESSION_ZSTD,
    MAX_BLOB_RAW,
    PackEntry,
    decode_header,
    split_pack_trailer,
)
from haeedge.repo.packer import KEY_FOR_BLOB, Packer, WriteOptions, WriteStats, put_whole
from haeedge.repo.provenance import OWNER, domains_for_host, host_domain, read_indexes
from haeedge.repo.signing import (
    SignatureStatus,
    Signer,
    SignerRegistry,
    SigningRepository,
    generate_key,
    load_registry,
    sign_snapshot,
    write_record,
)
from haeedge.repo.snapshot import KIND_FULL, MAX_CHAIN_DEPTH, Snapshot, now_iso
from haeedge.repo.tree import Node, TreeWriter, iter_tree, merge_chain
from haeedge.repo.trust import (
    KEY_HINT_ENV,
    MODE_LEGACY,
    ROOT_PASSWORD,
    TrustPolicy,
    TrustState,
    evaluate,
    write_manifest,
)

if TYPE_CHECKING:
    from haeedge.crypto.pubkey import Certificate

log = logging.getLogger("haeedge.repository")

MAX_META_OBJECT = 512 << 20
#: Certificate slots one identity opens that are checked against the trust manifest (planted ones included).
MAX_CERTIFICATE_CANDIDATES = 256
#: Key records a run keeps in memory, each and in all (hostile keys/ objects are not kept).
MAX_REMEMBERED_RECORD = 256 << 10
MAX_REMEMBERED_RECORDS = 16 << 20


class Credentials:
    """What a user presents to open a repository: passphrases and/or secret keys."""

    def __init__(self, passphrases: list[bytes] | None = None, pkesk_decryptors: list | None = None):
        self.passphrases = passphrases or []
        self.pkesk_decryptors = pkesk_decryptors or []

    @property
    def identity_keys(self) -> list:
        """The secret keys behind the decryptors (``--identity-file``): candidates for the trust root."""
        return [sk for d in self.pkesk_decryptors for sk in getattr(d, "secret_keys", ())]

    def keyring(self) -> Keyring:
        return Keyring(self.passphrases, self.pkesk_decryptors)


_tls = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_tls, "decompressor", None)
    if d is None:
        d = _tls.decompressor = zstandard.ZstdDecompressor()
    return d



class Repository:
    def __init__(self, backend: Backend, config: RepositoryConfig, keys: MasterKeys, slot: KeySlot | None = None,
                 *, registry_loader: Callable[[SigningRepository], SignerRegistry] = load_registry):
        """``registry_loader`` builds the trust registry (who may sign for which host) from what this
        repository holds; ``registry()`` caches it until ``forget_registry()``."""
        self.backend = backend
        self.config = config
        self.keys = keys
        self.slot = slot
        self.index = BlobIndex()
        self.index_ids: set[str] = set()
        #: What the runs of this opened repository added, whichever packer stored it.
        self.stats = WriteStats()
        self._packer: Packer | None = None
        self._packer_lock = threading.Lock()
        self._sealers: dict[str, PassphraseSealer] = {}
        #: Makes a writer's session sealers once per repository, however many threads ask at once.
        self._seal_lock = threading.Lock()
        #: Guards the per-run memo of file-list blobs (restore and backup read trees from threads).
        self._tree_memo_lock = threading.Lock()
        #: Key records and trust manifests read in this run (named by their SHA-256, so never stale):
        #: opening, the trust manifest and the signer registry each walk keys/, one GET per record.
        self._records: dict[str, bytes] = {}
        self._records_bytes = 0
        self._keyrings: dict[str, Keyring] = {}
        self._snapshot_cache: dict[str, Snapshot] = {}
        self._status_cache: dict[str, SignatureStatus] = {}
        self.blob_id_key = keys.blob_id
        self._load_registry = registry_loader

        #: Secret keys given with --identity-file (their primary fingerprints may be the trust root).
        self.identity_keys: list = []
        self.trust_policy: TrustPolicy = TrustPolicy()
        #: Set by open(): which manifest (if any) vouches for this credential; see repo/trust.py.
        self.trust: TrustState = TrustState(MODE_LEGACY)
        #: The config's plaintext, whose SHA-256 the manifest signs.
        self.config_plain: bytes = config.to_bytes()
        #: Readers normally see only trusted snapshots; --allow-untrusted lets them read the others (warned).
        self.allow_untrusted = False

    # ------------------------------------------------------------------ creation / opening

    @classmethod
    def init(cls, backend: Backend, passphrase: bytes | None, *, config: RepositoryConfig | None = None,
             keys: MasterKeys | None = None, s2k_count_byte: int = 0xFF, owner_cert: Certificate | None = None,
             label: str = "") -> Repository:
        """A new repository whose first (owner) slot opens with ``passphrase``, or with the secret key
        of ``owner_cert``. The owner slot also carries the repository's owner signing key."""
        if backend.exists("config"):
            raise RepositoryExists(f"{backend.location}: a repository already exists here")
        keys = keys or MasterKeys.generate()
        config = config or RepositoryConfig(repository_id=os.urandom(32).hex())
        if keys.signing_key is None:
            keys.signing_key = generate_key(f"haeedge repository owner {config.repository_id[:16]}")
        if owner_cert is not None:
            slot, kind = seal_slot_for_certificate(keys, config.repository_id, owner_cert, label=label), \
                KIND_CERTIFICATE
        elif passphrase is not None:
            slot, kind = seal_slot_for_passphrase(keys, config.repository_id, passphrase, label=label,
                                                  count_byte=s2k_count_byte), KIND_PASSPHRASE
        else:
            raise UsageError("a new repository needs a password or an owner certificate")
        apply_object_lock(backend, config.object_lock)
        backend.create()
        repo = cls(backend, config, keys)
        repo._keys_listing = []  # a new repository: keys/ holds what this run writes
        repo.bind_cache()
        slot_id = repo.put_object("keys", slot)
        repo.slot = KeySlot(slot_id, config.repository_id, keys, now_iso(whole_seconds=True), socket.gethostname(),
                            kind, label)
        repo.register_slot(repo.slot, owner_cert)
        repo.config_plain = config.to_bytes()
        backend.put("config", repo.seal("meta", repo.config_plain))
        if owner_cert is None:  # a password repository: its owner signing key is the trust root

            signer = repo.signer()
            assert signer is not None
            write_manifest(repo, root_kind=ROOT_PASSWORD, owner_keys={signer.fingerprint: signer.cert_bytes},
                           writers={}, removed={}, recipients=[])
        # else: made with --recipient-file, typically on a backup host that cannot sign as the owner:
        # unapproved until the owner runs 'haeedge trust approve' (repo/trust.py)
        return repo

    @classmethod
    def open(cls, backend: Backend, credentials: Credentials, trust: TrustPolicy | None = None) -> Repository:
        """Open with the first key slot the credentials open that the repository's trust root vouches for.

        A password slot is taken as soon as one opens (only the password holder
        could have made it). Certificate slots are all tried, since anyone can
        encrypt one to a public certificate: only one the owner-signed trust
        manifest vouches for is used (repo/trust.py). ``trust``: pinned owner
        fingerprint and client memory; none means "no memory".
        """

        policy = trust or TrustPolicy()
        try:
            config_sealed = backend.get("config")
            check_object_size("config", len(config_sealed))
        except ObjectNotFound:
            raise RepositoryNotFound(f"{backend.location}: no repository here (missing config)",
                                     hint="create one with 'haeedge init'") from None
        attempts = SlotAttempts(credentials.keyring())  # bounded work on hostile keys/ objects
        candidates: list[KeySlot] = []
        malformed: SlotMalformed | None = None
        damaged: list[str] = []
        hints = slot_hints(backend.location, policy)
        tried_first = None
        keys_listing = list(backend.list("keys"))  # one listing per run: trust and the registry reuse it
        read: list[tuple[str, bytes]] = []
        for info in sorted(keys_listing, key=lambda i: _slot_order(object_id_of(i.name), hints)):
            # One damaged or hostile object in keys/ must not lock everybody out: skip it, say so.
            if not attempts.admit_size(info.size):
                log.warning("skipping key object %s: %d bytes, larger than any key slot", info.name, info.size)
                continue
            try:
                data = backend.get(info.name)
                _check_content_name(info.name, data)
                read.append((info.name, data))
                if key_object_kind(data) == "record":  # kept in ``read``: trust and the registry use it
                    continue  # key records and manifests are sealed with meta, not with a credential
                if not attempts.admit():
                    break
                tried_first = tried_first or object_id_of(info.name)
                slot = open_slot(object_id_of(info.name), data, attempts.keyring)
            except ObjectNotFound:
                continue  # removed meanwhile
            except SlotMalformed as e:
                malformed = malformed or e
                continue
            except IntegrityError as e:
                log.warning("skipping key object %s: %s", info.name, e)
                damaged.append(info.name)
                continue
            if slot is None:
                continue
            candidates.append(slot)
            if slot.kind != KIND_CERTIFICATE or len(candidates) >= MAX_CERTIFICATE_CANDIDATES:
                break
        if not candidates:
            if malformed is not None:
                raise malformed
            if (limited := attempts.limit_error()) is not None:
                raise limited
            if damaged:  # the damaged one may be the slot these credentials open
                raise IntegrityError(f"no key slot opens with these credentials, and {', '.join(damaged)} "
                                     "is damaged", hint="if that was your slot, use another credential")
            raise wrong_password()
        identity_keys = credentials.identity_keys
        identity_fprs = [sk.fingerprint_hex for sk in identity_keys]
        first_error: HaeedgeError | None = None
        for slot in candidates:
            repo = cls(backend, RepositoryConfig(repository_id=slot.repository_id), slot.keys, slot)
            repo._keys_listing = list(keys_listing)
            for name, data in read:
                repo.remember_record(name, data)
            repo._identity = tuple(CachingDecryptor(d) for d in credentials.pkesk_decryptors)
            repo.identity_keys = identity_keys
            repo.trust_policy = policy
            try:
                plain = repo.open_sealed("meta", config_sealed, limit=1 << 20)
                config = RepositoryConfig.from_bytes(plain)
            except IntegrityError as e:  # name the object: "a meta object" alone sends nobody to config
                if slot.kind == KIND_CERTIFICATE:
                    first_error = first_error or IntegrityError(f"config: {e}", hint=e.hint)
                    continue
                raise IntegrityError(f"config: {e}", hint=e.hint) from e
            if config.repository_id != slot.repository_id:
                first_error = first_error or FormatError("key slot belongs to another repository")
                continue
            repo.config = config
            repo.config_plain = plain
            apply_object_lock(backend, config.object_lock)  # every writer keeps the retention init chose
            try:
                repo.trust = evaluate(repo, slot, plain, identity_fprs, policy)
            except TrustError as e:
                first_error = first_error or e
                continue
            if policy.memory is not None and (slot.slot_id != tried_first or hints):
                policy.memory.record_slot(backend.location, slot.slot_id)  # found late or by hint: first next time
            repo.bind_cache()
            return repo
        assert first_error is not None
        raise first_error

    def bind_cache(self) -> None:
        """Point the local metadata cache (repo/cache.py), if the backend has one, at this repository."""

        cache = object_cache_of(self.backend)
        if cache is not None:
            cache.bind(self.config.repository_id)
        self._object_cache = cache

    _object_cache = None

    def close(self) -> None:
        if self._packer is not None:
            self._packer.close()
        self.backend.close()

    # ------------------------------------------------------------------ sealing

    #: PKESK decryptors of the secret keys given with --identity-file (set by open()).
    _identity: tuple = ()
    _signer_loaded: list | None = None  # [Signer | None] once the slot's signing key is unlocked
    _registry_cache: SignerRegistry | None = None
    _markers_cache: Markers | None = None

    def sealer(self, key_name: str) -> PassphraseSealer | SessionSealer:
        """What seals ``key_name`` objects: ``.seal(data)`` -> one complete OpenPGP message.

        Owners: a PassphraseSealer over the master key (as always). Writers, for
        data and tree blobs: one session key per run behind one PKESK per owner
        certificate (tree blobs add a SKESK with the host's tree key, so the
        writer can read its own host's file lists for incremental backups).
        """
        s = self._sealers.get(key_name)
        if s is None:
            if self.keys.is_writer and key_name in ("content", "tree"):
                with self._seal_lock:
                    s = self._sealers.get(key_name)
                    if s is None:

                        own = self.keys.passphrase("tree") if key_name == "tree" else None
                        s = self._sealers[key_name] = writer_sealer(self.writer_recipients(), own)
                return s
            try:
                s = self._sealers[key_name] = PassphraseSealer(self.keys.passphrase(key_name))
            except KeyError:
                raise NoReadAccess(f"this credential cannot write {key_name} objects") from None
        return s

    def writer_recipients(self) -> list[Certificate]:
        """Whom a writer encrypts to: the owner's certificate slots per the owner-signed key records,
        else the certificates stored in the writer's own slot."""
        certs = self.registry().recipients()
        if certs:
            return certs
        from haeedge.crypto.pubkey import parse_certificate

        return [parse_certificate(c) for c in self.keys.recipients]

    def seal(self, key_name: str, data: bytes | memoryview) -> bytes:
        return self.sealer(key_name).seal(data)

    def keyring(self, key_name: str) -> Keyring:
        """What opens ``key_name`` objects. Reading blobs a writer sealed needs a secret key
        (--identity-file); without one, such a blob raises NoReadAccess saying so."""
        k = self._keyrings.get(key_name)
        if k is None:
            try:
                passphrases = [self.keys.passphrase(key_name)]
            except KeyError:
                raise NoReadAccess(
                    f"this is a write-only key: it holds no '{key_name}' key, so it cannot decrypt "
                    f"{'file contents' if key_name == 'content' else key_name + ' objects'}",
                    hint="restore with the owner's key: --identity-file OWNER-SECRET.asc (or an owner password)"
                ) from None
            decryptors: list = []
            if key_name in ("content", "tree") and not self.keys.is_writer:
                decryptors = list(self._identity) or [needs_identity]
            k = self._keyrings[key_name] = Keyring(passphrases, decryptors)
        return k

    def require_reader(self, what: str) -> None:
        """Refuse early, with one clear line, what a write-only key cannot do."""
        if self.keys.is_writer:
            host = f" for host {self.slot.host}" if self.slot is not None and self.slot.host else ""
            raise NoReadAccess(f"{what} needs to read backed-up data, but this is a write-only key{host}: "
                               "it holds no 'content' key",
                               hint="use the owner's key: --identity-file OWNER-SECRET.asc (or an owner password)")

    def open_sealed(self, key_name: str, data: bytes | memoryview, limit: int = MAX_META_OBJECT) -> bytes:
        try:
            return decrypt_message(data, self.keyring(key_name), limit=limit)
        except NoMatchingKey as e:
            raise IntegrityError(f"cannot decrypt a {key_name} object: wrong key or modified data") from e

    # ------------------------------------------------------------------ plain objects

    def put_object(self, namespace: str, data: bytes, *, backend: Backend | None = None) -> str:
        """Store ``data`` under its SHA-256 in ``namespace`` (through ``backend``: a run's packer's)."""
        oid = hashlib.sha256(data).hexdigest()
        name = f"{namespace}/{oid}"
        put_whole(backend or self.backend, name, data)
        if namespace == "keys" and backend is None:  # a run's packer's backend may be a dry run's
            self.remember_record(name, data)
            if self._keys_listing is not None and all(i.name != name for i in self._keys_listing):
                self._keys_listing.append(ObjectInfo(name, len(data)))
        return oid

    # ------------------------------------------------------------------ keys/ listing

    #: The listing of keys/ this run took (opening takes it; trust and the registry reuse it), kept
    #: current with this run's own writes and deletes. None: not listed yet.
    _keys_listing: list[ObjectInfo] | None = None

    def keys_listing(self) -> list[ObjectInfo]:
        """``keys/`` as listed once per run: opening, the trust manifest and the signer registry each
        walk it, and one listing serves all three (``forget_keys_listing`` takes it again)."""
        if self._keys_listing is None:
            self._keys_listing = list(self.backend.list("keys"))
        return list(self._keys_listing)

    def forget_keys_listing(self) -> None:
        self._keys_listing = None

    def delete_key_object(self, object_id: str) -> None:
        """Delete ``keys/<object_id>`` and drop it from this run's listing."""
        name = f"keys/{object_id}"
        self.backend.delete(name)
        if self._keys_listing is not None:
            self._keys_listing = [i for i in self._keys_listing if i.name != name]
        if self._records.pop(name, None) is not None:
            self._records_bytes = sum(len(v) for v in self._records.values())

    def put_named(self, name: str, data: bytes | memoryview) -> None:
        """Store an object; a failed store leaves nothing behind (``packer.put_whole``)."""
        put_whole(self.backend, name, data)

    def get_object(self, name: str, size: int | None = None) -> bytes:
        """An object checked against its name; ``size`` (from a listing) refuses a huge one unread."""
        if size is not None:
            check_object_size(name, size)
        data = self._records.get(name)
        if data is not None:
            return data
        data = self.backend.get(name)
        check_object_size(name, len(data))
        _check_content_name(name, data)
        self.remember_record(name, data)
        return data

    def remember_record(self, name: str, data: bytes) -> None:
        """Keep a small object of ``keys/`` (slot, key record or manifest, checked against its name) for
        this run: opening, the trust manifest and the signer registry all walk ``keys/``."""
        if (name.startswith("keys/") and len(data) <= MAX_REMEMBERED_RECORD
                and self._records_bytes + len(data) <= MAX_REMEMBERED_RECORDS
                and name not in self._records):
            self._records[name] = data
            self._records_bytes += len(data)

    # ------------------------------------------------------------------ index

    def load_index(self) -> None:
        """Read every index object, each entry with the trust domain of the object that lists it
        (repo/provenance.py). Superseded objects (left by an interrupted prune) are skipped, but only
        an owner-signed object may supersede: a writer cannot hide another host's packs."""

        found = read_indexes(self)
        self.index_ids.update(d.object_id for d in found.current())
        self.index = found.blob_index()
        self._dedup_view = None

    def own_domain(self) -> str:
        """The trust domain of what this credential writes: its host's (writers) or the owner's."""

        if self.keys.is_writer:
            return host_domain(self.slot.host if self.slot is not None else "")
        return OWNER

    def dedup_domains(self) -> frozenset[str]:
        """Whose blobs this credential deduplicates against: the owner's and, for a writer, its own host's.
        Blobs other writers listed are uploaded again (docs/security.md D3)."""

        return domains_for_host(self.slot.host if self.keys.is_writer and self.slot is not None else None)

    _dedup_view: DedupView | None = None

    def dedup_view(self) -> DedupView:
        """``blob_id in view``: already stored in a form this credential may deduplicate against
        (not in a pack a prune marked: repo/marks.py)."""
        view = self._dedup_view
        if view is None or view.index is not self.index:
            view = self._dedup_view = DedupView(self.index, self.dedup_domains(), self._excluded_packs)
        return view

    #: Lock-free backups (repo/marks.py): the valid prune marks seen when the backup began (None:
    #: not a backup), and the packs this run stored.
    marks_at_start: dict | None = None
    _excluded_packs: frozenset[str] = frozenset()

    def begin_backup(self) -> None:
        """Read the prune marks: blobs in marked packs count as absent (stored again), and the snapshot
        is checked against marks that appear meanwhile (``marks.check_before_snapshot``)."""

        marks = read_marks(self)
        self.marks_at_start = {m.mark_id: m for m in marks.valid}
        self._excluded_packs = frozenset(marks.packs())
        self._dedup_view = None

    def write_index(self, packs: list[IndexPack], superseded: list[str] = (), *,
                    backend: Backend | None = None) -> str:
        """Store ``packs`` as index object(s) under the readers' size cap, each signed by this
        credential's key (unsigned for slots made before signing keys existed: those count as legacy
        where writers exist); returns the last one's id. ``backend``: where to store them (a run's
        packer's: a dry run's stores nothing); the repository's storage by default.

        When split, the part naming ``superseded`` is written last: until it
        exists the old objects stay in force (the new parts only repeat packs).
        """
        signer = self.signer()
        sign = None
        if signer is not None:
            from haeedge.crypto.pubkey import sign_detached

            def sign(data: bytes) -> bytes:
                return sign_detached(signer.key, data)

        groups = split_index(packs, INDEX_PART_BYTES)
        for n, group in enumerate(groups):
            last = n == len(groups) - 1
            body = encode_index(group, superseded if last else (), signer.fingerprint if signer else "", sign)
            oid = self.put_object("index", self.seal("meta", body), backend=backend)
            self.index_ids.add(oid)
            with self.stats.lock:
                self.stats.index_objects_written += 1
        return oid

    def add_to_index(self, packs: list[IndexPack]) -> None:
        """Packs this run stored and indexed, as this credential's (``PackTarget``; the packer's lock is held)."""
        domain = self.own_domain()
        for p in packs:
            self.index.add_pack(bytes.fromhex(p.pack_id), p.size, p.entries, domain)

    # ------------------------------------------------------------------ writing: repo/packer.py

    def begin_writes(self, options: WriteOptions) -> Packer:
        """Start a run that stores blobs with ``options`` (compression level, dry run): the packer
        that ``save_blob`` and friends use from now on. Only between runs: nothing may be pending."""
        with self._packer_lock:
            old = self._packer
            if old is not None:
                if not old.idle:
                    raise RuntimeError("begin_writes while blobs of another run are still being packed")
                old.close()
            self._packer = self._new_packer(options)
            return self._packer

    def _new_packer(self, options: WriteOptions) -> Packer:
        level = options.compression_level
        return Packer(self, self.backend, pack_size=self.config.pack_size,
                      compression_level=self.config.compression_level if level is None else level,
                      dry_run=options.dry_run, blob_id_key=self.blob_id_key, stats=self.stats)

    @property
    def packer(self) -> Packer:
        """This run's packer (``begin_writes``); one with the config's options when no run began one."""
        packer = self._packer
        if packer is None:
            with self._packer_lock:
                if self._packer is None:
                    self._packer = self._new_packer(WriteOptions())
                packer = self._packer
        return packer

    @property
    def packs_written(self) -> set[str]:
        """The packs stored since the repository was opened (ids)."""
        return self.stats.pack_ids

    def has_blob(self, blob_id: bytes) -> bool:
        """Stored (or being stored) in a form this credential deduplicates against."""
        return self.packer.has_blob(blob_id)

    def save_blob(self, blob_type: int, data: bytes | memoryview, blob_id: bytes | None = None) -> tuple[bytes, bool]:
        """Store a blob unless known. Returns (id, newly added)."""
        return self.packer.save_blob(blob_type, data, blob_id)

    def add_sealed_blob(self, blob_type: int, blob_id: bytes, compression: int, sealed: bytes, raw_len: int) -> bool:
        """Pack a blob sealed elsewhere (a worker process); False when it is already stored."""
        return self.packer.add_sealed_blob(blob_type, blob_id, compression, sealed, raw_len)

    def flush(self) -> None:
        """Upload every open pack and write an index for all uploaded packs."""
        self.packer.flush()

    def tree_blob_sealed(self, blob_id: bytes, compression: int, sealed: bytes) -> None:
        if self._object_cache is not None:
            self._object_cache.write_blob(blob_id.hex(), compression, sealed)

    def abort_writes(self) -> None:
        """Drop unfinished packs after a failure; uploaded ones stay for reuse or prune."""
        self.packer.abort()

    # ------------------------------------------------------------------ blobs

    def blob_id(self, data: bytes | memoryview) -> bytes:
        return hmac.digest(self.blob_id_key, data, "sha256")

    def lookup_blob(self, blob_id: bytes) -> BlobLocation | None:
        return self.index.lookup(blob_id)

    def load_blob(self, blob_id: bytes, blob_type: int | None = None) -> bytes:
        """A blob's bytes, checked against its keyed id. When its primary copy is bad, every other
        listed copy is tried: a writer may have planted garbage under the id (docs/security.md D3)."""
        locations = self.index.locations(blob_id)
        if not locations:
            raise IntegrityError(f"blob {blob_id.hex()[:16]} is not in the index (missing data)")
        if blob_type == BLOB_TREE:
            raw = self._tree_memo_get(blob_id)
            if raw is not None:
                return raw
        first_error: HaeedgeError | None = None
        for loc, _domain in locations:
            try:
                if blob_type is not None and loc.blob_type != blob_type:
                    raise IntegrityError(f"blob {blob_id.hex()[:16]} has the wrong type")
                if loc.blob_type == BLOB_TREE:
                    raw = self._load_tree_blob(blob_id, loc)
                    if raw is not None:
                        return raw
                sealed = self.backend.get_range(data_name(loc.pack_id), loc.offset, loc.length)
                if len(sealed) != loc.length:
                    raise IntegrityError(f"pack {loc.pack_id[:16]} is truncated")
                raw = self.decode_blob(blob_id, loc, sealed)
                return self._tree_memo_put(blob_id, raw) if loc.blob_type == BLOB_TREE else raw
            except (IntegrityError, ObjectNotFound) as e:
                if len(locations) == 1:
                    raise
                first_error = first_error or e
        assert first_error is not None
        raise first_error

    # ------------------------------------------------------------------ tree blobs, cached

    #: Tree blobs this run read (a backup checks its parent's file lists, then reads them again).
    TREE_MEMO_BYTES = 32 << 20
    _tree_memo: dict[bytes, bytes] | None = None
    _tree_memo_size = 0

    def _tree_memo_get(self, blob_id: bytes) -> bytes | None:
        memo = self._tree_memo
        return memo.get(blob_id) if memo is not None else None

    def _tree_memo_put(self, blob_id: bytes, raw: bytes) -> bytes:
        with self._tree_memo_lock:
            if self._tree_memo is None:
                self._tree_memo = {}
            if len(raw) <= self.TREE_MEMO_BYTES // 4 and blob_id not in self._tree_memo:
                while self._tree_memo and self._tree_memo_size + len(raw) > self.TREE_MEMO_BYTES:
                    old = self._tree_memo.pop(next(iter(self._tree_memo)))
                    self._tree_memo_size -= len(old)
                self._tree_memo[blob_id] = raw
                self._tree_memo_size += len(raw)
        return raw

    def _load_tree_blob(self, blob_id: bytes, loc: BlobLocation) -> bytes | None:
        """A tree blob through the local cache (repo/cache.py): the cached sealed bytes are opened and
        checked against the keyed id exactly as bytes from the pack are; a cached copy that fails is
        dropped and the pack is read. None: no cache here (the caller reads the pack as always)."""
        cache = self._object_cache
        if cache is None:
            return None
        hid = blob_id.hex()
        sealed = cache.read_blob(hid, loc.compression)
        if sealed is not None:
            try:
                return self._tree_memo_put(blob_id, self._decode_blob(blob_id, loc, sealed))
            except IntegrityError:
                cache.drop_blob(hid, loc.compression)
        sealed = self.backend.get_range(data_name(loc.pack_id), loc.offset, loc.length)
        if len(sealed) != loc.length:
            raise IntegrityError(f"pack {loc.pack_id[:16]} is truncated")
        try:
            raw = self._decode_blob(blob_id, loc, sealed)
        except IntegrityError:
            raw = self.decode_blob(blob_id, loc, sealed)  # the second read, as without a cache; not kept
        else:
            cache.write_blob(hid, loc.compression, sealed)
        return self._tree_memo_put(blob_id, raw)

    def decode_blob(self, blob_id: bytes, loc: BlobLocation, sealed: bytes | memoryview) -> bytes:
        """Open, decompress and check a sealed blob against its keyed id.

        Damaged bytes are not final at once. A read can be damaged on its way
        (a flaky disk controller, a proxy, a bit flip in RAM), so the blob is read
        a second time; only if that copy is damaged too is the blob bad. On a
        replicated repository ``recover_range`` instead re-reads it from a replica
        whose whole pack verifies (a range alone cannot be hashed by the backend).
        """
        try:
            return self._decode_blob(blob_id, loc, sealed)
        except IntegrityError:
            name = data_name(loc.pack_id)
            if self.backend.properties.replicas > 1:
                good = self.backend.recover_range(name, loc.offset, loc.length)
            else:
                try:
                    good = self.backend.get_range(name, loc.offset, loc.length)
                except HaeedgeError:
                    good = None
                if good is not None and (len(good) != loc.length or good == sealed):
                    good = None  # the same bytes again: the stored copy is damaged
            if good is None:
                raise
            log.info("blob %s in pack %s: first read was damaged, second read used",
                     blob_id.hex()[:16], loc.pack_id[:16])
            return self._decode_blob(blob_id, loc, good)

    def _decode_blob(self, blob_id: bytes, loc: BlobLocation, sealed: bytes | memoryview) -> bytes:
        key_name = KEY_FOR_BLOB[loc.blob_type]
        try:
            stored = decrypt_literal_view(sealed, self.keyring(key_name), limit=MAX_BLOB_RAW)
        except NoMatchingKey as e:
            raise IntegrityError(f"blob {blob_id.hex()[:16]} in pack {loc.pack_id[:16]}: "
                                 "cannot decrypt (modified data or wrong key)") from e
        except OpenPGPError as e:
            raise IntegrityError(f"blob {blob_id.hex()[:16]} in pack {loc.pack_id[:16]}: {e}") from e
        if loc.compression == COMPRESSION_ZSTD:
            try:
                # zstd allocates what the frame header declares and ignores max_output_size then:
                # a frame that declares more than the index allows is a decompression bomb.
                declared = zstandard.frame_content_size(stored)
                if declared not in (-1, loc.raw_length):
                    raise IntegrityError(f"blob {blob_id.hex()[:16]} in pack {loc.pack_id[:16]}: compressed data "
                                         f"declares {declared} bytes, the index {loc.raw_length}")
                raw = _decompressor().decompress(stored, max_output_size=loc.raw_length)
            except zstandard.ZstdError as e:
                raise IntegrityError(f"blob {blob_id.hex()[:16]}: bad compressed data ({e})") from e
        else:
            raw = bytes(stored)  # the view keeps the decrypted message alive; callers keep blobs
        if len(raw) != loc.raw_length or not hmac.compare_digest(self.blob_id(raw), blob_id):
            raise IntegrityError(f"blob {blob_id.hex()[:16]} in pack {loc.pack_id[:16]} does not match its id")
        return raw

    def read_pack_header(self, pack_id: str, pack_size: int | None = None) -> list[PackEntry]:
        name = data_name(pack_id)
        size = pack_size if pack_size is not None else self.backend.stat(name).size
        if size < 4:
            raise FormatError(f"pack {pack_id[:16]} is too short")
        hlen = split_pack_trailer(size, self.backend.get_range(name, size - 4, 4))
        sealed = self.backend.get_range(name, size - 4 - hlen, hlen)
        return self.decode_pack_header(pack_id, sealed, size - 4 - hlen)

    def decode_pack_header(self, pack_id: str, sealed: bytes | memoryview, header_offset: int) -> list[PackEntry]:
        entries = decode_header(self.open_sealed("meta", sealed))
        end = entries[-1].offset + entries[-1].length if entries else 0
        if end != header_offset:
            raise FormatError(f"pack {pack_id[:16]}: header does not describe the pack's blobs")
        return entries

    # ------------------------------------------------------------------ trees

    def tree_writer(self) -> TreeWriter:
        def save(data: memoryview) -> str:
            bid, _new = self.save_blob(BLOB_TREE, data)
            return bid.hex()

        return TreeWriter(save)

    def iter_tree(self, blob_ids: list[str]) -> Iterator[Node]:
        return iter_tree(blob_ids, lambda h: self.load_blob(hex_id(h), BLOB_TREE))

    # ------------------------------------------------------------------ snapshots

    def save_snapshot(self, snap: Snapshot) -> str:
        """Sign (with this credential's key; see repo/signing.py) and store a snapshot."""
        signer = self.signer()
        if signer is not None:
            sign_snapshot(signer, snap)
            if self.keys.is_writer and self.slot is not None and self.slot.host and snap.host != self.slot.host:
                log.warning("this write-only key is registered for host %s; verify will flag a snapshot "
                            "that claims host %s", self.slot.host, snap.host)
        else:
            snap.signer = snap.signature = None  # a stale signature would only look like tampering
        if self.marks_at_start is not None:

            check_before_snapshot(self, snap)
        oid = self.put_object("snapshots", self.seal("meta", snap.to_bytes()))
        snap.id = oid
        self._snapshot_cache[oid] = snap
        return oid

    def snapshot_ids(self) -> list[str]:
        return sorted(object_id_of(i.name) for i in self.backend.list("snapshots"))

    def load_snapshot(self, snapshot_id: str) -> Snapshot:
        """One snapshot (cached). A write-only key gets NotInWriterView for other hosts' snapshots."""
        snap = self._snapshot_cache.get(snapshot_id)
        if snap is None:
            try:
                data = self.get_object(f"snapshots/{snapshot_id}")
            except ObjectNotFound:
                raise SnapshotNotFound(f"snapshot {snapshot_id[:16]} does not exist") from None
            snap = Snapshot.from_bytes(self.open_sealed("meta", data, limit=stored_cap("snapshots")),
                                       snapshot_id)
            self._snapshot_cache[snapshot_id] = snap
        if self.keys.is_writer:
            self._check_writer_view(snap)
        return snap

    def list_snapshots(self, on_error: Callable[[str, HaeedgeError], None] | None = None, *,
                       include_hidden: bool = False) -> list[Snapshot]:
        """All readable snapshots, oldest first. Unreadable ones go to ``on_error`` or raise.

        Forgotten snapshots kept hidden as chain support (repo/forgotten.py) are left out
        unless ``include_hidden``: whatever decides what data is needed (prune, verify,
        repair, forget, rewrites) must include them.
        """
        ids = self.snapshot_ids()
        if not include_hidden:
            hidden = self.hidden_snapshot_ids()
            ids = [i for i in ids if i not in hidden]
        out: list[Snapshot] = []

        def load(sid: str) -> Snapshot | None:
            try:
                return self.load_snapshot(sid)
            except NotInWriterView:
                return None  # a write-only key lists only its own host's snapshots
            except (IntegrityError, BackendError) as e:
                if on_error is None:
                    raise
                on_error(sid, e)
                return None

        with ThreadPoolExecutor(max_workers=8) as pool:
            for s in pool.map(load, ids):
                if s is not None:
                    out.append(s)
        out.sort(key=lambda s: (s.time, s.id))
        return out

    def _check_writer_view(self, snap: Snapshot) -> None:
        """A write-only key sees only its own host's snapshots, validly signed by that host's writer
        keys: only their file lists are readable to it (not the owner's rewrites, not other hosts'
        snapshots or forgeries), so only they can be listed, or be the parent of an incremental."""
        host = self.slot.host if self.slot is not None else ""
        st = self.registry().check_snapshot(snap)
        if not (st.ok and st.role == "writer" and st.host == host == snap.host):
            raise NotInWriterView(f"snapshot {snap.short_id} (host {snap.host}) was not written by this host's "
                                  f"write-only keys; a write-only key for host {host} reads only its own "
                                  "host's snapshots", hint="use the owner's key: --identity-file OWNER-SECRET.asc")

    def resolve_snapshot(self, ref: str, *, hosts: Iterable[str] = (), tags: Iterable[str] = (),
                         paths: Iterable[str] = ()) -> Snapshot:
        """A snapshot by id, unique id prefix, or ``latest``: the newest of ``hosts``, ``tags`` and ``paths``.

        The filters (as ``Snapshot.matches``) choose among snapshots for ``latest`` only: in a shared
        repository the newest snapshot overall may be another host's or another profile's.
        Hidden (forgotten) snapshots are not found: they were forgotten.
        """
        if ref == "latest":
            hosts, tags, paths = list(hosts), list(tags), list(paths)
            matching = [s for s in self.list_snapshots() if s.matches(hosts, tags, paths)]
            snaps = self.trusted_snapshots(matching, warn=False)
            if not snaps:
                wanted = [f"{what} {', '.join(v)}" for what, v in (("host", hosts), ("tag", tags), ("path", paths))
                          if v]
                what = "no trusted snapshot" if matching else "no snapshot"
                raise SnapshotNotFound(what + " found" + (f" for {'; '.join(wanted)}" if wanted else "")
                                       + (f" ({len(matching)} untrusted ones match)" if matching else ""))
            return self.require_trusted(snaps[-1])
        ref = ref.lower()
        if not ref or any(c not in "0123456789abcdef" for c in ref):
            raise UsageError(f"{ref!r} is not a snapshot id")
        hidden = self.hidden_snapshot_ids()
        candidates = [i for i in self.snapshot_ids() if i.startswith(ref)]
        matches = [i for i in candidates if i not in hidden]
        if not matches:
            if candidates:
                raise SnapshotNotFound(f"snapshot {ref} was forgotten (it is kept hidden only because a kept "
                                       "incremental snapshot needs it)")
            raise SnapshotNotFound(f"no snapshot with id {ref}")
        if len(matches) > 1:
            raise UsageError(f"snapshot id prefix {ref} is ambiguous ({len(matches)} snapshots)")
        return self.require_trusted(self.load_snapshot(matches[0]))

    # ------------------------------------------------------------------ trust of snapshots

    def snapshot_status(self, snap: Snapshot) -> SignatureStatus:
        """Who signed ``snap``, and is that signer entitled to its host (cached per snapshot id)."""
        st = self._status_cache.get(snap.id) if snap.id else None
        if st is None:
            st = self.registry().check_snapshot(snap)
            if snap.id:
                self._status_cache[snap.id] = st
        return st

    def is_trusted(self, snap: Snapshot) -> bool:
        """Signed by an owner key, or by an approved writer for the host it names."""
        return self.snapshot_status(snap).ok

    def is_owner_signed(self, snap: Snapshot) -> bool:
        """Signed by an owner key: only such a snapshot may carry a rewrite's ``replaces``."""
        st = self.snapshot_status(snap)
        return st.ok and st.role == "owner"

    def trusted_snapshots(self, snaps: list[Snapshot], *, warn: bool = True) -> list[Snapshot]:
        """What readers act on: the trusted ones; with ``allow_untrusted``, all (each other one warned)."""
        if self.allow_untrusted:
            if warn:
                for s in snaps:
                    if not self.is_trusted(s):
                        log.warning("reading untrusted snapshot %s (host %s): %s", s.short_id, s.host,
                                    self.snapshot_status(s).message)
            return list(snaps)
        return [s for s in snaps if self.is_trusted(s)]

    def require_trusted(self, snap: Snapshot) -> Snapshot:
        """``snap`` when trusted (or allowed with a warning); else UntrustedSnapshot (exit 4)."""
        if self.is_trusted(snap):
            return snap
        st = self.snapshot_status(snap)
        if self.allow_untrusted:
            log.warning("reading untrusted snapshot %s (host %s): %s", snap.short_id, snap.host, st.message)
            return snap
        raise UntrustedSnapshot(f"snapshot {snap.short_id} (host {snap.host}) is not trusted: {st.message}",
                                hint="see 'haeedge verify'; --allow-untrusted reads it anyway")

    def markers(self) -> Markers:
        """The forget markers (repo/forgotten.py), read and checked once (cached)."""
        if self._markers_cache is None:

            self._markers_cache = read_markers(self)
        return self._markers_cache

    def hidden_snapshot_ids(self) -> set[str]:
        """Ids named by a valid owner-signed forget marker: forgotten, kept only as chain support."""
        return set(self.markers().hidden)

    def forget_markers(self) -> None:
        self._markers_cache = None

    def chain_of(self, snap: Snapshot) -> list[Snapshot]:
        """The chain from its full snapshot to ``snap``, every link checked."""
        chain = [snap]
        seen = {snap.id}
        cur = snap
        while cur.kind != KIND_FULL:
            if len(chain) > MAX_CHAIN_DEPTH:
                raise IntegrityError(f"snapshot {snap.short_id}: chain is too long")
            assert cur.parent is not None
            if cur.parent in seen:
                raise IntegrityError(f"snapshot {snap.short_id}: chain has a loop at {cur.parent[:8]}")
            try:
                parent = self.load_snapshot(cur.parent)
            except SnapshotNotFound:
                raise IntegrityError(f"snapshot {snap.short_id}: broken chain, parent {cur.parent[:8]} of "
                                     f"{cur.short_id} is missing") from None
            if parent.chain_root != cur.chain or parent.depth != cur.depth - 1:
                raise IntegrityError(f"snapshot {snap.short_id}: broken chain at {cur.short_id} "
                                     f"(parent {parent.short_id} does not match its chain or depth)")
            seen.add(parent.id)
            chain.append(parent)
            cur = parent
        chain.reverse()
        return chain

    def iter_entries(self, snap: Snapshot) -> Iterator[Node]:
        """The effective file list of a snapshot: its chain's deltas applied in order."""
        chain = self.chain_of(snap)
        return merge_chain([self.iter_tree(s.tree) for s in chain])

    # ------------------------------------------------------------------ locks

    @contextlib.contextmanager
    def lock(self, exclusive: bool = False, command: str = "") -> Iterator[locking.Lock]:
        held = locking.Lock(lambda data: self.put_object("locks", self.seal("meta", data)),
                            lambda oid: self.backend.delete(f"locks/{oid}"), exclusive, command)
        try:
            # Our own lock is not read back: we know what it says (one GET fewer per locked command).
            locking.check_conflicts(held, self.list_locks(skip=held.name),
                                    lambda oid: self.backend.delete(f"locks/{oid}"))
        except BaseException:
            held.release()
            raise
        try:
            yield held
        finally:
            held.release()

    def list_locks(self, skip: str = "") -> list[locking.LockInfo]:
        out = []
        for info in self.backend.list("locks"):
            oid = object_id_of(info.name)
            if oid == skip:
                continue
            try:
                data = self.get_object(info.name, info.size)
                out.append(locking.decode_lock(oid, self.open_sealed("meta", data, limit=1 << 16)))
            except ObjectNotFound:
                continue  # released meanwhile
            except (IntegrityError, BackendError) as e:
                log.warning("ignoring unreadable lock %s: %s", oid[:12], e)
        return out

    def remove_stale_locks(self, all_locks: bool = False) -> int:
        n = 0
        for lk in self.list_locks():
            if all_locks or lk.is_stale():
                self.backend.delete(f"locks/{lk.name}")
                n += 1
        return n

    # ------------------------------------------------------------------ key slots

    def add_passphrase_slot(self, passphrase: bytes, label: str = "", *, count_byte: int = 0xFF) -> str:
        """Another owner slot (same keys, same owner signing key) opened by ``passphrase``; registered."""
        keys = self.keys
        m = self.trust.manifest
        if m is not None and m.root_kind == "certificate":  # the slot names the root its holder checks
            keys = dataclasses.replace(keys, extra={**keys.extra, "trust_root": m.root_fingerprint})
        slot_id = self.put_object("keys", seal_slot_for_passphrase(keys, self.config.repository_id, passphrase,
                                                                   label=label, count_byte=count_byte))
        self.register_slot(KeySlot(slot_id, self.config.repository_id, keys, now_iso(whole_seconds=True),
                                   socket.gethostname(), KIND_PASSPHRASE, label))
        return slot_id

    def register_slot(self, slot: KeySlot, recipient: Certificate | None = None) -> str | None:
        """Write the owner-signed key record of ``slot`` (docs/format.md 3.2); None without a signing key."""
        from haeedge.crypto.pubkey import load_secret_key

        if slot.keys.signing_key is None or self.signer() is None:
            return None
        cert = load_secret_key(slot.keys.signing_key).cert
        return write_record(self, slot.slot_id, slot.kind, slot.keys.role, label=slot.label, host=slot.host,
                            signing_cert=cert.raw, signing_fingerprint=cert.fingerprint_hex,
                            recipient_cert=recipient.raw if recipient is not None else None,
                            recipient_fingerprint=recipient.fingerprint_hex if recipient is not None else None,
                            created=slot.created or None)

    def signer(self) -> Signer | None:
        """This credential's signing key (None for slots made before snapshots were signed)."""
        if self._signer_loaded is None:
            signer = None
            if self.keys.signing_key is not None:
                signer = Signer(self.keys.signing_key)
            self._signer_loaded = [signer]
        return self._signer_loaded[0]

    def registry(self) -> SignerRegistry:
        """The owner-signed key records: trusted signers per host, writers' recipients (cached)."""
        if self._registry_cache is None:
            self._registry_cache = self._load_registry(self)
        return self._registry_cache

    def forget_registry(self) -> None:
        self._registry_cache = None
        self._markers_cache = None  # markers are checked against the registry's owner key
        self._status_cache.clear()


class DedupView:
    """Membership in an index restricted to some trust domains, leaving out packs a prune marked;
    shared with forked backup workers."""

    def __init__(self, index: BlobIndex, domains: frozenset[str], excluded_packs: frozenset[str] = frozenset()):
        self.index = index
        self.domains = frozenset(index.domain_number(d) for d in domains)
        self.excluded = index.pack_numbers_of(excluded_packs) if excluded_packs else frozenset()

    def __contains__(self, blob_id: bytes) -> bool:
        return self.index.has_in(blob_id, self.domains, self.excluded)



def slot_hints(location: str, policy: TrustPolicy) -> list[str]:
    """Slot ids (or prefixes) to try first: $HAEEDGE_KEY_HINT, then the slots this client opened here before."""

    hints = []
    for part in os.environ.get(KEY_HINT_ENV, "").split(","):
        part = part.strip().lower()
        if not part:
            continue
        if len(part) < 8 or len(part) > 64 or any(c not in "0123456789abcdef" for c in part):
            raise UsageError(f"${KEY_HINT_ENV}: {part[:70]!r} is not a key slot id (8 to 64 hex digits)",
                             hint="'haeedge key list' and 'haeedge key add' show slot ids")
        hints.append(part)
    if policy.memory is not None:
        hints += policy.memory.slot_hints(location)
    return hints


def _slot_order(slot_id: str, hints: list[str]) -> tuple[int, str]:
    """Hinted slots first (in hint order), then by name."""
    for rank, hint in enumerate(hints):
        if slot_id.startswith(hint):
            return rank, slot_id
    return len(hints), slot_id



def check_object_size(name: str, size: int) -> None:
    """Refuse an object larger than its namespace allows (``stored_cap``)."""
    namespace = name.split("/", 1)[0]
    cap = stored_cap(namespace)
    if cap is not None and size > cap:
        hint = None
        if namespace == "index":
            hint = ("haeedge 0.1.0 wrote one index object per prune, which passes this size beyond ~5.8 million "
                    "blobs: 'haeedge repair index' rewrites the index in parts, or set "
                    f"{MAX_INDEX_ENV}=SIZE to read it as it is")
        raise FormatError(f"object {name} holds {size} bytes, more than the {cap >> 20} MiB an object in "
                          f"{namespace}/ may hold (damaged or hostile)", hint=hint)


def _check_content_name(name: str, data: bytes) -> None:
    """Objects are named by the SHA-256 of their bytes: check before trusting them."""
    expected = object_id_of(name)
    if hashlib.sha256(data).hexdigest() != expected:
        raise IntegrityError(f"object {name} does not match its name (damaged or modified)")
