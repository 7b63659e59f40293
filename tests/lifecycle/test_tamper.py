"""Tamper detection: 200 single-byte changes across every kind of object, each one found and named by verify.

Metadata (key slots, config, index objects, snapshots, tree blobs) is checked
by a plain ``verify``; pack headers and data blobs by ``verify --read-data``.
A change counts as detected when verify exits 4 and its output names the
changed object (its id, or "config").

The 200 runs go through the ``cli`` fixture's in-process runner
(tests/support/cli.py: the console script's code path, fds 1 and 2 captured)
in forked worker processes, three at a time, without paying interpreter
start-up 200 times.
"""

from __future__ import annotations

import multiprocessing
import os
import random
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

from haeedge.repo.pack import BLOB_DATA
from tests.support.cli import run_in_process
from tests.support.lifecycle import copy_repo, flip_byte, pack_path, random_tree, write_files

FLIPS = 200
KINDS = ("keys", "config", "index", "snapshots", "tree_blob", "pack_header", "data_blob")
WORKERS = 3


def _catalog(handle) -> dict[str, list[tuple[str, list[tuple[int, int]]]]]:
    """kind -> [(object path relative to the repository, [(start, end) byte ranges])]."""
    root = handle.path
    cat: dict[str, list] = {k: [] for k in KINDS}
    for ns in ("keys", "index", "snapshots"):
        for p in handle.objects(ns):
            cat[ns].append((str(p.relative_to(root)), [(0, p.stat().st_size)]))
    cat["config"].append(("config", [(0, (root / "config").stat().st_size)]))
    with handle.open() as repo:
        by_pack: dict[str, list] = {}
        for _bid, loc in repo.index.iter_entries():
            by_pack.setdefault(loc.pack_id, []).append(loc)
    for pack_id, locs in by_pack.items():
        rel = str(pack_path(root, pack_id).relative_to(root))
        size = pack_path(root, pack_id).stat().st_size
        end = max(loc.offset + loc.length for loc in locs)
        cat["pack_header"].append((rel, [(end, size)]))
        kind = "data_blob" if locs[0].blob_type == BLOB_DATA else "tree_blob"
        cat[kind].append((rel, [(loc.offset, loc.offset + loc.length) for loc in locs]))
    return cat


def test_200_single_byte_changes_are_all_detected_and_named(cli, trees, tmp_path):
    handle = trees.init_library_repo(cli.repo_path, chunker=trees.SMALL_CHUNKS)
    src = random_tree(tmp_path / "src", seed=7, n_files=60, max_size=80_000)
    # Long names make the file list several tree blobs long.
    write_files(src, {f"names/{'n' * 150}{i:04d}": b"%d" % i for i in range(1500)})
    cli.backup(src)
    write_files(src, {"d0/changed.bin": random.Random(1).randbytes(50_000)})
    cli.backup(src)
    cli("verify", "--read-data").ok()
    cat = _catalog(handle)
    assert all(cat[k] for k in KINDS), {k: len(v) for k, v in cat.items()}
    assert len(cat["tree_blob"][0][1]) + sum(len(r) for _o, r in cat["tree_blob"][1:]) >= 3

    rng = random.Random(2026)
    plan = []
    for i in range(FLIPS):
        kind = KINDS[i % len(KINDS)]
        obj, ranges = rng.choice(cat[kind])
        start, end = rng.choice(ranges)
        plan.append((kind, obj, rng.randrange(start, end), rng.randrange(1, 256)))

    copies = [copy_repo(handle.path, tmp_path / f"copy{w}") for w in range(WORKERS)]
    jobs = [(str(copies[w]), cli.environ(), plan[w::WORKERS]) for w in range(WORKERS)]
    with ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("fork")) as pool:
        results = [x for part in pool.map(_run_flips, jobs) for x in part]
    per_kind = Counter(k for k, *_ in results)
    found = Counter(k for k, _o, _off, d, _t in results if d)
    missed = [(k, o, off, t) for k, o, off, d, t in results if not d]
    print(f"\ntamper detection: {sum(found.values())}/{len(results)} detected and named; "
          + ", ".join(f"{k} {found[k]}/{per_kind[k]}" for k in KINDS))
    assert len(results) == FLIPS
    assert not missed, "\n\n".join(f"{k} {o} @{off}:\n{t}" for k, o, off, t in missed[:5])
    # The copies were restored byte for byte: the original still verifies.
    cli("verify", "--read-data", env={"HAEEDGE_REPOSITORY": str(copies[0])}).ok()


def _run_flips(job: tuple[str, dict, list]) -> list[tuple[str, str, int, bool, str]]:
    repo_path, env, flips = job
    out = []
    for kind, obj, offset, xor in flips:
        path = os.path.join(repo_path, obj)
        flip_byte(path, offset, xor)
        try:
            args = ["verify", "--read-data"] if kind in ("pack_header", "data_blob") else ["verify"]
            code, stdout, stderr = run_in_process(["-r", repo_path, "--no-progress", *args], env)
            text = (stdout + stderr).decode("utf-8", "replace")
        finally:
            flip_byte(path, offset, xor)
        name = "config" if obj == "config" else obj.rsplit("/", 1)[-1][:16]
        detected = code == 4 and name in text and "Traceback" not in text
        out.append((kind, obj, offset, detected, text[-600:]))
    return out
