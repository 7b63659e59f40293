"""Forget markers: forgotten snapshots that a kept incremental still needs, kept hidden.

Why: snapshots are named by the hash of their bytes, so rebasing a kept
incremental onto a new full (what ``forget`` used to do) gave it a new id,
and ids in logs, hooks, tags and monitoring went stale. Instead, a forgotten
snapshot that some kept snapshot still needs (it is in the kept one's parent
chain) stays stored as it is, and an owner-signed *forget marker* hides it:
readers leave it out of listings, ``latest`` and retention, but restore,
prune and verify still walk through it. When nothing kept needs it any more,
``forget`` deletes it and then its marker.

A marker is ``forgotten/<id>`` (id = SHA-256 of the stored bytes), sealed
with the meta key; its literal is JSON (docs/format.md section 8.1)::

    {"haeedge_forgotten": 1, "repository": "<repository id>",
     "snapshot": "<snapshot id>", "time": "...", "signer": "<FPR>", "signature": "<armored>"}

Writers hold the meta key, so sealing proves nothing: only a marker signed by
an owner key of the trust root (``repo.registry()``: the owner-signed trust
manifest's owner keys, or the credential's own anchor) over its canonical
JSON hides a snapshot; a write-only host cannot hide other hosts' snapshots.
Everything else (unsigned, signed by another key, unreadable, another
repository's) is reported by verify and otherwise ignored: the snapshot stays
visible, which loses nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from haeedge.errors import HaeedgeError, NoReadAccess, OpenPGPError
from haeedge.repo.keys import ROLE_OWNER
from haeedge.repo.signing import MAX_SIGNATURE_TEXT, canonical_json
from haeedge.repo.snapshot import now_iso

if TYPE_CHECKING:
    from haeedge.repo.repository import Repository
    from haeedge.repo.snapshot import Snapshot

log = logging.getLogger("haeedge.forgotten")

NAMESPACE = "forgotten"
MARKER_VERSION = 1
#: Markers we write are under 1 KiB; anything far larger is hostile.
MAX_MARKER_BYTES = 64 << 10


@dataclass
class Markers:
    """The forget markers of a repository, as a reader trusts them."""

    #: Snapshot id -> ids of the valid (owner-signed) markers naming it.
    hidden: dict[str, list[str]] = field(default_factory=dict)
    #: (marker id, why it is ignored): unreadable, malformed or not signed by the owner.
    problems: list[tuple[str, str]] = field(default_factory=list)


def marker_name(marker_id: str) -> str:
    return f"{NAMESPACE}/{marker_id}"


def can_write_markers(repo: Repository) -> bool:
    """Only an owner credential with a signing key writes markers that readers honour."""
    return not repo.keys.is_writer and repo.signer() is not None


def write_marker(repo: Repository, snapshot_id: str) -> str:
    """Store an owner-signed marker hiding ``snapshot_id``; returns the marker id."""
    signer = repo.signer()
    if signer is None or repo.keys.is_writer:
        raise NoReadAccess("only an owner key can hide forgotten snapshots",
                           hint="run forget with the owner's key (--identity-file or an owner password)")
    doc = {"haeedge_forgotten": MARKER_VERSION, "repository": repo.config.repository_id,
           "snapshot": snapshot_id, "time": now_iso()}
    signed = signer.sign_document(doc)
    oid = repo.put_object(NAMESPACE, repo.seal("meta", json.dumps(signed, sort_keys=True).encode()))
    repo.forget_markers()
    return oid


def delete_marker(repo: Repository, marker_id: str) -> None:
    repo.backend.delete(marker_name(marker_id))
    repo.forget_markers()


def read_markers(repo: Repository) -> Markers:
    """Every marker, checked: only owner-signed ones for this repository hide a snapshot."""
    from haeedge.crypto.pubkey import verify_detached

    out = Markers()
    registry = repo.registry()
    for info in sorted(repo.backend.list(NAMESPACE), key=lambda i: i.name):
        oid = info.name.rsplit("/", 1)[-1]
        try:
            if info.size > MAX_MARKER_BYTES * 2:
                raise ValueError(f"oversized ({info.size} bytes)")
            data = repo.get_object(info.name)
            doc = json.loads(repo.open_sealed("meta", data, limit=MAX_MARKER_BYTES))
            snapshot_id = _check_document(doc, repo.config.repository_id)
        except (HaeedgeError, ValueError, TypeError, KeyError) as e:
            out.problems.append((oid, f"forget marker is unusable and ignored: {e}"))
            continue
        if not registry.signers:
            out.problems.append((oid, "forget marker ignored: this key has no owner certificate to check it"))
            continue
        # An owner key of the trust root (the manifest's, or the credential's own anchor without one).
        signer = registry.signers.get(str(doc["signer"]).upper())
        if signer is None or signer.role != ROLE_OWNER:
            out.problems.append((oid, f"forget marker for snapshot {snapshot_id[:8]} is not signed by the owner "
                                      "key (forged, or written by a write-only host); ignored"))
            continue
        try:
            verified = verify_detached(signer.cert, canonical_json(doc), doc["signature"])
        except OpenPGPError as e:
            out.problems.append((oid, f"forget marker for snapshot {snapshot_id[:8]} has a malformed "
                                      f"signature ({e}); ignored"))
            continue
        if not verified.ok:
            out.problems.append((oid, f"forget marker for snapshot {snapshot_id[:8]} has a bad owner signature "
                                      "(modified); ignored"))
            continue
        if signer.removed is not None and (verified.created or 0) > signer.removed:
            out.problems.append((oid, f"forget marker for snapshot {snapshot_id[:8]} was signed by a retired "
                                      "owner key after its retirement; ignored"))
            continue
        out.hidden.setdefault(snapshot_id, []).append(oid)
    return out


def chain_support(snapshots: Iterable[Snapshot], kept: Iterable[str], cut: Iterable[str] = ()) -> set[str]:
    """Ids of every stored ancestor (parent, grandparent, ... up to the full) of the ``kept`` snapshots.

    ``cut``: snapshots about to become fulls (rebased): nothing above them is needed through them.
    """
    by_id = {s.id: s for s in snapshots}
    cut = set(cut)
    needed: set[str] = set()
    for sid in kept:
        cur = by_id.get(sid)
        while cur is not None and cur.id not in cut and cur.parent and cur.parent not in needed:
            parent = by_id.get(cur.parent)
            if parent is None:
                break  # a broken chain: verify reports it; nothing here can mend it
            needed.add(parent.id)
            cur = parent
    return needed


def _check_document(doc: object, repository_id: str) -> str:
    """The snapshot id a marker document names; ValueError when it is not a version 1 marker of ours."""
    if not isinstance(doc, dict) or doc.get("haeedge_forgotten") != MARKER_VERSION:
        raise ValueError("not a version 1 forget marker")
    if doc.get("repository") != repository_id:
        raise ValueError("names another repository")
    sid, signer, signature = doc.get("snapshot"), doc.get("signer"), doc.get("signature")
    if not (isinstance(sid, str) and len(sid) == 64 and all(c in "0123456789abcdef" for c in sid)):
        raise ValueError("bad snapshot id")
    if not isinstance(signer, str) or not isinstance(signature, str) or len(signature) > MAX_SIGNATURE_TEXT:
        raise ValueError("bad signer or signature field")
    return sid
