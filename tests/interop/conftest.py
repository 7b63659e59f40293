"""Session fixtures: one GnuPG home, sqop, and keys made by each real tool.

Keys are generated here by the tools themselves (no stored fixtures), once per
session because RSA-3072 generation takes seconds.
"""

from __future__ import annotations

from collections.abc import Iterator

import pysequoia
import pytest

from tests.support.openpgp import GPG, GPG_KINDS, KeyPair, Sqop, Workdir


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/interop/" in str(item.fspath):
            item.add_marker(pytest.mark.interop)


@pytest.fixture(scope="session")
def work(tmp_path_factory: pytest.TempPathFactory) -> Workdir:
    return Workdir(tmp_path_factory.mktemp("interop"))


@pytest.fixture(scope="session")
def gpg(work: Workdir) -> Iterator[GPG]:
    g = GPG(work)
    try:
        g.run("--version")
        yield g
    finally:
        g.close()


@pytest.fixture(scope="session")
def sqop(work: Workdir) -> Sqop:
    s = Sqop(work)
    s.run("version")
    return s


@pytest.fixture(scope="session")
def keys(gpg: GPG, sqop: Sqop) -> dict[str, KeyPair]:
    """Every recipient key, with its secret also imported into the session's GnuPG home."""
    out: dict[str, KeyPair] = {}
    for name, (kind, pw) in GPG_KINDS.items():
        fpr = gpg.gen_key(f"{name} <{name}@example.org>", kind, pw)
        out[name] = KeyPair(name, gpg.export(fpr), gpg.export_secret(fpr, pw), pw or None, fpr)
    for name, pw in (("sqop-cv25519", None), ("sqop-cv25519-pass", "sqop key passphrase")):
        secret = sqop.generate_key(f"{name} <{name}@example.org>", passphrase=pw)
        cert = sqop.extract_cert(secret)
        gpg.import_(secret, passphrase=pw or "")
        fpr = pysequoia.Cert.from_bytes(cert).fingerprint.upper()
        out[name] = KeyPair(name, cert, secret, pw, fpr)
    tsk = pysequoia.Tsk.generate(
        "pysequoia-rsa3k <pysequoia-rsa3k@example.org>",
        profile=pysequoia.Profile.RFC4880,
        cipher_suite=pysequoia.CipherSuite.RSA3k,
    )
    secret = bytes(tsk)
    gpg.import_(secret, passphrase="")
    out["pysequoia-rsa3k"] = KeyPair(
        "pysequoia-rsa3k", bytes(tsk.extract_certificate()), secret, None, tsk.extract_certificate().fingerprint.upper()
    )
    return out
