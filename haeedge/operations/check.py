"""Verify: find every problem and say what it affects. Returns findings, prints nothing.

Structure (default): every object's bytes match its name, index and packs
agree (presence, sizes), every snapshot decrypts and parses, every chain is
intact, every tree is readable and every blob a snapshot needs is indexed.
Forgotten snapshots kept hidden as chain support (repo/forgotten.py) are
checked like any other and counted apart (``hidden``); forget markers that
are not signed by the owner are errors (someone with write access tried to
hide a snapshot), markers naming nothing and hidden snapshots nothing needs
are warnings (an interrupted forget; the next one removes them).

``read_data``: every selected pack is read whole, its hash, header and every
blob (decrypt, MDC, decompress, keyed id) are checked.

Replicated repositories: the checks above see the repository as its readers
do (any replica serves any object), so each replica is also audited on its
own: what it lacks, holds with the wrong size or (with ``read_data``) holds
damaged is an error naming that replica. Locks are exempt: they come and go.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import multiprocessing
import os
import random
import threading
from array import array
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from haeedge.backends.base import data_name
from haeedge.errors import BackendError, HaeedgeError, IntegrityError, ObjectNotFound, UsageError
from haeedge.operations import coldreads
from haeedge.progress import ProgressSink, SilentProgress
from haeedge.repo.forgotten import chain_support, marker_name
from haeedge.repo.index import BlobLocation
from haeedge.repo.pack import BLOB_DATA, BLOB_TREE, split_pack_trailer
from haeedge.repo.provenance import LEGACY, describe, domains_for_host, read_indexes, unauthorised_supersessions
from haeedge.repo.repository import DedupView, Repository, hex_id, object_id_of
from haeedge.repo.snapshot import Snapshot


@dataclass
class Finding:
    severity: str  # "error" or "warning"
    object: str
    message: str
    snapshots: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    findings: list[Finding] = field(default_factory=list)
    snapshots: int = 0
    #: Forgotten snapshots kept hidden as chain support (checked, not counted in ``snapshots``).
    hidden: int = 0
    packs: int = 0
    packs_read: int = 0
    blobs_checked: int = 0
    bytes_read: int = 0
    #: Replicated repositories: one summary per replica (location, objects, missing, ...).
    replicas: list[dict] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


def parse_subset(spec: str | None) -> Callable[[list[str]], list[str]] | None:
    """``N/M`` (the N-th of M deterministic parts) or ``P%`` (that share of the packs, picked at random).

    A percentage reads exactly ceil(P% of the packs), at least one, as restic does: a per-pack coin
    toss would read a different number each time and, now and then, none at all.
    """
    if not spec:
        return None
    try:
        if spec.endswith("%"):
            share = float(spec[:-1]) / 100
            if not 0 < share <= 1:
                raise ValueError

            def pick_share(packs: list[str]) -> list[str]:
                count = min(len(packs), max(1, math.ceil(share * len(packs) - 1e-9)))
                return sorted(random.SystemRandom().sample(packs, count))

            return pick_share
        n, m = (int(x) for x in spec.split("/"))
        if not 1 <= n <= m:
            raise ValueError
        return lambda packs: [p for p in packs if int(p[:8], 16) % m == n - 1]
    except ValueError:
        raise UsageError(f"--read-data-subset: {spec!r} is not N/M (1 <= N <= M) or P% (0 < P <= 100)") from None


class Checker:
    def __init__(self, repo: Repository, progress: ProgressSink | None = None):
        self.repo = repo
        self.progress = progress or SilentProgress()
        self.report = VerifyReport()
        self._bad_blobs: dict[bytes, str] = {}
        #: Blobs stored more than once: pack id -> why, for each bad copy.
        self._bad_copies: dict[bytes, dict[str, str]] = {}
        self._counter_lock = threading.Lock()
        #: Packs an index lists that storage lacks; blobs some snapshot needs (set by _attribute).
        self._missing_packs: list[str] = []
        self._affected_blobs: set[bytes] = set()

    def error(self, obj: str, msg: str, **kw) -> Finding:
        f = Finding("error", obj, msg, **kw)
        self.report.findings.append(f)
        self.progress.warning(f"{obj}: {msg}")
        return f

    def warn(self, obj: str, msg: str) -> None:
        self.report.findings.append(Finding("warning", obj, msg))

    @property
    def bad_blobs(self) -> dict[bytes, str]:
        """Blob id -> why, for every blob found missing or damaged (what ``repair snapshots`` replaces)."""
        return dict(self._bad_blobs)

    def run(self, read_data: bool = False, subset: str | None = None) -> VerifyReport:
        selector = parse_subset(subset)
        if selector is not None:
            read_data = True
        self._check_keys()
        self._check_index()
        with contextlib.ExitStack() as stack:
            # Packs are read and checked by workers while this process checks the snapshots and their
            # file lists (one core's work, which used to come first and leave the other core idle).
            # Results are merged afterwards, in the order the checks had when they ran one by one.
            reading = self._start_reading(selector, stack) if read_data else None
            snaps = self._check_snapshots()
            if self.repo.backend.properties.replicas > 1:
                self._check_replicas(deep=read_data and selector is None)
            if reading is not None:
                self._collect(*reading)
        if self._bad_blobs:
            self._attribute(snaps)
        self._report_missing_packs()
        return self.report

    def _report_missing_packs(self) -> None:
        """A missing pack is an error when a snapshot needs one of its blobs; else a warning: with
        lock-free prune, one prune can delete a pack (unused, its mark ripe) that another prune
        running at the same time still listed in the index it wrote. The next prune drops it."""
        if not self._missing_packs:
            return
        by_pack: dict[str, set[bytes]] = {p: set() for p in self._missing_packs}
        for bid, loc in self.repo.index.iter_entries():
            if loc.pack_id in by_pack:
                by_pack[loc.pack_id].add(bid)
        for pack_id, blobs in by_pack.items():
            if blobs & self._affected_blobs:
                self.error(data_name(pack_id), "pack is listed in the index but missing")
            else:
                self.warn(data_name(pack_id), "pack is listed in the index but missing; no snapshot needs "
                                              "its blobs (a prune deleted it while another prune wrote the "
                                              "index): the next prune drops it from the index")

    # ------------------------------------------------------------------ objects

    def _check_keys(self) -> None:
        for info in self.repo.keys_listing():
            try:
                self.repo.get_object(info.name)
            except HaeedgeError as e:
                self.error(info.name, str(e))
        # Key records not signed by the owner key: someone with write access tried to register a key.
        for oid, why in self.repo.registry().problems:
            if not any(f.object == f"keys/{oid}" for f in self.report.findings):
                self.error(f"keys/{oid}", why)

    def _check_index(self) -> None:

        repo = self.repo
        found = read_indexes(repo, on_error=lambda name, e: self.error(name, f"index object unreadable: {e}"))
        docs, superseded = found.docs, found.superseded
        for d in unauthorised_supersessions(docs):
            self.error(f"index/{d.object_id}", f"index object claims to supersede {len(d.superseded)} other index "
                       "objects without the owner's signature (ignored: only the owner's prune and repair "
                       "replace the index)")
        legacy = [d for d in docs if d.domain == LEGACY]
        for d in docs:
            if d.problem and d.domain != LEGACY:
                self.error(f"index/{d.object_id}", f"{d.problem}; its entries count for no host")
        if legacy:
            self.warn(f"index/{legacy[0].object_id}", f"{len(legacy)} index objects are not signed (written before "
                      "index format 2); their blobs are read, but no host deduplicates against them")
        if not repo.index_ids:
            # Not loaded by the caller (verify): a damaged index object is a finding above, not fatal.
            repo.index_ids.update(d.object_id for d in found.current())
            repo.index = found.blob_index()
        stored = {object_id_of(i.name): i.size for i in repo.backend.list("data")}
        self.report.packs = len(stored)
        indexed: dict[str, int] = {}
        for d in docs:
            if d.object_id in superseded:
                continue
            for p in d.packs:
                indexed[p.pack_id] = p.size
        for pack_id, size in indexed.items():
            if pack_id not in stored:
                self._missing_packs.append(pack_id)  # an error if a snapshot needs it (see run)
                self._mark_pack_bad(pack_id, "pack is missing")
            elif stored[pack_id] != size:
                self.error(data_name(pack_id), f"pack size {stored[pack_id]} differs from the index ({size})")
                self._mark_pack_bad(pack_id, "pack has the wrong size")
        for pack_id in stored:
            if pack_id not in indexed:
                self.warn(data_name(pack_id), "pack is not in any index (left by an interrupted run; "
                          "'haeedge prune' removes it, 'haeedge repair index' adopts it)")
        self._stored_packs = stored

    def _mark_pack_bad(self, pack_id: str, why: str) -> None:
        for bid, loc in self.repo.index.iter_entries():
            if loc.pack_id == pack_id:
                self._bad_blobs[bid] = why

    def _check_snapshots(self) -> list[Snapshot]:
        repo = self.repo
        snaps = repo.list_snapshots(on_error=lambda sid, e: self.error(f"snapshots/{sid}", str(e)),
                                    include_hidden=True)
        self._check_markers(snaps)
        hidden = repo.hidden_snapshot_ids()
        self.report.hidden = sum(s.id in hidden for s in snaps)
        self.report.snapshots = len(snaps) - self.report.hidden
        registry = repo.registry()
        for snap in snaps:
            obj = f"snapshots/{snap.id}" + (" (hidden: forgotten, kept as chain support)" if snap.id in hidden else "")
            signature = registry.check_snapshot(snap)  # unsigned, badly signed, wrongly attributed
            if not signature.ok:
                self.error(obj, f"{signature.message} (host {snap.host!r})", snapshots=[snap.id])
            try:
                repo.chain_of(snap)
            except HaeedgeError as e:
                self.error(obj, str(e), snapshots=[snap.id])
                continue
            damaged = 0
            # An untrusted snapshot is one error already; the domain check speaks for trusted ones.
            outside = _OutsideDomain(repo, snap.host, enabled=signature.ok)
            try:
                for tid in snap.tree:
                    outside.check(hex_id(tid))
                for entry in repo.iter_tree(snap.tree):
                    damaged += bool(entry.damaged)
                    for chunk_id, _length in entry.chunks or ():
                        bid = hex_id(chunk_id)
                        if repo.lookup_blob(bid) is None:
                            if bid not in self._bad_blobs:
                                self._bad_blobs[bid] = "blob is missing from the index"
                        else:
                            outside.check(bid)
            except HaeedgeError as e:
                self.error(obj, f"file list unreadable: {e}", snapshots=[snap.id])
            outside.report(self, obj, snap)
            if damaged:
                self.warn(obj, f"{damaged} files are marked damaged (by 'repair snapshots'); they restore "
                          "with zeros where data was lost")
        return snaps

    def _check_markers(self, snaps: list[Snapshot]) -> None:

        markers = self.repo.markers()
        for oid, why in markers.problems:
            self.error(marker_name(oid), why)
        present = {s.id for s in snaps}
        kept = [s.id for s in snaps if s.id not in markers.hidden]
        needed = chain_support(snaps, kept)
        for sid, oids in markers.hidden.items():
            if sid not in present:
                for oid in oids:
                    self.warn(marker_name(oid), f"forget marker names snapshot {sid[:8]}, which is gone (left by "
                              "an interrupted forget; the next forget removes it)")
            elif sid not in needed:
                self.warn(f"snapshots/{sid}", "hidden (forgotten) snapshot that no kept snapshot needs any more "
                          "(left by an interrupted forget; the next forget deletes it)")

    def _check_replicas(self, deep: bool) -> None:
        from haeedge.backends.replicated import audit_replicas, replica_set

        replicated = replica_set(self.repo.backend)
        assert replicated is not None  # properties.replicas > 1
        audit = audit_replicas(replicated, deep=deep)
        for a in audit.replicas:
            missing = [n for n in a.missing if not n.startswith("locks/")]
            self.report.replicas.append({"location": a.location, "objects": a.objects, "bytes": a.bytes,
                                         "ok": not (missing or a.size_mismatch or a.corrupt or a.error),
                                         "missing": missing, "size_mismatch": a.size_mismatch,
                                         "damaged": a.corrupt, "error": a.error})
            if a.error:
                self.error(a.location, f"replica could not be checked: {a.error}")
            for name in missing:
                self.error(name, f"missing on replica {a.location} ('haeedge sync' copies it there)")
            for name in a.size_mismatch:
                self.error(name, f"wrong size on replica {a.location} ('haeedge sync' replaces it)")
            for name in a.corrupt:
                self.error(name, f"damaged on replica {a.location}: its SHA-256 does not match its name "
                           "('haeedge sync --deep' replaces it)")

    # ------------------------------------------------------------------ data

    def _start_reading(self, selector: Callable[[list[str]], list[str]] | None,
                       stack: contextlib.ExitStack) -> tuple[Iterator[PackCheck], int, int]:
        """Hand every selected pack to the pack checkers; (results as they come, bytes, packs)."""
        repo = self.repo
        # Record numbers, not locations: 4 bytes per blob here, and in each job sent to a worker.
        by_pack = repo.index.records_by_pack()
        packs = sorted(self._stored_packs)
        if selector is not None:
            packs = selector(packs)
        coldreads.prepare_packs(repo, packs)  # archived packs: restore them all first (nothing if none can be)
        none = array("I")
        jobs = [(p, by_pack.get(p, none)) for p in packs]
        del by_pack
        pool = stack.enter_context(self._pack_executor())
        return pool.map(_check_pack_job, jobs, chunksize=1), sum(self._stored_packs[p] for p in packs), len(packs)

    def _collect(self, results: Iterator[PackCheck], total_bytes: int, packs: int) -> None:
        self.progress.start("read-data", total_bytes, packs)
        for result in results:
            self._merge(result)
        self.progress.finish()

    def _pack_executor(self):
        """Processes for a local repository (the per-blob Python holds the GIL); threads otherwise.

        Workers are forked and read packs themselves; network clients are never forked.
        """
        global _CHECK_REPO, _CHECK_WINDOW
        _CHECK_REPO = self.repo
        local = self.repo.backend.properties.cheap_ranged_reads
        _CHECK_WINDOW = READ_WINDOW if local else None
        workers = int(os.environ.get("HAEEDGE_WORKERS", "0")) or (os.cpu_count() or 2)
        if (local and workers > 1
                and "fork" in multiprocessing.get_all_start_methods() and os.environ.get("HAEEDGE_THREADS") != "1"):
            from haeedge.forking import fork_pool

            return fork_pool(workers)
        return ThreadPoolExecutor(max_workers=3, thread_name_prefix="verify")

    def _merge(self, r: PackCheck) -> None:
        self.report.packs_read += r.packs_read
        self.report.bytes_read += r.bytes_read
        self.report.blobs_checked += r.blobs_checked
        self.progress.advance(files=1, nbytes=r.bytes_read)
        for obj, msg in r.errors:
            self.error(obj, msg)
        for bid, why in r.bad_blobs:
            copies = {loc.pack_id for loc, _domain in self.repo.index.locations(bid)}
            if len(copies) > 1:
                # Only bad if every copy is: a planted copy must not blame the snapshots of a good one.
                bad = self._bad_copies.setdefault(bid, {})
                bad[r.pack_id] = why
                if set(bad) < copies:
                    continue
            if r.soft_bad:
                self._bad_blobs.setdefault(bid, why)
            else:
                self._bad_blobs[bid] = why


    # ------------------------------------------------------------------ blame

    def _attribute(self, snaps: list[Snapshot]) -> None:
        """Name every snapshot and file that a bad or missing blob affects."""
        repo = self.repo
        affected: dict[bytes, tuple[set[str], list[str]]] = {}
        for snap in snaps:
            try:
                for entry in repo.iter_entries(snap):
                    for chunk_id, _l in entry.chunks or ():
                        bid = hex_id(chunk_id)
                        if bid in self._bad_blobs:
                            s, files = affected.setdefault(bid, (set(), []))
                            s.add(snap.id)
                            p = "/" + entry.path.decode("utf-8", "replace")
                            if p not in files:
                                files.append(p)
            except HaeedgeError:
                continue
            for tid in snap.tree:
                bid = hex_id(tid)
                if bid in self._bad_blobs:
                    s, _files = affected.setdefault(bid, (set(), []))
                    s.add(snap.id)
        self._affected_blobs = set(affected)
        for bid, why in self._bad_blobs.items():
            s, files = affected.get(bid, (set(), []))
            loc = repo.lookup_blob(bid)
            kind = {BLOB_TREE: "tree", BLOB_DATA: "data"}.get(loc.blob_type, "blob") if loc else "blob"
            if not s:
                continue
            self.error(f"{kind} blob {bid.hex()[:16]}", why, snapshots=sorted(s), files=files[:100])


class _OutsideDomain:
    """Blobs a snapshot of host H uses that no owner- or H-signed index object lists (repo/provenance.py):
    another writer may have planted them under a guessed id, and prune would not keep them for H."""

    def __init__(self, repo: Repository, host: str, enabled: bool = True):

        self.repo = repo
        self.host = host
        self.view = _domain_view(repo, domains_for_host(host))
        self.legacy_view = _domain_view(repo, frozenset((LEGACY,)))
        self.foreign: list[bytes] = []
        self.legacy = 0
        self.seen: set[bytes] = set()
        self.enabled = enabled

    def check(self, bid: bytes) -> None:
        if not self.enabled or bid in self.seen or bid in self.view or self.repo.lookup_blob(bid) is None:
            return
        self.seen.add(bid)
        if bid in self.legacy_view:
            self.legacy += 1
        else:
            self.foreign.append(bid)

    def report(self, checker: Checker, obj: str, snap: Snapshot) -> None:

        if self.foreign:
            bid = self.foreign[0]
            whose = sorted({describe(d) for _loc, d in self.repo.index.locations(bid)})
            checker.error(obj, f"{len(self.foreign)} blobs it uses (e.g. {bid.hex()[:16]}, listed only by "
                          f"index objects of: {', '.join(whose)}) are vouched for by neither the owner nor host "
                          f"{snap.host!r}: another writer may have planted them; prune does not keep them for "
                          "this snapshot", snapshots=[snap.id])
        if self.legacy:
            checker.warn(obj, f"{self.legacy} blobs it uses are listed only by unsigned (legacy) index objects")


def _domain_view(repo: Repository, domains: frozenset[str]):

    return DedupView(repo.index, domains)


@dataclass
class PackCheck:
    packs_read: int = 0
    bytes_read: int = 0
    blobs_checked: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    bad_blobs: list[tuple[bytes, str]] = field(default_factory=list)
    #: The pack could not be read at all: do not override a more precise reason.
    soft_bad: bool = False
    pack_id: str = ""


#: The repository the pack checkers use; set before worker processes fork.
_CHECK_REPO: Repository | None = None
#: Read packs in pieces (local disk) or whole (None: one request to a network backend).
_CHECK_WINDOW: int | None = None


def _check_pack_job(job: tuple[str, array]) -> PackCheck:
    """One pack, its blobs given as index record numbers (the index is shared with the parent)."""
    assert _CHECK_REPO is not None
    pack_id, records = job
    entry_at = _CHECK_REPO.index.entry_at
    return check_pack(_CHECK_REPO, pack_id, [entry_at(i) for i in records], window=_CHECK_WINDOW)


#: Local packs are read in pieces of about this size (a pack is 16 MiB by default; a piece grows to
#: hold its last blob whole). 1 MiB instead of 4: verify's peak PSS went from 101 to 94 MiB on the
#: benchmark corpus (two workers), for a few more reads per pack.
READ_WINDOW = 1 << 20


def check_pack(repo: Repository, pack_id: str, blobs: list[tuple[bytes, BlobLocation]],
               window: int | None = None) -> PackCheck:
    """Read one pack and check its hash, header and every blob (MDC, keyed id).

    With ``window`` (cheap ranged reads: local disk) the pack is read front to back
    in pieces of about that size, each hashed and its blobs checked before the next
    is read, so a worker never holds a whole pack. Otherwise it is read whole: one
    request to a network backend.
    """
    r = PackCheck(pack_id=pack_id)
    name = data_name(pack_id)
    hasher = hashlib.sha256()
    try:
        if window:
            size = repo.backend.stat(name).size
            pieces = _windows(size, blobs, window)
            data = None
        else:
            data = repo.backend.get(name)
            size = len(data)
            pieces = [(0, size, blobs)]
        last_start, last = 0, b""
        for start, end, inside in pieces:
            piece = data if data is not None else repo.backend.get_range(name, start, end - start)
            if len(piece) != end - start:
                raise BackendError(f"{name} changed size while it was read")
            hasher.update(piece)
            r.bytes_read += len(piece)
            _check_blobs(repo, name, piece, start, inside, r)
            last_start, last = start, piece
    except (BackendError, ObjectNotFound, IntegrityError) as e:  # IntegrityError: every replica's copy is bad
        r.errors.append((name, f"cannot read pack: {e}"))
        r.bad_blobs = [(bid, f"pack unreadable: {e}") for bid, _loc in blobs]
        r.blobs_checked = 0
        r.soft_bad = True
        return r
    r.packs_read = 1
    if hasher.hexdigest() != pack_id:
        # Blame only the blobs that fail their own checks (MDC, keyed id): the
        # others are intact and still restore, so no file is reported damaged for them.
        r.errors.append((name, "pack content does not match its name (damaged or modified)"))
    try:
        hlen = split_pack_trailer(size, bytes(last[-4:]) if len(last) >= 4 else b"")
        hstart = size - 4 - hlen
        if hstart >= last_start:
            sealed_header = memoryview(last)[hstart - last_start : size - 4 - last_start]
        else:
            sealed_header = repo.backend.get_range(name, hstart, hlen)
        header = repo.decode_pack_header(pack_id, sealed_header, hstart)
        in_header = {(e.blob_id, e.offset, e.length) for e in header}
        for bid, loc in blobs:
            if (bid, loc.offset, loc.length) not in in_header:
                r.errors.append((name, f"blob {bid.hex()[:16]} is in the index but not in the pack header"))
    except HaeedgeError as e:
        r.errors.append((name, f"pack header unreadable: {e}"))
    return r


def _windows(size: int, blobs: list[tuple[bytes, BlobLocation]],
             window: int) -> list[tuple[int, int, list[tuple[bytes, BlobLocation]]]]:
    """Cut [0, size) into consecutive pieces of about ``window`` bytes, each grown to hold
    whole every blob that starts in it; (start, end, blobs starting there)."""
    order = sorted(blobs, key=lambda b: b[1].offset)
    out: list[tuple[int, int, list[tuple[bytes, BlobLocation]]]] = []
    pos = i = 0
    while pos < size:
        end = min(size, pos + window)
        inside = []
        while i < len(order) and order[i][1].offset < end:
            loc = order[i][1]
            end = max(end, min(size, loc.offset + loc.length))
            inside.append(order[i])
            i += 1
        out.append((pos, end, inside))
        pos = end
    if i < len(order):  # entries beyond the end of the pack: checked (and failed) with the last piece
        if out:
            out[-1][2].extend(order[i:])
        else:
            out.append((0, 0, order[i:]))
    return out


def _check_blobs(repo: Repository, name: str, piece: bytes, start: int,
                 blobs: list[tuple[bytes, BlobLocation]], r: PackCheck) -> None:
    mv = memoryview(piece)
    for bid, loc in blobs:
        lo = loc.offset - start
        try:
            if lo < 0 or lo + loc.length > len(mv):
                raise IntegrityError(f"blob {bid.hex()[:16]} lies outside pack {name.rsplit('/', 1)[-1][:16]}")
            repo.decode_blob(bid, loc, mv[lo : lo + loc.length])
            r.blobs_checked += 1
        except HaeedgeError as e:
            r.errors.append((name, str(e)))
            r.bad_blobs.append((bid, str(e)))
