"""Write the golden repositories of one repository format version.

Run only to add a NEW format version; never regenerate existing ones.

A golden repository is a small repository written by the haeedge of the day a
format version was current, committed with a manifest of what it holds. Every
later haeedge must open, list, restore and verify it with the same snapshot
ids (tests/golden/test_golden_repositories.py). Regenerating an existing
version would replace the old bytes by new ones and so test nothing: the point
is that these bytes were written by the old code. To add version N, run
this script with the then-current code and ``--version vN``; it refuses to
overwrite a directory that exists.

    python -m tests.golden.make_golden --version v1      # from the project root

The script drives the installed ``haeedge`` console script (PATH) and the real
``gpg`` (owner key), as a user would. It writes, below
``tests/golden/repos/<version>/``:

- ``<name>.tar.gz``: each repository exactly as haeedge left it on disk;
- ``owner-secret.asc``: the test-only owner key (passphrase in the manifest);
- ``manifest.json``: per repository the credentials (test-only), the expected
  snapshots (id, host, tags, kind, parent, chain, depth, paths) and, per
  snapshot, every entry a restore must produce (type, size, sha256, mode,
  mtime_ns, symlink target), checked here against a restore by today's code.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tests.support.golden import scan

HERE = Path(__file__).resolve().parent
#: Small chunks so that files of a few dozen KiB still have several chunks.
CHUNKER = ("--chunk-min", "4096", "--chunk-avg", "16384", "--chunk-max", "65536")
OWNER_PASSPHRASE = "golden owner key passphrase (test only)"
BASE_NS = 1_700_000_000_000_000_000  # fixed mtimes: 2023-11-14


class Haeedge:
    """The console script on PATH with a fixed repository and credentials; failures stop the script."""

    def __init__(self, repo: Path, password_file: Path):
        self.exe = shutil.which("haeedge")
        if not self.exe:
            sys.exit("the haeedge console script is not on PATH (pip install -e .)")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HAEEDGE_")}
        self.env.update(HAEEDGE_REPOSITORY=str(repo), HAEEDGE_PASSWORD_FILE=str(password_file))

    def __call__(self, *args, env: dict | None = None, stdin: bytes | None = None) -> str:
        proc = subprocess.run([self.exe, *map(str, args)], input=stdin if stdin is not None else b"",
                              capture_output=True, env={**self.env, **(env or {})}, timeout=600)
        if proc.returncode != 0:
            sys.exit(f"haeedge {' '.join(map(str, args))} -> {proc.returncode}\n{proc.stderr.decode()}")
        return proc.stdout.decode()

    def json(self, *args, **kw):
        lines = [ln for ln in self("--json", *args, **kw).splitlines() if ln.strip()]
        return json.loads(lines[-1]) if args[0] == "backup" else json.loads("\n".join(lines))


def secret_file(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path


# ---------------------------------------------------------------------- source trees


def put(path: Path, data: bytes, mode: int = 0o644, tick: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    t = BASE_NS + tick * 1_000_000_123
    os.utime(path, ns=(t, t))


def settle_dirs(root: Path, tick: int) -> None:
    """Give every directory (deepest first) a fixed mtime after its contents changed."""
    dirs = sorted((p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()),
                  key=lambda p: len(p.parts), reverse=True)
    for i, d in enumerate([*dirs, root]):
        t = BASE_NS + tick * 1_000_000_123 + i
        os.utime(d, ns=(t, t))


def base_tree(root: Path, seed: int) -> None:
    rng = random.Random(seed)
    put(root / "notes.txt", b"".join(b"line %d of a compressible note\n" % i for i in range(1500)), tick=1)
    put(root / "random.bin", rng.randbytes(36_000), tick=2)
    put(root / "empty", b"", tick=3)
    put(root / "bin" / "tool.sh", b"#!/bin/sh\necho golden\n", 0o755, tick=4)
    put(root / "private" / "secret.key", rng.randbytes(300), 0o600, tick=5)
    put(root / "caf\u00e9 \u2713.txt".encode().decode(), b"a UTF-8 name\n", tick=6)
    os.symlink("notes.txt", root / "link-to-notes")
    os.utime(root / "link-to-notes", ns=(BASE_NS, BASE_NS), follow_symlinks=False)
    (root / "empty-dir").mkdir()
    settle_dirs(root, 7)


def change_tree(root: Path, seed: int, step: int) -> None:
    """One day of changes: a modified file, a new one, a removed one."""
    rng = random.Random(seed * 100 + step)
    notes = (root / "notes.txt").read_bytes()
    put(root / "notes.txt", notes + b"appended on day %d\n" % step, tick=10 * step + 1)
    put(root / f"day{step}.bin", rng.randbytes(6_000 + 500 * step), tick=10 * step + 2)
    old = root / f"day{step - 1}.bin"
    if old.exists():
        old.unlink()
    settle_dirs(root, 10 * step + 3)




# ---------------------------------------------------------------------- repositories


class Builder:
    """One repository: runs haeedge, remembers what each snapshot holds."""

    def __init__(self, work: Path, name: str, password_file: Path):
        self.name = name
        self.work = work / name
        self.work.mkdir()
        self.repo = self.work / "repo"
        self.cli = Haeedge(self.repo, password_file)
        self.contents: dict[str, dict] = {}  # snapshot id -> {"root": restore-relative dir, "entries": scan}
        self.owner_env: dict = {}

    def source(self, label: str) -> Path:
        return self.work / "src" / label

    def backup(self, src: Path, *args, env: dict | None = None) -> str:
        summary = self.cli.json("backup", *args, src, env=env)
        self.contents[summary["snapshot_id"]] = {"root": str(src).lstrip("/"), "entries": scan(src)}
        return summary["snapshot_id"]

    def backup_stream(self, data: bytes, filename: str, *args, env: dict | None = None) -> str:
        summary = self.cli.json("backup", "--stdin", "--stdin-filename", filename, *args, env=env, stdin=data)
        entry = {"type": "file", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        self.contents[summary["snapshot_id"]] = {"root": "", "entries": {filename: entry}}
        return summary["snapshot_id"]

    def snapshots(self) -> list[dict]:
        return self.cli.json("snapshots", env=self.owner_env)

    def manifest(self, credentials: dict, notes: str) -> dict:
        snaps = []
        for s in self.snapshots():
            if s["id"] not in self.contents:
                raise SystemExit(f"{self.name}: snapshot {s['id']} was not recorded (rewritten?)")
            c = self.contents[s["id"]]
            snaps.append({k: s[k] for k in ("id", "time", "host", "tags", "kind", "parent", "chain", "depth",
                                            "paths")} | {"root": c["root"], "entries": c["entries"]})
        return {"archive": f"{self.name}.tar.gz", "notes": notes, "credentials": credentials, "snapshots": snaps}

    def check_restores(self, manifest: dict) -> None:
        """What today's code restores is what the manifest says (so the manifest is right)."""
        for s in manifest["snapshots"]:
            target = self.work / "check" / s["id"]
            self.cli("restore", s["id"], "--target", target, env=self.owner_env)
            got = scan(target / s["root"]) if s["root"] else {}
            if not s["root"]:
                got = {k: v for k, v in scan(target).items() if k in s["entries"]}
                for v in got.values():
                    v.pop("mode", None), v.pop("mtime_ns", None)
            if got != s["entries"]:
                bad = [k for k in set(got) | set(s["entries"]) if got.get(k) != s["entries"].get(k)]
                raise SystemExit(f"{self.name}: restore of {s['id'][:8]} differs from its source: {bad}")

    def archive(self, dest: Path) -> None:
        """The repository directory as haeedge left it (empty directories and all), mtimes zeroed."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
            for p in sorted([self.repo, *self.repo.rglob("*")]):
                info = tar.gettarinfo(str(p), arcname=p.relative_to(self.repo.parent).as_posix())
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if info.isfile():
                    with open(p, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
        dest.write_bytes(buf.getvalue())


def make_password(work: Path, password: str) -> dict:
    """Password-only: a full, a two-link incremental chain with tags, a stream snapshot, two hosts."""
    b = Builder(work, "password-only", secret_file(work / "password-only.pw", password))
    b.cli("init", *CHUNKER)
    src = b.source("home")
    base_tree(src, 1)
    b.backup(src, "--host", "alpha", "--tag", "nightly")
    for step in (1, 2):
        change_tree(src, 1, step)
        b.backup(src, "--host", "alpha", "--tag", "nightly", *(("--tag", "weekly") if step == 2 else ()))
    b.backup_stream(b"".join(b"INSERT INTO t VALUES (%d);\n" % i for i in range(3000)), "db.sql",
                    "--host", "alpha", "--tag", "dump")
    other = b.source("beta-etc")
    base_tree(other, 2)
    b.backup(other, "--host", "beta")
    m = b.manifest({"password": password}, "passphrase key slot; full + incrementals (depth 2), tags, "
                   "a --stdin snapshot, a second host")
    b.check_restores(m)
    b.archive(work / "out" / m["archive"])
    return m


def make_chain_deletions(work: Path, password: str) -> dict:
    """A chain whose full and a middle link were forgotten (rebased and re-linked copies), then pruned."""
    b = Builder(work, "chain-deletions", secret_file(work / "chain-deletions.pw", password))
    b.cli("init", *CHUNKER)
    src = b.source("data")
    base_tree(src, 3)
    ids = [b.backup(src, "--host", "alpha")]
    for step in (1, 2, 3, 4):
        change_tree(src, 3, step)
        ids.append(b.backup(src, "--host", "alpha"))
    # Forgetting the full rebases the first incremental into a full and re-links the rest below it.
    rewritten = _forget(b, ids[0])
    # Forgetting a middle link rebases its child into a full; the link before it stays re-linked.
    _forget(b, rewritten[ids[3]])
    b.cli("prune", "--max-unused", "0%")
    change_tree(src, 3, 5)
    b.backup(src, "--host", "alpha")  # a new link on top of a rebased full
    kinds = [s["kind"] for s in b.snapshots()]
    if kinds != ["full", "incremental", "full", "incremental"]:
        raise SystemExit(f"chain-deletions: unexpected snapshots after forget: {kinds}")
    m = b.manifest({"password": password},
                   "four incrementals on a full; forget of the full (first incremental rebased to a "
                   "full, the others re-linked), forget of a middle link (its child rebased), prune, then one more "
                   "incremental")
    b.check_restores(m)
    b.archive(work / "out" / m["archive"])
    return m


def _forget(b: Builder, snapshot_id: str) -> dict[str, str]:
    """``forget ID``; returns original id -> rewritten copy id (a copy keeps its original's time, host, paths)."""
    before = {(s["time"], s["host"], tuple(s["paths"])): s["id"] for s in b.snapshots()}
    b.cli("forget", snapshot_id)
    out = {}
    for s in b.snapshots():
        if s["id"] not in b.contents:
            orig = before[(s["time"], s["host"], tuple(s["paths"]))]
            out[orig] = s["id"]
            b.contents[s["id"]] = b.contents[orig]
    return out


def make_owner_key(work: Path) -> tuple[Path, Path, Path]:
    """An owner key made by gpg (cv25519, passphrase-protected): certificate, secret export, passphrase file."""
    home = Path(tempfile.mkdtemp(prefix="hgg", dir="/tmp"))
    pwf = secret_file(work / "owner.pass", OWNER_PASSPHRASE)

    def gpg(*args: str) -> bytes:
        cmd = ["gpg", "--homedir", str(home), "--batch", "--yes", "--no-tty", "--pinentry-mode", "loopback",
               "--passphrase-file", str(pwf), *args]
        return subprocess.run(cmd, capture_output=True, check=True, timeout=120).stdout

    try:
        uid = "Golden Owner <golden-owner@example.org>"
        gpg("--quick-gen-key", uid, "ed25519", "cert,sign", "never")
        fpr = [ln.split(":")[9] for ln in gpg("--with-colons", "--list-keys", uid).decode().splitlines()
               if ln.startswith("fpr:")][0]
        gpg("--quick-add-key", fpr, "cv25519", "encr", "never")
        cert, secret = work / "owner.asc", work / "owner-secret.asc"
        cert.write_bytes(gpg("--export", "--armor", fpr))
        secret.write_bytes(gpg("--export-secret-keys", "--armor", fpr))
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, timeout=60)
        shutil.rmtree(home, ignore_errors=True)
    return cert, secret, pwf


def make_certificate_owner(work: Path, cert: Path, secret: Path, owner_pw: Path, writer_password: str) -> dict:
    """``init --recipient-file``: the owner's snapshots (secret key) and one from the host the init made a key for."""
    writer_pw = secret_file(work / "certificate-owner-alpha.pw", writer_password)
    b = Builder(work, "certificate-owner", writer_pw)
    b.cli("init", "--recipient-file", cert, "--host", "alpha", *CHUNKER)
    b.owner_env = {"HAEEDGE_IDENTITY_FILE": str(secret), "HAEEDGE_PASSWORD_FILE": str(owner_pw)}
    src = b.source("owner-docs")
    base_tree(src, 4)
    b.backup(src, "--host", "owner", "--tag", "manual", env=b.owner_env)
    change_tree(src, 4, 1)
    b.backup(src, "--host", "owner", env=b.owner_env)
    host_src = b.source("alpha-srv")
    base_tree(host_src, 5)
    b.backup(host_src, "--host", "alpha")
    m = b.manifest({"identity_passphrase": OWNER_PASSPHRASE, "identity_file": "owner-secret.asc",
                    "writers": {"alpha": writer_password}},
                   "init --recipient-file: certificate owner key slot and a writer for alpha; "
                   "owner snapshots (full + incremental) made with --identity-file, one writer snapshot")
    b.check_restores(m)
    b.archive(work / "out" / m["archive"])
    return m


def make_write_only(work: Path, cert: Path, secret: Path, owner_pw: Path, writer_passwords: dict[str, str]) -> dict:
    """Two write-only hosts with incremental chains, plus a snapshot by the owner."""
    pws = {h: secret_file(work / f"write-only-{h}.pw", p) for h, p in writer_passwords.items()}
    b = Builder(work, "write-only", pws["web1"])
    b.cli("init", "--recipient-file", cert, "--host", "web1", *CHUNKER)
    b.owner_env = {"HAEEDGE_IDENTITY_FILE": str(secret), "HAEEDGE_PASSWORD_FILE": str(owner_pw)}
    b.cli("key", "add", "--writer", "--host", "web2", "--new-password-file", pws["web2"], env=b.owner_env)
    for seed, host in enumerate(("web1", "web2"), start=6):
        src = b.source(f"{host}-www")
        base_tree(src, seed)
        env = {"HAEEDGE_PASSWORD_FILE": str(pws[host])}
        b.backup(src, "--host", host, "--tag", "nightly", env=env)
        change_tree(src, seed, 1)
        b.backup(src, "--host", host, "--tag", "nightly", env=env)
    shared = b.source("owner-shared")
    base_tree(shared, 6)  # the same files as web1's first backup: deduplicated against writer data
    b.backup(shared, "--host", "owner", env=b.owner_env)
    m = b.manifest({"identity_passphrase": OWNER_PASSPHRASE, "identity_file": "owner-secret.asc",
                    "writers": dict(writer_passwords)},
                   "write-only hosts web1 (made by init --recipient-file) and web2 (key add --writer), "
                   "each a full + incremental; one owner snapshot of data web1 also stored")
    b.check_restores(m)
    b.archive(work / "out" / m["archive"])
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", required=True, help="format version directory to create, e.g. v1")
    args = ap.parse_args()
    dest = HERE / "repos" / args.version
    if dest.exists():
        sys.exit(f"{dest} exists: golden repositories are never regenerated (add a new version instead)")
    program = subprocess.run([shutil.which("haeedge") or "haeedge", "--version"], capture_output=True,
                             check=True).stdout.decode().strip()
    with tempfile.TemporaryDirectory(prefix="haeedge-golden-") as tmp:
        work = Path(tmp)
        (work / "out").mkdir()
        cert, secret, owner_pw = make_owner_key(work)
        repos = {
            "password-only": make_password(work, "golden password-only repository (test only)"),
            "certificate-owner": make_certificate_owner(work, cert, secret, owner_pw,
                                                        "golden alpha writer password (test only)"),
            "write-only": make_write_only(work, cert, secret, owner_pw,
                                          {"web1": "golden web1 writer password (test only)",
                                           "web2": "golden web2 writer password (test only)"}),
            "chain-deletions": make_chain_deletions(work, "golden chain repository (test only)"),
        }
        shutil.copy(secret, work / "out" / "owner-secret.asc")
        manifest = {"format_version": 1, "written_by": program,
                    "rule": "never regenerate; every later haeedge must read these", "repositories": repos}
        (work / "out" / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        shutil.copytree(work / "out", dest)
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
