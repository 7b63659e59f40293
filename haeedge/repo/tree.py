"""File lists: sorted streams of JSON-lines entries stored as chunked tree blobs.

A snapshot's tree is one byte stream of entries, one JSON object per line,
sorted by path compared component by component (``sort_key``). The stream is
cut with FastCDC (small parameters) into tree blobs, so consecutive fulls
share most of their tree blobs and a million-file list is never one object.

An incremental snapshot's stream holds only changed or added entries and
deletion markers (``{"path": ..., "deleted": true}``); ``merge_chain``
overlays the streams of a chain to give the effective list of its newest link.
"""

from __future__ import annotations

import base64
import heapq
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from haeedge.chunking import TREE_PARAMS, chunk_boundaries
from haeedge.errors import FormatError

TYPES = frozenset({"file", "dir", "symlink", "fifo", "socket", "chardev", "blockdev"})
MAX_LINE = 64 << 20
MAX_PATH = 1 << 16
MAX_NAME_FIELD = 4096
#: Integer fields and the range of the field they come from (an attacker's 2**70 must not reach
#: os.ftruncate or os.chown). Times are signed nanoseconds; ids and counts unsigned.
_INT_RANGES = {
    "mode": (0, 0xFFFF),
    "uid": (0, (1 << 32) - 1),
    "gid": (0, (1 << 32) - 1),
    "size": (0, (1 << 63) - 1),
    "mtime_ns": (-(1 << 63), (1 << 63) - 1),
    "ctime_ns": (-(1 << 63), (1 << 63) - 1),
    "atime_ns": (-(1 << 63), (1 << 63) - 1),
    "inode": (0, (1 << 64) - 1),
    "nlink": (0, (1 << 64) - 1),
    "rdev": (0, (1 << 64) - 1),
    "dev": (0, (1 << 64) - 1),
}
_INT_FIELDS = tuple(_INT_RANGES)
#: Text fields: a str (or, for those with a ``_b64`` twin, base64 of the bytes) of bounded length.
_TEXT_FIELDS = ("hardlink", "user", "group")
_BYTES_FIELDS = ("target",)
_FLAG_FIELDS = ("deleted", "damaged")
_STR_FIELDS = frozenset(_TEXT_FIELDS + _BYTES_FIELDS)
#: ``Node``'s fields between ``path`` and ``target``, in declaration order: stored as read.
_PLAIN_FIELDS = ("type", "mode", "uid", "gid", "user", "group", "mtime_ns", "ctime_ns", "inode", "size", "chunks",
                 "nlink", "hardlink", "rdev", "damaged", "deleted")
#: Fields ``Node`` has attributes for; others (``atime_ns``, ``dev``, a later version's) go to ``Node.extra``.
_KNOWN_KEYS = frozenset({"path", "path_b64", "type", "mode", "uid", "gid", "user", "group", "mtime_ns", "ctime_ns",
                         "inode", "size", "chunks", "nlink", "hardlink", "target", "target_b64", "rdev", "damaged",
                         "deleted"})

@dataclass(slots=True)
class Node:
    """One file-list entry (docs/format.md section 9), or a deletion marker (``deleted``).

    Absent fields are ``None``; ``encode_entry`` writes the present ones in the
    one order every haeedge has written them, so a node read from a tree and
    written again gives the same bytes. Fields this version does not know are
    kept in ``extra`` and written after the known ones. Slots: a million-file
    snapshot's list is held as a million of these.
    """

    path: bytes
    type: str | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    user: str | None = None
    group: str | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None
    inode: int | None = None
    size: int | None = None
    #: Files only: ``[[blob id hex, plaintext length], ...]``, the file being their concatenation.
    chunks: list | None = None
    nlink: int | None = None
    hardlink: str | None = None
    rdev: int | None = None
    #: Flags are ``None`` when absent (an explicit ``false`` read from a tree is written back as such).
    damaged: bool | None = None
    deleted: bool | None = None
    #: Symlinks: the raw target (``target`` or, when not UTF-8, ``target_b64`` in the tree).
    target: bytes | None = None
    extra: dict | None = None

    def to_doc(self) -> dict:
        """The entry's JSON object, fields in the format's order (see ``encode_entry``)."""
        d: dict = {}
        try:
            d["path"] = self.path.decode("utf-8")
        except UnicodeDecodeError:
            d["path_b64"] = base64.b64encode(self.path).decode()
        if self.type is not None:
            d["type"] = self.type
        if self.mode is not None:
            d["mode"] = self.mode
        if self.uid is not None:
            d["uid"] = self.uid
        if self.gid is not None:
            d["gid"] = self.gid
        if self.user is not None:
            d["user"] = self.user
        if self.group is not None:
            d["group"] = self.group
        if self.mtime_ns is not None:
            d["mtime_ns"] = self.mtime_ns
        if self.ctime_ns is not None:
            d["ctime_ns"] = self.ctime_ns
        if self.inode is not None:
            d["inode"] = self.inode
        if self.size is not None:
            d["size"] = self.size
        if self.nlink is not None:
            d["nlink"] = self.nlink
        if self.hardlink is not None:
            d["hardlink"] = self.hardlink
        if self.target is not None:
            try:
                d["target"] = self.target.decode("utf-8")
            except UnicodeDecodeError:
                d["target_b64"] = base64.b64encode(self.target).decode()
        if self.rdev is not None:
            d["rdev"] = self.rdev
        if self.chunks is not None:
            d["chunks"] = self.chunks
        if self.damaged is not None:
            d["damaged"] = self.damaged
        if self.deleted is not None:
            d["deleted"] = self.deleted
        if self.extra:
            for k, v in self.extra.items():
                d.setdefault(k, v)
        return d


def deletion_marker(path: bytes) -> Node:
    """What an incremental's list holds for a path its parent had and the source no longer has."""
    return Node(path, deleted=True)


def sort_key(path: bytes) -> bytes:
    """Component-wise order: ``a`` < ``a/b`` < ``a.b`` (NUL sorts before every name byte)."""
    return path.replace(b"/", b"\0")


def encode_entry(node: Node) -> bytes:
    """One line of the tree stream (format v1: compact JSON, UTF-8, this field order)."""
    text = _plain_line(node) if node.extra is None else None
    if text is None:
        text = json.dumps(node.to_doc(), separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "surrogateescape") + b"\n"


#: What ``json.dumps(..., ensure_ascii=False)`` escapes strings with (the C function).
_escape = json.encoder.encode_basestring


def _plain_line(n: Node) -> str | None:
    """``encode_entry``'s text built directly, byte for byte what ``json.dumps`` of ``to_doc()`` gives
    (in half its time: a million-file full writes a million lines), for the common entry: a file or
    directory whose fields are all of plain types (no links, devices, flags or unknown fields).
    None for anything else (json.dumps writes it, as always)."""
    t, mode, uid, gid, mtime, ctime, inode = n.type, n.mode, n.uid, n.gid, n.mtime_ns, n.ctime_ns, n.inode
    if (type(t) is not str or type(mode) is not int or type(uid) is not int or type(gid) is not int
            or type(mtime) is not int or type(ctime) is not int or type(inode) is not int
            or n.nlink is not None or n.hardlink is not None or n.target is not None or n.rdev is not None
            or n.damaged is not None or n.deleted is not None):
        return None
    try:
        path = n.path.decode("utf-8")
    except UnicodeDecodeError:
        return None
    user, group, size, chunks = n.user, n.group, n.size, n.chunks
    text = f'{{"path":{_escape(path)},"type":{_escape(t)},"mode":{mode},"uid":{uid},"gid":{gid}'
    if user is not None:
        if type(user) is not str:
            return None
        text += f',"user":{_escape(user)}'
    if group is not None:
        if type(group) is not str:
            return None
        text += f',"group":{_escape(group)}'
    text += f',"mtime_ns":{mtime},"ctime_ns":{ctime},"inode":{inode}'
    if size is not None:
        if type(size) is not int:
            return None
        text += f',"size":{size}'
    if chunks is not None:
        if type(chunks) is not list:
            return None
        parts = []
        for c in chunks:
            if type(c) is not list or len(c) != 2 or type(c[0]) is not str or type(c[1]) is not int:
                return None
            parts.append(f"[{_escape(c[0])},{c[1]}]")
        text += ',"chunks":[' + ",".join(parts) + "]"
    return text + "}"


class BadTreeEntry(FormatError):
    """A file-list entry whose fields do not have the documented types and ranges (docs/format.md)."""


def _text_bytes(entry: dict, name: str) -> bytes | None:
    v = entry.get(name)
    if v is not None:
        return v.encode("utf-8", "surrogateescape")
    b = entry.get(name + "_b64")
    return base64.b64decode(b, validate=True) if b is not None else None


def validate_entry(entry: object) -> Node:
    """Check an entry read from a repository: every field's type and range, and a relative, clean path.

    Whatever a hostile file list holds, what passes here can be used without
    further checks (no ``int()`` of a list, no 2**70 reaching a system call).
    """
    if not isinstance(entry, dict):
        raise BadTreeEntry("tree entry is not an object")
    try:
        p = _text_bytes(entry, "path")
        if p is None:
            raise KeyError("path")
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise BadTreeEntry("tree entry has a bad path") from e
    if (not p or len(p) > MAX_PATH or b"\0" in p or not _clean_path(p)):
        raise FormatError(f"tree entry has an unsafe path {p[:200]!r}")
    g = entry.get
    if type(g("deleted", False)) is not bool or type(g("damaged", False)) is not bool:  # (_FLAG_FIELDS)
        bad = next(f for f in _FLAG_FIELDS if type(g(f, False)) is not bool)
        raise BadTreeEntry(f"tree entry {p[:200]!r} has a bad {bad} flag")
    # (issuperset: no set built per entry when, as almost always, every field is known)
    extra = None if _KNOWN_KEYS.issuperset(entry) else {k: v for k, v in entry.items() if k not in _KNOWN_KEYS}
    if g("deleted"):
        return Node(p, deleted=True, extra={k: v for k, v in entry.items() if k not in ("path", "path_b64", "deleted")}
                    or None)
    kind = g("type")
    if not isinstance(kind, str) or kind not in TYPES:
        raise BadTreeEntry(f"tree entry {p[:200]!r} has an unknown type")
    for f, v in entry.items():  # one pass over the fields present (a million entries: no lookups of absent ones)
        if v is None:
            continue
        rng = _INT_RANGES.get(f)
        if rng is not None:
            if type(v) is not int or not rng[0] <= v <= rng[1]:  # JSON ints only: never bool, never float
                raise BadTreeEntry(f"tree entry {p[:200]!r} has a bad {f}")
        elif f in _STR_FIELDS and (type(v) is not str or len(v) > MAX_NAME_FIELD * 4):
            raise BadTreeEntry(f"tree entry {p[:200]!r} has a bad {f}")
    target = None
    if "target" in entry or "target_b64" in entry:  # symlinks only
        try:
            target = _text_bytes(entry, "target")
        except (ValueError, TypeError, AttributeError) as e:
            raise BadTreeEntry(f"tree entry {p[:200]!r} has a bad target") from e
    chunks = g("chunks")
    if chunks is not None:
        if not isinstance(chunks, list):
            raise FormatError(f"tree entry {p[:200]!r} has a bad chunk list")
        for c in chunks:
            if (type(c) is not list or len(c) != 2 or type(c[1]) is not int or not 0 <= c[1] <= _MAX_CHUNK
                    or not is_hex_id(c[0])):
                raise FormatError(f"tree entry {p[:200]!r} has a bad chunk list")
    return Node(p, *map(g, _PLAIN_FIELDS), target, extra)


_MAX_CHUNK = 256 << 20


def _clean_path(p: bytes) -> bool:
    """No empty, ``.`` or ``..`` component and no leading slash: what splitting the path and
    looking at each component tells, by substring tests in C (one path per entry read)."""
    return not (p[0] == 0x2F or p[-1] == 0x2F or b"//" in p or p == b"." or p == b".."
                or p.startswith((b"./", b"../")) or p.endswith((b"/.", b"/..")) or b"/./" in p or b"/../" in p)


def is_hex_id(v: object) -> bool:
    """A blob id as trees and snapshots store it: 64 hex digits."""
    if not isinstance(v, str) or len(v) != 64:
        return False
    try:
        bytes.fromhex(v)
    except ValueError:
        return False
    return True


class TreeWriter:
    """Collects entries in order and stores them as tree blobs."""

    def __init__(self, save_blob: Callable[[memoryview], str]):
        self._save = save_blob
        self._buf = bytearray()
        self.blob_ids: list[str] = []
        self.count = 0
        self._last_key: bytes | None = None

    def add(self, node: Node) -> None:
        key = sort_key(node.path)
        if self._last_key is not None and key <= self._last_key:
            raise ValueError(f"tree entries out of order at {node.path!r}")
        self._last_key = key
        self._buf += encode_entry(node)
        self.count += 1
        if len(self._buf) >= 4 * TREE_PARAMS.max_size:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        bounds = chunk_boundaries(self._buf, TREE_PARAMS)
        keep_from = len(self._buf)
        if not final and bounds:
            keep_from = bounds.pop()[0]
        mv = memoryview(self._buf)
        for off, length in bounds:
            self.blob_ids.append(self._save(mv[off : off + length]))
        mv.release()
        del self._buf[:keep_from]

    def finish(self) -> list[str]:
        if self._buf:
            self._flush(final=True)
        return self.blob_ids


def iter_tree(blob_ids: Iterable[str], load_blob: Callable[[str], bytes]) -> Iterator[Node]:
    """Entries of a stored tree, validated and checked to be in order."""
    pending = b""
    last: bytes | None = None
    for bid in blob_ids:
        data = load_blob(bid)
        buf = pending + data if pending else data
        end = buf.rfind(b"\n")
        if end < 0:
            pending = buf
            if len(pending) > MAX_LINE:
                raise FormatError("tree entry longer than the allowed maximum")
            continue
        pending = buf[end + 1 :]
        for line in buf[: end + 1].splitlines():
            entry = decode_entry(line)
            key = sort_key(entry.path)
            if last is not None and key <= last:
                raise FormatError("tree entries are not in order")
            last = key
            yield entry
    if pending.strip():
        raise FormatError("tree stream ends in the middle of an entry")


def decode_entry(line: bytes) -> Node:
    """One line of the tree stream, validated (``validate_entry``); the reverse of ``encode_entry``."""
    try:
        return validate_entry(json.loads(line.decode("utf-8", "surrogateescape")))
    except (ValueError, RecursionError) as e:
        raise FormatError(f"tree entry is not valid JSON: {e}") from e


def merge_chain(streams: list[Iterator[Node]]) -> Iterator[Node]:
    """Overlay sorted streams, oldest first; the newest entry for a path wins, deletions remove."""
    if len(streams) == 1:
        for e in streams[0]:
            if not e.deleted:
                yield e
        return

    def keyed(level: int, it: Iterator[Node]) -> Iterator[tuple[bytes, int, Node]]:
        for e in it:
            yield sort_key(e.path), -level, e

    merged = heapq.merge(*(keyed(i, s) for i, s in enumerate(streams)), key=lambda t: (t[0], t[1]))
    current: bytes | None = None
    for key, _lvl, entry in merged:
        if key == current:
            continue
        current = key
        if not entry.deleted:
            yield entry


def is_under(path: bytes, prefixes: list[bytes]) -> bool:
    """True when ``path`` is one of ``prefixes`` or inside one."""
    for p in prefixes:
        if path == p or path.startswith(p + b"/"):
            return True
    return False
