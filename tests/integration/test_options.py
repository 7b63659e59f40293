"""The remaining command options of issue 2, item 7, through the CLI."""

from __future__ import annotations

import json
import os


def _tree(root):
    (root / "keep" / "sub").mkdir(parents=True)
    (root / "cache").mkdir()
    (root / "keep" / "a.txt").write_text("a")
    (root / "keep" / "b.tmp").write_text("b")
    (root / "keep" / "sub" / "c.txt").write_text("c")
    (root / "cache" / "big").write_bytes(os.urandom(100_000))
    return root


def _listed(cli, snap="latest") -> set[str]:
    return set(cli("ls", snap).ok().stdout.splitlines())


def test_exclude_and_exclude_file(cli, fast_repo, tmp_path):
    src = _tree(tmp_path / "src")
    patterns = tmp_path / "excludes"
    patterns.write_text(f"# comment\n\n{src}/cache\n")
    cli("backup", src, "--exclude", "*.tmp", "--exclude-file", patterns).ok()
    listed = _listed(cli)
    assert f"{src}/keep/a.txt" in listed and f"{src}/keep/sub/c.txt" in listed
    assert f"{src}/keep/b.tmp" not in listed
    assert not any(p.startswith(f"{src}/cache") for p in listed)
    r = cli("backup", src, "--exclude-file", tmp_path / "missing")
    assert r.code == 2 and "exclude file" in r.stderr, r.describe()


def test_dry_run_stores_nothing(cli, fast_repo, tmp_path):
    src = _tree(tmp_path / "src")
    size = fast_repo.size()
    r = cli("--json", "backup", src, "--dry-run").ok()
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["snapshot_id"] is None and s["dry_run"] is True
    assert s["files_new"] == 4 and s["data_blobs_added"] >= 1  # it did read and chunk
    assert fast_repo.size() == size
    assert not fast_repo.objects("data") and not fast_repo.objects("snapshots") and not fast_repo.objects("index")
    r = cli("backup", src, "-n").ok()
    assert "dry run: nothing saved" in r.stdout
    assert cli.backup(src)["data_blobs_added"] >= 1  # the dry run left nothing behind to dedup against


def test_tags_and_host(cli, fast_repo, tmp_path):
    src = _tree(tmp_path / "src")
    cli("backup", src, "--tag", "a", "--tag", "b", "--tag", "a", "--host", "fog-node-7").ok()
    (s,) = cli("snapshots", "--json").ok().json()
    assert s["tags"] == ["a", "b"] and s["host"] == "fog-node-7"
    # Another host with the same paths does not continue this host's chain.
    other = cli.backup(src, "--host", "fog-node-8")
    assert other["kind"] == "full"
    again = cli.backup(src, "--host", "fog-node-7")
    assert again["kind"] == "incremental" and again["parent"] == s["id"]
    out = tmp_path / "out"
    cli("restore", "latest", "--host", "fog-node-8", "--target", out).ok()


def test_several_paths_in_one_snapshot(cli, fast_repo, tmp_path, trees):
    a = _tree(tmp_path / "a")
    b = _tree(tmp_path / "b")
    cli("backup", b, a, a / "keep").ok()  # nested and unordered paths are normalized
    (s,) = cli("snapshots", "--json").ok().json()
    assert s["paths"] == [str(a), str(b)]
    out = tmp_path / "out"
    cli("restore", "latest", "--target", out).ok()
    trees.assert_same(a, trees.restored_path(out, a))
    trees.assert_same(b, trees.restored_path(out, b))


def test_restore_dry_run_and_exclude(cli, fast_repo, tmp_path):
    src = _tree(tmp_path / "src")
    cli("backup", src).ok()
    r = cli("restore", "latest", "--target", tmp_path / "dry", "--dry-run").ok()
    assert f"{src}/keep/a.txt" in r.stdout.splitlines() and "would restore 4 files" in r.stdout
    assert not (tmp_path / "dry").exists()
    out = tmp_path / "out"
    cli("restore", "latest", "--target", out, "--exclude", "*.tmp", "--exclude", f"{src}/cache").ok()
    root = out / str(src).lstrip("/")
    assert sorted(os.listdir(root)) == ["keep"] and sorted(os.listdir(root / "keep")) == ["a.txt", "sub"]


def test_verify_read_data_subset(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}").write_bytes(os.urandom(9 << 20))
    cli("backup", src).ok()
    packs = len(fast_repo.objects("data"))
    assert packs >= 3
    ids = [p.name for p in fast_repo.objects("data")]
    read = 0
    for n in (1, 2, 3):
        r = cli("--json", "verify", "--read-data-subset", f"{n}/3").ok().json()
        assert r["packs"] == packs
        assert r["packs_read"] == sum(1 for p in ids if int(p[:8], 16) % 3 == n - 1)
        read += r["packs_read"]
    assert read == packs  # the three parts cover every pack exactly once
    assert cli("--json", "verify", "--read-data-subset", "100%").ok().json()["packs_read"] == packs
    assert cli("verify", "--read-data-subset", "4/3").code == 2


def test_init_with_chunker_parameters(cli, tmp_path):
    cli("init", "--chunk-min", "4096", "--chunk-avg", "16384", "--chunk-max", "65536").ok()
    with cli.repo_handle().open() as repo:
        c = repo.config.chunker
        assert (c.min_size, c.avg_size, c.max_size) == (4096, 16384, 65536)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(1 << 20))
    assert cli.backup(src)["data_blobs_added"] > 20  # small chunks really are used
    r = cli("-r", tmp_path / "bad", "init", "--chunk-min", "9000", "--chunk-avg", "100")
    assert r.code == 2 and "Traceback" not in r.stderr, r.describe()


def test_init_json_and_key_slot(cli, tmp_path):
    r = cli("--json", "init").ok()
    doc = r.json()
    assert doc["location"] == str(cli.repo_path)
    assert (cli.repo_path / "keys" / doc["key_slot"]).is_file()
    for ns in ("data", "index", "snapshots", "locks", "keys"):
        assert (cli.repo_path / ns).is_dir()
    r = cli("init", unset=("HAEEDGE_PASSWORD_FILE",), env={"HAEEDGE_REPOSITORY": str(tmp_path / "r2")})
    assert r.code == 2 and "no password" in r.stderr
    assert not (tmp_path / "r2" / "config").exists()
