"""S3 specifics against a real moto server: credentials from the environment, error mapping, the
options s3fs took, multipart uploads, forks, and that no s3fs/aiohttp is imported."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from haeedge.backends import open_backend
from haeedge.backends import s3 as s3_module
from haeedge.backends.fsspec_backend import FsspecBackend
from haeedge.backends.fsspec_errors import classify
from haeedge.backends.s3 import S3Backend
from haeedge.errors import BackendError, ObjectNotFound, UsageError
from tests.support.servers import S3Server, start_s3


@pytest.fixture(scope="module")
def s3_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto server that checks credentials: only ``access_key``/``secret_key`` work."""
    srv = start_s3(tmp_path_factory.mktemp("s3auth"), auth=True)
    yield srv
    srv.stop()


def prefix() -> str:
    return uuid.uuid4().hex[:10]


@pytest.mark.usefixtures("clean_aws_env")
def test_credentials_endpoint_and_region_from_environment(s3_auth: S3Server,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in s3_auth.env.items():
        monkeypatch.setenv(key, value)
    b = open_backend(s3_auth.url_for(prefix()), {})
    assert isinstance(b, S3Backend)
    # (No listing here: moto's signature check rejects list requests whose query has a "/",
    # e.g. prefix=x/, even with valid keys; the unauthenticated server covers listing.)
    b.put("config", b"from env")
    assert b.get("config") == b"from env"
    assert b.stat("config").size == 8
    b.delete("config")
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError):
        s3_auth.client().head_object(Bucket=s3_auth.bucket, Key=f"{b.root.split('/', 1)[1]}/config")


@pytest.mark.usefixtures("clean_aws_env")
def test_wrong_credentials_are_permanent_and_not_echoed(s3_auth: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in s3_auth.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-0123456789")
    b = open_backend(s3_auth.url_for(prefix()), {})
    for call in (lambda: b.put("config", b"x"), lambda: b.get("config")):
        with pytest.raises(BackendError) as err:
            call()
        assert err.value.transient is False
        assert not isinstance(err.value, ObjectNotFound)
        assert str(err.value).startswith(f"s3://{s3_auth.bucket}/")
        assert "not-the-secret" not in str(err.value)
        assert "SignatureDoesNotMatch" in str(err.value) or "403" in str(err.value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000")
    with pytest.raises(BackendError) as err:
        open_backend(s3_auth.url_for(prefix()), {}).put("config", b"x")
    assert "InvalidAccessKeyId" in str(err.value) and err.value.transient is False


@pytest.mark.usefixtures("clean_aws_env")
def test_named_profile_from_shared_credentials(s3_auth: S3Server, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.write_text(f"[backup]\naws_access_key_id = {s3_auth.access_key}\n"
                     f"aws_secret_access_key = {s3_auth.secret_key}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    opts = {"endpoint_url": s3_auth.endpoint, "region": "us-east-1"}
    b = open_backend(s3_auth.url_for(prefix()), {**opts, "profile": "backup"})
    b.put("config", b"profile")
    assert b.get("config") == b"profile"
    monkeypatch.setenv("AWS_PROFILE", "backup")
    assert open_backend(b.location, opts).get("config") == b"profile"


@pytest.mark.usefixtures("clean_aws_env")
def test_missing_credentials_are_a_permanent_error_with_a_hint(s3: S3Server, tmp_path: Path) -> None:
    b = S3Backend.from_url(s3.url_for(prefix()), {"endpoint_url": s3.endpoint, "region": "us-east-1"})
    with pytest.raises(BackendError) as err:
        b.get("config")
    assert err.value.transient is False
    assert "credentials" in str(err.value).lower()
    assert err.value.hint and "AWS_ACCESS_KEY_ID" in err.value.hint


def test_missing_bucket_reads_as_not_found(s3: S3Server) -> None:
    b = S3Backend.from_url("s3://no-such-bucket-here/x", s3.options())
    with pytest.raises(ObjectNotFound) as err:
        b.get("config")
    assert "s3://no-such-bucket-here/x" in str(err.value)


def test_server_down_is_transient_and_quick(tmp_path: Path) -> None:
    srv = start_s3(tmp_path)
    b = S3Backend.from_url(srv.url_for("p"), srv.options(retries=1))
    b.put("config", b"x")
    srv.kill()
    t0 = time.monotonic()
    with pytest.raises(BackendError) as err:
        b.get("config")
    assert err.value.transient is True
    assert time.monotonic() - t0 < 15
    assert "s3://haeedge-test/p" in str(err.value)


def test_uploads_are_checked(s3: S3Server) -> None:
    """ETag (= MD5 for single-part uploads) and size are checked; a normal upload passes both."""
    b = S3Backend.from_url(s3.url_for(prefix()), s3.options())
    data = bytes(range(256)) * 4096
    b.put("data/00/" + "0" * 64, data)
    head = s3.client().head_object(Bucket=s3.bucket, Key=f"{b.root.split('/', 1)[1]}/data/00/{'0' * 64}")
    import hashlib

    assert head["ETag"].strip('"') == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert head["ContentLength"] == len(data)


def test_error_classification_of_real_s3_errors() -> None:
    """What botocore raises for S3 error answers, as is or wrapped in another error, maps to the right kind."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    def answer(code: str, status: int) -> BaseException:
        error = ClientError(
            {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")
        if status == 404:  # also through a wrapper's chain, as RetryingBackend sees it
            wrapped = OSError(code)
            wrapped.__cause__ = error
            assert classify(wrapped)[0] == "missing"
        return error

    assert classify(answer("SlowDown", 503))[0] == "transient"
    assert classify(answer("ServiceUnavailable", 503))[0] == "transient"
    assert classify(answer("InternalError", 500))[0] == "transient"
    assert classify(answer("RequestTimeout", 400))[0] == "transient"
    assert classify(answer("AccessDenied", 403))[0] == "permanent"
    assert classify(answer("InvalidAccessKeyId", 403))[0] == "permanent"
    assert classify(answer("NoSuchKey", 404))[0] == "missing"
    assert classify(answer("InvalidArgument", 400))[0] == "permanent"
    assert classify(answer("NoSuchBucket", 404))[0] == "missing"
    assert classify(answer("404", 404))[0] == "missing"  # a HEAD's answer has no body
    assert classify(answer("ExpiredToken", 400))[0] == "permanent"
    assert classify(answer("Throttling", 400))[0] == "transient"
    assert classify(answer("502", 502))[0] == "transient"
    assert classify(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))[0] == "transient"
    assert classify(ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"))[0] == "transient"
    assert classify(ReadTimeoutError(endpoint_url="http://127.0.0.1:1"))[0] == "transient"
    assert classify(ResponseStreamingError(error="reset"))[0] == "transient"
    assert classify(NoCredentialsError())[0] == "permanent"
    assert classify(ConnectionResetError())[0] == "transient"
    assert classify(TimeoutError())[0] == "transient"
    assert classify(FileNotFoundError())[0] == "missing"
    assert classify(PermissionError())[0] == "permanent"


def test_options_are_checked() -> None:
    with pytest.raises(UsageError):
        S3Backend.from_url("s3://bucket/x", {"endpoint": "typo"})
    with pytest.raises(UsageError):
        FsspecBackend.from_url("memory://x", {"region": "eu-west-1"})
    with pytest.raises(UsageError):
        S3Backend.from_url("s3://", {})
    with pytest.raises(UsageError, match="blocksize"):
        S3Backend.from_url("s3://bucket/x", {"storage_options": {"blocksize": 5}})
    with pytest.raises(UsageError, match="not in the URL") as err:
        S3Backend.from_url("s3://AKIAX:hunter2@bucket/x", {})
    assert "hunter2" not in str(err.value)
    # what s3fs took and means nothing here any more is accepted, not an error
    S3Backend.from_url("s3://bucket/x", {"storage_options": {"use_listings_cache": False, "default_block_size": 5}})
    b = FsspecBackend.from_url("memory://user:pw@host/x", {})
    assert "pw" not in b.location


def test_storage_options_s3fs_took_map_onto_the_client(s3: S3Server) -> None:
    """config_kwargs and client_kwargs win over haeedge's defaults; retries, timeouts, the checksum
    settings and the pool size are set; s3_additional_kwargs reach the requests that take them."""
    b = S3Backend.from_url(s3.url_for(prefix()), {
        **s3.options(retries=2),
        "storage_options": {"key": s3.access_key, "secret": s3.secret_key, "config_kwargs": {"read_timeout": 7},
                            "client_kwargs": {"region_name": "eu-west-1"},
                            "s3_additional_kwargs": {"ServerSideEncryption": "AES256"}}})
    config = b.client.meta.config
    assert config.read_timeout == 7 and config.connect_timeout == 10
    assert config.retries == {"total_max_attempts": 3, "mode": "standard"}  # botocore: max_attempts retries
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.max_pool_connections == s3_module.MAX_POOL_CONNECTIONS
    assert b.client.meta.region_name == "eu-west-1"
    b.put("config", b"sse")  # PutObject takes ServerSideEncryption ...
    assert b.get("config") == b"sse" and b.get_range("config", 1, 2) == b"se"  # ... GetObject does not
    head = s3.client().head_object(Bucket=s3.bucket, Key=b.key("config"))
    assert head["ServerSideEncryption"] == "AES256"


@pytest.mark.usefixtures("clean_aws_env")
def test_anonymous_access_sends_unsigned_requests(s3: S3Server) -> None:
    """``anon`` drops the credentials: a public object reads, a private one is a permanent 403."""
    where = prefix()
    S3Backend.from_url(s3.url_for(where), s3.options()).put("config", b"public")
    s3.client().put_object_acl(Bucket=s3.bucket, Key=f"{where}/config", ACL="public-read")
    b = S3Backend.from_url(s3.url_for(where), {"endpoint_url": s3.endpoint, "region": "us-east-1",
                                               "storage_options": {"anon": True, "key": "ignored"}})
    assert b.get("config") == b"public"
    from botocore import UNSIGNED

    assert b.client.meta.config.signature_version is UNSIGNED
    S3Backend.from_url(s3.url_for(where), s3.options()).put("keys/" + "ab" * 32, b"private")
    with pytest.raises(BackendError) as err:
        b.get("keys/" + "ab" * 32)
    assert not err.value.transient and "403" in str(err.value)


def test_large_objects_go_in_parts_and_stay_create_only(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """From SINGLE_PART_LIMIT up an object is a multipart upload (parts of PART_SIZE; S3's least is
    5 MiB), checked by its size; a second writer of the name leaves the first object."""
    monkeypatch.setattr(s3_module, "SINGLE_PART_LIMIT", 6 << 20)
    monkeypatch.setattr(s3_module, "PART_SIZE", 5 << 20)
    b = S3Backend.from_url(s3.url_for(prefix()), s3.options())
    data = os.urandom(11 << 20)
    name = "data/ab/" + "ab" * 32
    b.put(name, data)
    head = s3.client().head_object(Bucket=s3.bucket, Key=b.key(name))
    assert head["ETag"].strip('"').endswith("-3") and head["ContentLength"] == len(data)
    assert b.get(name) == data
    b.put(name, os.urandom(11 << 20))
    assert b.get(name) == data
    uploads = s3.client().list_multipart_uploads(Bucket=s3.bucket, Prefix=b.prefix)
    assert not uploads.get("Uploads"), uploads


def test_listing_pages_through_more_than_one_answer(s3: S3Server) -> None:
    """list() follows continuation tokens (S3 answers at most 1000 keys; MaxKeys 2 here via moto)."""
    b = S3Backend.from_url(s3.url_for(prefix()), s3.options())
    names = sorted(f"index/{i:02d}" + "0" * 62 for i in range(5))
    for n in names:
        b.put(n, n.encode())
    calls: list[dict] = []
    real = b.call

    def small_pages(operation: str, **params: object) -> dict:
        if operation == "list_objects_v2":
            params["MaxKeys"] = 2
            calls.append(dict(params))
        return real(operation, **params)

    b.call = small_pages  # type: ignore[method-assign]
    assert sorted(i.name for i in b.list("index")) == names
    assert len(calls) == 3 and "ContinuationToken" in calls[-1]


def test_a_forked_child_gets_its_own_client_and_no_thread_is_started(s3: S3Server) -> None:
    """restore/verify fork decoding workers after the client exists: the parent's client keeps
    working, a child that does use the backend makes its own, and botocore starts no thread."""
    threads = threading.active_count()
    b = S3Backend.from_url(s3.url_for(prefix()), s3.options())
    b.put("config", b"before the fork")
    parent_client = b.client
    assert threading.active_count() == threads
    pid = os.fork()
    if pid == 0:  # the child: exit status says what it saw
        code = 1
        try:
            code = 0 if b.get("config") == b"before the fork" and b.client is not parent_client else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b.client is parent_client
    assert b.get("config") == b"before the fork"
    b.put("keys/" + "cd" * 32, b"after the fork")
    assert b.get("keys/" + "cd" * 32) == b"after the fork"


def test_an_s3_command_imports_no_s3fs_aiobotocore_or_aiohttp(s3: S3Server, tmp_path: Path) -> None:
    """The point of the botocore backend: a command against S3 does not pay for importing s3fs,
    aiobotocore and aiohttp (half the CPU time of ``snapshots`` when it did), nor fsspec."""
    (tmp_path / "pw").write_text("import-check\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **s3.env,
           "HAEEDGE_PASSWORD_FILE": str(tmp_path / "pw"), "HAEEDGE_CACHE_DIR": str(tmp_path / "cache"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_EC2_METADATA_DISABLED": "true"}
    repo = s3.url_for(prefix())
    code = (
        "import sys\n"
        "from haeedge.cli import run\n"
        f"sys.argv = ['haeedge', '-r', {repo!r}] + sys.argv[1:]\n"
        "try:\n"
        "    run()\n"
        "except SystemExit as e:\n"
        "    status = e.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('s3fs', 'aiobotocore', 'aiohttp', 'fsspec'))\n"
        "print('IMPORTED', heavy, 'EXIT', status, 'BOTOCORE', 'botocore' in sys.modules, file=sys.stderr)\n"
    )
    for args in (["init"], ["snapshots"]):
        r = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120)
        assert "IMPORTED [] EXIT 0 BOTOCORE True" in r.stderr, (args, r.stdout, r.stderr)
