"""Walk source trees in the order file lists are sorted in, with excludes.

Paths are bytes throughout (file names need not be UTF-8). The walk is depth
first with each directory's children sorted by name bytes, which is exactly
the component-wise order of ``repo.tree.sort_key``; ancestors of each source
path come first so that restore can recreate their metadata.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from haeedge.repo.tree import sort_key


@dataclass
class WalkItem:
    abspath: bytes
    relpath: bytes  # abspath without the leading slash; the path stored in the tree
    st: os.stat_result


class Excluder:
    """restic-like patterns: without a slash they match a name at any depth, with one the whole path."""

    def __init__(self, patterns: list[str]):
        self.name_patterns: list[bytes] = []
        self.path_patterns: list[bytes] = []
        for p in patterns:
            p = p.strip()
            if not p or p.startswith("#"):
                continue
            b = os.fsencode(p).rstrip(b"/") or b"/"
            (self.path_patterns if b"/" in b else self.name_patterns).append(b)

    def __bool__(self) -> bool:
        return bool(self.name_patterns or self.path_patterns)

    def excluded(self, abspath: bytes, name: bytes) -> bool:
        for p in self.name_patterns:
            if fnmatch.fnmatchcase(name, p):
                return True
        for p in self.path_patterns:
            if fnmatch.fnmatchcase(abspath, p):
                return True
        return False


def read_exclude_file(path: str) -> list[str]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return [line.rstrip("\n") for line in f if line.strip() and not line.lstrip().startswith("#")]


def normalize_sources(paths: list[str]) -> list[bytes]:
    """Absolute, normalized, de-duplicated, nested paths dropped, in tree order."""
    out: list[bytes] = []
    for p in paths:
        b = os.path.normpath(os.path.abspath(os.fsencode(p)))
        out.append(b)
    out = sorted(set(out), key=lambda b: sort_key(b.lstrip(b"/")))
    kept: list[bytes] = []
    for b in out:
        if any(b == k or b.startswith(k.rstrip(b"/") + b"/") for k in kept):
            continue
        kept.append(b)
    return kept


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


def _split(path: bytes) -> tuple[bytes, bytes]:
    parent, _, name = path.rpartition(b"/")
    return parent or b"/", name


def lstat_long(path: bytes) -> os.stat_result:
    if len(path) < LONG_PATH:
        return os.lstat(path)
    parent, name = _split(path)
    fd = open_dir_long(parent)
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)


def readlink_long(path: bytes) -> bytes:
    if len(path) < LONG_PATH:
        return os.readlink(path)
    parent, name = _split(path)
    fd = open_dir_long(parent)
    try:
        return os.readlink(name, dir_fd=fd)
    finally:
        os.close(fd)


def open_long(path: bytes, flags: int) -> int:
    """``os.open`` for paths of any length (for reading file contents)."""
    if len(path) < LONG_PATH:
        return os.open(path, flags)
    parent, name = _split(path)
    fd = open_dir_long(parent)
    try:
        return os.open(name, flags, dir_fd=fd)
    finally:
        os.close(fd)


def _list_names(path: bytes) -> list[bytes]:
    """A directory's entry names, sorted by bytes (the tree order)."""
    if len(path) < LONG_PATH:
        with os.scandir(path) as it:
            return sorted(e.name for e in it)
    fd = open_dir_long(path)
    try:
        with os.scandir(fd) as it:
            return sorted(os.fsencode(e.name) for e in it)
    finally:
        os.close(fd)


def walk_sources(
    sources: list[bytes],
    excluder: Excluder,
    one_file_system: bool,
    on_error: Callable[[bytes, OSError], None],
    skip_abspaths: frozenset[bytes] = frozenset(),
) -> Iterator[WalkItem]:
    emitted_ancestors: set[bytes] = set()
    for src in sources:
        parts = src.strip(b"/").split(b"/") if src != b"/" else []
        for i in range(1, len(parts)):
            anc = b"/" + b"/".join(parts[:i])
            if anc in emitted_ancestors:
                continue
            emitted_ancestors.add(anc)
            try:
                yield WalkItem(anc, anc[1:], lstat_long(anc))
            except OSError as e:
                on_error(anc, e)
        try:
            st = lstat_long(src)
        except OSError as e:
            on_error(src, e)
            continue
        if src == b"/":
            # The root itself has no name in the tree; walk its children.
            yield from _walk_dir(src, st.st_dev, excluder, one_file_system, on_error, skip_abspaths)
            continue
        emitted_ancestors.add(src)
        yield WalkItem(src, src[1:], st)
        if stat.S_ISDIR(st.st_mode):
            yield from _walk_dir(src, st.st_dev, excluder, one_file_system, on_error, skip_abspaths)


def _walk_dir(
    path: bytes,
    dev: int,
    excluder: Excluder,
    one_file_system: bool,
    on_error: Callable[[bytes, OSError], None],
    skip_abspaths: frozenset[bytes],
) -> Iterator[WalkItem]:
    """Depth first, pre-order, children by name bytes. Iterative: trees may nest thousands deep."""
    try:
        names = _list_names(path)
    except OSError as e:
        on_error(path, e)
        return
    stack: list[tuple[bytes, Iterator[bytes]]] = [(path.rstrip(b"/"), iter(names))]
    while stack:
        base, it = stack[-1]
        name = next(it, None)
        if name is None:
            stack.pop()
            continue
        abspath = base + b"/" + name
        if abspath in skip_abspaths:
            continue
        if excluder and excluder.excluded(abspath, name):
            continue
        try:
            st = lstat_long(abspath)
        except OSError as err:
            on_error(abspath, err)
            continue
        yield WalkItem(abspath, abspath[1:], st)
        if stat.S_ISDIR(st.st_mode):
            if one_file_system and st.st_dev != dev:
                continue
            try:
                children = _list_names(abspath)
            except OSError as err:
                on_error(abspath, err)
                continue
            stack.append((abspath, iter(children)))
