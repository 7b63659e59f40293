"""rewrite: removing a secret backed up by mistake from full + incremental chains, through the real CLI."""

from __future__ import annotations

import json
import os
import random

import pytest

from haeedge.repo.pack import BLOB_DATA
from haeedge.repo.tree import encode_entry
from tests.support.keys import WriteOnly
from tests.support.lifecycle import files_of, restore_diffs, snapshot_ids, snapshot_list, write_files

SECRET = "conf/secret.key"


@pytest.fixture
def repo(cli, trees):
    return trees.init_library_repo(cli.repo_path, chunker=trees.SMALL_CHUNKS)


def _without(scan: dict, rel: str) -> dict:
    """A scan of the source with one path left out (the restored tree should be exactly that)."""
    return {p: v for p, v in scan.items() if p != rel.encode()}


def _chain(cli, trees, tmp_path):
    """full + two incrementals: the secret changes between the first two and stays in the third; another
    file is deleted after the full; a file is added in the last. Returns src, [(id, scan, secret bytes)]."""
    rng = random.Random(7)
    src = tmp_path / "src"
    files = {f"data/f{i}.bin": rng.randbytes(rng.randrange(2000, 40_000)) for i in range(8)}
    files["gone.bin"] = rng.randbytes(30_000)
    files["notes.txt"] = b"nothing secret here\n" * 50
    secret1 = b"-----BEGIN KEY-----\n" + rng.randbytes(1500).hex().encode() + b"\n"
    files[SECRET] = secret1
    write_files(src, files)
    out = [(cli.backup(src)["snapshot_id"], trees.scan(src), secret1)]
    secret2 = b"-----BEGIN KEY-----\n" + rng.randbytes(1500).hex().encode() + b"\n"
    write_files(src, {SECRET: secret2, "data/f0.bin": rng.randbytes(5000)})
    (src / "gone.bin").unlink()
    out.append((cli.backup(src)["snapshot_id"], trees.scan(src), secret2))
    write_files(src, {"added.txt": b"added later\n"})
    out.append((cli.backup(src)["snapshot_id"], trees.scan(src), secret2))
    kinds = [s["kind"] for s in snapshot_list(cli)]
    assert kinds == ["full", "incremental", "incremental"]
    return src, out


def _doc(repo, sid: str) -> dict:
    with repo.open(load_index=False) as r:
        return json.loads(r.load_snapshot(sid).to_bytes())


def _blob_stored(repo, data: bytes) -> bool:
    with repo.open() as r:
        return r.lookup_blob(r.blob_id(data)) is not None


def test_rewrite_removes_the_secret_from_every_snapshot_of_the_chain(cli, repo, trees, tmp_path):
    src, chain = _chain(cli, trees, tmp_path)
    old_ids = [sid for sid, _scan, _s in chain]
    assert "secret.key" in cli("find", "secret.key").ok().stdout
    assert _blob_stored(repo, chain[0][2]) and _blob_stored(repo, chain[1][2])

    # Dry run: per snapshot what would go (path, count, bytes), and not one object changes.
    before = files_of(repo.path)
    out = cli("--json", "rewrite", "--exclude", "secret.key", "--dry-run").ok().json()
    assert out["dry_run"] is True and out["excludes"] == ["secret.key"] and out["chosen"] == 3
    by_old = {s["old_id"]: s for s in out["snapshots"]}
    assert sorted(by_old) == sorted(old_ids) and out["unchanged"] == []
    secret_path = "/" + str((src / SECRET).relative_to("/"))
    for (sid, _scan, secret), action in zip(chain, ["filter", "filter", "relink"], strict=True):
        s = by_old[sid]
        assert s["removed_paths"] == [secret_path] and s["removed_entries"] == 1, s
        assert s["removed_bytes"] == len(secret) and s["new_id"] is None and s["action"] == action
    assert out["forgotten"] == []
    text = cli("rewrite", "--exclude", "secret.key", "--dry-run").ok().stdout
    assert f"snapshot {old_ids[0][:8]}" in text and secret_path in text and "would rewrite 3 snapshots" in text
    assert files_of(repo.path) == before
    assert snapshot_ids(cli) == old_ids

    # The rewrite itself.
    out = cli("--json", "rewrite", "--exclude", "secret.key").ok().json()
    mapping = {s["old_id"]: s["new_id"] for s in out["snapshots"]}
    assert sorted(mapping) == sorted(old_ids) and len(set(mapping.values())) == 3
    assert sorted(out["forgotten"]) == sorted(old_ids)
    listed = snapshot_list(cli)
    assert [s["id"] for s in listed] == [mapping[i] for i in old_ids]  # the originals are gone, order kept
    assert [s["kind"] for s in listed] == ["full", "incremental", "incremental"]
    assert listed[1]["parent"] == mapping[old_ids[0]] and listed[2]["parent"] == mapping[old_ids[1]]
    for s in listed:  # signed by the owner key, as backup signs
        assert s["signature"]["state"] == "good" and s["signature"]["role"] == "owner", s
    for old in old_ids:
        doc = _doc(repo, mapping[old])
        assert doc["rewritten"]["original"] == old and doc["replaces"] == old
        assert doc["rewritten"]["excludes"] == ["secret.key"]

    # Every rewritten snapshot restores byte for byte as it was, without the secret.
    rel = str((src / SECRET).relative_to(src)).encode()
    for sid, scan, _secret in chain:
        assert rel in scan
        diffs = restore_diffs(cli, trees, mapping[sid], _without(scan, SECRET), src, tmp_path / f"r-{sid[:8]}")
        assert not diffs, diffs[:10]
    assert "0 matches" in cli("find", "secret.key").ok().stdout
    for old in old_ids:
        entries = cli("--json", "ls", mapping[old]).ok().json()["entries"]
        assert not any(e["path"].endswith("secret.key") for e in entries)
        assert any(e["path"].endswith("notes.txt") for e in entries)
    r = cli("--json", "verify", "--read-data").ok().json()
    assert r["ok"] and not r["findings"], r

    # prune frees the secret's data: fewer stored bytes, and no index lists its chunks any more.
    data_before = repo.size("data")
    cli("prune", "--max-unused", "0%").ok()
    assert repo.size("data") < data_before
    assert not _blob_stored(repo, chain[0][2]) and not _blob_stored(repo, chain[1][2])
    with repo.open() as r:
        secret_ids = {r.blob_id(chain[0][2]), r.blob_id(chain[1][2])}
        for pack in repo.objects("data"):  # not in any pack on storage either
            assert not secret_ids & {e.blob_id for e in r.read_pack_header(pack.name)}
        for sid in mapping.values():
            for e in r.iter_entries(r.load_snapshot(sid)):
                for cid, _n in e.chunks or ():
                    assert r.lookup_blob(bytes.fromhex(cid)) is not None
                    assert r.load_blob(bytes.fromhex(cid), BLOB_DATA) not in (chain[0][2], chain[1][2])
    assert cli("--json", "verify", "--read-data").ok().json()["ok"]
    for sid, scan, _secret in chain:
        assert not restore_diffs(cli, trees, mapping[sid], _without(scan, SECRET), src, tmp_path / "again")

    # Again: nothing left to remove, nothing changes.
    before = files_of(repo.path)
    out = cli("--json", "rewrite", "--exclude", "secret.key").ok().json()
    assert out["snapshots"] == [] and sorted(out["unchanged"]) == sorted(mapping.values())
    assert files_of(repo.path) == before


def test_keep_old_keeps_the_originals_and_forget_leaves_them(cli, repo, trees, tmp_path):
    src, chain = _chain(cli, trees, tmp_path)
    old_ids = [sid for sid, _scan, _s in chain]
    out = cli("--json", "rewrite", "--exclude", "*.key", "--keep-old").ok().json()
    assert out["keep_old"] is True and out["forgotten"] == []
    new_ids = [s["new_id"] for s in out["snapshots"]]
    assert sorted(snapshot_ids(cli)) == sorted(old_ids + new_ids)
    for new, old in zip(new_ids, [s["old_id"] for s in out["snapshots"]], strict=True):
        doc = _doc(repo, new)
        assert "replaces" not in doc and doc["rewritten"]["original"] == old
    # A copy that does not claim to replace its original: forget never takes the original for a leftover.
    f = cli("--json", "forget", "--keep-last", "10", "--dry-run").ok().json()
    assert f["leftovers"] == [] and f["remove"] == []
    # The originals still hold the secret; the copies do not.
    assert not restore_diffs(cli, trees, old_ids[2], chain[2][1], src, tmp_path / "old")
    assert not restore_diffs(cli, trees, new_ids[2], _without(chain[2][1], SECRET), src, tmp_path / "new")
    assert cli("--json", "verify").ok().json()["ok"]


def test_only_the_latest_chosen_becomes_a_full_and_its_ancestors_keep_their_ids(cli, repo, trees, tmp_path):
    src, chain = _chain(cli, trees, tmp_path)
    old_ids = [sid for sid, _scan, _s in chain]
    out = cli("--json", "rewrite", "latest", "--exclude", "secret.key").ok().json()
    (only,) = out["snapshots"]
    assert only["old_id"] == old_ids[2] and only["action"] == "rebase" and only["chosen"] is True
    listed = {s["id"]: s for s in snapshot_list(cli)}
    assert set(listed) == {old_ids[0], old_ids[1], only["new_id"]}
    assert listed[only["new_id"]]["kind"] == "full"
    assert not restore_diffs(cli, trees, only["new_id"], _without(chain[2][1], SECRET), src, tmp_path / "a")
    assert not restore_diffs(cli, trees, old_ids[1], chain[1][1], src, tmp_path / "b")  # not chosen: as it was
    assert cli("--json", "verify", "--read-data").ok().json()["ok"]


def test_rewriting_the_full_alone_relinks_and_filters_its_incrementals(cli, repo, trees, tmp_path):
    """The incrementals built on a rewritten snapshot are rewritten too: one of them holds its own copy of the
    changed secret, which must not come back."""
    src, chain = _chain(cli, trees, tmp_path)
    old_ids = [sid for sid, _scan, _s in chain]
    out = cli("--json", "rewrite", old_ids[0], "--exclude", "secret.key").ok().json()
    assert [s["old_id"] for s in out["snapshots"]] == old_ids
    assert [s["chosen"] for s in out["snapshots"]] == [True, False, False]
    new = [s["new_id"] for s in out["snapshots"]]
    assert snapshot_ids(cli) == new
    for n, (_sid, scan, _secret) in zip(new, chain, strict=True):
        assert not restore_diffs(cli, trees, n, _without(scan, SECRET), src, tmp_path / f"r{n[:6]}")


def test_hidden_chain_support_is_rewritten_and_its_original_deleted(cli, repo, trees, tmp_path):
    src, chain = _chain(cli, trees, tmp_path)
    old_ids = [sid for sid, _scan, _s in chain]
    cli("forget", old_ids[0], old_ids[1]).ok()  # both kept hidden: the third needs them
    assert snapshot_ids(cli) == [old_ids[2]]
    out = cli("--json", "rewrite", "--exclude", "secret.key").ok().json()
    # The chosen incremental's unchosen (hidden) ancestors hold the secret: it becomes a full, and they go.
    (only,) = out["snapshots"]
    assert only["action"] == "rebase"
    assert sorted(out["released"]) == sorted(old_ids[:2]) and out["forgotten"] == [old_ids[2]]
    assert snapshot_ids(cli) == [only["new_id"]]
    assert sorted(p.name for p in repo.objects("snapshots")) == [only["new_id"]]
    assert repo.objects("forgotten") == []
    assert not restore_diffs(cli, trees, only["new_id"], _without(chain[2][1], SECRET), src, tmp_path / "r")
    assert cli("--json", "verify", "--read-data").ok().json()["ok"]


def test_nothing_to_remove_changes_nothing(cli, repo, trees, tmp_path):
    _src, chain = _chain(cli, trees, tmp_path)
    before = files_of(repo.path)
    out = cli("--json", "rewrite", "--exclude", "no-such-file", "--exclude", "/elsewhere/*").ok().json()
    assert out["snapshots"] == [] and sorted(out["unchanged"]) == sorted(s for s, _a, _b in chain)
    assert files_of(repo.path) == before
    assert "rewrote 0 snapshots" in cli("rewrite", "--exclude", "nothing-here").ok().stdout
    assert files_of(repo.path) == before


def test_filters_choose_snapshots_and_exclude_file_is_read(cli, repo, trees, tmp_path):
    src, chain = _chain(cli, trees, tmp_path)
    other = tmp_path / "other"
    write_files(other, {"secret.key": b"another host's key\n", "x": b"x"})
    theirs = cli.backup(other, "--host", "db1")["snapshot_id"]
    patterns = tmp_path / "patterns"
    patterns.write_text("# keys\nsecret.key\n")
    out = cli("--json", "rewrite", "--exclude-file", patterns, "--host", "db1").ok().json()
    assert [s["old_id"] for s in out["snapshots"]] == [theirs] and out["chosen"] == 1
    assert set(snapshot_ids(cli)) == {s for s, _a, _b in chain} | {out["snapshots"][0]["new_id"]}
    # A directory pattern removes what is below it, as backup never descends into it.
    out = cli("--json", "rewrite", "--exclude", str(src / "conf"), "--host", os.uname().nodename).ok().json()
    assert len(out["snapshots"]) == 3
    assert all(p.startswith(str(src / "conf")) for s in out["snapshots"] for p in s["removed_paths"])
    assert all(s["removed_entries"] == 2 for s in out["snapshots"])  # the directory and the key
    assert "0 matches" in cli("find", "secret.key").ok().stdout


def test_usage_errors_are_one_line_with_exit_2(cli, repo, trees, tmp_path):
    r = cli("rewrite")
    assert r.code == 2 and "give --exclude" in r.stderr and "Traceback" not in r.stderr, r.describe()
    r = cli("rewrite", "--exclude-file", tmp_path / "missing")
    assert r.code == 2 and "cannot read exclude file" in r.stderr, r.describe()


def test_write_only_host_is_refused_and_the_owner_rewrites_its_snapshots(cli, owner, tmp_path):  # noqa: F811
    """Who may forget may rewrite: the owner. A write-only host cannot even read what it would rewrite."""
    wo = WriteOnly(cli, owner)
    wo.init("web1")
    src = tmp_path / "src"
    write_files(src, {"app.conf": b"setting = 1\n" * 100, "secret.key": b"writer's mistake\n"})
    first = wo.backup("web1", src)["snapshot_id"]
    write_files(src, {"app.conf": b"setting = 2\n" * 100})
    second = wo.backup("web1", src)["snapshot_id"]
    before = files_of(cli.repo_path)
    for args in (("rewrite", "--exclude", "secret.key"), ("rewrite", "--exclude", "secret.key", "--dry-run")):
        r = wo.as_writer("web1", *args)
        assert r.code == 12, r.describe()
        assert "write-only key" in r.stderr and "--identity-file" in r.stderr and "Traceback" not in r.stderr
        assert len([ln for ln in r.stderr.splitlines() if ln.startswith("haeedge: error")]) == 1, r.stderr
    assert files_of(cli.repo_path) == before

    out = wo.as_owner("--json", "rewrite", "--exclude", "secret.key").ok().json()
    assert [s["old_id"] for s in out["snapshots"]] == [first, second]
    listed = wo.as_owner("--json", "snapshots").ok().json()
    assert [s["id"] for s in listed] == [s["new_id"] for s in out["snapshots"]]
    for s in listed:  # the writer's snapshots, now signed by the owner key (still host web1)
        assert s["host"] == "web1" and s["signature"]["state"] == "good" and s["signature"]["role"] == "owner"
    target = tmp_path / "out"
    wo.as_owner("restore", "latest", "--target", target).ok()
    restored = target / str(src).lstrip("/")
    assert (restored / "app.conf").read_bytes() == b"setting = 2\n" * 100
    assert not (restored / "secret.key").exists()
    assert wo.as_owner("--json", "verify", "--read-data").ok().json()["ok"]
    # The writer continues its chain: its own view no longer holds the owner's rewrites, so it starts a new one.
    third = wo.backup("web1", src)
    assert third["kind"] == "full" and third["snapshot_id"] not in {s["id"] for s in listed}


def test_originals_left_by_an_interrupted_rewrite_are_removed_by_the_next_run(cli, repo, trees, tmp_path):
    """A crash after the copies were stored and before the originals were forgotten: both restore, and the
    next rewrite (or forget) removes the originals instead of rewriting them again."""
    src, chain = _chain(cli, trees, tmp_path)
    old_ids = [sid for sid, _scan, _s in chain]
    saved = {sid: (repo.path / "snapshots" / sid).read_bytes() for sid in old_ids}
    mapping = {s["old_id"]: s["new_id"] for s in cli("--json", "rewrite", "--exclude", "secret.key").ok().json()
               ["snapshots"]}
    for sid, data in saved.items():  # the state the crash left: the originals were never deleted
        (repo.path / "snapshots" / sid).write_bytes(data)
    assert sorted(snapshot_ids(cli)) == sorted(old_ids + list(mapping.values()))
    assert cli("--json", "verify").ok().json()["ok"]
    assert not restore_diffs(cli, trees, old_ids[2], chain[2][1], src, tmp_path / "orig")

    out = cli("--json", "rewrite", "--exclude", "secret.key").ok().json()
    assert out["snapshots"] == [] and sorted(out["forgotten"]) == sorted(old_ids)
    assert snapshot_ids(cli) == [mapping[i] for i in old_ids]
    assert cli("--json", "verify", "--read-data").ok().json()["ok"]
    for sid, scan, _secret in chain:
        assert not restore_diffs(cli, trees, mapping[sid], _without(scan, SECRET), src, tmp_path / "r")


@pytest.mark.slow
def test_sigkill_at_random_points_leaves_a_repository_that_verifies(cli, repo, trees, tmp_path):
    """Kill -9 during a rewrite (storage latency stretches it): verify passes, every listed snapshot restores
    as its original or as a copy without the secret, each backup is still there, and a rerun finishes."""
    import shutil
    import signal
    import subprocess
    import time

    src, chain = _chain(cli, trees, tmp_path)
    old_ids = [sid for sid, _scan, _s in chain]
    scans = {sid: scan for sid, scan, _s in chain}
    faults = "put|delete:latency=0.08"
    rng = random.Random(1206)
    kills = 8
    duration = None
    both = 0  # kills that left originals and copies side by side
    for n in range(kills + 1):
        work = tmp_path / f"repo{n}"
        shutil.copytree(repo.path, work)
        env = {"HAEEDGE_REPOSITORY": str(work), "HAEEDGE_FAULTS": faults}
        start = time.monotonic()
        proc = cli.popen("rewrite", "--exclude", "secret.key", env=env, start_new_session=True)
        if duration is None:  # the first run measures an uninterrupted rewrite
            proc.communicate(timeout=120)
            assert proc.returncode == 0
            duration = time.monotonic() - start
            continue
        try:
            proc.wait(timeout=rng.uniform(0.3, duration))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        env = {"HAEEDGE_REPOSITORY": str(work)}
        cli("unlock", env=env).ok()  # the killed run's lock (its process is gone: stale)
        v = cli("--json", "verify", "--read-data", env=env)
        assert v.code == 0 and v.json()["ok"], f"kill #{n}: {v.describe()}"
        listed = [s["id"] for s in cli("--json", "snapshots", env=env).ok().json()]
        handle = type(repo)(work)
        originals_seen = set()
        for sid in listed:
            doc = _doc(handle, sid) if sid not in scans else None
            orig = sid if doc is None else doc["rewritten"]["original"]
            while orig not in scans:  # a copy of a copy (a rerun re-linked or rebased it)
                orig = _doc(handle, orig)["rewritten"]["original"]
            originals_seen.add(orig)
            expected = scans[orig] if doc is None else _without(scans[orig], SECRET)
            r = cli("restore", sid, "--target", tmp_path / "t", env=env)
            assert r.code == 0, r.describe()
            diffs = trees.differences(expected, trees.scan(trees.restored_path(tmp_path / "t", src)))
            shutil.rmtree(tmp_path / "t")
            assert not diffs, f"kill #{n}, snapshot {sid[:8]}: {diffs[:5]}"
        assert originals_seen == set(old_ids), f"kill #{n}: a backup was lost"
        both += any(s in scans for s in listed) and any(s not in scans for s in listed)
        cli("rewrite", "--exclude", "secret.key", env=env).ok()
        after = cli("--json", "snapshots", env=env).ok().json()
        assert len(after) == 3 and all(s["id"] not in scans for s in after), f"kill #{n}: {after}"
        assert "0 matches" in cli("find", "secret.key", env=env).ok().stdout
        assert cli("--json", "verify", env=env).ok().json()["ok"]
        shutil.rmtree(work)
    assert both >= 2, "no kill landed between the copies and the deletion of the originals"


@pytest.mark.parametrize("server", ["s3", "sshd"])
def test_rewrite_on_network_backends(cli, trees, tmp_path, request, server):
    srv = request.getfixturevalue(server)
    name = f"rewrite-{os.getpid()}-{tmp_path.name}"
    if server == "s3":
        env = {**srv.env, "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
               "HAEEDGE_REPOSITORY": srv.url_for(name)}
    else:
        env = {"HAEEDGE_SFTP_KEY_FILE": srv.key_file, "HAEEDGE_SFTP_KNOWN_HOSTS": srv.known_hosts,
               "SSH_AUTH_SOCK": "", "HAEEDGE_REPOSITORY": srv.url_for(str(tmp_path / name))}
    cli("init", env=env).ok()
    src = tmp_path / "src"
    write_files(src, {"a.txt": b"a\n" * 1000, SECRET: b"key one\n"})
    first = trees.summary_of(cli("--json", "backup", src, env=env).ok().stdout)["snapshot_id"]
    write_files(src, {SECRET: b"key two\n", "b.txt": b"b\n" * 500})
    second = trees.summary_of(cli("--json", "backup", src, env=env).ok().stdout)["snapshot_id"]
    scan = trees.scan(src)
    out = cli("--json", "rewrite", "--exclude", "secret.key", env=env).ok().json()
    assert [s["old_id"] for s in out["snapshots"]] == [first, second] and sorted(out["forgotten"]) == sorted(
        [first, second])
    new = out["snapshots"][1]["new_id"]
    assert cli("restore", new, "--target", tmp_path / "t", env=env).code == 0
    assert not trees.differences(_without(scan, SECRET), trees.scan(trees.restored_path(tmp_path / "t", src)))
    assert cli("--json", "prune", "--max-unused", "0%", env=env).ok().json()["bytes_freed"] > 0
    assert cli("--json", "verify", "--read-data", env=env).ok().json()["ok"]


def test_other_names_of_a_hardlinked_secret_stay_whole(cli, repo, trees, tmp_path):
    """Excludes are by path: another hard link to the excluded file keeps its content and restores."""
    src = tmp_path / "src"
    write_files(src, {"secret.key": b"linked secret\n" * 10, "plain.txt": b"plain\n"})
    os.link(src / "secret.key", src / "second-name")
    scan = trees.scan(src)
    sid = cli.backup(src)["snapshot_id"]
    out = cli("--json", "rewrite", "--exclude", "secret.key").ok().json()
    (only,) = out["snapshots"]
    assert only["old_id"] == sid and only["removed_entries"] == 1
    cli("restore", only["new_id"], "--target", tmp_path / "t").ok()
    restored = trees.restored_path(tmp_path / "t", src)
    assert (restored / "second-name").read_bytes() == b"linked secret\n" * 10
    assert not (restored / "secret.key").exists()
    assert not trees.differences(_without(scan, "secret.key"), trees.scan(restored), fields=("type", "size",
                                                                                              "sha256", "mode"))


def test_an_untrusted_snapshot_is_never_re_signed_even_with_allow_untrusted(cli, repo, trees, tmp_path):
    """The owner's signature on a copy would launder a snapshot a writer forged: it is left as it is."""
    src, chain = _chain(cli, trees, tmp_path)
    with repo.open(load_index=False) as r:
        forged = r.load_snapshot(chain[0][0])
        forged.host, forged.signer, forged.signature, forged.tags = "victim", None, None, ["forged"]
        forged_id = r.put_object("snapshots", r.seal("meta", forged.to_bytes()))
    r = cli("--json", "--allow-untrusted", "rewrite", "--exclude", "secret.key")
    assert r.code == 0, r.describe()
    out = r.json()
    assert forged_id not in [s["old_id"] for s in out["snapshots"]] and len(out["snapshots"]) == 3
    assert f"snapshot {forged_id[:8]} (host victim) is not trusted" in r.stderr
    listed = {s["id"]: s for s in cli("--json", "snapshots").ok().json()}
    assert listed[forged_id]["signature"]["state"] == "unsigned"  # still there, still unsigned
    assert all(s["signature"]["state"] == "good" for sid, s in listed.items() if sid != forged_id)


def test_an_incremental_that_deleted_the_secret_keeps_its_id_when_chosen_alone(cli, repo, trees, tmp_path):
    """Its deletion marker is what hides the secret its unchosen full holds: nothing to change there. Chosen
    with the full, the marker goes with the secret and the chain is re-linked."""
    src = tmp_path / "src"
    write_files(src, {"a.txt": b"a\n" * 100, SECRET: b"to be deleted\n"})
    s1 = cli.backup(src)["snapshot_id"]
    scan1 = trees.scan(src)
    (src / SECRET).unlink()
    s2 = cli.backup(src)["snapshot_id"]
    scan2 = trees.scan(src)
    before = files_of(repo.path)
    out = cli("--json", "rewrite", s2, "--exclude", "secret.key").ok().json()
    assert out["snapshots"] == [] and out["unchanged"] == [s2]
    assert files_of(repo.path) == before
    out = cli("--json", "rewrite", "--exclude", "secret.key").ok().json()
    assert [(s["old_id"], s["action"], s["removed_entries"]) for s in out["snapshots"]] == [
        (s1, "filter", 1), (s2, "filter", 0)]  # s2 loses only its deletion marker
    new1, new2 = (s["new_id"] for s in out["snapshots"])
    assert not restore_diffs(cli, trees, new1, _without(scan1, SECRET), src, tmp_path / "r1")
    assert not restore_diffs(cli, trees, new2, scan2, src, tmp_path / "r2")
    with repo.open(load_index=True) as r:
        assert not any(b"secret" in encode_entry(e) for e in r.iter_tree(r.load_snapshot(new2).tree))
