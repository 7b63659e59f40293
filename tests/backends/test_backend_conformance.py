"""One contract, every backend: local, memory://, S3 (moto server), SFTP (sshd), replicated.

Each test here runs once per backend kind (see ``make_backend`` in conftest.py).
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from haeedge.backends.base import NAMESPACES, Backend, ObjectInfo, data_name
from haeedge.errors import BackendError, ObjectNotFound
from tests.support.backends import BackendFactory


def blob(size: int, seed: int = 0) -> tuple[str, bytes]:
    """Random bytes and their content address (sha256 hex), like real repository objects."""
    data = os.urandom(size) if size else b""
    return hashlib.sha256(data).hexdigest(), data


def names(b: Backend, namespace: str) -> set[str]:
    return {info.name for info in b.list(namespace)}


def test_create_makes_an_empty_repository(backend: Backend) -> None:
    for ns in NAMESPACES:
        assert list(backend.list(ns)) == []
    assert not backend.exists("config")


def test_create_refuses_a_location_that_is_not_empty(make_backend: BackendFactory) -> None:
    b = make_backend("x")
    b.create()
    b.put("config", b"format 1")
    again = make_backend("x")
    with pytest.raises(BackendError) as err:
        again.create()
    assert "not empty" in str(err.value)
    assert again.get("config") == b"format 1"  # nothing was destroyed


def test_put_get_roundtrip(backend: Backend) -> None:
    oid, data = blob(1000)
    backend.put(f"keys/{oid}", data)
    backend.put("config", b"\x00\xffconfig")
    assert backend.get(f"keys/{oid}") == data
    assert backend.get("config") == b"\x00\xffconfig"
    assert backend.stat(f"keys/{oid}") == ObjectInfo(f"keys/{oid}", 1000)
    assert backend.exists(f"keys/{oid}")


def test_put_accepts_memoryview_and_empty_objects(backend: Backend) -> None:
    data = os.urandom(5000)
    oid = hashlib.sha256(data[100:4100]).hexdigest()
    backend.put(f"index/{oid}", memoryview(data)[100:4100])
    assert backend.get(f"index/{oid}") == data[100:4100]
    empty_id, empty = blob(0)
    backend.put(f"locks/{empty_id}", empty)
    assert backend.get(f"locks/{empty_id}") == b""
    assert backend.stat(f"locks/{empty_id}").size == 0
    assert f"locks/{empty_id}" in names(backend, "locks")


def test_put_replaces_whole_object(backend: Backend) -> None:
    backend.put("config", b"A" * 10_000)
    backend.put("config", b"B" * 10)
    assert backend.get("config") == b"B" * 10
    assert backend.stat("config").size == 10


def test_put_never_replaces_an_object(backend: Backend, request: pytest.FixtureRequest) -> None:
    """Create-only writes (lock-free backups, docs/backends.md): the first object under a name stays."""
    if "rclone-s3" in request.node.name or "memory" in request.node.name:
        pytest.skip("this store ignores If-None-Match / has no create-only write (docs/backends.md)")
    oid, first = blob(5000, seed=1)
    backend.put(f"snapshots/{oid}", first)
    backend.put(f"snapshots/{oid}", b"other bytes under the same name")
    assert backend.get(f"snapshots/{oid}") == first
    assert backend.stat(f"snapshots/{oid}").size == len(first)
    assert names(backend, "snapshots") == {f"snapshots/{oid}"}


def test_get_range(backend: Backend) -> None:
    oid, data = blob(300_000)
    name = data_name(oid)
    backend.put(name, data)
    assert backend.get_range(name, 0, 10) == data[:10]
    assert backend.get_range(name, 12345, 100_000) == data[12345:112345]  # spans many SFTP requests
    assert backend.get_range(name, 299_990, 100) == data[299_990:]  # short only at the end
    assert backend.get_range(name, 300_000, 10) == b""
    assert backend.get_range(name, 400_000, 10) == b""
    assert backend.get_range(name, 5, 0) == b""


def test_missing_objects(backend: Backend) -> None:
    oid, _ = blob(10)
    for call in (lambda: backend.get(f"snapshots/{oid}"), lambda: backend.get_range(f"snapshots/{oid}", 0, 5),
                 lambda: backend.stat(f"snapshots/{oid}"), lambda: backend.get("config")):
        with pytest.raises(ObjectNotFound) as err:
            call()
        assert err.value.transient is False
    assert not backend.exists(f"snapshots/{oid}")
    backend.delete(f"snapshots/{oid}")  # absent: not an error


def test_error_messages_name_the_location(backend: Backend) -> None:
    with pytest.raises(ObjectNotFound) as err:
        backend.get("keys/" + "0" * 64)
    msg = str(err.value)
    location = backend.location
    if location.startswith("replicated("):
        location = location[len("replicated("):].split(",")[0]
    assert location in msg
    assert "\n" not in msg


def test_invalid_names_are_refused(backend: Backend) -> None:
    for bad in ("../escape", "/etc/passwd", "keys/../../x", "", "keys//x", "keys/", "keys/./x", "keys\\..\\x"):
        with pytest.raises(BackendError, match="invalid object name"):
            backend.put(bad, b"x")
        with pytest.raises(BackendError, match="invalid object name"):
            backend.get(bad)


def test_list_gives_full_names_and_sizes_per_namespace(backend: Backend) -> None:
    expected: dict[str, dict[str, int]] = {ns: {} for ns in NAMESPACES}
    for i, ns in enumerate(NAMESPACES):
        for j in range(3):
            oid, data = blob(100 + 10 * i + j)
            name = data_name(oid) if ns == "data" else f"{ns}/{oid}"
            backend.put(name, data)
            expected[ns][name] = len(data)
    backend.put("config", b"cfg")
    for ns in NAMESPACES:
        got = {info.name: info.size for info in backend.list(ns)}
        assert got == expected[ns]


def test_put_creates_missing_subfolders(backend: Backend) -> None:
    # create() makes data/00..ff; a put must still work where a folder is missing.
    oid, data = blob(100)
    backend.put(f"data/zz/{oid}", data)
    assert backend.get(f"data/zz/{oid}") == data
    assert f"data/zz/{oid}" in names(backend, "data")


def test_delete(backend: Backend) -> None:
    oid, data = blob(100)
    name = data_name(oid)
    backend.put(name, data)
    backend.delete(name)
    assert not backend.exists(name)
    assert name not in names(backend, "data")
    with pytest.raises(ObjectNotFound):
        backend.get(name)


def test_temporaries_of_interrupted_writes_are_not_listed(make_backend: BackendFactory) -> None:
    b = make_backend("t")
    b.create()
    oid, data = blob(64)
    b.put(f"index/{oid}", data)
    make_backend.plant_temporary("t", f"index/{oid}", data[:10])
    assert names(b, "index") == {f"index/{oid}"}


def test_large_object(backend: Backend) -> None:
    oid, data = blob(20 * 1024 * 1024)
    name = data_name(oid)
    backend.put(name, data)
    assert backend.stat(name).size == len(data)
    got = backend.get(name)
    assert len(got) == len(data) and hashlib.sha256(got).hexdigest() == oid
    tail = backend.get_range(name, len(data) - 5_000_000, 6_000_000)
    assert tail == data[-5_000_000:]


def test_concurrent_puts_and_gets(backend: Backend) -> None:
    objects = [blob(1000 + 997 * i) for i in range(48)]

    def put(item: tuple[str, bytes]) -> None:
        backend.put(data_name(item[0]), item[1])

    with ThreadPoolExecutor(max_workers=12) as ex:
        list(ex.map(put, objects))
    assert names(backend, "data") == {data_name(oid) for oid, _ in objects}

    def check(item: tuple[str, bytes]) -> bool:
        oid, data = item
        return backend.get(data_name(oid)) == data and backend.get_range(data_name(oid), 7, 500) == data[7:507]

    with ThreadPoolExecutor(max_workers=12) as ex:
        assert all(ex.map(check, objects))


def test_readers_never_see_a_partial_object(backend: Backend) -> None:
    """While an object is (re)written, readers get nothing or a whole version, never a prefix."""
    versions = [os.urandom(3 * 1024 * 1024), os.urandom(2 * 1024 * 1024 + 7)]
    stop = threading.Event()
    seen: list[str] = []
    problems: list[str] = []

    def writer() -> None:
        try:
            for i in range(6):
                backend.put("config", versions[i % 2])
        finally:
            stop.set()

    def reader() -> None:
        while not stop.is_set():
            try:
                data = backend.get("config")
            except ObjectNotFound:
                seen.append("absent")
                continue
            if data not in versions:
                problems.append(f"partial read of {len(data)} bytes")
            else:
                seen.append("whole")
            for ns in ("data", "index"):
                for info in backend.list(ns):
                    problems.append(f"unexpected listing entry {info.name}")

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not problems
    assert "whole" in seen or backend.get("config") in versions
