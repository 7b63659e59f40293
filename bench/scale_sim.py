"""Scale model (issue 15.7): what many hosts, many terabytes and many blobs cost haeedge.

Pure arithmetic over the object sizes of the real format, measured here by encoding real
objects with the library (an index object, a pack header, a snapshot, a prune mark, the
in-memory BlobIndex), so the model follows the format when it changes. Nothing is stored and
no server is needed; it prints a table per scenario (docs/scale.md explains it).

Usage: python bench/scale_sim.py [--hosts N] [--tb T] [--blobs N] [--snapshots-per-host N]
                                 [--json OUT]
Without arguments: the scenarios of docs/scale.md (10, 100 and 1,000 hosts).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from haeedge.crypto.openpgp import PassphraseSealer  # noqa: E402
from haeedge.repo.index import BlobIndex, IndexPack, encode_index  # noqa: E402
from haeedge.repo.pack import PackEntry, encode_header  # noqa: E402
from haeedge.repo.packer import INDEX_CHECKPOINT_PACKS  # noqa: E402
from haeedge.repo.repository import INDEX_PART_BYTES  # noqa: E402
from haeedge.repo.snapshot import Snapshot  # noqa: E402

PACK_SIZE = 16 << 20  # the default pack_size
LIST_PAGE = 1000  # keys per S3 ListObjectsV2 page
TB = 10**12


@dataclass
class Sizes:
    """Bytes per item, measured from real encodings."""

    index_per_blob: float
    index_per_pack: float
    seal_overhead: float
    pack_header_per_blob: float
    snapshot_per_tree_blob: float
    snapshot_base: float
    mark_per_pack: float
    ram_per_blob: float


def measure() -> Sizes:
    sealer = PassphraseSealer(b"00" * 32)
    entries = [PackEntry(0, 1, os.urandom(32), i * 1000, 1000, 1200) for i in range(1000)]

    def index_bytes(n_packs: int, per_pack: int) -> int:
        packs = [IndexPack(os.urandom(32).hex(), PACK_SIZE, entries[:per_pack], "") for _ in range(n_packs)]
        return len(encode_index(packs, (), "A" * 40, None))

    one = index_bytes(1, 1000)
    two = index_bytes(2, 1000)
    per_pack_and_blobs = two - one
    small = index_bytes(2, 1) - index_bytes(1, 1)
    per_blob = (per_pack_and_blobs - small) / 999
    per_pack = small - per_blob
    payload = os.urandom(100_000)
    seal_overhead = len(sealer.seal(payload)) - len(payload)
    header = len(encode_header(entries)) / len(entries)
    snap = Snapshot(time="2026-12-06T00:00:00.000000Z", host="web1", paths=["/srv"], kind="full",
                    tree=[os.urandom(32).hex() for _ in range(100)], username="root",
                    summary={"files_new": 1000, "bytes_added": 10**9}, program="haeedge 0.1.0",
                    signer="A" * 40, signature="x" * 330)
    with_100 = len(snap.to_bytes())
    snap.tree = snap.tree[:1]
    base = len(snap.to_bytes())
    per_tree = (with_100 - base) / 99
    mark_per_pack = len(json.dumps([os.urandom(32).hex() for _ in range(1000)])) / 1000
    index = BlobIndex(capacity_hint=200_000)
    for _ in range(200):
        index.add_pack(os.urandom(32), PACK_SIZE, [PackEntry(0, 1, os.urandom(32), j * 10, 10, 10)
                                                   for j in range(1000)])
    ram = index.memory_bytes() / len(index)
    return Sizes(per_blob, per_pack, seal_overhead, header, per_tree, base, mark_per_pack, ram)


@dataclass
class Scenario:
    hosts: int
    tb: float
    blobs: float
    snapshots_per_host: int = 30
    #: Share of the data a daily backup adds (new or changed) per host.
    daily_change: float = 0.01
    #: Tree blobs per snapshot (one per 64 KiB of file list, about 300 files each).
    tree_blobs_per_snapshot: int = 200


def model(s: Scenario, z: Sizes) -> dict:
    data = s.tb * TB
    packs = math.ceil(data / PACK_SIZE)
    blobs_per_pack = s.blobs / packs
    index_plain = s.blobs * z.index_per_blob + packs * z.index_per_pack
    index_objects_compacted = max(1, math.ceil(index_plain / INDEX_PART_BYTES))
    # Between prunes every backup adds index objects: one per 32 packs (or minute) and one at the end.
    new_per_host = data * s.daily_change / s.hosts
    packs_per_backup = max(1, math.ceil(new_per_host / PACK_SIZE))
    index_per_backup = 1 + packs_per_backup // INDEX_CHECKPOINT_PACKS
    index_objects_week = index_objects_compacted + 7 * s.hosts * index_per_backup
    snapshots = s.hosts * s.snapshots_per_host
    key_objects = 2 * s.hosts + 4  # a writer slot and its key record per host, owner slots, manifest
    marks = 2

    def pages(n: float) -> int:
        return max(1, math.ceil(n / LIST_PAGE))

    # A backup: open (list keys, read slots until one opens: on average half), read the index,
    # list and read the snapshots (to choose a parent), list marks, upload, index, snapshot, marks again.
    backup = {
        "LIST": pages(key_objects) + pages(index_objects_week) + pages(snapshots) + 2 * pages(marks),
        "GET": key_objects // 2 + 1 + index_objects_week + snapshots + marks + s.tree_blobs_per_snapshot,
        "PUT": packs_per_backup + index_per_backup + 1,
    }
    # A prune: everything backup reads, every snapshot's file list, the data listing; writes a mark
    # (and a probe), deletes what ripened (assume the daily change becomes garbage after retention).
    garbage_packs = math.ceil(packs * s.daily_change)
    prune = {
        "LIST": pages(key_objects) + pages(index_objects_week) + pages(snapshots) + pages(packs) + pages(marks),
        "GET": key_objects // 2 + 1 + index_objects_week + snapshots + snapshots * s.tree_blobs_per_snapshot + marks,
        "PUT": 2 + index_objects_compacted,
        "DELETE": garbage_packs + index_objects_week + 2,
    }
    return {
        "hosts": s.hosts, "data_tb": s.tb, "blobs": s.blobs, "packs": packs,
        "blobs_per_pack": round(blobs_per_pack, 1),
        "index_gib": round(index_plain / 2**30, 2),
        "index_objects_after_prune": index_objects_compacted,
        "index_objects_after_a_week": index_objects_week,
        "snapshots": snapshots,
        "ram_per_host_gib (index)": round(s.blobs * z.ram_per_blob / 2**30, 2),
        "ram_prune_gib (index + used set)": round(s.blobs * (z.ram_per_blob + 100) / 2**30, 2),
        "mark_mib (1% of packs)": round(garbage_packs * z.mark_per_pack / 2**20, 2),
        "backup_requests": backup,
        "prune_requests": prune,
        "backup_read_mib (index)": round(index_plain / 2**20, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int)
    ap.add_argument("--tb", type=float)
    ap.add_argument("--blobs", type=float)
    ap.add_argument("--snapshots-per-host", type=int, default=30)
    ap.add_argument("--json", help="also write the results as JSON here")
    args = ap.parse_args()
    z = measure()
    if args.hosts or args.tb or args.blobs:
        scenarios = [Scenario(args.hosts or 1000, args.tb or 100, args.blobs or 1e9, args.snapshots_per_host)]
    else:
        scenarios = [Scenario(10, 1, 1e7), Scenario(100, 10, 1e8), Scenario(1000, 100, 1e9)]
    print("measured sizes (bytes):", ", ".join(f"{k} {v:.1f}" for k, v in asdict(z).items()))
    rows = [model(s, z) for s in scenarios]
    keys = [k for k in rows[0] if not isinstance(rows[0][k], dict)]
    width = max(len(k) for k in keys) + 2
    print()
    print("".ljust(width) + "".join(f"{r['hosts']:>14} hosts" for r in rows))
    for k in keys:
        print(k.ljust(width) + "".join(f"{r[k]:>20,}" if isinstance(r[k], (int, float)) else f"{r[k]:>20}"
                                       for r in rows))
    for what in ("backup_requests", "prune_requests"):
        for verb in rows[0][what]:
            label = f"{what.split('_')[0]} {verb}"
            print(label.ljust(width) + "".join(f"{r[what][verb]:>20,}" for r in rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"sizes": asdict(z), "scenarios": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
