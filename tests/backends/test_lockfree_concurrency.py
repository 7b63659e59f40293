"""Proof under concurrency (issue 15.7): 8 hosts back up into one repository while 2 prunes run, with
random SIGKILLs, on the S3 test server (moto) and on SFTP (sshd); no locks anywhere.

Seeded (``HAEEDGE_CONCURRENCY_SEED`` overrides the seed; the held-back run uses more hosts and kills
through ``HAEEDGE_CONCURRENCY_HOSTS``). Afterwards every snapshot that was saved restores byte for
byte, ``verify --read-data`` passes, and a following backup and prune succeed. Prune runs with a
real grace period (``--grace``), so the first prune of each pair marks and the second, after the
grace period, deletes: both phases overlap the backups.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from haeedge.backends import open_backend
from haeedge.repo.config import RepositoryConfig
from haeedge.repo.repository import Repository
from tests.support.repos import CHEAP_S2K, PASSWORD, SMALL_CHUNKS

SEED = int(os.environ.get("HAEEDGE_CONCURRENCY_SEED", "20261206"))
HOSTS = int(os.environ.get("HAEEDGE_CONCURRENCY_HOSTS", "8"))
GRACE = 12  # seconds: long enough for a small backup to finish after a mark, short enough for one test
#: Clock allowance: every process runs on this machine (the default, 5 min, would make every mark
#: look about to ripen to a backup, and fail backups that a concurrent prune marked).
ENV = {"HAEEDGE_MAX_CLOCK_SKEW": "1s", "HAEEDGE_PRUNE_GRACE": f"{GRACE}s"}


def _storage(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    if kind == "sftp":
        srv = request.getfixturevalue("sshd")
        location, options = srv.url_for(str(tmp_path / "sftp-repo")), srv.options()
        env = {"HAEEDGE_SFTP_KEY_FILE": srv.key_file, "HAEEDGE_SFTP_KNOWN_HOSTS": srv.known_hosts,
               "SSH_AUTH_SOCK": ""}
    else:
        srv = request.getfixturevalue("s3")
        location, options = srv.url_for(f"lockfree-{uuid.uuid4().hex[:10]}"), srv.options()
        env = {**srv.env, "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
               "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    config = RepositoryConfig(repository_id=os.urandom(32).hex(), chunker=SMALL_CHUNKS, pack_size=1 << 20)
    backend = open_backend(location, options)
    try:
        Repository.init(backend, PASSWORD, config=config, s2k_count_byte=CHEAP_S2K).close()
    finally:
        backend.close()
    return {**env, **ENV, "HAEEDGE_REPOSITORY": location}


def _tree(root: Path, rng: random.Random, shared: bytes) -> Path:
    """A few files per host, one of them the same on every host (deduplication races)."""
    root.mkdir(parents=True)
    (root / "shared.bin").write_bytes(shared)
    for i in range(rng.randrange(3, 7)):
        (root / f"f{i}.bin").write_bytes(rng.randbytes(rng.randrange(1000, 120_000)))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["s3", "sftp"])
def test_eight_hosts_back_up_while_two_prunes_run_with_random_kills(kind, cli, trees, tmp_path, request):
    env = _storage(kind, tmp_path, request)
    rng = random.Random(f"{SEED}-{kind}")
    shared = rng.randbytes(200_000)
    hosts = [f"host{i}" for i in range(HOSTS)]
    sources = {h: _tree(tmp_path / h, rng, shared) for h in hosts}
    scans = {h: trees.scan(src) for h, src in sources.items()}
    # Something for the prunes to find: an earlier backup, forgotten.
    old = tmp_path / "old"
    _tree(old, rng, rng.randbytes(50_000))
    first = cli("--json", "backup", old, "--host", "old", env=env).ok().json()["snapshot_id"]
    cli("forget", first, env=env).ok()
    time.sleep(GRACE + 0.5)  # its packs are older than the grace period now: the prunes mark them

    started = time.monotonic()
    # Seeded plan: who starts when, and which processes are killed when.
    # Doomed backups are killed a random time after they start; their uploads are slowed down more
    # (1.5 s per store), so that most kills land while they write.
    doomed = set(rng.sample(hosts, max(2, HOSTS // 4)))
    plan = [("backup", h, rng.uniform(0, 4), rng.uniform(2.0, 5.0) if h in doomed else None) for h in hosts]
    plan += [("prune", f"prune{i}", rng.uniform(0, 3), rng.uniform(0.5, 4) if i == 1 else None) for i in range(2)]
    results: dict[str, list[tuple[int, str, str]]] = {}

    def run(item) -> None:
        what, name, start_at, kill_after = item
        time.sleep(start_at)
        out: list[tuple[int, str, str]] = results.setdefault(name, [])
        rounds = 2 if what == "prune" else 1
        for n in range(rounds):
            if what == "backup":
                args = ("--json", "backup", sources[name], "--host", name)
            else:
                args = ("--json", "prune")
            latency = "1.5" if kill_after is not None else "0.05"
            proc = cli.popen(*args, env={**env, "HAEEDGE_FAULTS": f"put:latency={latency}"} if what == "backup"
                             else env, start_new_session=True)
            deadline = time.monotonic() + (kill_after if kill_after is not None and n == 0 else 1e9)
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate(timeout=120)
            out.append((proc.returncode, stdout.decode(), stderr.decode()))
            if what == "prune" and n == 0:
                time.sleep(GRACE + 1)  # the second run finds the first one's marks ripe

    with ThreadPoolExecutor(len(plan)) as pool:
        list(pool.map(run, plan))
    busy = time.monotonic() - started

    saved: dict[str, str] = {}
    for name, runs in results.items():
        for code, stdout, stderr in runs:
            text = stdout + stderr
            assert "Traceback" not in text, text
            # 0 done, -9 killed, 11: a prune marked data this backup used and its grace ran out.
            assert code in (0, -signal.SIGKILL, 11), (name, code, text[-2000:])
            if code == 11:
                assert "a prune marked data this backup uses" in text or "was deleted (forget)" in text, text
            if code == 0 and name in sources:
                saved[name] = trees.summary_of(stdout)["snapshot_id"]
    assert any(r[0] == -signal.SIGKILL for h in hosts for r in results[h]), \
        ("no backup was killed", {n: [r[0] for r in rs] for n, rs in results.items()}, doomed)
    killed = sum(1 for name in sources for r in results.get(name, ()) if r[0] == -signal.SIGKILL)
    stopped = sum(1 for name in sources for r in results.get(name, ()) if r[0] == 11)
    # Exit 11 is the safe answer to a mark that ripens under a backup; with packs younger than the
    # grace period never marked, most backups that were not killed save their snapshot.
    assert len(saved) >= (HOSTS - killed) // 2, (killed, stopped, saved)

    pruned = [json.loads(r[1].strip().splitlines()[-1])
              for name in ("prune0", "prune1") for r in results[name] if r[0] == 0]
    assert sum(p["packs_marked"] for p in pruned) >= 1, pruned  # phase 1 ran beside the backups

    listed = {s["id"]: s for s in cli("--json", "snapshots", env=env).ok().json()}
    assert set(saved.values()) <= set(listed)
    v = cli("verify", "--read-data", env=env)
    assert v.code == 0, v.describe()

    def restore(item) -> list:
        host, sid = item
        target = tmp_path / f"restore-{host}"
        cli("restore", sid, "--target", target, env=env).ok()
        diffs = trees.differences(scans[host], trees.scan(trees.restored_path(target, sources[host])))
        shutil.rmtree(target)
        return diffs

    with ThreadPoolExecutor(4) as pool:
        for (host, _sid), diffs in zip(saved.items(), pool.map(restore, saved.items()), strict=True):
            assert not diffs, (host, diffs[:5])
    # A following backup and a prune (whose marks from above are ripe by now, or will be) succeed.
    cli("backup", sources[hosts[0]], "--host", hosts[0], env=env).ok()
    time.sleep(max(0.0, GRACE + 1 - (time.monotonic() - started - busy)))
    final = cli("--json", "prune", env=env).ok().json()
    # Phase 2 deleted the forgotten backup's packs (in the concurrent phase or, at the latest, now).
    assert sum(p["packs_deleted"] for p in [*pruned, final]) >= 1, (pruned, final)
    cli("verify", "--read-data", env=env).ok()
    print(f"\n{kind}: {len(saved)} of {HOSTS} backups saved, {killed} killed, {stopped} stopped (11); "
          f"concurrent phase {busy:.1f}s, "
          f"total {time.monotonic() - started:.1f}s")
