"""What restore does with an entry that is already in the target (``--overwrite``).

- ``always`` (the default, as restic's): replace it.
- ``if-changed``: keep it when it already equals the snapshot's entry: for a
  file the same size and modification time (without reading it), or else the
  same content (read and compared chunk by chunk with the snapshot's blob ids,
  see ``verify.matching_chunks``; with ``--verify`` always so); for a symlink
  the same target; for a special file the same kind (and device number). A
  kept entry gets the snapshot's mode, owner and times; its data is not
  fetched. A file of the right size that holds only some of its chunks intact
  (a restore killed while writing it) is completed in place: only the other
  chunks are fetched (not when it has other hardlinks, which would change too).
- ``if-newer``: keep it when its modification time is the snapshot's or later.
- ``never``: keep whatever is there.

Why size and mtime can be trusted to say "whole" after a killed restore: the
restorer sets a file's mtime last, after all of its content was written (and
its mode and owner), so a file cut off mid-way keeps the time of its last
write and looks changed. Writing to a temporary name and renaming would also
do, but a killed run would leave temporaries in the user's directory, and
sparse in-place writes would have to be redone elsewhere. A crash of the whole
machine (data not yet on disk, metadata already) is what ``--verify`` is for.

Nothing here follows a symlink: entries are looked at with ``lstat``, and a
file's content is read through a descriptor opened with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Callable

from haeedge.repo.tree import Node
from haeedge.restorer.verify import matching_chunks

OVERWRITE_MODES = ("always", "if-changed", "if-newer", "never")

_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo",
          stat.S_IFSOCK: "socket", stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev"}


class Decision(enum.Enum):
    WRITE = "write"  # absent, or to be replaced
    UNCHANGED = "unchanged"  # already equal to the snapshot's: keep the data, set the metadata
    KEEP = "keep"  # left exactly as it is (if-newer, never)


def kind_of(st: os.stat_result) -> str:
    return _KINDS.get(stat.S_IFMT(st.st_mode), "unknown")


class ExistingEntries:
    """Decides, entry by entry, between writing and keeping what is in the way."""

    def __init__(self, mode: str, verify: bool, blob_id: Callable[[bytes], bytes]):
        if mode not in OVERWRITE_MODES:
            raise ValueError(f"unknown overwrite mode {mode!r}")
        self.mode = mode
        self.verify = verify
        self.blob_id = blob_id

    @property
    def replaces_all(self) -> bool:
        """Nothing needs to be looked at: every existing entry is replaced."""
        return self.mode == "always"

    def decide(self, entry: Node, st: os.stat_result | None, *, read_target: Callable[[], bytes] | None = None,
               open_file: Callable[[], int] | None = None, link_source: os.stat_result | None = None) -> Decision:
        """``st``: ``lstat`` of what is at the entry's place (``None``: nothing).

        ``read_target`` reads an existing symlink's target; ``open_file`` opens an existing
        regular file read-only without following symlinks; ``link_source``: for the second
        and later names of a hardlink group, the ``lstat`` of the first name as restored.
        """
        if st is None or self.mode == "always":
            return Decision.WRITE
        if self.mode == "never":
            return Decision.KEEP
        if self.mode == "if-newer":
            return Decision.KEEP if st.st_mtime_ns >= (entry.mtime_ns or 0) else Decision.WRITE
        if entry.type == "file" and link_source is None:
            return self.decide_file(entry, st, open_file)[0]
        return Decision.UNCHANGED if self._same(entry, st, read_target, link_source) else Decision.WRITE

    def decide_file(self, entry: Node, st: os.stat_result | None,
                    open_file: Callable[[], int] | None) -> tuple[Decision, frozenset[int]]:
        """A file entry's decision, and with WRITE the indexes of the chunks the existing file
        already holds intact at their offsets (if-changed only): only the others need fetching."""
        if self.mode != "if-changed" or st is None:
            return self.decide(entry, st, open_file=open_file), frozenset()
        if kind_of(st) != "file" or st.st_size != (entry.size or 0):
            return Decision.WRITE, frozenset()
        if not self.verify and st.st_mtime_ns == (entry.mtime_ns or 0):
            return Decision.UNCHANGED, frozenset()
        if open_file is None:
            return Decision.WRITE, frozenset()
        try:
            fd = open_file()
        except OSError:
            return Decision.WRITE, frozenset()
        try:
            matches = matching_chunks(fd, entry, self.blob_id)
        except OSError:
            matches = None
        finally:
            os.close(fd)
        if matches is None:
            return Decision.WRITE, frozenset()
        if all(matches):
            return Decision.UNCHANGED, frozenset()
        # Written in place: another name of the same inode would change with it.
        reuse = frozenset(i for i, ok in enumerate(matches) if ok) if st.st_nlink == 1 else frozenset()
        return Decision.WRITE, reuse

    def _same(self, entry: Node, st: os.stat_result, read_target, link_source) -> bool:
        kind = entry.type
        if kind_of(st) != kind:
            return False
        if link_source is not None:
            return (st.st_dev, st.st_ino) == (link_source.st_dev, link_source.st_ino)
        if kind == "symlink":
            if read_target is None:
                return False
            try:
                return read_target() == entry.target
            except OSError:
                return False
        if kind in ("chardev", "blockdev"):
            return st.st_rdev == (entry.rdev if entry.rdev is not None else -1)
        return kind in ("fifo", "socket")


def write_at(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset``: completing a file in place, zeros are data too."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
