"""forget: policies through the CLI, dry runs with reasons, grouping, hidden chain support and --rebase."""

from __future__ import annotations

import shutil

import pytest

from tests.support.lifecycle import files_of, random_tree, restore_diffs, snapshot_ids, snapshot_list, write_files


@pytest.fixture
def repo(cli, trees):
    return trees.init_library_repo(cli.repo_path, chunker=trees.SMALL_CHUNKS)


def _chain(cli, trees, tmp_path, n: int = 5, full_every: str | None = None):
    """n snapshots of one source that changes every time (a file added, one changed, one removed).

    Returns [(snapshot id, scan of the source at that time)], oldest first.
    """
    src = random_tree(tmp_path / "src", seed=1, n_files=12)
    out = []
    for i in range(n):
        if i:
            write_files(src, {f"added{i}.txt": b"new %d\n" % i, "d0/f000.bin": b"changed %d\n" % i})
            victim = src / f"added{i - 1}.txt"
            if i % 2 == 0 and victim.exists():
                victim.unlink()
        args = ["--full-every", full_every] if full_every else []
        sid = cli.backup(src, *args)["snapshot_id"]
        out.append((sid, trees.scan(src)))
    return src, out


def _assert_all_restore(cli, trees, tmp_path, src, expected: dict[str, dict]) -> None:
    for sid, scan in expected.items():
        diffs = restore_diffs(cli, trees, sid, scan, src, tmp_path / f"r-{sid[:8]}")
        assert not diffs, f"snapshot {sid[:8]}: {diffs[:10]}"


def test_dry_run_lists_decisions_with_reasons_and_changes_nothing(cli, repo, trees, tmp_path):
    src, chain = _chain(cli, trees, tmp_path, n=4)
    tag_src = tmp_path / "tagged"
    tag_src.mkdir()
    (tag_src / "x").write_bytes(b"x")
    tagged = cli.backup(tag_src, "--tag", "release")["snapshot_id"]
    before = files_of(repo.path)

    r = cli("forget", "--keep-last", "2", "--keep-tag", "release", "--dry-run", "--json").ok()
    out = r.json()
    assert out["dry_run"] is True
    decisions = {s["id"]: s for g in out["groups"] for s in g["snapshots"]}
    ids = [sid for sid, _s in chain]
    assert [decisions[i]["keep"] for i in ids] == [False, False, True, True]
    assert decisions[ids[3]]["reasons"] == ["last snapshot"]
    assert decisions[ids[0]]["reasons"] == ["no rule keeps it"]
    assert decisions[tagged]["keep"] and "has tag release" in decisions[tagged]["reasons"]
    # The kept incrementals need both removed ones (their chain): both would be kept hidden, nothing rebased.
    assert out["hide"] == sorted(ids[:2]) and decisions[ids[0]]["hidden"] and decisions[ids[1]]["hidden"]
    assert out["rebase"] == [] and not decisions[ids[2]]["rebase"]
    assert sorted(out["kept"]) == sorted([ids[2], ids[3], tagged])
    assert files_of(repo.path) == before

    text = cli("forget", "--keep-last", "2", "--dry-run").ok().stdout
    assert f"remove  {ids[0][:8]}" in text and f"keep    {ids[3][:8]}" in text
    assert "no rule keeps it" in text and "kept hidden as chain support" in text and "would remove 2" in text
    assert "becomes a full snapshot" not in text
    assert files_of(repo.path) == before

    # --rebase: the oldest kept incremental loses its parent: it would be rebased.
    out = cli("forget", "--keep-last", "2", "--keep-tag", "release", "--rebase", "--dry-run", "--json").ok().json()
    decisions = {s["id"]: s for g in out["groups"] for s in g["snapshots"]}
    assert out["rebase"] == [ids[2]] and decisions[ids[2]]["rebase"] is True and out["hide"] == []
    text = cli("forget", "--keep-last", "2", "--rebase", "--dry-run").ok().stdout
    assert "becomes a full snapshot" in text and "would rebase 1" in text
    assert files_of(repo.path) == before


def test_removing_full_and_middle_links_keeps_them_hidden_and_every_kept_id(cli, repo, trees, tmp_path):
    src, chain = _chain(cli, trees, tmp_path, n=6)
    ids = [sid for sid, _s in chain]
    before = {s["id"]: s for s in snapshot_list(cli)}
    assert [s["kind"] for s in before.values()] == ["full"] + ["incremental"] * 5
    # Remove the full (s0) and a middle link (s3): kept s1.. need both, so both stay, hidden.
    r = cli("forget", ids[0], ids[3], "--json").ok().json()
    assert sorted(r["removed"]) == sorted(r["hidden"]) == sorted([ids[0], ids[3]])
    assert r["rebase"] == [] and r["rewritten"] == {}
    after = {s["id"]: s for s in snapshot_list(cli)}
    assert after == {i: before[i] for i in (ids[1], ids[2], ids[4], ids[5])}  # ids and manifests unchanged
    assert len(list((repo.path / "snapshots").iterdir())) == 6 and len(list((repo.path / "forgotten").iterdir())) == 2
    v = cli("verify", "--read-data").ok()
    assert "2 forgotten ones kept hidden" in v.stdout
    _assert_all_restore(cli, trees, tmp_path, src, {sid: scan for sid, scan in chain if sid in after})


def test_rebase_of_dependants_when_removing_full_and_middle_links(cli, repo, trees, tmp_path):
    src, chain = _chain(cli, trees, tmp_path, n=6)
    ids = [sid for sid, _s in chain]
    kinds = [s["kind"] for s in snapshot_list(cli)]
    assert kinds == ["full"] + ["incremental"] * 5
    # Remove the full (s0) and a middle link (s3) with --rebase: s1 and s4 must become fulls.
    r = cli("forget", ids[0], ids[3], "--rebase", "--json").ok().json()
    assert sorted(r["removed"]) == sorted([ids[0], ids[3]])
    assert set(r["rebase"]) == {ids[1], ids[4]}
    rewritten = r["rewritten"]
    assert set(rewritten) == {ids[1], ids[2], ids[4], ids[5]}
    after = {s["id"]: s for s in snapshot_list(cli)}
    assert set(after) == {rewritten[i] for i in (ids[1], ids[2], ids[4], ids[5])}
    assert after[rewritten[ids[1]]]["kind"] == "full" and after[rewritten[ids[4]]]["kind"] == "full"
    assert after[rewritten[ids[2]]]["parent"] == rewritten[ids[1]]
    assert after[rewritten[ids[5]]]["parent"] == rewritten[ids[4]]
    cli("verify", "--read-data").ok()
    _assert_all_restore(cli, trees, tmp_path, src, {rewritten[sid]: scan for sid, scan in chain
                                                   if sid in rewritten})


@pytest.mark.parametrize("rebase", [False, True])
def test_policy_forget_keeps_every_kept_snapshot_restorable(cli, repo, trees, tmp_path, rebase):
    src, chain = _chain(cli, trees, tmp_path, n=7, full_every="3")  # F I I F I I F
    ids = [sid for sid, _s in chain]
    r = cli("forget", "--keep-last", "3", "--json", *(["--rebase"] if rebase else [])).ok().json()
    kept = snapshot_ids(cli)
    assert len(kept) == 3
    expected = {r["rewritten"].get(sid, sid): scan for sid, scan in chain[-3:]}
    assert set(expected) == set(kept) == set(r["kept"])
    if rebase:
        assert set(r["rewritten"]) == {ids[4], ids[5]} and r["hidden"] == []
    else:  # s4, s5 need the full s3: hidden; the first chain (s0..s2) is needed by nothing: deleted
        assert set(kept) == set(ids[-3:]) and r["hidden"] == [ids[3]] and r["rewritten"] == {}
        assert len(list((repo.path / "snapshots").iterdir())) == 4
    cli("verify", "--read-data").ok()
    _assert_all_restore(cli, trees, tmp_path, src, expected)


def test_group_by_and_filters(cli, repo, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "f").write_bytes(d.name.encode())
    made = {}
    for host in ("web1", "web2"):
        for d in (a, b):
            made[(host, d.name)] = [cli.backup(d, "--host", host)["snapshot_id"] for _ in range(2)]

    def plan(*args):
        out = cli("forget", "--dry-run", "--json", *args).ok().json()
        return {s["id"] for g in out["groups"] for s in g["snapshots"] if s["keep"]}, len(out["groups"])

    kept, groups = plan("--keep-last", "1")
    assert groups == 4 and kept == {v[-1] for v in made.values()}
    kept, groups = plan("--keep-last", "1", "--group-by", "host")
    assert groups == 2 and kept == {made[("web1", "b")][-1], made[("web2", "b")][-1]}
    kept, groups = plan("--keep-last", "1", "--group-by", "")
    assert groups == 1 and kept == {made[("web2", "b")][-1]}
    kept, groups = plan("--keep-last", "1", "--host", "web1")
    assert groups == 2 and kept == {made[("web1", "a")][-1], made[("web1", "b")][-1]}

    out = cli("forget", "--keep-last", "1", "--host", "web1", "--json").ok().json()
    # The kept web1 snapshots are incrementals of the removed ones: those stay hidden, no id changes.
    assert set(out["hidden"]) == {made[("web1", "a")][0], made[("web1", "b")][0]} and out["rewritten"] == {}
    assert set(snapshot_ids(cli)) == {made[("web1", "a")][-1], made[("web1", "b")][-1],
                                      *made[("web2", "a")], *made[("web2", "b")]}
    out = cli("forget", "--keep-last", "1", "--host", "web2", "--rebase", "--json").ok().json()
    rw = out["rewritten"]  # with --rebase the kept web2 snapshots are rebased onto new fulls
    assert set(out["rebase"]) == {made[("web2", "a")][-1], made[("web2", "b")][-1]}
    assert set(snapshot_ids(cli)) == {made[("web1", "a")][-1], made[("web1", "b")][-1],
                                      rw[made[("web2", "a")][-1]], rw[made[("web2", "b")][-1]]}


def test_forget_with_prune_frees_space(cli, repo, trees, tmp_path):
    src = random_tree(tmp_path / "src", seed=3, n_files=10, big=2)
    cli.backup(src)
    shutil.rmtree(src / "big")
    write_files(src, {"big/other.bin": b"z" * 300_000})
    last = cli.backup(src)
    scan = trees.scan(src)
    # By default the first (full) snapshot stays hidden: the kept incremental needs it, so its data stays.
    r = cli("forget", "--keep-last", "1", "--prune", "--json").ok().json()
    assert r["hidden"] and r["kept"] == [last["snapshot_id"]] and r["prune"]["bytes_freed"] < 100_000, r
    data_before = repo.size("data")
    # --rebase frees it now (the kept snapshot becomes a full with a new id).
    r = cli("forget", "--keep-last", "1", "--rebase", "--prune", "--json").ok().json()
    assert r["released"] and r["rebase"] == [last["snapshot_id"]], r
    assert r["prune"]["bytes_freed"] > 1_500_000, r["prune"]
    # Exact accounting is tested with prune alone; forget added a small pack for the rebased file list.
    assert abs((data_before - repo.size("data")) - r["prune"]["bytes_freed"]) < 8192
    cli("verify", "--read-data").ok()
    new_id = r["rewritten"].get(last["snapshot_id"], last["snapshot_id"])
    assert not restore_diffs(cli, trees, new_id, scan, src, tmp_path / "r")


def test_interrupted_rebase_leaves_a_consistent_repository_and_the_next_run_cleans_up(cli, repo, trees, tmp_path):
    """A crash after the rewritten snapshots are written but before any deletion: both copies exist.

    Also what an interrupted forget of older versions (which always rebased) leaves.
    """
    src, chain = _chain(cli, trees, tmp_path, n=4)
    saved = {p.name: p.read_bytes() for p in repo.objects("snapshots")}
    r = cli("forget", "--keep-last", "2", "--rebase", "--json").ok().json()
    for name, data in saved.items():  # undo every deletion
        if not (repo.path / "snapshots" / name).exists():
            (repo.path / "snapshots" / name).write_bytes(data)
    assert len(snapshot_ids(cli)) == 4 + len(r["rewritten"])
    cli("verify", "--read-data").ok()
    again = cli("forget", "--keep-last", "2", "--json").ok().json()
    assert set(again["leftovers"]) == set(r["rewritten"])
    final = set(snapshot_ids(cli))
    assert final == {r["rewritten"].get(sid, sid) for sid, _s in chain[-2:]}
    cli("verify", "--read-data").ok()
    _assert_all_restore(cli, trees, tmp_path, src, {r["rewritten"].get(sid, sid): scan for sid, scan in chain[-2:]})


@pytest.mark.parametrize("args, needle", [
    ((), "nothing to do"),
    (("--keep-daily", "-1"), "negative"),
    (("--keep-daily", "many"), "not a count"),
    (("--keep-within", "7 days"), "--keep-within"),
    (("--group-by", "color"), "--group-by"),
    (("--keep-last", "1", "abcdef12"), "either snapshots or"),
    (("--keep-last", "1", "--max-unused", "five"), "--max-unused"),
])
def test_usage_errors(cli, repo, args, needle):
    r = cli("forget", *args)
    assert r.code == 2, r.describe()
    assert needle in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_unknown_snapshot_and_unlimited(cli, repo, tmp_path):
    r = cli("forget", "0123456789abcdef")
    assert r.code == 1 and "no snapshot" in r.stderr, r.describe()
    src = tmp_path / "s"
    src.mkdir()
    for _ in range(3):
        cli.backup(src)
    out = cli("forget", "--keep-last", "unlimited", "--json").ok().json()
    assert out["removed"] == [] and len(snapshot_ids(cli)) == 3


def test_policy_from_a_profile_default_map(cli, repo, tmp_path):
    """Profiles map onto forget's options by parameter name (click default_map)."""
    from click.testing import CliRunner

    from haeedge.cli.app import cli as app

    src = tmp_path / "s"
    src.mkdir()
    ids = [cli.backup(src, "--full")["snapshot_id"] for _ in range(3)]
    base = ["-r", str(repo.path), "--password-file", str(cli.password_file)]
    profile = {"forget": {"keep_last": 2, "keep_tag": ["never"], "group_by": "host"}}
    r = CliRunner().invoke(app, [*base, "forget", "--dry-run", "--json"], default_map=profile)
    assert r.exit_code == 0, r.output
    out = __import__("json").loads(r.output)
    assert out["remove"] == [ids[0]] and out["policy"] == "last 2, tag never"
    # Naming snapshots still works: the profile's policy is not "given here".
    r = CliRunner().invoke(app, [*base, "forget", ids[1][:12], "--json"], default_map=profile)
    assert r.exit_code == 0, r.output
    assert set(snapshot_ids(cli)) == {ids[0], ids[2]}


def test_retention_from_a_config_file_profile(cli, repo, tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    ids = [cli.backup(src, "--full")["snapshot_id"] for _ in range(3)]
    cfg = tmp_path / "haeedge.yaml"
    cfg.write_text(f"profiles:\n  nightly:\n    repository: {repo.path}\n    password_file: {cli.password_file}\n"
                   "    retention:\n      keep_last: 2\n      keep_tag: [keep-forever]\n      prune: true\n")
    r = cli("-c", cfg, "--profile", "nightly", "--json", "forget", unset=("HAEEDGE_REPOSITORY",)).ok().json()
    assert r["policy"] == "last 2, tag keep-forever" and r["removed"] == [ids[0]]
    assert r["prune"] is not None  # prune: true in the profile
    # The command line wins over the profile.
    r = cli("-c", cfg, "--profile", "nightly", "--json", "forget", "--keep-last", "1", "--dry-run").ok().json()
    assert r["policy"] == "last 1, tag keep-forever" and r["remove"] == [ids[1]]
