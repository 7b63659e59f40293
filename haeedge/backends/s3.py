"""S3 and S3-compatible object storage through botocore's synchronous client: ``s3://bucket/prefix``.

Why botocore alone: it is what every AWS tool (and s3fs) uses underneath, and its
synchronous client is thread-safe. s3fs on top of it meant aiobotocore and aiohttp,
an event loop thread and SSL contexts built at import: half of the CPU time of a
short command such as ``snapshots`` went to importing them (docs/performance.md).

Options (a dict, all optional):

- ``storage_options``: what s3fs accepted that still means something here:
  ``key``/``username``, ``secret``/``password``, ``token``, ``anon`` (unsigned
  requests), ``profile``, ``endpoint_url``, ``use_ssl``, ``client_kwargs``
  (passed to ``create_client``: ``region_name``, ``verify``, ...),
  ``config_kwargs`` (``botocore.config.Config``: they win over the defaults
  below), ``s3_additional_kwargs`` (extra request parameters such as
  ``ServerSideEncryption``/``SSEKMSKeyId``, given to every request that takes
  them) and ``requester_pays``. s3fs's cache and transfer tuning
  (``use_listings_cache``, ``default_block_size``, ...) is accepted and has
  nothing to tune here; any other name is a usage error.
- ``endpoint_url`` (S3-compatible services: MinIO, Ceph, R2, ...), ``region``,
  ``profile``. Without them the usual AWS environment works through botocore:
  ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
  ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``/``AWS_REGION``, and
  ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` (read here too, so older
  botocore honours them).
- ``verify_etag`` (default true): compare the ETag of a single-part upload with
  the MD5 of what we sent. Buckets with SSE-KMS/SSE-C encryption return ETags
  that are not MD5s; set it false there (S3 still checks the Content-MD5 header
  we send with every single-part upload).
- ``retries`` (default 3): attempts botocore makes for one request (its
  ``standard`` retry mode). Kept small because ``RetryingBackend`` retries
  transient errors with backoff on top, and a replicated repository should fail
  over quickly.
- Object Lock retention and storage classes: ``s3policy.py``.

What each operation costs on the wire: ``put`` one PUT (Content-MD5, and
``If-None-Match: *`` where the server honours it), plus a HEAD only where the
ETag cannot prove the bytes; ``get``/``get_range`` one GET; ``stat``/``exists``
one HEAD; ``list`` one listing per 1000 keys, never cached (another process may
have written since); ``create`` one listing of at most one key.

Errors map to ``ObjectNotFound`` (missing), permanent ``BackendError``
(credentials, permissions, bad requests) or transient ``BackendError``
(timeouts, dropped connections, 5xx, throttling such as SlowDown/503), as
``fsspec_errors.classify`` says.

Threads and processes: one client serves every thread (botocore clients are
thread-safe; its connection pool holds ``MAX_POOL_CONNECTIONS``). The client is
made on first use, and made again in a forked child that uses the backend, so a
child never shares its parent's sockets; nothing here starts a thread.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import posixpath
import threading
from collections.abc import Iterator
from typing import Any

from haeedge.backends.base import NAMESPACES, BackendProperties, ObjectInfo, StorageBackend, check_name
from haeedge.backends.fsspec_errors import CREDENTIAL_CLASS_NAMES, classify, error_chain
from haeedge.backends.s3policy import OPTION_NAMES as POLICY_OPTIONS
from haeedge.backends.s3policy import S3Policy, delete_versions
from haeedge.errors import BackendError, ObjectNotFound, UsageError

log = logging.getLogger("haeedge.backends.s3")

SCHEMES = frozenset({"s3", "s3a"})
#: The backend options ``from_url`` reads (``options.S3_OPTIONS`` lists the same names with their kinds).
OPTION_NAMES = frozenset({"storage_options", "endpoint_url", "region", "profile", "verify_etag", "retries"}) \
    | POLICY_OPTIONS
#: ``storage_options`` names that mean what they meant to s3fs (see the module docstring).
STORAGE_OPTION_NAMES = frozenset({"key", "username", "secret", "password", "token", "anon", "profile",
                                  "endpoint_url", "use_ssl", "client_kwargs", "config_kwargs",
                                  "s3_additional_kwargs", "requester_pays"})
#: s3fs's cache and transfer tuning: accepted from older configurations, nothing to tune here.
IGNORED_STORAGE_OPTIONS = frozenset({"use_listings_cache", "listings_expiry_time", "max_paths", "default_block_size",
                                     "default_fill_cache", "default_cache_type", "cache_regions", "max_concurrency",
                                     "fixed_upload_size", "skip_instance_cache", "version_aware", "asynchronous"})
#: Connections kept per client: the most threads that share one location (upload 2, restore and verify
#: readers 4-8, cold-storage HEADs 8, replication workers) with room; botocore's default is 10.
MAX_POOL_CONNECTIONS = 24
#: Objects from this size up go in parts of PART_SIZE (as s3fs did: twice its 50 MiB chunk);
#: packs are far smaller, and one PUT with Content-MD5 is one request the server checks whole.
SINGLE_PART_LIMIT = 2 * 50 * 2**20
PART_SIZE = 50 * 2**20
TMP_PREFIX = ".tmp-"


def _mtime(meta: dict) -> float | None:
    """S3's LastModified (a datetime from botocore) as seconds since the epoch."""
    value = meta.get("LastModified")
    ts = getattr(value, "timestamp", None)
    return float(ts()) if callable(ts) else None


def _answer(e: BaseException) -> str:
    """The S3 error code of an error answer (or its HTTP status when the body named none), else ''."""
    for exc in error_chain(e):
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            code = str((response.get("Error") or {}).get("Code") or "")
            status = str((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or "")
            return code or status
    return ""


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _s3_loader(search_path: str | None) -> Any:
    """botocore's data loader (AWS_DATA_PATH as botocore reads it), except that it does not list every
    service's folder of botocore's data (400 of them, twice per client) only to find that ``s3`` is one:
    about a tenth of the CPU time of a short command."""
    from botocore.loaders import Loader

    class S3Loader(Loader):
        def list_available_services(self, type_name: str) -> list[str]:
            return ["s3"]

    paths = [os.path.expanduser(os.path.expandvars(p)) for p in (search_path or "").split(os.pathsep) if p]
    return S3Loader(extra_search_paths=paths) if paths else S3Loader()


class S3Backend(StorageBackend):
    """A repository under a prefix of an S3 bucket (see the module docstring). Thread-safe."""

    #: Object Lock retention and storage classes (s3policy.py).
    policy: S3Policy = S3Policy()

    def __init__(self, bucket: str, prefix: str, location: str, *, client_kwargs: dict[str, Any] | None = None,
                 config_kwargs: dict[str, Any] | None = None, profile: str | None = None,
                 extra_params: dict[str, Any] | None = None, verify_etag: bool = True):
        self.bucket = bucket
        #: Key prefix of every object ("" or ending in "/").
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.root = f"{bucket}/{prefix.strip('/')}".rstrip("/")
        self.location = location
        self.verify_etag = verify_etag
        #: Send If-None-Match: * on every write (cleared when the server answers NotImplemented).
        self.conditional_writes = True
        self.properties = BackendProperties(s3=True)
        self._client_kwargs = dict(client_kwargs or {})
        self._config_kwargs = dict(config_kwargs or {})
        self._profile = profile
        self._extra = dict(extra_params or {})
        self._extra_by_op: dict[str, dict[str, Any]] = {}
        self._client: Any = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, options: dict | None = None) -> S3Backend:
        """Open ``s3://bucket/prefix`` with the options described in the module docstring. Makes no request
        and no client yet: a wrong profile or endpoint shows at the first request, as a BackendError."""
        options = dict(options or {})
        unknown = sorted(set(options) - OPTION_NAMES)
        if unknown:
            raise UsageError(f"unknown storage option(s): {', '.join(unknown)}")
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in SCHEMES:
            raise UsageError(f"not an s3:// URL: {url}")
        if "@" in rest.split("/", 1)[0]:
            raise UsageError(f"{scheme}://...: give S3 credentials in the environment or storage_options, "
                             "not in the URL")
        bucket, _, prefix = rest.partition("/")
        location = url
        if not bucket:
            raise UsageError(f"{location}: an s3:// location needs a bucket: s3://bucket/prefix")
        so = dict(options.get("storage_options") or {})
        bad = sorted(set(so) - STORAGE_OPTION_NAMES - IGNORED_STORAGE_OPTIONS)
        if bad:
            raise UsageError(f"{location}: unknown storage_options for s3:// locations: {', '.join(bad)} "
                             f"(known: {', '.join(sorted(STORAGE_OPTION_NAMES))})")
        for name in ("client_kwargs", "config_kwargs", "s3_additional_kwargs"):
            if not isinstance(so.get(name) or {}, dict):
                raise UsageError(f"{location}: storage_options {name} must be a mapping")
        try:
            retries = int(options.get("retries", 3))
        except (TypeError, ValueError):
            raise UsageError(f"{location}: retries must be a whole number") from None

        client: dict[str, Any] = {}
        key, secret = so.get("key") or so.get("username"), so.get("secret") or so.get("password")
        anon = _bool(so.get("anon", False))
        if not anon:
            for arg, value in (("aws_access_key_id", key), ("aws_secret_access_key", secret),
                               ("aws_session_token", so.get("token"))):
                if value:
                    client[arg] = str(value)
        endpoint = (so.get("endpoint_url") or options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
                    or os.environ.get("AWS_ENDPOINT_URL"))
        if endpoint:
            client["endpoint_url"] = str(endpoint)
        # botocore reads AWS_DEFAULT_REGION itself; AWS_REGION (the other SDKs' name) only through us.
        region = options.get("region") or (
            None if os.environ.get("AWS_DEFAULT_REGION") else os.environ.get("AWS_REGION"))
        if region:
            client["region_name"] = str(region)
        if "use_ssl" in so:
            client["use_ssl"] = _bool(so["use_ssl"])
        client.update(so.get("client_kwargs") or {})
        if anon:
            for arg in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
                client.pop(arg, None)

        config: dict[str, Any] = {
            "retries": {"max_attempts": max(1, retries), "mode": "standard"},
            "connect_timeout": 10,
            "read_timeout": 60,
            "max_pool_connections": MAX_POOL_CONNECTIONS,
            # botocore >= 1.36 checks a whole-object checksum against ranged GETs (a false mismatch on
            # servers such as rclone serve s3) and sends checksum headers some S3-compatible servers refuse.
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
        }
        config.update(so.get("config_kwargs") or {})
        if anon:
            config["signature_version"] = "unsigned"  # made botocore.UNSIGNED with the client

        extra = dict(so.get("s3_additional_kwargs") or {})
        if _bool(so.get("requester_pays", False)):
            extra.setdefault("RequestPayer", "requester")
        profile = so.get("profile") or options.get("profile")
        backend = cls(bucket, prefix, location, client_kwargs=client, config_kwargs=config,
                      profile=str(profile) if profile else None, extra_params=extra,
                      verify_etag=_bool(options.get("verify_etag", True)))
        backend.policy = S3Policy.from_options(options, location, True)
        return backend

    # -- the client ----------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The botocore S3 client, made on first use (and again in a forked child that uses it)."""
        pid = os.getpid()
        if self._pid != pid and self._client is not None:
            # A forked child: its parent's pooled sockets (and a lock some other thread of the
            # parent may have held at the fork) are not its own.
            self._client, self._lock, self._extra_by_op = None, threading.Lock(), {}
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
                    self._pid = pid
        return self._client

    def _make_client(self) -> Any:
        import botocore.session
        from botocore.config import Config

        config = dict(self._config_kwargs)
        if config.get("signature_version") == "unsigned":
            from botocore import UNSIGNED

            config["signature_version"] = UNSIGNED
        session = botocore.session.Session(profile=self._profile) if self._profile else botocore.session.Session()
        session.register_component("data_loader", _s3_loader(session.get_config_variable("data_path")))
        return session.create_client("s3", config=Config(**config), **self._client_kwargs)

    def call(self, operation: str, **params: Any) -> dict:
        """One S3 request by its botocore name (``head_object``, ``restore_object``, ...) with the
        location's extra parameters (``s3_additional_kwargs``) that the operation takes. botocore's
        exceptions go through unchanged: callers classify them (``_error``)."""
        client = self.client
        extra = self._extra_by_op.get(operation)
        if extra is None:
            extra = {}
            if self._extra:
                api = client.meta.method_to_api_mapping.get(operation, operation)
                members = client.meta.service_model.operation_model(api).input_shape.members
                extra = {k: v for k, v in self._extra.items() if k in members}
            self._extra_by_op[operation] = extra
        return getattr(client, operation)(**{**extra, **params})

    def key(self, name: str) -> str:
        """The S3 key of the object ``name``."""
        check_name(self.location, name)
        return self.prefix + name

    def _error(self, e: BaseException, action: str, name: str | None) -> BackendError:
        kind, detail = classify(e)
        if kind == "missing":
            why = " (the bucket does not exist)" if "NoSuchBucket" in detail else ""
            return ObjectNotFound(f"{self.location}: {name or 'location'} does not exist{why}")
        what = f"{action} {name}" if name else action
        hint = None
        if type(e).__name__ in CREDENTIAL_CLASS_NAMES or "credential" in detail.lower():
            hint = ("set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, "
                    "or pass key/secret in storage_options")
        return BackendError(f"{self.location}: cannot {what}: {detail}", transient=kind == "transient", hint=hint)

    # -- the Backend protocol ------------------------------------------------------------

    def create(self) -> None:
        """One request where the bucket exists: a listing of at most one key under the prefix."""
        try:
            found = self.call("list_objects_v2", Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except Exception as e:  # noqa: BLE001
            if "NoSuchBucket" not in classify(e)[1]:
                raise self._error(e, "create repository", None) from e
            self._create_bucket()
            return
        if found.get("KeyCount") or found.get("Contents"):
            raise BackendError(f"{self.location}: location is not empty")

    def _create_bucket(self) -> None:
        params: dict[str, Any] = {"Bucket": self.bucket}
        try:
            region = self.client.meta.region_name
            if region and region not in ("us-east-1", "aws-global"):
                params["CreateBucketConfiguration"] = {"LocationConstraint": region}
            self.call("create_bucket", **params)
        except Exception as e:  # noqa: BLE001
            if _answer(e) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._error(e, "create bucket", self.bucket) from e

    def put(self, name: str, data: bytes | memoryview) -> None:
        key = self.key(name)
        payload = data if isinstance(data, bytes) else bytes(data)
        size = len(payload)
        try:
            stored = self._put_object(name, key, payload)
            if stored is None:
                return  # another writer stored this name first: never touch its object
            if stored:
                return  # the server's MD5 of the body matched ours: no HEAD to read the size back
            got = int(self.call("head_object", Bucket=self.bucket, Key=key).get("ContentLength") or 0)
        except BackendError:
            raise
        except Exception as e:  # noqa: BLE001
            raise self._error(e, "write", name) from e
        if got != size:
            self._discard(key)
            raise BackendError(f"{self.location}: upload of {name} stored {got} of {size} bytes", transient=True)

    def _put_object(self, name: str, key: str, payload: bytes) -> bool | None:
        """Store ``payload``: None when a conditional write found the name taken, True when the
        server's ETag proved it stored exactly these bytes, else False (the caller checks the size)."""
        params: dict[str, Any] = self.policy.put_args(name)
        md5 = hashlib.md5(payload, usedforsecurity=False)
        single = len(payload) < SINGLE_PART_LIMIT
        # Create-only (docs/backends.md): a conditional write (If-None-Match: *) where the server
        # honours it; 412 means another host stored this name first, with the same bytes (names are
        # content hashes). config is the one name written twice only by init's own retries.
        conditional = self.conditional_writes and name != "config"
        try:
            response = self._store(key, payload, md5, params, conditional)
        except Exception as e:  # noqa: BLE001
            if not conditional:
                raise
            answer = _answer(e)
            if answer in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return None  # already stored by someone else
            if answer not in ("NotImplemented", "501"):
                raise
            log.info("%s: the server does not support conditional writes; writing unconditionally", self.location)
            self.conditional_writes = False
            response = self._store(key, payload, md5, params, False)
        etag = str(response.get("ETag", "")).strip('"')
        if single and self.verify_etag and etag and "-" not in etag:
            if etag == md5.hexdigest():
                return True
            self._discard(key)
            raise BackendError(
                f"{self.location}: upload of {name} was damaged in transit "
                f"(ETag {etag} is not the MD5 {md5.hexdigest()} of what was sent)",
                transient=True,
                hint="if the bucket uses SSE-KMS or SSE-C encryption, set the verify_etag option to false",
            )
        return False

    def _store(self, key: str, payload: bytes, md5: Any, params: dict[str, Any], conditional: bool) -> dict:
        """One PutObject with Content-MD5, or a multipart upload from SINGLE_PART_LIMIT up."""
        match = {"IfNoneMatch": "*"} if conditional else {}
        if len(payload) < SINGLE_PART_LIMIT:
            return self.call("put_object", Bucket=self.bucket, Key=key, Body=payload,
                             ContentMD5=base64.b64encode(md5.digest()).decode(), **params, **match)
        upload = self.call("create_multipart_upload", Bucket=self.bucket, Key=key, **params)["UploadId"]
        try:
            view = memoryview(payload)
            parts = []
            for number, start in enumerate(range(0, len(payload), PART_SIZE), 1):
                part = view[start:start + PART_SIZE]
                digest = base64.b64encode(hashlib.md5(part, usedforsecurity=False).digest()).decode()
                answer = self.call("upload_part", Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=number,
                                   Body=bytes(part), ContentMD5=digest)
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            return self.call("complete_multipart_upload", Bucket=self.bucket, Key=key, UploadId=upload,
                             MultipartUpload={"Parts": parts}, **match)
        except BaseException:
            try:
                self.call("abort_multipart_upload", Bucket=self.bucket, Key=key, UploadId=upload)
            except Exception:  # noqa: BLE001 - best effort; a lifecycle rule removes what is left
                log.debug("%s: could not abort the multipart upload of %s", self.location, key)
            raise

    def _discard(self, key: str) -> None:
        try:
            self.call("delete_object", Bucket=self.bucket, Key=key)
        except Exception:  # noqa: BLE001 - best effort cleanup of a failed upload
            return

    def get(self, name: str) -> bytes:
        key = self.key(name)
        try:
            return self.call("get_object", Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as e:  # noqa: BLE001
            raise self._error(e, "read", name) from e

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise BackendError(f"{self.location}: invalid range {offset}+{length} of {name}")
        key = self.key(name)
        if length == 0:
            self.stat(name)  # still report a missing object
            return b""
        try:
            answer = self.call("get_object", Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}")
            data = answer["Body"].read()
        except Exception as e:  # noqa: BLE001
            if classify(e)[0] == "permanent":
                # S3 answers 416 InvalidRange for an offset at or past the end: that is b"".
                try:
                    if self.stat(name).size <= offset:
                        return b""
                except BackendError:
                    pass
            raise self._error(e, "read", name) from e
        if not answer.get("ContentRange") and len(data) > length:
            data = data[offset:offset + length]  # a server that ignored the Range sent the whole object
        return data

    def list(self, namespace: str) -> Iterator[ObjectInfo]:
        """One listing request per 1000 keys, yielded page by page (``RetryingBackend`` drops repeats
        when a listing is retried midway)."""
        if namespace not in NAMESPACES:
            raise BackendError(f"{self.location}: unknown namespace {namespace!r}")
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": f"{self.prefix}{namespace}/"}
        skip = len(self.prefix)
        while True:
            try:
                page = self.call("list_objects_v2", **params)
            except Exception as e:  # noqa: BLE001
                if classify(e)[0] == "missing":
                    return  # no bucket: nothing stored
                raise self._error(e, "list", namespace) from e
            for obj in page.get("Contents") or ():
                key = str(obj.get("Key", ""))
                if key.endswith("/") or not key.startswith(self.prefix):
                    continue
                if posixpath.basename(key).startswith(TMP_PREFIX):
                    continue
                yield ObjectInfo(key[skip:], int(obj.get("Size") or 0), _mtime(obj))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            params["ContinuationToken"] = token

    def delete(self, name: str) -> None:
        if self.policy.object_lock is not None:
            return delete_versions(self, name)  # versioned bucket: no delete markers, retention respected
        key = self.key(name)
        try:
            self.call("delete_object", Bucket=self.bucket, Key=key)
        except Exception as e:  # noqa: BLE001
            if classify(e)[0] != "missing":
                raise self._error(e, "delete", name) from e

    def stat(self, name: str) -> ObjectInfo:
        key = self.key(name)
        try:
            head = self.call("head_object", Bucket=self.bucket, Key=key)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, "stat", name) from e
        return ObjectInfo(name, int(head.get("ContentLength") or 0), _mtime(head))

    def close(self) -> None:
        """Close the pooled connections (a later request makes a new client)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None and self._pid == os.getpid():
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing sockets that are gone already
                return

    def __repr__(self) -> str:
        return f"S3Backend({self.location!r})"


__all__ = ["OPTION_NAMES", "S3Backend", "SCHEMES"]
