"""Tree blobs read once per command: consecutive fulls and chains share most of theirs."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from haeedge.repo.pack import BLOB_TREE
from haeedge.repo.repository import Repository, hex_id
from haeedge.repo.snapshot import Snapshot
from haeedge.repo.tree import Node, iter_tree, merge_chain


class TreeBlobCache:
    """Tree blobs shared by many snapshots (consecutive fulls, chains) are read once per command."""

    def __init__(self, repo: Repository, max_bytes: int = 256 << 20):
        self.repo = repo
        self.max_bytes = max_bytes
        self._blobs: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0

    def load(self, blob_id: str) -> bytes:
        data = self._blobs.get(blob_id)
        if data is not None:
            self._blobs.move_to_end(blob_id)
            return data
        data = self.repo.load_blob(hex_id(blob_id), BLOB_TREE)
        self._blobs[blob_id] = data
        self._size += len(data)
        while self._size > self.max_bytes and len(self._blobs) > 1:
            _, old = self._blobs.popitem(last=False)
            self._size -= len(old)
        return data

    def entries(self, snap: Snapshot) -> Iterator[Node]:
        """The effective file list of ``snap`` (as ``Repository.iter_entries``), through the cache."""
        chain = self.repo.chain_of(snap)
        return merge_chain([iter_tree(s.tree, self.load) for s in chain])
