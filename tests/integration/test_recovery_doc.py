"""docs/recovery.md, run literally: gpg + zstd + the printed stdlib script recover files without haeedge.

The fenced blocks marked ``recovery`` (and ``recovery-key`` for a secret key)
are concatenated in document order and run by bash; the ``python recover.py``
block is saved as ``$WORK/recover.py``, as the document says. Repositories are
made by the real CLI with full and incremental snapshots; recovered bytes are
compared with the originals.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.keys import WriteOnly

DOC = Path(__file__).resolve().parents[2] / "docs" / "recovery.md"
BLOCK = re.compile(r"^```(\w+) ([\w.-]+)\n(.*?)^```$", re.M | re.S)


def doc_blocks() -> list[tuple[str, str, str]]:
    return [(lang, tag, body) for lang, tag, body in BLOCK.findall(DOC.read_text())]


def test_document_has_the_script_and_the_steps():
    blocks = doc_blocks()
    scripts = [b for lang, tag, b in blocks if lang == "python" and tag == "recover.py"]
    assert len(scripts) == 1
    assert "import haeedge" not in scripts[0] and "from haeedge" not in scripts[0]
    assert sum(1 for lang, tag, _ in blocks if lang == "sh" and tag == "recovery") >= 4
    compile(scripts[0], "recover.py", "exec")


class Procedure:
    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.n = 0

    def run(self, env: dict, *, with_key: bool = False, expect_ok: bool = True) -> subprocess.CompletedProcess:
        """One literal run of the procedure, in a fresh scratch directory and GnuPG home."""
        self.n += 1
        work = self.tmp_path / f"work{self.n}"
        work.mkdir()
        steps = []
        for lang, tag, body in doc_blocks():
            if lang == "python" and tag == "recover.py":
                (work / "recover.py").write_text(body)
            elif lang == "sh" and (tag == "recovery" or (tag == "recovery-key" and with_key)):
                steps.append(body)
        script = "set -euo pipefail\n" + "\n".join(steps)
        gnupg = Path(f"/tmp/hrg{os.getpid()}-{self.n}")  # short: the agent socket lives there
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HAEEDGE_", "GNUPG"))}
        full_env.update(WORK=str(work), GNUPGHOME=str(gnupg), PATH=os.environ["PATH"], **env)
        try:
            proc = subprocess.run(["bash", "-c", script], capture_output=True, env=full_env, timeout=600)
        finally:
            subprocess.run(["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": str(gnupg)},
                           capture_output=True, timeout=60)
            subprocess.run(["rm", "-rf", str(gnupg)], timeout=60)
        if expect_ok:
            assert proc.returncode == 0, f"procedure failed:\n{proc.stdout.decode()}\n{proc.stderr.decode()}"
        return proc


def _make_source(src: Path) -> dict[str, bytes]:
    rng = random.Random(42)
    files = {
        "text/app.log": b"".join(b"line %d: all good\n" % i for i in range(40_000)),  # compresses: zstd blobs
        "noise.bin": rng.randbytes(300_000),  # raw blobs, several chunks
        "changes.txt": b"first version\n" * 1000,
        "goes-away.txt": b"deleted in the incremental\n",
        "small": b"x",
    }
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    return files


def _ids(cli_result) -> list[str]:
    return [s["id"] for s in cli_result.json()]


@pytest.mark.slow
def test_password_repository_full_and_incremental(cli, tmp_path):
    cli("init", "--chunk-min", "4096", "--chunk-avg", "16384", "--chunk-max", "65536").ok()
    src = tmp_path / "src"
    v1 = _make_source(src)
    cli("backup", src).ok()
    changed = b"second version, longer than the first\n" * 2000
    (src / "changes.txt").write_bytes(changed)
    (src / "goes-away.txt").unlink()
    (src / "new.bin").write_bytes(random.Random(7).randbytes(100_000))
    r = cli("--json", "backup", src).ok()
    assert '"kind": "incremental"' in r.stdout
    full, incr = _ids(cli("--json", "snapshots").ok())
    base = str(src).lstrip("/")
    proc = Procedure(tmp_path)
    env = {"REPO": str(cli.repo_path), "PASSFILE": str(cli.password_file)}

    # Every file of the full snapshot, byte for byte.
    for rel, data in v1.items():
        out = tmp_path / f"full-{rel.replace('/', '_')}"
        run = proc.run({**env, "SNAPSHOT": full[:10], "FILE": f"/{base}/{rel}", "OUT": str(out)})
        assert out.read_bytes() == data, rel
        assert b"Good signature" in run.stderr, run.stderr  # the gpg --verify step

    # The incremental: the changed file's new bytes, the new file; the deleted file is gone.
    out = tmp_path / "incr-changes"
    run = proc.run({**env, "SNAPSHOT": incr, "FILE": f"/{base}/changes.txt", "OUT": str(out)})
    assert out.read_bytes() == changed
    out = tmp_path / "incr-new"
    proc.run({**env, "SNAPSHOT": incr, "FILE": f"/{base}/new.bin", "OUT": str(out)})
    assert out.read_bytes() == (src / "new.bin").read_bytes()
    out = tmp_path / "incr-unchanged"
    proc.run({**env, "SNAPSHOT": incr, "FILE": f"/{base}/noise.bin", "OUT": str(out)})
    assert out.read_bytes() == v1["noise.bin"]
    failed = proc.run({**env, "SNAPSHOT": incr, "FILE": f"/{base}/goes-away.txt", "OUT": str(tmp_path / "gone")},
                      expect_ok=False)
    assert failed.returncode != 0 and b"is not a file" in failed.stderr


def test_wrong_password_recovers_nothing(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"secret")
    cli("backup", src).ok()
    bad = tmp_path / "bad-password"
    bad.write_text("not the password\n")
    proc = Procedure(tmp_path).run({"REPO": str(cli.repo_path), "PASSFILE": str(bad), "SNAPSHOT": "0",
                                    "FILE": "/x", "OUT": str(tmp_path / "o")}, expect_ok=False)
    assert proc.returncode != 0 and b"no key slot opens" in proc.stderr


def test_tampered_snapshot_fails_gpg_verify(cli, fast_repo, tmp_path):
    """The signature step is real: gpg --verify rejects modified signed bytes."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"content")
    cli("backup", src).ok()
    (sid,) = _ids(cli("--json", "snapshots").ok())
    proc = Procedure(tmp_path)
    work_env = {"REPO": str(cli.repo_path), "PASSFILE": str(cli.password_file), "SNAPSHOT": sid,
                "FILE": f"/{str(src).lstrip('/')}/f", "OUT": str(tmp_path / "o")}
    proc.run(work_env)
    work = tmp_path / f"work{proc.n}"
    signed = work / "snapshot.json"
    assert signed.exists()
    signed.write_bytes(signed.read_bytes().replace(b'"host":"', b'"host":"x'))
    home = Path(f"/tmp/hrv{os.getpid()}")
    home.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "GNUPGHOME": str(home)}
    try:
        subprocess.run(["gpg", "--batch", "--quiet", "--import", str(work / "signers.pgp")], env=env, check=True,
                       capture_output=True, timeout=60)
        bad = subprocess.run(["gpg", "--batch", "--verify", f"{signed}.asc", str(signed)], env=env,
                             capture_output=True, timeout=60)
        assert bad.returncode != 0 and b"BAD signature" in bad.stderr, bad.stderr
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True, timeout=60)
        subprocess.run(["rm", "-rf", str(home)], timeout=60)


@pytest.mark.slow
def test_write_only_repository_with_the_owner_secret_key(cli, gpg, owner, tmp_path):  # noqa: F811
    """What write-only hosts wrote is PKESK-encrypted to the owner: gpg opens it with the owner's key."""
    wo = WriteOnly(cli, owner)
    wo.init("web1")
    src = tmp_path / "src"
    v1 = _make_source(src)
    wo.backup("web1", src)
    changed = b"changed on the host\n" * 500
    (src / "changes.txt").write_bytes(changed)
    assert wo.backup("web1", src)["kind"] == "incremental"
    snaps = wo.as_owner("--json", "snapshots").ok().json()
    full, incr = snaps[0]["id"], snaps[1]["id"]
    base = str(src).lstrip("/")
    env = {"REPO": str(cli.repo_path), "PASSFILE": str(owner.passphrase_file),
           "OWNER_SECRET": str(owner.secret_file)}
    proc = Procedure(tmp_path)
    for sid, rel, expected in ((full, "changes.txt", v1["changes.txt"]), (incr, "changes.txt", changed),
                               (incr, "text/app.log", v1["text/app.log"]), (incr, "noise.bin", v1["noise.bin"])):
        out = tmp_path / f"wo-{sid[:8]}-{rel.replace('/', '_')}"
        run = proc.run({**env, "SNAPSHOT": sid, "FILE": f"/{base}/{rel}", "OUT": str(out)}, with_key=True)
        assert out.read_bytes() == expected, (sid, rel)
        assert b"Good signature" in run.stderr
    # Without the owner's key nothing opens: the host's own password opens only a writer slot.
    proc2 = proc.run({"REPO": str(cli.repo_path), "PASSFILE": str(wo.password_file("web1")), "SNAPSHOT": incr,
                      "FILE": f"/{base}/noise.bin", "OUT": str(tmp_path / "nope")}, expect_ok=False)
    assert proc2.returncode != 0 and not (tmp_path / "nope").exists()
