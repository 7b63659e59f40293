"""Helpers shared by the lifecycle tests (fixtures come from tests/conftest.py)."""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
import sys
from pathlib import Path

from haeedge.backends.base import data_name
from haeedge.repo.index import IndexPack
from haeedge.repo.pack import BLOB_DATA, BLOB_TREE, PackBuilder, encode_header
from haeedge.repo.snapshot import Snapshot, now_iso

MiB = 1 << 20
KiB = 1 << 10

#: Runs a command and reports its peak RSS (KiB) on stderr, as the last line.
RSS_WRAPPER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
               "sys.stderr.write('\\nmaxrss=%d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
               "sys.exit(rc)")


def rss_prefix() -> list[str]:
    return [sys.executable, "-c", RSS_WRAPPER]


def maxrss_kib(stderr: str) -> int:
    return int(stderr.rsplit("maxrss=", 1)[1].split()[0])


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def random_tree(root: Path, seed: int, n_files: int = 20, max_size: int = 64 * KiB, big: int = 0) -> Path:
    """Small random files (several chunks each with SMALL_CHUNKS) plus ``big`` files of 1 MiB."""
    rng = random.Random(seed)
    files = {f"d{i % 4}/f{i:03d}.bin": rng.randbytes(rng.randrange(0, max_size)) for i in range(n_files)}
    files.update({f"big/b{i:02d}.bin": rng.randbytes(MiB) for i in range(big)})
    return write_files(root, files)


def snapshot_list(cli) -> list[dict]:
    return cli("snapshots", "--json").ok().json()


def snapshot_ids(cli) -> list[str]:
    return [s["id"] for s in snapshot_list(cli)]


def restore_diffs(cli, trees, sid: str, expected: dict, src: Path, target: Path, code: int = 0) -> list[str]:
    """Restore ``sid`` into ``target`` and compare with the scan of ``src`` taken at backup time."""
    r = cli("restore", sid, "--target", target)
    assert r.code == code, r.describe()
    got = trees.scan(trees.restored_path(target, src))
    diffs = trees.differences(expected, got)
    shutil.rmtree(target, ignore_errors=True)
    return diffs


def copy_repo(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def files_of(path: Path) -> dict[str, int]:
    """Every object file below a repository (name -> size), temporaries excluded."""
    return {str(p.relative_to(path)): p.stat().st_size for p in path.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")}


def flip_byte(path: Path | str, offset: int, xor: int = 0x01) -> None:
    mode = os.stat(path).st_mode
    os.chmod(path, mode | stat.S_IWUSR)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ xor]))
    os.chmod(path, mode)


def pack_path(repo_path: Path, pack_id: str) -> Path:
    return repo_path / data_name(pack_id)


# ---------------------------------------------------------------------- hand-built (hostile) repositories


def save_data(repo, content: bytes) -> list:
    bid, _new = repo.save_blob(BLOB_DATA, content)
    return [bid.hex(), len(content)]


def save_raw_tree(repo, lines: list[dict] | bytes) -> list[str]:
    """One tree blob holding exactly these JSON lines (no ordering or validity checks)."""
    raw = lines if isinstance(lines, bytes) else b"".join(json.dumps(e).encode() + b"\n" for e in lines)
    bid, _new = repo.save_blob(BLOB_TREE, raw)
    return [bid.hex()]


def save_snapshot(repo, tree: list[str], **fields) -> str:
    doc = dict(time=now_iso(), host="evil", paths=["/"], kind="full", tree=tree)
    doc.update(fields)
    repo.flush()
    return repo.save_snapshot(Snapshot(**doc))


def store_crafted_blob(repo, blob_id: bytes, stored: bytes, raw_length: int, compression: int,
                       blob_type: int = BLOB_DATA) -> None:
    """A blob whose index entry says whatever we like (sealed properly, so only the lie is wrong)."""
    b = PackBuilder()
    b.add(blob_type, compression, blob_id, repo.seal("content" if blob_type == BLOB_DATA else "tree", stored),
          raw_length)
    entries = b.entries
    pack_id = b.finish(repo.seal("meta", encode_header(entries)))
    b.store(repo.backend.put, data_name(pack_id))
    repo.write_index([IndexPack(pack_id, b.length, entries)])
    repo.index.add_pack(bytes.fromhex(pack_id), b.length, entries)


def file_entry(path: str, chunks: list, **extra) -> dict:
    e = {"path": path, "type": "file", "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 0,
         "size": sum(c[1] for c in chunks), "chunks": chunks}
    e.update(extra)
    return e


def dir_entry(path: str) -> dict:
    return {"path": path, "type": "dir", "mode": 0o755, "uid": 0, "gid": 0, "mtime_ns": 0}
