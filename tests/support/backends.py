"""Backends of every kind for the backend tests: ``BackendFactory`` opens one kind at one location."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from haeedge.backends.base import Backend
from haeedge.backends.fsspec_backend import FsspecBackend
from haeedge.backends.local import LocalBackend
from haeedge.backends.replicated import ReplicatedBackend
from haeedge.backends.s3 import S3Backend
from haeedge.backends.sftp import SFTPBackend
from tests.support.servers import S3Server, SshdServer

#: Every backend the conformance suite runs against.
BACKEND_KINDS = ["local", "memory", "s3", "rclone-s3", "sftp", "replicated"]


class BackendFactory:
    """Opens backends of one kind; the same ``tag`` means the same storage location."""

    def __init__(self, kind: str, request: pytest.FixtureRequest, tmp_path: Path):
        self.kind = kind
        self.request = request
        self.tmp_path = tmp_path
        self.unique = uuid.uuid4().hex[:12]
        self.opened: list[Backend] = []

    @property
    def _s3_fixture(self) -> str:
        return "rclone_s3" if self.kind == "rclone-s3" else "s3"

    def location(self, tag: str = "a") -> str:
        if self.kind in ("local", "replicated"):
            return str(self.tmp_path / f"repo-{tag}")
        if self.kind == "memory":
            return f"memory://haeedge-{self.unique}-{tag}"
        if self.kind in ("s3", "rclone-s3"):
            srv: S3Server = self.request.getfixturevalue(self._s3_fixture)
            return srv.url_for(f"{self.unique}/{tag}")
        if self.kind == "sftp":
            srv2: SshdServer = self.request.getfixturevalue("sshd")
            return srv2.url_for(str(self.tmp_path / f"sftp-{tag}"))
        raise AssertionError(self.kind)

    def __call__(self, tag: str = "a") -> Backend:
        b: Backend
        if self.kind == "local":
            b = LocalBackend(self.location(tag))
        elif self.kind == "memory":
            b = FsspecBackend.from_url(self.location(tag), {})
        elif self.kind in ("s3", "rclone-s3"):
            srv: S3Server = self.request.getfixturevalue(self._s3_fixture)
            b = S3Backend.from_url(self.location(tag), srv.options())
        elif self.kind == "sftp":
            srv2: SshdServer = self.request.getfixturevalue("sshd")
            b = SFTPBackend.from_url(self.location(tag), srv2.options())
        else:
            b = ReplicatedBackend([LocalBackend(str(self.tmp_path / f"rep1-{tag}")),
                                   LocalBackend(str(self.tmp_path / f"rep2-{tag}"))], "all")
        self.opened.append(b)
        return b

    def plant_temporary(self, tag: str, name: str, data: bytes) -> None:
        """Leave what an interrupted write leaves behind, the way this kind would."""
        directory, base = name.rsplit("/", 1)
        tmp_name = f"{directory}/.tmp-{base}-deadbeef"
        if self.kind in ("local", "sftp"):
            root = self.tmp_path / (f"repo-{tag}" if self.kind == "local" else f"sftp-{tag}")
            (root / directory).mkdir(parents=True, exist_ok=True)
            (root / tmp_name).write_bytes(data)
        elif self.kind == "replicated":
            for rep in ("rep1", "rep2"):
                root = self.tmp_path / f"{rep}-{tag}"
                (root / directory).mkdir(parents=True, exist_ok=True)
                (root / tmp_name).write_bytes(data)
        elif self.kind == "memory":
            b = self(tag)
            assert isinstance(b, FsspecBackend)
            b.fs.pipe_file(f"{b.root}/{tmp_name}", data)
        else:
            b = self(tag)
            assert isinstance(b, S3Backend)
            b.call("put_object", Bucket=b.bucket, Key=b.key(tmp_name), Body=data)

    def close(self) -> None:
        for b in self.opened:
            b.close()
        if self.kind == "memory":
            import fsspec

            fs = fsspec.filesystem("memory")
            for path in list(fs.store):
                if f"haeedge-{self.unique}" in path:
                    del fs.store[path]
            for path in list(fs.pseudo_dirs):
                if f"haeedge-{self.unique}" in path:
                    fs.pseudo_dirs.remove(path)
        if self.kind == "sftp":
            for p in self.tmp_path.glob("sftp-*"):
                shutil.rmtree(p, ignore_errors=True)
