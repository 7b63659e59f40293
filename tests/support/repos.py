"""Repositories for tests: the test password, cheap key-slot S2K, small chunks, and a handle on a repository.

``init_library_repo`` makes a repository through the library with a cheap S2K, so that the many CLI
calls of a test do not each pay for the strong key-slot S2K of ``haeedge init``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from haeedge.backends.local import LocalBackend
from haeedge.chunking import ChunkerParams
from haeedge.repo.config import RepositoryConfig
from haeedge.repo.repository import Credentials, Repository
from haeedge.repo.trust import remember_created

PASSWORD = b"correct horse battery staple"
CHEAP_S2K = 0x10  # 2048 bytes hashed: enough to be real, cheap enough for hundreds of opens
#: Small chunks so that small test trees still exercise multi-chunk files.
SMALL_CHUNKS = ChunkerParams(4 * 1024, 16 * 1024, 64 * 1024)
#: Tests prune in one run (no grace period) unless they test the two phases: most tests run one
#: command at a time, and expect ``prune`` to free space at once (docs/lifecycle.md).
PRUNE_GRACE = "0s"


@dataclass
class RepoHandle:
    path: Path
    password: bytes = PASSWORD

    def backend(self) -> LocalBackend:
        return LocalBackend(str(self.path))

    @contextlib.contextmanager
    def open(self, load_index: bool = True) -> Iterator[Repository]:
        repo = Repository.open(self.backend(), Credentials(passphrases=[self.password]))
        try:
            if load_index:
                repo.load_index()
            yield repo
        finally:
            repo.close()

    def size(self, namespace: str | None = None) -> int:
        base = self.path / namespace if namespace else self.path
        return sum(p.stat().st_size for p in base.rglob("*") if p.is_file() and not p.name.startswith(".tmp-"))

    def objects(self, namespace: str) -> list[Path]:
        return sorted(p for p in (self.path / namespace).rglob("*") if p.is_file() and not p.name.startswith(".tmp-"))


def init_library_repo(path: Path, chunker: ChunkerParams | None = None, compression: int = 3,
                      pack_size: int | None = None) -> RepoHandle:
    config = RepositoryConfig(repository_id=os.urandom(32).hex(), chunker=chunker or ChunkerParams(),
                              compression_level=compression)
    if pack_size is not None:
        config.pack_size = pack_size
    repo = Repository.init(LocalBackend(str(path)), PASSWORD, config=config, s2k_count_byte=CHEAP_S2K)
    remember_created(repo)  # as 'haeedge init' does: this test's client made it (HAEEDGE_TRUST_FILE)
    repo.close()
    return RepoHandle(path)
