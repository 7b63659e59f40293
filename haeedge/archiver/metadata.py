"""Turning ``lstat`` results into tree entries (and back, for comparisons)."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from functools import lru_cache

from haeedge.fs import readlink_long
from haeedge.repo.tree import set_bytes_field, set_path

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


def owner_fields(uid: int, gid: int) -> dict:
    """``uid`` and ``gid`` of an entry, with ``user`` and ``group`` when they have names."""
    out: dict = {"uid": uid, "gid": gid}
    if u := user_name(uid):
        out["user"] = u
    if g := group_name(gid):
        out["group"] = g
    return out


def entry_from_stat(relpath: bytes, st: os.stat_result, abspath: bytes) -> dict:
    """Everything but file contents. Raises OSError when a symlink cannot be read."""
    kind = TYPE_OF_FORMAT.get(stat.S_IFMT(st.st_mode))
    if kind is None:
        raise OSError(0, "unsupported file type")
    e: dict = {}
    set_path(e, relpath)
    e["type"] = kind
    e["mode"] = stat.S_IMODE(st.st_mode)
    e.update(owner_fields(st.st_uid, st.st_gid))
    e["mtime_ns"] = st.st_mtime_ns
    e["ctime_ns"] = st.st_ctime_ns
    e["inode"] = st.st_ino
    if kind == "file":
        e["size"] = st.st_size
        if st.st_nlink > 1:
            e["nlink"] = st.st_nlink
            e["hardlink"] = f"{st.st_dev}:{st.st_ino}"
    elif kind == "symlink":
        set_bytes_field(e, "target", readlink_long(abspath))
    elif kind in ("chardev", "blockdev"):
        e["rdev"] = st.st_rdev
    return e


def unchanged_file(parent: dict, st: os.stat_result) -> bool:
    """The incremental rule: same size, mtime, ctime and inode means same content."""
    return (
        parent.get("type") == "file"
        and parent.get("size") == st.st_size
        and parent.get("mtime_ns") == st.st_mtime_ns
        and parent.get("ctime_ns") == st.st_ctime_ns
        and parent.get("inode") == st.st_ino
        and "chunks" in parent
        and not parent.get("damaged")
    )
