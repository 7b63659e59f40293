"""The trust root (issue 11, findings 1, 3, 4, 5 and forget's use of trust): each attack through the CLI.

A "compromised writer" is simulated with the library holding exactly what a
writer slot holds; an "attacker with only owner.asc" runs the real CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from haeedge.backends.local import LocalBackend
from haeedge.crypto.pubkey import generate_signing_key, parse_certificate
from haeedge.errors import ExitCode
from haeedge.repo.config import RepositoryConfig
from haeedge.repo.keys import MasterKeys, seal_slot_for_certificate
from haeedge.repo.repository import Repository
from haeedge.repo.signing import canonical_json, sign_snapshot
from haeedge.repo.snapshot import Snapshot
from haeedge.repo.trust import read_manifests
from tests.support.keys import WriteOnly, make_owner
from tests.support.ops import documented_schemas, validate

UNTRUSTED = ExitCode.UNTRUSTED


@pytest.fixture
def wo(cli, owner) -> WriteOnly:  # noqa: F811
    w = WriteOnly(cli, owner)
    w.init("web1")
    w.add_writer("db1")
    return w


def _src(tmp_path, name: str, content: bytes) -> os.PathLike:
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    (d / "file").write_bytes(content)
    return d


def _one_error(r, *words: str) -> None:
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("haeedge: error")]
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], r.stderr


def _raw_snapshot(repo, sid: str) -> Snapshot:
    return Snapshot.from_bytes(repo.open_sealed("meta", repo.get_object(f"snapshots/{sid}")), sid)


def _files_under(path) -> dict[str, bytes]:
    out = {}
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, path)] = open(p, "rb").read()
    return out


# ---------------------------------------------------------------------- finding 1a: a repository built from owner.asc


def test_repository_built_from_the_public_certificate_is_refused(cli, owner, tmp_path):  # noqa: F811
    real = WriteOnly(cli, owner)
    real.init("db1")
    real.backup("db1", _src(tmp_path, "real", b"genuine database dump\n"))
    real.as_owner("snapshots").ok()  # the owner's client now remembers this repository's trust root
    # The attacker has owner.asc only: builds a repository of its own, backs up fake files as db1 ...
    fake_dir = tmp_path / "fake"
    fake = {"HAEEDGE_REPOSITORY": str(fake_dir), "HAEEDGE_PASSWORD_FILE": str(real.password_file("attacker")),
            "HAEEDGE_TRUST_FILE": str(tmp_path / "attacker-memory.json")}
    cli("init", "--recipient-file", owner.cert_file, "--host", "db1", env=fake).ok()
    cli("backup", "--host", "db1", _src(tmp_path, "evil", b"ATTACKER CONTENT\n"), env=fake).ok()
    # ... and puts it in place of the real one.
    shutil.rmtree(cli.repo_path)
    shutil.copytree(fake_dir, cli.repo_path)
    target = tmp_path / "restored"
    for args in (("snapshots",), ("restore", "latest", "--host", "db1", "--target", target),
                 ("backup", "--host", "workstation", _src(tmp_path, "o", b"owner data\n")), ("verify",)):
        r = real.as_owner(*args)
        assert r.code == UNTRUSTED, r.describe()
        _one_error(r, "not approved by the owner key")
    assert not target.exists() or b"ATTACKER" not in b"".join(_files_under(target).values())
    # The same holds for a client that never saw the real repository.
    r = real.as_owner("snapshots", env={"HAEEDGE_TRUST_FILE": str(tmp_path / "fresh.json")})
    assert r.code == UNTRUSTED, r.describe()


# ---------------------------------------------------------------------- finding 1b: a planted certificate slot


def test_planted_certificate_slot_is_ignored(wo, owner, tmp_path):  # noqa: F811
    with wo.open() as repo:
        real_content = repo.keys.content
    cert = parse_certificate(owner.cert_file.read_bytes())
    with wo.open("web1") as w:  # the writer: real meta and blob_id, content and tree keys of its choosing
        planted = MasterKeys(os.urandom(32), os.urandom(32), w.keys.meta, w.keys.blob_id,
                             signing_key=generate_signing_key("evil")[0])
        names = sorted(i.name for i in w.backend.list("keys"))
        while True:  # sort first, so that a first-match open would take it
            data = seal_slot_for_certificate(planted, w.config.repository_id, cert)
            oid = hashlib.sha256(data).hexdigest()
            if f"keys/{oid}" < names[0]:
                w.put_named(f"keys/{oid}", data)
                break
    with wo.open() as repo:
        assert repo.keys.content == real_content and repo.slot.slot_id != oid
    src = _src(tmp_path, "o", b"owner data after the plant\n")
    wo.as_owner("backup", "--host", "workstation", src).ok()
    with wo.open() as repo:
        assert repo.keys.content == real_content
        snap = repo.resolve_snapshot("latest", hosts=["workstation"])
        assert repo.is_owner_signed(snap)
    target = tmp_path / "restored"
    wo.as_owner("restore", "latest", "--host", "workstation", "--target", target).ok()
    assert b"owner data after the plant" in b"".join(_files_under(target).values())


# ---------------------------------------------------------------------- finding 3: readers check signatures


def test_readers_ignore_a_snapshot_a_writer_signed_for_another_host(wo, tmp_path):
    wo.backup("db1", _src(tmp_path, "db", b"genuine db1 data\n"))
    forged = wo.backup("web1", _src(tmp_path, "evil", b"ATTACKER CONTENT\n"), extra=("--host", "db1"))["snapshot_id"]
    target = tmp_path / "restored"
    wo.as_owner("restore", "latest", "--host", "db1", "--target", target).ok()
    got = b"".join(_files_under(target).values())
    assert b"genuine db1 data" in got and b"ATTACKER" not in got
    for args in (("ls", forged), ("dump", forged, "file"), ("restore", forged, "--target", tmp_path / "r2"),
                 ("diff", forged, "latest")):
        r = wo.as_owner(*args)
        assert r.code == ExitCode.INTEGRITY, r.describe()
        _one_error(r, "not trusted")
    assert not (tmp_path / "r2").exists()
    found = wo.as_owner("--json", "find", "file").ok().stdout
    assert forged not in found
    stats = wo.as_owner("--json", "stats").ok().json()
    assert stats["total"]["snapshots"] == 1
    r = wo.as_owner("--json", "verify").expect(ExitCode.INTEGRITY)
    assert any(forged in f.get("snapshots", []) for f in r.json()["findings"])
    listed = wo.as_owner("--json", "snapshots").ok().json()
    assert {s["id"]: s["signature"]["state"] for s in listed}[forged] == "wrong-host"
    # An explicit opt-in reads it, with a warning.
    r = wo.as_owner("--allow-untrusted", "ls", forged).ok()
    assert "untrusted snapshot" in r.stderr
    # ...but never has the owner's key re-sign it: tag and repair rewrite (and sign) what they touch.
    for args in (("tag", "--add", "laundered", forged), ("repair", "snapshots")):
        wo.as_owner("--allow-untrusted", *args)
    listed = wo.as_owner("--json", "snapshots").ok().json()
    assert {s["id"]: s["signature"]["state"] for s in listed}.get(forged) == "wrong-host", listed
    assert not any("laundered" in (s.get("tags") or []) and s["signature"]["state"] == "good" for s in listed)
    r = wo.as_owner("--allow-untrusted", "tag", "--add", "laundered", forged)
    assert r.code == ExitCode.INTEGRITY and "will not re-sign" in r.stderr, r.describe()


def test_forget_keeps_the_genuine_snapshot(wo, tmp_path):
    genuine = wo.backup("db1", _src(tmp_path, "db", b"genuine db1 data\n"))["snapshot_id"]
    with wo.open("web1") as w:  # "replaces" the genuine one, and a newer one claiming db1
        snap = _raw_snapshot(w, genuine)
        snap.extra["replaces"] = genuine
        snap.signer = snap.signature = None
        w.put_object("snapshots", w.seal("meta", snap.to_bytes()))
        snap2 = _raw_snapshot(w, genuine)
        snap2.time = "2099-01-01T00:00:00.000000Z"
        sign_snapshot(w.signer(), snap2)
        w.put_object("snapshots", w.seal("meta", snap2.to_bytes()))
    wo.as_owner("forget", "--keep-last", "1", "--host", "db1", "--prune").ok()
    ids = [s["id"] for s in wo.as_owner("--json", "snapshots").ok().json()]
    assert genuine in ids
    target = tmp_path / "restored"
    wo.as_owner("restore", genuine, "--target", target).ok()
    assert b"genuine db1 data" in b"".join(_files_under(target).values())


# ---------------------------------------------------------------------- finding 4: removal is final


def test_removed_writer_cannot_be_reinstated_by_replaying_keys(wo, tmp_path):
    wo.backup("db1", _src(tmp_path, "db", b"db1 data\n"))
    saved = tmp_path / "saved-keys"
    shutil.copytree(wo.cli.repo_path / "keys", saved)
    db1 = next(k for k in wo.as_owner("--json", "key", "list").ok().json()["keys"] if k["host"] == "db1")
    wo.as_owner("key", "remove", db1["id"][:12]).ok()
    r = wo.as_writer("db1", "backup", "--host", "db1", _src(tmp_path, "db2", b"more\n"))
    assert r.code == ExitCode.WRONG_PASSWORD, r.describe()  # its slot is gone
    # Put the old slot and record back (the new manifest stays): still removed.
    for p in saved.rglob("*"):
        if p.is_file():
            dest = wo.cli.repo_path / "keys" / p.relative_to(saved)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                shutil.copy(p, dest)
    r = wo.as_writer("db1", "backup", "--host", "db1", _src(tmp_path, "db3", b"x\n"))
    assert r.code == UNTRUSTED, r.describe()
    _one_error(r, "was removed")
    signers = wo.as_owner("--json", "key", "signers").ok().json()["signers"]
    assert all(s["state"] == "removed" for s in signers if s["host"] == "db1")
    keys = wo.as_owner("--json", "key", "list").ok().json()["keys"]
    assert not [k for k in keys if k["host"] == "db1" and k["registered"]]
    # Also delete the new manifest: the old one is a rollback this client refuses.
    shutil.rmtree(wo.cli.repo_path / "keys")
    shutil.copytree(saved, wo.cli.repo_path / "keys")
    r = wo.as_owner("snapshots")
    assert r.code == UNTRUSTED, r.describe()
    _one_error(r, "went back in time")


# ---------------------------------------------------------------------- finding 5: config is signed


def test_config_rewritten_by_a_writer_is_refused(wo, tmp_path):
    with wo.open("web1") as w:
        cfg = json.loads(w.config_plain)
        cfg["chunker"] = {**cfg["chunker"], "min": 64, "avg": 256, "max": 1024}
        cfg["compression"]["level"] = 0
        w.backend.put("config", w.seal("meta", json.dumps(cfg, sort_keys=True).encode()))
    for r in (wo.as_owner("snapshots"), wo.as_writer("db1", "backup", "--host", "db1", _src(tmp_path, "d", b"x\n"))):
        assert r.code == UNTRUSTED, r.describe()
        _one_error(r, "config", "not the one the owner signed")


# ---------------------------------------------------------------------- client memory


def test_changed_trust_root_is_refused(cli, fast_repo, tmp_path):
    cli("snapshots").ok()  # remembered
    rid = json.loads(cli("--json", "trust", "show").ok().stdout)["repository_id"]
    shutil.rmtree(cli.repo_path)  # someone who knows the password makes another repository with the same id
    Repository.init(LocalBackend(str(cli.repo_path)), b"hunter2 password",
                    config=RepositoryConfig(repository_id=rid), s2k_count_byte=0x60).close()
    cli.password_file.write_text("hunter2 password\n")
    r = cli("snapshots")
    assert r.code == UNTRUSTED, r.describe()
    _one_error(r, "trust root changed")


def test_pinned_owner_fingerprint(cli, fast_repo, tmp_path):
    show = json.loads(cli("--json", "trust", "show", env={"HAEEDGE_TRUST_FILE": str(tmp_path / "a.json")})
                      .ok().stdout)
    fresh = {"HAEEDGE_TRUST_FILE": str(tmp_path / "b.json")}
    cli("--owner-fingerprint", show["root_fingerprint"], "snapshots", env=fresh).ok()
    other = "AB" * 20
    r = cli("--owner-fingerprint", other, "snapshots", env={"HAEEDGE_TRUST_FILE": str(tmp_path / "c.json")})
    assert r.code == UNTRUSTED, r.describe()
    r = cli("--owner-fingerprint", "not-hex", "snapshots")
    assert r.code == ExitCode.USAGE


def test_first_use_is_announced_once(cli, fast_repo, trust_memory):
    trust_memory.unlink()  # another client made it; this one meets it for the first time
    r = cli("snapshots").ok()
    assert "trusted on first use" in r.stderr
    assert "trusted on first use" not in cli("snapshots").ok().stderr


# ---------------------------------------------------------------------- approval and signatures


def test_unapproved_repository_refuses_owner_commands_until_approved(cli, owner, tmp_path):  # noqa: F811
    w = WriteOnly(cli, owner)
    w.init("web1", approve=False)
    w.backup("web1", _src(tmp_path, "a", b"a\n"))  # writers back up meanwhile
    r = w.as_owner("snapshots")
    assert r.code == UNTRUSTED and "trust approve" in r.stderr, r.describe()
    approved = json.loads(w.as_owner("--json", "trust", "approve").ok().stdout.splitlines()[-1])
    assert list(approved["writers"].values()) == ["web1"] and approved["root_fingerprint"] == owner.fingerprint
    validate(approved, documented_schemas()["trust approve"])
    snaps = w.as_owner("--json", "snapshots").ok().json()
    assert [s["signature"]["state"] for s in snaps] == ["good"]
    w.backup("web1", _src(tmp_path, "b", b"b\n"))
    assert w.as_owner("verify").code == 0


def test_rsa_owner_key_signs_the_manifest_and_gpg_verifies_it(cli, gpg, tmp_path):  # noqa: F811
    rsa_owner = make_owner(gpg, tmp_path / "rsa", "rsaowner", algo="rsa3072")
    w = WriteOnly(cli, rsa_owner)
    w.init("web1")
    with w.open("web1") as repo:
        (m,) = read_manifests(repo)[0]
    assert m.root_fingerprint == rsa_owner.fingerprint
    data, sig = tmp_path / "manifest.json", tmp_path / "manifest.sig"
    data.write_bytes(canonical_json(m.doc))
    sig.write_text(m.doc["signature"])
    out = gpg.run("--status-fd", "1", "--verify", str(sig), str(data)).stdout.decode()
    assert f"VALIDSIG {rsa_owner.fingerprint}" in out or "GOODSIG" in out, out


def test_format_v1_repository_is_migrated_by_the_owner_password(cli, fast_repo, trust_memory):
    with fast_repo.open() as repo:
        for m in read_manifests(repo)[0]:
            repo.backend.delete(f"keys/{m.object_id}")
    trust_memory.unlink()  # a format v1 repository: no client has seen a manifest of it
    r = cli("snapshots").ok()
    assert "wrote the first trust manifest" in r.stderr
    show = json.loads(cli("--json", "trust", "show").ok().stdout)
    assert show["mode"] == "manifest" and show["sequence"] >= 1


def test_owner_backup_never_builds_on_a_forged_parent(wo, tmp_path):
    src = _src(tmp_path, "ws", b"workstation data\n")
    wo.as_owner("backup", "--host", "workstation", src).ok()
    (src / "file").write_bytes(b"ATTACKER CONTENT\n")
    forged = wo.backup("web1", src, extra=("--host", "workstation"))["snapshot_id"]
    (src / "file").write_bytes(b"workstation data, day 2\n")
    r = wo.as_owner("--json", "backup", "--host", "workstation", src).ok()
    new = json.loads(r.stdout.splitlines()[-1])["snapshot_id"]
    with wo.open() as repo:
        snap = repo.load_snapshot(new)
        assert snap.parent != forged and forged not in [s.id for s in repo.chain_of(snap)]
