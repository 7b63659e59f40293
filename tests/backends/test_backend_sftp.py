"""SFTP specifics against a real OpenSSH sshd: host keys, auth, URLs, connection reuse and loss."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from haeedge.backends import open_backend
from haeedge.backends.sftp import HostKeyChanged, HostKeyUnknown, SFTPBackend
from haeedge.errors import BackendError, ObjectNotFound, UsageError
from tests.support.servers import SshdServer, start_sshd


def ssh_fingerprint(pub_file: str) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", pub_file], capture_output=True, text=True,
                         check=True, stdin=subprocess.DEVNULL, timeout=30).stdout
    return out.split()[1]


def test_unknown_host_key_is_refused_with_its_fingerprint(sshd: SshdServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    b = SFTPBackend.from_url(sshd.url_for(str(tmp_path / "r")), sshd.options(known_hosts=str(empty)))
    with pytest.raises(HostKeyUnknown) as err:
        b.create()
    msg = str(err.value)
    assert f"[127.0.0.1]:{sshd.port}" in msg
    assert ssh_fingerprint(sshd.host_key + ".pub") in msg
    assert "accept_new_host_key" in msg
    assert "\n" not in msg
    assert err.value.transient is False
    assert empty.read_text() == ""  # nothing was trusted behind our back
    assert not (tmp_path / "r").exists()


def test_accept_new_host_key_records_it(sshd: SshdServer, tmp_path: Path) -> None:
    kh = tmp_path / "ssh" / "known_hosts"  # directory does not exist yet
    url = sshd.url_for(str(tmp_path / "r"))
    b = SFTPBackend.from_url(url, sshd.options(known_hosts=str(kh), accept_new_host_key="true"))
    b.create()
    b.close()
    assert kh.read_text() == sshd.host_key_line()
    # From now on the key is known: no accept option needed.
    again = SFTPBackend.from_url(url, sshd.options(known_hosts=str(kh)))
    assert list(again.list("keys")) == []
    again.close()


def test_changed_host_key_is_refused_loudly(sshd: SshdServer, tmp_path: Path) -> None:
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True,
                   capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    kind, key = (tmp_path / "other_host_key.pub").read_text().split()[:2]
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    for accept in (False, True):  # accepting new keys never accepts a changed one
        b = SFTPBackend.from_url(sshd.url_for(str(tmp_path / "r")),
                                 sshd.options(known_hosts=str(kh), accept_new_host_key=accept))
        with pytest.raises(HostKeyChanged) as err:
            b.stat("config")
        msg = str(err.value)
        assert "CHANGED" in msg and "man-in-the-middle" in msg
        assert ssh_fingerprint(sshd.host_key + ".pub") in msg
        assert ssh_fingerprint(str(other) + ".pub") in msg
        assert not isinstance(err.value, HostKeyUnknown)
    assert kh.read_text() == f"[127.0.0.1]:{sshd.port} {kind} {key}\n"


def test_wrong_key_is_a_permanent_auth_error(sshd: SshdServer, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True,
                   capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    url = sshd.url_for(str(tmp_path / "r"))
    b = SFTPBackend.from_url(url, sshd.options(key_file=str(stranger)))
    with pytest.raises(BackendError) as err:
        b.get("config")
    assert err.value.transient is False
    assert not isinstance(err.value, ObjectNotFound)
    assert "authentication failed" in str(err.value)
    assert str(err.value).startswith(f"sftp://root@127.0.0.1:{sshd.port}")
    assert stranger.read_text().splitlines()[1] not in str(err.value)


def test_refused_connection_is_transient(tmp_path: Path) -> None:
    srv = start_sshd(tmp_path)
    srv.stop()
    b = SFTPBackend.from_url(srv.url_for(str(tmp_path / "r")), srv.options())
    t0 = time.monotonic()
    with pytest.raises(BackendError) as err:
        b.stat("config")
    assert err.value.transient is True
    assert f"127.0.0.1:{srv.port}" in str(err.value)
    assert time.monotonic() - t0 < 10


def test_one_connection_serves_many_threads(tmp_path: Path) -> None:
    srv = start_sshd(tmp_path)
    try:
        b = SFTPBackend.from_url(srv.url_for(str(tmp_path / "r")), srv.options(max_channels=4))
        b.create()
        payloads = {f"locks/{i:064x}": bytes([i]) * (i * 1000) for i in range(40)}
        with ThreadPoolExecutor(max_workers=8) as ex:
            list(ex.map(lambda kv: b.put(*kv), payloads.items()))
            got = dict(zip(payloads, ex.map(b.get, payloads), strict=True))
        assert got == payloads
        b.close()
        assert srv.log.count("Accepted publickey") == 1
    finally:
        srv.stop()


def test_reconnects_after_the_server_comes_back(tmp_path: Path) -> None:
    srv = start_sshd(tmp_path)
    try:
        b = SFTPBackend.from_url(srv.url_for(str(tmp_path / "r")), srv.options())
        b.create()
        b.put("config", b"one")
        srv.kill()  # every connection dies
        with pytest.raises(BackendError) as err:
            b.get("config")
        assert err.value.transient is True
        srv.restart()
        assert b.get("config") == b"one"
        b.put("keys/" + "a" * 64, b"two")
        assert b.get("keys/" + "a" * 64) == b"two"
        b.close()
    finally:
        srv.stop()


def test_home_relative_path(sshd: SshdServer) -> None:
    name = f"haeedge-test-{uuid.uuid4().hex[:8]}"
    home = Path("/root")  # the test server logs in as root
    b = open_backend(f"sftp://root@127.0.0.1:{sshd.port}/~/{name}/repo", sshd.options())
    try:
        assert isinstance(b, SFTPBackend)
        b.create()
        b.put("config", b"home")
        assert (home / name / "repo" / "config").read_bytes() == b"home"
        assert b.location == f"sftp://root@127.0.0.1:{sshd.port}/~/{name}/repo"
    finally:
        b.close()
        shutil.rmtree(home / name, ignore_errors=True)


def test_url_and_options() -> None:
    b = SFTPBackend.from_url("sftp://alice@fog-1.example:2222/srv/backup", {"known_hosts": "/nonexistent"})
    assert (b.user, b.host, b.port, b.root) == ("alice", "fog-1.example", 2222, "/srv/backup")
    assert b.location == "sftp://alice@fog-1.example:2222/srv/backup"
    b = SFTPBackend.from_url("sftp://fog-1.example/srv/backup", {"user": "bob", "port": "2200"})
    assert (b.user, b.port) == ("bob", 2200)
    b = SFTPBackend.from_url("sftp://carol@[::1]/x", {})
    assert b.location == "sftp://carol@[::1]:22/x"
    with pytest.raises(UsageError):
        SFTPBackend.from_url("sftp://alice:secret@host/x", {})
    with pytest.raises(UsageError):
        SFTPBackend.from_url("sftp://host/x", {"pasword": "typo"})
    with pytest.raises(UsageError):
        SFTPBackend.from_url("sftp://host", {})


def test_leftover_temporaries_can_be_removed(sshd: SshdServer, tmp_path: Path) -> None:
    b = SFTPBackend.from_url(sshd.url_for(str(tmp_path / "r")), sshd.options())
    b.create()
    (tmp_path / "r" / "index" / ".tmp-abc-123").write_bytes(b"partial")
    assert list(b.list("index")) == []
    assert b.remove_temporaries() == 1
    assert not (tmp_path / "r" / "index" / ".tmp-abc-123").exists()
    b.close()


def test_encrypted_key_file_needs_its_passphrase(sshd: SshdServer, tmp_path: Path) -> None:
    key = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "open sesame", "-f", str(key)], check=True,
                   capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    with open(Path(sshd.key_file).parent / "authorized_keys", "a") as f:
        f.write((tmp_path / "locked.pub").read_text())
    url = sshd.url_for(str(tmp_path / "r"))
    with pytest.raises(BackendError) as err:
        SFTPBackend.from_url(url, sshd.options(key_file=str(key))).stat("config")
    assert err.value.transient is False
    assert "encrypted" in str(err.value) and "key_passphrase" in str(err.value)
    assert "open sesame" not in str(err.value)
    b = SFTPBackend.from_url(url, sshd.options(key_file=str(key), key_passphrase="open sesame"))
    b.create()
    b.put("config", b"unlocked")
    assert b.get("config") == b"unlocked"
    b.close()
