"""Full and incremental snapshots: policy, what an incremental stores, what is re-read, broken chains."""

from __future__ import annotations

import dataclasses
import os

import pytest

from haeedge.repo.tree import Node

DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all", "--"]


def _make_src(root):
    root.mkdir()
    (root / "sub").mkdir()
    for i in range(20):
        (root / f"f{i:02d}").write_bytes(f"file {i}\n".encode() * (i + 1))
    (root / "sub" / "inner").write_bytes(b"inner\n")
    return root


def _rel_entries(entries, src) -> dict[bytes, Node]:
    """Tree entries below ``src``, keyed by path relative to it (b"" for src itself)."""
    prefix = os.fsencode(os.path.abspath(src)).lstrip(b"/")
    out = {}
    for e in entries:
        p = e.path
        if p == prefix:
            out[b""] = e
        elif p.startswith(prefix + b"/"):
            out[p[len(prefix) + 1:]] = e
    return out


def _kinds(cli):
    return [(s["kind"], s["parent"], s["depth"]) for s in cli("snapshots", "--json").ok().json()]


# ---------------------------------------------------------------------- policy


def test_full_flag_and_default_policy(cli, fast_repo, tmp_path):
    src = _make_src(tmp_path / "src")
    ids = [cli.backup(src)["snapshot_id"]]
    ids.append(cli.backup(src)["snapshot_id"])
    s3 = cli.backup(src, "--full")
    assert s3["kind"] == "full" and s3["kind_reason"] == "--full"
    ids.append(s3["snapshot_id"])
    ids.append(cli.backup(src)["snapshot_id"])
    assert _kinds(cli) == [("full", None, 0), ("incremental", ids[0], 1), ("full", None, 0),
                           ("incremental", ids[2], 1)]
    # A different set of paths starts its own chain.
    other = tmp_path / "other"
    other.mkdir()
    assert cli.backup(other)["kind"] == "full"


def test_full_every(cli, fast_repo, tmp_path):
    src = _make_src(tmp_path / "src")
    kinds = [cli.backup(src, "--full-every", "3")["kind"] for _ in range(5)]
    assert kinds == ["full", "incremental", "incremental", "full", "incremental"]
    assert [d for _k, _p, d in _kinds(cli)] == [0, 1, 2, 0, 1]
    r = cli("backup", src, "--full-every", "0")
    assert r.code == 2, r.describe()


def test_full_if_older_than(cli, fast_repo, tmp_path):
    src = _make_src(tmp_path / "src")
    assert cli.backup(src)["kind"] == "full"
    assert cli.backup(src, "--full-if-older-than", "never")["kind"] == "incremental"
    assert cli.backup(src, "--full-if-older-than", "1h")["kind"] == "incremental"
    forced = cli.backup(src, "--full-if-older-than", "0s")
    assert forced["kind"] == "full" and "older" in forced["kind_reason"]
    assert cli.backup(src, "--full-if-older-than", "1w2d")["kind"] == "incremental"
    for bad in ("7 days", "-1d", "abc", "1x"):
        r = cli("backup", src, "--full-if-older-than", bad)
        assert r.code == 2, r.describe()
        assert r.stderr.count("\n") == 1 and "--full-if-older-than" in r.stderr, r.stderr


# ---------------------------------------------------------------------- what an incremental holds


def test_incremental_stores_only_changes_and_every_snapshot_restores(cli, fast_repo, trees, tmp_path):
    src = _make_src(tmp_path / "src")
    states = []
    full = cli.backup(src)
    states.append((full["snapshot_id"], trees.scan(src)))

    (src / "f03").write_bytes(b"changed content, a different size\n")
    (src / "new.txt").write_bytes(b"brand new\n")
    (src / "f05").unlink()
    os.rename(src / "f07", src / "sub" / "f07-moved")
    os.chmod(src / "f09", 0o600)  # metadata only
    os.utime(src / "f11", ns=(1, 1_000_000_007))  # mtime only
    inc = cli.backup(src)
    assert inc["kind"] == "incremental"
    assert inc["files_new"] == 2 and inc["files_deleted"] == 2  # new.txt, sub/f07-moved; f05, f07
    assert inc["files_changed"] == 3 and inc["files_unchanged"] == 16
    states.append((inc["snapshot_id"], trees.scan(src)))

    with fast_repo.open() as repo:
        full_snap = repo.load_snapshot(full["snapshot_id"])
        inc_snap = repo.load_snapshot(inc["snapshot_id"])
        assert inc_snap.kind == "incremental" and inc_snap.parent == full_snap.id
        assert inc_snap.chain == full_snap.id and inc_snap.depth == 1
        assert [s.id for s in repo.chain_of(inc_snap)] == [full_snap.id, inc_snap.id]
        own = _rel_entries(repo.iter_tree(inc_snap.tree), src)
        whole = _rel_entries(repo.iter_tree(full_snap.tree), src)
        effective = _rel_entries(repo.iter_entries(inc_snap), src)
    assert len(whole) == 23  # the full lists everything
    deleted = {p for p, e in own.items() if e.deleted}
    assert deleted == {b"f05", b"f07"}
    changed = set(own) - deleted
    assert changed == {b"", b"sub", b"f03", b"new.txt", b"sub/f07-moved", b"f09", b"f11"}, sorted(changed)
    assert set(effective) == set(states[1][1])
    assert own[b"f09"].mode == 0o600 and own[b"f11"].mtime_ns == 1_000_000_007
    assert own[b"f09"].chunks == whole[b"f09"].chunks  # metadata change: same data, not re-stored

    # Every snapshot restores exactly the tree it captured.
    for i, (sid, captured) in enumerate(states):
        target = tmp_path / f"r{i}"
        cli("restore", sid[:10], "--target", target).ok()
        diffs = trees.differences(captured, trees.scan(trees.restored_path(target, src)))
        assert not diffs, diffs[:20]


def test_unchanged_files_are_not_reread(cli, fast_repo, tmp_path):
    src = _make_src(tmp_path / "src")
    (src / "big").write_bytes(os.urandom(3 << 20))
    total = cli.backup(src)["bytes_total"]
    again = cli.backup(src)
    assert again["bytes_read"] == 0 and again["files_unchanged"] == 22
    assert again["data_blobs_added"] == 0
    full = cli.backup(src, "--full")
    assert full["bytes_read"] == total and full["data_blobs_added"] == 0

    # Same size, same mtime, different bytes: ctime betrays the change and the file is re-read.
    st = os.stat(src / "f04")
    (src / "f04").write_bytes(b"F" * st.st_size)
    os.utime(src / "f04", ns=(st.st_atime_ns, st.st_mtime_ns))
    sneaky = cli.backup(src)
    assert sneaky["kind"] == "incremental" and sneaky["files_changed"] == 1
    assert sneaky["bytes_read"] == st.st_size and sneaky["data_blobs_added"] == 1


def test_unchanged_unreadable_file_is_not_opened(cli, fast_repo, tmp_path):
    """Proof that an incremental does not open unchanged files: one it could not open does not hurt it."""
    src = _make_src(tmp_path / "src")
    os.chmod(src / "f01", 0o000)
    cli.backup(src)  # root reads it
    # Without CAP_DAC_OVERRIDE the mode-000 file cannot be opened, not even by uid 0.
    r = cli("--json", "backup", src, prefix=DROP_DAC)
    assert r.code == 0, r.describe()
    assert trees_summary(r)["bytes_read"] == 0
    r = cli("--json", "backup", src, "--full", prefix=DROP_DAC)
    assert r.code == 3, r.describe()
    assert "f01" in r.stderr


def trees_summary(r) -> dict:
    import json

    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- broken chains


@pytest.fixture
def chain(cli, fast_repo, tmp_path):
    src = _make_src(tmp_path / "src")
    a = cli.backup(src)["snapshot_id"]
    (src / "f01").write_bytes(b"b\n")
    b = cli.backup(src)["snapshot_id"]
    (src / "f02").write_bytes(b"c\n")
    c = cli.backup(src)["snapshot_id"]
    assert [k for k, _p, _d in _kinds(cli)] == ["full", "incremental", "incremental"]
    return src, a, b, c


def test_restore_of_incremental_with_missing_parent_fails_clearly(cli, fast_repo, tmp_path, chain):
    src, a, b, c = chain
    (fast_repo.path / "snapshots" / b).unlink()
    r = cli("restore", c[:8], "--target", tmp_path / "out")
    assert r.code == 4, r.describe()
    assert "broken chain" in r.stderr and b[:8] in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.startswith("haeedge: error:") and len(r.stderr.strip().splitlines()) == 1
    r = cli("ls", c[:8])
    assert r.code == 4 and "broken chain" in r.stderr

    v = cli("verify")
    assert v.code == 4, v.describe()
    assert c[:8] in v.stdout + v.stderr and "broken chain" in v.stdout + v.stderr
    findings = cli("--json", "verify").expect(4).json()["findings"]
    errors = [f for f in findings if f["severity"] == "error"]
    assert [f["snapshots"] for f in errors] == [[c]]

    # The full that starts the chain is untouched and still restores.
    cli("restore", a, "--target", tmp_path / "a").ok()


def test_backup_after_broken_chain_starts_a_new_full(cli, fast_repo, tmp_path, chain):
    src, _a, b, _c = chain
    (fast_repo.path / "snapshots" / b).unlink()
    nxt = cli("--json", "backup", src)
    assert nxt.code == 0, nxt.describe()
    assert trees_summary(nxt)["kind"] == "full"
    assert "broken chain" in nxt.stderr


def test_verify_names_every_snapshot_a_missing_full_breaks(cli, fast_repo, chain):
    _src, a, b, c = chain
    (fast_repo.path / "snapshots" / a).unlink()
    findings = cli("--json", "verify").expect(4).json()["findings"]
    affected = sorted(s for f in findings if f["severity"] == "error" for s in f["snapshots"])
    assert affected == sorted([b, c])


def test_link_with_wrong_chain_or_depth_is_refused(cli, fast_repo, tmp_path, chain):
    _src, a, b, c = chain
    with fast_repo.open() as repo:
        good = repo.load_snapshot(c)
        forged = dataclasses.replace(good, depth=5, id="", extra={})
        forged_id = repo.save_snapshot(forged)
        with pytest.raises(Exception, match="broken chain"):
            repo.chain_of(repo.load_snapshot(forged_id))
    r = cli("restore", forged_id, "--target", tmp_path / "x")
    assert r.code == 4 and "broken chain" in r.stderr, r.describe()
