"""What a backup leaves out, and when it saves nothing: through the real CLI on a built tree."""

from __future__ import annotations

import os
import subprocess

import pytest

CACHE_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


def _write(path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "src"
    _write(src / "keep" / "a.txt", b"a")
    _write(src / "keep" / "Movie.ISO", b"i" * 10)
    _write(src / "keep" / "notes.Tmp", b"t")
    _write(src / "cache" / "CACHEDIR.TAG", CACHE_SIGNATURE + b"\n# a cache\n")
    _write(src / "cache" / "blob.bin", b"c" * 100)
    _write(src / "fake-cache" / "CACHEDIR.TAG", b"not the signature\n")
    _write(src / "fake-cache" / "kept.bin", b"k")
    _write(src / "marked" / ".nobackup", b"")
    _write(src / "marked" / "sub" / "secret", b"s")
    _write(src / "headed" / ".skip", b"SKIP-ME please")
    _write(src / "headed" / "gone", b"g")
    _write(src / "headless" / ".skip", b"other text")
    _write(src / "headless" / "stays", b"h")
    _write(src / "big" / "large.bin", b"L" * 3000)
    _write(src / "big" / "small.bin", b"S" * 1000)
    return src


def _listed(cli, src) -> set[str]:
    """Paths of the latest snapshot, relative to ``src``."""
    base = os.path.abspath(src)
    paths = [e["path"] for e in cli("ls", "--json", "latest").ok().json()["entries"]]
    return {p[len(base) + 1:] for p in paths if p.startswith(base + "/")}


def test_exclude_caches_keeps_the_tag_and_leaves_out_the_rest(cli, fast_repo, tree):
    cli("backup", tree, "--exclude-caches").ok()
    listed = _listed(cli, tree)
    assert {"cache", "cache/CACHEDIR.TAG"} <= listed and "cache/blob.bin" not in listed
    # A tag without the signature marks nothing.
    assert "fake-cache/kept.bin" in listed


def test_exclude_if_present_with_and_without_header(cli, fast_repo, tree):
    cli("backup", tree, "--exclude-if-present", ".nobackup", "--exclude-if-present", ".skip:SKIP-ME").ok()
    listed = _listed(cli, tree)
    assert "marked" in listed and "marked/.nobackup" in listed
    assert not any(p.startswith("marked/sub") for p in listed)
    assert "headed/gone" not in listed and "headed/.skip" in listed
    assert "headless/stays" in listed  # its .skip does not start with the header


def test_exclude_larger_than(cli, fast_repo, tree):
    cli("backup", tree, "--exclude-larger-than", "2k").ok()
    listed = _listed(cli, tree)
    assert "big/small.bin" in listed and "big/large.bin" not in listed
    r = cli("backup", tree, "--exclude-larger-than", "lots")
    assert r.code == 2 and "--exclude-larger-than" in r.stderr and "Traceback" not in r.stderr


def test_iexclude_ignores_case_where_exclude_does_not(cli, fast_repo, tree):
    cli("backup", tree, "--exclude", "*.iso", "--iexclude", "*.tmp").ok()
    listed = _listed(cli, tree)
    assert "keep/Movie.ISO" in listed  # --exclude is case-sensitive
    assert "keep/notes.Tmp" not in listed and "keep/a.txt" in listed


def test_files_from_and_its_nul_separated_variant(cli, fast_repo, tree, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# what to back up\n\n{tree / 'keep' / 'a.txt'}\n{tree / 'headed'}\n")
    cli("backup", "--files-from", listing).ok()
    listed = _listed(cli, tree)
    assert {"keep/a.txt", "headed", "headed/gone"} <= listed and "big" not in listed

    odd = tree / "odd\nname"
    _write(odd, b"newline in the name")
    raw = tmp_path / "list.raw"
    raw.write_bytes(os.fsencode(odd) + b"\0" + os.fsencode(tree / "big" / "small.bin") + b"\0")
    cli("backup", "--files-from-raw", raw).ok()
    assert _listed(cli, tree) >= {"odd\nname", "big/small.bin"}

    found = subprocess.run(["find", str(tree / "keep"), "-name", "*.txt", "-print0"], capture_output=True,
                           check=True).stdout
    proc = subprocess.run(cli.command("backup", "--files-from-raw", "-"), input=found, capture_output=True,
                          env=cli.environ(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert _listed(cli, tree) >= {"keep/a.txt"}

    r = cli("backup", "--files-from", tmp_path / "missing.txt")
    assert r.code == 2 and "missing.txt" in r.stderr and "Traceback" not in r.stderr


def test_excludes_come_from_a_profile(cli, fast_repo, tree, tmp_path):
    config = tmp_path / "haeedge.yaml"
    config.write_text(f"""
profiles:
  files:
    backup:
      paths: [{tree}]
      exclude_caches: true
      exclude_larger_than: 2k
      iexclude: ["*.TMP"]
      exclude_if_present: [".nobackup"]
""")
    r = cli("-c", config, "--profile", "files", "backup")
    assert r.code == 0, r.describe()
    listed = _listed(cli, tree)
    assert "cache/blob.bin" not in listed and "big/large.bin" not in listed
    assert "keep/notes.Tmp" not in listed and "marked/sub/secret" not in listed and "keep/a.txt" in listed


def test_skip_if_unchanged(cli, fast_repo, tree):
    first = cli.backup(tree)
    again = cli.backup(tree, "--skip-if-unchanged")
    assert again["snapshot_id"] is None and again["skipped"] is True
    assert again["unchanged_since"] == first["snapshot_id"]
    assert len(cli("snapshots", "--json").ok().json()) == 1
    r = cli("backup", tree, "--skip-if-unchanged").ok()
    assert "nothing changed since snapshot" in r.stdout

    # A full backup with nothing changed is skipped as well.
    assert cli.backup(tree, "--skip-if-unchanged", "--full")["snapshot_id"] is None

    # Any change, a removal included, makes a snapshot.
    (tree / "keep" / "a.txt").unlink()
    changed = cli.backup(tree, "--skip-if-unchanged")
    assert changed["snapshot_id"] and changed["parent"] == first["snapshot_id"]
    os.chmod(tree / "big", 0o700)
    assert cli.backup(tree, "--skip-if-unchanged")["snapshot_id"]  # metadata only
    assert len(cli("snapshots", "--json").ok().json()) == 3
    # Without the flag an unchanged tree still gets its snapshot (the default is unchanged).
    assert cli.backup(tree)["snapshot_id"]
