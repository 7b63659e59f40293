"""Repository locks: ``locks/<id>`` objects naming host, pid, user and time.

Shared locks (backup, restore, verify) coexist; an exclusive lock (prune,
forget, repair) excludes every other lock. Locks are refreshed while held by
writing a new object and deleting the old one (objects are immutable). A lock
is stale when its process is gone on this host, or it has not been refreshed
for ``STALE_AFTER`` seconds; stale locks are ignored and may be removed.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from haeedge.errors import FormatError, HaeedgeError, ObjectNotFound, RepositoryLocked

log = logging.getLogger("haeedge.lock")
STALE_AFTER = 30 * 60
REFRESH_EVERY = 5 * 60


@dataclass
class LockInfo:
    name: str
    host: str
    pid: int
    user: str
    time: float
    exclusive: bool
    command: str = ""

    def describe(self) -> str:
        kind = "exclusive" if self.exclusive else "shared"
        age = max(0, int(time.time() - self.time))
        cmd = f" ({self.command})" if self.command else ""
        return f"{kind} lock held by {self.user}@{self.host} pid {self.pid}{cmd}, refreshed {age}s ago"

    def is_stale(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if now - self.time > STALE_AFTER:
            return True
        if self.host == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False


def encode_lock(exclusive: bool, command: str) -> bytes:
    return json.dumps({"haeedge_lock": 1, "host": socket.gethostname(), "pid": os.getpid(),
                       "user": _user(), "time": time.time(), "exclusive": exclusive,
                       "command": command}).encode()


def decode_lock(name: str, data: bytes) -> LockInfo:
    try:
        d = json.loads(data)
        return LockInfo(name, str(d["host"]), int(d["pid"]), str(d["user"]), float(d["time"]),
                        bool(d["exclusive"]), str(d.get("command", "")))
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"lock {name} is malformed") from e


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in containers
        return str(os.getuid())


class Lock:
    """A held lock; refreshes itself in a thread until released."""

    def __init__(self, write: Callable[[bytes], str], delete: Callable[[str], None], exclusive: bool, command: str):
        self._write = write
        self._delete = delete
        self.exclusive = exclusive
        self.command = command
        self.name = write(encode_lock(exclusive, command))
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self._thread = threading.Thread(target=self._refresh_loop, name="lock-refresh", daemon=True)
        self._thread.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            try:
                self.refresh()
            except HaeedgeError as e:
                log.warning("could not refresh lock: %s", e)

    def refresh(self) -> None:
        with self._mutex:
            if self._stop.is_set():
                return
            old = self.name
            self.name = self._write(encode_lock(self.exclusive, self.command))
            self._delete(old)

    def release(self) -> None:
        self._stop.set()
        with self._mutex:
            try:
                self._delete(self.name)
            except HaeedgeError as e:
                log.warning("could not remove lock %s: %s", self.name, e)


def check_conflicts(mine: Lock, others: list[LockInfo], remove: Callable[[str], None]) -> None:
    """Raise RepositoryLocked when a live lock conflicts with ours; take over stale ones."""
    for other in others:
        if other.name == mine.name:
            continue
        if not (mine.exclusive or other.exclusive):
            continue
        if other.is_stale():
            log.warning("removing stale %s", other.describe())
            try:
                remove(other.name)
            except ObjectNotFound:
                pass
            continue
        raise RepositoryLocked(f"repository is locked: {other.describe()}",
                               hint="wait for it to finish, or run 'haeedge unlock' if that process is gone")
