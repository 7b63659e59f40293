"""Prune marks: packs that looked unused, deleted by a later prune once a grace period has passed.

Why: backups run without a lock (docs/lifecycle.md, "Prune beside running
backups"). A prune cannot know what a backup that is still running will
reference, so it deletes nothing at once: phase 1 writes a *mark* listing the
packs that look unused (indexed but no snapshot needs them) or unindexed
(stored but listed by no index object: an interrupted write, or a running
backup's pack not yet indexed). Backups that start later do not deduplicate
against marked packs (they store such blobs again). Phase 2, a prune at least
the grace period later, deletes a marked pack only if it is still unused
(by every snapshot, those written after the mark included) and, for packs
marked unindexed, still unindexed; then the mark is deleted. A backup that
was already running when a mark appeared checks, before it stores its
snapshot, that it references nothing from a mark about to ripen
(``check_before_snapshot``).

A mark is ``marks/<id>`` (id = SHA-256 of the stored bytes), sealed with the
meta key; its literal is JSON (docs/format.md section 10)::

    {"haeedge_mark": 1, "repository": "<repository id>", "time": "...Z", "grace": 3600.0,
     "host": "...", "unused": ["<pack id>", ...], "unindexed": ["<pack id>", ...],
     "signer": "<owner FPR>", "signature": "<armored>"}

Writers hold the meta key, so sealing proves nothing: only a mark signed by an
owner key of the trust root makes prune delete anything. A forged or damaged
mark is ignored by prune (and reported); backups ignore it too (it could only
make them upload more).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from haeedge.errors import ConcurrentChange, HaeedgeError, NoReadAccess, ObjectNotFound, OpenPGPError, UsageError
from haeedge.repo.ids import hex_id
from haeedge.repo.keys import ROLE_OWNER
from haeedge.repo.signing import MAX_SIGNATURE_TEXT, canonical_json
from haeedge.repo.snapshot import now_iso

if TYPE_CHECKING:
    from haeedge.repo.repository import Repository
    from haeedge.repo.snapshot import Snapshot

log = logging.getLogger("haeedge.marks")

NAMESPACE = "marks"
MARK_VERSION = 1
#: A mark names each pack in 67 bytes of JSON: a million packs (16 TB) is 67 MB.
MAX_MARK_BYTES = 192 << 20  # as index objects: within the 256 MiB budget when hostile
GRACE_ENV = "HAEEDGE_PRUNE_GRACE"
DEFAULT_GRACE = 3600.0
SKEW_ENV = "HAEEDGE_MAX_CLOCK_SKEW"
#: Clock differences (between this host, the storage and the host that wrote a mark) that prune
#: accepts silently; beyond it the grace period is widened by the difference, with a warning.
DEFAULT_MAX_SKEW = 300.0
#: A backup refuses to store its snapshot when a mark that appeared while it ran ripens this soon
#: (at most half the mark's grace period), after the clock allowance.
SNAPSHOT_SAFETY = 120.0


@dataclass
class Mark:
    mark_id: str
    #: When the prune wrote it, by its host's clock (signed), seconds since the epoch.
    time: float
    #: The grace period the prune promised; phase 2 waits at least this long.
    grace: float
    unused: frozenset[str]
    unindexed: frozenset[str]
    #: When the storage wrote it (its own clock), where the backend says.
    stored: float | None = None

    @property
    def packs(self) -> frozenset[str]:
        return self.unused | self.unindexed


@dataclass
class Marks:
    valid: list[Mark] = field(default_factory=list)
    #: (mark id, why it is ignored).
    problems: list[tuple[str, str]] = field(default_factory=list)

    def packs(self) -> set[str]:
        return {p for m in self.valid for p in m.packs}


def mark_name(mark_id: str) -> str:
    return f"{NAMESPACE}/{mark_id}"


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def grace_from_env() -> float:
    """``$HAEEDGE_PRUNE_GRACE`` (a duration such as 30m, 1h, 0s), else one hour."""
    value = os.environ.get(GRACE_ENV)
    if not value:
        return DEFAULT_GRACE
    return parse_grace(value, f"${GRACE_ENV}")


def parse_grace(value: str, what: str = "--grace") -> float:
    from haeedge.durations import parse_duration

    try:
        return float(parse_duration(value).total_seconds())
    except (ValueError, AttributeError) as e:
        raise UsageError(f"{what}: {value!r} is not a duration like 30m, 1h or 0s ({e})") from None


def max_skew() -> float:
    value = os.environ.get(SKEW_ENV)
    return parse_grace(value, f"${SKEW_ENV}") if value else DEFAULT_MAX_SKEW


def write_mark(repo: Repository, grace: float, unused: set[str], unindexed: set[str]) -> str:
    """Store an owner-signed mark; returns its id."""
    signer = repo.signer()
    if signer is None or repo.keys.is_writer:
        raise NoReadAccess("only an owner key can mark packs for deletion",
                           hint="run prune with the owner's key (--identity-file or an owner password)")
    doc = {"haeedge_mark": MARK_VERSION, "repository": repo.config.repository_id, "time": now_iso(),
           "grace": float(grace), "host": socket.gethostname(), "unused": sorted(unused),
           "unindexed": sorted(unindexed)}
    signed = signer.sign_document(doc)
    return repo.put_object(NAMESPACE, repo.seal("meta", json.dumps(signed, sort_keys=True).encode()))


def delete_mark(repo: Repository, mark_id: str) -> None:
    repo.backend.delete(mark_name(mark_id))


def read_marks(repo: Repository, known: dict[str, Mark] | None = None) -> Marks:
    """Every mark, checked: only owner-signed ones for this repository count. ``known``: marks read
    before (by id), not downloaded again."""
    from haeedge.crypto.pubkey import verify_detached

    out = Marks()
    registry = repo.registry()
    for info in sorted(repo.backend.list(NAMESPACE), key=lambda i: i.name):
        oid = info.name.rsplit("/", 1)[-1]
        if known is not None and oid in known:
            out.valid.append(known[oid])
            continue
        try:
            if info.size > MAX_MARK_BYTES:
                raise ValueError(f"oversized ({info.size} bytes)")
            data = repo.get_object(info.name)
            doc = json.loads(repo.open_sealed("meta", data, limit=MAX_MARK_BYTES))
            mark = _check_document(doc, repo.config.repository_id, oid)
        except ObjectNotFound:
            continue  # deleted by a prune meanwhile
        except HaeedgeError as e:
            out.problems.append((oid, f"prune mark is unusable and ignored: {e}"))
            continue
        except (ValueError, TypeError, KeyError) as e:
            out.problems.append((oid, f"prune mark is unusable and ignored: {e}"))
            continue
        mark.stored = info.mtime
        signer = registry.signers.get(str(doc["signer"]).upper())
        if signer is None or signer.role != ROLE_OWNER:
            out.problems.append((oid, "prune mark is not signed by the owner key (forged, or written by a "
                                      "write-only host); ignored"))
            continue
        try:
            verified = verify_detached(signer.cert, canonical_json(doc), doc["signature"])
        except OpenPGPError as e:
            out.problems.append((oid, f"prune mark has a malformed signature ({e}); ignored"))
            continue
        if not verified.ok:
            out.problems.append((oid, "prune mark has a bad owner signature (modified); ignored"))
            continue
        if signer.removed is not None and (verified.created or 0) > signer.removed:
            out.problems.append((oid, "prune mark was signed by a retired owner key after its retirement; ignored"))
            continue
        out.valid.append(mark)
    return out


def _check_document(doc: object, repository_id: str, oid: str) -> Mark:
    if not isinstance(doc, dict) or doc.get("haeedge_mark") != MARK_VERSION:
        raise ValueError("not a version 1 prune mark")
    if doc.get("repository") != repository_id:
        raise ValueError("names another repository")
    signer, signature = doc.get("signer"), doc.get("signature")
    if not isinstance(signer, str) or not isinstance(signature, str) or len(signature) > MAX_SIGNATURE_TEXT:
        raise ValueError("bad signer or signature field")
    grace = doc.get("grace")
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace < 10 * 365 * 86400:
        raise ValueError("bad grace period")
    lists = []
    for key in ("unused", "unindexed"):
        ids = doc.get(key)
        if not isinstance(ids, list) or not all(
                isinstance(p, str) and len(p) == 64 and all(c in "0123456789abcdef" for c in p) for p in ids):
            raise ValueError(f"bad {key} list")
        lists.append(frozenset(ids))
    when = doc.get("time")
    if not isinstance(when, str):
        raise ValueError("bad time")
    return Mark(oid, parse_iso(when), float(grace), lists[0], lists[1])


# ---------------------------------------------------------------------- clocks


@dataclass
class Clock:
    """This host's view of time against the storage's (prune measures it with a probe object)."""

    #: storage clock - local clock, seconds (0 when the backend gives no times).
    offset: float = 0.0
    measured: bool = False
    warnings: list[str] = field(default_factory=list)

    def storage_now(self) -> float:
        return time.time() + self.offset


def measure_clock(repo: Repository, probe_id: str) -> Clock:
    """Compare the storage's time of the object just written with the local clock."""
    before = time.time()
    try:
        info = repo.backend.stat(mark_name(probe_id))
    except HaeedgeError:
        return Clock()
    after = time.time()
    if info.mtime is None:
        return Clock()
    # The object was written just before ``before``; S3 times have a resolution of one second.
    local = (before + after) / 2
    offset = info.mtime - local
    if abs(offset) < 2.0:
        offset = 0.0
    return Clock(offset, True)


def ripens_at(mark: Mark, grace: float, clock: Clock, bound: float) -> tuple[float, str | None]:
    """When (storage clock) a mark's packs may be deleted, and a warning when clocks disagree.

    The storage's own time of the mark is used where known, so the marking host's clock does
    not matter; its signed time is compared with it, and a difference beyond ``bound`` widens
    the wait by that difference (the storage's time may be unknown on a later run).
    """
    wait = max(grace, mark.grace)
    if mark.stored is None:
        # No storage time: the signed time, widened by the largest skew we accept.
        return mark.time + wait + bound, None
    skew = mark.stored - mark.time
    warning = None
    start = mark.stored
    if abs(skew) > bound:
        warning = (f"prune mark {mark.mark_id[:12]} was written by a host whose clock differs from the storage's "
                   f"by {skew:+.0f} s (more than {bound:.0f} s): its grace period is widened by that much")
        start = max(mark.stored, mark.time) + abs(skew)
    return start + wait, warning


def check_clock(clock: Clock, bound: float) -> str | None:
    """A warning when this host's clock differs from the storage's by more than ``bound``."""
    if clock.measured and abs(clock.offset) > bound:
        return (f"this host's clock differs from the storage's by {clock.offset:+.0f} s (more than {bound:.0f} s); "
                "prune uses the storage's time for the grace period, but fix the clock (NTP): backups on this host "
                "judge marks by it")
    return None


# ---------------------------------------------------------------------- backups


def check_before_snapshot(repo: Repository, snap: Snapshot) -> None:
    """Before a lock-free backup stores its snapshot: nothing it references may be about to be deleted.

    Marks that existed when the backup began were excluded from deduplication.
    A mark that appeared while it ran may name packs the backup deduplicated
    against, or packs it wrote that were not indexed yet. The snapshot, once
    stored, keeps them (phase 2 re-checks every snapshot), unless the mark
    ripens before the snapshot is visible: then the backup stops with
    ``ConcurrentChange`` and stores no snapshot (what it uploaded stays for the
    next run to reuse). Also the parent of an incremental must still exist.
    """
    seen = repo.marks_at_start
    if seen is None:
        return
    if snap.parent and not repo.backend.exists(f"snapshots/{snap.parent}"):
        raise ConcurrentChange(f"the parent snapshot {snap.parent[:8]} was deleted (forget) while this backup ran; "
                               "no snapshot was saved", hint="run the backup again: it uploads only what is missing")
    current = read_marks(repo, seen)
    new = [m for m in current.valid if m.mark_id not in seen]
    if not new:
        return
    now = time.time()
    skew = max_skew()
    endangered = [m for m in new if m.time + m.grace - skew - min(SNAPSHOT_SAFETY, m.grace / 2) <= now]
    if not endangered:
        return  # our snapshot lands long before any of them ripens; prune will then see it
    packs = set().union(*(m.packs for m in endangered))
    mine = packs & repo.packs_written
    if not mine:
        blobs: set[bytes] = set()
        by_pack = repo.index.records_by_pack()
        for pack_id in packs:
            for rec in by_pack.get(pack_id, ()):
                blobs.add(repo.index.entry_at(rec)[0])
        if not blobs or not _references_any(repo, snap, blobs):
            return
    raise ConcurrentChange("a prune marked data this backup uses as unused while the backup ran, and its grace "
                           "period ends now; no snapshot was saved",
                           hint="run the backup again (it uploads that data anew); a longer prune --grace avoids "
                                "this for long backups")


def _references_any(repo: Repository, snap: Snapshot, blobs: set[bytes]) -> bool:

    for tid in snap.tree:
        if hex_id(tid) in blobs:
            return True
    for entry in repo.iter_tree(snap.tree):
        for chunk_id, _length in entry.chunks or ():
            if hex_id(chunk_id) in blobs:
                return True
    return False
