"""Fixtures for the backend tests: real sshd and moto S3 servers, and a factory of every backend kind."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from haeedge.backends.base import Backend
from tests.support.backends import BACKEND_KINDS, BackendFactory


@pytest.fixture
def clean_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS settings from the machine running the tests leak in."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(params=BACKEND_KINDS)
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendFactory]:
    """A factory of not-yet-created backends of each kind in turn."""
    factory = BackendFactory(request.param, request, tmp_path)
    yield factory
    factory.close()


@pytest.fixture
def backend(make_backend: BackendFactory) -> Backend:
    """A freshly created, empty repository location of each kind in turn."""
    b = make_backend()
    b.create()
    return b


Factory = Callable[..., Backend]
