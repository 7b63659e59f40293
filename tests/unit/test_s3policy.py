"""What S3 objects get besides their bytes: retention, storage class; and how a HEAD reads as archived."""

from __future__ import annotations

import json

import pytest

from haeedge.backends.cold import ARCHIVED, AVAILABLE, RESTORING, archive_state
from haeedge.backends.s3policy import ObjectLock, S3Policy, note_metadata_pack
from haeedge.errors import FormatError, UsageError
from haeedge.repo.config import RepositoryConfig


def test_config_without_object_lock_is_written_as_before_and_with_it_round_trips():
    plain = RepositoryConfig(repository_id="ab" * 32)
    assert b"object_lock" not in plain.to_bytes()  # old repositories' configs: unchanged bytes
    locked = RepositoryConfig(repository_id="ab" * 32, object_lock=ObjectLock("COMPLIANCE", 30))
    back = RepositoryConfig.from_bytes(locked.to_bytes())
    assert back.object_lock == ObjectLock("COMPLIANCE", 30)
    assert RepositoryConfig.from_bytes(plain.to_bytes()).object_lock is None


@pytest.mark.parametrize("lock", [{"mode": "NONE", "days": 3}, {"mode": "GOVERNANCE", "days": 0},
                                  {"mode": "GOVERNANCE", "days": "3"}, {"mode": "GOVERNANCE", "days": True}, 7])
def test_a_hostile_object_lock_field_is_a_format_error(lock):
    d = json.loads(RepositoryConfig(repository_id="ab" * 32).to_bytes())
    d["object_lock"] = lock
    with pytest.raises(FormatError, match="config is malformed"):
        RepositoryConfig.from_bytes(json.dumps(d).encode())


def test_put_args_retain_everything_but_locks_and_archive_only_file_data():
    policy = S3Policy.from_options({"storage_class_data": "deep_archive"}, "s3://b/r", True)
    policy.object_lock = ObjectLock("GOVERNANCE", 2)
    assert policy.cold_storage  # on by default with an archive class
    data = policy.put_args("data/aa/" + "aa" * 32)
    assert data["StorageClass"] == "DEEP_ARCHIVE" and data["ObjectLockMode"] == "GOVERNANCE"
    tree = "data/bb/" + "bb" * 32
    note_metadata_pack(tree)
    assert "StorageClass" not in policy.put_args(tree) and "ObjectLockMode" in policy.put_args(tree)
    assert "StorageClass" not in policy.put_args("index/" + "cc" * 32)
    assert policy.put_args("locks/" + "dd" * 32) == {}


@pytest.mark.parametrize(("options", "words"), [
    ({"storage_class_data": "FROZEN"}, "not an S3 storage class"),
    ({"restore_tier": "fast"}, "restore_tier must be one of"),
    ({"restore_days": 0}, "restore_days must be 1 to 36500"),
    ({"cold_wait": "soon"}, "must be numbers"),
])
def test_bad_cold_options_are_usage_errors(options, words):
    with pytest.raises(UsageError, match=words):
        S3Policy.from_options(options, "s3://b/r", True)


def test_cold_options_apply_to_s3_only():
    with pytest.raises(UsageError, match="apply to s3:// locations only"):
        S3Policy.from_options({"storage_class_data": "GLACIER"}, "gs://b/r", False)


@pytest.mark.parametrize(("head", "state"), [
    ({}, AVAILABLE),
    ({"StorageClass": "STANDARD_IA"}, AVAILABLE),
    ({"StorageClass": "GLACIER_IR"}, AVAILABLE),
    ({"StorageClass": "GLACIER"}, ARCHIVED),
    ({"StorageClass": "DEEP_ARCHIVE", "Restore": 'ongoing-request="true"'}, RESTORING),
    ({"StorageClass": "GLACIER", "Restore": 'ongoing-request="false", expiry-date="Fri, 12 Dec 2026 00:00:00 GMT"'},
     AVAILABLE),
])
def test_archive_state_from_head(head, state):
    assert archive_state(head) == state
