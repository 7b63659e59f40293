"""Who vouches for an index entry: trust domains for deduplication, prune and verify.

Why: every credential holds ``blob_id`` and ``meta``, so any writer can store
a blob under an id of its choosing (garbage under the id of content another
host will back up) and an index object that lists it. If other hosts
deduplicated against it, their backups would silently reference the garbage;
if its index object could supersede the others, ``prune`` would drop the real
packs. So every index object written from format version 2 on carries the
signature of the credential that wrote it (docs/format.md section 7), and each
index entry keeps the *trust domain* of the object that listed it:

* ``owner``: an index object signed by the owner key (owner backups, prune,
  repair). Only these may supersede other index objects, and only these may
  attribute a pack to another domain (prune keeps a writer's pack in that
  writer's domain when it rewrites the index).
* ``host:NAME``: signed by a writer key the owner registered for host NAME
  (before that key's removal, if removed).
* ``legacy``: unsigned (written before version 2) in a repository that has
  writer keys. Readable; nobody deduplicates against it; prune never deletes
  the last copy of a blob only legacy entries vouch for.
* ``untrusted``: a signature that does not verify, or an unknown signer.

In a repository without writer keys everything unsigned was written by owner
credentials, so it is the owner's.

A snapshot of host H may use blobs vouched for by ``owner`` or ``host:H``
(``domains_for_host``): that is what a backup of H deduplicates against, what
``prune`` keeps a copy of, and what ``verify`` requires.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from haeedge.errors import HaeedgeError, OpenPGPError
from haeedge.repo.ids import object_id_of, stored_cap
from haeedge.repo.index import BlobIndex, IndexObject, IndexPack, decode_index_object
from haeedge.repo.keys import ROLE_OWNER, ROLE_WRITER

if TYPE_CHECKING:
    from haeedge.backends.base import ObjectInfo
    from haeedge.repo.repository import Repository
    from haeedge.repo.signing import SignerRegistry

log = logging.getLogger("haeedge.provenance")

OWNER = "owner"
LEGACY = "legacy"
UNTRUSTED = "untrusted"
HOST_PREFIX = "host:"

#: Load order: the most trusted copy of a blob becomes its primary location.
_RANK = {OWNER: 0, LEGACY: 2, UNTRUSTED: 3}


def host_domain(host: str) -> str:
    return HOST_PREFIX + host


def domains_for_host(host: str | None) -> frozenset[str]:
    """What a snapshot of ``host`` may use (None: the owner's own backups)."""
    return frozenset((OWNER,)) if host is None else frozenset((OWNER, host_domain(host)))


def describe(domain: str) -> str:
    if domain.startswith(HOST_PREFIX):
        return f"writer of host {domain[len(HOST_PREFIX):]}"
    return {OWNER: "owner", LEGACY: "unsigned (legacy)", UNTRUSTED: "untrusted signer"}.get(domain, domain)


def rank(domain: str) -> int:
    return _RANK.get(domain, 1)


@dataclass
class AttributedIndex:
    """One index object with the domain of each of its packs."""

    object_id: str
    packs: list[IndexPack]
    superseded: list[str]
    #: The index object's own domain (its signer's).
    domain: str
    #: Why the object is not trusted as signed, if it is not.
    problem: str = ""
    #: pack id -> domain (owner-signed objects may attribute packs to a writer's domain).
    pack_domains: dict[str, str] = field(default_factory=dict)

    @property
    def may_supersede(self) -> bool:
        return self.domain == OWNER

    def domain_of(self, pack: IndexPack) -> str:
        return self.pack_domains.get(pack.pack_id, self.domain)


def has_writers(registry: SignerRegistry) -> bool:
    """Does the owner-signed key list name any writer key (live or removed)?"""
    return any(rec.role == ROLE_WRITER for rec in registry.records)


def attribute(object_id: str, obj: IndexObject, registry: SignerRegistry, writers: bool) -> AttributedIndex:
    """Decide an index object's domain from its signature (see the module docstring)."""
    out = AttributedIndex(object_id, obj.packs, obj.superseded, UNTRUSTED)
    if not obj.signature:
        out.domain = LEGACY if writers else OWNER
        if writers:
            out.problem = "index object is not signed (written before format version 2)"
        return out
    trusted = registry.signers.get(obj.signer)
    if trusted is None:
        out.problem = f"index object is signed by key {obj.signer[:40]}, which the owner has not registered"
        return out
    from haeedge.crypto.pubkey import verify_detached

    try:
        check = verify_detached(trusted.cert, obj.signed, obj.signature)
    except OpenPGPError as e:
        out.problem = f"index object has a malformed signature: {e}"
        return out
    if not check.ok:
        out.problem = "index object has a bad signature (modified, or not signed by the key it names)"
        return out
    if trusted.removed is not None and (check.created or 0) > trusted.removed:
        out.problem = f"index object was signed by the removed key of host {trusted.host} after its removal"
        return out
    if trusted.role == ROLE_OWNER:
        out.domain = OWNER
        for p in obj.packs:
            if p.domain:
                out.pack_domains[p.pack_id] = p.domain if _valid_attribution(p.domain) else UNTRUSTED
        return out
    out.domain = host_domain(trusted.host)
    return out


def _valid_attribution(domain: str) -> bool:
    return domain in (OWNER, LEGACY, UNTRUSTED) or (domain.startswith(HOST_PREFIX) and len(domain) > len(HOST_PREFIX))


@dataclass
class IndexObjects:
    """What ``read_indexes`` found: the readable index objects, attributed, most trusted first."""

    docs: list[AttributedIndex]
    #: Ids of every index object the listing named, in listing order (unreadable ones included).
    listed: list[str]
    #: Ids that an owner-signed index object supersedes (``superseded_ids``).
    superseded: set[str]

    def current(self) -> list[AttributedIndex]:
        """The objects in force: every readable one that no owner-signed one supersedes."""
        return [d for d in self.docs if d.object_id not in self.superseded]

    def blob_index(self) -> BlobIndex:
        """The blob index of the objects in force, each entry in the trust domain that lists it; the most
        trusted copy of a blob becomes its primary location."""
        current = self.current()
        index = BlobIndex(capacity_hint=sum(len(p.entries) for d in current for p in d.packs))
        for d in current:
            for p in d.packs:
                index.add_pack(bytes.fromhex(p.pack_id), p.size, p.entries, d.domain_of(p))
        return index


def read_indexes(repo: Repository, on_error: Callable[[str, HaeedgeError], None] | None = None) -> IndexObjects:
    """Every index object of the repository, read, checked and attributed: the one reader of the whole
    index (loading it, verify, prune, repair).

    ``on_error(name, error)`` takes each object that cannot be read (verify reports it, repair reads
    its packs instead) and may raise; without it the first one raises, naming the object. Lock-free:
    without ``on_error``, an object a prune deleted between our listing and our read (it superseded
    it) makes us take the listing again.
    """
    from haeedge.errors import ObjectNotFound

    for attempt in range(5):
        listing = list(repo.backend.list("index"))
        try:
            docs = _read_index_objects(repo, listing, on_error)
        except ObjectNotFound:
            if on_error is not None or attempt == 4:
                raise
            log.info("an index object was replaced while being read; reading the index again")
            continue
        return IndexObjects(docs, [object_id_of(i.name) for i in listing], superseded_ids(docs))
    raise AssertionError("unreachable")


def _read_index_objects(repo: Repository, objects: list[ObjectInfo],
                        on_error: Callable[[str, HaeedgeError], None] | None) -> list[AttributedIndex]:
    """Read and attribute ``objects`` (listing entries, whose sizes refuse a huge object unread), most
    trusted first. ``on_error(name, error)`` skips unreadable ones (without it they raise)."""

    registry = repo.registry()
    writers = has_writers(registry)

    def read(info: ObjectInfo) -> AttributedIndex | None:
        try:
            data = repo.get_object(info.name, info.size)
            obj = decode_index_object(repo.open_sealed("meta", data, limit=stored_cap("index")))
        except HaeedgeError as e:
            if on_error is None:
                if info.name not in e.message:  # say which object: the user may have to remove or repair it
                    e.message = f"{info.name}: {e.message}"
                    e.args = (e.message,)
                raise
            on_error(info.name, e)
            return None
        return attribute(object_id_of(info.name), obj, registry, writers)

    with ThreadPoolExecutor(max_workers=8) as pool:
        docs = [d for d in pool.map(read, objects) if d is not None]
    docs.sort(key=lambda d: (rank(d.domain), d.object_id))
    return docs


def superseded_ids(docs: list[AttributedIndex]) -> set[str]:
    """Index objects that an owner-signed index object replaces (nobody else may replace any)."""
    return {s for d in docs if d.may_supersede for s in d.superseded}


def unauthorised_supersessions(docs: list[AttributedIndex]) -> list[AttributedIndex]:
    """Index objects that claim to supersede others without the owner's signature."""
    return [d for d in docs if d.superseded and not d.may_supersede]
