"""Fixtures for the replication suite: real sshd and moto S3 servers, and the CLI aimed at them.

Everything here runs the real ``haeedge`` CLI (the ``cli``
fixture of ``tests/conftest.py``) against servers listening on 127.0.0.1.
``Site`` names a set of locations (one, or several for a replicated
repository) and runs the CLI with ``-r`` for each, plus the environment that
reaches the servers (AWS_* for S3, the test key and known_hosts for SFTP).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.replication import Site, s3_env, sftp_env
from tests.support.servers import S3Server, SshdServer


@pytest.fixture
def make_site(cli, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., Site]:
    """``make_site("s3", "sftp", "local", tag="a", sshd=srv, s3=srv)``: a Site over those kinds of location."""
    unique = uuid.uuid4().hex[:10]

    def make(*kinds: str, tag: str = "a", sshd: SshdServer | None = None, s3: S3Server | None = None) -> Site:
        site = Site(cli, [])
        for kind in kinds:
            if kind == "local":
                site.locations.append(str(tmp_path / f"local-{tag}"))
            elif kind == "sftp":
                srv = sshd or request.getfixturevalue("sshd")
                loc = srv.url_for(str(tmp_path / f"sftp-{tag}"))
                site.locations.append(loc)
                site.options[loc] = srv.options()
                site.env.update(sftp_env(srv))
            elif kind == "s3":
                s3srv = s3 or request.getfixturevalue("s3")
                loc = s3srv.url_for(f"{unique}/{tag}")
                site.locations.append(loc)
                site.options[loc] = s3srv.options()
                site.env.update(s3_env(s3srv, tmp_path))
            else:
                raise AssertionError(kind)
        return site

    return make
