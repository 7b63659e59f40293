"""Thin wrappers around the real OpenPGP tools the interop tests drive.

Why: the promise is that a repository opens with standard tools in a disaster,
so these tests run GnuPG and Sequoia (``sqop``, ``pysequoia``) themselves.
A missing tool is a test failure, never a skip: CI installs them.
Passphrases reach the tools through files, never through argv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

TIMEOUT = 180


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed; the interop tests need it (apt-get install gnupg sqop)")
    return path


class ToolError(AssertionError):
    pass


def _run(cmd: list[str], input: bytes | None, check: bool, env: dict[str, str] | None = None):
    proc = subprocess.run(cmd, input=input, capture_output=True, timeout=TIMEOUT, env=env)
    if check and proc.returncode != 0:
        raise ToolError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    return proc


class Workdir:
    """Files for one tool session; passphrase files are mode 0600."""

    def __init__(self, path: Path):
        self.path = path
        self.path.mkdir(parents=True, exist_ok=True)
        self._n = 0

    def file(self, data: bytes | str, name: str | None = None) -> str:
        self._n += 1
        p = self.path / (name or f"f{self._n}")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        return str(p)


class GPG:
    """GnuPG 2.2 with a throwaway home (short path: the agent socket lives there)."""

    def __init__(self, work: Workdir):
        self.exe = require("gpg")
        self.home = tempfile.mkdtemp(prefix="hgpg", dir="/tmp")
        self.work = work

    def run(self, *args: str, input: bytes | None = None, passphrase: str | None = None, check: bool = True):
        cmd = [self.exe, "--homedir", self.home, "--batch", "--yes", "--no-tty", "--pinentry-mode", "loopback"]
        cmd += ["--trust-model", "always"]
        if passphrase is not None:
            cmd += ["--passphrase-file", self.work.file(passphrase)]
        return _run(cmd + list(args), input, check)

    def fingerprints(self, uid: str) -> list[str]:
        out = self.run("--with-colons", "--list-keys", uid).stdout.decode()
        return [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")]

    def gen_key(self, uid: str, kind: str, passphrase: str = "") -> str:
        """A primary signing key plus one encryption subkey; returns the primary fingerprint."""
        sign, encr = {"cv25519": ("ed25519", "cv25519"), "rsa3072": ("rsa3072", "rsa3072")}.get(kind, (kind, kind))
        self.run("--quick-gen-key", uid, sign, "cert,sign", "never", passphrase=passphrase)
        fpr = self.fingerprints(uid)[0]
        self.run("--quick-add-key", fpr, encr, "encr", "never", passphrase=passphrase)
        return fpr

    def export(self, fpr: str) -> bytes:
        return self.run("--export", fpr).stdout

    def export_secret(self, fpr: str, passphrase: str = "") -> bytes:
        return self.run("--export-secret-keys", fpr, passphrase=passphrase).stdout

    def import_(self, data: bytes, passphrase: str | None = None) -> None:
        self.run("--import", input=data, passphrase=passphrase)

    def decrypt(self, message: bytes, passphrase: str | None = None, check: bool = True):
        return self.run("--decrypt", input=message, passphrase=passphrase, check=check)

    def close(self) -> None:
        gpgconf = shutil.which("gpgconf")
        if gpgconf:
            subprocess.run([gpgconf, "--homedir", self.home, "--kill", "all"], capture_output=True, timeout=60)
        shutil.rmtree(self.home, ignore_errors=True)


class Sqop:
    """Sequoia's Stateless OpenPGP CLI; passwords are files (SOP "indirect" arguments)."""

    def __init__(self, work: Workdir):
        self.exe = require("sqop")
        self.work = work

    def run(self, *args: str, input: bytes | None = None, check: bool = True):
        return _run([self.exe, *args], input, check)

    def generate_key(self, uid: str, passphrase: str | None = None) -> bytes:
        args = ["generate-key", "--no-armor"]
        if passphrase is not None:
            args += ["--with-key-password", self.work.file(passphrase)]
        return self.run(*args, uid).stdout

    def extract_cert(self, key: bytes) -> bytes:
        return self.run("extract-cert", "--no-armor", input=key).stdout

    def decrypt(
        self,
        message: bytes,
        key: bytes | None = None,
        password: str | None = None,
        key_password: str | None = None,
        check: bool = True,
    ):
        args = ["decrypt"]
        if password is not None:
            args += ["--with-password", self.work.file(password)]
        if key_password is not None:
            args += ["--with-key-password", self.work.file(key_password)]
        if key is not None:
            args += ["--", self.work.file(key)]
        return self.run(*args, input=message, check=check)

    def encrypt(self, data: bytes, cert: bytes | None = None, password: str | None = None) -> bytes:
        args = ["encrypt", "--no-armor"]
        if password is not None:
            args += ["--with-password", self.work.file(password)]
        if cert is not None:
            args += ["--", self.work.file(cert)]
        return self.run(*args, input=data).stdout

    def sign(self, data: bytes, key: bytes) -> bytes:
        return self.run("sign", "--no-armor", "--", self.work.file(key), input=data).stdout

    def verify(self, data: bytes, signature: bytes, cert: bytes, check: bool = True):
        return self.run("verify", "--", self.work.file(signature), self.work.file(cert), input=data, check=check)


@dataclass
class KeyPair:
    """A key made by a real tool: its certificate, its secret export and that export's passphrase."""

    name: str
    cert: bytes
    secret: bytes
    passphrase: str | None
    fingerprint: str


GPG_KINDS = {
    "gpg-cv25519": ("cv25519", "gpg cv25519 passphrase"),
    "gpg-cv25519-nopass": ("cv25519", ""),
    "gpg-rsa3072": ("rsa3072", "gpg rsa passphrase"),
    "gpg-nistp256": ("nistp256", "gpg p256 passphrase"),
}
ENCRYPTION_KEYS = [*GPG_KINDS, "sqop-cv25519", "sqop-cv25519-pass", "pysequoia-rsa3k"]
