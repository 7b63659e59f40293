"""Shared fixtures; the code behind them lives in ``tests/support/``, one module per concern.

- ``cli`` (tests/support/cli.py) runs the real ``haeedge`` CLI: in this process by default, in a
  child process where a test is about processes; ``Result(code, stdout, stderr)``.
- ``repo`` is a repository made by ``haeedge init``; ``fast_repo`` is the same thing made through
  the library with a cheap S2K (tests/support/repos.py).
- ``trees`` (session) scans, compares and builds directory trees (tests/support/trees.py).
- ``gpg`` and ``owner`` (module): a throwaway GnuPG and an owner key made by it (tests/support/keys.py).
- ``sshd``, ``s3``, ``rclone_s3`` (session): real servers on 127.0.0.1 (tests/support/servers.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import Cli
from tests.support.keys import Gpg, OwnerKey, default_owner, gpg_home
from tests.support.repos import PRUNE_GRACE, RepoHandle, init_library_repo
from tests.support.servers import start_rclone_s3, start_s3, start_sshd
from tests.support.trees import TreeTools


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("HAEEDGE_PRUNE_GRACE", PRUNE_GRACE)


# ---------------------------------------------------------------------- the CLI and repositories


@pytest.fixture(autouse=True)
def trust_memory(tmp_path: Path, monkeypatch) -> Path:
    """Library calls share the CLI's trust memory file of this test, never the real ~/.config."""
    path = tmp_path / "trusted_repositories.json"
    monkeypatch.setenv("HAEEDGE_TRUST_FILE", str(path))
    monkeypatch.setenv("HAEEDGE_CACHE_DIR", str(tmp_path / "haeedge-cache"))  # nor the real ~/.cache
    return path


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture
def repo(cli: Cli) -> RepoHandle:
    """A repository created by ``haeedge init`` (the strong, default S2K)."""
    cli("init").ok()
    return RepoHandle(cli.repo_path)


@pytest.fixture
def fast_repo(cli: Cli) -> RepoHandle:
    """A repository at the CLI's location, created by the library with a cheap S2K."""
    return init_library_repo(cli.repo_path)


@pytest.fixture(scope="session")
def trees() -> type[TreeTools]:
    return TreeTools


# ---------------------------------------------------------------------- keys


@pytest.fixture(scope="module")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gpg]:
    """gpg with a throwaway home, for one test module (tests/interop/ has its own, per session)."""
    yield from gpg_home(tmp_path_factory)


@pytest.fixture(scope="module")
def owner(gpg: Gpg, tmp_path_factory: pytest.TempPathFactory) -> OwnerKey:
    """A passphrase-protected cv25519 owner key."""
    return default_owner(gpg, tmp_path_factory)


# ---------------------------------------------------------------------- servers


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    """One OpenSSH sshd on 127.0.0.1 for the session; tests that stop a server start their own."""
    srv = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """One moto S3 server process on 127.0.0.1 for the session; tests that kill a server start their own."""
    srv = start_s3(tmp_path_factory.mktemp("s3"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def rclone_s3(tmp_path_factory: pytest.TempPathFactory):
    """One ``rclone serve s3`` on 127.0.0.1 for the session: an S3-compatible server other than moto."""
    srv = start_rclone_s3(tmp_path_factory.mktemp("rclone"))
    yield srv
    srv.stop()
