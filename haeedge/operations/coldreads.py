"""Before a reader touches archived packs: name them all, so that their restores run at once.

``restore``, ``dump`` and ``verify --read-data`` call these with what they are
about to read; the restores and the wait happen in the S3 location's
``ColdReadBackend`` (backends/cold.py). Where no location keeps packs in an
archive class (``cold_storage`` off) this does nothing and reads nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from haeedge.backends.base import data_name
from haeedge.backends.cold import cold_storage_in, prepare_reads
from haeedge.errors import HaeedgeError
from haeedge.repo.repository import Repository, hex_id
from haeedge.repo.tree import Node


def wanted(repo: Repository) -> bool:
    """Whether collecting the packs first is worth a walk of the file lists."""
    return cold_storage_in(repo.backend)


def prepare_packs(repo: Repository, pack_ids: Iterable[str]) -> int:
    """Restore the archived ones among ``pack_ids`` and wait for them; how many were archived."""
    return prepare_reads(repo.backend, [data_name(p) for p in pack_ids])


def prepare_entries(repo: Repository, entries: Iterable[Node]) -> int:
    """Restore the archived packs holding the file contents of ``entries`` and wait for them."""
    packs: set[str] = set()
    for entry in entries:
        for chunk in entry.chunks or ():
            try:
                loc = repo.lookup_blob(hex_id(chunk[0]))
            except (HaeedgeError, IndexError, TypeError):
                continue  # the read itself reports a bad chunk
            if loc is not None:
                packs.add(loc.pack_id)
    return prepare_packs(repo, sorted(packs))
