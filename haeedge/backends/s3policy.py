"""What an S3 location does to each object besides storing it: Object Lock retention and storage classes.

Two settings, kept apart from the transfer code in ``s3.py``:

- **Object Lock** (ransomware protection): every object but a lock gets
  ``ObjectLockMode`` + ``ObjectLockRetainUntilDate`` (now + days) on its PUT, so
  that nobody holding the storage credentials can destroy a version before
  then. The setting lives in the repository config (``object_lock``), and
  ``Repository.open`` hands it to every S3 location of the stack
  (``apply_object_lock``), so every later writer applies it. A delete in
  such a repository removes the object's versions one by one (no delete
  marker left behind); a version still under retention raises
  ``ObjectRetained``, which prune and forget report as "left for later".
- **Storage classes**: ``storage_class_data`` (a backend option) puts data
  packs in another class (``DEEP_ARCHIVE``, ``GLACIER``, ``GLACIER_IR``, ...),
  while every other object (config, keys, index, snapshots, markers, locks, and
  the packs that hold file lists) stays ``STANDARD``: those are read by every
  command and must never wait for an archive restore. A pack that holds file
  lists is named here by ``note_metadata_pack`` before its upload.
"""

from __future__ import annotations

import datetime as _dt
import threading
from dataclasses import dataclass, replace
from typing import Any

from haeedge.backends.base import backend_stack
from haeedge.backends.fsspec_errors import classify, error_code
from haeedge.errors import ObjectRetained, UsageError

#: Object Lock modes as S3 spells them.
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
#: Storage classes a data pack may be put in; the archive ones need a restore before a read.
STORAGE_CLASSES = frozenset({"STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER",
                             "DEEP_ARCHIVE", "GLACIER_IR", "REDUCED_REDUNDANCY", "EXPRESS_ONEZONE"})
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
RESTORE_TIERS = ("Standard", "Bulk", "Expedited")
#: The backend options this module reads (checked by ``S3Backend.from_url`` and ``options.py``).
OPTION_NAMES = frozenset({"storage_class_data", "cold_storage", "restore_days", "restore_tier", "cold_wait"})
#: Default time to wait for archived objects: a DEEP_ARCHIVE Standard restore takes up to 12 hours.
DEFAULT_COLD_WAIT = 24 * 3600.0


@dataclass(frozen=True)
class ObjectLock:
    """Retention given to every object written: mode and days from the put."""

    mode: str
    days: int

    def __post_init__(self) -> None:
        if self.mode not in LOCK_MODES:
            raise ValueError(f"object lock mode must be governance or compliance, not {self.mode!r}")
        if not 1 <= self.days <= 36500:
            raise ValueError(f"object lock days must be 1 to 36500, not {self.days}")

    def to_json(self) -> dict:
        return {"mode": self.mode, "days": self.days}

    @classmethod
    def from_json(cls, d: Any) -> ObjectLock:
        if not isinstance(d, dict) or not isinstance(d.get("days"), int) or isinstance(d.get("days"), bool):
            raise ValueError("object_lock must be {mode, days}")
        return cls(str(d.get("mode")), int(d["days"]))


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


@dataclass
class S3Policy:
    """Per-location settings of an S3 backend: retention (from the repository config) and storage classes."""

    storage_class_data: str | None = None
    #: Look for archived objects before reading (batch restores); on by default with an archive class.
    cold_storage: bool = False
    restore_days: int = 7
    restore_tier: str = "Standard"
    cold_wait: float = DEFAULT_COLD_WAIT
    object_lock: ObjectLock | None = None

    @classmethod
    def from_options(cls, options: dict, location: str, is_s3: bool) -> S3Policy:
        """The policy the backend options ask for; a wrong value is a one-line usage error."""
        given = {k: options[k] for k in OPTION_NAMES if options.get(k) is not None}
        if given and not is_s3:
            raise UsageError(f"{location}: {', '.join(sorted(given))} apply to s3:// locations only")
        policy = cls()
        sc = given.get("storage_class_data")
        if sc is not None:
            sc = str(sc).strip().upper()
            if sc not in STORAGE_CLASSES:
                raise UsageError(f"{location}: storage_class_data {given['storage_class_data']!r} is not an S3 "
                                 f"storage class ({', '.join(sorted(STORAGE_CLASSES))})")
            policy.storage_class_data = sc
        policy.cold_storage = _bool(given.get("cold_storage", sc in ARCHIVE_CLASSES))
        try:
            policy.restore_days = int(given.get("restore_days", policy.restore_days))
            policy.cold_wait = float(given.get("cold_wait", policy.cold_wait))
        except (TypeError, ValueError):
            raise UsageError(f"{location}: restore_days and cold_wait must be numbers") from None
        if not 1 <= policy.restore_days <= 36500 or policy.cold_wait < 0:
            raise UsageError(f"{location}: restore_days must be 1 to 36500 and cold_wait at least 0")
        tier = str(given.get("restore_tier", policy.restore_tier)).strip().capitalize()
        if tier not in RESTORE_TIERS:
            raise UsageError(f"{location}: restore_tier must be one of {', '.join(RESTORE_TIERS)}, not {tier!r}")
        policy.restore_tier = tier
        return policy

    def put_args(self, name: str) -> dict[str, Any]:
        """Extra PutObject / CreateMultipartUpload parameters for the object ``name``."""
        args: dict[str, Any] = {}
        if self.object_lock is not None and not name.startswith("locks/"):
            until = _dt.datetime.now(_dt.UTC) + _dt.timedelta(days=self.object_lock.days)
            args["ObjectLockMode"] = self.object_lock.mode
            args["ObjectLockRetainUntilDate"] = until.replace(microsecond=0)
        if self.storage_class_data and name.startswith("data/") and not is_metadata_pack(name):
            args["StorageClass"] = self.storage_class_data
        return args


# ------------------------------------------------------------------ which packs hold metadata

_metadata_packs: set[str] = set()
_hint_lock = threading.Lock()


def note_metadata_pack(name: str) -> None:
    """``name`` (a ``data/..`` pack about to be put) holds file lists: keep it in the standard class.

    A pack's name is the hash of its bytes, so a process-wide note is exact and
    reaches the put in whatever thread or wrapper it runs.
    """
    with _hint_lock:
        _metadata_packs.add(name)


def is_metadata_pack(name: str) -> bool:
    """Whether ``note_metadata_pack`` named ``name`` (kept: a retried put must find it again)."""
    with _hint_lock:
        return name in _metadata_packs


# ------------------------------------------------------------------ the S3 locations of a stack

def s3_backends(backend: Any) -> list[Any]:
    """Every ``S3Backend`` in ``backend``'s stack: through wrappers and each replica of a set."""
    return [b for b in backend_stack(backend) if b.properties.s3 and b.unwrap() is None]


def apply_object_lock(backend: Any, lock: ObjectLock | None) -> None:
    """Give every S3 location of ``backend`` the repository's retention (``None``: none)."""
    for b in s3_backends(backend):
        b.policy = replace(b.policy, object_lock=lock)


def check_object_lock_bucket(backend: Any) -> None:
    """Refuse a location whose bucket cannot keep retention: not S3, or Object Lock not enabled."""
    found = s3_backends(backend)
    locations = _leaf_locations(backend)
    if len(found) != len(locations):
        others = sorted(set(locations) - {b.location for b in found})
        raise UsageError(f"--object-lock-days needs s3:// locations; {', '.join(others)} cannot keep retention")
    for b in found:
        bucket = b.bucket
        try:
            conf = b.call("get_object_lock_configuration", Bucket=bucket)
        except Exception as e:  # noqa: BLE001 - every driver error: say what is missing
            code = error_code(e)
            if code in ("ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"):
                raise UsageError(f"{b.location}: bucket {bucket} has no Object Lock enabled",
                                 hint="create the bucket with Object Lock enabled (aws s3api create-bucket "
                                      "--object-lock-enabled-for-bucket); see docs/backends.md") from None
            raise b._error(e, "read the Object Lock configuration of bucket", bucket) from e
        enabled = (conf.get("ObjectLockConfiguration") or {}).get("ObjectLockEnabled")
        if enabled != "Enabled":
            raise UsageError(f"{b.location}: bucket {bucket} has no Object Lock enabled",
                             hint="see docs/backends.md, 'S3 Object Lock'")


def _leaf_locations(backend: Any) -> list[str]:
    """The storage locations of ``backend``'s stack (neither wrappers nor replicated sets)."""
    return [b.location for b in backend_stack(backend) if b.unwrap() is None and not b.replica_backends()]




# ------------------------------------------------------------------ deletes under retention

def delete_versions(s3: Any, name: str) -> None:
    """Delete every version of ``name`` (and its delete markers); ``ObjectRetained`` if one is retained.

    In a versioned (Object Lock) bucket a plain DeleteObject only adds a
    delete marker and the bytes stay billed; removing the versions frees them
    at once where retention allows, and the server refuses where it does not.
    """
    bucket, key = s3.bucket, s3.key(name)
    try:
        listing = s3.call("list_object_versions", Bucket=bucket, Prefix=key)
        versions = [v for v in listing.get("Versions", []) + listing.get("DeleteMarkers", []) if v.get("Key") == key]
        retained: list[str] = []
        for v in versions:
            try:
                s3.call("delete_object", Bucket=bucket, Key=key, VersionId=v["VersionId"])
            except Exception as e:  # noqa: BLE001
                if error_code(e) != "AccessDenied":
                    raise
                until = _retained_until(s3, bucket, key, v["VersionId"])
                if until is None:
                    raise
                retained.append(until)
    except ObjectRetained:
        raise
    except Exception as e:  # noqa: BLE001
        if classify(e)[0] == "missing":
            return
        raise s3._error(e, "delete", name) from e
    if retained:
        raise ObjectRetained(f"{s3.location}: {name} is under Object Lock retention until {max(retained)}",
                             until=max(retained))


def _retained_until(s3: Any, bucket: str, key: str, version: str) -> str | None:
    """When a version's retention ends (or "legal hold"), or None when it is not retained (a real denial)."""
    try:
        head = s3.call("head_object", Bucket=bucket, Key=key, VersionId=version)
    except Exception:  # noqa: BLE001 - cannot tell: not a retention
        return None
    if head.get("ObjectLockLegalHoldStatus") == "ON":
        return "its legal hold is removed"
    until = head.get("ObjectLockRetainUntilDate")
    if isinstance(until, _dt.datetime):
        if until.tzinfo is None:
            until = until.replace(tzinfo=_dt.UTC)
        if until > _dt.datetime.now(_dt.UTC) - _dt.timedelta(minutes=5):  # the server's clock decides
            return until.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return None


def delete_if_allowed(backend: Any, name: str) -> str | None:
    """Delete ``name``; when Object Lock retention forbids it still, the date it ends instead of an error."""
    try:
        backend.delete(name)
    except ObjectRetained as e:
        return e.until
    return None


__all__ = ["ARCHIVE_CLASSES", "LOCK_MODES", "OPTION_NAMES", "ObjectLock", "S3Policy", "apply_object_lock",
           "check_object_lock_bucket", "delete_if_allowed", "delete_versions", "note_metadata_pack",
           "s3_backends"]
