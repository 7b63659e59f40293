"""The ``golden`` fixture: one unpacked copy of each golden repository (tests/support/golden.py)."""

from __future__ import annotations

import json
import tarfile

import pytest

from tests.support.golden import CASES, REPOS, Golden
from tests.support.golden import secret_file as _secret


@pytest.fixture(params=CASES, ids=[f"{v}-{n}" for v, n in CASES])
def golden(request, cli, tmp_path) -> Golden:
    version, name = request.param
    base = REPOS / version
    spec = json.loads((base / "manifest.json").read_text())["repositories"][name]
    with tarfile.open(base / spec["archive"]) as tar:  # unpacks to tmp_path/repo, where ``cli`` points
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp_path, filter="data")
        else:  # pragma: no cover - Python without extraction filters; the archive is ours
            tar.extractall(tmp_path)
    assert (cli.repo_path / "config").is_file()
    creds = spec["credentials"]
    if "password" in creds:
        owner_env = {"HAEEDGE_PASSWORD_FILE": str(_secret(tmp_path / "golden.pw", creds["password"]))}
    else:
        identity = tmp_path / "owner-secret.asc"
        identity.write_bytes((base / creds["identity_file"]).read_bytes())
        owner_env = {"HAEEDGE_IDENTITY_FILE": str(identity),
                     "HAEEDGE_PASSWORD_FILE": str(_secret(tmp_path / "owner.pass", creds["identity_passphrase"]))}
    writer_envs = {host: {"HAEEDGE_PASSWORD_FILE": str(_secret(tmp_path / f"writer-{host}.pw", pw))}
                   for host, pw in creds.get("writers", {}).items()}
    if "password" not in creds:  # format v1 certificate repositories wait for the owner's approval (issue 11)
        cli("trust", "approve", env=owner_env).ok()
    return Golden(spec, cli.repo_path, owner_env, writer_envs, cli)
