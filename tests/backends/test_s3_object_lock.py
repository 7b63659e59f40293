"""S3 Object Lock through the real CLI on the moto S3 server (issue 15, point 3).

moto implements Object Lock: a bucket created with Object Lock enabled is
versioned, PUTs carrying ObjectLockMode/RetainUntilDate are stored with that
retention (HEAD reads it back; moto 5.2 answers GetObjectRetention with a 500), and DeleteObject of a version
under retention is refused (403 AccessDenied), as on AWS. So these tests check
the real behaviour: every object but a lock is retained, prune and forget
leave retained objects for later instead of failing, and a later run deletes
them once retention allows (governance retention is shortened here, as an
administrator allowed to bypass it would).
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest


def _locked_bucket(s3, mode: str | None = "enabled") -> str:
    """A fresh bucket on the session's moto server: with Object Lock, or (mode None) without."""
    name = f"lock-{uuid.uuid4().hex[:12]}"
    c = s3.client()
    if mode:
        c.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    else:
        c.create_bucket(Bucket=name)
    return name


def _env(s3, bucket: str, prefix: str = "repo") -> dict:
    return {**s3.env, "HAEEDGE_REPOSITORY": f"s3://{bucket}/{prefix}"}


def _keys(s3, bucket: str, prefix: str) -> list[str]:
    out = s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
    return sorted(o["Key"] for o in out.get("Contents", []))


def test_init_refuses_a_bucket_without_object_lock(s3, cli):
    bucket = _locked_bucket(s3, None)
    r = cli("init", "--object-lock-days", "3", env=_env(s3, bucket)).expect(2)
    assert f"bucket {bucket} has no Object Lock enabled" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2 and "Traceback" not in r.stderr  # one line (+ hint)
    assert _keys(s3, bucket, "repo") == []  # nothing written


def test_init_refuses_object_lock_on_a_local_directory(cli, tmp_path):
    r = cli("init", "--object-lock-days", "3", env={"HAEEDGE_REPOSITORY": str(tmp_path / "r")}).expect(2)
    assert "--object-lock-days needs s3:// locations" in r.stderr, r.stderr


def test_every_object_but_locks_is_retained_and_prune_leaves_them_for_later(s3, cli, tmp_path):
    bucket = _locked_bucket(s3)
    env = _env(s3, bucket)
    r = cli("--json", "init", "--object-lock-days", "2", "--object-lock-mode", "governance",
            "--chunk-min", "4096", "--chunk-avg", "16384", "--chunk-max", "65536", env=env).ok()
    assert r.json()["object_lock"] == {"mode": "GOVERNANCE", "days": 2}
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(bytes(range(256)) * 3000)
    cli("backup", src, env=env).ok()
    (src / "a.bin").write_bytes(b"second version " * 5000)
    cli("backup", src, env=env).ok()

    c = s3.client()
    keys = _keys(s3, bucket, "repo")
    assert any(k.startswith("repo/data/") for k in keys) and "repo/config" in keys
    now = dt.datetime.now(dt.UTC)
    for key in keys:  # config, keys, index, snapshots, packs: all retained about 2 days
        head = c.head_object(Bucket=bucket, Key=key)  # moto 5.2's GetObjectRetention answers 500
        assert head["ObjectLockMode"] == "GOVERNANCE", key
        days = (head["ObjectLockRetainUntilDate"] - now).total_seconds() / 86400
        assert 1.9 < days < 2.1, (key, head)
    assert not any(k.startswith("repo/locks/") for k in keys)  # each run's lock was removed

    # Forget the second snapshot: retained, so hidden (a forget marker) rather than deleted; no failure.
    snaps = cli("--json", "snapshots", env=env).ok().json()
    second = max(snaps, key=lambda s: s["time"])["id"]
    r = cli("--json", "forget", second, env=env).ok()
    assert r.json()["retained"] == [second], r.stdout
    listed = [s["id"] for s in cli("--json", "snapshots", env=env).ok().json()]
    assert second not in listed
    assert f"repo/snapshots/{second}" in _keys(s3, bucket, "repo")

    # Retention of that snapshot over (an administrator shortens governance retention): a later
    # forget deletes it. Its pack is still retained: prune reports it and leaves it, exit 0.
    _expire(c, bucket, "repo/snapshots/")
    _expire(c, bucket, "repo/forgotten/")
    r = cli("--json", "forget", "--keep-last", "1", env=env).ok()
    assert second in r.json()["released"] and r.json()["retained"] == [], r.stdout
    assert f"repo/snapshots/{second}" not in _keys(s3, bucket, "repo")
    r = cli("--json", "prune", "--max-unused", "0%", env=env).ok()
    out = r.json()
    assert out["packs_retained"] >= 1 and out["retained_until"] > now.isoformat()[:10], r.stdout
    packs_before = {k for k in _keys(s3, bucket, "repo") if k.startswith("repo/data/")}
    r = cli("prune", "--max-unused", "0%", env=env).ok()
    assert "left" in r.stdout and "Object Lock retention until" in r.stdout, r.stdout
    cli("verify", env=env).ok()

    # Retention over for everything: the next prune deletes the packs left for later.
    _expire(c, bucket, "repo/")
    r = cli("--json", "prune", "--max-unused", "0%", env=env).ok()
    assert r.json()["packs_retained"] == 0 and r.json()["packs_deleted"] >= 1, r.stdout
    packs_after = {k for k in _keys(s3, bucket, "repo") if k.startswith("repo/data/")}
    assert packs_after < packs_before
    versions = c.list_object_versions(Bucket=bucket, Prefix="repo/")
    live = {v["Key"] for v in versions.get("Versions", [])}
    assert f"repo/snapshots/{second}" not in live  # every version removed, not hidden behind a delete marker
    assert not versions.get("DeleteMarkers")
    cli("verify", "--read-data", env=env).ok()
    target = tmp_path / "restored"
    cli("restore", "latest", "--target", target, env=env).ok()
    restored = next(target.rglob("a.bin"))
    assert restored.read_bytes() == bytes(range(256)) * 3000


def _expire(c, bucket: str, prefix: str) -> None:
    """End the governance retention of every version under ``prefix`` (as a user allowed to bypass it)."""
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).replace(microsecond=0)
    for v in c.list_object_versions(Bucket=bucket, Prefix=prefix).get("Versions", []):
        c.put_object_retention(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"],
                               Retention={"Mode": "GOVERNANCE", "RetainUntilDate": past},
                               BypassGovernanceRetention=True)


@pytest.mark.parametrize("days", ["0", "x"])
def test_object_lock_days_must_be_a_positive_number(s3, cli, days):
    bucket = _locked_bucket(s3)
    r = cli("init", "--object-lock-days", days, env=_env(s3, bucket)).expect(2)
    assert "--object-lock-days" in r.stderr
    assert _keys(s3, bucket, "repo") == []


def test_compliance_mode_is_recorded_and_applied(s3, cli, tmp_path):
    bucket = _locked_bucket(s3)
    env = _env(s3, bucket)
    cli("init", "--object-lock-days", "1", "--object-lock-mode", "compliance", env=env).ok()
    src = tmp_path / "s"
    src.mkdir()
    (src / "f").write_text("x")
    cli("backup", src, env=env).ok()  # a later writer reads the mode from the config
    c = s3.client()
    snap = [k for k in _keys(s3, bucket, "repo") if k.startswith("repo/snapshots/")]
    assert snap and c.head_object(Bucket=bucket, Key=snap[0])["ObjectLockMode"] == "COMPLIANCE"


def test_replicated_repository_on_two_locked_buckets_leaves_retained_packs_for_later(s3, cli, tmp_path):
    """Both replicas retain; a delete retained on them is 'left for later', not a failed replica (exit 0)."""
    buckets = [_locked_bucket(s3), _locked_bucket(s3)]
    locations = [f"s3://{b}/repo" for b in buckets]
    env = {**s3.env}

    def run(*args):
        return cli("-r", locations[0], "-r", locations[1], *args, env=env, unset=("HAEEDGE_REPOSITORY",))

    run("init", "--object-lock-days", "1").ok()
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(b"one " * 4000)
    run("backup", src).ok()
    (src / "f.bin").write_bytes(b"two " * 4000)
    run("backup", src).ok()
    c = s3.client()
    for b in buckets:
        snaps = _keys(s3, b, "repo")
        assert all(c.head_object(Bucket=b, Key=k)["ObjectLockMode"] == "GOVERNANCE" for k in snaps), b
    latest = max(run("--json", "snapshots").ok().json(), key=lambda s: s["time"])["id"]
    for b in buckets:
        _expire(c, b, "repo/snapshots/")
        _expire(c, b, "repo/forgotten/")
    r = run("--json", "forget", latest).ok()
    assert r.json()["retained"] == [], r.stdout  # retention over: deleted on both replicas
    r = run("--json", "prune", "--max-unused", "0%").ok()
    assert r.json()["packs_retained"] >= 1, r.stdout
    assert "lagging" not in r.stderr and "failed on" not in r.stderr, r.stderr
    run("verify").ok()
