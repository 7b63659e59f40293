"""Replicated repositories: failover per object, write policies, sync and audit, with real servers."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from haeedge.backends.base import data_name
from haeedge.backends.faulty import FaultyBackend
from haeedge.backends.local import LocalBackend
from haeedge.backends.replicated import ReplicatedBackend, audit_replicas, content_addressed, sync_replicas
from haeedge.backends.s3 import S3Backend
from haeedge.backends.sftp import SFTPBackend
from haeedge.errors import BackendError, IntegrityError, ObjectNotFound, UsageError
from tests.support.servers import start_s3, start_sshd


def obj(size: int = 2000) -> tuple[str, bytes]:
    data = os.urandom(size)
    return data_name(hashlib.sha256(data).hexdigest()), data


def two_locals(tmp_path: Path) -> tuple[LocalBackend, LocalBackend]:
    a, b = LocalBackend(str(tmp_path / "one")), LocalBackend(str(tmp_path / "two"))
    a.create()
    b.create()
    return a, b


def test_writes_go_everywhere_in_parallel(tmp_path: Path) -> None:
    a, b = two_locals(tmp_path)
    slow = [FaultyBackend(a, "put:latency=0.4"), FaultyBackend(b, "put:latency=0.4")]
    rep = ReplicatedBackend(slow, "all")
    name, data = obj()
    t0 = time.monotonic()
    rep.put(name, data)
    assert time.monotonic() - t0 < 0.75  # not 0.8: both replicas were written at once
    assert a.get(name) == data and b.get(name) == data
    rep.delete(name)
    assert not a.exists(name) and not b.exists(name)
    rep.close()


def test_reads_fall_back_when_a_replica_directory_is_gone(tmp_path: Path) -> None:
    a, b = two_locals(tmp_path)
    rep = ReplicatedBackend([a, b])
    objs = [obj(100 * (i + 1)) for i in range(5)]
    for name, data in objs:
        rep.put(name, data)
    shutil.rmtree(tmp_path / "one")
    for name, data in objs:
        assert rep.get(name) == data
        assert rep.get_range(name, 10, 20) == data[10:30]
        assert rep.stat(name).size == len(data)
        assert rep.exists(name)
    assert {i.name for i in rep.list("data")} == {n for n, _ in objs}
    assert rep.failovers[b.location] >= 5


def test_a_corrupted_object_is_served_from_the_other_replica(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    a, b = two_locals(tmp_path)
    rep = ReplicatedBackend([a, b])
    name, data = obj(5000)
    rep.put(name, data)
    damaged = bytearray(data)
    damaged[1234] ^= 0x10
    (tmp_path / "one" / name).write_bytes(bytes(damaged))
    assert a.get(name) != data
    with caplog.at_level(logging.WARNING, logger="haeedge.backends"):
        assert rep.get(name) == data
    assert any("damaged" in r.getMessage() and a.location in r.getMessage() for r in caplog.records)
    assert rep.failovers[b.location] == 1
    # Once a copy is known damaged, ranges of that object come from the other replicas first.
    assert rep.get_range(name, 1230, 10) == data[1230:1240]
    assert rep.damaged_copies == {a.location: [name]}
    # A range alone cannot be hashed: a fresh session reads it from the first replica,
    # and recover_range (called when the caller finds the bytes bad) finds the good copy.
    fresh = ReplicatedBackend([a, b])
    assert fresh.get_range(name, 1230, 10) == bytes(damaged[1230:1240])
    assert fresh.recover_range(name, 1230, 10) == data[1230:1240]
    assert fresh.get_range(name, 1230, 10) == data[1230:1240]


def test_damaged_or_missing_everywhere(tmp_path: Path) -> None:
    a, b = two_locals(tmp_path)
    rep = ReplicatedBackend([a, b])
    name, data = obj()
    rep.put(name, data)
    (tmp_path / "one" / name).write_bytes(b"garbage")
    (tmp_path / "two" / name).unlink()
    with pytest.raises(IntegrityError):
        rep.get(name)
    with pytest.raises(ObjectNotFound) as err:
        rep.get("keys/" + "0" * 64)
    assert "any replica" in str(err.value)
    # config is not content-addressed: first replica that has it wins.
    b.put("config", b"cfg")
    assert rep.get("config") == b"cfg"
    assert not content_addressed("config") and content_addressed(name)


def test_write_policy_all_fails_when_one_replica_fails(tmp_path: Path) -> None:
    a, b = two_locals(tmp_path)
    rep = ReplicatedBackend([a, FaultyBackend(b, "put:every=1:permanent")], "all")
    name, data = obj()
    with pytest.raises(BackendError) as err:
        rep.put(name, data)
    assert b.location in str(err.value)
    assert err.value.transient is False


def test_write_policy_continue_records_lagging_replicas(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = two_locals(tmp_path)
    broken = FaultyBackend(b, "put:every=1")
    rep = ReplicatedBackend([a, broken], "continue", down_after=100)
    objs = [obj(300 + i) for i in range(4)]
    with caplog.at_level(logging.WARNING, logger="haeedge.backends"):
        for name, data in objs:
            rep.put(name, data)
    assert all(a.get(n) == d for n, d in objs)
    assert list(b.list("data")) == []
    assert set(rep.lagging) == {b.location}
    assert "injected fault" in rep.lagging[b.location]
    assert rep.lagging_objects[b.location] == {n for n, _ in objs}
    assert sum("lagging" in r.getMessage() for r in caplog.records) == 4
    # Nothing took the write: that is an error even under "continue".
    rep_none = ReplicatedBackend([FaultyBackend(a, "put:every=1"), broken], "continue")
    with pytest.raises(BackendError):
        rep_none.put(*obj())


def test_a_dead_replica_is_skipped_after_repeated_failures(tmp_path: Path) -> None:
    a, b = two_locals(tmp_path)
    broken = FaultyBackend(b, "put:every=1")
    now = [0.0]
    rep = ReplicatedBackend([a, broken], "continue", down_after=2, probe_interval=60, clock=lambda: now[0])
    for _ in range(6):
        rep.put(*obj())
    assert broken.calls["put"] == 2  # then it was considered down and not waited for
    now[0] = 61.0
    rep.put(*obj())
    assert broken.calls["put"] == 3  # probed again after the interval


def test_sync_repairs_a_lagging_replica_and_audit_reports_it(tmp_path: Path) -> None:
    a, b = two_locals(tmp_path)
    broken = FaultyBackend(b, "put:every=1")
    rep = ReplicatedBackend([a, broken], "continue", down_after=100)
    objs = [obj(500 + i) for i in range(6)]
    for name, data in objs:
        rep.put(name, data)
    a.put("config", b"cfg")
    before = audit_replicas([a, b])
    assert not before.ok
    assert before[b.location].missing == sorted([n for n, _ in objs] + ["config"])
    assert before[a.location].extra == sorted([n for n, _ in objs] + ["config"])
    assert before[a.location].ok  # extra objects are not a defect of replica one

    broken.clear()
    progress: list[tuple[int, int]] = []
    report = sync_replicas(rep, progress=lambda done, total, name: progress.append((done, total)))
    assert report.ok
    assert sorted(report.copied[b.location]) == sorted([n for n, _ in objs] + ["config"])
    assert report.bytes_copied == sum(len(d) for _, d in objs) + 3
    assert progress[-1] == (7, 7)
    assert rep.lagging == {}
    assert all(b.get(n) == d for n, d in objs)
    after = audit_replicas([a, b])
    assert after.ok and after.total_objects == 7
    assert sync_replicas([a, b]).objects_copied == 0  # idempotent


def test_sync_replaces_short_and_damaged_copies(tmp_path: Path) -> None:
    a, b = two_locals(tmp_path)
    rep = ReplicatedBackend([a, b])
    short_name, short_data = obj(4000)
    bad_name, bad_data = obj(4000)
    lost_name, lost_data = obj(4000)
    for name, data in ((short_name, short_data), (bad_name, bad_data), (lost_name, lost_data)):
        rep.put(name, data)
    (tmp_path / "one" / short_name).write_bytes(short_data[:100])  # torn copy on the first replica
    flipped = bytearray(bad_data)
    flipped[0] ^= 1
    (tmp_path / "two" / bad_name).write_bytes(bytes(flipped))  # same size, wrong bytes
    (tmp_path / "one" / lost_name).write_bytes(b"x")
    (tmp_path / "two" / lost_name).write_bytes(b"y")  # no good copy anywhere

    shallow = audit_replicas([a, b])
    assert shallow[a.location].size_mismatch == [short_name]
    assert shallow[b.location].corrupt == []  # a listing cannot see flipped bits
    deep = audit_replicas([a, b], deep=True)
    assert deep[b.location].corrupt == sorted([bad_name, lost_name])
    assert deep[a.location].corrupt == sorted([short_name, lost_name])

    report = sync_replicas([a, b], deep=True)
    assert report.unrecoverable == [lost_name]
    assert report.copied[a.location] == [short_name]
    assert report.copied[b.location] == [bad_name]
    assert a.get(short_name) == short_data and b.get(bad_name) == bad_data
    assert not report.ok


def test_list_and_exists_tolerate_an_unreachable_replica(tmp_path: Path) -> None:
    a, b = two_locals(tmp_path)
    rep = ReplicatedBackend([FaultyBackend(a, "list:every=1,exists:every=1"), b])
    name, data = obj()
    b.put(name, data)
    assert [i.name for i in rep.list("data")] == [name]
    assert rep.exists(name)
    dead = ReplicatedBackend([FaultyBackend(a, "list:every=1"), FaultyBackend(b, "list:every=1")])
    with pytest.raises(BackendError):
        list(dead.list("data"))


def test_configuration_errors(tmp_path: Path) -> None:
    a, _ = two_locals(tmp_path)
    with pytest.raises(UsageError):
        ReplicatedBackend([])
    with pytest.raises(UsageError):
        ReplicatedBackend([a], "sometimes")
    with pytest.raises(UsageError):
        ReplicatedBackend([a, LocalBackend(a.location)])


def test_sftp_server_stopped_midway(tmp_path: Path) -> None:
    """A fog node dies during use: reads go on from the local replica; sync catches it up later."""
    srv = start_sshd(tmp_path)
    try:
        fog = SFTPBackend.from_url(srv.url_for(str(tmp_path / "fog")), srv.options(timeout=5))
        disk = LocalBackend(str(tmp_path / "disk"))
        rep = ReplicatedBackend([fog, disk], "continue")
        rep.create()
        objs = [obj(10_000 + i) for i in range(8)]
        for name, data in objs[:4]:
            rep.put(name, data)
        srv.kill()
        t0 = time.monotonic()
        for name, data in objs[4:]:
            rep.put(name, data)  # the fog node is down: recorded, not fatal
        for name, data in objs:
            assert rep.get(name) == data
        assert time.monotonic() - t0 < 30
        assert fog.location in rep.lagging
        assert audit_replicas([fog, disk])[fog.location].error is not None

        srv.restart()
        report = sync_replicas(rep)
        assert report.ok, report
        assert sorted(report.copied[fog.location]) == sorted(n for n, _ in objs[4:])
        assert audit_replicas([fog, disk]).ok
        rep.close()
    finally:
        srv.stop()


def test_s3_server_killed_midway(tmp_path: Path) -> None:
    """Cloud storage disappears: every object still restores from the other replica."""
    srv = start_s3(tmp_path)
    try:
        cloud = S3Backend.from_url(srv.url_for("rep"), srv.options(retries=1))
        disk = LocalBackend(str(tmp_path / "disk"))
        rep = ReplicatedBackend([cloud, disk], "all")
        rep.create()
        objs = [obj(20_000 + i) for i in range(6)]
        for name, data in objs:
            rep.put(name, data)
        assert audit_replicas(rep).ok
        srv.kill()
        t0 = time.monotonic()
        for name, data in objs:
            assert rep.get(name) == data
        assert {i.name for i in rep.list("data")} == {n for n, _ in objs}
        assert time.monotonic() - t0 < 30
        with pytest.raises(BackendError):  # "all": a write that misses the cloud is an error
            rep.put(*obj())
    finally:
        srv.kill()
