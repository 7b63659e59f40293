"""Random histories of a tree, backed up ten times with random full/incremental choices (library API).

Every snapshot must restore exactly the tree it captured: contents, lstat
fields, symlinks and hardlink structure. The repository uses small chunks and
a cheap S2K so that each example takes well under a second.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haeedge.archiver import Archiver, BackupOptions
from haeedge.operations.check import Checker
from haeedge.restorer import RestoreOptions, Restorer

NAMES = [b"a", b"b", b"c.txt", b"d1/x", b"d1/y", b"d1/d2/z", b"d3/w", b"caf\xe9", b"d1/d2/\xff\xfe"]
DIRS = [b"d1", b"d1/d2", b"d3", b"d4/empty"]

op_st = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(NAMES), st.integers(0, 2**16), st.sampled_from(
        [0, 1, 100, 5000, 40_000, 150_000])),
    st.tuples(st.just("append"), st.sampled_from(NAMES), st.integers(0, 2**16), st.integers(1, 70_000)),
    st.tuples(st.just("overwrite_same_size"), st.sampled_from(NAMES), st.integers(0, 2**16), st.just(0)),
    st.tuples(st.just("copy"), st.sampled_from(NAMES), st.sampled_from(NAMES), st.just(0)),
    st.tuples(st.just("rename"), st.sampled_from(NAMES), st.sampled_from(NAMES), st.just(0)),
    st.tuples(st.just("delete"), st.sampled_from(NAMES), st.just(0), st.just(0)),
    st.tuples(st.just("rmtree"), st.sampled_from(DIRS), st.just(0), st.just(0)),
    st.tuples(st.just("mkdir"), st.sampled_from(DIRS), st.just(0), st.just(0)),
    st.tuples(st.just("chmod"), st.sampled_from(NAMES + DIRS), st.sampled_from([0o600, 0o755, 0o4711, 0o000]),
              st.just(0)),
    st.tuples(st.just("touch"), st.sampled_from(NAMES + DIRS), st.integers(-10**18, 4 * 10**18), st.just(0)),
    st.tuples(st.just("symlink"), st.sampled_from(NAMES), st.sampled_from(NAMES + [b"../nowhere"]), st.just(0)),
    st.tuples(st.just("hardlink"), st.sampled_from(NAMES), st.sampled_from(NAMES), st.just(0)),
)
step_st = st.tuples(st.lists(op_st, min_size=1, max_size=6), st.booleans())


def _apply(root: bytes, op) -> None:
    """Perform one operation if it makes sense in the current tree; otherwise do nothing."""
    kind, a, b, c = op
    pa = root + b"/" + a
    try:
        if kind in ("write", "append", "overwrite_same_size"):
            os.makedirs(os.path.dirname(pa), exist_ok=True)
            if os.path.isdir(pa) and not os.path.islink(pa):
                return
            rng = random.Random(b)
            if kind == "write":
                data = rng.randbytes(c) if b % 3 else (b"%d\n" % b) * (c // 8 + 1)
                mode = "wb"
            elif kind == "append":
                data, mode = rng.randbytes(c), "ab"
            else:
                if not os.path.isfile(pa) or os.path.islink(pa):
                    return
                data, mode = rng.randbytes(os.path.getsize(pa)), "r+b"
            if os.path.islink(pa):
                os.unlink(pa)
            with open(pa, mode) as f:
                f.write(data)
        elif kind == "copy":
            pb = root + b"/" + b
            if pa != pb and os.path.isfile(pa) and not os.path.islink(pa) and not os.path.isdir(pb):
                os.makedirs(os.path.dirname(pb), exist_ok=True)
                if os.path.lexists(pb):
                    os.unlink(pb)
                shutil.copyfile(pa, pb)  # same bytes, another file: deduplicated
        elif kind == "rename":
            pb = root + b"/" + b
            if os.path.lexists(pa) and not os.path.isdir(pb) and not pb.startswith(pa + b"/"):
                os.makedirs(os.path.dirname(pb), exist_ok=True)
                os.rename(pa, pb)
        elif kind == "delete":
            if os.path.lexists(pa) and not (os.path.isdir(pa) and not os.path.islink(pa)):
                os.unlink(pa)
        elif kind == "rmtree":
            if os.path.isdir(pa) and not os.path.islink(pa):
                shutil.rmtree(pa)
        elif kind == "mkdir":
            if not os.path.lexists(pa):
                os.makedirs(pa, exist_ok=True)
        elif kind == "chmod":
            if os.path.lexists(pa) and not os.path.islink(pa):
                os.chmod(pa, b)
        elif kind == "touch":
            if os.path.lexists(pa):
                os.utime(pa, ns=(b, b), follow_symlinks=False)
        elif kind == "symlink":
            if not os.path.lexists(pa):
                os.makedirs(os.path.dirname(pa), exist_ok=True)
                os.symlink(b, pa)
        elif kind == "hardlink":
            pb = root + b"/" + b
            if os.path.isfile(pa) and not os.path.islink(pa) and not os.path.lexists(pb):
                os.makedirs(os.path.dirname(pb), exist_ok=True)
                os.link(pa, pb)
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        pass  # the random history asked for something this tree cannot do


@pytest.mark.slow
@settings(max_examples=15, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(steps=st.lists(step_st, min_size=10, max_size=10), full_every=st.sampled_from([None, None, 2, 4]))
def test_every_snapshot_restores_the_tree_it_captured(trees, steps, full_every):
    with tempfile.TemporaryDirectory(prefix="haeedge-chains-") as tmp:
        base = Path(tmp)
        handle = trees.init_library_repo(base / "repo", chunker=trees.SMALL_CHUNKS)
        src = base / "src"
        src.mkdir()
        root = os.fsencode(src)
        captured: list[tuple[str, dict]] = []
        kinds = []
        with handle.open() as repo:
            for ops, full in steps:
                for op in ops:
                    _apply(root, op)
                res = Archiver(repo, BackupOptions(paths=[str(src)], full=full, full_every=full_every)).run()
                assert not res.partial, res.warnings
                captured.append((res.snapshot.id, trees.scan(src)))
                kinds.append(res.snapshot.kind)
                if full:
                    assert res.snapshot.kind == "full"
        assert kinds[0] == "full"
        if full_every is None and not all(f for _o, f in steps[1:]):
            assert "incremental" in kinds

        with handle.open() as repo:
            report = Checker(repo).run(read_data=True)
            assert report.ok, [f.message for f in report.errors]
            for i, (sid, expected) in enumerate(captured):
                target = base / f"restore{i}"
                snap = repo.load_snapshot(sid)
                out = Restorer(repo, RestoreOptions(target=str(target))).run(snap)
                assert not out.damaged and not out.skipped, out.warnings
                got = trees.scan(trees.restored_path(target, src))
                diffs = trees.differences(expected, got)
                assert not diffs, f"snapshot {i} ({snap.kind}, depth {snap.depth}): {diffs[:10]}"
                shutil.rmtree(target)
