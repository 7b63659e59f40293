"""Issue 11, finding 2 (third attack) and the dedup trust domains (docs/security.md D3, D5).

A compromised writer (web1, simulated with the library holding exactly what its
slot holds) builds objects by the documented format (docs/format.md 6-7): a
pack of garbage blobs stored under the victim host's (web2) blob ids, and an
index object listing it that claims to supersede every other index object.
Before index format 2 this made the victim's later backups reference the
garbage, and the owner's ``prune`` delete the victim's real pack.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import time

import pytest

from haeedge.backends.base import data_name
from haeedge.crypto.pubkey import sign_detached
from haeedge.repo.index import INDEX_MAGIC_V1, IndexPack, encode_index
from haeedge.repo.pack import BLOB_DATA, COMPRESSION_NONE, PackBuilder, encode_header
from haeedge.repo.provenance import OWNER, host_domain
from tests.support.keys import WriteOnly


@pytest.fixture
def wo(cli, owner) -> WriteOnly:  # noqa: F811
    w = WriteOnly(cli, owner)
    w.init("web1")
    w.add_writer("web2")
    return w


def _victim_tree(root, seed: int = 7) -> dict[str, bytes]:
    """Small files (one chunk each), so their blob ids are HMACs of the whole content."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    files = {f"secret{i}.conf": rng.randbytes(3000) for i in range(4)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def _plant(wo: WriteOnly, contents: list[bytes], *, sign: bool = True, claim: str = "") -> tuple[str, str]:
    """As web1: store garbage under the blob ids of ``contents`` in a hand-built pack, and an index
    object listing it that supersedes every other index object. Returns (pack id, index object id)."""
    with wo.open("web1", load_index=False) as repo:
        builder = PackBuilder()
        for content in contents:
            bid = hmac.digest(repo.keys.blob_id, content, "sha256")
            sealed = repo.seal("content", os.urandom(len(content)))
            builder.add(BLOB_DATA, COMPRESSION_NONE, bid, sealed, len(content))
        entries = builder.entries
        pack_id = builder.finish(repo.seal("meta", encode_header(entries)))
        builder.store(repo.backend.put, data_name(pack_id))
        others = sorted(i.name.rsplit("/", 1)[-1] for i in repo.backend.list("index"))
        packs = [IndexPack(pack_id, builder.length, entries, claim)]
        if sign:
            signer = repo.signer()
            body = encode_index(packs, others, signer.fingerprint, lambda d: sign_detached(signer.key, d))
        else:  # format 1: no signature at all
            body = _encode_v1(packs, others)
        index_id = repo.put_object("index", repo.seal("meta", body))
    return pack_id, index_id


def _encode_v1(packs: list[IndexPack], superseded: list[str]) -> bytes:
    import struct

    parts = [INDEX_MAGIC_V1, struct.pack("<I", len(superseded)), *(bytes.fromhex(s) for s in superseded),
             struct.pack("<I", len(packs))]
    for p in packs:
        parts.append(struct.pack("<32sQI", bytes.fromhex(p.pack_id), p.size, len(p.entries)))
        parts += [struct.pack("<BB32sIII", e.blob_type, e.compression, e.blob_id, e.offset, e.length, e.raw_length)
                  for e in p.entries]
    return b"".join(parts)


def _restored(wo: WriteOnly, tmp_path, src, host: str = "web2") -> dict[str, bytes]:
    out = tmp_path / f"out-{time.monotonic_ns()}"
    r = wo.as_owner("restore", "latest", "--host", host, "--target", out)
    assert r.code == 0, r.describe()
    base = out / str(src).lstrip("/")
    return {p.name: p.read_bytes() for p in base.iterdir()}


def _data_packs(wo: WriteOnly) -> set[str]:
    root = wo.cli.repo_path / "data"
    return {p.name for p in root.rglob("*") if p.is_file()}


def test_planted_future_blob_ids_do_not_poison_the_victims_backup(wo, tmp_path):
    """(a) Garbage planted under the ids of content the victim has not backed up yet, plus an index
    claiming to supersede all others and attributing the pack to the victim: the victim uploads its
    own copies and restores byte-identical."""
    src = tmp_path / "web2-src"
    _victim_tree(tmp_path / "earlier", seed=1)
    wo.backup("web2", tmp_path / "earlier")  # something the planted index "supersedes"
    files = _victim_tree(src)
    planted, _index = _plant(wo, list(files.values()), claim=host_domain("web2"))
    summary = wo.backup("web2", src)
    assert summary["data_blobs_added"] == len(files), summary  # every planted id uploaded again
    assert _restored(wo, tmp_path, src) == files
    with wo.open() as repo:  # the victim's own copies are vouched for by web2; the planted ones by web1 only
        for content in files.values():
            domains = {d for _loc, d in repo.index.locations(hmac.digest(repo.keys.blob_id, content, "sha256"))}
            assert domains == {host_domain("web1"), host_domain("web2")}, domains
    assert planted in _data_packs(wo)


@pytest.mark.parametrize("signed", [True, False], ids=["writer-signed-index", "unsigned-v1-index"])
def test_prune_keeps_the_victims_pack_and_verify_names_the_attack(wo, tmp_path, signed):
    """(b) Garbage under the victim's existing blob ids + an index superseding all others: the owner's
    prune keeps the victim's real pack (and drops the planted one), verify --read-data exits 4."""
    src = tmp_path / "web2-src"
    files = _victim_tree(src)
    wo.backup("web2", src)
    real = _data_packs(wo)
    planted, index_id = _plant(wo, list(files.values()), sign=signed)

    r = wo.as_owner("--json", "verify", "--read-data")
    assert r.code == 4, r.describe()
    findings = r.json()["findings"]
    errors = [f for f in findings if f["severity"] == "error"]
    assert any(f["object"] == f"index/{index_id}" and "supersede" in f["message"] for f in errors), findings
    assert any(planted in f["object"] and "does not match its id" in f["message"] for f in errors), findings
    assert not any(f["files"] for f in errors), findings  # no file of the victim is blamed: its copies are good

    r = wo.as_owner("--json", "forget", "--keep-last", "5", "--prune")
    assert r.code == 0, r.describe()
    left = _data_packs(wo)
    assert real <= left, "prune deleted the victim's real pack"
    assert planted not in left  # the planted copies are vouched for by nobody the snapshots trust
    assert _restored(wo, tmp_path, src) == files
    r = wo.as_owner("--json", "verify", "--read-data")
    assert r.code == 0, r.describe()  # prune's owner-signed index replaced the attacker's


def test_blob_only_another_writer_vouches_for_is_an_error(wo, tmp_path):
    """A web2 snapshot whose blobs only web1's index objects list (web2 never stored them: a snapshot a
    compromised web2 could write to lean on web1's planted copies) is an error in verify, and the
    owner's prune keeps those copies rather than guess."""
    import json

    from haeedge.repo.pack import BLOB_TREE
    from haeedge.repo.snapshot import Snapshot

    shared = tmp_path / "shared"
    files = _victim_tree(shared, seed=3)
    wo.backup("web1", shared)
    with wo.open("web2") as repo:
        chunks = {name: hmac.digest(repo.keys.blob_id, data, "sha256") for name, data in files.items()}
        assert not any(repo.has_blob(b) for b in chunks.values())  # nothing web2 may deduplicate against
        lines = [{"path": name, "type": "file", "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 0,
                  "size": len(files[name]), "chunks": [[bid.hex(), len(files[name])]]}
                 for name, bid in sorted(chunks.items())]
        tree, _new = repo.save_blob(BLOB_TREE, b"".join(json.dumps(e).encode() + b"\n" for e in lines))
        repo.flush()
        repo.save_snapshot(Snapshot(time="2026-01-01T00:00:00.000000Z", host="web2", paths=["/leaning"], kind="full",
                                    tree=[tree.hex()]))
    r = wo.as_owner("--json", "verify")
    assert r.code == 4, r.describe()
    assert any("vouched for by neither the owner nor host 'web2'" in f["message"]
               for f in r.json()["findings"]), r.stdout
    web1_snap = next(s["id"] for s in wo.as_owner("--json", "snapshots").ok().json() if s["host"] == "web1")
    r = wo.as_owner("--json", "forget", web1_snap, "--prune")
    assert r.code == 0, r.describe()
    out = tmp_path / "out"
    r = wo.as_owner("restore", "latest", "--host", "web2", "--target", out)
    assert r.code == 0, r.describe()  # prune kept the only copies the kept snapshot uses
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


def test_owner_prune_keeps_writer_packs_in_their_domain(wo, tmp_path):
    """Prune's owner-signed index attributes each kept or repacked pack to the writer that vouched for it,
    so prune never turns one writer's blobs into something every host deduplicates against."""
    a = tmp_path / "a"
    _victim_tree(a, seed=11)
    wo.backup("web1", a)
    (a / "secret0.conf").write_bytes(b"changed\n" * 400)
    wo.backup("web1", a)
    first = wo.as_owner("--json", "snapshots").ok().json()[0]["id"]
    r = wo.as_owner("--json", "forget", first, "--prune")
    assert r.code == 0, r.describe()
    with wo.open() as repo:
        records = range(len(repo.index))
        domains = {repo.index.domain_at(i) for i in records if repo.index.entry_at(i)[1].blob_type == BLOB_DATA}
        assert domains == {host_domain("web1")}, domains  # the rebase's new file lists are the owner's own
    with wo.open("web2") as repo:
        bid = hmac.digest(repo.keys.blob_id, (a / "secret1.conf").read_bytes(), "sha256")
        assert repo.lookup_blob(bid) is not None and not repo.has_blob(bid)
    with wo.open("web1") as repo:
        assert repo.has_blob(bid)
    assert OWNER not in domains


def test_index_objects_are_signed_and_gpg_checkable(wo, tmp_path):
    """Index format 2: the signature trailer is a detached OpenPGP signature over the body."""
    src = tmp_path / "src"
    _victim_tree(src)
    wo.backup("web2", src)
    from haeedge.repo.index import decode_index_object

    with wo.open() as repo:
        registry = repo.registry()
        names = [i.name for i in repo.backend.list("index")]
        assert names
        for name in names:
            obj = decode_index_object(repo.open_sealed("meta", repo.get_object(name)))
            assert obj.version == 2 and obj.signature
            assert registry.describe(obj.signer) == "writer for host web2"
            assert hashlib.sha256(obj.signed).digest()  # the covered bytes are the body before the trailer


def test_cost_of_trust_domains_two_hosts_same_tree(wo, tmp_path):
    """docs/security.md D3 measures this: two writer hosts back up the same tree. Dedup across
    writer hosts is gone (web2 uploads what web1 already stored); within a host it is intact."""
    rng = random.Random(5)
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        root.mkdir()
    for i in range(8):  # ~4 MiB: half compressible text, half random
        data = rng.randbytes(512 << 10) if i % 2 else (b"log line %06d of a busy web server\n" % i) * 15_000
        (a / f"f{i}").write_bytes(data)
        (b / f"f{i}").write_bytes(data)
    first = wo.backup("web1", a)
    second = wo.backup("web2", b)
    print(f"\ntrust-dedup cost: web1 uploaded {first['bytes_added']} bytes, web2 (same tree) "
          f"{second['bytes_added']} bytes ({100 * second['bytes_added'] / first['bytes_added']:.0f}%)")
    assert second["data_blobs_added"] == first["data_blobs_added"]
    assert second["bytes_added"] >= 0.95 * first["bytes_added"]
    (b / "copy-of-f1").write_bytes((b / "f1").read_bytes())
    third = wo.backup("web2", b)
    assert third["data_blobs_added"] == 0  # its own copies still deduplicate


def _downgrade_index_to_v1(wo: WriteOnly) -> None:
    """Rewrite every index object as format 1 (unsigned), as haeedge wrote them before index format 2."""
    from haeedge.repo.index import decode_index

    with wo.open(load_index=False) as repo:
        for info in list(repo.backend.list("index")):
            packs, sup = decode_index(repo.open_sealed("meta", repo.get_object(info.name)))
            repo.put_object("index", repo.seal("meta", _encode_v1(packs, sup)))
            repo.backend.delete(info.name)


def test_legacy_unsigned_index_in_a_writer_repository(wo, tmp_path):
    """Old repositories: unsigned (format 1) index objects stay readable; with writer keys they are
    legacy: a warning in verify, not deduplicated against, never the reason prune deletes a copy."""
    src = tmp_path / "src"
    files = _victim_tree(src, seed=21)
    first = wo.backup("web2", src)
    _downgrade_index_to_v1(wo)
    assert _restored(wo, tmp_path, src) == files
    r = wo.as_owner("--json", "verify", "--read-data")
    assert r.code == 0, r.describe()
    assert any("not signed" in f["message"] for f in r.json()["findings"] if f["severity"] == "warning")
    (src / "new.conf").write_bytes(b"new\n" * 100)
    again = wo.backup("web2", src)
    assert again["data_blobs_added"] >= 1
    r = wo.as_owner("--json", "prune")
    assert r.code == 0, r.describe()
    assert _restored(wo, tmp_path, src) == {**files, "new.conf": b"new\n" * 100}
    assert first["data_blobs_added"] == len(files)


def test_legacy_unsigned_index_without_writers_is_the_owners(cli, tmp_path):
    """A password-only repository: everything unsigned was written by owner credentials, so the owner
    still deduplicates against it."""
    src = tmp_path / "src"
    files = _victim_tree(src, seed=22)
    assert cli("init").code == 0
    assert cli("backup", src).code == 0
    from haeedge.backends.local import LocalBackend
    from haeedge.repo.index import decode_index
    from haeedge.repo.repository import Credentials, Repository

    repo = Repository.open(LocalBackend(str(cli.repo_path)), Credentials([cli.password_file.read_bytes().strip()]))
    try:
        for info in list(repo.backend.list("index")):
            packs, sup = decode_index(repo.open_sealed("meta", repo.get_object(info.name)))
            repo.put_object("index", repo.seal("meta", _encode_v1(packs, sup)))
            repo.backend.delete(info.name)
    finally:
        repo.close()
    other = tmp_path / "other"
    other.mkdir()
    for name, data in files.items():
        (other / name).write_bytes(data)
    import json

    r = cli("--json", "backup", other)
    assert r.code == 0, r.describe()
    assert json.loads(r.stdout.splitlines()[-1])["data_blobs_added"] == 0
    assert cli("verify").code == 0


def test_modified_or_foreign_signed_index_objects_count_for_nobody(wo, tmp_path):
    """A changed byte in a signed index object, or a signature by a key the owner never registered,
    puts its entries in no host's domain; truncated trailers are clean format errors."""
    from haeedge.crypto.pubkey import load_secret_key
    from haeedge.errors import FormatError
    from haeedge.repo.index import decode_index_object
    from haeedge.repo.provenance import UNTRUSTED, attribute, has_writers
    from haeedge.repo.signing import generate_key

    src = tmp_path / "src"
    _victim_tree(src)
    wo.backup("web2", src)
    with wo.open() as repo:
        name = next(iter(repo.backend.list("index"))).name
        body = repo.open_sealed("meta", repo.get_object(name))
        registry = repo.registry()
        writers = has_writers(registry)
        assert attribute("x", decode_index_object(body), registry, writers).domain == host_domain("web2")
        obj = decode_index_object(body)
        flipped = bytearray(body)
        flipped[len(obj.signed) - 1] ^= 1  # last byte of the last entry's raw length
        bad = attribute("x", decode_index_object(bytes(flipped)), registry, writers)
        assert bad.domain == UNTRUSTED and "bad signature" in bad.problem
        stranger = load_secret_key(generate_key("stranger"))
        forged = encode_index(obj.packs, [], stranger.fingerprint_hex, lambda d: sign_detached(stranger, d))
        other = attribute("x", decode_index_object(forged), registry, writers)
        assert other.domain == UNTRUSTED and "not registered" in other.problem
        for cut in (len(obj.signed) + 1, len(body) - 1):
            with pytest.raises(FormatError):
                decode_index_object(body[:cut])
