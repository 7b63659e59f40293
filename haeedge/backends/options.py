"""What each kind of location accepts as ``backend_options``, and of which kind each value is.

The config file checks every value against this table when it is read, so a
typo or a wrong value (``timeout: thirty``, ``timeout: -5``, an empty
``key_file``) is one line naming FILE:LINE:COLUMN, not an internal error or a
setting that makes every call fail later. The backends read the same names
(``sftp.SFTPBackend.from_url``, ``s3.S3Backend.from_url``, ``fsspec_backend.FsspecBackend.from_url``);
tests/ops/test_backend_options.py checks that the two agree.
"""

from __future__ import annotations

#: Value kinds: "text" (a non-empty string), "file" (a non-empty file name), "bool", "port" (1-65535),
#: "seconds" (a number above 0), "count" (an integer of at least 1), "retries" (an integer of at least 0),
#: "mapping" (passed on as is).
SFTP_OPTIONS: dict[str, str] = {
    "user": "text", "port": "port", "key_file": "file", "key_passphrase": "text", "use_agent": "bool",
    "known_hosts": "file", "accept_new_host_key": "bool", "timeout": "seconds", "max_channels": "count",
    "fsync": "bool", "request_size": "count",
}
S3_OPTIONS: dict[str, str] = {
    "storage_options": "mapping", "endpoint_url": "text", "region": "text", "profile": "text",
    "verify_etag": "bool", "retries": "retries",
    # s3policy.py: storage class of data packs, and reading them back from an archive class
    "storage_class_data": "text", "cold_storage": "bool", "restore_days": "count", "restore_tier": "text",
    "cold_wait": "seconds",
}
#: Other fsspec URLs (gs://, az://, memory://, ...): their driver's keyword arguments.
#: (``verify_etag`` and ``retries`` are read for S3 only; accepted here as they always were.)
FSSPEC_OPTIONS: dict[str, str] = {"storage_options": "mapping", "verify_etag": "bool", "retries": "retries"}


def option_kinds(location: str) -> tuple[str, dict[str, str]]:
    """(what the location is, its options' kinds) for a location string as ``open_backend`` reads it."""
    if "://" not in location or location.lower().startswith("file://"):
        return "a local directory", {}
    scheme = location.split("://", 1)[0].lower()
    if scheme == "sftp":
        return "an sftp:// location", SFTP_OPTIONS
    if scheme in ("s3", "s3a"):
        return f"an {scheme}:// location", S3_OPTIONS
    return f"an {scheme}:// location", FSSPEC_OPTIONS


__all__ = ["SFTP_OPTIONS", "S3_OPTIONS", "FSSPEC_OPTIONS", "option_kinds"]
