"""Object storage through fsspec: any fsspec URL but ``s3://`` (which ``s3.S3Backend`` serves).

Locations: ``gs://bucket/prefix``, ``az://container/prefix``, ``memory://name``
(tests), or any protocol fsspec knows and whose driver is installed.

Options (a dict, all optional):

- ``storage_options``: passed to the fsspec filesystem as keyword arguments.
- ``verify_etag``, ``retries``: accepted for the sake of configurations written
  for S3; nothing to do here.
- S3 options (``endpoint_url``, ``region``, ``profile``, storage classes,
  Object Lock) apply to ``s3://`` locations only: a usage error here.

Why these choices:

- Writes are single PUTs on object stores, which are atomic (readers see the
  old state or the whole new object). On filesystems without atomic writes
  (``file``, ``sftp``, ``ftp``, ...) we write a ``.tmp-`` name and move it.
- After every upload the stored size is read back.
- Listings bypass fsspec's caches: another process may have written since.
- Errors map to ``ObjectNotFound`` (missing), permanent ``BackendError``
  (credentials, permissions, bad requests) or transient ``BackendError``
  (timeouts, dropped connections, 5xx, throttling).
"""

from __future__ import annotations

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
from haeedge.errors import BackendError, ObjectNotFound, UsageError

log = logging.getLogger("haeedge.backends.fsspec")
TMP_PREFIX = ".tmp-"

#: Protocols whose single-object writes are atomic (object stores).
ATOMIC_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory", "oss", "r2"})
_S3 = frozenset({"s3", "s3a"})

def _strip_secrets(url: str) -> str:
    """The URL without any user:password part, for messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))




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
    """A repository under a prefix of an fsspec filesystem. Thread-safe where the driver is."""

    def __init__(self, fs: Any, root: str, location: str):
        self.fs = fs
        self.root = root.rstrip("/")
        self.location = location
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        self.protocols = frozenset(protocols)
        self.atomic_put = bool(self.protocols & ATOMIC_PROTOCOLS)
        self.properties = BackendProperties()

    @classmethod
    def from_url(cls, url: str, options: dict | None = None) -> FsspecBackend:
        """Open ``url`` with the options described in the module docstring."""
        options = dict(options or {})
        known = {"storage_options", "endpoint_url", "region", "profile", "verify_etag", "retries"}
        known |= POLICY_OPTIONS  # S3 only: refused below with a message that says so
        unknown = sorted(set(options) - known)
        if unknown:
            raise UsageError(f"unknown storage option(s): {', '.join(unknown)}")
        if "://" not in url:
            raise UsageError(f"not a URL: {url}")
        protocol = url.split("://", 1)[0].lower()
        location = _strip_secrets(url)
        if protocol in _S3:
            raise UsageError(f"{location}: s3:// locations are served by haeedge.backends.s3 (open_backend)")
        s3_only = sorted(k for k in known - {"storage_options", "verify_etag", "retries"}
                         if options.get(k) is not None)
        if s3_only:
            raise UsageError(f"{location}: {', '.join(s3_only)} apply to s3:// locations only")
        so: dict[str, Any] = dict(options.get("storage_options") or {})
        try:
            fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True, **so)
        except ImportError as e:
            raise UsageError(f"{location}: no fsspec driver for {protocol}:// ({e})") from e
        except (ValueError, TypeError) as e:
            raise UsageError(f"{location}: {e}") from e
        return cls(fs, root, location)

    # -- helpers -------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        check_name(self.location, name)
        return f"{self.root}/{name}"

    def _error(self, e: BaseException, action: str, name: str | None) -> BackendError:
        kind, detail = classify(e)
        if kind == "missing":
            return ObjectNotFound(f"{self.location}: {name or 'location'} does not exist")
        what = f"{action} {name}" if name else action
        hint = None
        if type(e).__name__ in CREDENTIAL_CLASS_NAMES or "credential" in detail.lower():
            hint = "give the credentials the fsspec driver reads, or pass them in storage_options"
        return BackendError(f"{self.location}: cannot {what}: {detail}", transient=kind == "transient", hint=hint)

    def _invalidate(self, path: str) -> None:
        try:
            self.fs.invalidate_cache(path)
        except Exception:  # noqa: BLE001 - a cache that cannot be cleared is not an error
            return

    # -- the Backend protocol ------------------------------------------------------------

    def create(self) -> None:
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

    def put(self, name: str, data: bytes | memoryview) -> None:
        path = self._path(name)
        payload = data if isinstance(data, bytes) else bytes(data)
        size = len(payload)
        try:
            if self.atomic_put:
                self.fs.pipe_file(path, payload)
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

    def get(self, name: str) -> bytes:
        path = self._path(name)
        try:
            data = self.fs.cat_file(path)
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
                # Object stores answer an offset at or past the end with an error: that is b"".
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
