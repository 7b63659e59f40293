"""Walk source trees in the order file lists are sorted in, with excludes.

Paths are bytes throughout (file names need not be UTF-8). The walk is depth
first with each directory's children sorted by name bytes, which is exactly
the component-wise order of ``repo.tree.sort_key``; ancestors of each source
path come first so that restore can recreate their metadata.
"""

from __future__ import annotations

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
                yield WalkItem(anc, anc[1:], os.lstat(anc))
            except OSError as e:
                on_error(anc, e)
        try:
            st = os.lstat(src)
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
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        on_error(path, e)
        return
    base = path.rstrip(b"/")
    for e in entries:
        abspath = base + b"/" + e.name
        if abspath in skip_abspaths:
            continue
        if excluder and excluder.excluded(abspath, e.name):
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except OSError as err:
            on_error(abspath, err)
            continue
        yield WalkItem(abspath, abspath[1:], st)
        if stat.S_ISDIR(st.st_mode):
            if one_file_system and st.st_dev != dev:
                continue
            yield from _walk_dir(abspath, dev, excluder, one_file_system, on_error, skip_abspaths)
