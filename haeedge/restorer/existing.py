"""What restore does with an entry that is already in the target (``--overwrite``).

- ``always`` (the default, as restic's): replace it.
- ``if-changed``: keep it when it already equals the snapshot's entry: for a
  file the same size and modification time, or with ``--verify`` the same
  content (read and compared chunk by chunk with the snapshot's blob ids, see
  ``verify.content_mismatch``); for a symlink the same target; for a special
  file the same kind (and device number). A kept entry gets the snapshot's
  mode, owner and times; its data is not fetched.
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

from haeedge.repo.tree import get_bytes_field
from haeedge.restorer.verify import content_mismatch

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

    def decide(self, entry: dict, st: os.stat_result | None, *, read_target: Callable[[], bytes] | None = None,
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
            return Decision.KEEP if st.st_mtime_ns >= int(entry.get("mtime_ns", 0)) else Decision.WRITE
        return Decision.UNCHANGED if self._same(entry, st, read_target, open_file, link_source) else Decision.WRITE

    def _same(self, entry: dict, st: os.stat_result, read_target, open_file, link_source) -> bool:
        kind = entry.get("type")
        if kind_of(st) != kind:
            return False
        if link_source is not None:
            return (st.st_dev, st.st_ino) == (link_source.st_dev, link_source.st_ino)
        if kind == "file":
            if st.st_size != int(entry.get("size", 0)):
                return False
            if not self.verify:
                return st.st_mtime_ns == int(entry.get("mtime_ns", 0))
            if open_file is None:
                return False
            try:
                fd = open_file()
            except OSError:
                return False
            try:
                return content_mismatch(fd, entry, self.blob_id) is None
            except OSError:
                return False
            finally:
                os.close(fd)
        if kind == "symlink":
            if read_target is None:
                return False
            try:
                return read_target() == get_bytes_field(entry, "target")
            except OSError:
                return False
        if kind in ("chardev", "blockdev"):
            return st.st_rdev == int(entry.get("rdev", -1))
        return kind in ("fifo", "socket")
