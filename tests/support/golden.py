"""The golden repositories under tests/golden/repos/: where they are and how to read one back.

See tests/golden/test_golden_repositories.py for what they are for.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

REPOS = Path(__file__).resolve().parents[1] / "golden" / "repos"
VERSIONS = sorted(p.name for p in REPOS.iterdir() if (p / "manifest.json").is_file()) if REPOS.is_dir() else []
CASES = [(v, name) for v in VERSIONS
         for name in sorted(json.loads((REPOS / v / "manifest.json").read_text())["repositories"])]


@dataclass
class Golden:
    """One unpacked copy of a golden repository and the environments that open it."""

    spec: dict
    repo: Path
    owner_env: dict
    writer_envs: dict[str, dict]
    cli: object

    def as_owner(self, *args, **kw):
        return self.cli(*args, env={**self.owner_env, **kw.pop("env", {})}, **kw)

    def snapshot(self, snapshot_id: str) -> dict:
        return next(s for s in self.spec["snapshots"] if s["id"] == snapshot_id)


def secret_file(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path


def scan(root: Path) -> dict[str, dict]:
    """Every entry below ``root`` (relative POSIX paths) with what a restore must reproduce."""
    out: dict[str, dict] = {}
    for p in sorted([root, *root.rglob("*")]):
        st = os.lstat(p)
        rel = p.relative_to(root).as_posix()
        if stat.S_ISLNK(st.st_mode):
            out[rel] = {"type": "symlink", "target": os.readlink(p)}
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = {"type": "dir", "mode": stat.S_IMODE(st.st_mode), "mtime_ns": st.st_mtime_ns}
        else:
            data = p.read_bytes()
            out[rel] = {"type": "file", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                        "mode": stat.S_IMODE(st.st_mode), "mtime_ns": st.st_mtime_ns}
    return out


def restored(target: Path, snap: dict) -> dict[str, dict]:
    """The restored entries the manifest describes, with the fields it records."""
    if snap["root"]:
        return scan(target / snap["root"])
    # A stream snapshot: the file sits at the top; its mode and time are not the point.
    found = scan(target)
    return {k: {f: found[k].get(f) for f in v} for k, v in snap["entries"].items() if k in found}
