"""Golden repositories: repositories written by an old haeedge stay readable, with the same snapshot ids.

``tests/golden/repos/<version>/`` holds repositories written by the haeedge of
the day that format version was current (tests/golden/make_golden.py, never
rerun for an existing version), the test-only credentials that open them and a
manifest of what they hold. Each test unpacks a fresh copy into ``tmp_path``
(the fixtures are never touched) and uses only what a user of an old
repository relies on: list, restore, verify, ls, and writers continuing their
chains. The snapshot ids are the committed ones: ids never change.
"""

from __future__ import annotations

import json

import pytest

from tests.support.golden import CASES, restored


def test_every_kind_of_v1_repository_is_kept():
    names = {name for v, name in CASES if v == "v1"}
    assert names == {"password-only", "certificate-owner", "write-only", "chain-deletions"}


# ---------------------------------------------------------------------- what every version must do


def test_snapshots_are_the_committed_ones(golden):
    listed = {s["id"]: s for s in golden.as_owner("--json", "snapshots").ok().json()}
    expected = {s["id"]: s for s in golden.spec["snapshots"]}
    assert sorted(listed) == sorted(expected), "snapshot ids changed"
    for sid, want in expected.items():
        got = listed[sid]
        for field in ("host", "tags", "kind", "parent", "time", "paths"):
            assert got[field] == want[field], f"snapshot {sid[:8]}: {field} {got[field]!r} != {want[field]!r}"


def test_every_snapshot_restores_bytes_modes_and_times(golden, tmp_path):
    for snap in golden.spec["snapshots"]:
        target = tmp_path / "restore" / snap["id"][:12]
        golden.as_owner("restore", snap["id"], "--target", target).ok()
        got = restored(target, snap)
        diffs = [f"{p}: {got.get(p)} != {snap['entries'].get(p)}"
                 for p in sorted(set(got) | set(snap["entries"])) if got.get(p) != snap["entries"].get(p)]
        assert not diffs, f"snapshot {snap['id'][:8]} ({snap['kind']}, {snap['host']}):\n" + "\n".join(diffs)


def test_verify_read_data_passes(golden):
    golden.as_owner("verify", "--read-data").ok()


def test_owner_lists_the_newest_snapshot(golden):
    snap = golden.spec["snapshots"][-1]
    listed = set(golden.as_owner("ls", snap["id"]).ok().stdout.splitlines())
    for rel in snap["entries"]:
        path = "/" + "/".join(p for p in (snap["root"], rel) if p not in ("", "."))
        assert path in listed, f"ls {snap['id'][:8]} does not list {path}"


def test_hosts_continue_their_chains(golden, tmp_path):
    """Each writer host (or, without writers, the host of the newest incremental) backs up incrementally."""
    hosts = dict(golden.writer_envs)
    if not hosts:
        incremental = [s for s in golden.spec["snapshots"] if s["kind"] == "incremental"]
        if not incremental:
            pytest.skip("no incremental chain to continue")
        hosts = {incremental[-1]["host"]: golden.owner_env}
    for host, env in sorted(hosts.items()):
        parent = [s for s in golden.spec["snapshots"] if s["host"] == host][-1]
        src = tmp_path / f"new-{host}"
        src.mkdir()
        (src / "added.txt").write_bytes(f"written later on {host}\n".encode() * 100)
        r = golden.cli("--json", "backup", "--host", host, "--parent", parent["id"], "--full-if-older-than",
                       "never", src, env=env).ok()
        summary = json.loads(r.stdout.splitlines()[-1])
        assert summary["kind"] == "incremental" and summary["parent"] == parent["id"], summary
        target = tmp_path / f"restore-{host}"
        golden.as_owner("restore", summary["snapshot_id"], "--target", target).ok()
        added = target / str(src).lstrip("/") / "added.txt"
        assert added.read_bytes() == (src / "added.txt").read_bytes()
    golden.as_owner("verify").ok()


def test_rewrite_removes_a_file_from_every_snapshot(golden, tmp_path):
    """``rewrite`` on a repository an old haeedge wrote: the copies restore as before, minus the file."""
    with_root = [s for s in golden.spec["snapshots"] if s["root"]]
    name = next(rel.rsplit("/", 1)[-1] for s in with_root for rel, e in sorted(s["entries"].items())
                if e["type"] == "file")
    out = golden.as_owner("--json", "rewrite", "--exclude", name).ok().json()
    mapping = {s["old_id"]: s["new_id"] for s in out["snapshots"]}
    assert mapping, "the file is in no snapshot"
    listed = {s["id"]: s for s in golden.as_owner("--json", "snapshots").ok().json()}
    assert not set(mapping) & set(listed) and set(mapping.values()) <= set(listed)
    for snap in golden.spec["snapshots"]:
        sid = mapping.get(snap["id"], snap["id"])
        assert listed[sid]["signature"]["state"] == "good", listed[sid]
        target = tmp_path / "rewritten" / sid[:12]
        golden.as_owner("restore", sid, "--target", target).ok()
        want = {p: e for p, e in snap["entries"].items() if name not in p.split("/")}
        if want != snap["entries"]:
            assert snap["id"] in mapping, f"snapshot {snap['id'][:8]} holds {name} but was not rewritten"
        got = restored(target, snap)
        assert got == want, f"snapshot {snap['id'][:8]}: {sorted(set(got) ^ set(want))}"
    golden.as_owner("verify", "--read-data").ok()


def test_file_lists_read_and_written_again_are_the_same_bytes(golden):
    """Every entry an old haeedge wrote, read into a ``Node`` and encoded again, is the line it was read
    from: the tree encoding (field order, omitted fields, path/target forms) is format v1, and a rewrite,
    repair or copy writes back what it read."""
    from haeedge.backends.local import LocalBackend
    from haeedge.repo.pack import BLOB_TREE
    from haeedge.repo.repository import Credentials, Repository, hex_id
    from haeedge.repo.tree import decode_entry, encode_entry

    creds = golden.spec["credentials"]
    if "password" not in creds:
        pytest.skip("opened in process with a password only")
    repo = Repository.open(LocalBackend(str(golden.repo)), Credentials(passphrases=[creds["password"].encode()]))
    try:
        repo.load_index()
        lines = 0
        for snap in repo.list_snapshots():
            stream = b"".join(repo.load_blob(hex_id(t), BLOB_TREE) for t in snap.tree)
            for line in stream.splitlines(keepends=True):
                assert encode_entry(decode_entry(line)) == line, line
                lines += 1
        assert lines > 10
    finally:
        repo.close()
