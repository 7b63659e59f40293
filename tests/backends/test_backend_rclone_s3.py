"""S3-compatible servers other than AWS: ``rclone serve s3`` next to moto, through the real CLI.

botocore >= 1.36 validates a stored whole-object checksum against ranged GETs
by default; rclone's S3 server returns the whole object's checksum with a
range, so every ranged read (restore reads blobs out of packs) failed with
"Expected checksum ... did not match". The fsspec backend asks for checksums
only when an operation requires them.
"""

from __future__ import annotations

import json
import uuid

import pytest


@pytest.mark.parametrize("server", ["s3", "rclone_s3"])
def test_backup_restore_verify_round_trip(server, request, cli, trees, tmp_path):
    srv = request.getfixturevalue(server)
    env = {**srv.env, "HAEEDGE_REPOSITORY": srv.url_for(f"cli-{uuid.uuid4().hex[:12]}")}
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(bytes(range(256)) * 9000 + b"tail")  # several chunks, read by range
    (src / "small.txt").write_bytes(b"hello over S3\n")
    cli("init", "--chunk-min", "4096", "--chunk-avg", "16384", "--chunk-max", "65536", env=env).ok()
    cli("backup", src, env=env).ok()
    target = tmp_path / "restored"
    cli("restore", "latest", "--target", target, env=env).ok()
    trees.assert_same(src, trees.restored_path(target, src))
    r = cli("--json", "verify", "--read-data", env=env).ok()
    assert r.json()["ok"], r.stdout


def test_replicated_round_trip_over_moto_and_rclone(s3, rclone_s3, cli, trees, tmp_path):
    """One repository replicated to both servers, each with its own endpoint and keys from a config profile."""
    unique = uuid.uuid4().hex[:12]
    locations = {srv.url_for(f"rep-{unique}"): srv for srv in (s3, rclone_s3)}
    options = {loc: {"endpoint_url": srv.endpoint, "region": "us-east-1",
                     "storage_options": {"key": srv.access_key, "secret": srv.secret_key}}
               for loc, srv in locations.items()}
    config = tmp_path / "haeedge.yaml"
    config.write_text(json.dumps({"version": 1, "profiles": {"both": {
        "repository": list(locations), "backend_options": options}}}))  # JSON is YAML
    env = {"HAEEDGE_CONFIG": str(config), "HAEEDGE_PROFILE": "both",
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_EC2_METADATA_DISABLED": "true"}

    def run(*args):
        return cli(*args, env=env, unset=("HAEEDGE_REPOSITORY",))

    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(bytes(range(256)) * 7000)
    (src / "small.txt").write_bytes(b"replicated\n")
    run("init", "--chunk-min", "4096", "--chunk-avg", "16384", "--chunk-max", "65536").ok()
    run("backup", src).ok()
    for loc, srv in locations.items():  # both replicas hold the repository
        keys = srv.client().list_objects_v2(Bucket=srv.bucket, Prefix=f"rep-{unique}/snapshots/")
        assert keys.get("KeyCount", 0) == 1, (loc, keys)
    target = tmp_path / "restored"
    run("restore", "latest", "--target", target).ok()
    trees.assert_same(src, trees.restored_path(target, src))
    r = run("--json", "verify", "--read-data").ok()
    assert r.json()["ok"], r.stdout


@pytest.mark.parametrize(("server", "honoured"), [("s3", True), ("rclone_s3", False)])
def test_conditional_writes_per_server(server, honoured, request):
    """What each test server does with ``If-None-Match: *`` (docs/backends.md, "Concurrent writers"):
    moto refuses the second write with 412; rclone serve s3 ignores the header and overwrites. The
    backend's create-only put keeps the first object wherever the server honours it."""
    import botocore.exceptions

    from haeedge.backends.s3 import S3Backend

    srv = request.getfixturevalue(server)
    client = srv.client()
    key = f"cond-{uuid.uuid4().hex[:12]}/x"
    client.put_object(Bucket=srv.bucket, Key=key, Body=b"first", IfNoneMatch="*")
    try:
        client.put_object(Bucket=srv.bucket, Key=key, Body=b"second", IfNoneMatch="*")
        refused = None
    except botocore.exceptions.ClientError as e:
        refused = e.response["ResponseMetadata"]["HTTPStatusCode"]
    assert (refused == 412) is honoured, refused
    body = client.get_object(Bucket=srv.bucket, Key=key)["Body"].read()
    assert body == (b"first" if honoured else b"second")

    backend = S3Backend.from_url(srv.url_for(f"cond-{uuid.uuid4().hex[:12]}"), srv.options())
    name = "snapshots/" + "ab" * 32
    backend.put(name, b"one")
    backend.put(name, b"two")  # a second writer of the same name: no error either way
    assert backend.get(name) == (b"one" if honoured else b"two")
    assert backend.conditional_writes  # neither server answers NotImplemented
