"""Backends declare what they are and can do; wrappers forward it explicitly (issue 13.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from haeedge.backends.base import as_backend, is_repository_path, repository_local_paths
from haeedge.backends.faulty import FaultyBackend
from haeedge.backends.local import LocalBackend
from haeedge.backends.replicated import ReplicatedBackend, replica_set
from haeedge.backends.retry import RetryingBackend, is_refused
from haeedge.backends.sftp import SFTPBackend
from haeedge.errors import BackendError


def test_local_backend_declares_its_path_and_abilities(tmp_path: Path) -> None:
    b = LocalBackend(str(tmp_path / "repo"))
    p = b.properties
    assert p.local_paths == (str(tmp_path / "repo"),) and p.cheap_ranged_reads and p.spooled_writes
    assert p.replicas == 1 and b.unwrap() is None
    assert is_repository_path(b, tmp_path / "repo") and not is_repository_path(b, tmp_path)


def test_a_remote_path_is_never_a_local_repository_path() -> None:
    b = SFTPBackend.from_url("sftp://alice@fog-1.example:2222/srv/data")
    assert b.root == "/srv/data"
    assert repository_local_paths(b) == frozenset() and not is_repository_path(b, "/srv/data")
    assert not is_repository_path(RetryingBackend(b), "/srv/data")


def test_wrappers_forward_explicitly_and_unwrap(tmp_path: Path) -> None:
    local = LocalBackend(str(tmp_path / "repo"))
    wrapped = RetryingBackend(FaultyBackend(local))
    assert wrapped.properties.local_paths == local.properties.local_paths
    assert not wrapped.properties.spooled_writes and not wrapped.properties.cheap_ranged_reads
    assert as_backend(wrapped, LocalBackend) is local and as_backend(wrapped, ReplicatedBackend) is None
    with pytest.raises(AttributeError):
        wrapped.root  # noqa: B018 - no pass-through of the inner backend's attributes
    with pytest.raises(BackendError):
        wrapped.open_spool()


def test_replicated_set_declares_its_local_replicas(tmp_path: Path) -> None:
    local = LocalBackend(str(tmp_path / "local"))
    remote = SFTPBackend.from_url(f"sftp://alice@fog-1.example{tmp_path / 'remote'}")
    rep = ReplicatedBackend([RetryingBackend(remote), local])
    try:
        assert rep.properties.replicas == 2 and rep.properties.local_paths == (str(tmp_path / "local"),)
        assert is_repository_path(rep, tmp_path / "local") and not is_repository_path(rep, tmp_path / "remote")
        assert replica_set(rep) is rep and replica_set(local) is None
    finally:
        rep.close()


def test_refused_connections_are_recognised_through_wrapping() -> None:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as e:
            raise BackendError("x: cannot connect", transient=True) from e
    except BackendError as outer:
        assert is_refused(outer)
    assert not is_refused(BackendError("x: timed out", transient=True))


def test_every_wrapper_derives_from_the_one_forwarding_base(tmp_path: Path) -> None:
    from haeedge.backends.base import BackendWrapper
    from haeedge.backends.cold import ColdReadBackend
    from haeedge.backends.counting import ReadCountingBackend
    from haeedge.backends.dryrun import DryRunBackend
    from haeedge.backends.ratelimit import RateLimitedBackend

    local = LocalBackend(str(tmp_path / "repo"))
    local.create()
    local.put("config", b"c")
    for wrapper in (RetryingBackend(local), FaultyBackend(local), RateLimitedBackend(local, None, None),
                    ReadCountingBackend(local), ColdReadBackend(local), DryRunBackend(local)):
        assert isinstance(wrapper, BackendWrapper) and wrapper.unwrap() is local
        assert not hasattr(type(wrapper), "__getattr__")
        assert wrapper.get("config") == b"c" and wrapper.exists("config") and wrapper.stat("config").size == 1
        assert [i.name for i in wrapper.list("keys")] == []


def test_dry_run_backend_takes_writes_and_deletes_and_stores_nothing(tmp_path: Path) -> None:
    from haeedge.backends.dryrun import DryRunBackend

    local = LocalBackend(str(tmp_path / "repo"))
    local.create()
    local.put("keys/" + "a" * 64, b"slot")
    dry = DryRunBackend(local)
    assert not dry.properties.spooled_writes  # packs are put whole, so nothing is spooled on disk
    dry.put("index/" + "b" * 64, b"index")
    dry.delete("keys/" + "a" * 64)
    dry.create()
    assert (dry.puts, dry.bytes_put, dry.deletes) == (1, 5, 1)
    assert not local.exists("index/" + "b" * 64) and local.get("keys/" + "a" * 64) == b"slot"
    assert dry.get("keys/" + "a" * 64) == b"slot" and not dry.exists("index/" + "b" * 64)
    assert sorted(p.name for p in (tmp_path / "repo").rglob("*") if p.is_file()) == ["a" * 64]


def test_the_stack_walk_goes_through_wrappers_and_replicas_without_probing(tmp_path: Path) -> None:
    from haeedge.backends.base import backend_stack
    from haeedge.backends.s3policy import _leaf_locations, s3_backends

    local = LocalBackend(str(tmp_path / "local"))
    remote = SFTPBackend.from_url(f"sftp://alice@fog-1.example{tmp_path / 'remote'}")
    retrying = RetryingBackend(FaultyBackend(remote))
    rep = ReplicatedBackend([retrying, local])
    try:
        stack = list(backend_stack(rep))
        assert stack[0] is rep and {id(b) for b in stack} == {id(rep), id(retrying), id(retrying.inner), id(remote),
                                                             id(local)}
        assert sorted(_leaf_locations(rep)) == sorted([remote.location, local.location])
        assert s3_backends(rep) == [] and rep.replica_backends() == (retrying, local)
        assert local.replica_backends() == () and retrying.replica_backends() == ()
    finally:
        rep.close()
