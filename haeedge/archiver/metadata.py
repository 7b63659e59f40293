"""Turning ``lstat`` results into tree entries (and back, for comparisons)."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from functools import lru_cache

from haeedge.fs import readlink_long
from haeedge.repo.tree import Node

TYPE_OF_FORMAT = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
}


@lru_cache(maxsize=4096)
def user_name(uid: int) -> str:
    """The account name of ``uid`` ("" when it has none: containers, removed users)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@lru_cache(maxsize=4096)
def group_name(gid: int) -> str:
    """The group name of ``gid`` ("" when it has none)."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def entry_from_stat(relpath: bytes, st: os.stat_result, abspath: bytes) -> Node:
    """Everything but file contents. Raises OSError when a symlink cannot be read."""
    kind = TYPE_OF_FORMAT.get(stat.S_IFMT(st.st_mode))
    if kind is None:
        raise OSError(0, "unsupported file type")
    e = Node(relpath, kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, user_name(st.st_uid) or None,
             group_name(st.st_gid) or None, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if kind == "file":
        e.size = st.st_size
        if st.st_nlink > 1:
            e.nlink = st.st_nlink
            e.hardlink = f"{st.st_dev}:{st.st_ino}"
    elif kind == "symlink":
        e.target = readlink_long(abspath)
    elif kind in ("chardev", "blockdev"):
        e.rdev = st.st_rdev
    return e


def unchanged_file(parent: Node, st: os.stat_result) -> bool:
    """The incremental rule: same size, mtime, ctime and inode means same content."""
    return (
        parent.type == "file"
        and parent.size == st.st_size
        and parent.mtime_ns == st.st_mtime_ns
        and parent.ctime_ns == st.st_ctime_ns
        and parent.inode == st.st_ino
        and parent.chunks is not None
        and not parent.damaged
    )
