"""Object names, blob ids and what an object of each namespace may weigh: what every reader of
repository objects checks first, below the repository and the modules it uses."""

from __future__ import annotations

import os

from haeedge.errors import FormatError, UsageError
from haeedge.repo.keys import MAX_KEY_OBJECT_BYTES
from haeedge.sizes import parse_size

#: Largest stored object per namespace (hostile input: a reader refuses a bigger one from the
#: listing's size before downloading it, and from its length before decrypting it). What haeedge
#: writes stays far below: config and locks are a few hundred bytes, key slots and records a few
#: KiB, a snapshot 67 bytes per tree blob, and an index object is written in parts of at most
#: INDEX_PART_BYTES (2.9 million blobs each).
MAX_STORED_BYTES = {"config": 2 << 20, "keys": MAX_KEY_OBJECT_BYTES, "locks": 1 << 20, "snapshots": 16 << 20,
                    "index": 192 << 20}
#: Written index parts stay well below the index cap (``MAX_STORED_BYTES``), which is set so that a
#: hostile object at the cap, downloaded whole, still leaves a command within its 256 MiB budget.
INDEX_PART_BYTES = 128 << 20
#: haeedge 0.1.0's prune wrote the whole index as one object: past about 5.8 million blobs that
#: object is over the cap. This raises the index cap for such a repository (``haeedge repair index``
#: rewrites its index in parts without it).
MAX_INDEX_ENV = "HAEEDGE_MAX_INDEX_OBJECT"


def object_id_of(name: str) -> str:
    """``index/ab12...`` -> ``ab12...``."""
    return name.rsplit("/", 1)[-1]


def hex_id(h: str) -> bytes:
    """A blob id as stored in trees and snapshots (64 hex digits) to bytes; anything else is a FormatError."""
    try:
        b = bytes.fromhex(h)
    except ValueError:
        raise FormatError(f"bad blob id {h[:20]!r}") from None
    if len(b) != 32:
        raise FormatError(f"bad blob id {h[:20]!r}")
    return b

def stored_cap(namespace: str) -> int | None:
    """The largest object ``namespace`` may hold (``MAX_STORED_BYTES``; index: raised by $HAEEDGE_MAX_INDEX_OBJECT)."""
    cap = MAX_STORED_BYTES.get(namespace)
    if namespace == "index" and os.environ.get(MAX_INDEX_ENV):
        try:
            cap = max(cap or 0, parse_size(os.environ[MAX_INDEX_ENV]))
        except ValueError as e:
            raise UsageError(f"${MAX_INDEX_ENV}: {e}") from None
    return cap
