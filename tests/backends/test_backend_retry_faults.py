"""RetryingBackend driven by FaultyBackend (our own fault injector) over a real local backend."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import pytest

from haeedge.backends.faulty import FaultRule, FaultyBackend, parse_spec, wrap_from_env
from haeedge.backends.local import LocalBackend
from haeedge.backends.retry import RetryingBackend
from haeedge.errors import BackendError, ObjectNotFound, UsageError


class Sleeps:
    """Records requested delays instead of sleeping, so tests stay fast and can check backoff."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def local(tmp_path: Path) -> LocalBackend:
    b = LocalBackend(str(tmp_path / "repo"))
    b.create()
    return b


def obj(size: int = 1000) -> tuple[str, bytes]:
    data = os.urandom(size)
    return f"data/{hashlib.sha256(data).hexdigest()[:2]}/{hashlib.sha256(data).hexdigest()}", data


def test_transient_failures_are_retried_until_success(local: LocalBackend) -> None:
    name, data = obj()
    local.put(name, data)
    faulty = FaultyBackend(local, "get:first=3")
    sleeps = Sleeps()
    r = RetryingBackend(faulty, attempts=5, base_delay=0.1, max_delay=1.0, sleep=sleeps, rng=lambda: 1.0)
    assert r.get(name) == data
    assert faulty.calls["get"] == 4
    assert faulty.injected["get"] == 3
    assert r.retries == 3
    assert sleeps.delays == [0.1, 0.2, 0.4]  # exponential (jitter pinned to its maximum)


def test_jitter_stays_within_the_backoff_bound(local: LocalBackend) -> None:
    name, data = obj()
    local.put(name, data)
    sleeps = Sleeps()
    r = RetryingBackend(FaultyBackend(local, "get:first=6"), attempts=7, base_delay=0.5, max_delay=2.0, sleep=sleeps)
    assert r.get(name) == data
    bounds = [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert all(0 <= d <= b for d, b in zip(sleeps.delays, bounds, strict=True))
    assert len(set(sleeps.delays)) > 1  # jittered, not a fixed schedule


def test_raw_network_errors_are_retried(local: LocalBackend) -> None:
    name, data = obj()
    faulty = FaultyBackend(local, "put:first=2:raw")
    r = RetryingBackend(faulty, attempts=3, sleep=Sleeps())
    r.put(name, data)
    assert local.get(name) == data
    assert faulty.calls["put"] == 3


def test_permanent_errors_fail_at_once(local: LocalBackend) -> None:
    name, data = obj()
    faulty = FaultyBackend(local, "put:every=1:permanent")
    sleeps = Sleeps()
    r = RetryingBackend(faulty, attempts=5, sleep=sleeps)
    with pytest.raises(BackendError) as err:
        r.put(name, data)
    assert err.value.transient is False
    assert faulty.calls["put"] == 1
    assert sleeps.delays == []


def test_not_found_fails_at_once(local: LocalBackend) -> None:
    faulty = FaultyBackend(local)
    sleeps = Sleeps()
    r = RetryingBackend(faulty, attempts=5, sleep=sleeps)
    with pytest.raises(ObjectNotFound):
        r.get("keys/" + "0" * 64)
    assert faulty.calls["get"] == 1 and sleeps.delays == []


def test_attempts_are_bounded(local: LocalBackend, caplog: pytest.LogCaptureFixture) -> None:
    name, data = obj()
    local.put(name, data)
    faulty = FaultyBackend(local, "get:every=1")
    r = RetryingBackend(faulty, attempts=4, base_delay=0.01, sleep=Sleeps())
    with caplog.at_level(logging.WARNING, logger="haeedge.backends"):
        with pytest.raises(BackendError) as err:
            r.get(name)
    assert faulty.calls["get"] == 4
    assert err.value.transient is True
    assert "gave up after 4 attempts" in str(err.value)
    assert local.location in str(err.value)
    retries = [rec for rec in caplog.records if rec.name == "haeedge.backends" and "retry" in rec.getMessage()]
    assert len(retries) == 3
    assert all(local.location in rec.getMessage() for rec in retries)


def test_total_time_is_bounded(local: LocalBackend) -> None:
    name, data = obj()
    local.put(name, data)
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    faulty = FaultyBackend(local, "get:every=1")
    r = RetryingBackend(faulty, attempts=100, base_delay=1.0, max_delay=8.0, max_total=20.0,
                        sleep=sleep, clock=lambda: now[0], rng=lambda: 1.0)
    with pytest.raises(BackendError):
        r.get(name)
    assert now[0] <= 20.0
    assert faulty.calls["get"] == 5  # slept 1+2+4+8 = 15; another 8 would pass the budget


def test_real_sleeps_are_short_with_small_delays(local: LocalBackend) -> None:
    name, data = obj()
    local.put(name, data)
    r = RetryingBackend(FaultyBackend(local, "get:first=2"), attempts=3, base_delay=0.01, max_delay=0.02)
    t0 = time.monotonic()
    assert r.get(name) == data
    assert time.monotonic() - t0 < 1


def test_listing_is_retried_without_duplicates(local: LocalBackend) -> None:
    objs = [obj(100 + i) for i in range(5)]
    for name, data in objs:
        local.put(name, data)
    faulty = FaultyBackend(local, "list:first=1")
    r = RetryingBackend(faulty, attempts=3, sleep=Sleeps())
    listed = [i.name for i in r.list("data")]
    assert sorted(listed) == sorted(n for n, _ in objs)
    assert faulty.calls["list"] == 2


def test_create_is_not_retried(tmp_path: Path) -> None:
    faulty = FaultyBackend(LocalBackend(str(tmp_path / "r")), "create:first=1")
    with pytest.raises(BackendError):
        RetryingBackend(faulty, sleep=Sleeps()).create()
    assert faulty.calls["create"] == 1


# -- FaultyBackend itself ----------------------------------------------------------------


def test_spec_grammar() -> None:
    rules = parse_spec("put:every=3, get|get_range:truncate=0.5:match=data/; *:latency=0.01:first=2")
    assert rules[0] == FaultRule(frozenset({"put"}), every=3)
    assert rules[1].methods == {"get", "get_range"} and rules[1].effect == "truncate" and rules[1].value == 0.5
    assert rules[1].match == "data/"
    assert rules[2].effect == "latency" and rules[2].first == 2 and "list" in rules[2].methods
    assert parse_spec("get:once:permanent")[0].kind == "permanent"
    assert parse_spec("get:flip=3")[0].value == 3
    for bad in ("get", "fetch:every=2", "get:every=x", "get:bogus", "put:torn=2"):
        with pytest.raises(UsageError):
            parse_spec(bad)


def test_truncate_flip_and_torn(local: LocalBackend) -> None:
    name, data = obj(1000)
    local.put(name, data)
    assert FaultyBackend(local, "get:truncate=0.25").get(name) == data[:250]
    assert FaultyBackend(local, "get_range:truncate=0.5").get_range(name, 0, 100) == data[:50]
    flipped = FaultyBackend(local, "get:flip").get(name)
    assert len(flipped) == len(data) and flipped != data
    assert sum(bin(a ^ b).count("1") for a, b in zip(flipped, data, strict=True)) == 1
    other, odata = obj(1000)
    with pytest.raises(BackendError):
        FaultyBackend(local, "put:torn=0.3").put(other, odata)
    assert local.get(other) == odata[:300]  # what a non-atomic store would leave


def test_once_per_name_and_after(local: LocalBackend) -> None:
    a, adata = obj()
    b, bdata = obj()
    local.put(a, adata)
    local.put(b, bdata)
    f = FaultyBackend(local, "get:once")
    for name, data in ((a, adata), (b, bdata)):
        with pytest.raises(BackendError):
            f.get(name)
        assert f.get(name) == data
    dying = FaultyBackend(local, "stat:after=2:permanent")
    dying.stat(a)
    dying.stat(b)
    with pytest.raises(BackendError):
        dying.stat(a)


def test_latency_and_missing(local: LocalBackend) -> None:
    name, data = obj()
    local.put(name, data)
    sleeps = Sleeps()
    f = FaultyBackend(local, "get:latency=0.25", sleep=sleeps)
    assert f.get(name) == data
    assert sleeps.delays == [0.25]
    with pytest.raises(ObjectNotFound):
        FaultyBackend(local, "get:missing").get(name)


def test_wrap_from_env(local: LocalBackend) -> None:
    assert wrap_from_env(local, {}) is local
    wrapped = wrap_from_env(local, {"HAEEDGE_FAULTS": "put:every=2", "HAEEDGE_FAULTS_SEED": "7"})
    assert isinstance(wrapped, FaultyBackend) and wrapped.inner is local
    name, data = obj()
    wrapped.put(name, data)
    with pytest.raises(BackendError):
        wrapped.put(name, data)
    with pytest.raises(UsageError):
        wrap_from_env(local, {"HAEEDGE_FAULTS": "nonsense"})
