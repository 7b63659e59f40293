"""Restore into a directory that already holds files: --overwrite, --delete, --verify, resuming.

All through the installed CLI. The resumed restore is killed for real (SIGKILL, after
some files are whole on disk) and the bytes the re-run reads from storage are counted
(``bytes_read`` in the --json summary); it runs against local, SFTP and S3 storage.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import stat
import time
import uuid
from pathlib import Path

import pytest

from haeedge.backends import open_backend
from haeedge.repo.config import RepositoryConfig
from haeedge.repo.repository import Repository
from tests.support.cli import summary_of
from tests.support.repos import CHEAP_S2K, PASSWORD, SMALL_CHUNKS
from tests.support.trees import assert_same_tree, restored_path, scan_tree

T0 = 1_600_000_000_000_000_000  # source mtimes: long before any restore, with nanoseconds


# ---------------------------------------------------------------------- storage and trees


def init_storage(kind: str, cli, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """A repository with small chunks and 1 MiB packs (so a restore reads many packs) on ``kind``
    storage, made by the library with a cheap S2K; returns the environment that aims the CLI at it."""
    if kind == "local":
        location, options, env = str(cli.repo_path), {}, {}
    elif kind == "sftp":
        srv = request.getfixturevalue("sshd")
        location, options = srv.url_for(str(tmp_path / "sftp-repo")), srv.options()
        env = {"HAEEDGE_SFTP_KEY_FILE": srv.key_file, "HAEEDGE_SFTP_KNOWN_HOSTS": srv.known_hosts,
               "SSH_AUTH_SOCK": ""}
    else:
        srv = request.getfixturevalue("s3")
        location, options = srv.url_for(f"restore-existing-{uuid.uuid4().hex[:10]}"), srv.options()
        env = {**srv.env, "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
               "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    config = RepositoryConfig(repository_id=os.urandom(32).hex(), chunker=SMALL_CHUNKS, pack_size=1 << 20)
    backend = open_backend(location, options)
    try:
        Repository.init(backend, PASSWORD, config=config, s2k_count_byte=CHEAP_S2K).close()
    finally:
        backend.close()
    return {**env, "HAEEDGE_REPOSITORY": location}


def build_tree(root: Path, files: int = 24, size: int = 40_000, seed: int = 14) -> None:
    """Random (incompressible) files in a few directories, a symlink, a hardlink pair, an empty file."""
    rng = random.Random(seed)
    for i in range(files):
        d = root / f"d{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:03d}.bin").write_bytes(rng.randbytes(rng.randrange(size // 2, size * 3 // 2)))
    (root / "empty").write_bytes(b"")
    (root / "hard_a").write_bytes(rng.randbytes(20_000))
    os.link(root / "hard_a", root / "hard_b")
    os.symlink("d0/f000.bin", root / "link")
    for p in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        t = T0 + rng.randrange(10**15)
        os.utime(p, ns=(t, t), follow_symlinks=False)
    os.utime(root, ns=(T0, T0))


def restore(cli, env: dict, target: Path, *args: str, expect: int = 0) -> dict:
    r = cli("--json", "restore", "latest", "--target", target, *args, env=env)
    assert r.code == expect, r.describe()
    return summary_of(r.stdout)


@pytest.fixture
def site(cli, tmp_path, request) -> dict:
    """A local repository holding one snapshot of ``tmp_path/src`` (24 files, about 1 MiB)."""
    env = init_storage("local", cli, tmp_path, request)
    src = tmp_path / "src"
    build_tree(src)
    cli("backup", src, env=env).ok()
    return env


# ---------------------------------------------------------------------- --overwrite


def _prepare_existing(src: Path, target: Path) -> dict[str, Path]:
    """A restored tree changed in the ways --overwrite tells apart (see the test's table)."""
    dst = restored_path(target, src)
    files = {name: dst / "d1" / name for name in ("f001.bin", "f005.bin", "f009.bin", "f013.bin")}
    same, edited, older, sneaky = files.values()
    # edited: other content and size, modified now (newer than the snapshot's)
    edited.write_bytes(b"edited by the user\n")
    # older: other content of the same size, an older mtime
    st = older.stat()
    older.write_bytes(b"o" * st.st_size)
    os.utime(older, ns=(st.st_mtime_ns - 10**9, st.st_mtime_ns - 10**9))
    # sneaky: same size and mtime as the snapshot's, one byte changed (only --verify notices)
    st = sneaky.stat()
    with open(sneaky, "r+b") as f:
        b = f.read(1)
        f.seek(0)
        f.write(bytes([b[0] ^ 0xFF]))
    os.utime(sneaky, ns=(st.st_atime_ns, st.st_mtime_ns))
    (dst / "d2" / "f002.bin").unlink()  # missing: restored by every mode
    return {"same": same, "edited": edited, "older": older, "sneaky": sneaky, "missing": dst / "d2" / "f002.bin"}


# Which of the changed files end up equal to the snapshot's ("restored") or stay as they were ("kept").
EXPECTED = {
    ("always",): {"edited": "restored", "older": "restored", "sneaky": "restored"},
    ("if-changed",): {"edited": "restored", "older": "restored", "sneaky": "kept"},
    ("if-changed", "--verify"): {"edited": "restored", "older": "restored", "sneaky": "restored"},
    ("if-newer",): {"edited": "kept", "older": "restored", "sneaky": "kept"},
    ("never",): {"edited": "kept", "older": "kept", "sneaky": "kept"},
}


@pytest.mark.parametrize("mode", list(EXPECTED), ids=lambda m: "-".join(m).replace("--", ""))
def test_overwrite_modes(cli, site, tmp_path, mode):
    src = tmp_path / "src"
    target = tmp_path / "target"
    restore(cli, site, target)
    paths = _prepare_existing(src, target)
    before = {k: p.read_bytes() for k, p in paths.items() if p.exists()}
    source = {k: (src / p.relative_to(restored_path(target, src))).read_bytes() for k, p in paths.items()}
    s = restore(cli, site, target, "--overwrite", mode[0], *mode[1:])
    assert s["overwrite"] == mode[0]
    for name, fate in EXPECTED[mode].items():
        want = source[name] if fate == "restored" else before[name]
        assert paths[name].read_bytes() == want, f"{mode}: {name} should be {fate}"
    assert paths["same"].read_bytes() == source["same"]
    assert paths["missing"].read_bytes() == source["missing"]
    kept = sum(1 for fate in EXPECTED[mode].values() if fate == "kept")
    if mode[0] == "always":
        assert (s["unchanged"], s["kept"], s["bytes_skipped"]) == (0, 0, 0)
        assert_same_tree(src, restored_path(target, src))
    elif mode[0] == "if-changed":
        # everything but the files written again is unchanged (the 'sneaky' one too without --verify)
        assert s["kept"] == 0
        assert s["unchanged"] >= 20, s
        assert s["bytes_skipped"] > 0
    else:
        assert s["unchanged"] == 0
        assert s["kept"] >= kept, s
    if mode == ("if-changed", "--verify"):
        assert_same_tree(src, restored_path(target, src))
        assert s["verified"] >= 24 and s["mismatched"] == [], s


def test_if_changed_does_not_fetch_unchanged_files(cli, site, tmp_path):
    """A second restore reads only metadata: bytes_read shrinks from the whole data to almost nothing."""
    src = tmp_path / "src"
    first = restore(cli, site, tmp_path / "t")
    data = sum({p.stat().st_ino: p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink()}
               .values())  # a hardlink group's data once
    assert first["bytes_read"] > data  # every file's data was fetched (plus index, snapshot, file lists)
    for extra in ((), ("--verify",)):
        again = restore(cli, site, tmp_path / "t", "--overwrite", "if-changed", *extra)
        assert again["bytes_read"] < first["bytes_read"] - data + 64 * 1024, (first, again)
        assert again["bytes_skipped"] == first["bytes"]  # every file's data (a hardlink group's once)
        assert again["mismatched"] == []
    assert_same_tree(src, restored_path(tmp_path / "t", src))


def test_overwrite_text_report_and_help(cli, site, tmp_path):
    target = tmp_path / "t"
    cli("restore", "latest", "--target", target, env=site).ok()
    r = cli("restore", "latest", "--target", target, "--overwrite", "never", env=site).ok()
    assert "kept as they were" in r.stdout, r.stdout
    r = cli("restore", "latest", "--target", target, "--overwrite", "sometimes", env=site).expect(2)
    assert "sometimes" in r.stderr and "Traceback" not in r.stderr
    assert "--overwrite" in cli("restore", "--help").ok().stdout


# ---------------------------------------------------------------------- symlinks in the target


def test_existing_symlinks_pointing_outside_are_never_followed(cli, site, tmp_path):
    """A hand-built target: symlinks where the snapshot has files and directories, pointing outside."""
    src = tmp_path / "src"
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_bytes(b"must stay\n")
    (outside / "dir").mkdir()
    (outside / "dir" / "keep").write_bytes(b"must stay too\n")
    before = scan_tree(outside)
    for mode in ("always", "if-changed", "if-newer", "never"):
        target = tmp_path / f"target-{mode}"
        dst = restored_path(target, src)
        dst.mkdir(parents=True)
        os.symlink(victim, dst / "empty")  # the snapshot has a file here
        (dst / "d0").mkdir()
        os.symlink(victim, dst / "d0" / "f000.bin")
        os.symlink(outside / "dir", dst / "d3")  # the snapshot has a directory here
        os.symlink(outside / "dir", dst / "d0" / "extra")  # the snapshot has nothing here
        for link in (dst / "empty", dst / "d0" / "f000.bin"):  # older than the snapshot's files: if-newer replaces
            os.utime(link, ns=(T0 - 1, T0 - 1), follow_symlinks=False)
        s = restore(cli, site, target, "--overwrite", mode, "--delete", "--verify", expect=3)
        assert any("symlink" in w for w in s["skipped"]), s  # d3 is refused, not followed
        assert scan_tree(outside) == before, mode
        assert not (dst / "d0" / "extra").is_symlink() and not (dst / "d0" / "extra").exists(), mode
        assert (dst / "d3").is_symlink()
        if mode == "never":
            assert (dst / "empty").is_symlink() and (dst / "d0" / "f000.bin").is_symlink()
        else:
            assert stat.S_ISREG(os.lstat(dst / "d0" / "f000.bin").st_mode)
            assert (dst / "d0" / "f000.bin").read_bytes() == (src / "d0" / "f000.bin").read_bytes()
            assert stat.S_ISREG(os.lstat(dst / "empty").st_mode)


# ---------------------------------------------------------------------- --delete


def test_delete_only_below_the_restored_paths(cli, site, tmp_path):
    src = tmp_path / "src"
    target = tmp_path / "target"
    restore(cli, site, target)
    dst = restored_path(target, src)
    extras = [dst / "extra.txt", dst / "d1" / "extra.bin", dst / "newdir" / "a" / "b.txt"]
    for p in extras:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"not in the snapshot\n")
    (dst / "d2" / "junk.tmp").write_bytes(b"excluded: neither restored nor deleted\n")
    (dst / "d3" / "cache.tmp").mkdir()
    (dst / "d3" / "cache.tmp" / "inner").write_bytes(b"in an excluded directory: left alone\n")
    beside = [target / "other.txt", dst.parent / "sibling" / "file"]  # outside the snapshot's path
    for p in beside:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"not below the restored path\n")

    dry = restore(cli, site, target, "--delete", "--dry-run", "--exclude", "*.tmp")
    rel = os.path.relpath(dst, target)
    assert sorted(dry["deleted"]) == sorted([f"{rel}/extra.txt", f"{rel}/d1/extra.bin", f"{rel}/newdir",
                                             f"{rel}/newdir/a", f"{rel}/newdir/a/b.txt"]), dry
    assert all(p.exists() for p in extras), "a dry run deleted something"
    r = cli("restore", "latest", "--target", target, "--delete", "--dry-run", "--exclude", "*.tmp", env=site).ok()
    assert f"would delete /{rel}/newdir/a/b.txt" in r.stdout, r.stdout

    # --include: only below the included path
    s = restore(cli, site, target, "--delete", "--include", str(src / "d1"))
    assert s["deleted"] == [f"{rel}/d1/extra.bin"], s
    assert (dst / "extra.txt").exists() and (dst / "newdir").exists()

    s = restore(cli, site, target, "--delete", "--exclude", "*.tmp")
    assert sorted(s["deleted"]) == sorted([f"{rel}/extra.txt", f"{rel}/newdir", f"{rel}/newdir/a",
                                           f"{rel}/newdir/a/b.txt"]), s
    assert not any(p.exists() for p in extras)
    assert (dst / "d2" / "junk.tmp").exists() and (dst / "d3" / "cache.tmp" / "inner").exists()
    assert all(p.exists() for p in beside)
    (dst / "d2" / "junk.tmp").unlink()
    shutil.rmtree(dst / "d3" / "cache.tmp")
    assert_same_tree(src, dst, ignore={b"d2", b"d3"})  # their mtimes: the removals just now


def test_delete_with_an_include_that_matches_nothing_deletes_nothing(cli, site, tmp_path):
    src = tmp_path / "src"
    target = tmp_path / "target"
    restore(cli, site, target)
    typo = restored_path(target, src) / "d9"
    typo.mkdir()
    (typo / "precious").write_bytes(b"mine\n")
    r = cli("restore", "latest", "--target", target, "--delete", "--include", str(src / "d9"), env=site).expect(1)
    assert "matched nothing" in r.stderr
    assert (typo / "precious").exists()


# ---------------------------------------------------------------------- --verify


def _whole(src: Path, dst: Path, rels: list[str]) -> list[str]:
    """Files of ``rels`` whose size and mtime in ``dst`` are the source's (what if-changed trusts)."""
    out = []
    for rel in rels:
        try:
            d = os.lstat(dst / rel)
        except OSError:
            continue
        s = os.lstat(src / rel)
        if stat.S_ISREG(d.st_mode) and (d.st_size, d.st_mtime_ns) == (s.st_size, s.st_mtime_ns):
            out.append(rel)
    return out


def _file_rels(src: Path) -> list[str]:
    return sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file() and not p.is_symlink())


def test_verify_reports_a_file_changed_after_it_was_written(cli, tmp_path, request):
    """Something changes a restored file before --verify re-reads it: exit 4, the file named."""
    env = init_storage("local", cli, tmp_path, request)
    src = tmp_path / "src"
    build_tree(src, files=96, size=120_000)  # about 11 MiB in 1 MiB packs: more packs than reader threads
    cli("backup", src, env=env).ok()
    target = tmp_path / "target"
    dst = restored_path(target, src)
    rels = _file_rels(src)
    # Slow pack reads: the first files are whole long before the last pack arrives and the batch is verified.
    proc = cli.popen("--json", "restore", "latest", "--target", target, "--verify",
                     env={**env, "HAEEDGE_FAULTS": "get_range:latency=0.6:match=data/"})
    deadline = time.monotonic() + 120
    tampered = None
    while tampered is None and time.monotonic() < deadline and proc.poll() is None:
        whole = [rel for rel in _whole(src, dst, rels) if rel != "empty"]  # empty: not read back
        if whole:
            tampered = whole[0]
            st = os.lstat(dst / tampered)
            with open(dst / tampered, "r+b") as f:
                f.write(b"\0tampered")
            os.utime(dst / tampered, ns=(st.st_atime_ns, st.st_mtime_ns))
        time.sleep(0.01)
    out, err = proc.communicate(timeout=300)
    assert tampered is not None, "no file became whole while the restore ran"
    assert proc.returncode == 4, err.decode()
    s = summary_of(out.decode())
    assert s["mismatched"] == [os.path.relpath(dst / tampered, target)], s
    assert s["verified"] >= len(rels) - 2
    assert "verify: content differs" in err.decode() and "Traceback" not in err.decode()


def test_verify_of_a_clean_restore(cli, site, tmp_path):
    s = restore(cli, site, tmp_path / "t", "--verify")
    assert s["verified"] == 25 and s["mismatched"] == []  # 24 files and one hardlink group (empty: nothing to read)
    r = cli("restore", "latest", "--target", tmp_path / "t2", "--verify", env=site).ok()
    assert "verified 25 files: 0 differ" in r.stdout


# ---------------------------------------------------------------------- resuming a killed restore


@pytest.mark.parametrize("kind", ["local", "sftp", "s3"])
def test_killed_restore_resumes_without_fetching_whole_files_again(cli, tmp_path, request, kind):
    env = init_storage(kind, cli, tmp_path, request)
    src = tmp_path / "src"
    build_tree(src, files=96, size=120_000)  # about 11 MiB in 1 MiB packs
    cli("backup", src, env=env).ok()
    rels = _file_rels(src)
    sizes = {rel: os.lstat(src / rel).st_size for rel in rels}

    full = restore(cli, env, tmp_path / "full")  # what a restore from scratch reads
    assert_same_tree(src, restored_path(tmp_path / "full", src))

    target = tmp_path / "target"
    dst = restored_path(target, src)
    proc = cli.popen("restore", "latest", "--target", target,
                     env={**env, "HAEEDGE_FAULTS": "get_range:latency=0.4:match=data/"})
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(_whole(src, dst, rels)) >= len(rels) // 5:
                break
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the restore finished before it could be killed"
    whole = _whole(src, dst, rels)
    assert len(rels) // 5 <= len(whole) < len(rels), f"{len(whole)} of {len(rels)} whole: not mid-way"
    # A file whose size and mtime say "whole" is whole: its mtime is set only after all its content.
    for rel in whole:
        assert (dst / rel).read_bytes() == (src / rel).read_bytes(), f"{rel} looks whole but is not"

    again = restore(cli, env, target, "--overwrite", "if-changed")
    whole_bytes = sum(sizes[rel] for rel in whole)
    slack = 256 * 1024 + full["bytes_read"] // 20
    assert again["bytes_read"] < full["bytes_read"] - whole_bytes + slack, \
        f"re-run read {again['bytes_read']} bytes; full restore {full['bytes_read']}, whole before: {whole_bytes}" \
        f" ({len(whole)} files; {again})"
    assert again["bytes_read"] < full["bytes_read"] * 0.9, (full, again)
    assert again["unchanged"] >= len(whole)
    assert_same_tree(src, dst)


def _intact_bytes(src: Path, dst: Path, block: int = 4096) -> int:
    """Bytes of ``dst`` equal to ``src`` at the same offsets, counted in whole blocks."""
    total = 0
    with open(src, "rb") as a, open(dst, "rb") as b:
        while True:
            x, y = a.read(block), b.read(block)
            if not x:
                return total
            total += len(x) if x == y else 0


@pytest.mark.parametrize("kind", ["local", "sftp", "s3"])
def test_a_big_file_killed_mid_way_is_completed_in_place(cli, tmp_path, request, kind):
    """One big file: the re-run fetches only the chunks the killed run had not written."""
    env = init_storage(kind, cli, tmp_path, request)
    src = tmp_path / "src"
    src.mkdir()
    big = src / "disk.img"
    big.write_bytes(random.Random(5).randbytes(12 << 20))  # about 750 chunks in 12 packs
    os.utime(big, ns=(T0, T0))
    cli("backup", src, env=env).ok()
    full = restore(cli, env, tmp_path / "full")

    target = tmp_path / "target"
    dst = restored_path(target, src) / "disk.img"
    proc = cli.popen("restore", "latest", "--target", target,
                     env={**env, "HAEEDGE_FAULTS": "get_range:latency=0.4:match=data/"})
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(dst).st_blocks * 512 >= (12 << 20) * 3 // 10:
                    break
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the restore finished before it could be killed"
    st = os.lstat(dst)
    assert st.st_size == 12 << 20 and st.st_mtime_ns != T0, "a partly written file must not look whole"
    intact = _intact_bytes(big, dst)
    assert (12 << 20) * 3 // 10 - (1 << 20) <= intact < 12 << 20, intact

    verify = ("--verify",) if kind == "local" else ()  # the in-place writes read back
    again = restore(cli, env, target, "--overwrite", "if-changed", *verify)
    assert again["verified"] == len(verify) and again["mismatched"] == []
    assert again["bytes_skipped"] >= intact - (512 << 10), (intact, again)
    slack = 256 * 1024 + full["bytes_read"] // 20
    assert again["bytes_read"] < full["bytes_read"] - intact + slack, (intact, full["bytes_read"], again)
    assert_same_tree(src, restored_path(target, src))


def test_json_summary_fields_are_documented(cli, site, tmp_path):
    doc = (Path(__file__).resolve().parents[2] / "docs" / "json.md").read_text()
    s = restore(cli, site, tmp_path / "t", "--delete", "--verify")
    for key in ("overwrite", "unchanged", "kept", "bytes_skipped", "deleted", "verified", "mismatched", "bytes_read"):
        assert key in s
        assert f'"{key}"' in doc, f"docs/json.md does not document {key}"
    json.dumps(s)
