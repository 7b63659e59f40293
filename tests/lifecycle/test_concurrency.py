"""Three backups from different hosts into one repository at once, with verify running beside them."""

from __future__ import annotations

import random
import time

from tests.support.lifecycle import random_tree, restore_diffs, snapshot_list, write_files


def test_three_concurrent_backups_and_a_verify(cli, trees, tmp_path):
    handle = trees.init_library_repo(cli.repo_path, chunker=trees.SMALL_CHUNKS, pack_size=1 << 20)
    shared = random.Random(0).randbytes(400_000)  # the same file on every host: deduplication races
    sources = {}
    for n, host in enumerate(("alpha", "beta", "gamma")):
        src = random_tree(tmp_path / host, seed=10 + n, n_files=40, big=2)
        write_files(src, {"common/shared.bin": shared})
        sources[host] = (src, trees.scan(src))
    env = {"HAEEDGE_FAULTS": "put:latency=0.05"}  # long enough to overlap for sure
    procs = {host: cli.popen("--json", "backup", src, "--host", host, env=env)
             for host, (src, _scan) in sources.items()}
    verifies = []
    while any(p.poll() is None for p in procs.values()):
        verifies.append(cli("verify"))
        time.sleep(0.05)
    ids = {}
    for host, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        ids[host] = trees.summary_of(out.decode())["snapshot_id"]
    assert verifies, "the backups ended before verify could run beside them"
    for v in verifies:
        assert v.code == 0, v.describe()
    snaps = snapshot_list(cli)
    assert sorted((s["host"], s["id"]) for s in snaps) == sorted(ids.items())
    cli("verify", "--read-data").ok()
    for host, (src, scan) in sources.items():
        assert not restore_diffs(cli, trees, ids[host], scan, src, tmp_path / f"r-{host}"), host
    # Blobs several hosts uploaded at once are stored more than once; prune keeps exactly one copy.
    cli("prune").ok()
    cli("verify", "--read-data").ok()
    for host, (src, scan) in sources.items():
        assert not restore_diffs(cli, trees, ids[host], scan, src, tmp_path / f"r2-{host}"), host
    assert handle.objects("locks") == []
