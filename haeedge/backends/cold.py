"""Reading objects back from an S3 archive storage class (GLACIER, DEEP_ARCHIVE).

An archived object cannot be read (GET answers 403 InvalidObjectState) until
a RestoreObject request has made a temporary copy, which takes minutes
(Expedited) to 48 hours (DEEP_ARCHIVE, Bulk). ``ColdReadBackend`` wraps each
S3 location (``cli/context.open_location``) and does this for its readers:

- ``prepare(names)``: before a restore, dump or ``verify --read-data`` reads
  its packs, HEAD each (StorageClass and the ``x-amz-restore`` header),
  request the restore of every archived one that is neither restored nor on
  its way, then poll with backoff until all are readable: every restore runs
  at once, so the whole wait is that of the slowest object, not their sum.
  Only where the location's ``cold_storage`` option is on (the default with an
  archive ``storage_class_data``): elsewhere it costs no request at all.
- ``get``/``get_range`` of an archived object that ``prepare`` did not see
  (``mount``, or a location whose lifecycle rules archived it) does the same
  for that one object, then reads it.

The wait is bounded by ``cold_wait`` (option, or ``HAEEDGE_COLD_WAIT`` /
``--cold-wait``); past it, ``ColdWaitExpired`` (exit code 14) says so, and the
restores requested go on: the next run finds them done. Progress goes to the
log (warnings on stderr, JSON lines under ``--json``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from haeedge.backends.base import Backend, BackendWrapper, backend_stack
from haeedge.backends.fsspec_errors import error_code
from haeedge.backends.s3policy import ARCHIVE_CLASSES, S3Policy
from haeedge.errors import BackendError, ColdWaitExpired

log = logging.getLogger("haeedge.backends.cold")

#: First and longest pause between two rounds of HEAD requests while restores run.
POLL_FIRST = 1.0
POLL_MAX = 300.0
#: HEAD / RestoreObject requests in flight at once, and tries of each (transient errors).
PARALLEL = 8
ATTEMPTS = 4

AVAILABLE, ARCHIVED, RESTORING = "available", "archived", "restoring"
_ONGOING = re.compile(r'ongoing-request\s*=\s*"(true|false)"')


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def archive_state(head: dict) -> str:
    """What a HEAD answer says: readable now, archived (no restore asked), or a restore under way."""
    if str(head.get("StorageClass") or "STANDARD") not in ARCHIVE_CLASSES:
        return AVAILABLE
    m = _ONGOING.search(str(head.get("Restore") or ""))
    if m is None:
        return ARCHIVED
    return RESTORING if m.group(1) == "true" else AVAILABLE


class ColdReadBackend(BackendWrapper):
    """An S3 location whose reads restore archived objects first (see the module docstring)."""

    def __init__(self, inner: Any, *, sleep: Callable[[float], None] = time.sleep):
        super().__init__(inner)
        self.s3 = inner
        self._sleep = sleep
        self._lock = threading.Lock()
        #: Set when a wait ran out: later archived reads of this run fail at once instead of waiting again.
        self.expired: str | None = None
        #: Restores this run asked for (names), reported by tests and summaries.
        self.requested: set[str] = set()

    @property
    def policy(self) -> S3Policy:
        return self.s3.policy

    # ------------------------------------------------------------------ S3 requests

    def _key(self, name: str) -> tuple[str, str]:
        return self.s3.bucket, self.s3.key(name)

    def state(self, name: str) -> str:
        bucket, key = self._key(name)
        for attempt in range(ATTEMPTS):
            try:
                return archive_state(self.s3.call("head_object", Bucket=bucket, Key=key))
            except Exception as e:  # noqa: BLE001
                error = self.s3._error(e, "stat", name)
                if not error.transient or attempt == ATTEMPTS - 1:
                    raise error from e
            self._sleep(0.5 * 2**attempt)  # a wait of hours must not end on one dropped connection
        raise AssertionError("unreachable")

    def request_restore(self, name: str) -> None:
        bucket, key = self._key(name)
        request = {"Days": self.policy.restore_days, "GlacierJobParameters": {"Tier": self.policy.restore_tier}}
        try:
            self.s3.call("restore_object", Bucket=bucket, Key=key, RestoreRequest=request)
        except Exception as e:  # noqa: BLE001
            code = error_code(e)
            if code == "RestoreAlreadyInProgress":
                return
            if code == "InvalidObjectState":  # not archived (any more): readable
                return
            raise self.s3._error(e, "request the restore of", name) from e
        with self._lock:
            self.requested.add(name)

    # ------------------------------------------------------------------ waiting

    def prepare(self, names: Iterable[str]) -> int:
        """Make every archived object of ``names`` readable; how many had to be restored. Cheap when off."""
        if not self.policy.cold_storage:
            return 0
        return self._ensure(sorted(set(names)))

    def _ensure(self, names: list[str]) -> int:
        if not names:
            return 0
        with ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="cold") as pool:
            states = dict(zip(names, pool.map(self.state, names), strict=True))
            archived = [n for n, s in states.items() if s == ARCHIVED]
            if archived and self.expired:
                raise ColdWaitExpired(self.expired)
            list(pool.map(self.request_restore, archived))
            pending = {n for n, s in states.items() if s != AVAILABLE}
            total = len(pending)
            if not pending:
                return 0
            wait = self.policy.cold_wait
            log.warning("%s: %d archived objects (%d restores requested now, %s tier, kept %d days); "
                        "waiting up to %s", self.location, total, len(archived), self.policy.restore_tier,
                        self.policy.restore_days, _duration(wait))
            start = time.monotonic()
            delay = POLL_FIRST
            while True:
                left = sorted(pending)
                pending = {n for n, s in zip(left, pool.map(self.state, left), strict=True) if s != AVAILABLE}
                elapsed = time.monotonic() - start
                if not pending:
                    log.warning("%s: %d archived objects restored after %s", self.location, total,
                                _duration(elapsed))
                    return total
                if elapsed >= wait:
                    self.expired = (f"{self.location}: {len(pending)} of {total} archived objects were not "
                                    f"restored within {_duration(wait)} (e.g. {min(pending)}); the restores "
                                    "requested go on: run the command again later")
                    raise ColdWaitExpired(self.expired, hint="raise the wait with --cold-wait (or the cold_wait "
                                                             "option), or a faster restore_tier")
                log.warning("%s: waiting for archived objects: %d of %d restored, %s elapsed", self.location,
                            total - len(pending), total, _duration(elapsed))
                self._sleep(min(delay, max(0.0, wait - elapsed)))
                delay = min(delay * 2, POLL_MAX)

    def _archived_read(self, name: str, read: Callable[[], bytes]) -> bytes:
        try:
            return read()
        except BackendError as e:
            if error_code(e) != "InvalidObjectState":
                raise
        self._ensure([name])
        return read()

    # ------------------------------------------------------------------ the Backend protocol

    def get(self, name: str) -> bytes:
        return self._archived_read(name, lambda: self.inner.get(name))

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self._archived_read(name, lambda: self.inner.get_range(name, offset, length))

    def _describe(self) -> str:
        return f"cold_storage={self.policy.cold_storage}"


def wrap_cold(backend: Backend) -> Backend:
    """``backend`` itself, or wrapped in a ``ColdReadBackend`` when it is an S3 location."""
    if backend.properties.s3 and backend.unwrap() is None:
        return ColdReadBackend(backend)
    return backend


def cold_layers(backend: Backend) -> list[ColdReadBackend]:
    """Every ``ColdReadBackend`` in ``backend``'s stack (through wrappers and each replica)."""
    return [b for b in backend_stack(backend) if isinstance(b, ColdReadBackend)]


def cold_storage_in(backend: Backend) -> bool:
    """Whether a reader should collect the packs it needs and ``prepare_reads`` them first."""
    return any(layer.policy.cold_storage for layer in cold_layers(backend))


def prepare_reads(backend: Backend, names: Iterable[str]) -> int:
    """Restore every archived object of ``names`` that a read is about to need, and wait for them.

    With a replicated repository, every replica with cold storage restores its copy; a replica in a
    standard class needs nothing. No request at all where no location has ``cold_storage`` on.
    """
    layers = [layer for layer in cold_layers(backend) if layer.policy.cold_storage]
    if not layers:
        return 0
    wanted = list(names)
    return sum(layer.prepare(wanted) for layer in layers)


__all__ = ["ColdReadBackend", "archive_state", "cold_layers", "cold_storage_in", "prepare_reads", "wrap_cold"]
