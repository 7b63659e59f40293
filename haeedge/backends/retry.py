"""Retry transient storage failures with exponential backoff and full jitter.

``RetryingBackend(inner)`` wraps any backend. A call that fails with a
``BackendError`` whose ``transient`` flag is set, or with a raw network
``OSError`` (connection reset/refused/aborted, broken pipe, timeout), is tried
again after ``random.uniform(0, min(max_delay, base_delay * 2**n))`` seconds
("full jitter": many clients that failed together do not retry together), at
most ``attempts`` times in all and never past ``max_total`` seconds from the
first attempt. Permanent errors and ``ObjectNotFound`` are raised at once.

Every operation is safe to repeat: objects are immutable and named by their
content, so a repeated ``put`` writes the same bytes, and ``delete`` of an
absent object is not an error. ``create`` is not retried (a half-created
location would then look "not empty"). A listing that breaks midway is
restarted and objects already yielded are skipped.

``read_attempts`` (default: ``attempts``) bounds reads separately: a replica
of a replicated repository retries little, because another replica can serve
the read at once. With ``retry_refused=False`` (replicas, too) a refused
connection is not retried at all: nothing listens there now, and waiting on it
would only hold up a run the other replicas can serve (or, under the ``fail``
write policy, must stop at once).

A range read that comes back shorter than asked is checked with ``stat``: if
the object is longer, the read was cut off in transit and is retried (the last
attempt returns what it got, so the caller's integrity checks decide).

Retries are logged on the ``haeedge.backends`` logger at WARNING with the
location, operation, object name and the error message; backends never put
secrets into those.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from haeedge.backends.base import Backend, BackendWrapper, ObjectInfo
from haeedge.errors import BackendError, ObjectNotFound

log = logging.getLogger("haeedge.backends")

T = TypeVar("T")

_READS = frozenset({"read", "list", "stat"})
_TRANSIENT_ERRNOS = frozenset({
    errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT,
    errno.EAGAIN, errno.EINTR, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETRESET,
})


def is_refused(e: BaseException) -> bool:
    """Whether ``e`` (or an error it was raised from) is a refused connection: no server listens."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ConnectionRefusedError) or (isinstance(cur, OSError) and cur.errno == errno.ECONNREFUSED):
            return True
        # paramiko's NoValidConnectionsError: one error per address tried; errors that keep theirs in os_error.
        per_address = getattr(cur, "errors", None)
        if isinstance(per_address, dict) and per_address and all(
                isinstance(x, BaseException) and is_refused(x) for x in per_address.values()):
            return True
        os_error = getattr(cur, "os_error", None)
        if isinstance(os_error, BaseException) and os_error is not cur and is_refused(os_error):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def is_transient(e: BaseException) -> bool:
    """Whether trying again may help."""
    if isinstance(e, ObjectNotFound):
        return False
    if isinstance(e, BackendError):
        return e.transient
    if isinstance(e, (ConnectionError, TimeoutError)):
        return True
    return isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS


class RetryingBackend(BackendWrapper):
    """A Backend that retries transient failures of ``inner``. Thread-safe if ``inner`` is."""

    def __init__(
        self,
        inner: Backend,
        attempts: int = 6,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        max_total: float = 300.0,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        read_attempts: int | None = None,
        retry_refused: bool = True,
    ):
        if attempts < 1 or (read_attempts is not None and read_attempts < 1):
            raise ValueError("attempts must be at least 1")
        super().__init__(inner)
        self.attempts = attempts
        self.read_attempts = read_attempts or attempts
        self.retry_refused = retry_refused
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_total = max_total
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        #: How many retries were made (all operations); tests and progress output read it.
        self.retries = 0

    def _delay(self, failures: int) -> float:
        return self._rng() * min(self.max_delay, self.base_delay * (2 ** (failures - 1)))

    def _call(self, op: str, name: str | None, fn: Callable[[], T]) -> T:
        attempts = self.read_attempts if op in _READS else self.attempts
        start = self._clock()
        failures = 0
        while True:
            try:
                return fn()
            except Exception as e:
                if not is_transient(e) or (not self.retry_refused and is_refused(e)):
                    raise
                failures += 1
                delay = self._delay(failures)
                elapsed = self._clock() - start
                what = f"{op} {name}" if name else op
                if failures >= attempts or elapsed + delay > self.max_total:
                    log.error("%s: %s failed after %d attempt(s) in %.1fs: %s",
                              self.location, what, failures, elapsed, e)
                    raise self._give_up(e, failures) from e
                self.retries += 1
                log.warning("%s: %s failed (%s); retry %d of %d in %.2fs",
                            self.location, what, e, failures, attempts - 1, delay)
                self._sleep(delay)

    def _give_up(self, e: Exception, failures: int) -> BackendError:
        suffix = f" (gave up after {failures} attempts)" if failures > 1 else ""
        if isinstance(e, BackendError):
            return BackendError(f"{e.message}{suffix}", transient=True, hint=e.hint)
        detail = getattr(e, "strerror", None) or str(e) or type(e).__name__
        return BackendError(f"{self.location}: {detail}{suffix}", transient=True)

    # -- the Backend protocol ------------------------------------------------------------

    def put(self, name: str, data: bytes | memoryview) -> None:
        attempts = 0

        def write() -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                # A failed store may have left a torn object, and stores are create-only: a retry
                # would keep it. Nothing refers to a name whose store failed (and another writer of
                # the name stores the same bytes), so removing it first is safe.
                with contextlib.suppress(Exception):
                    self.inner.delete(name)
            self.inner.put(name, data)

        self._call("write", name, write)

    def get(self, name: str) -> bytes:
        return self._call("read", name, lambda: self.inner.get(name))

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        tries = 0

        def read() -> bytes:
            nonlocal tries
            tries += 1
            data = self.inner.get_range(name, offset, length)
            if len(data) < length and tries < self.read_attempts:
                size = self.inner.stat(name).size
                if size > offset + len(data):
                    raise BackendError(f"{self.location}: read of {name} was cut short ({len(data)} of "
                                       f"{min(length, size - offset)} bytes at offset {offset})", transient=True)
            return data

        return self._call("read", name, read)

    def list(self, namespace: str) -> Iterator[ObjectInfo]:
        seen: set[str] = set()
        it: Iterator[ObjectInfo] | None = None

        def step() -> ObjectInfo | None:
            nonlocal it
            if it is None:
                it = iter(self.inner.list(namespace))
            try:
                while True:
                    info = next(it)
                    if info.name not in seen:
                        return info
            except StopIteration:
                return None
            except BaseException:
                it = None  # restart the listing on the next attempt
                raise

        while True:
            info = self._call("list", namespace, step)
            if info is None:
                return
            seen.add(info.name)
            yield info

    def delete(self, name: str) -> None:
        self._call("delete", name, lambda: self.inner.delete(name))

    def stat(self, name: str) -> ObjectInfo:
        return self._call("stat", name, lambda: self.inner.stat(name))

    def exists(self, name: str) -> bool:
        return self._call("stat", name, lambda: self.inner.exists(name))

