"""Storage locations. ``open_backend`` turns a location string into a Backend."""

from __future__ import annotations

from haeedge.backends.base import Backend, ObjectInfo
from haeedge.errors import UsageError


def open_backend(location: str, options: dict | None = None) -> Backend:
    """Open a location: a path, ``file://``, ``sftp://``, ``s3://``/``s3a://`` or another fsspec URL."""
    options = options or {}
    if "://" not in location:
        from haeedge.backends.local import LocalBackend

        return LocalBackend(location)
    scheme = location.split("://", 1)[0].lower()
    if scheme == "file":
        from haeedge.backends.local import LocalBackend

        return LocalBackend(location[len("file://") :])
    if scheme == "sftp":
        try:
            from haeedge.backends.sftp import SFTPBackend
        except ImportError as e:  # pragma: no cover - until the SFTP backend lands
            raise UsageError(f"sftp backend is not available: {e}") from e
        return SFTPBackend.from_url(location, options)
    if scheme in ("s3", "s3a"):
        from haeedge.backends.s3 import S3Backend  # botocore's synchronous client, no s3fs

        return S3Backend.from_url(location, options)
    try:
        from haeedge.backends.fsspec_backend import FsspecBackend
    except ImportError as e:  # pragma: no cover
        raise UsageError(f"no backend for {scheme}:// locations: {e}") from e
    return FsspecBackend.from_url(location, options)


__all__ = ["Backend", "ObjectInfo", "open_backend"]
