"""Signed snapshots per host: gpg --verify accepts them; verify/snapshots flag every forgery docs/security.md lists."""

from __future__ import annotations

import copy
import json
import time

import pytest

from haeedge.crypto.pubkey import generate_signing_key, load_secret_key, sign_detached
from haeedge.repo.signing import Signer, canonical_json, sign_snapshot
from haeedge.repo.snapshot import Snapshot
from tests.support.keys import WriteOnly


@pytest.fixture
def wo(cli, owner) -> WriteOnly:  # noqa: F811
    w = WriteOnly(cli, owner)
    w.init("web1")
    w.add_writer("web2")
    return w


def _src(tmp_path, name: str, content: bytes = b"data\n"):
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    (d / "file").write_bytes(content)
    return d


def _findings(r) -> list[dict]:
    return [f for f in r.json()["findings"] if f["severity"] == "error"]


def _signatures(wo: WriteOnly) -> dict[str, dict]:
    return {s["id"]: s["signature"] for s in wo.as_owner("--json", "snapshots").ok().json()}


def _put_snapshot(repo, snap: Snapshot) -> str:
    """What a compromised writer can do with meta: store any snapshot document, bypassing save_snapshot."""
    return repo.put_object("snapshots", repo.seal("meta", snap.to_bytes()))


def _raw_snapshot(repo, sid: str) -> Snapshot:
    return Snapshot.from_bytes(repo.open_sealed("meta", repo.get_object(f"snapshots/{sid}")), sid)


# ---------------------------------------------------------------------- good signatures


def test_gpg_verifies_owner_and_writer_signatures(wo, gpg, tmp_path):  # noqa: F811
    w1 = wo.backup("web1", _src(tmp_path, "a"))["snapshot_id"]
    own = wo.as_owner("--json", "backup", "--host", "workstation", _src(tmp_path, "o")).ok()
    owner_sid = json.loads(own.stdout.splitlines()[-1])["snapshot_id"]
    sigs = _signatures(wo)
    assert sigs[w1]["state"] == "good" and sigs[w1]["role"] == "writer" and sigs[w1]["signer_host"] == "web1"
    assert sigs[owner_sid]["state"] == "good" and sigs[owner_sid]["role"] == "owner"
    table = wo.as_owner("snapshots").ok().stdout
    assert "writer:web1" in table and "owner" in table and "Signed by" in table

    exported = tmp_path / "signers.asc"
    signers = wo.as_owner("--json", "key", "signers", "--export", exported).ok().json()["signers"]
    assert {(s["role"], s["host"]) for s in signers} == {("owner", None), ("writer", "web1"), ("writer", "web2")}
    gpg.run("--import", str(exported))
    with wo.open() as repo:
        meta = repo.keys.meta.hex()
    for sid, fpr in ((w1, sigs[w1]["signer"]), (owner_sid, sigs[owner_sid]["signer"])):
        sealed = (wo.cli.repo_path / "snapshots" / sid).read_bytes()
        doc = json.loads(gpg.decrypt(sealed, passphrase=meta).stdout)  # gpg alone opens the snapshot
        assert doc["signer"] == fpr
        data = tmp_path / f"{sid}.json"
        data.write_bytes(json.dumps({k: v for k, v in doc.items() if k != "signature"}, sort_keys=True,
                                    separators=(",", ":")).encode())
        sig = tmp_path / f"{sid}.asc"
        sig.write_text(doc["signature"])
        proc = gpg.run("--status-fd", "1", "--verify", str(sig), str(data))
        assert f"VALIDSIG {fpr}" in proc.stdout.decode(), proc.stdout
        data.write_bytes(data.read_bytes().replace(b'"kind":', b'"kind" :'))
        assert gpg.run("--verify", str(sig), str(data), check=False).returncode != 0
    wo.as_owner("verify").ok()


def test_password_repository_snapshots_are_signed_by_the_owner_key(cli, fast_repo, tmp_path):
    cli("backup", _src(tmp_path, "a")).ok()
    (snap,) = cli("--json", "snapshots").ok().json()
    assert snap["signature"]["state"] == "good" and snap["signature"]["role"] == "owner"
    (key,) = cli("--json", "key", "list").ok().json()["keys"]
    assert snap["signature"]["signer"] == key["signing_fingerprint"]
    assert "owner" in cli("snapshots").ok().stdout


def test_rewritten_snapshots_are_resigned_by_the_owner(wo, tmp_path):
    src = _src(tmp_path, "a")
    full = wo.backup("web1", src)["snapshot_id"]
    (src / "file").write_bytes(b"changed")
    wo.backup("web1", src)
    r = wo.as_owner("--json", "tag", full[:12], "--add", "audit").ok()
    assert len(r.json()["changed"]) == 2  # the full and its re-linked incremental
    sigs = _signatures(wo)
    assert len(sigs) == 2 and all(s["state"] == "good" and s["role"] == "owner" for s in sigs.values())
    wo.as_owner("verify").ok()
    # The writer's view holds only what its host's keys signed, so it starts a new chain, and it works.
    assert wo.as_writer("web1", "--json", "snapshots").ok().json() == []
    assert wo.backup("web1", src)["kind"] == "full"


# ---------------------------------------------------------------------- forgeries a compromised writer may try


def test_writer_claiming_another_host_is_flagged(wo, tmp_path):
    wo.backup("web2", _src(tmp_path, "b"))
    forged = wo.backup("web1", _src(tmp_path, "a"), extra=("--host", "web2"))["snapshot_id"]
    r = wo.as_owner("--json", "verify").expect(4)
    (f,) = _findings(r)
    assert f["snapshots"] == [forged] and "wrongly attributed" in f["message"] and "'web1'" in f["message"]
    assert "WRONG HOST" in wo.as_owner("snapshots").stdout
    # The real web2 neither lists it nor builds on it.
    assert forged not in [s["id"] for s in wo.as_writer("web2", "--json", "snapshots").ok().json()]


def test_modified_snapshot_is_flagged(wo, tmp_path):
    victim = wo.backup("web2", _src(tmp_path, "b"))["snapshot_id"]
    with wo.open("web1") as repo:
        snap = _raw_snapshot(repo, victim)
        snap.paths = ["/etc"]  # keep the signature, change the content
        forged = _put_snapshot(repo, snap)
    (f,) = _findings(wo.as_owner("--json", "verify").expect(4))
    assert f["snapshots"] == [forged] and "bad signature" in f["message"]


def test_unsigned_snapshot_is_flagged(wo, tmp_path):
    victim = wo.backup("web2", _src(tmp_path, "b"))["snapshot_id"]
    with wo.open("web1") as repo:
        snap = _raw_snapshot(repo, victim)
        snap.signer = snap.signature = None
        snap.time = snap.time[:-2] + "9Z"
        forged = _put_snapshot(repo, snap)
    (f,) = _findings(wo.as_owner("--json", "verify").expect(4))
    assert f["snapshots"] == [forged] and "not signed" in f["message"]
    assert "UNSIGNED" in wo.as_owner("snapshots").stdout


def test_unknown_signer_is_flagged(wo, tmp_path):
    victim = wo.backup("web2", _src(tmp_path, "b"))["snapshot_id"]
    secret, _cert = generate_signing_key("haeedge writer for host web2")
    with wo.open("web1") as repo:
        snap = _raw_snapshot(repo, victim)
        snap.tags = ["forged"]
        sign_snapshot(Signer(secret), snap)
        forged = _put_snapshot(repo, snap)
    (f,) = _findings(wo.as_owner("--json", "verify").expect(4))
    assert f["snapshots"] == [forged] and "not registered" in f["message"]
    assert "UNKNOWN KEY" in wo.as_owner("snapshots").stdout


def test_forged_key_record_is_reported_and_ignored(wo, tmp_path):
    forged_snap = wo.backup("web1", _src(tmp_path, "a"), extra=("--host", "web2"))["snapshot_id"]
    with wo.open("web1") as repo:
        mine = repo.registry().records
        web1 = next(r for r in mine if r.host == "web1")
        signer = repo.signer()
        doc = copy.deepcopy(web1.doc)
        doc["host"] = "web2"  # "my key may sign for web2"
        self_signed = signer.sign_document(doc)
        claims_owner = dict(self_signed, signer=repo.registry().owner_fingerprint)  # signature is still web1's
        ids = [repo.put_object("keys", repo.seal("meta", json.dumps(d).encode())) for d in (self_signed, claims_owner)]
    r = wo.as_owner("--json", "verify").expect(4)
    by_object = {f["object"]: f for f in _findings(r)}
    assert "not signed by the owner key" in by_object[f"keys/{ids[0]}"]["message"]
    assert "bad owner signature" in by_object[f"keys/{ids[1]}"]["message"]
    assert "wrongly attributed" in by_object[f"snapshots/{forged_snap}"]["message"]
    listed = wo.as_owner("--json", "key", "list").ok().json()
    assert len(listed["problems"]) == 2 and all(k["host"] != "web2" or k["role"] == "writer" for k in listed["keys"])


def test_removed_writer_key_old_snapshots_verify_new_ones_are_flagged(wo, tmp_path):
    old = wo.backup("web2", _src(tmp_path, "b"))["snapshot_id"]
    web2_key = next(k for k in wo.as_owner("--json", "key", "list").ok().json()["keys"] if k["host"] == "web2")
    with wo.open("web2") as stolen:  # the attacker keeps what the slot held
        time.sleep(1.1)
        wo.as_owner("key", "remove", web2_key["id"][:12]).ok()
        time.sleep(1.1)
        snap = copy.deepcopy(stolen.load_snapshot(old))
        snap.tags = ["after-removal"]
        snap.time = snap.time[:-2] + "8Z"
        stolen.save_snapshot(snap)  # signed with the removed key
        new = snap.id
    signers = wo.as_owner("--json", "key", "signers").ok().json()["signers"]
    assert next(s for s in signers if s["host"] == "web2")["state"] == "removed"
    r = wo.as_owner("--json", "verify").expect(4)
    (f,) = _findings(r)
    assert f["snapshots"] == [new] and "after that key was removed" in f["message"]
    assert _signatures(wo)[old]["state"] == "good"


def test_signature_over_other_bytes_is_bad(cli, fast_repo, tmp_path):
    cli("backup", _src(tmp_path, "a")).ok()
    with fast_repo.open() as repo:
        (snap,) = repo.list_snapshots()
        key = load_secret_key(repo.keys.signing_key)
        snap.signature = sign_detached(key, canonical_json({"something": "else"}), armored=True).decode()
        forged = _put_snapshot(repo, snap)
    r = cli("--json", "verify").expect(4)
    (f,) = _findings(r)
    assert f["snapshots"] == [forged] and "bad signature" in f["message"]
