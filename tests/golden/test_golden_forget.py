"""forget on golden (today's format) repositories: kept snapshots keep their committed ids and restore.

Issue 12, defect 3: a forgotten snapshot a kept one needs stays as hidden chain support.
"""

from __future__ import annotations

from tests.support.golden import restored


def test_forget_keeps_the_committed_ids_of_kept_snapshots(golden, tmp_path):
    before = {s["id"]: s for s in golden.as_owner("--json", "snapshots").ok().json()}
    out = golden.as_owner("--json", "forget", "--keep-last", "1").ok().json()
    assert out["rewritten"] == {} and out["rebase"] == []
    after = {s["id"]: s for s in golden.as_owner("--json", "snapshots").ok().json()}
    assert sorted(after) == sorted(out["kept"]) and set(after) <= set(before)
    assert all(after[i] == before[i] for i in after)
    assert not set(after) & set(out["removed"])
    golden.as_owner("verify", "--read-data").ok()
    for sid in after:
        snap = golden.snapshot(sid)
        target = tmp_path / "restore" / sid[:12]
        golden.as_owner("restore", sid, "--target", target).ok()
        assert restored(target, snap) == snap["entries"], f"snapshot {sid[:8]}"
