"""Write-only backup hosts: every claim of docs/security.md section 2-3, through the real CLI where it can be.

A "compromised writer" is simulated with the library, holding exactly what a
writer slot holds (the repository opened with the writer's password).
"""

from __future__ import annotations

import hmac
import json
import os
import random

import pytest

from haeedge.crypto.openpgp import TAG_PKESK, TAG_SKESK, Keyring, NoMatchingKey, decrypt_message, esk_summary
from haeedge.errors import NoReadAccess
from haeedge.repo.keys import host_tree_key
from haeedge.repo.pack import BLOB_DATA, BLOB_TREE
from haeedge.repo.repository import hex_id
from tests.support.keys import WriteOnly, make_owner


@pytest.fixture
def wo(cli, owner) -> WriteOnly:  # noqa: F811
    w = WriteOnly(cli, owner)
    w.init("web1")
    return w


def _tree(root, seed: int, files: int = 6, size: int = 200_000) -> dict[str, bytes]:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(files):
        data = rng.randbytes(size) if i % 2 else (b"text line %d\n" % seed) * (size // 12)
        (root / f"f{i}").write_bytes(data)
        out[f"f{i}"] = data
    return out


def _snapshots(wo: WriteOnly) -> list[dict]:
    return wo.as_owner("--json", "snapshots").ok().json()


def _one_line_error(r) -> None:
    assert "Traceback" not in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("haeedge: error")]) == 1, r.stderr


# ---------------------------------------------------------------------- what a writer can do (W1-W7)


def test_writer_full_then_incremental(wo, tmp_path):
    src = tmp_path / "src"
    _tree(src, 1)
    first = wo.backup("web1", src)
    assert first["kind"] == "full" and first["files_new"] == 6
    (src / "f0").write_bytes(b"changed\n" * 100)
    second = wo.backup("web1", src)
    assert second["kind"] == "incremental" and second["parent"] == first["snapshot_id"]
    assert second["files_unchanged"] == 5 and second["files_changed"] == 1
    assert second["bytes_read"] == 800  # only the changed file was read again
    third = wo.backup("web1", src)
    assert third["kind"] == "incremental" and third["bytes_read"] == 0 and third["data_blobs_added"] == 0


def test_writer_deduplicates_only_within_its_trust_domain(wo, tmp_path):
    """W1: a writer deduplicates against its own host's blobs and the owner's, not other writers'
    (docs/security.md D3: another writer could have planted a blob under a guessed id)."""
    wo.add_writer("web2")
    a, b = tmp_path / "a", tmp_path / "b"
    files = _tree(a, 2)
    b.mkdir()
    for name, data in files.items():
        (b / name).write_bytes(data)
    first = wo.backup("web1", a)
    assert first["data_blobs_added"] > 0
    second = wo.backup("web2", b)
    assert second["data_blobs_added"] == first["data_blobs_added"], second  # web1's copies are not web2's
    (b / "copy").write_bytes(files["f1"])
    third = wo.backup("web2", b)
    assert third["data_blobs_added"] == 0, third  # its own blobs it deduplicates against
    r = wo.as_owner("restore", "latest", "--host", "web2", "--target", tmp_path / "out")
    assert r.code == 0, r.describe()
    assert (tmp_path / "out" / str(b).lstrip("/") / "copy").read_bytes() == files["f1"]


def test_replaced_writer_key_continues_the_hosts_chain(wo, tmp_path):
    src = tmp_path / "src"
    _tree(src, 3)
    first = wo.backup("web1", src)
    old_key = next(k for k in wo.as_owner("--json", "key", "list").ok().json()["keys"] if k["host"] == "web1")
    new_pw = tmp_path / "new-web1.pw"
    new_pw.write_text("a new password for web1\n")
    wo.as_owner("key", "add", "--writer", "--host", "web1", "--new-password-file", new_pw).ok()
    wo.as_owner("key", "remove", old_key["id"][:12]).ok()
    r = wo.cli("--json", "backup", "--host", "web1", src, env={"HAEEDGE_PASSWORD_FILE": str(new_pw)})
    assert r.code == 0, r.describe()
    summary = json.loads(r.stdout.splitlines()[-1])
    assert summary["kind"] == "incremental" and summary["parent"] == first["snapshot_id"]
    assert summary["bytes_read"] == 0
    r = wo.cli("backup", "--host", "web1", src, env={"HAEEDGE_PASSWORD_FILE": str(wo.password_file("web1"))})
    assert r.code == 12 and "wrong password" in r.stderr  # the old key is gone


def test_writer_lists_its_own_snapshots_and_files(wo, tmp_path):
    wo.add_writer("web2")
    a, b = tmp_path / "a", tmp_path / "b"
    _tree(a, 4)
    _tree(b, 5)
    wo.backup("web1", a)
    wo.backup("web2", b)
    listed = wo.as_writer("web1", "--json", "snapshots").ok().json()
    assert [s["host"] for s in listed] == ["web1"]
    assert listed[0]["signature"]["state"] == "good" and listed[0]["signature"]["role"] == "writer"
    files = wo.as_writer("web1", "ls", "latest").ok().stdout.splitlines()
    assert f"{a}/f0" in files and not any(str(b) in f for f in files)


def test_writer_can_decrypt_every_snapshot_manifest(wo, tmp_path):
    wo.add_writer("web2")
    b = tmp_path / "b"
    _tree(b, 6)
    web2 = wo.backup("web2", b)["snapshot_id"]
    with wo.open("web1") as repo:
        doc = json.loads(repo.open_sealed("meta", repo.get_object(f"snapshots/{web2}")))
    assert doc["host"] == "web2" and doc["paths"] == [str(b)] and doc["summary"]["files_new"] == 6
    assert doc["tree"] and doc["signer"]


def test_writer_reads_index_sizes_and_layout(wo, tmp_path):
    wo.add_writer("web2")
    b = tmp_path / "b"
    files = _tree(b, 7, files=2, size=100_000)
    wo.backup("web2", b)
    with wo.open("web1") as repo:
        entries = list(repo.index.iter_entries())
        assert {loc.blob_type for _b, loc in entries} == {BLOB_DATA, BLOB_TREE}
        sizes = sorted(loc.raw_length for _b, loc in entries if loc.blob_type == BLOB_DATA)
        header = repo.read_pack_header(entries[0][1].pack_id)
    assert sum(sizes) == sum(len(d) for d in files.values())  # plain sizes of web2's chunks
    assert header and all(e.length > 0 for e in header)


def test_writer_can_confirm_a_known_chunk(wo, tmp_path):
    wo.add_writer("web2")
    b = tmp_path / "b"
    known = b"a file everybody has\n" * 10
    b.mkdir()
    (b / "known.txt").write_bytes(known)
    wo.backup("web2", b)
    with wo.open("web1") as repo:
        guess = hmac.digest(repo.keys.blob_id, known, "sha256")
        other = hmac.digest(repo.keys.blob_id, b"something never stored", "sha256")
        assert repo.lookup_blob(guess) is not None and repo.lookup_blob(other) is None


def test_writer_lists_keys_but_sees_no_master_keys(wo, gpg, tmp_path):  # noqa: F811
    keys = wo.as_writer("web1", "--json", "key", "list").ok().json()["keys"]
    assert sorted((k["kind"], k["role"]) for k in keys) == [("certificate", "owner"), ("writer", "writer")]
    mine = next(k for k in keys if k["in_use"])
    assert mine["host"] == "web1" and mine["kind"] == "writer"
    # The writer slot opens with the host's password in gpg too: no content key, not the tree master key.
    slot = (wo.cli.repo_path / "keys" / mine["id"]).read_bytes()
    doc = json.loads(gpg.decrypt(slot, passphrase=wo.password_file("web1").read_text().strip()).stdout)
    assert doc["role"] == "writer" and set(doc["keys"]) == {"tree", "meta", "blob_id"}
    with wo.open() as owner_repo:
        assert doc["keys"]["tree"] != owner_repo.keys.tree.hex()
        assert doc["keys"]["tree"] == host_tree_key(owner_repo.keys.tree, "web1").hex()
        assert owner_repo.keys.content is not None


# ---------------------------------------------------------------------- what a writer cannot do (N1-N4)


def test_writer_cannot_restore_even_its_own_backups(wo, tmp_path):
    src = tmp_path / "src"
    _tree(src, 8)
    wo.backup("web1", src)
    target = tmp_path / "out"
    for args in (("restore", "latest", "--target", target), ("verify",), ("verify", "--read-data")):
        r = wo.as_writer("web1", *args)
        assert r.code == 12, r.describe()
        _one_line_error(r)
        assert "write-only key" in r.stderr and "'content' key" in r.stderr and "--identity-file" in r.stderr
    assert not target.exists()


def test_no_writer_key_opens_a_data_blob(wo, tmp_path, gpg):  # noqa: F811
    src = tmp_path / "src"
    _tree(src, 9, files=2)
    wo.backup("web1", src)
    with wo.open("web1") as repo:
        (bid, loc) = next((b, x) for b, x in repo.index.iter_entries() if x.blob_type == BLOB_DATA)
        sealed = repo.backend.get_range(f"data/{loc.pack_id[:2]}/{loc.pack_id}", loc.offset, loc.length)
        with pytest.raises(NoReadAccess):
            repo.decode_blob(bid, loc, sealed)
        every_key = [repo.keys.passphrase(n) for n in ("tree", "meta")] + [repo.keys.blob_id.hex().encode()]
        with pytest.raises(NoMatchingKey):
            decrypt_message(sealed, Keyring(every_key))
    # Only public-key packets open it: gpg with each writer secret as a passphrase fails.
    assert {tag for tag, _ in esk_summary(sealed)} == {TAG_PKESK}
    for pw in every_key:
        assert gpg.decrypt(sealed, passphrase=pw.decode(), check=False).returncode != 0


def test_writer_cannot_read_other_hosts_file_lists(wo, tmp_path):
    wo.add_writer("web2")
    a, b = tmp_path / "a", tmp_path / "b"
    _tree(a, 10)
    _tree(b, 11)
    wo.backup("web1", a)
    web2 = wo.backup("web2", b)["snapshot_id"]
    r = wo.as_writer("web1", "ls", web2[:12])
    assert r.code == 12 and "host web2" in r.stderr and str(b) not in r.stdout, r.describe()
    _one_line_error(r)
    with wo.open("web2") as repo:
        snap = repo.load_snapshot(web2)
        tree_loc = repo.lookup_blob(hex_id(snap.tree[0]))
        sealed = repo.backend.get_range(f"data/{tree_loc.pack_id[:2]}/{tree_loc.pack_id}", tree_loc.offset,
                                        tree_loc.length)
    with wo.open("web1") as repo:
        with pytest.raises(NoMatchingKey):
            decrypt_message(sealed, repo.keyring("tree"))


def test_writer_cannot_manage_keys_or_rewrite(wo, tmp_path):
    src = tmp_path / "src"
    _tree(src, 12, files=1)
    wo.backup("web1", src)
    pw = tmp_path / "x.pw"
    pw.write_text("whatever\n")
    cases = [("key", "add", "--new-password-file", pw), ("key", "add", "--writer", "--host", "evil",
                                                           "--new-password-file", pw),
             ("key", "passwd", "--new-password-file", pw), ("tag", "latest", "--add", "x")]
    keys = wo.as_owner("--json", "key", "list").ok().json()["keys"]
    cases.append(("key", "remove", next(k for k in keys if k["kind"] == "certificate")["id"][:12]))
    for args in cases:
        r = wo.as_writer("web1", *args)
        assert r.code == 12, r.describe()
        _one_line_error(r)
    assert len(wo.as_owner("--json", "key", "list").ok().json()["keys"]) == 2


# ---------------------------------------------------------------------- the owner's side (section 3)


def test_owner_restores_every_host_with_the_secret_key(wo, trees, tmp_path):
    wo.add_writer("web2")
    a, b = tmp_path / "a", tmp_path / "b"
    _tree(a, 13)
    _tree(b, 14)
    wo.backup("web1", a)
    (a / "f1").write_bytes(b"modified on web1")
    wo.backup("web1", a)
    wo.backup("web2", b)
    for host, src in (("web1", a), ("web2", b)):
        target = tmp_path / f"restore-{host}"
        wo.as_owner("restore", "latest", "--host", host, "--target", target).ok()
        trees.assert_same(src, trees.restored_path(target, src))
    r = wo.as_owner("--json", "verify", "--read-data").ok()
    assert r.json()["ok"] and not r.json()["findings"]


def test_owner_password_key_needs_the_secret_key_for_writer_data(wo, tmp_path):
    src = tmp_path / "src"
    _tree(src, 15, files=2)
    wo.backup("web1", src)
    pw = tmp_path / "owner.pw"
    pw.write_text("an owner password\n")
    wo.as_owner("key", "add", "--new-password-file", pw).ok()
    env = {"HAEEDGE_PASSWORD_FILE": str(pw)}
    assert [s["host"] for s in wo.cli("--json", "snapshots", env=env).ok().json()] == ["web1"]
    for args in (("ls", "latest"), ("restore", "latest", "--target", tmp_path / "out")):
        r = wo.cli(*args, env=env)
        assert r.code == 12 and "--identity-file" in r.stderr and "write-only host" in r.stderr, r.describe()
        _one_line_error(r)


def test_last_owner_certificate_is_kept_while_writers_exist(wo, tmp_path):
    pw = tmp_path / "owner.pw"
    pw.write_text("an owner password\n")
    wo.as_owner("key", "add", "--new-password-file", pw).ok()
    cert_key = next(k for k in wo.as_owner("--json", "key", "list").ok().json()["keys"] if k["kind"] == "certificate")
    r = wo.cli("key", "remove", cert_key["id"][:12], env={"HAEEDGE_PASSWORD_FILE": str(pw)})
    assert r.code == 2 and "last owner certificate" in r.stderr, r.describe()


def test_added_owner_certificate_reads_new_writer_data(wo, gpg, tmp_path):  # noqa: F811
    second = make_owner(gpg, tmp_path / "second", "second-owner", passphrase="second pass")
    wo.as_owner("key", "add", "--recipient-file", second.cert_file).ok()
    src = tmp_path / "new-data"
    files = _tree(src, 16, files=2)
    wo.backup("web1", src)
    target = tmp_path / "out"
    wo.cli("--identity-file", second.secret_file, "restore", "latest", "--target", target,
           env={"HAEEDGE_PASSWORD_FILE": str(second.passphrase_file)}).ok()
    for name, data in files.items():
        assert (target / str(src).lstrip("/") / name).read_bytes() == data
    # The writer now sends one PKESK per owner certificate, computed once for the whole run.
    with wo.open() as repo:
        esks = set()
        for _bid, loc in repo.index.iter_entries():
            if loc.blob_type == BLOB_DATA:
                sealed = repo.backend.get_range(f"data/{loc.pack_id[:2]}/{loc.pack_id}", loc.offset, loc.length)
                esks.add(tuple(esk_summary(sealed)))
    assert len(esks) == 1
    (esk,) = esks
    assert [tag for tag, _b in esk] == [TAG_PKESK, TAG_PKESK]


def test_one_pkesk_per_backup_run(wo, tmp_path):
    src = tmp_path / "src"
    _tree(src, 17, files=4)
    wo.backup("web1", src)
    (src / "new").write_bytes(os.urandom(300_000))
    wo.backup("web1", src)
    with wo.open() as repo:
        by_snapshot = []
        for snap in repo.list_snapshots():
            esks = set()
            for entry in repo.iter_tree(snap.tree):
                for cid, _n in entry.chunks or ():
                    loc = repo.lookup_blob(hex_id(cid))
                    sealed = repo.backend.get_range(f"data/{loc.pack_id[:2]}/{loc.pack_id}", loc.offset, loc.length)
                    esks.add(tuple(esk_summary(sealed)))
            by_snapshot.append(esks)
            # Tree blobs: the same PKESK to the owner, then a SKESK with the host's tree key.
            loc = repo.lookup_blob(hex_id(snap.tree[0]))
            sealed = repo.backend.get_range(f"data/{loc.pack_id[:2]}/{loc.pack_id}", loc.offset, loc.length)
            assert [tag for tag, _ in esk_summary(sealed)] == [TAG_PKESK, TAG_SKESK]
    assert len(by_snapshot[0]) == 1  # the full: every data blob behind one and the same PKESK
    new_esks = by_snapshot[1] - by_snapshot[0]
    assert len(new_esks) == 1  # the incremental's new chunks share another one


# ---------------------------------------------------------------------- what a compromised writer can do (D1-D3)


def test_compromised_writer_deletes_are_detected_where_possible(wo, tmp_path):
    wo.add_writer("web2")
    b = tmp_path / "b"
    _tree(b, 18)
    full = wo.backup("web2", b)["snapshot_id"]
    (b / "f0").write_bytes(b"new")
    incr = wo.backup("web2", b)["snapshot_id"]
    with wo.open("web1") as repo:  # web1 holds what any writer holds: storage access and meta
        loc = next(x for _b, x in repo.index.iter_entries() if x.blob_type == BLOB_DATA)
        repo.backend.delete(f"data/{loc.pack_id[:2]}/{loc.pack_id}")
        repo.backend.delete(f"snapshots/{full}")
    r = wo.as_owner("--json", "verify")
    assert r.code == 4, r.describe()
    findings = r.json()["findings"]
    text = json.dumps(findings)
    assert "missing" in text and "broken chain" in text
    assert any(incr in f["snapshots"] for f in findings)


def test_replayed_snapshot_is_not_detected(wo, tmp_path):
    src = tmp_path / "src"
    _tree(src, 19, files=1)
    sid = wo.backup("web1", src)["snapshot_id"]
    path = wo.cli.repo_path / "snapshots" / sid
    saved = path.read_bytes()
    path.unlink()
    path.write_bytes(saved)  # a compromised writer puts back what was deleted: a valid signature
    wo.as_owner("verify").ok()


def test_dedup_poisoning_is_refused_and_detected_by_read_data(wo, tmp_path):
    """D3: a blob planted under another host's future blob id is not deduplicated against; the victim
    uploads its own copy and restores intact; verify --read-data names the planted copy."""
    wo.add_writer("web2")
    victim_content = b"the configuration every web server has\n" * 50
    with wo.open("web1") as repo:  # web1 is compromised: it plants a wrong blob under that content's id
        bid = hmac.digest(repo.keys.blob_id, victim_content, "sha256")
        repo.save_blob(BLOB_DATA, os.urandom(len(victim_content)), blob_id=bid)
        repo.flush()
        planted_pack = repo.lookup_blob(bid).pack_id
    b = tmp_path / "b"
    b.mkdir()
    (b / "nginx.conf").write_bytes(victim_content)
    assert wo.backup("web2", b)["data_blobs_added"] == 1  # its own copy, not the planted one
    r = wo.as_owner("restore", "latest", "--host", "web2", "--target", tmp_path / "out")
    assert r.code == 0, r.describe()
    assert (tmp_path / "out" / str(b).lstrip("/") / "nginx.conf").read_bytes() == victim_content
    r = wo.as_owner("--json", "verify", "--read-data")
    assert r.code == 4
    findings = r.json()["findings"]
    assert any(planted_pack in f["object"] and "does not match its id" in f["message"] for f in findings), findings
    assert not any(f"{b}/nginx.conf" in f["files"] for f in findings), findings  # the victim's copy is fine


def test_writer_tree_key_is_per_host_and_owner_derivable(wo, tmp_path):
    """docs/format.md: a writer's tree key is HMAC-SHA-256(tree master, 'haeedge host tree key' NUL host)."""
    wo.add_writer("web2")
    with wo.open() as owner_repo, wo.open("web2") as w2:
        assert w2.keys.tree == host_tree_key(owner_repo.keys.tree, "web2")
        assert w2.keys.content is None and w2.keys.meta == owner_repo.keys.meta
