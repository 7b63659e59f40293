"""Looking into a repository after a failure: ls, find, diff, stats, tag, snapshot filters, selective restore."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.support.cli import Cli
from tests.support.ops import validate
from tests.support.repos import SMALL_CHUNKS, init_library_repo


class History:
    """Three snapshots: a full, an incremental after some changes, and one of another host."""

    def __init__(self, cli: Cli, root: Path):
        self.cli = cli
        self.src = root / "src"
        self.other = root / "other"
        src = self.src
        (src / "etc" / "nginx").mkdir(parents=True)
        self.dup = os.urandom(200_000)
        (src / "dup1.bin").write_bytes(self.dup)
        (src / "dup2.bin").write_bytes(self.dup)
        (src / "a.txt").write_text("version one\n" * 1000)
        (src / "mode.txt").write_text("same content\n")
        (src / "etc" / "nginx" / "nginx.conf").write_text("server {}\n")
        (src / "etc" / "Site.CONF").write_text("x\n")
        (src / "gone.txt").write_text("bye\n")
        self.s1 = cli.backup(src, "--tag", "first")["snapshot_id"]
        (src / "a.txt").write_text("version two\n" * 1000)
        os.chmod(src / "mode.txt", 0o600)
        (src / "gone.txt").unlink()
        (src / "new.sql").write_text("create table t;\n")
        self.s2 = cli.backup(src, "--tag", "second")["snapshot_id"]
        self.other.mkdir()
        (self.other / "dump.sql").write_text("other host\n")
        self.s3 = cli.backup(self.other, "--host", "db1", "--tag", "db")["snapshot_id"]

    def p(self, *parts: str) -> str:
        return str(self.src.joinpath(*parts))


@pytest.fixture(scope="module")
def hist(tmp_path_factory) -> History:
    root = tmp_path_factory.mktemp("inspect")
    cli = Cli(root)
    init_library_repo(cli.repo_path, chunker=SMALL_CHUNKS)
    return History(cli, root)


def test_ls_long_and_json(hist, schemas):
    cli = hist.cli
    r = cli("ls", hist.s2, "-l", hist.p("etc")).ok()
    lines = r.stdout.splitlines()
    assert len(lines) == 4 and lines[0].startswith("d") and lines[-1].startswith("-rw-r--r--")
    assert lines[-1].endswith(hist.p("etc", "nginx", "nginx.conf")) and " 10 " in lines[-1]
    doc = cli("--json", "ls", hist.s2).ok().json()
    validate(doc, schemas["ls"])
    by_path = {e["path"]: e for e in doc["entries"]}
    assert by_path[hist.p("mode.txt")]["mode"] == 0o600 and hist.p("gone.txt") not in by_path


def test_find_across_snapshots(hist, schemas):
    cli = hist.cli
    doc = cli("--json", "find", "*.sql").ok().json()
    validate(doc, schemas["find"])
    found = {s["snapshot_id"]: [e["path"] for e in s["entries"]] for s in doc["snapshots"]}
    assert found == {hist.s2: [hist.p("new.sql")], hist.s3: [str(hist.other / "dump.sql")]}
    assert doc["matches"] == 2
    # Path globs, case-insensitivity, type and snapshot filters.
    doc = cli("--json", "find", "-i", "site.conf", f"{hist.src}/etc/nginx/*",
              "--host", socket.gethostname()).ok().json()
    paths = {e["path"] for s in doc["snapshots"] for e in s["entries"]}
    assert paths == {hist.p("etc", "Site.CONF"), hist.p("etc", "nginx", "nginx.conf")}
    assert {s["snapshot_id"] for s in doc["snapshots"]} == {hist.s1, hist.s2}
    doc = cli("--json", "find", "nginx", "--type", "dir", "-s", hist.s1).ok().json()
    assert [s["snapshot_id"] for s in doc["snapshots"]] == [hist.s1]
    r = cli("find", "gone.txt").ok()
    assert hist.s1[:8] in r.stdout and hist.s2[:8] not in r.stdout and "1 matches in 1 snapshots" in r.stdout
    r = cli("-q", "find", "*").ok()
    assert r.stdout == ""


def test_diff_categories(hist, schemas):
    cli = hist.cli
    doc = cli("--json", "diff", hist.s1, hist.s2).ok().json()
    validate(doc, schemas["diff"])
    assert doc["added"] == [hist.p("new.sql")]
    assert doc["removed"] == [hist.p("gone.txt")]
    assert doc["modified"] == [hist.p("a.txt")]
    assert hist.p("mode.txt") in doc["metadata_only"]
    assert str(hist.src) in doc["metadata_only"]  # its mtime changed (entries added and removed)
    assert doc["stats"]["bytes_added"] == len("version two\n" * 1000) + len("create table t;\n")
    r = cli("diff", hist.s1[:8], "latest", "--path", hist.p("etc")).ok()  # latest is s3: everything removed
    assert f"-    {hist.p('etc', 'nginx', 'nginx.conf')}" in r.stdout
    r = cli("diff", hist.s1, hist.s2).ok()
    assert f"M    {hist.p('a.txt')}" in r.stdout and f"U    {hist.p('mode.txt')}" in r.stdout
    assert "1 added, 1 removed, 1 modified" in r.stdout
    r = cli("diff", hist.s2, hist.s2).ok()
    assert "0 added, 0 removed, 0 modified, 0 metadata only" in r.stdout


def test_stats_sizes_and_ratios(hist, schemas):
    cli = hist.cli
    doc = cli("--json", "stats").ok().json()
    validate(doc, schemas["stats"])
    rows = {r["snapshot_id"]: r for r in doc["snapshots"]}
    s1 = rows[hist.s1]
    raw1 = 2 * len(hist.dup) + 12000 + 13 + 10 + 2 + 4
    assert s1["raw_size"] == raw1 and s1["files"] == 7
    assert s1["unique_size"] == raw1 - len(hist.dup)  # the duplicate file is stored once
    assert s1["dedup_ratio"] == round(raw1 / (raw1 - len(hist.dup)), 3)
    assert 0 < s1["stored_data_size"] and s1["stored_size"] == s1["stored_data_size"] + s1["stored_tree_size"]
    t = doc["total"]
    assert t["snapshots"] == 3 and t["raw_size"] == sum(r["raw_size"] for r in rows.values())
    assert t["unique_size"] < t["raw_size"] and t["missing_blobs"] == 0
    assert t["repository_size"] >= t["stored_size"]
    doc = cli("--json", "stats", "--host", "db1").ok().json()
    assert [r["snapshot_id"] for r in doc["snapshots"]] == [hist.s3] and "repository_size" not in doc["total"]
    r = cli("stats", hist.s1).ok()
    assert "Total over 1 snapshots" in r.stdout and "dedup 1." in r.stdout


def test_snapshot_filters(hist, schemas):
    cli = hist.cli

    def ids(*args):
        doc = cli("--json", "snapshots", *args).ok().json()
        validate(doc, schemas["snapshots"])
        return [s["id"] for s in doc]

    assert ids() == [hist.s1, hist.s2, hist.s3]
    assert ids("--host", "db1") == [hist.s3]
    assert ids("--tag", "first", "--tag", "db") == [hist.s1, hist.s3]
    assert ids("--path", str(hist.src)) == [hist.s1, hist.s2]
    assert ids("--host", "db1", "--tag", "first") == []


def test_restore_include_exclude_dry_run(hist, tmp_path, schemas):
    cli = hist.cli
    out = tmp_path / "out"
    doc = cli("--json", "restore", hist.s2, "--target", out, "--include", hist.p("etc"), "--exclude", "*.CONF",
              "--dry-run").ok().json()
    validate(doc, schemas["restore"])
    assert not out.exists()
    planned = {"/" + p.lstrip("/") for p in doc["planned"]}
    assert hist.p("etc", "nginx", "nginx.conf") in planned and hist.p("etc", "Site.CONF") not in planned
    assert hist.p("a.txt") not in planned
    cli("-q", "restore", hist.s2, "--target", out, "--include", hist.p("etc"), "--exclude", "*.CONF").ok()
    base = out / str(hist.src).lstrip("/")
    assert (base / "etc" / "nginx" / "nginx.conf").read_text() == "server {}\n"
    assert not (base / "etc" / "Site.CONF").exists() and not (base / "a.txt").exists()


def test_tag_rewrites_and_relinks_chains(cli, tmp_path, schemas):
    init_library_repo(cli.repo_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("1")
    full = cli.backup(src, "--tag", "nightly")["snapshot_id"]
    (src / "f").write_text("22")
    inc = cli.backup(src)["snapshot_id"]
    doc = cli("--json", "tag", full, "--add", "keep", "--remove", "nightly").ok().json()
    validate(doc, schemas["tag"])
    assert doc["unchanged"] == 0 and len(doc["changed"]) == 2
    first, second = doc["changed"]
    assert first["old_id"] == full and first["tags"] == ["keep"] and not first["relinked"]
    assert second["old_id"] == inc and second["relinked"]  # its parent's id changed
    snaps = {s["id"]: s for s in cli("--json", "snapshots").ok().json()}
    assert set(snaps) == {first["new_id"], second["new_id"]}
    assert snaps[second["new_id"]]["parent"] == first["new_id"] and snaps[second["new_id"]]["kind"] == "incremental"
    cli("verify").ok()
    cli("-q", "restore", second["new_id"], "--target", tmp_path / "r").ok()
    assert (tmp_path / "r" / str(src).lstrip("/") / "f").read_text() == "22"
    # --set replaces; unchanged snapshots are left alone; --set '' clears.
    doc = cli("--json", "tag", "--all", "--set", "a", "--set", "b").ok().json()
    assert sorted(c["tags"] for c in doc["changed"] if not c["relinked"]) == [["a", "b"], ["a", "b"]]
    doc = cli("--json", "tag", "--all", "--add", "a").ok().json()
    assert doc == {"changed": [], "unchanged": 2}
    cli("-q", "tag", "latest", "--set", "").ok()
    assert cli("--json", "snapshots").ok().json()[-1]["tags"] == []
    assert cli("tag", "--add", "x").code == 2 and cli("tag", "latest").code == 2
