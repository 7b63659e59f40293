"""File-system access for paths of any length, and without following symlinks.

A system call takes at most PATH_MAX (4096) bytes of path, but a tree may nest
deeper: the archiver and the restorer reach such paths through directory
descriptors. The restorer's variants never follow a symlink on the way, because
a hostile snapshot may have planted one in the target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator

#: Paths at least this long are reached through directory descriptors: a system
#: call takes at most PATH_MAX (4096) bytes, but a tree may nest deeper than that.
LONG_PATH = 3072
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def open_dir_long(path: bytes, nofollow: bool = False) -> int:
    """Open a directory whatever the length of its path.

    The first LONG_PATH bytes resolve as in a plain open. Below them the rest is
    opened in steps through directory descriptors: in as few steps as fit, or, with
    ``nofollow`` (the restorer, inside a target a hostile snapshot may have planted
    symlinks in), one component at a time with O_NOFOLLOW.
    """
    if len(path) < LONG_PATH and not nofollow:
        return os.open(path, _DIR_FLAGS)
    cut = path.rfind(b"/", 1, LONG_PATH)
    fd = os.open(path[:cut] if cut > 0 else b"/", _DIR_FLAGS)
    rest = path[cut + 1 :]
    flags = _DIR_FLAGS | (os.O_NOFOLLOW if nofollow else 0)
    try:
        while rest:
            if nofollow:
                step, _, rest = rest.partition(b"/")
                if not step:
                    continue
            elif len(rest) < LONG_PATH:
                step, rest = rest, b""
            else:
                cut = rest.rfind(b"/", 0, LONG_PATH)
                if cut <= 0:
                    raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))  # one name > LONG_PATH bytes
                step, rest = rest[:cut], rest[cut + 1 :]
            nfd = os.open(step, flags, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def split_parent(path: bytes) -> tuple[bytes, bytes]:
    parent, _, name = path.rpartition(b"/")
    return parent or b"/", name


def lstat_long(path: bytes) -> os.stat_result:
    if len(path) < LONG_PATH:
        return os.lstat(path)
    parent, name = split_parent(path)
    fd = open_dir_long(parent)
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)


def readlink_long(path: bytes) -> bytes:
    if len(path) < LONG_PATH:
        return os.readlink(path)
    parent, name = split_parent(path)
    fd = open_dir_long(parent)
    try:
        return os.readlink(name, dir_fd=fd)
    finally:
        os.close(fd)


def open_long(path: bytes, flags: int) -> int:
    """``os.open`` for paths of any length (for reading file contents)."""
    if len(path) < LONG_PATH:
        return os.open(path, flags)
    parent, name = split_parent(path)
    fd = open_dir_long(parent)
    try:
        return os.open(name, flags, dir_fd=fd)
    finally:
        os.close(fd)



@contextlib.contextmanager
def at_nofollow(path: bytes) -> Iterator[tuple[int | None, bytes]]:
    """(dir_fd, name) for the *at() system calls, for a path of any length inside a restore target.

    Short paths are used as they are (dir_fd None). For longer ones the parent is
    opened from a short prefix one component at a time with O_NOFOLLOW, so no
    symlink is followed on the way (the restorer checked every directory it made).
    """
    if len(path) < LONG_PATH:
        yield None, path
        return
    parent, _, name = path.rpartition(b"/")
    if LAST_LONG_DIR.lock.acquire(blocking=False):  # when busy (another thread, or nested): afresh
        try:
            yield LAST_LONG_DIR.open(parent), name
        finally:
            LAST_LONG_DIR.lock.release()
        return
    fd = open_dir_long(parent, nofollow=True)
    try:
        yield fd, name
    finally:
        os.close(fd)


class _LastLongDir:
    """The directory of the last long path used, kept open: the next one in it or below it is
    reached from there, not from the target down one component at a time. Without it, making
    the parents of a path 6,000 directories deep cost 18 million opens (quadratic in depth)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.path: bytes | None = None
        self.fd: int | None = None

    def open(self, parent: bytes) -> int:
        """An fd of ``parent`` (owned by the cache; the caller holds ``lock``)."""
        if self.fd is not None and self.path is not None:
            if parent == self.path:
                return self.fd
            if parent.startswith(self.path + b"/"):
                fd = os.open(b".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.fd)
                try:
                    for step in parent[len(self.path) + 1 :].split(b"/"):
                        if step:
                            nfd = os.open(step, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                          dir_fd=fd)
                            os.close(fd)
                            fd = nfd
                except BaseException:
                    os.close(fd)
                    raise
                self._replace(parent, fd)
                return fd
        self._replace(parent, open_dir_long(parent, nofollow=True))
        assert self.fd is not None
        return self.fd

    def _replace(self, path: bytes | None, fd: int | None) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.path, self.fd = path, fd

    def close(self) -> None:
        with self.lock:
            self._replace(None, None)


LAST_LONG_DIR = _LastLongDir()


def open_nofollow(path: bytes, flags: int, mode: int = 0o777) -> int:
    with at_nofollow(path) as (dir_fd, name):
        return os.open(name, flags, mode, dir_fd=dir_fd)
