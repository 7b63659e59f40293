"""Forget markers hide snapshots only when the owner signed them (issue 12, defect 3).

A write-only host holds the meta key, so it can store a marker; it must not be
able to hide its own or other hosts' snapshots with one. The compromised
writer is simulated with the library, holding exactly what a writer slot holds.
"""

from __future__ import annotations

import json

import pytest

from haeedge.repo.forgotten import NAMESPACE
from haeedge.repo.snapshot import now_iso
from tests.support.keys import WriteOnly


@pytest.fixture
def wo(cli, owner) -> WriteOnly:  # noqa: F811
    w = WriteOnly(cli, owner)
    w.init("web1")
    w.add_writer("web2")
    return w


def _marker_signed_by_the_writer(repo, snapshot_id: str) -> str:
    doc = {"haeedge_forgotten": 1, "repository": repo.config.repository_id, "snapshot": snapshot_id,
           "time": now_iso()}
    signed = repo.signer().sign_document(doc)  # the writer's own signing key
    return repo.put_object(NAMESPACE, repo.seal("meta", json.dumps(signed, sort_keys=True).encode()))


def test_a_marker_signed_by_a_writer_key_is_ignored_and_reported(wo, tmp_path):
    for host in ("web1", "web2"):
        d = tmp_path / host
        d.mkdir()
        (d / "f").write_text(host)
        wo.backup(host, d)
        (d / "g").write_text("more")
        wo.backup(host, d)
    before = wo.as_owner("--json", "snapshots").ok().json()
    assert len(before) == 4
    with wo.open("web1", load_index=False) as repo:
        assert repo.keys.is_writer
        markers = [_marker_signed_by_the_writer(repo, s["id"]) for s in before]
    assert len(list((wo.cli.repo_path / NAMESPACE).iterdir())) == 4
    # Nothing is hidden: every snapshot (its own host's and the other host's) is still listed.
    assert wo.as_owner("--json", "snapshots").ok().json() == before
    assert len(wo.as_writer("web1", "--json", "snapshots").ok().json()) == 2
    v = wo.as_owner("--json", "verify").json()
    assert v["ok"] is False and v["hidden_snapshots"] == 0 and v["snapshots"] == 4
    flagged = {f["object"] for f in v["findings"] if "not signed by the owner key" in f["message"]}
    assert flagged == {f"{NAMESPACE}/{m}" for m in markers}

    # The owner's forget hides for real: the web1 full stays as chain support, unlisted for everyone.
    web1 = [s["id"] for s in before if s["host"] == "web1"]
    out = wo.as_owner("--json", "forget", web1[0]).ok().json()
    assert out["hidden"] == [web1[0]]
    assert [s["id"] for s in wo.as_writer("web1", "--json", "snapshots").ok().json()] == [web1[1]]
    assert len(wo.as_owner("--json", "snapshots").ok().json()) == 3
