"""Index objects are written in parts under the readers' size cap (issue 11, finding 6)."""

from __future__ import annotations

import os

from haeedge.repo.index import IndexPack, decode_index, encode_index, split_index
from haeedge.repo.pack import BLOB_DATA, PackEntry


def _pack(n: int) -> IndexPack:
    entries = [PackEntry(BLOB_DATA, 0, os.urandom(32), i * 10, 10, 10) for i in range(n)]
    return IndexPack(os.urandom(32).hex(), n * 10 + 100, entries)


def test_parts_stay_under_the_cap_and_keep_every_pack():
    packs = [_pack(n) for n in (50, 1, 200, 30, 30, 7)]
    groups = split_index(packs, 4096)
    assert len(groups) > 1
    assert [p for g in groups for p in g] == packs
    for g in groups:
        data = encode_index(g)
        assert len(data) <= 4096 + 16 or len(g) == 1  # a single pack larger than a part stays whole
        assert decode_index(data)[0] == g


def test_small_index_is_one_part():
    packs = [_pack(3), _pack(4)]
    assert split_index(packs, 1 << 20) == [packs]
    assert split_index([], 1 << 20) == [[]]
