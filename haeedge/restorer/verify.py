"""Compare a file on disk with a snapshot entry by content, without the repository's data.

The entry lists its chunks as (blob id, length). The file is read in exactly
those pieces and each piece's keyed id is computed and compared: the same
check ``restore --verify`` makes after writing, and the one
``--overwrite if-changed --verify`` makes before deciding that an existing
file need not be fetched. Nothing is read from storage for it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from haeedge.errors import HaeedgeError
from haeedge.repo.repository import hex_id
from haeedge.repo.tree import Node

#: Pieces longer than this are read in parts (a hostile entry may claim any length).
_READ = 4 << 20


def content_mismatch(fd: int, entry: Node, blob_id: Callable[[bytes], bytes]) -> str | None:
    """Why the open regular file ``fd`` does not hold ``entry``'s content, or ``None`` when it does."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    size = entry.size or 0
    if st.st_size != size:
        return f"size {st.st_size} instead of {size}"
    offset = 0
    for chunk_id, length in entry.chunks or []:
        try:
            want = hex_id(chunk_id)
        except HaeedgeError:
            return f"bad chunk id in the snapshot at offset {offset}"
        length = int(length)
        data = _read_exactly(fd, offset, length)
        if len(data) != length:
            return f"ends at {offset + len(data)}, before the end of its chunk at {offset + length}"
        if blob_id(data) != want:
            return f"content differs in the chunk at offset {offset}"
        offset += length
    if offset != size:
        return "the snapshot's chunk lengths do not add up to its size"
    if os.pread(fd, 1, offset):
        return "longer than recorded"
    return None


def matching_chunks(fd: int, entry: Node, blob_id: Callable[[bytes], bytes]) -> list[bool] | None:
    """For each of ``entry``'s chunks, whether the open file ``fd`` holds it intact at its offset.

    ``None`` when the file cannot hold the entry at all (not a regular file, another size,
    chunk lengths that do not add up to the entry's size).
    """
    st = os.fstat(fd)
    size = entry.size or 0
    chunks = entry.chunks or []
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        return None
    try:
        wanted = [(hex_id(chunk_id), int(length)) for chunk_id, length in chunks]
    except (HaeedgeError, TypeError, ValueError):
        return None
    if sum(length for _, length in wanted) != size:
        return None
    out = []
    offset = 0
    for want, length in wanted:
        data = _read_exactly(fd, offset, length)
        out.append(len(data) == length and blob_id(data) == want)
        offset += length
    return out


def _read_exactly(fd: int, offset: int, length: int) -> bytes:
    parts = []
    done = 0
    while done < length:
        b = os.pread(fd, min(_READ, length - done), offset + done)
        if not b:
            break
        parts.append(b)
        done += len(b)
    return b"".join(parts)
