"""forget keeps kept snapshots' ids: forgotten parents stay as hidden chain support (issue 12, defect 3).

Through the real CLI: ids and manifests of kept snapshots are unchanged, every
kept snapshot restores byte for byte, the hidden full is neither listed nor
counted by retention, it goes (with its data, after prune) once nothing kept
needs it, a hidden snapshot rewritten by ``tag`` stays hidden, and a SIGKILL
at random points of ``forget`` leaves a repository that verifies.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.crash import check_after_kill, crash_env, kill_at, timed_run
from tests.support.lifecycle import (
    MiB,
    copy_repo,
    files_of,
    random_tree,
    restore_diffs,
    snapshot_ids,
    snapshot_list,
    write_files,
)


@pytest.fixture
def repo(cli, trees):
    return trees.init_library_repo(cli.repo_path, chunker=trees.SMALL_CHUNKS)


def _history(cli, trees, tmp_path, n: int = 4):
    """A full holding a 1 MiB file that the later (incremental) snapshots no longer have.

    Returns (source, [(snapshot id, scan)], oldest first).
    """
    src = random_tree(tmp_path / "src", seed=11, n_files=10, big=1)
    out = [(cli.backup(src)["snapshot_id"], trees.scan(src))]
    shutil.rmtree(src / "big")
    for i in range(1, n):
        write_files(src, {f"new{i}.txt": b"new %d\n" % i, "d1/f001.bin": b"changed %d\n" % i})
        out.append((cli.backup(src)["snapshot_id"], trees.scan(src)))
    return src, out


def _hook_profile(cli, tmp_path) -> dict:
    dump = tmp_path / "hook.json"
    hook = [sys.executable, "-c", f"import json, os; open({str(dump)!r}, 'w').write(json.dumps(dict(os.environ)))"]
    cfg = tmp_path / "haeedge.yaml"
    cfg.write_text(f"profiles:\n  nightly:\n    repository: {cli.repo_path}\n"
                   f"    password_file: {cli.password_file}\n"
                   f"    hooks:\n      on_success: {json.dumps(hook)}\n")
    return {"HAEEDGE_CONFIG": str(cfg), "HAEEDGE_PROFILE": "nightly"}


def test_forgetting_the_full_keeps_every_kept_id_and_restores(cli, repo, trees, tmp_path):
    src, chain = _history(cli, trees, tmp_path, n=4)
    ids = [sid for sid, _scan in chain]
    before = {s["id"]: s for s in snapshot_list(cli)}
    assert [before[i]["kind"] for i in ids] == ["full"] + ["incremental"] * 3

    dry = cli("forget", "--keep-last", "3", "--dry-run").ok().stdout
    assert f"remove  {ids[0][:8]}" in dry and "kept hidden as chain support" in dry
    assert all(f"keep    {i[:8]}" in dry for i in ids[1:])

    env = _hook_profile(cli, tmp_path)
    out = cli("--json", "forget", "--keep-last", "3", env=env, unset=("HAEEDGE_REPOSITORY",)).ok().json()
    assert out["removed"] == out["hidden"] == [ids[0]] and out["rewritten"] == {} and out["rebase"] == []
    assert sorted(out["kept"]) == sorted(ids[1:])
    hook = json.loads((tmp_path / "hook.json").read_text())
    assert hook["HAEEDGE_COMMAND"] == "forget" and sorted(hook["HAEEDGE_KEPT"].split()) == sorted(ids[1:])
    assert hook["HAEEDGE_FORGOTTEN"] == hook["HAEEDGE_HIDDEN"] == ids[0]

    # Kept: same ids, same manifests, each restores byte for byte (through the hidden full).
    after = {s["id"]: s for s in snapshot_list(cli)}
    assert after == {i: before[i] for i in ids[1:]}
    for sid, scan in chain[1:]:
        assert not restore_diffs(cli, trees, sid, scan, src, tmp_path / f"r-{sid[:8]}")
    # The hidden full: still stored, not listed, not found by id, not counted by retention, checked by verify.
    assert (repo.path / "snapshots" / ids[0]).exists()
    r = cli("restore", ids[0][:12], "--target", tmp_path / "nope")
    assert r.code == 1 and "was forgotten" in r.stderr, r.describe()
    again = cli("forget", "--keep-last", "3", "--dry-run", "--json").ok().json()
    considered = [s["id"] for g in again["groups"] for s in g["snapshots"]]
    assert sorted(considered) == sorted(ids[1:]) and again["remove"] == []
    v = cli("--json", "verify", "--read-data").ok().json()
    assert v["snapshots"] == 3 and v["hidden_snapshots"] == 1 and v["ok"]
    # Prune keeps the hidden full's data (the kept incrementals need its unchanged files).
    assert cli("--json", "prune").ok().json()["bytes_freed"] < 100_000
    for sid, scan in chain[1:]:
        assert not restore_diffs(cli, trees, sid, scan, src, tmp_path / f"r2-{sid[:8]}")

    # A new chain; then forgetting the old chain's last kept snapshots releases the hidden full.
    newest = cli.backup(src, "--full")["snapshot_id"]
    newest_scan = trees.scan(src)
    data_before = repo.size("data")
    out = cli("forget", "--keep-last", "1", "--prune", "--json").ok().json()
    assert sorted(out["removed"]) == sorted(ids[1:]) and out["hidden"] == [] and out["released"] == [ids[0]]
    assert out["kept"] == [newest]
    assert snapshot_ids(cli) == [newest]
    assert sorted(p.name for p in (repo.path / "snapshots").iterdir()) == [newest]
    assert not list((repo.path / "forgotten").iterdir())
    assert out["prune"]["bytes_freed"] > 0.9 * MiB  # the full's 1 MiB file is gone
    assert data_before - repo.size("data") == out["prune"]["bytes_freed"]
    cli("verify", "--read-data").ok()
    assert not restore_diffs(cli, trees, newest, newest_scan, src, tmp_path / "r-newest")


def test_a_hidden_snapshot_rewritten_by_tag_stays_hidden(cli, repo, trees, tmp_path):
    src, chain = _history(cli, trees, tmp_path, n=4)
    ids = [sid for sid, _scan in chain]
    out = cli("forget", ids[1], "--json").ok().json()  # a middle link: s2 and s3 still need it
    assert out["hidden"] == [ids[1]]
    changed = cli("tag", ids[0], "--add", "keep", "--json").ok().json()["changed"]
    new_of = {c["old_id"]: c["new_id"] for c in changed}
    assert set(new_of) == set(ids)  # the tagged full and every dependant (the hidden one too) re-linked
    listed = snapshot_ids(cli)
    assert sorted(listed) == sorted(new_of[i] for i in (ids[0], ids[2], ids[3]))
    assert len(list((repo.path / "forgotten").iterdir())) == 1
    v = cli("--json", "verify").ok().json()
    assert v["hidden_snapshots"] == 1 and not [f for f in v["findings"] if f["severity"] == "warning"], v
    for sid, scan in chain[2:]:
        assert not restore_diffs(cli, trees, new_of[sid], scan, src, tmp_path / f"r-{sid[:8]}")


def test_a_stale_marker_is_reported_and_removed_by_the_next_forget(cli, repo, trees, tmp_path):
    """What a forget killed between deleting a hidden snapshot and its marker leaves."""
    src, chain = _history(cli, trees, tmp_path, n=3)
    ids = [sid for sid, _scan in chain]
    cli("forget", ids[0]).ok()
    (marker,) = (repo.path / "forgotten").iterdir()
    saved = marker.read_bytes()
    cli("forget", ids[1], ids[2]).ok()
    assert not list((repo.path / "snapshots").iterdir())
    marker.write_bytes(saved)
    v = cli("-v", "verify").ok()
    assert "which is gone" in v.stdout
    cli.backup(src)
    cli("forget", "--keep-last", "1").ok()
    assert not list((repo.path / "forgotten").iterdir())


@pytest.mark.slow
def test_sigkill_forget_at_random_points(cli, trees, tmp_path):
    """Kill forget (hiding a snapshot, deleting an old chain, deleting stale markers) at random times."""
    handle = trees.init_library_repo(tmp_path / "baseline", chunker=trees.SMALL_CHUNKS)
    env = crash_env(handle.path)
    src = random_tree(tmp_path / "src", seed=5, n_files=8)
    made = []
    for i in range(8):  # two chains: F I I I, F I I I
        write_files(src, {f"n{i}.txt": b"%d\n" % i})
        args = ("--full",) if i == 4 else ()
        r = cli("--json", "backup", *args, src, env=env).ok()
        made.append((trees.summary_of(r.stdout)["snapshot_id"], trees.scan(src)))
    # First forget: the second chain's full gets hidden; the killed run hides s5 and deletes s0..s3.
    cli("forget", made[4][0], env=env).ok()
    keep = made[6:]
    expected = {sid: (src, scan) for sid, scan in keep}
    args = ("forget", "--keep-last", "2")
    faults = "put|delete:latency=0.05"
    measure = copy_repo(handle.path, tmp_path / "measure")
    duration = timed_run(cli, measure, args, faults)
    shutil.rmtree(measure)
    baseline = files_of(handle.path)
    rng = random.Random(2024)
    kills = 10
    delays = [rng.uniform(0.0, duration * 1.05) for _ in range(kills)]

    def one(n: int) -> str:
        repo_path = copy_repo(handle.path, tmp_path / f"repo{n}")
        killed = kill_at(cli, repo_path, args, faults, delays[n])
        now = files_of(repo_path)
        gone = [k for k in baseline if k.startswith("snapshots/") and k not in now]
        phase = "not killed" if not killed else "deleting" if gone else "planning or hiding"
        listed = check_after_kill(cli, trees, repo_path, expected, tmp_path, n)
        # Nothing forgotten reappears: whatever is listed was listed before (the killed run only removes).
        assert set(listed) <= {sid for sid, _s in made} - {made[4][0]}, f"kill #{n}"
        out = cli("--json", "forget", *args[1:], env=crash_env(repo_path)).ok().json()
        assert sorted(out["kept"]) == sorted(sid for sid, _s in keep)
        assert sorted(snapshot_ids_at(cli, repo_path)) == sorted(sid for sid, _s in keep)
        v = cli("-v", "--json", "verify", env=crash_env(repo_path)).ok().json()
        assert not [f for f in v["findings"] if f["severity"] == "warning"], v["findings"]
        assert sorted(p.name for p in (repo_path / "snapshots").iterdir()) == sorted(
            [made[4][0], made[5][0]] + [sid for sid, _s in keep])
        check_after_kill(cli, trees, repo_path, expected, tmp_path, n + 100)
        shutil.rmtree(repo_path)
        return phase

    with ThreadPoolExecutor(2) as pool:
        phases = list(pool.map(one, range(kills)))
    print(f"\nforget kill points: {phases} (uninterrupted run {duration:.2f}s)")
    assert phases.count("not killed") <= 3 and "deleting" in phases, phases


def snapshot_ids_at(cli, repo_path) -> list[str]:
    return [s["id"] for s in cli("snapshots", "--json", env=crash_env(repo_path)).ok().json()]


def test_copy_keeps_hidden_chain_support_hidden_in_the_target(cli, repo, trees, tmp_path):
    src, chain = _history(cli, trees, tmp_path, n=3)
    ids = [sid for sid, _scan in chain]
    cli("forget", ids[0]).ok()
    target = {"HAEEDGE_REPOSITORY": str(tmp_path / "target")}
    cli("init", env=target).ok()
    out = cli("--json", "copy", "--to", tmp_path / "target").ok().json()
    copy_of = {c["source"]: c["target"] for c in out["copied"]}
    assert set(copy_of) == set(ids)  # the hidden full is copied as chain support
    listed = [s["id"] for s in cli("--json", "snapshots", env=target).ok().json()]
    assert sorted(listed) == sorted(copy_of[i] for i in ids[1:])
    v = cli("--json", "verify", env=target).ok().json()
    assert v["snapshots"] == 2 and v["hidden_snapshots"] == 1
    r = cli("restore", copy_of[ids[2]], "--target", tmp_path / "r", env=target)
    assert r.code == 0, r.describe()
    assert not trees.differences(chain[2][1], trees.scan(trees.restored_path(tmp_path / "r", src)))


def test_a_repository_from_before_forget_markers_has_no_forgotten_folder(cli, repo, trees, tmp_path):
    (repo.path / "forgotten").rmdir()  # what every repository written before format.md 8.1 looks like
    src, chain = _history(cli, trees, tmp_path, n=2)
    ids = [sid for sid, _scan in chain]
    assert snapshot_ids(cli) == ids
    cli("verify").ok()
    out = cli("forget", ids[0], "--json").ok().json()
    assert out["hidden"] == [ids[0]] and snapshot_ids(cli) == [ids[1]]
    assert len(list((repo.path / "forgotten").iterdir())) == 1
    assert not restore_diffs(cli, trees, ids[1], chain[1][1], src, tmp_path / "r")
