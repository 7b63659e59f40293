"""Scale benchmark (issue 5, item 3): index RAM per blob, and a tree of many small files.

(a) Fills ``haeedge.repo.index.BlobIndex`` with --blobs synthetic entries (default
    10,000,000, about 10 TB at 1 MiB chunks) and reports resident memory per indexed blob,
    measured from /proc/self/statm before and after (and the peak from ru_maxrss), plus
    lookup speed.  Target: <= 64 bytes per blob.
(b) Generates a tree of --files small files (default 1,000,000), backs it up and backs it
    up again unchanged with haeedge (and optionally restic/borg), and reports wall time per
    file and peak RSS (target <= 1 GiB), then times ``snapshots``.

    Each step reports wall and CPU seconds (user + system of every process of the run) and
    peak memory of all processes; ``--cache warm,drop`` runs it with a warm page cache and
    again cold (caches dropped before each backup; root).

Usage: python bench/scale.py [--blobs N] [--files N] [--skip-index] [--skip-tree]
                             [--tools haeedge[,restic,borg]] [--cache warm[,drop]]
                             [--scratch DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import shlex
import shutil
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

from benchlib import (
    PAGE_SIZE,
    TOOLS,
    BenchError,
    Haeedge,
    ToolContext,
    can_drop_caches,
    checkout_state,
    drop_caches,
    read_tree,
    rmtree,
    tool_missing,
    write_password,
)

MIB = 1024 * 1024
BATCH = 100_000
SAMPLES = 100_000


def log(msg: str) -> None:
    """Progress goes to stderr so stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fmt_opt(v: float | None) -> str:
    """One decimal, or n/a when the implementation does not report the value."""
    return "n/a" if v is None else f"{v:.1f}"


def rss_bytes() -> int:
    """Current resident set size of this process (statm counts pages, not Python objects)."""
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[1]) * PAGE_SIZE


def peak_rss_bytes() -> int:
    """Lifetime peak RSS of this process (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --------------------------------------------------------------------------- (a) index


class DictIndex:
    """Baseline to calibrate the measurement: a dict of bytes -> tuple, what to avoid."""

    def __init__(self) -> None:
        self._d: dict[bytes, tuple[int, int, int, int, int]] = {}

    def add(self, blob_id: bytes, pack_no: int, offset: int, length: int, raw_length: int, blob_type: int) -> None:
        """Insert one entry."""
        self._d[blob_id] = (pack_no, offset, length, raw_length, blob_type)

    def lookup(self, blob_id: bytes) -> tuple[int, int, int, int, int] | None:
        """Entry or None."""
        return self._d.get(blob_id)

    def __len__(self) -> int:
        return len(self._d)


def make_index(impl: str) -> Any:
    """A fresh empty index of the chosen implementation, or BenchError if it is missing."""
    if impl == "dict":
        return DictIndex()
    try:
        from haeedge.repo.index import BlobIndex
    except ImportError as exc:
        raise BenchError(
            f"cannot import haeedge.repo.index.BlobIndex ({exc}); install haeedge with "
            "`pip install -e .` from the checkout, or use --index-impl dict / --skip-index"
        ) from exc
    return BlobIndex()


def bench_index(n: int, impl: str, blobs_per_pack: int, seed: int) -> dict[str, Any]:
    """Fill an index with n random blob ids and measure RSS per blob and lookup speed."""
    rng = random.Random(seed)
    gc.collect()
    index = make_index(impl)
    n_packs = (n + blobs_per_pack - 1) // blobs_per_pack
    # BlobIndex keeps pack ids in a side table and lookup() resolves pack numbers through
    # it, so register the packs first when the implementation has that method.
    register = getattr(index, "pack_number", None)
    sample_every = max(1, n // SAMPLES)
    n_samples = (n + sample_every - 1) // sample_every
    # Sample ids kept for the lookup test live in two flat buffers allocated *before* the
    # baseline reading, so that only the index's own memory lands in the difference.
    sample_ids = bytearray(32 * n_samples)
    sample_offsets = array("q", bytes(8 * n_samples))
    gc.collect()
    before = rss_bytes()
    peak_before = peak_rss_bytes()
    t0 = time.perf_counter()
    if register is not None:
        for _ in range(n_packs):
            register(rng.randbytes(32), 0)
    added = 0
    while added < n:
        k = min(BATCH, n - added)
        raw = rng.randbytes(32 * k)
        for j in range(k):
            i = added + j
            bid = raw[32 * j : 32 * j + 32]
            offset = (i % blobs_per_pack) * (1 << 20)
            length = (1 << 20) - (i & 0xFFF)
            index.add(bid, i // blobs_per_pack, offset, length, length + 512, 0)
            if i % sample_every == 0:
                s = i // sample_every
                sample_ids[32 * s : 32 * s + 32] = bid
                sample_offsets[s] = offset
        added += k
        if added % (BATCH * 20) == 0 or added == n:
            log(f"index: {added:,} blobs, RSS +{(rss_bytes() - before) / MIB:.0f} MiB")
    fill_s = time.perf_counter() - t0
    del raw, bid
    gc.collect()
    steady = rss_bytes() - before
    peak = max(peak_rss_bytes() - max(peak_before, before), steady)
    if len(index) != n:
        raise BenchError(f"index holds {len(index)} entries, expected {n}")
    samples = [(bytes(sample_ids[32 * s : 32 * s + 32]), sample_offsets[s]) for s in range(n_samples)]

    t1 = time.perf_counter()
    for bid, offset in samples:
        e = index.lookup(bid)
        if e is None:
            raise BenchError("index lookup lost an entry")
        got = getattr(e, "offset", None) if not isinstance(e, tuple) else e[1]
        if got is not None and got != offset:
            raise BenchError(f"index lookup returned offset {got}, expected {offset}")
    hit_s = (time.perf_counter() - t1) / len(samples)
    misses = [rng.randbytes(32) for _ in range(len(samples))]
    t2 = time.perf_counter()
    for bid in misses:
        if index.lookup(bid) is not None:
            raise BenchError("index lookup found a blob id that was never added")
    miss_s = (time.perf_counter() - t2) / len(misses)
    reported = index.memory_bytes() if hasattr(index, "memory_bytes") else None
    return {
        "impl": impl,
        "blobs": n,
        "packs": n_packs,
        "rss_bytes_per_blob": steady / n,
        "peak_rss_bytes_per_blob": peak / n,
        "reported_bytes_per_blob": reported / n if reported is not None else None,
        "fill_s": fill_s,
        "add_us_per_blob": fill_s / n * 1e6,
        "lookup_hit_us": hit_s * 1e6,
        "lookup_miss_us": miss_s * 1e6,
        "target_bytes_per_blob": 64,
    }


# --------------------------------------------------------------------------- (b) many files


def build_tree(root: Path, n: int, seed: int) -> dict[str, int]:
    """n small files (0-2 KiB, half random hex text) in leaf dirs of 100, 100 leaves a dir."""
    rng = random.Random(seed)
    rmtree(root)
    total = 0
    for i in range(n):
        leaf = root / f"d{i // 10000:03d}" / f"e{(i // 100) % 100:02d}"
        if i % 100 == 0:
            leaf.mkdir(parents=True)
        size = rng.randrange(2048)
        data = (f"file {i}\n".encode() + rng.randbytes(size // 2).hex().encode())[:size]
        (leaf / f"f{i % 100:02d}.txt").write_bytes(data)
        total += len(data)
        if (i + 1) % 100_000 == 0:
            log(f"tree: {i + 1:,} files")
    return {"files": n, "bytes": total}


def bench_tree(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """Back up and re-back up the many-files tree with each tool; wall per file, peak RSS."""
    tree = scratch / "tree"
    marker = scratch / "tree.json"
    params = {"files": args.files, "seed": args.seed, "version": 1}
    info = json.loads(marker.read_text()) if marker.is_file() else None
    if info is None or info.get("params") != params or not tree.is_dir():
        log(f"building {args.files:,} small files in {tree}")
        marker.unlink(missing_ok=True)
        info = {"params": params, "stats": build_tree(tree, args.files, args.seed)}
        marker.write_text(json.dumps(info))
    else:
        log(f"reusing {tree}")
    password = scratch / "password"
    write_password(password)
    out: dict[str, Any] = {"tree": info["stats"], "tools": {}}
    n = args.files
    for name in args.tool_list:
        tool = TOOLS[name](ToolContext(scratch / f"scale-{name}", password))
        res: dict[str, Any] = {"version": tool.version()}
        for cache in args.cache_list:
            # Each cache mode starts from an empty repository: initial, then unchanged.
            rmtree(tool.ctx.base)
            tool.init()
            for step in ("initial", "unchanged"):
                label = step if cache != "drop" else f"{step}-cold"
                os.sync()
                if cache == "warm":
                    read_tree(tree)
                elif cache == "drop":
                    drop_caches()  # page, dentry and inode caches: the walk and reads go to disk
                b = tool.backup(tree, label)
                res[label] = {
                    **b.m.to_dict(),
                    "cache": cache,
                    "us_per_file": b.m.wall / n * 1e6,
                    "cpu_us_per_file": b.m.cpu / n * 1e6,
                    "summary": b.summary,
                }
                log(f"{name} {label} ({cache}): {b.m.wall:.1f} s ({b.m.wall / n * 1e6:.0f} us/file), "
                    f"CPU {b.m.cpu:.1f} s, peak {b.m.rss_mib:.0f} MiB (all processes)")
        if isinstance(tool, Haeedge):
            m = tool.snapshots()
            res["snapshots"] = m.to_dict()
            log(f"haeedge snapshots: {m.wall:.2f} s, RSS {m.rss_mib:.0f} MiB")
        apparent = sum(p.stat().st_size for p in tool.ctx.repo.rglob("*") if p.is_file())
        res["repo_bytes"] = apparent
        out["tools"][name] = res
        if not args.keep:
            rmtree(tool.ctx.base)
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blobs", type=int, default=10_000_000, help="entries for the index test")
    p.add_argument("--blobs-per-pack", type=int, default=64, help="index entries per synthetic pack")
    p.add_argument("--index-impl", choices=("haeedge", "dict"), default="haeedge", help="dict = baseline")
    p.add_argument("--files", type=int, default=1_000_000, help="small files for the tree test")
    p.add_argument("--skip-index", action="store_true", help="skip (a), the index test")
    p.add_argument("--skip-tree", action="store_true", help="skip (b), the many-files test")
    p.add_argument("--tools", default="haeedge", help="tools for (b), e.g. haeedge,restic,borg")
    p.add_argument("--scratch", type=Path, default=None, help="scratch dir (default: temp dir under /var/tmp)")
    p.add_argument("--cache", default="warm",
                   help="comma-separated: warm (read the tree before each backup), drop (write "
                        "/proc/sys/vm/drop_caches before each backup: a cold run, needs root), none")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--haeedge-cmd", default="haeedge", help="command that runs the haeedge CLI")
    p.add_argument("--keep", action="store_true", help="keep the scratch dir and repositories")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write results as JSON")
    a = p.parse_args(argv)
    a.tool_list = [t.strip() for t in a.tools.split(",") if t.strip()]
    a.cache_list = [c.strip() for c in a.cache.split(",") if c.strip()]
    if not a.cache_list or any(c not in ("warm", "drop", "none") for c in a.cache_list):
        p.error("--cache: a comma-separated list of warm, drop, none")
    if "drop" in a.cache_list and not can_drop_caches():
        p.error("--cache drop needs write access to /proc/sys/vm/drop_caches (root)")
    if any(t not in TOOLS for t in a.tool_list):
        p.error(f"--tools: choose from {', '.join(TOOLS)}")
    return a


def main(argv: list[str] | None = None) -> int:
    """Run (a) and/or (b) and print a short report."""
    args = parse_args(argv)
    Haeedge.cmd = shlex.split(args.haeedge_cmd)
    results: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "checkout": checkout_state(),
    }
    print(f"command: {results['command']}\ncheckout: {results['checkout']}")
    own_scratch = args.scratch is None
    scratch: Path | None = None
    try:
        if not args.skip_index:
            log(f"index test: {args.blobs:,} blobs ({args.index_impl})")
            r = bench_index(args.blobs, args.index_impl, args.blobs_per_pack, args.seed)
            results["index"] = r
            print(
                f"index ({r['impl']}): {r['blobs']:,} blobs in {r['packs']:,} packs: "
                f"{r['rss_bytes_per_blob']:.1f} B/blob RSS (peak {r['peak_rss_bytes_per_blob']:.1f}, "
                f"self-reported {fmt_opt(r['reported_bytes_per_blob'])}; target <= 64); "
                f"add {r['add_us_per_blob']:.2f} us, lookup hit {r['lookup_hit_us']:.2f} us, "
                f"miss {r['lookup_miss_us']:.2f} us"
            )
        if not args.skip_tree:
            missing = [m for t in args.tool_list if (m := tool_missing(t))]
            if missing:
                raise BenchError("; ".join(missing))
            scratch = Path(tempfile.mkdtemp(prefix="haeedge-scale-", dir="/var/tmp")) if own_scratch else args.scratch
            scratch = scratch.resolve()
            scratch.mkdir(parents=True, exist_ok=True)
            need = args.files * 12 * 1024
            if shutil.disk_usage(scratch).free < need:
                raise BenchError(f"{scratch}: needs about {need // MIB} MiB free")
            t = bench_tree(args, scratch)
            results["tree"] = t
            n = args.files
            print(f"tree: {n:,} files, {t['tree']['bytes'] / MIB:.0f} MiB")
            print("peak MiB: all processes of the run (PSS summed over a tool's workers)")
            cols = ("wall s", "us/file", "CPU s", "CPU us/file", "peak MiB")
            print(f"{'tool':10s}{'step':18s}" + "".join(f"{c:>12s}" for c in cols))
            for name, r in t["tools"].items():
                for label, m in r.items():
                    if not isinstance(m, dict) or "us_per_file" not in m:
                        continue
                    print(
                        f"{name:10s}{label:18s}{m['wall']:12.1f}{m['us_per_file']:12.0f}{m['cpu']:12.1f}"
                        f"{m['cpu_us_per_file']:12.0f}{m['rss_mib']:12.0f}"
                    )
            names = list(t["tools"])
            if len(names) > 1:  # the first tool against the second, step by step
                mine, other = t["tools"][names[0]], t["tools"][names[1]]
                for label, m in mine.items():
                    o = other.get(label)
                    if isinstance(m, dict) and "wall" in m and isinstance(o, dict):
                        print(f"{names[0]}/{names[1]} {label}: wall {m['wall'] / o['wall']:.2f}, "
                              f"CPU {m['cpu'] / o['cpu']:.2f}, peak memory {m['rss_mib'] / o['rss_mib']:.2f}")
            if "haeedge" in t["tools"] and "snapshots" in t["tools"]["haeedge"]:
                s = t["tools"]["haeedge"]["snapshots"]
                print(
                    f"haeedge snapshots --json: {s['wall']:.2f} s, RSS {s['rss_mib']:.0f} MiB (target RSS <= 1024 MiB)"
                )
    except BenchError as exc:
        print(f"\nSCALE BENCHMARK FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if scratch is not None and own_scratch and not args.keep:
            rmtree(scratch)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
