"""verify: structure by default, data with --read-data or a subset; every problem names what it affects."""

from __future__ import annotations

import pytest

from haeedge.repo.pack import BLOB_DATA
from tests.support.lifecycle import flip_byte, pack_path, random_tree


@pytest.fixture
def repo(cli, trees):
    return trees.init_library_repo(cli.repo_path, chunker=trees.SMALL_CHUNKS, pack_size=1 << 20)


@pytest.fixture
def populated(cli, repo, tmp_path):
    src = random_tree(tmp_path / "src", seed=11, n_files=30, max_size=40_000, big=6)
    first = cli.backup(src)["snapshot_id"]
    (src / "d1" / "late.txt").write_bytes(b"late\n")
    second = cli.backup(src)["snapshot_id"]
    return src, first, second


def _data_pack_with_file(handle, snapshot_id: str) -> tuple[str, int, int, str]:
    """(pack id, offset, length, file path) of a data blob of some file of the snapshot."""
    with handle.open() as repo:
        snap = repo.load_snapshot(snapshot_id)
        for entry in repo.iter_entries(snap):
            for chunk_id, _n in entry.chunks or ():
                loc = repo.lookup_blob(bytes.fromhex(chunk_id))
                if loc.blob_type == BLOB_DATA and "big/" in entry.path.decode():
                    return loc.pack_id, loc.offset, loc.length, "/" + entry.path.decode()
    raise AssertionError("no data blob")


def test_subsets_partition_the_packs(cli, repo, populated):
    total = cli("verify", "--read-data", "--json").ok().json()
    assert total["packs_read"] == total["packs"] >= 6
    parts = [cli("verify", "--read-data-subset", f"{i}/3", "--json").ok().json()["packs_read"] for i in (1, 2, 3)]
    # Part N of M holds the packs whose id (its first 32 bits) is N-1 modulo M: stable from run to run.
    ids = [p.name for p in repo.objects("data")]
    assert len(ids) == total["packs"]
    assert parts == [sum(1 for p in ids if int(p[:8], 16) % 3 == i - 1) for i in (1, 2, 3)]
    assert cli("verify", "--read-data-subset", "100%", "--json").ok().json()["packs_read"] == total["packs"]
    # A percentage reads exactly that share of the packs (rounded up), never none.
    assert cli("verify", "--read-data-subset", "50%", "--json").ok().json()["packs_read"] == -(-total["packs"] // 2)
    assert cli("verify", "--read-data-subset", "0.1%", "--json").ok().json()["packs_read"] == 1


def test_a_damaged_pack_is_found_by_exactly_one_subset(cli, repo, populated):
    _src, _first, second = populated
    pack_id, offset, length, path = _data_pack_with_file(repo, second)
    flip_byte(pack_path(repo.path, pack_id), offset + length // 2)
    found = []
    for i in (1, 2, 3):
        r = cli("verify", "--read-data-subset", f"{i}/3")
        assert r.code in (0, 4), r.describe()
        if r.code == 4:
            found.append(i)
            assert pack_id in r.stdout + r.stderr
    assert found == [int(pack_id[:8], 16) % 3 + 1]  # the one part that holds that pack


@pytest.mark.parametrize("spec", ["0/3", "4/3", "1/0", "abc", "0%", "101%", "1/3/5", "%"])
def test_bad_subset_specs_are_usage_errors(cli, repo, spec):
    r = cli("verify", "--read-data-subset", spec)
    assert r.code == 2 and "--read-data-subset" in r.stderr and "Traceback" not in r.stderr, r.describe()


def test_damaged_data_is_named_with_its_snapshots_and_files(cli, repo, populated):
    _src, first, second = populated
    pack_id, offset, length, path = _data_pack_with_file(repo, second)
    flip_byte(pack_path(repo.path, pack_id), offset + length // 2)
    assert cli("verify").code == 0  # structure is intact: data damage needs --read-data
    r = cli("verify", "--read-data", "--json")
    assert r.code == 4, r.describe()
    findings = r.json()["findings"]
    objects = {f["object"] for f in findings if f["severity"] == "error"}
    assert f"data/{pack_id[:2]}/{pack_id}" in objects
    blame = [f for f in findings if f["object"].startswith("data blob")]
    assert blame and set(blame[0]["snapshots"]) == {first, second} and path in blame[0]["files"]
    text = cli("verify", "--read-data")
    assert text.code == 4 and f"affects {path}" in text.stderr and pack_id in text.stdout + text.stderr


def test_a_missing_pack_is_found_without_reading_data(cli, repo, populated):
    _src, first, second = populated
    pack_id, _o, _l, path = _data_pack_with_file(repo, first)
    pack_path(repo.path, pack_id).unlink()
    r = cli("verify", "--json")
    assert r.code == 4, r.describe()
    findings = r.json()["findings"]
    assert any(f["object"] == f"data/{pack_id[:2]}/{pack_id}" and "missing" in f["message"] for f in findings)
    assert any(path in f["files"] and set(f["snapshots"]) == {first, second} for f in findings)


def test_a_broken_chain_names_every_snapshot_it_affects(cli, repo, populated, tmp_path):
    src, first, second = populated
    (src / "third.txt").write_bytes(b"3")
    third = cli.backup(src)["snapshot_id"]
    (repo.path / "snapshots" / second).unlink()
    r = cli("verify", "--json")
    assert r.code == 4, r.describe()
    broken = {s for f in r.json()["findings"] for s in f["snapshots"] if "chain" in f["message"]}
    assert broken == {third}
