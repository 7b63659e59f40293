"""Side-by-side benchmark of haeedge, restic 0.14, borg 1.2 and borg 1.4 (issues 5 and 16).

Builds the reference corpus (a copy of this Python's standard library directory plus one
large incompressible file), then for each tool on its own encrypted, zstd-3 repository
measures: initial backup, unchanged re-backup, re-backup after a seeded mutation, full
restore (checked byte for byte), verify with data, repository size, and the new chunks
caused by inserting one byte at the front of the large file.  Runs are repeated and the
median of each metric and of each per-run ratio is printed.  See bench/README.md.

Usage: python bench/run.py [--runs N] [--scratch DIR] [--tools haeedge,restic,borg,borg14]
                           [--skip-build] [--json OUT] [--small] [--cache warm|drop]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    MIB,
    TOOLS,
    BenchError,
    Haeedge,
    Tool,
    ToolContext,
    can_drop_caches,
    checkout_state,
    compare_manifests,
    dir_size,
    drop_caches,
    manifest,
    read_tree,
    rmtree,
    tool_missing,
    write_password,
)

OPS: list[tuple[str, str]] = [
    ("backup_initial", "initial backup"),
    ("backup_unchanged", "unchanged re-backup"),
    ("backup_mutated", "mutated re-backup"),
    ("restore", "full restore"),
    ("verify", "verify with data"),
]
METRICS: list[tuple[str, str]] = [
    ("wall", "wall s"),
    ("cpu", "CPU s"),
    ("rss_mib", "RSS MiB"),
]
BIG_NAME = "big.bin"
STDLIB_NAME = "stdlib"
CORPUS_VERSION = 1  # bump when the corpus recipe changes, so --skip-build refuses stale data


def log(msg: str) -> None:
    """Progress goes to stderr so stdout holds only the table."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- corpus


def make_big_file(path: Path, size: int, seed: int) -> None:
    """Deterministic incompressible data from a seeded PRNG, written in 1 MiB blocks."""
    rng = random.Random(seed)
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(MIB, left)
            fh.write(rng.randbytes(n))
            left -= n


def copy_stdlib(src: Path, dst: Path, limit: int | None, seed: int) -> None:
    """Copy the stdlib tree; with a byte limit, a seeded sample of its files (for --small)."""
    if limit is None:
        subprocess.run(["cp", "-a", "--", str(src), str(dst)], check=True)
        return
    files: list[tuple[str, int]] = []
    for root, dirs, names in os.walk(src):
        dirs.sort()
        for n in sorted(names):
            p = os.path.join(root, n)
            if os.path.isfile(p) and not os.path.islink(p):
                files.append((os.path.relpath(p, src), os.path.getsize(p)))
    total = sum(s for _, s in files) or 1
    keep = min(1.0, limit / total)
    rng = random.Random(seed)
    for rel, _size in files:
        if rng.random() < keep:
            out = dst / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, out)


def tree_stats(root: Path) -> dict[str, int]:
    """Files, directories and bytes of a tree, for the report."""
    files = dirs = size = 0
    for _r, ds, fs in os.walk(root):
        dirs += len(ds)
        for n in fs:
            files += 1
            size += os.lstat(os.path.join(_r, n)).st_size
    return {"files": files, "dirs": dirs, "bytes": size}


def build_corpus(base: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Build the pristine corpus in base/ and record its recipe in base/../corpus.json."""
    marker = base.parent / "corpus.json"
    rmtree(base)
    marker.unlink(missing_ok=True)
    base.mkdir(parents=True)
    stdlib = Path(params["stdlib"])
    limit = params["stdlib_limit_bytes"]
    log(f"copying {stdlib} -> {base / STDLIB_NAME}" + (f" (sample of ~{limit // MIB} MiB)" if limit else ""))
    copy_stdlib(stdlib, base / STDLIB_NAME, limit, params["seed"])
    log(f"generating {params['big_bytes'] // MIB} MiB incompressible {BIG_NAME} (seed {params['seed']})")
    make_big_file(base / BIG_NAME, params["big_bytes"], params["seed"])
    stats = tree_stats(base)
    info = {"params": params, "stats": stats}
    marker.write_text(json.dumps(info, indent=2))
    return info


def load_corpus(base: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Reuse a corpus built earlier (--skip-build), refusing one built from another recipe."""
    marker = base.parent / "corpus.json"
    if not marker.is_file() or not base.is_dir():
        raise BenchError(f"--skip-build: no corpus in {base.parent} (run once without --skip-build)")
    info = json.loads(marker.read_text())
    if info.get("params") != params:
        raise BenchError(
            f"--skip-build: corpus in {base.parent} was built with {info.get('params')}, "
            f"this run asks for {params}; rebuild without --skip-build"
        )
    return info


def insert_byte_at_front(path: Path, byte: bytes) -> None:
    """Rewrite path in place (same inode) with one byte prepended, streaming through a temp copy."""
    tmp = path.with_name(path.name + ".shift")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        dst.write(byte)
        shutil.copyfileobj(src, dst, MIB)
    with open(tmp, "rb") as src, open(path, "r+b") as dst:
        shutil.copyfileobj(src, dst, MIB)
    tmp.unlink()


def mutate(corpus: Path, seed: int) -> dict[str, int]:
    """Seeded mutation: 1% of files edited in place, 0.5% added, 0.5% deleted, 1 byte at the big file's front."""
    rng = random.Random(seed ^ 0x5EED)
    stdlib = corpus / STDLIB_NAME
    files: list[str] = []
    for root, dirs, names in os.walk(stdlib):
        dirs.sort()
        for n in sorted(names):
            p = os.path.join(root, n)
            if os.path.isfile(p) and not os.path.islink(p):
                files.append(os.path.relpath(p, stdlib))
    n = len(files)
    n_edit = max(1, round(n * 0.01))
    n_add = max(1, round(n * 0.005))
    n_del = max(1, round(n * 0.005))
    picked = rng.sample(files, n_edit + n_del)
    edit, delete = picked[:n_edit], picked[n_edit:]
    for rel in edit:
        p = stdlib / rel
        size = p.stat().st_size
        patch = rng.randbytes(64)
        with open(p, "r+b") as fh:
            if size > len(patch):
                fh.seek(rng.randrange(size - len(patch) + 1))
            fh.write(patch)
    for rel in delete:
        (stdlib / rel).unlink()
    deleted = set(delete)
    remaining = [f for f in files if f not in deleted]
    parents = sorted({os.path.dirname(f) for f in remaining})
    for i in range(n_add):
        template = (stdlib / rng.choice(remaining)).read_bytes()
        target = stdlib / rng.choice(parents) / f"bench_added_{i:05d}.dat"
        target.write_bytes(rng.randbytes(32).hex().encode() + b"\n" + template)
    insert_byte_at_front(corpus / BIG_NAME, rng.randbytes(1))
    return {
        "files": n,
        "edited": n_edit,
        "added": n_add,
        "deleted": n_del,
        "big_bytes_inserted": 1,
    }


# --------------------------------------------------------------------------- measuring


class Caches:
    """Puts the page cache in the same state before every measured operation."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def prepare(self, reads: Path) -> None:
        """warm: sync, then read the op's input once; drop: sync and drop all caches."""
        if self.mode == "drop":
            drop_caches()
        else:
            os.sync()
            read_tree(reads)


def run_once(
    idx: int,
    tool_names: list[str],
    scratch: Path,
    base: Path,
    password: Path,
    caches: Caches,
    seed: int,
    keep: bool,
) -> dict[str, Any]:
    """One full round: every tool through every operation on the same corpus state."""
    run_dir = scratch / f"run-{idx}"
    corpus = scratch / "corpus"
    rmtree(run_dir)
    rmtree(corpus)
    log(f"run {idx}: fresh corpus copy")
    subprocess.run(["cp", "-a", "--", str(base), str(corpus)], check=True)
    os.sync()
    rot = idx % len(tool_names)
    order = tool_names[rot:] + tool_names[:rot]  # rotate so no tool is always first
    tools: dict[str, Tool] = {n: TOOLS[n](ToolContext(run_dir / n, password)) for n in order}
    res: dict[str, Any] = {n: {"ops": {}, "summaries": {}} for n in order}
    res["_order"] = order

    def note(name: str, op: str, m: Any) -> None:
        res[name]["ops"][op] = m.to_dict()
        log(f"run {idx}: {name:8s} {op:17s} wall {m.wall:7.2f} s  cpu {m.cpu:7.2f} s  rss {m.rss_mib:7.1f} MiB")

    for n in order:
        res[n]["version"] = tools[n].version()
        res[n]["init"] = tools[n].init().to_dict()

    for label, op in (("initial", "backup_initial"), ("unchanged", "backup_unchanged")):
        for n in order:
            caches.prepare(corpus)
            b = tools[n].backup(corpus, label)
            note(n, op, b.m)
            res[n]["summaries"][label] = b.summary

    res["_mutation"] = mutate(corpus, seed)
    log(f"run {idx}: mutation {res['_mutation']}")
    expected = manifest(corpus)

    for n in order:
        caches.prepare(corpus)
        b = tools[n].backup(corpus, "mutated")
        note(n, "backup_mutated", b.m)
        res[n]["summaries"]["mutated"] = b.summary
        apparent, allocated = dir_size(tools[n].ctx.repo)
        res[n]["repo_bytes"] = apparent
        res[n]["repo_allocated_bytes"] = allocated
        res[n]["repo_mib"] = apparent / MIB

    for n in order:
        target = scratch / f"restore-{n}"
        rmtree(target)
        target.mkdir()
        caches.prepare(tools[n].ctx.repo)
        m = tools[n].restore_latest(target)
        root = tools[n].restored_root(target, corpus)
        log(f"run {idx}: {n}: comparing restored tree {root} with the corpus")
        compare_manifests(expected, manifest(root) if root.is_dir() else {}, what=f"{n} run {idx}")
        note(n, "restore", m)  # only counts once the tree is identical
        rmtree(target)

    for n in order:
        caches.prepare(tools[n].ctx.repo)
        note(n, "verify", tools[n].verify())

    # 1-byte insert, isolated: a repository holding only the big file, then the shifted file.
    for n in order:
        src = scratch / "insert"
        rmtree(src)
        src.mkdir()
        shutil.copyfile(base / BIG_NAME, src / BIG_NAME)
        t = TOOLS[n](ToolContext(run_dir / f"{n}-insert", password))
        t.init()
        t.backup(src, "insert-before")
        insert_byte_at_front(src / BIG_NAME, b"\x01")
        after = t.backup(src, "insert-after")
        res[n]["insert_new_chunks"] = after.new_data_chunks
        res[n]["insert_note"] = after.chunk_note
        log(f"run {idx}: {n}: 1-byte insert added {after.new_data_chunks} chunks ({after.chunk_note})")
        rmtree(src)

    if not keep:
        rmtree(run_dir)
    return res


# --------------------------------------------------------------------------- reporting


def metric_value(run: dict[str, Any], tool: str, row: str, metric: str) -> float | None:
    """One number of one run, or None when the tool did not report it."""
    r = run.get(tool)
    if r is None:
        return None
    if row == "repo":
        return r.get("repo_mib")
    if row == "insert":
        v = r.get("insert_new_chunks")
        return float(v) if v is not None else None
    m = r["ops"].get(row)
    return None if m is None else m[metric]


def summarize(runs: list[dict[str, Any]], tools: list[str]) -> dict[str, Any]:
    """Median per tool and metric, and the median of the per-run haeedge/other ratios."""
    rows = [(op, metric) for op, _ in OPS for metric, _ in METRICS] + [
        ("repo", "mib"),
        ("insert", "chunks"),
    ]
    out: dict[str, Any] = {}
    for row, metric in rows:
        entry: dict[str, Any] = {"median": {}, "ratio": {}, "values": {}}
        for t in tools:
            vals = [v for run in runs if (v := metric_value(run, t, row, metric)) is not None]
            entry["values"][t] = vals
            entry["median"][t] = statistics.median(vals) if vals else None
        if "haeedge" in tools:
            for other in tools:
                if other == "haeedge":
                    continue
                ratios = []
                for run in runs:
                    h = metric_value(run, "haeedge", row, metric)
                    o = metric_value(run, other, row, metric)
                    if h is not None and o:
                        ratios.append(h / o)
                entry["ratio"][other] = statistics.median(ratios) if ratios else None
        out[f"{row}.{metric}"] = entry
    return out


def fmt(v: float | None, digits: int = 2) -> str:
    """Right-aligned number or a dash."""
    return "-" if v is None else f"{v:.{digits}f}"


def render_table(summary: dict[str, Any], tools: list[str]) -> str:
    """rows = operation x metric, columns = tools then haeedge/other ratios."""
    others = [t for t in tools if t != "haeedge"] if "haeedge" in tools else []
    head = f"{'operation':22s}{'metric':12s}" + "".join(f"{t:>11s}" for t in tools)
    head += "".join(f"{'hae/' + o:>13s}" for o in others)
    lines = [head, "-" * len(head)]
    rows: list[tuple[str, str, str, str, int]] = []
    for op, title in OPS:
        for i, (metric, mtitle) in enumerate(METRICS):
            rows.append(
                (
                    title if i == 0 else "",
                    mtitle,
                    op,
                    metric,
                    1 if metric == "rss_mib" else 2,
                )
            )
    rows.append(("repository size", "MiB", "repo", "mib", 1))
    rows.append(("1-byte insert", "new chunks", "insert", "chunks", 0))
    for title, mtitle, row, metric, digits in rows:
        e = summary[f"{row}.{metric}"]
        line = f"{title:22s}{mtitle:12s}" + "".join(f"{fmt(e['median'][t], digits):>11s}" for t in tools)
        line += "".join(f"{fmt(e['ratio'].get(o)):>13s}" for o in others)
        lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--runs", type=int, default=None, help="repetitions (default 3; 1 with --small)")
    p.add_argument(
        "--scratch",
        type=Path,
        default=None,
        help="scratch dir (default: new temp dir under /var/tmp)",
    )
    p.add_argument(
        "--tools",
        default="haeedge,restic,borg,borg14",
        help="comma-separated subset of haeedge,restic,borg,borg14 (borg14: borg 1.4 from PyPI)",
    )
    p.add_argument(
        "--skip-build",
        action="store_true",
        help="reuse the corpus already in --scratch",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="OUT",
        help="also write all results as JSON",
    )
    p.add_argument(
        "--small",
        action="store_true",
        help="quick check: ~20 MiB stdlib sample + 30 MiB big file, 1 run",
    )
    p.add_argument(
        "--cache",
        choices=("warm", "drop"),
        default="warm",
        help="page cache policy before each op",
    )
    p.add_argument("--seed", type=int, default=5, help="seed for the big file and the mutation")
    p.add_argument(
        "--big-mib",
        type=int,
        default=None,
        help="size of the big file (default 256, or 30 with --small)",
    )
    p.add_argument(
        "--stdlib-mib",
        type=int,
        default=None,
        help="sample this much of the stdlib (default all)",
    )
    p.add_argument("--haeedge-cmd", default="haeedge", help="command that runs the haeedge CLI")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep repositories, logs and the scratch dir",
    )
    a = p.parse_args(argv)
    if a.runs is None:
        a.runs = 1 if a.small else 3
    if a.big_mib is None:
        a.big_mib = 30 if a.small else 256
    if a.stdlib_mib is None and a.small:
        a.stdlib_mib = 20
    a.tool_list = [t.strip() for t in a.tools.split(",") if t.strip()]
    bad = [t for t in a.tool_list if t not in TOOLS]
    if bad or not a.tool_list:
        p.error(f"--tools: unknown {bad}; choose from {', '.join(TOOLS)}")
    if a.runs < 1:
        p.error("--runs must be >= 1")
    if a.skip_build and a.scratch is None:
        p.error("--skip-build needs --scratch DIR holding a corpus from an earlier run")
    return a


def main(argv: list[str] | None = None) -> int:
    """Build or reuse the corpus, run every round, print the table, write JSON."""
    args = parse_args(argv)
    Haeedge.cmd = shlex.split(args.haeedge_cmd)
    missing = [msg for t in args.tool_list if (msg := tool_missing(t))]
    if missing:
        for msg in missing:
            print(f"error: {msg}", file=sys.stderr)
        return 2
    if args.cache == "drop" and not can_drop_caches():
        print(
            "error: --cache drop needs write access to /proc/sys/vm/drop_caches (root)",
            file=sys.stderr,
        )
        return 2

    own_scratch = args.scratch is None
    scratch = Path(tempfile.mkdtemp(prefix="haeedge-bench-", dir="/var/tmp")) if own_scratch else args.scratch
    scratch = scratch.resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    base = scratch / "base"
    params = {
        "version": CORPUS_VERSION,
        "stdlib": __import__("sysconfig").get_paths()["stdlib"],
        "stdlib_limit_bytes": args.stdlib_mib * MIB if args.stdlib_mib else None,
        "big_bytes": args.big_mib * MIB,
        "seed": args.seed,
    }
    log(f"scratch: {scratch}")
    try:
        info = load_corpus(base, params) if args.skip_build else build_corpus(base, params)
        stats = info["stats"]
        need = stats["bytes"] * 6
        free = shutil.disk_usage(scratch).free
        if free < need:
            raise BenchError(f"{scratch} has {free // MIB} MiB free, needs about {need // MIB} MiB")
        log(f"corpus: {stats['files']} files, {stats['dirs']} dirs, {stats['bytes'] / MIB:.0f} MiB")
        password = scratch / "password"
        write_password(password)
        caches = Caches(args.cache)
        runs = []
        for i in range(args.runs):
            runs.append(
                run_once(
                    i,
                    args.tool_list,
                    scratch,
                    base,
                    password,
                    caches,
                    args.seed,
                    args.keep,
                )
            )
    except BenchError as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
        print(f"(logs and data kept in {scratch})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; scratch left in {scratch}", file=sys.stderr)
        return 130

    summary = summarize(runs, args.tool_list)
    checkout = checkout_state()
    versions = {t: runs[0][t]["version"] for t in args.tool_list}
    cmd = shlex.join([Path(sys.executable).name, *sys.argv])
    kind = "sample" if params["stdlib_limit_bytes"] else "full"
    header = [
        f"command: {cmd}",
        (
            f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, {platform.platform()}"
        ),
        "versions: " + "; ".join(f"{t}: {v}" for t, v in versions.items()) + f"; checkout: {checkout}",
        (
            f"corpus: {stats['files']} files, {stats['bytes'] / MIB:.0f} MiB (stdlib {kind} "
            f"+ {args.big_mib} MiB random {BIG_NAME}); mutation: {runs[0]['_mutation']}"
        ),
        (
            f"runs: {args.runs}, caches: {args.cache}, encryption on, zstd 3 (restic "
            "--compression auto = klauspost zstd SpeedDefault ~ level 3); medians; "
            "ratios are medians of per-run ratios"
        ),
    ]
    table = render_table(summary, args.tool_list)
    print("\n".join(header))
    print()
    print(table)
    notes = {t: runs[0][t].get("insert_note", "") for t in args.tool_list}
    print("\n1-byte insert counted from: " + "; ".join(f"{t}: {n or 'not reported'}" for t, n in notes.items()))

    if args.json:
        doc = {
            "command": cmd,
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "versions": versions,
            "checkout": checkout,
            "corpus": info,
            "cache_mode": args.cache,
            "tools": args.tool_list,
            "runs": runs,
            "summary": summary,
            "table": table,
        }
        args.json.write_text(json.dumps(doc, indent=2, default=str))
        log(f"wrote {args.json}")
    if own_scratch and not args.keep:
        rmtree(scratch)
    else:
        for n in args.tool_list:
            rmtree(scratch / f"restore-{n}")
        if not args.keep:
            rmtree(scratch / "corpus")
    return 0


if __name__ == "__main__":
    sys.exit(main())
