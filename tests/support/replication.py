"""Helpers for the replication suite: a repository's locations and the CLI aimed at them.

``Site`` names a set of locations (one, or several for a replicated
repository) and runs the CLI (the ``cli`` fixture) with ``-r`` for each,
plus the environment that reaches the servers (AWS_* for S3, the test key and
known_hosts for SFTP).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from haeedge.backends import open_backend
from haeedge.backends.base import Backend
from haeedge.backends.replicated import ReplicatedBackend
from haeedge.chunking import ChunkerParams
from haeedge.repo.config import RepositoryConfig
from haeedge.repo.repository import Credentials, Repository

if TYPE_CHECKING:
    from tests.support.servers import S3Server, SshdServer

MiB = 1 << 20
PASSWORD = b"correct horse battery staple"
CHEAP_S2K = 0x10


def sftp_env(srv: SshdServer) -> dict[str, str]:
    """What the CLI needs to log in to ``srv`` with the test key and check its host key."""
    return {"HAEEDGE_SFTP_KEY_FILE": srv.key_file, "HAEEDGE_SFTP_KNOWN_HOSTS": srv.known_hosts,
            "SSH_AUTH_SOCK": ""}


def s3_env(srv: S3Server, tmp: Path) -> dict[str, str]:
    """AWS_* variables for ``srv`` and nothing from the machine's own AWS setup."""
    return {**srv.env, "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
            "AWS_CONFIG_FILE": str(tmp / "no-aws-config"), "AWS_EC2_METADATA_DISABLED": "true"}


@dataclass
class Site:
    """A repository's locations and the CLI aimed at them (``-r`` once per location)."""

    cli: object  # tests.conftest.Cli
    locations: list[str]
    env: dict[str, str] = field(default_factory=dict)
    #: Library options per location (for init with custom parameters, and for direct inspection).
    options: dict[str, dict] = field(default_factory=dict)

    def flags(self) -> list[str]:
        return [x for loc in self.locations for x in ("-r", loc)]

    def __call__(self, *args: str | os.PathLike, env: dict | None = None, timeout: float = 300):
        return self.cli(*self.flags(), *args, env={**self.env, **(env or {})}, timeout=timeout)

    def popen(self, *args: str | os.PathLike, env: dict | None = None, **kw):
        return self.cli.popen(*self.flags(), *args, env={**self.env, **(env or {})}, **kw)

    def backup(self, *args: str | os.PathLike, expect: int = 0, env: dict | None = None) -> dict:
        r = self("--json", "backup", *args, env=env)
        assert r.code == expect, r.describe()
        return r.json()

    def backend(self, location: str | None = None) -> Backend:
        """A library backend for one location, or for all of them (replicated)."""
        locs = [location] if location else self.locations
        backends = [open_backend(loc, self.options.get(loc)) for loc in locs]
        return backends[0] if len(backends) == 1 else ReplicatedBackend(backends)

    def init_library(self, *, pack_size: int | None = None, chunker: ChunkerParams | None = None) -> None:
        """Create the repository through the library: custom pack size, cheap key-slot S2K."""
        config = RepositoryConfig(repository_id=os.urandom(32).hex(), chunker=chunker or ChunkerParams())
        if pack_size is not None:
            config.pack_size = pack_size
        backend = self.backend()
        Repository.init(backend, PASSWORD, config=config, s2k_count_byte=CHEAP_S2K).close()

    def open(self, location: str | None = None) -> Repository:
        repo = Repository.open(self.backend(location), Credentials(passphrases=[PASSWORD]))
        repo.load_index()
        return repo


def make_files(root: Path, sizes: list[int], seed: int = 1) -> Path:
    """Random (incompressible) files of the given sizes under ``root``, plus a few small ones and a symlink."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    for i, size in enumerate(sizes):
        sub = root / f"d{i % 4}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i:03d}.bin").write_bytes(rng.randbytes(size))
    (root / "notes.txt").write_text("".join(f"line {i}\n" for i in range(2000)))
    (root / "empty").write_bytes(b"")
    (root / "emptydir").mkdir()
    os.symlink("notes.txt", root / "link")
    os.chmod(root / "notes.txt", 0o640)
    return root


def wait_for(predicate: Callable[[], bool], timeout: float, proc=None, what: str = "condition") -> None:
    """Poll until ``predicate()``; fail if ``proc`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended (code {proc.returncode}) before {what}:\n{err.decode()[-3000:]}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def kill(proc) -> None:
    """SIGKILL a process we started, and reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")]
