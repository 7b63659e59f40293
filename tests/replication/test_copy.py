"""``haeedge copy`` between repositories with different passwords (so different keys and blob ids).

The target already holds some of the data from its own backup: the copy must
store only what it lacks (deduplicated by the target's re-hashed ids), keep
each chain a chain (full, then incrementals linked to the copies of their
parents), skip what was copied before, and every copy must restore
identically from the target.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.lifecycle import MiB
from tests.support.replication import make_files


def test_copy_chains_with_dedup_against_the_target(make_site, trees, tmp_path: Path) -> None:
    source = make_site("local", tag="src")
    target = make_site("sftp", tag="dst")
    target_pw = tmp_path / "target-password"
    target_pw.write_text("a different password\n")
    target.env["HAEEDGE_PASSWORD_FILE"] = str(target_pw)
    source("init").ok()
    target("init").ok()

    src = make_files(tmp_path / "src", [3 * MiB, 2 * MiB, 500_000, 60_000])
    data_size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    snaps, scans = [], []
    for step in range(3):
        if step:
            (src / f"step{step}.bin").write_bytes(os.urandom(200_000))
            (src / "notes.txt").write_text(f"edited in step {step}\n")
        snaps.append(source.backup(src)["snapshot_id"])
        scans.append(trees.scan(src))
    kinds = [s["kind"] for s in source("--json", "snapshots").ok().json()]
    assert kinds == ["full", "incremental", "incremental"]

    # The target's own backup of the same files: the copy must not store their data again.
    target.backup(src)

    def copy(*args: str):
        return source("--json", "copy", "--to", target.locations[0], "--to-password-file", target_pw, *args,
                      env=target.env | {"HAEEDGE_PASSWORD_FILE": source.cli.env["HAEEDGE_PASSWORD_FILE"]})

    result = copy().ok().json()
    assert [c["source"] for c in result["copied"]] == snaps and not result["skipped"] and not result["failed"]
    assert result["chunks_deduplicated"] >= 3, result
    assert result["bytes_added"] < data_size // 4, f"the copy stored {result['bytes_added']} of {data_size} bytes"

    copies = {s["id"]: s for s in target("--json", "snapshots").ok().json()}
    copy_of = {c["source"]: c["target"] for c in result["copied"]}
    chain = [copies[copy_of[sid]] for sid in snaps]
    assert [c["kind"] for c in chain] == ["full", "incremental", "incremental"]
    assert [c["depth"] for c in chain] == [0, 1, 2]
    assert chain[1]["parent"] == chain[0]["id"] and chain[2]["parent"] == chain[1]["id"]
    assert chain[1]["chain"] == chain[2]["chain"] == chain[0]["id"]
    for sid, scan in zip(snaps, scans, strict=True):
        out = tmp_path / f"restore-{sid[:8]}"
        target("restore", copy_of[sid], "--target", out).ok()
        assert not trees.differences(scan, trees.scan(trees.restored_path(out, src))), sid[:8]

    # Again: nothing to do. Then a new incremental: only it is copied, linked below the last copy.
    again = copy().ok().json()
    assert not again["copied"] and {s["source"] for s in again["skipped"]} == set(snaps)
    assert again["bytes_added"] == 0
    (src / "step3.bin").write_bytes(os.urandom(100_000))
    snaps.append(source.backup(src)["snapshot_id"])
    latest = copy("latest").ok().json()
    assert [c["source"] for c in latest["copied"]] == [snaps[3]]
    new = {s["id"]: s for s in target("--json", "snapshots").ok().json()}[latest["copied"][0]["target"]]
    assert new["kind"] == "incremental" and new["parent"] == chain[2]["id"] and new["depth"] == 3
    out = tmp_path / "restore-latest"
    target("restore", new["id"], "--target", out).ok()
    assert not trees.differences(trees.scan(src), trees.scan(trees.restored_path(out, src)))

    target("verify", "--read-data").ok()
    # Different keys: the source's password does not open the target.
    target("snapshots", env={"HAEEDGE_PASSWORD_FILE": source.cli.env["HAEEDGE_PASSWORD_FILE"]}).expect(12)


def test_copy_refuses_the_same_repository_and_reports_damaged_sources(make_site, tmp_path: Path) -> None:
    source = make_site("local", tag="src")
    source("init").ok()
    src = make_files(tmp_path / "src", [MiB])
    source.backup(src)
    r = source("copy", "--to", source.locations[0]).expect(2)
    assert "same repository" in r.stderr

    target = make_site("local", tag="dst")
    target("init").ok()
    for p in (tmp_path / "local-src" / "data").rglob("*"):
        if p.is_file() and p.stat().st_size > 500_000:  # the data pack, not the small tree pack
            data = bytearray(p.read_bytes())
            data[len(data) // 3] ^= 1
            p.write_bytes(bytes(data))
    r = source("--json", "copy", "--to", target.locations[0]).expect(4)
    assert r.json()["failed"] and not r.json()["copied"]
    assert target("--json", "snapshots").ok().json() == []
    target("verify").ok()
