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

from haeedge.errors import UsageError
from haeedge.fs import LONG_PATH, lstat_long, open_dir_long, open_long
from haeedge.repo.tree import sort_key


@dataclass
class WalkItem:
    abspath: bytes
    relpath: bytes  # abspath without the leading slash; the path stored in the tree
    st: os.stat_result


#: The signature line that marks a cache directory (https://bford.info/cachedir/).
CACHEDIR_TAG = ("CACHEDIR.TAG", b"Signature: 8a477f597d28d172789f06886806bc55")


class Excluder:
    """What a backup leaves out: restic-like name/path globs, their case-insensitive twins,
    directories marked by a tag file, and files above a size.

    A glob without a slash matches a name at any depth, one with a slash the whole path.
    A directory holding a tag file (``--exclude-if-present NAME[:HEADER]``, ``--exclude-caches``)
    keeps its entry and the tag file itself, as restic and borg do, so a restore shows that
    something was left out there.
    """

    def __init__(self, patterns: list[str], ipatterns: list[str] = (), *,
                 larger_than: int | None = None, if_present: list[tuple[str, bytes | None]] = ()):
        self.name_patterns: list[bytes] = []
        self.path_patterns: list[bytes] = []
        self.iname_patterns: list[str] = []
        self.ipath_patterns: list[str] = []
        for p in patterns:
            b = _clean_pattern(p)
            if b is not None:
                (self.path_patterns if b"/" in b else self.name_patterns).append(b)
        for p in ipatterns:
            b = _clean_pattern(p)
            if b is not None:
                folded = os.fsdecode(b).casefold()
                (self.ipath_patterns if "/" in folded else self.iname_patterns).append(folded)
        self.larger_than = larger_than
        self.tags: dict[bytes, bytes | None] = {os.fsencode(name): header for name, header in if_present}

    def __bool__(self) -> bool:
        return bool(self.name_patterns or self.path_patterns or self.iname_patterns or self.ipath_patterns
                    or self.larger_than is not None or self.tags)

    def excluded(self, abspath: bytes, name: bytes) -> bool:
        for p in self.name_patterns:
            if fnmatch.fnmatchcase(name, p):
                return True
        for p in self.path_patterns:
            if fnmatch.fnmatchcase(abspath, p):
                return True
        if self.iname_patterns or self.ipath_patterns:
            fname, fpath = os.fsdecode(name).casefold(), os.fsdecode(abspath).casefold()
            if any(fnmatch.fnmatchcase(fname, p) for p in self.iname_patterns):
                return True
            if any(fnmatch.fnmatchcase(fpath, p) for p in self.ipath_patterns):
                return True
        return False

    def too_large(self, st: os.stat_result) -> bool:
        return self.larger_than is not None and stat.S_ISREG(st.st_mode) and st.st_size > self.larger_than

    def kept_children(self, dirpath: bytes, names: list[bytes]) -> list[bytes]:
        """``names`` of the directory, or only its tag files when one of them marks it excluded."""
        if not self.tags:
            return names
        present = [n for n in names if n in self.tags and _has_header(dirpath + b"/" + n, self.tags[n])]
        return present if present else names


def _clean_pattern(p: str) -> bytes | None:
    p = p.strip()
    if not p or p.startswith("#"):
        return None
    return os.fsencode(p).rstrip(b"/") or b"/"


def _has_header(path: bytes, header: bytes | None) -> bool:
    """A tag file counts when it is a regular file starting with ``header`` (any, without one)."""
    try:
        fd = open_long(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return header is None or os.read(fd, len(header)) == header
    except OSError:
        return False
    finally:
        os.close(fd)


def parse_if_present(spec: str) -> tuple[str, bytes | None]:
    """``NAME`` or ``NAME:HEADER`` (the file must start with HEADER)."""
    name, sep, header = spec.partition(":")
    if not name or "/" in name:
        raise ValueError(f"{spec!r}: give a file name, optionally followed by ':HEADER'")
    return name, (header.encode() if sep else None)


def read_files_from(path: str, *, nul_separated: bool) -> list[str]:
    """Paths listed in a file ('-' for standard input): one per line (empty lines and '#' comments
    skipped), or NUL-separated and taken verbatim (``find -print0``)."""
    import sys

    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(path, "rb") as f:
            data = f.read()
    if nul_separated:
        return [os.fsdecode(p) for p in data.split(b"\0") if p]
    out = []
    for line in data.split(b"\n"):
        line = line.rstrip(b"\r")
        if line.strip() and not line.lstrip().startswith(b"#"):
            out.append(os.fsdecode(line))
    return out


def read_exclude_file(path: str) -> list[str]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return [line.rstrip("\n") for line in f if line.strip() and not line.lstrip().startswith("#")]


def exclude_patterns(given: list[str], files: list[str]) -> list[str]:
    """``--exclude`` patterns and the lines of ``--exclude-file`` files (backup and rewrite share the syntax)."""
    out = list(given)
    for f in files:
        try:
            out += read_exclude_file(f)
        except OSError as e:
            raise UsageError(f"cannot read exclude file {f}: {e.strerror}") from None
    return out


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
        if excluder.too_large(st):
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
        names = excluder.kept_children(path.rstrip(b"/"), _list_names(path))
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
        if excluder.too_large(st):
            continue
        yield WalkItem(abspath, abspath[1:], st)
        if stat.S_ISDIR(st.st_mode):
            if one_file_system and st.st_dev != dev:
                continue
            try:
                children = excluder.kept_children(abspath, _list_names(abspath))
            except OSError as err:
                on_error(abspath, err)
                continue
            stack.append((abspath, iter(children)))
