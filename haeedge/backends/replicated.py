"""One repository on several backends at once (cloud + fog node + local disk).

Every object except ``config`` is named by the SHA-256 of its bytes (the last
path component is the hex digest), so any replica can serve any object and a
bad copy is recognisable without keys. ``ReplicatedBackend`` builds on that:

- ``put``/``delete`` go to every replica, in parallel. With
  ``write_policy="all"`` any failure raises. With ``"continue"`` the call
  succeeds when at least one replica took it; each replica that did not is
  logged (WARNING) and recorded in ``lagging`` (location -> last error) and
  ``lagging_objects`` (location -> names it missed), never silently.
  ``haeedge sync`` (``sync_replicas``) later repairs those replicas.
- ``get`` tries replicas in the configured order and falls back, object by
  object, when one is unreachable, lacks the object, or returns bytes whose
  SHA-256 does not match a content-addressed name.
- ``get_range`` falls back on errors, missing objects and short answers (a
  replica whose copy is truncated). A slice of an object cannot be hashed, so
  damaged bytes in a range are caught one layer up (the MDC / keyed id of the
  blob), which then calls ``recover_range``: it finds a replica whose whole
  copy hashes to the object's name, serves the range from it, and marks the
  replicas with bad copies so that later reads of that object try them last.
- ``list`` is the union of all replicas that answer (sizes from the first
  replica in order that has the object; where replicas disagree, the size of
  the copy that verifies); it fails only if none answers.
  Replicas considered down (below) are not asked unless all are.
- ``stat``/``exists`` answer from the first replica that has the object.
- ``create`` must succeed on every replica.
- Locks (``locks/...``) are written and removed wherever possible: one
  replica holding a lock suffices, so a down replica blocks no read-only
  command and is not counted as lagging for a lock.

A replica that failed ``down_after`` calls in a row is considered down for
``probe_interval`` seconds: reads try it last, and under ``"continue"`` writes
skip it (recorded as lagging) instead of waiting for its timeouts on every
object; after the interval it is tried again.

``sync_replicas`` copies what a replica lacks (or holds with a wrong size, or,
with ``deep=True``, holds damaged) from a replica whose copy verifies; locks
are never copied (each belongs to one running process).
``audit_replicas`` reports, per replica, missing/extra/size-mismatched (and
with ``deep=True`` corrupt) objects. A non-content-addressed object (``config``)
is copied only to replicas that lack it; differing copies are reported as
conflicts, never overwritten. An object that only some replicas hold is
treated as missing on the others (it may be one that prune removed while that
replica was away; the next prune removes it again).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar, cast

from haeedge.backends.base import NAMESPACES, Backend, BackendProperties, ObjectInfo, StorageBackend, as_backend
from haeedge.errors import BackendError, IntegrityError, ObjectNotFound, ObjectRetained, UsageError

log = logging.getLogger("haeedge.backends")

T = TypeVar("T")

_HEX64 = re.compile(r"[0-9a-f]{64}")
WRITE_POLICIES = ("all", "continue")
#: The user's words (--replica-policy, a profile's replica_policy) for each write policy.
REPLICA_POLICIES = {"fail": "all", "continue": "continue"}


def write_policy_of(replica_policy: str | None) -> str:
    """The ``write_policy`` for a ``--replica-policy`` word; anything but "continue" (or none) fails."""
    return REPLICA_POLICIES.get(replica_policy or "fail", "all")


#: Errors that mean "this replica failed", as opposed to bugs, which propagate.
_REPLICA_ERRORS = (BackendError, OSError, EOFError)


class _ShortRead(Exception):
    """A replica answered a range read with fewer bytes than asked (maybe its copy is truncated)."""

    def __init__(self, data: bytes):
        super().__init__(len(data))
        self.data = data


def content_addressed(name: str) -> bool:
    """Whether ``name`` ends in a SHA-256 hex digest of the object's bytes."""
    return bool(_HEX64.fullmatch(name.rsplit("/", 1)[-1]))


def content_ok(name: str, data: bytes) -> bool:
    """True unless ``name`` is content-addressed and ``data`` does not hash to it."""
    return not content_addressed(name) or hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[-1]


def _message(e: BaseException) -> str:
    return str(e) or type(e).__name__


class _Health:
    """Consecutive failures of one replica, to stop waiting on a dead one."""

    def __init__(self) -> None:
        self.failures = 0
        self.last_failure = 0.0


class ReplicatedBackend(StorageBackend):
    """A Backend that writes to all replicas and reads from the first good one. Thread-safe."""

    def __init__(
        self,
        replicas: Sequence[Backend],
        write_policy: str = "all",
        *,
        max_workers: int | None = None,
        down_after: int = 3,
        probe_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not replicas:
            raise UsageError("a replicated repository needs at least one location")
        if write_policy not in WRITE_POLICIES:
            raise UsageError(f"write policy must be one of {', '.join(WRITE_POLICIES)}, not {write_policy!r}")
        locations = [r.location for r in replicas]
        if len(set(locations)) != len(locations):
            raise UsageError("the same location is listed twice as a replica")
        self.replicas: list[Backend] = list(replicas)
        self.write_policy = write_policy
        self.location = "replicated(" + ", ".join(locations) + ")"
        self.properties = BackendProperties(
            local_paths=tuple(p for r in self.replicas for p in r.properties.local_paths),
            replicas=len(self.replicas),
        )
        self.down_after = down_after
        self.probe_interval = probe_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._health = [_Health() for _ in self.replicas]
        self._lagging: dict[str, str] = {}
        self._lagging_objects: dict[str, set[str]] = {}
        self._pool = ThreadPoolExecutor(max_workers=max_workers or max(4, 4 * len(self.replicas)),
                                        thread_name_prefix="haeedge-replica")
        #: Reads that one replica could not serve correctly and another did.
        self.failovers: Counter[str] = Counter()
        #: name -> replicas known to hold a damaged copy of it (read last).
        self._damaged: dict[str, set[int]] = {}
        #: name -> a replica whose whole copy was hashed and found good.
        self._verified: dict[str, int] = {}

    # -- bookkeeping ---------------------------------------------------------------------

    @property
    def lagging(self) -> dict[str, str]:
        """Replicas that missed writes in this session: location -> last error message."""
        with self._lock:
            return dict(self._lagging)

    @property
    def lagging_objects(self) -> dict[str, set[str]]:
        """Replicas that missed writes: location -> the names they missed."""
        with self._lock:
            return {k: set(v) for k, v in self._lagging_objects.items()}

    def clear_lagging(self, location: str | None = None) -> None:
        """Forget missed writes (after ``sync_replicas`` repaired them)."""
        with self._lock:
            if location is None:
                self._lagging.clear()
                self._lagging_objects.clear()
            else:
                self._lagging.pop(location, None)
                self._lagging_objects.pop(location, None)

    def _record_lag(self, i: int, name: str, message: str, skipped: bool = False) -> None:
        loc = self.replicas[i].location
        with self._lock:
            if not (skipped and loc in self._lagging):  # keep the error that made it "down"
                self._lagging[loc] = message
            self._lagging_objects.setdefault(loc, set()).add(name)

    def _ok(self, i: int) -> None:
        h = self._health[i]
        if h.failures:
            with self._lock:
                if h.failures >= self.down_after:
                    log.info("%s: replica is answering again", self.replicas[i].location)
                h.failures = 0

    def _failed(self, i: int) -> None:
        with self._lock:
            h = self._health[i]
            h.failures += 1
            h.last_failure = self._clock()

    def _settle(self, futures: dict[int, Future]) -> dict[int, BaseException]:
        """Wait for each replica's call, its health following the outcome; returns the failures."""
        failed: dict[int, BaseException] = {}
        for i, fut in futures.items():
            try:
                fut.result()
                self._ok(i)
            except _REPLICA_ERRORS as e:
                self._failed(i)
                failed[i] = e
        return failed

    def _down(self, i: int) -> bool:
        h = self._health[i]
        return h.failures >= self.down_after and self._clock() - h.last_failure < self.probe_interval

    def _read_order(self, name: str | None = None) -> list[int]:
        indices = range(len(self.replicas))
        order = [i for i in indices if not self._down(i)] + [i for i in indices if self._down(i)]
        damaged = self._damaged.get(name, ()) if name is not None else ()
        return [i for i in order if i not in damaged] + [i for i in order if i in damaged]

    def _mark_damaged(self, i: int, name: str) -> None:
        with self._lock:
            self._damaged.setdefault(name, set()).add(i)

    @property
    def damaged_copies(self) -> dict[str, list[str]]:
        """Replicas found holding damaged copies in this session: location -> names (repair with sync)."""
        with self._lock:
            out: dict[str, list[str]] = {}
            for name, indices in self._damaged.items():
                for i in indices:
                    out.setdefault(self.replicas[i].location, []).append(name)
        return {loc: sorted(names) for loc, names in out.items()}

    # -- writes --------------------------------------------------------------------------

    def _on_all(self, op: str, name: str, fn: Callable[[Backend], None]) -> None:
        """Run ``fn`` on every replica in parallel and apply the write policy.

        Locks are the exception: one replica holding a lock is enough (writers
        list the union of all replicas), so a replica that is down never stops
        a restore or verify from taking its lock, and is not lagging for it.
        """
        is_lock = name.startswith("locks/")
        skip = self.write_policy == "continue" or is_lock
        futures: dict[int, Future[None]] = {}
        errors: dict[int, str] = {}
        transient: dict[int, bool] = {}
        for i, r in enumerate(self.replicas):
            if skip and self._down(i):
                errors[i] = f"{r.location}: skipped, replica is down"
                transient[i] = True
                continue
            futures[i] = self._pool.submit(fn, r)
        for i, e in self._settle(futures).items():
            errors[i] = _message(e)
            transient[i] = bool(getattr(e, "transient", isinstance(e, OSError)))
        if not errors:
            return
        done = len(self.replicas) - len(errors)
        if (self.write_policy == "all" and not is_lock) or done == 0:
            detail = "; ".join(errors[i] for i in sorted(errors))
            raise BackendError(
                f"{self.location}: {op} {name} failed on {len(errors)} of {len(self.replicas)} replica(s): {detail}",
                transient=all(transient.values()),
            )
        for i in sorted(errors):
            if is_lock:
                log.warning("%s: %s %s: not on replica %s: %s", self.location, op, name,
                            self.replicas[i].location, errors[i])
                continue
            self._record_lag(i, name, errors[i], skipped=i not in futures)
            log.warning("%s: %s %s: replica %s is now lagging: %s",
                        self.location, op, name, self.replicas[i].location, errors[i])

    def put(self, name: str, data: bytes | memoryview) -> None:
        payload = data if isinstance(data, bytes) else bytes(data)
        self._on_all("write", name, lambda r: r.put(name, payload))

    def delete(self, name: str) -> None:
        retained: list[ObjectRetained] = []

        def one(r: Backend) -> None:
            try:
                r.delete(name)
            except ObjectRetained as e:  # S3 Object Lock: not a failed replica; deleted by a later run
                retained.append(e)

        self._on_all("delete", name, one)
        if retained:
            raise ObjectRetained("; ".join(e.message for e in retained), until=max(e.until for e in retained))

    def create(self) -> None:
        """Create every replica, after checking that every one answers: a replica that cannot be
        reached (or whose host key is unknown) must not leave the others created and this one not."""
        down = self.unreachable()
        if down:
            first = next(iter(down.values()))
            raise BackendError(
                f"{self.location}: nothing was created: "
                + "; ".join(_message(e) for e in down.values()),
                transient=all(e.transient for e in down.values()), hint=first.hint)
        done: list[str] = []
        for r in self.replicas:
            try:
                r.create()
            except _REPLICA_ERRORS as e:
                already = f" (already created: {', '.join(done)})" if done else ""
                raise BackendError(f"{self.location}: cannot create {r.location}: {_message(e)}{already}",
                                   transient=bool(getattr(e, "transient", False))) from e
            done.append(r.location)

    # -- reads ---------------------------------------------------------------------------

    def _first(self, op: str, name: str, fn: Callable[[Backend], T], check: Callable[[T], bool] | None = None) -> T:
        missing: list[str] = []
        failed: list[tuple[str, bool]] = []
        corrupt: list[str] = []
        short: list[bytes] = []
        for i in self._read_order(name):
            r = self.replicas[i]
            try:
                result = fn(r)
            except ObjectNotFound as e:
                self._ok(i)
                missing.append(_message(e))
                continue
            except _ShortRead as e:
                self._ok(i)
                short.append(e.data)
                continue
            except _REPLICA_ERRORS as e:
                self._failed(i)
                failed.append((_message(e), bool(getattr(e, "transient", isinstance(e, OSError)))))
                log.warning("%s: %s %s: %s; trying the next replica", self.location, op, name, _message(e))
                continue
            self._ok(i)
            if check is not None and not check(result):
                msg = f"{r.location}: {name} is damaged (its SHA-256 does not match its name)"
                corrupt.append(msg)
                self._mark_damaged(i, name)
                log.warning("%s: %s; trying the next replica", self.location, msg)
                continue
            if missing or failed or corrupt or short:
                with self._lock:
                    self.failovers[r.location] += 1
                log.info("%s: %s %s served by %s", self.location, op, name, r.location)
            return result
        if short:  # no replica had more: the range reaches past the end of the object
            return cast(T, max(short, key=len))
        if failed:
            detail = "; ".join([m for m, _t in failed] + missing + corrupt)
            raise BackendError(f"{self.location}: cannot {op} {name} from any replica: {detail}",
                               transient=any(t for _m, t in failed))
        if corrupt:
            raise IntegrityError(f"{self.location}: every copy of {name} is damaged or missing: "
                                 + "; ".join(corrupt + missing))
        raise ObjectNotFound(f"{self.location}: {name} does not exist on any replica")

    def get(self, name: str) -> bytes:
        check = (lambda data: content_ok(name, data)) if content_addressed(name) else None
        return self._first("read", name, lambda r: r.get(name), check)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        def read(r: Backend) -> bytes:
            data = r.get_range(name, offset, length)
            if len(data) < length:
                # The end of the object, or a truncated copy: another replica tells which.
                raise _ShortRead(data)
            return data

        return self._first("read", name, read)

    def recover_range(self, name: str, offset: int, length: int) -> bytes | None:
        """The range from a replica whose whole copy verifies, after the caller found the bytes it got damaged.

        Replicas whose copy does not hash to ``name`` are marked, so later
        reads of it go elsewhere. ``None`` when no replica has a good copy (or
        the name is not content-addressed, so no copy can be told good).
        """
        if not content_addressed(name):
            return None
        with self._lock:
            good = self._verified.get(name)
        if good is not None:
            try:
                return self.replicas[good].get_range(name, offset, length)
            except _REPLICA_ERRORS:
                pass
        for i in self._read_order(name):
            r = self.replicas[i]
            try:
                data = r.get(name)
            except _REPLICA_ERRORS:
                continue
            if content_ok(name, data):
                with self._lock:
                    self._verified[name] = i
                    self.failovers[r.location] += 1
                return data[offset : offset + length]
            log.warning("%s: %s: %s is damaged (its SHA-256 does not match its name); trying the next replica",
                        self.location, r.location, name)
            self._mark_damaged(i, name)
        return None

    def stat(self, name: str) -> ObjectInfo:
        return self._first("stat", name, lambda r: r.stat(name))

    def exists(self, name: str) -> bool:
        answered = False
        errors: list[str] = []
        for i in self._read_order():
            try:
                found = self.replicas[i].exists(name)
            except _REPLICA_ERRORS as e:
                self._failed(i)
                errors.append(_message(e))
                continue
            self._ok(i)
            if found:
                return True
            answered = True
        if answered:
            return False
        raise BackendError(f"{self.location}: no replica answered whether {name} exists: {'; '.join(errors)}",
                           transient=True)

    def list(self, namespace: str) -> Iterator[ObjectInfo]:
        # A replica that is down is not waited for (its objects cannot be read now anyway).
        indices = [i for i in range(len(self.replicas)) if not self._down(i)] or list(range(len(self.replicas)))
        futures = {i: self._pool.submit(lambda r=self.replicas[i]: list(r.list(namespace))) for i in indices}
        merged: dict[str, ObjectInfo] = {}
        answers: dict[int, list[ObjectInfo]] = {}
        disagree: set[str] = set()
        errors: list[str] = []
        for i, fut in futures.items():
            try:
                infos = answers[i] = fut.result()
            except _REPLICA_ERRORS as e:
                self._failed(i)
                errors.append(_message(e))
                log.warning("%s: cannot list %s on %s: %s", self.location, namespace,
                            self.replicas[i].location, _message(e))
                continue
            self._ok(i)
            for info in infos:
                first = merged.setdefault(info.name, info)
                if first.size != info.size:
                    disagree.add(info.name)
        if len(errors) == len(futures):
            raise BackendError(f"{self.location}: cannot list {namespace} on any replica: {'; '.join(errors)}",
                               transient=True)
        if disagree:
            # A truncated or damaged copy must not set the size readers see: settle it (see _resolve_size).
            by_replica = {i: {info.name: info.size for info in infos if info.name in disagree}
                          for i, infos in answers.items()}
            for name in disagree:
                holders = [i for i in by_replica if name in by_replica[i]]
                size = _resolve_size(self.replicas, name, holders, [by_replica[i][name] for i in holders])
                if size is not None:
                    merged[name] = ObjectInfo(name, size)
        yield from merged.values()

    def unreachable(self) -> dict[str, BackendError]:
        """Replicas that do not answer right now (location -> error), asked in parallel.

        Lets a writer under ``write_policy="all"`` stop before doing any work
        rather than at its first write, and ``create`` before creating any
        replica. An error keeps its ``transient`` flag and hint: a changed
        host key needs another remedy than a server that is down.
        """
        futures = {i: self._pool.submit(r.exists, "config") for i, r in enumerate(self.replicas)}
        return {self.replicas[i].location: e if isinstance(e, BackendError) else
                BackendError(_message(e), transient=isinstance(e, OSError))
                for i, e in self._settle(futures).items()}

    def replica_backends(self) -> tuple[Backend, ...]:
        return tuple(self.replicas)

    def remove_temporaries(self, min_age: float | None = None) -> int:
        """Leftovers of interrupted writes on every replica that answers (one that does not keeps them)."""
        removed = 0
        for r in self.replicas:
            try:
                removed += r.remove_temporaries(min_age)
            except _REPLICA_ERRORS as e:
                log.warning("%s: cannot remove leftovers on %s: %s", self.location, r.location, _message(e))
        return removed

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for r in self.replicas:
            try:
                r.close()
            except _REPLICA_ERRORS as e:
                log.warning("%s: closing %s: %s", self.location, r.location, _message(e))

    def __repr__(self) -> str:
        return f"ReplicatedBackend({self.replicas!r}, write_policy={self.write_policy!r})"


# -- audit and sync --------------------------------------------------------------------------


@dataclass
class ReplicaAudit:
    """What one replica lacks or holds wrongly, compared with the others."""

    location: str
    objects: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.size_mismatch or self.corrupt or self.error)


@dataclass
class AuditReport:
    replicas: list[ReplicaAudit]
    #: Objects in the union of all replicas that answered.
    total_objects: int = 0

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.replicas)

    def __getitem__(self, location: str) -> ReplicaAudit:
        for r in self.replicas:
            if r.location == location:
                return r
        raise KeyError(location)


@dataclass
class SyncReport:
    #: target location -> names written there
    copied: dict[str, list[str]] = field(default_factory=dict)
    #: (name, target location, error message) for copies that failed
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    #: names no replica holds a good copy of
    unrecoverable: list[str] = field(default_factory=list)
    #: non-content-addressed names whose copies differ (left alone)
    conflicts: list[str] = field(default_factory=list)
    #: replicas that could not be listed, location -> error
    unreachable: dict[str, str] = field(default_factory=dict)
    #: replicas given up on when a write failed for good (a missing bucket, no permission), location -> error;
    #: nothing more was tried on them, and their other objects are not in ``failed``
    unwritable: dict[str, str] = field(default_factory=dict)
    bytes_copied: int = 0
    audit: AuditReport | None = None

    @property
    def ok(self) -> bool:
        return not (self.failed or self.unrecoverable or self.conflicts or self.unreachable or self.unwritable)

    @property
    def objects_copied(self) -> int:
        return sum(len(v) for v in self.copied.values())


def replica_set(backend: Backend) -> ReplicatedBackend | None:
    """The replicated set ``backend`` is or wraps; ``None`` for a single location."""
    return as_backend(backend, ReplicatedBackend)


def _replica_list(replicas: Sequence[Backend] | ReplicatedBackend) -> list[Backend]:
    return list(replicas.replicas) if isinstance(replicas, ReplicatedBackend) else list(replicas)


def _inventory(r: Backend) -> dict[str, int]:
    names: dict[str, int] = {}
    for ns in NAMESPACES:
        for info in r.list(ns):
            names[info.name] = info.size
    try:
        names["config"] = r.stat("config").size
    except ObjectNotFound:
        pass
    return names


def _inventories(replicas: list[Backend], workers: int) -> list[dict[str, int] | str]:
    """Per replica its name -> size map, or the error message if it cannot be listed."""

    def one(r: Backend) -> dict[str, int] | str:
        try:
            return _inventory(r)
        except _REPLICA_ERRORS as e:
            return _message(e)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(replicas)))) as ex:
        return list(ex.map(one, replicas))


def _agreed_size(sizes: list[int]) -> int:
    """Majority size; on a tie, the first replica's (configured order)."""
    counts = Counter(sizes)
    best = max(counts.values())
    return next(s for s in sizes if counts[s] == best)


def _resolve_size(replicas: list[Backend], name: str, holders: list[int], sizes: list[int]) -> int | None:
    """The size of the good copy when copies disagree.

    A content-addressed object is settled by reading one copy of each size
    (most common size first) until one hashes to its name; only disagreeing
    objects are read, so this stays cheap. ``None`` when no copy verifies
    (then every copy counts as mismatched). Other names: the majority size.
    """
    if not content_addressed(name):
        return _agreed_size(sizes)
    counts = Counter(sizes)
    for size in sorted(counts, key=lambda s: (-counts[s], -s)):
        for i, s in zip(holders, sizes, strict=True):
            if s != size:
                continue
            try:
                if content_ok(name, replicas[i].get(name)):
                    return size
            except _REPLICA_ERRORS:
                continue
            break  # this size's copy is bad; try the next size
    return None


def _audit(replicas: list[Backend], inventories: list[dict[str, int] | str], deep: bool,
           workers: int) -> AuditReport:
    audits = [ReplicaAudit(r.location) for r in replicas]
    live = [i for i, inv in enumerate(inventories) if isinstance(inv, dict)]
    for i, inv in enumerate(inventories):
        if isinstance(inv, str):
            audits[i].error = inv
        else:
            audits[i].objects = len(inv)
            audits[i].bytes = sum(inv.values())
    union: dict[str, list[int]] = {}
    for i in live:
        inv = inventories[i]
        assert isinstance(inv, dict)
        for name in inv:
            union.setdefault(name, []).append(i)
    for name in sorted(union):
        holders = union[name]
        for i in live:
            if i not in holders:
                audits[i].missing.append(name)
        if len(holders) == 1 and len(live) > 1:
            audits[holders[0]].extra.append(name)
        sizes = [inventories[i][name] for i in holders]  # type: ignore[index]
        if len(set(sizes)) > 1:
            agreed = _resolve_size(replicas, name, holders, sizes)
            for i, s in zip(holders, sizes, strict=True):
                if s != agreed:
                    audits[i].size_mismatch.append(name)
    if deep:
        jobs = [(i, name) for name, holders in union.items() if content_addressed(name) for i in holders]

        def check(job: tuple[int, str]) -> tuple[int, str, bool | str]:
            i, name = job
            try:
                return i, name, content_ok(name, replicas[i].get(name))
            except _REPLICA_ERRORS as e:
                return i, name, _message(e)

        with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
            for i, name, result in ex.map(check, jobs):
                if result is False:
                    audits[i].corrupt.append(name)
                elif isinstance(result, str) and audits[i].error is None:
                    audits[i].error = f"cannot read {name}: {result}"
        for a in audits:
            a.corrupt.sort()
    return AuditReport(audits, total_objects=len(union))


def audit_replicas(replicas: Sequence[Backend] | ReplicatedBackend, *, deep: bool = False,
                   workers: int = 4) -> AuditReport:
    """Compare the replicas' listings (and with ``deep`` every object's hash); changes nothing."""
    reps = _replica_list(replicas)
    return _audit(reps, _inventories(reps, workers), deep, workers)


def sync_replicas(
    replicas: Sequence[Backend] | ReplicatedBackend,
    progress: Callable[[int, int, str], None] | None = None,
    *,
    deep: bool = False,
    workers: int = 4,
) -> SyncReport:
    """Copy to every reachable replica what it lacks, from a replica whose copy verifies.

    ``progress(done, total, name)`` is called after each object that needed
    work. With ``deep`` every content-addressed object is read and hashed on
    every replica first, so damaged copies are replaced as well.
    """
    reps = _replica_list(replicas)
    inventories = _inventories(reps, workers)
    audit = _audit(reps, inventories, deep, workers)
    report = SyncReport(audit=audit)
    live = [i for i, inv in enumerate(inventories) if isinstance(inv, dict)]
    for i, inv in enumerate(inventories):
        if isinstance(inv, str):
            report.unreachable[reps[i].location] = inv
    corrupt = {(i, name) for i, a in enumerate(audit.replicas) for name in a.corrupt}
    union: dict[str, list[int]] = {}
    for i in live:
        for name in inventories[i]:  # type: ignore[union-attr]
            union.setdefault(name, []).append(i)

    work: list[str] = []
    for name, holders in union.items():
        if name.startswith("locks/"):
            continue  # a lock belongs to one running process; a copied one would outlive it
        sizes = {inventories[i][name] for i in holders}  # type: ignore[index]
        if len(holders) < len(live) or len(sizes) > 1 or any((i, name) in corrupt for i in holders):
            work.append(name)
    work.sort()
    lock = threading.Lock()
    done = 0

    def fix(name: str) -> None:
        nonlocal done
        holders = union[name]
        sizes = [inventories[i][name] for i in holders]  # type: ignore[index]
        if not content_addressed(name):
            if len(set(sizes)) > 1:
                with lock:
                    report.conflicts.append(name)
                    log.warning("replicas hold different copies of %s; not overwriting any", name)
            targets = [i for i in live if i not in holders]
            data: bytes | None = None
            for i in holders:
                try:
                    data = reps[i].get(name)
                    break
                except _REPLICA_ERRORS:
                    continue
        else:
            agreed = _agreed_size(sizes)
            ordered = sorted(holders, key=lambda i: (inventories[i][name] != agreed, i))  # type: ignore[index]
            data = None
            for i in ordered:
                if (i, name) in corrupt:
                    continue
                try:
                    candidate = reps[i].get(name)
                except _REPLICA_ERRORS:
                    continue
                if content_ok(name, candidate):
                    data = candidate
                    break
                log.warning("%s: %s is damaged; looking for another copy", reps[i].location, name)
                with lock:
                    corrupt.add((i, name))
            targets = [i for i in live if i not in holders or (i, name) in corrupt
                       or (data is not None and inventories[i].get(name) != len(data))]  # type: ignore[union-attr]
        if data is None:
            with lock:
                report.unrecoverable.append(name)
            log.error("no replica holds a readable, intact copy of %s", name)
        else:
            for i in targets:
                if reps[i].location in report.unwritable:
                    continue
                try:
                    if i in holders:
                        # A damaged or short copy: stores are create-only (docs/backends.md), so
                        # the bad copy goes first (this replica has no good one to lose).
                        reps[i].delete(name)
                    reps[i].put(name, data)
                except _REPLICA_ERRORS as e:
                    if not bool(getattr(e, "transient", isinstance(e, OSError))):
                        # The same error would meet every other object: report the replica once.
                        with lock:
                            report.unwritable.setdefault(reps[i].location, _message(e))
                        continue
                    with lock:
                        report.failed.append((name, reps[i].location, _message(e)))
                    log.warning("%s: cannot copy %s: %s", reps[i].location, name, _message(e))
                    continue
                with lock:
                    report.copied.setdefault(reps[i].location, []).append(name)
                    report.bytes_copied += len(data)
        with lock:
            done += 1
            if progress is not None:
                progress(done, len(work), name)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        for f in [ex.submit(fix, name) for name in work]:
            f.result()
    for names in report.copied.values():
        names.sort()
    report.unrecoverable.sort()
    report.conflicts.sort()
    report.failed.sort()
    if isinstance(replicas, ReplicatedBackend):
        failed_locations = {loc for _n, loc, _m in report.failed} | set(report.unreachable) | set(report.unwritable)
        for r in reps:
            if r.location not in failed_locations:
                replicas.clear_lagging(r.location)
    return report
