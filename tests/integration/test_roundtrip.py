"""Backup -> restore round trips through the installed CLI and the library, compared byte for byte and by lstat."""

from __future__ import annotations

import os
import re
import subprocess
import sysconfig
import time
from datetime import datetime
from pathlib import Path

import pytest

from haeedge.archiver import Archiver, BackupOptions
from haeedge.restorer import RestoreOptions, Restorer

HEX64 = re.compile(r"^[0-9a-f]{64}$")


# ---------------------------------------------------------------------- a real tree no one here wrote


@pytest.mark.slow
def test_stdlib_round_trip(cli, fast_repo, trees, tmp_path):
    """The running Python's standard library (site-packages left out to keep the suite fast)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    started = time.time_ns()
    r = cli("backup", stdlib, "--exclude", "site-packages").ok()
    assert "Errors:" not in r.stdout
    target = tmp_path / "restore"
    cli("restore", "latest", "--target", target).ok()
    restored = trees.restored_path(target, stdlib)

    src = trees.scan(stdlib)
    # The stdlib is live: ignore only what something else changed (e.g. a new __pycache__) after we started.
    changed = {p for p, n in src.items() if n["ctime_ns"] >= started}
    assert len(changed) < 20, f"the stdlib changed under the test: {sorted(changed)[:20]}"
    excluded = {p for p in src if p == b"site-packages" or p.startswith(b"site-packages/")}
    assert excluded, "site-packages was expected inside the stdlib directory"
    assert len(src) - len(excluded) > 2000, "not a real tree"
    dst = trees.scan(restored)
    diffs = trees.differences({p: n for p, n in src.items() if p not in excluded}, dst, ignore=changed)
    assert not diffs, "\n".join(diffs[:40])

    # And the classic tool agrees.
    proc = subprocess.run(["diff", "-r", "--no-dereference", "--exclude=site-packages", str(stdlib), str(restored)],
                          capture_output=True, timeout=300)
    assert proc.returncode == 0 or changed, proc.stdout[-2000:]
    cli("verify", "--read-data").ok()


# ---------------------------------------------------------------------- edge cases (item 8)


@pytest.fixture
def edge_tree(tmp_path, trees):
    src = tmp_path / "src"
    info = trees.make_edge_tree(src)
    return src, info


def test_edge_case_round_trip_cli(cli, fast_repo, trees, tmp_path, edge_tree):
    src, info = edge_tree
    before = trees.scan(src)
    summary = cli.backup(src)
    assert summary["errors"] == 0, summary
    assert summary["kind"] == "full"
    assert trees.scan(src) == before, "backing up changed the source"

    # Without --devices the device nodes are skipped with a warning and exit 3 ...
    plain = tmp_path / "plain"
    r = cli("restore", "latest", "--target", plain).expect(3)
    for dev in info["devices"]:
        assert os.fsdecode(dev) in r.stderr and "device" in r.stderr
    assert "Traceback" not in r.stderr
    restored = trees.restored_path(plain, src)
    trees.assert_same(src, restored, ignore=set(info["devices"]))
    for dev in info["devices"]:
        assert not os.path.lexists(os.fsencode(restored) + b"/" + dev)
    trees.assert_sparse(src, restored, info["sparse"])

    # ... with --devices (we are root) everything comes back, devices included.
    full = tmp_path / "full"
    cli("restore", "latest", "--target", full, "--devices").ok()
    restored = trees.restored_path(full, src)
    tree = trees.assert_same(src, restored)
    trees.assert_sparse(src, restored, info["sparse"])
    # The comparison covered what it claims to.
    kinds = {n["type"] for n in tree.values()}
    assert kinds == {"file", "dir", "symlink", "fifo", "socket", "chardev", "blockdev"}
    assert len(trees.hardlink_groups(tree)) == 2
    assert any(n["mode"] & 0o4000 for n in tree.values())
    assert any(n["uid"] == 1234 and n["type"] == "symlink" for n in tree.values())
    assert any(n["mtime_ns"] < 0 for n in tree.values())
    assert any(n["mtime_ns"] % 1000 for n in tree.values())
    assert any(not p.decode("utf-8", "replace").encode() == p for p in tree)
    assert max(len(p) for p in tree) > 3000

    # The ancestors of the source are restored as directories with their metadata too.
    assert os.lstat(plain / "tmp").st_mode == os.lstat("/tmp").st_mode
    cli("verify", "--read-data").ok()


def test_edge_case_round_trip_library(fast_repo, trees, tmp_path, edge_tree):
    src, info = edge_tree
    with fast_repo.open() as repo:
        result = Archiver(repo, BackupOptions(paths=[str(src)])).run()
    assert not result.partial, result.warnings
    with fast_repo.open() as repo:
        snap = repo.resolve_snapshot("latest")
        assert snap.id == result.snapshot.id
        out = Restorer(repo, RestoreOptions(target=str(tmp_path / "out"), devices=True)).run(snap)
    assert not out.damaged and not out.skipped, out.warnings
    restored = trees.restored_path(tmp_path / "out", src)
    trees.assert_same(src, restored)
    trees.assert_sparse(src, restored, info["sparse"])


def test_restore_beyond_path_max(cli, fast_repo, trees, tmp_path):
    """Source paths just under PATH_MAX; under the restore target they are longer than PATH_MAX."""
    src = tmp_path / "src"
    src.mkdir()
    rel = trees.make_deep_dirs(src, 4090)
    with open(os.fsencode(src) + b"/" + trees.LONG_NAME, "wb") as f:
        f.write(b"255")
    cli("backup", src).ok()
    target = tmp_path / ("t" * 200)
    r = cli("restore", "latest", "--target", target)
    assert r.code == 0, r.describe()[:3000]
    restored = trees.restored_path(target, src)
    assert len(os.fsencode(restored)) + 1 + len(rel) > 4096
    trees.assert_same(src, restored)


def test_backup_beyond_path_max(cli, fast_repo, trees, tmp_path):
    """Source paths longer than PATH_MAX: walked, read and restored through directory descriptors."""
    src = tmp_path / "src"
    src.mkdir()
    rel = trees.make_deep_dirs(src, 5000)
    fd = trees.open_deep_dir(src, rel.rpartition(b"/")[0])
    try:
        os.symlink(b"deep-target-\xff", b"link", dir_fd=fd)
        os.mkfifo(b"fifo", dir_fd=fd)
        os.chown(b"deep.txt", 1234, 5678, dir_fd=fd)
        os.utime(b"deep.txt", ns=(1, 123_456_789_123_456_789), dir_fd=fd)
    finally:
        os.close(fd)
    r = cli("backup", src)
    assert r.code == 0, r.describe()[:3000]
    target = tmp_path / "out"
    cli("restore", "latest", "--target", target).ok()
    trees.assert_same(src, trees.restored_path(target, src))


# ---------------------------------------------------------------------- partial restore, ls, snapshots


@pytest.fixture
def small_tree(tmp_path):
    src = tmp_path / "data"
    (src / "etc" / "nginx").mkdir(parents=True)
    (src / "etc" / "nginx" / "nginx.conf").write_text("worker_processes 4;\n")
    (src / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (src / "home" / "ann").mkdir(parents=True)
    (src / "home" / "ann" / "notes.txt").write_text("buy milk\n")
    (src / "home" / "ann" / "big").write_bytes(os.urandom(300_000))
    (src / "home" / "bob").mkdir()
    os.symlink("../ann/notes.txt", src / "home" / "bob" / "notes")
    (src / "var").mkdir()
    return src


def test_partial_restore_include(cli, fast_repo, trees, tmp_path, small_tree):
    src = small_tree
    cli("backup", src).ok()
    target = tmp_path / "part"
    inc_dir = src / "etc" / "nginx"
    inc_file = src / "home" / "ann" / "notes.txt"
    cli("restore", "latest", "--target", target, "--include", inc_dir, "--include", inc_file).ok()
    got = trees.scan(trees.restored_path(target, src))
    assert set(got) == {b"", b"etc", b"etc/nginx", b"etc/nginx/nginx.conf", b"home", b"home/ann",
                        b"home/ann/notes.txt"}
    want = trees.scan(src)
    for p in (b"etc/nginx", b"etc/nginx/nginx.conf", b"home/ann/notes.txt"):
        for f in trees.COMPARED:
            if f != "nlink":
                assert got[p].get(f) == want[p].get(f), (p, f)
    # An include that matches nothing restores only the ancestors it names, and is an error naming it
    # (issue 12: "0 files", exit 0 hid a mistyped path or the wrong snapshot).
    empty = tmp_path / "none"
    r = cli("restore", "latest", "--target", empty, "--include", src / "no" / "such")
    assert r.code == 1 and f"{src}/no/such" in r.stderr, r.describe()
    assert os.listdir(trees.restored_path(empty, src)) == []


def test_ls(cli, fast_repo, trees, small_tree):
    src = small_tree
    cli("backup", src).ok()
    r = cli("ls", "latest").ok()
    listed = set(r.stdout.splitlines())
    abs_src = os.path.abspath(src)
    expected = {abs_src} | {f"{abs_src}/{os.fsdecode(p)}" for p in trees.scan(src) if p}
    assert expected <= listed
    # Only the ancestors of the source are listed besides the tree itself.
    assert all(abs_src.startswith(p + "/") for p in listed - expected), sorted(listed - expected)

    sub = cli("ls", "latest", str(src / "home")).ok().stdout.splitlines()
    assert sorted(sub) == sorted(f"{abs_src}/{p}" for p in ("home", "home/ann", "home/ann/notes.txt",
                                                            "home/ann/big", "home/bob", "home/bob/notes"))
    flat = cli("ls", "latest", str(src / "home"), "--no-recursive").ok().stdout.splitlines()
    assert sorted(flat) == sorted(f"{abs_src}/{p}" for p in ("home", "home/ann", "home/bob"))

    long = cli("ls", "-l", "latest", str(src / "home")).ok().stdout
    line = next(ln for ln in long.splitlines() if ln.endswith("home/bob/notes -> ../ann/notes.txt"))
    assert line.startswith("l")
    big = next(ln for ln in long.splitlines() if ln.endswith("home/ann/big"))
    assert big.startswith("-rw-") and " 300000 " in big

    data = cli("ls", "--json", "latest", str(src / "home" / "ann")).ok().json()
    by_path = {e["path"]: e for e in data["entries"]}
    assert by_path[f"{abs_src}/home/ann/big"]["size"] == 300000
    assert by_path[f"{abs_src}/home/ann/big"]["type"] == "file"
    assert by_path[f"{abs_src}/home/ann"]["type"] == "dir"
    assert HEX64.match(data["snapshot_id"])


def test_ls_shows_non_utf8_names(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(os.fsencode(src) + b"/caf\xe9", "wb") as f:
        f.write(b"x")
    cli("backup", src).ok()
    out = cli("ls", "latest").ok().stdout
    assert "caf\\xe9" in out


def _iso(t: str) -> datetime:
    return datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ")


def test_snapshots_json_fields(cli, fast_repo, small_tree):
    before = datetime.utcnow()
    first = cli.backup(small_tree, "--tag", "nightly", "--tag", "db", "--host", "edge1")
    second = cli.backup(small_tree, "--host", "edge1")
    snaps = cli("snapshots", "--json").ok().json()
    assert [s["id"] for s in snaps] == [first["snapshot_id"], second["snapshot_id"]]
    for s in snaps:
        for key in ("id", "time", "host", "paths", "tags", "kind", "parent"):
            assert key in s, key
        assert HEX64.match(s["id"])
        assert before <= _iso(s["time"]) <= datetime.utcnow()
        assert s["host"] == "edge1"
        assert s["paths"] == [os.path.abspath(small_tree)]
    a, b = snaps
    assert a["tags"] == ["db", "nightly"] and b["tags"] == []
    assert a["kind"] == "full" and a["parent"] is None
    assert b["kind"] == "incremental" and b["parent"] == a["id"]
    assert b["chain"] == a["id"] and b["depth"] == 1
    assert a["summary"]["files_new"] == 4

    # Filters and the human table.
    assert [s["id"] for s in cli("snapshots", "--json", "--tag", "db").ok().json()] == [a["id"]]
    assert cli("snapshots", "--json", "--host", "other").ok().json() == []
    table = cli("snapshots").ok().stdout
    assert a["id"][:8] in table and b["id"][:8] in table
    assert "incremental" in table and "full" in table
    assert "2 snapshots" in table


def test_restore_by_prefix_and_latest(cli, fast_repo, trees, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("one\n")
    first = cli.backup(src)["snapshot_id"]
    (src / "f").write_text("two, longer\n")
    second = cli.backup(src)["snapshot_id"]

    cli("restore", first[:8], "--target", tmp_path / "a").ok()
    assert (trees.restored_path(tmp_path / "a", src) / "f").read_text() == "one\n"
    cli("restore", first.upper()[:12], "--target", tmp_path / "a2").ok()
    assert (trees.restored_path(tmp_path / "a2", src) / "f").read_text() == "one\n"
    cli("restore", "latest", "--target", tmp_path / "b").ok()
    assert (trees.restored_path(tmp_path / "b", src) / "f").read_text() == "two, longer\n"
    cli("restore", second, "--target", tmp_path / "c").ok()
    trees.assert_same(src, trees.restored_path(tmp_path / "c", src))

    r = cli("restore", "latest", "--host", "no-such-host", "--target", tmp_path / "d")
    assert r.code == 1 and "no snapshot" in r.stderr, r.describe()


def test_ambiguous_and_unknown_prefixes(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    ids: list[str] = []
    with fast_repo.open() as repo:
        for i in range(40):
            (src / "f").write_text(f"version {i}\n")
            res = Archiver(repo, BackupOptions(paths=[str(src)], full=True)).run()
            ids.append(res.snapshot.id)
            firsts = [x[0] for x in ids]
            if len(set(firsts)) < len(firsts):
                break
    shared = next(c for c in "0123456789abcdef" if sum(x[0] == c for x in ids) >= 2)
    r = cli("restore", shared, "--target", tmp_path / "x")
    assert r.code == 2, r.describe()
    assert "ambiguous" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()

    unused = next((c * 2 for c in "0123456789abcdef" if not any(x.startswith(c * 2) for x in ids)), None)
    assert unused is not None
    r = cli("restore", unused, "--target", tmp_path / "y")
    assert r.code == 1 and "no snapshot" in r.stderr, r.describe()

    r = cli("ls", "not-hex!")
    assert r.code == 2 and "not a snapshot id" in r.stderr, r.describe()
    for res in (r,):
        assert len([ln for ln in res.stderr.splitlines() if ln.startswith("haeedge: error")]) == 1
