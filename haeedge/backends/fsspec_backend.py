"""Object storage through fsspec: ``s3://bucket/prefix`` (s3fs) and any fsspec URL.

Locations: ``s3://bucket/prefix``, ``gs://bucket/prefix``, ``az://container/prefix``,
``memory://name`` (tests), or any protocol fsspec knows.

Options (a dict, all optional):

- ``storage_options``: passed to the fsspec filesystem as keyword arguments
  (for S3 e.g. ``key``, ``secret``, ``token``, ``anon``, ``client_kwargs``).
- S3 only: ``endpoint_url`` (S3-compatible services: MinIO, Ceph, R2, ...),
  ``region``, ``profile``. Without them the usual AWS environment works through
  botocore: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
  ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``/``AWS_REGION``,
  and ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` (read here too, so older
  botocore honours them).
- S3 only: ``verify_etag`` (default true): compare the ETag of a single-part
  upload with the MD5 of what we sent. Buckets with SSE-KMS/SSE-C encryption
  return ETags that are not MD5s; set it false there (S3 still checks the
  Content-MD5 header we send with every single-part upload).
- ``retries`` (default 3): attempts made *inside* s3fs/botocore for one call.
  Kept small because ``RetryingBackend`` retries transient errors with backoff
  on top, and a replicated repository should fail over quickly.

Why these choices:

- Writes are single PUTs on object stores, which are atomic (readers see the
  old state or the whole new object). On filesystems without atomic writes
  (``file``, ``sftp``, ``ftp``, ...) we write a ``.tmp-`` name and move it.
- After every upload the stored size is read back; for S3 the MD5 is also
  checked (Content-MD5 on the request, ETag on the answer).
- Listings bypass fsspec's caches: another process may have written since.
- Errors map to ``ObjectNotFound`` (missing), permanent ``BackendError``
  (credentials, permissions, bad requests) or transient ``BackendError``
  (timeouts, dropped connections, 5xx, throttling such as SlowDown/503).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import inspect
import logging
import os
import posixpath
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import fsspec

from haeedge.backends.base import NAMESPACES, BackendProperties, ObjectInfo, StorageBackend, check_name
from haeedge.backends.fsspec_errors import CREDENTIAL_CLASS_NAMES, classify
from haeedge.backends.s3policy import OPTION_NAMES as POLICY_OPTIONS
from haeedge.backends.s3policy import S3Policy, delete_versions
from haeedge.errors import BackendError, ObjectNotFound, UsageError

log = logging.getLogger("haeedge.backends.fsspec")
TMP_PREFIX = ".tmp-"

#: Protocols whose single-object writes are atomic (object stores).
ATOMIC_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory", "oss", "r2"})
_S3 = frozenset({"s3", "s3a"})
#: s3fs switches to multipart uploads at twice its chunk size; below that one PUT carries Content-MD5.
_S3_SINGLE_PART_LIMIT = 2 * 50 * 2**20

def _strip_secrets(url: str) -> str:
    """The URL without any user:password part, for messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))




def _s3_error_code(e: BaseException) -> str:
    """The S3 error code (or HTTP status) behind an exception s3fs raised, '' when there is none."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        response = getattr(cur, "response", None)
        if isinstance(response, dict):
            err = response.get("Error") or {}
            code = str(err.get("Code") or "")
            status = str((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or "")
            return code or status
        cur = cur.__cause__ or cur.__context__
    text = str(e)
    for code in ("PreconditionFailed", "ConditionalRequestConflict", "NotImplemented"):
        if code in text:
            return code
    return ""


def _mtime(info: dict) -> float | None:
    """When the store last wrote an object (S3 LastModified, a file's mtime), seconds since the epoch."""
    value = info.get("LastModified", info.get("mtime", info.get("last_modified")))
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    ts = getattr(value, "timestamp", None)
    if callable(ts):
        return float(ts())
    return None


class FsspecBackend(StorageBackend):
    """A repository under a prefix of an fsspec filesystem. Thread-safe (s3fs runs its own loop)."""

    #: Object Lock retention and storage classes (S3 only; s3policy.py).
    policy: S3Policy = S3Policy()

    def __init__(self, fs: Any, root: str, location: str, *, verify_etag: bool = True):
        self.fs = fs
        self.root = root.rstrip("/")
        self.location = location
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        self.protocols = frozenset(protocols)
        self.is_s3 = bool(self.protocols & _S3)
        self.atomic_put = bool(self.protocols & ATOMIC_PROTOCOLS)
        self.verify_etag = verify_etag
        #: S3: send If-None-Match: * on every write (cleared when the server answers NotImplemented).
        self.conditional_writes = self.is_s3
        self.properties = BackendProperties(s3=self.is_s3)

    @classmethod
    def from_url(cls, url: str, options: dict | None = None) -> FsspecBackend:
        """Open ``url`` with the options described in the module docstring."""
        options = dict(options or {})
        known = {"storage_options", "endpoint_url", "region", "profile", "verify_etag", "retries"}
        known |= POLICY_OPTIONS  # retention and storage classes: s3policy.py
        unknown = sorted(set(options) - known)
        if unknown:
            raise UsageError(f"unknown storage option(s): {', '.join(unknown)}")
        if "://" not in url:
            raise UsageError(f"not a URL: {url}")
        protocol = url.split("://", 1)[0].lower()
        so: dict[str, Any] = dict(options.get("storage_options") or {})
        retries = int(options.get("retries", 3))
        if protocol in _S3:
            endpoint = (options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
                        or os.environ.get("AWS_ENDPOINT_URL"))
            if endpoint:
                so.setdefault("endpoint_url", endpoint)
            # botocore reads AWS_DEFAULT_REGION itself; AWS_REGION (the other SDKs' name) only through us.
            region = options.get("region") or (
                None if os.environ.get("AWS_DEFAULT_REGION") else os.environ.get("AWS_REGION"))
            if region:
                client_kwargs = dict(so.get("client_kwargs") or {})
                client_kwargs.setdefault("region_name", region)
                so["client_kwargs"] = client_kwargs
            if options.get("profile"):
                so.setdefault("profile", options["profile"])
            config_kwargs = dict(so.get("config_kwargs") or {})
            config_kwargs.setdefault("retries", {"max_attempts": max(1, retries), "mode": "standard"})
            config_kwargs.setdefault("connect_timeout", 10)
            config_kwargs.setdefault("read_timeout", 60)
            # botocore >= 1.36 checks a whole-object checksum against ranged GETs (a false mismatch on
            # servers such as rclone serve s3) and sends checksum headers some S3-compatible servers refuse.
            config_kwargs.setdefault("request_checksum_calculation", "when_required")
            config_kwargs.setdefault("response_checksum_validation", "when_required")
            so["config_kwargs"] = config_kwargs
            so.setdefault("use_listings_cache", False)
        elif options.get("endpoint_url") or options.get("region") or options.get("profile"):
            raise UsageError("endpoint_url, region and profile apply to s3:// locations only")
        location = _strip_secrets(url)
        try:
            fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True, **so)
        except ImportError as e:
            raise UsageError(f"{location}: no fsspec driver for {protocol}:// ({e})") from e
        except (ValueError, TypeError) as e:
            raise UsageError(f"{location}: {e}") from e
        if protocol in _S3:
            fs.retries = max(1, min(retries, 5))
        if not root.strip("/") and protocol in _S3:
            raise UsageError(f"{location}: an s3:// location needs a bucket: s3://bucket/prefix")
        verify = options.get("verify_etag", True)
        if isinstance(verify, str):
            verify = verify.strip().lower() in ("1", "true", "yes", "on")
        backend = cls(fs, root, location, verify_etag=bool(verify))
        backend.policy = S3Policy.from_options(options, location, protocol in _S3)
        return backend

    # -- helpers -------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        check_name(self.location, name)
        return f"{self.root}/{name}"

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

    def _invalidate(self, path: str) -> None:
        try:
            self.fs.invalidate_cache(path)
        except Exception:  # noqa: BLE001 - a cache that cannot be cleared is not an error
            return

    # -- the Backend protocol ------------------------------------------------------------

    def create(self) -> None:
        if self.is_s3:
            return self._create_s3()
        try:
            self._invalidate(self.root)
            try:
                entries = self.fs.ls(self.root, detail=False)  # one level: cheap even for a big repository
            except FileNotFoundError:
                entries = []
            if entries:
                raise BackendError(f"{self.location}: location is not empty")
            self.fs.makedirs(self.root, exist_ok=True)
            if not self.atomic_put:
                for ns in NAMESPACES:
                    self.fs.makedirs(f"{self.root}/{ns}", exist_ok=True)
                for i in range(256):
                    self.fs.makedirs(f"{self.root}/data/{i:02x}", exist_ok=True)
        except BackendError:
            raise
        except Exception as e:  # noqa: BLE001 - any driver error becomes a BackendError
            raise self._error(e, "create repository", None) from e

    def _create_s3(self) -> None:
        """One request where the bucket exists: a listing of at most one key under the prefix (s3fs's
        ``ls`` and ``makedirs`` list the prefix, the bucket and HEAD it)."""
        bucket, key, _ = self.fs.split_path(self.root)
        prefix = f"{key}/" if key else ""
        try:
            found = self.fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except Exception as e:  # noqa: BLE001
            if "NoSuchBucket" not in classify(e)[1] and not isinstance(e, FileNotFoundError):
                raise self._error(e, "create repository", None) from e
            try:
                self.fs.makedirs(self.root, exist_ok=True)  # no bucket yet: make it, as before
            except Exception as e2:  # noqa: BLE001
                raise self._error(e2, "create repository", None) from e2
            return
        if found.get("KeyCount") or found.get("Contents"):
            raise BackendError(f"{self.location}: location is not empty")

    def put(self, name: str, data: bytes | memoryview) -> None:
        path = self._path(name)
        payload = data if isinstance(data, bytes) else bytes(data)
        size = len(payload)
        try:
            if self.atomic_put:
                stored = self._put_object(path, payload)
                if stored is None:
                    return  # another writer stored this name first: never touch its object
                if stored:
                    self._invalidate(path)
                    return  # the server's MD5 of the body matched ours: no HEAD to read the size back
            else:
                self._put_via_temp(path, payload)
            self._invalidate(path)
            got = int(self.fs.info(path)["size"])
        except BackendError:
            raise
        except Exception as e:  # noqa: BLE001
            raise self._error(e, "write", name) from e
        if got != size:
            self._discard(path)
            raise BackendError(f"{self.location}: upload of {name} stored {got} of {size} bytes", transient=True)

    def _put_object(self, path: str, payload: bytes) -> bool | None:
        """Store ``payload``: None when a conditional write found the name taken, True when the
        server's ETag proved it stored exactly these bytes, else False (the caller checks the size)."""
        if not self.is_s3:
            self.fs.pipe_file(path, payload)
            return False
        kwargs: dict[str, Any] = self.policy.put_args(path[len(self.root) + 1:])
        md5 = hashlib.md5(payload, usedforsecurity=False)
        single = len(payload) < _S3_SINGLE_PART_LIMIT
        if single:
            kwargs["ContentMD5"] = base64.b64encode(md5.digest()).decode()
        # Create-only (docs/backends.md): a conditional write (If-None-Match: *) where the server
        # honours it; 412 means another host stored this name first, with the same bytes (names are
        # content hashes). config is the one name written twice only by init's own retries.
        conditional = self.conditional_writes and not path.endswith("/config")
        try:
            response = self.fs.pipe_file(path, payload, mode="create" if conditional else "overwrite", **kwargs)
        except Exception as e:  # noqa: BLE001 - s3fs turns the answers into OSErrors
            if not conditional:
                raise
            answer = _s3_error_code(e)
            if answer in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return None  # already stored by someone else
            if answer in ("NotImplemented", "501"):
                log.info("%s: the server does not support conditional writes; writing unconditionally",
                         self.location)
                self.conditional_writes = False
                response = self.fs.pipe_file(path, payload, **kwargs)
            else:
                raise
        if single and self.verify_etag and isinstance(response, dict):
            etag = str(response.get("ETag", "")).strip('"')
            if etag and "-" not in etag and etag == md5.hexdigest():
                return True
            if etag and "-" not in etag:
                self._discard(path)
                raise BackendError(
                    f"{self.location}: upload of {path[len(self.root) + 1:]} was damaged in transit "
                    f"(ETag {etag} is not the MD5 {md5.hexdigest()} of what was sent)",
                    transient=True,
                    hint="if the bucket uses SSE-KMS or SSE-C encryption, set the verify_etag option to false",
                )
        return False

    def _put_via_temp(self, path: str, payload: bytes) -> None:
        directory, base = posixpath.split(path)
        tmp = f"{directory}/{TMP_PREFIX}{base}-{os.urandom(6).hex()}"
        try:
            try:
                self.fs.pipe_file(tmp, payload)
            except FileNotFoundError:
                self.fs.makedirs(directory, exist_ok=True)
                self.fs.pipe_file(tmp, payload)
            got = int(self.fs.info(tmp)["size"])
            if got != len(payload):
                raise BackendError(f"{self.location}: upload of {path} stored {got} of {len(payload)} bytes",
                                   transient=True)
            self.fs.mv(tmp, path)
        except BaseException:
            self._discard(tmp)
            raise

    def _discard(self, path: str) -> None:
        try:
            self.fs.rm_file(path)
        except Exception:  # noqa: BLE001 - best effort cleanup of a failed upload
            return

    @functools.cached_property
    def _whole_read_args(self) -> dict[str, Any]:
        """``max_concurrency=1`` where s3fs has it (since 2024.3): else it HEADs before every GET."""
        cat = getattr(self.fs, "_cat_file", None)
        if self.is_s3 and cat is not None and "max_concurrency" in inspect.signature(cat).parameters:
            return {"max_concurrency": 1}
        return {}

    def get(self, name: str) -> bytes:
        path = self._path(name)
        try:
            # One GET on S3: s3fs would HEAD first to split a large read into concurrent ranges,
            # and haeedge's objects are small (packs default to 16 MiB) and read ranged when large.
            data = self.fs.cat_file(path, **self._whole_read_args)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, "read", name) from e
        return bytes(data)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise BackendError(f"{self.location}: invalid range {offset}+{length} of {name}")
        path = self._path(name)
        if length == 0:
            self.stat(name)  # still report a missing object
            return b""
        try:
            return bytes(self.fs.cat_file(path, start=offset, end=offset + length))
        except Exception as e:  # noqa: BLE001
            kind, _ = classify(e)
            if kind == "permanent":
                # S3 answers 416 InvalidRange for an offset at or past the end: that is b"".
                try:
                    if self.stat(name).size <= offset:
                        return b""
                except BackendError:
                    pass
            raise self._error(e, "read", name) from e

    def list(self, namespace: str) -> Iterator[ObjectInfo]:
        if namespace not in NAMESPACES:
            raise BackendError(f"{self.location}: unknown namespace {namespace!r}")
        base = f"{self.root}/{namespace}"
        self._invalidate(base)
        try:
            if self.is_s3:  # one listing by key prefix: s3fs follows an empty one with a HEAD and a LIST
                found = self.fs.find(self.root, detail=True, withdirs=False, prefix=f"{namespace}/")
            else:
                found = self.fs.find(base, detail=True, withdirs=False)
        except FileNotFoundError:
            return
        except Exception as e:  # noqa: BLE001
            raise self._error(e, "list", namespace) from e
        prefix = self.root + "/"
        out: list[ObjectInfo] = []
        for path, info in found.items():
            p = self.fs._strip_protocol(path) if hasattr(self.fs, "_strip_protocol") else path
            if info.get("type", "file") != "file" or p.endswith("/") or not p.startswith(prefix):
                continue
            if posixpath.basename(p).startswith(TMP_PREFIX):
                continue
            out.append(ObjectInfo(p[len(prefix):], int(info.get("size") or 0), _mtime(info)))
        yield from out

    def delete(self, name: str) -> None:
        if self.is_s3 and self.policy.object_lock is not None:
            return delete_versions(self, name)  # versioned bucket: no delete markers, retention respected
        path = self._path(name)
        try:
            self.fs.rm_file(path)
        except Exception as e:  # noqa: BLE001
            if classify(e)[0] != "missing":
                raise self._error(e, "delete", name) from e
        finally:
            self._invalidate(path)

    def stat(self, name: str) -> ObjectInfo:
        path = self._path(name)
        self._invalidate(path)
        if self.is_s3:  # one HEAD: s3fs follows a 404 with a listing (is it a "directory"?)
            bucket, key, _ = self.fs.split_path(path)
            try:
                head = self.fs.call_s3("head_object", Bucket=bucket, Key=key)
            except Exception as e:  # noqa: BLE001
                raise self._error(e, "stat", name) from e
            return ObjectInfo(name, int(head.get("ContentLength") or 0), _mtime(head))
        try:
            info = self.fs.info(path)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, "stat", name) from e
        if info.get("type", "file") != "file":
            raise ObjectNotFound(f"{self.location}: {name} does not exist")
        return ObjectInfo(name, int(info.get("size") or 0), _mtime(info))

    def close(self) -> None:
        return

    def __repr__(self) -> str:
        return f"FsspecBackend({self.location!r})"
