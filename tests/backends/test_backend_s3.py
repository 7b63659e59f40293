"""S3 specifics against a real moto server: credentials from the environment, error mapping."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from haeedge.backends import open_backend
from haeedge.backends.fsspec_backend import FsspecBackend
from haeedge.backends.fsspec_errors import classify
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
    assert isinstance(b, FsspecBackend)
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
    b = FsspecBackend.from_url(s3.url_for(prefix()), {"endpoint_url": s3.endpoint, "region": "us-east-1"})
    with pytest.raises(BackendError) as err:
        b.get("config")
    assert err.value.transient is False
    assert "credentials" in str(err.value).lower()
    assert err.value.hint and "AWS_ACCESS_KEY_ID" in err.value.hint


def test_missing_bucket_reads_as_not_found(s3: S3Server) -> None:
    b = FsspecBackend.from_url("s3://no-such-bucket-here/x", s3.options())
    with pytest.raises(ObjectNotFound) as err:
        b.get("config")
    assert "s3://no-such-bucket-here/x" in str(err.value)


def test_server_down_is_transient_and_quick(tmp_path: Path) -> None:
    srv = start_s3(tmp_path)
    b = FsspecBackend.from_url(srv.url_for("p"), srv.options(retries=1))
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
    b = FsspecBackend.from_url(s3.url_for(prefix()), s3.options())
    data = bytes(range(256)) * 4096
    b.put("data/00/" + "0" * 64, data)
    head = s3.client().head_object(Bucket=s3.bucket, Key=f"{b.root.split('/', 1)[1]}/data/00/{'0' * 64}")
    import hashlib

    assert head["ETag"].strip('"') == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert head["ContentLength"] == len(data)


def test_error_classification_of_real_s3_errors() -> None:
    """What s3fs raises for S3 error answers maps to the right kind of failure."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
    from s3fs.errors import translate_boto_error

    def answer(code: str, status: int) -> BaseException:
        return translate_boto_error(ClientError(
            {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"))

    assert classify(answer("SlowDown", 503))[0] == "transient"
    assert classify(answer("ServiceUnavailable", 503))[0] == "transient"
    assert classify(answer("InternalError", 500))[0] == "transient"
    assert classify(answer("RequestTimeout", 400))[0] == "transient"
    assert classify(answer("AccessDenied", 403))[0] == "permanent"
    assert classify(answer("InvalidAccessKeyId", 403))[0] == "permanent"
    assert classify(answer("NoSuchKey", 404))[0] == "missing"
    assert classify(answer("InvalidArgument", 400))[0] == "permanent"
    assert classify(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))[0] == "transient"
    assert classify(NoCredentialsError())[0] == "permanent"
    assert classify(ConnectionResetError())[0] == "transient"
    assert classify(TimeoutError())[0] == "transient"
    assert classify(FileNotFoundError())[0] == "missing"
    assert classify(PermissionError())[0] == "permanent"


def test_options_are_checked() -> None:
    with pytest.raises(UsageError):
        FsspecBackend.from_url("s3://bucket/x", {"endpoint": "typo"})
    with pytest.raises(UsageError):
        FsspecBackend.from_url("memory://x", {"region": "eu-west-1"})
    with pytest.raises(UsageError):
        FsspecBackend.from_url("s3://", {})
    b = FsspecBackend.from_url("memory://user:pw@host/x", {})
    assert "pw" not in b.location
