"""SFTP backend ("fog nodes": any machine with sshd) over paramiko.

Location: ``sftp://[user@]host[:port]/absolute/path``. A path that starts with
``/~/`` (or is exactly ``/~``) is relative to the login (home) directory:
``sftp://node/~/backups/repo`` stores under ``$HOME/backups/repo`` of that user.

Options (a dict, all optional):

- ``user``, ``port``: override what the URL says (URL user, else the local user;
  port 22).
- ``key_file``: a private key file; without it, keys from ssh-agent and the
  usual ``~/.ssh/id_*`` files are tried. ``key_passphrase`` unlocks it.
- ``use_agent`` (default true): also try keys held by ssh-agent.
- ``known_hosts``: the known-hosts file to verify and record host keys in
  (default ``~/.ssh/known_hosts``; ``/etc/ssh/ssh_known_hosts`` is also read
  when the default is used).
- ``accept_new_host_key`` (default false): trust and record the key of a host
  that is not yet known (like OpenSSH ``StrictHostKeyChecking=accept-new``).
  A key that *changed* is refused regardless.
- ``timeout`` (seconds, default 30): connect, banner, auth and per-request timeout.
- ``max_channels`` (default 4): SFTP channels opened over the one SSH connection,
  i.e. how many transfers run at once.
- ``request_size``: bytes per SFTP read/write request (default: 255 KiB for
  OpenSSH 9+, 64 KiB for older OpenSSH, else 32 KiB).
- ``fsync`` (default true): ask the server to fsync each upload before it is
  renamed into place (OpenSSH ``fsync@openssh.com``; skipped when unsupported).

Why one connection with several channels: one TCP + key exchange + auth, and
the SSH transport multiplexes channels; each channel is used by one thread at
a time, so concurrent ``get``/``put`` calls do not serialise on one request
stream. A dropped connection is re-established on the next call.

Host keys are verified by default. An unknown host raises ``HostKeyUnknown``
(with the SHA256 fingerprint and how to accept it); a changed key raises
``HostKeyChanged``, a loud, distinct error that accepting cannot silence.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import getpass
import hashlib
import logging
import os
import posixpath
import re
import socket
import stat as stat_mod
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import paramiko
from paramiko.sftp import CMD_EXTENDED

from haeedge.backends.base import NAMESPACES, ObjectInfo, StorageBackend, check_name, foreign_entries, not_empty_error
from haeedge.errors import BackendError, ObjectNotFound, UsageError

log = logging.getLogger("haeedge.backends")

T = TypeVar("T")

TMP_PREFIX = ".tmp-"
_WRITE_SLICE = 1 << 20
_DEFAULT_REQUEST_SIZE = 32768  # what every SFTP server must accept
_PREFETCH_REQUESTS = 64


def _request_size_for(banner: str) -> int:
    """Largest read/write request the server is known to honour in full.

    paramiko uses 32 KiB requests; OpenSSH 9 serves up to 255 KiB per request
    (its limits@openssh.com value) and OpenSSH before that 64 KiB, which makes
    downloads several times faster. A server that answers short reads stays
    correct (paramiko re-requests the rest), only slower.
    """
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", banner)
    if not m:
        return _DEFAULT_REQUEST_SIZE
    return 261120 if int(m.group(1)) >= 9 else 65536


class HostKeyUnknown(BackendError):
    """The server's host key is not in known_hosts (and accepting was not allowed)."""


class HostKeyChanged(BackendError):
    """The server presented a different key than known_hosts records: possible attack."""


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _host_entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown hosts with a clear error, or record them when allowed."""

    def __init__(self, backend: SFTPBackend):
        self.backend = backend

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        b = self.backend
        fp = fingerprint(key)
        if not b.accept_new_host_key:
            raise HostKeyUnknown(
                f"{b.location}: unknown SSH host key for {hostname} ({key.get_name()} {fp}), "
                f"not in {b.known_hosts}; verify the fingerprint, then connect once with "
                "accept_new_host_key=true",
                hint="check the fingerprint with the server's administrator (ssh-keygen -lf "
                "/etc/ssh/ssh_host_*_key.pub on the server), then pass the accept_new_host_key "
                "option once, or add the key to known_hosts yourself",
            )
        client.get_host_keys().add(hostname, key.get_name(), key)
        b._record_host_key(hostname, key)
        log.warning("%s: accepted new SSH host key for %s (%s %s), recorded in %s",
                    b.location, hostname, key.get_name(), fp, b.known_hosts)


class SFTPBackend(StorageBackend):
    """A repository in a directory on an SSH server. Thread-safe.

    Its ``root`` is a path on the server: it names no local directory, so the
    default properties (no local path, no spooled writes) are this backend's.
    """

    def __init__(
        self,
        host: str,
        path: str,
        *,
        user: str | None = None,
        port: int = 22,
        key_file: str | None = None,
        key_passphrase: str | None = None,
        use_agent: bool = True,
        known_hosts: str | None = None,
        accept_new_host_key: bool = False,
        timeout: float = 30.0,
        max_channels: int = 4,
        fsync: bool = True,
        request_size: int | None = None,
    ):
        if not host:
            raise UsageError("sftp location needs a host: sftp://user@host/path")
        if not path:
            raise UsageError("sftp location needs a path: sftp://user@host/path (or /~/path for home)")
        self.host = host
        self.port = int(port)
        self.user = user or getpass.getuser()
        self.key_file = os.path.expanduser(key_file) if key_file else None
        self._key_passphrase = key_passphrase
        self.use_agent = use_agent
        self._default_known_hosts = known_hosts is None
        self.known_hosts = os.path.expanduser(known_hosts or "~/.ssh/known_hosts")
        self.accept_new_host_key = accept_new_host_key
        self.timeout = float(timeout)
        self.max_channels = max(1, int(max_channels))
        self.fsync = fsync
        self._request_size_option = int(request_size) if request_size else None
        self.request_size = self._request_size_option or _DEFAULT_REQUEST_SIZE
        # "/~" and "/~/x" are relative to the login directory; anything else is absolute.
        if path == "/~" or path.startswith("/~/"):
            self._rel = path[3:].strip("/")
            self._home_relative = True
        else:
            self._rel = posixpath.normpath(path)
            self._home_relative = False
        bracket = f"[{host}]" if ":" in host else host
        self.location = f"sftp://{self.user}@{bracket}:{self.port}{path}"
        self.root: str | None = None if self._home_relative else self._rel

        self._lock = threading.Lock()
        self._known_hosts_lock = threading.Lock()
        self._client: paramiko.SSHClient | None = None
        self._generation = 0
        self._idle: list[tuple[int, paramiko.SFTPClient]] = []
        self._slots = threading.BoundedSemaphore(self.max_channels)
        self._fsync_supported = True

    @classmethod
    def from_url(cls, url: str, options: dict | None = None) -> SFTPBackend:
        """Build from ``sftp://user@host:port/path`` plus the options documented above."""
        options = dict(options or {})
        parts = urlsplit(url)
        if parts.scheme.lower() != "sftp":
            raise UsageError(f"not an sftp:// location: {url}")
        if parts.password:
            raise UsageError("sftp locations take no password in the URL; use a key (key_file or ssh-agent)")
        try:
            url_port = parts.port
        except ValueError as e:
            raise UsageError(f"bad port in sftp location: {e}") from e
        known = {"user", "port", "key_file", "key_passphrase", "use_agent", "known_hosts",
                 "accept_new_host_key", "timeout", "max_channels", "fsync", "request_size"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UsageError(f"unknown sftp option(s): {', '.join(unknown)}")
        return cls(
            parts.hostname or "",
            unquote(parts.path),
            user=options.get("user") or (unquote(parts.username) if parts.username else None),
            port=int(options.get("port") or url_port or 22),
            key_file=options.get("key_file"),
            key_passphrase=options.get("key_passphrase"),
            use_agent=_bool(options.get("use_agent", True)),
            known_hosts=options.get("known_hosts"),
            accept_new_host_key=_bool(options.get("accept_new_host_key", False)),
            timeout=float(options.get("timeout", 30.0)),
            max_channels=int(options.get("max_channels", 4)),
            fsync=_bool(options.get("fsync", True)),
            request_size=int(options["request_size"]) if options.get("request_size") else None,
        )

    # -- connection management ---------------------------------------------------------

    def _connect(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if self._default_known_hosts and os.path.exists("/etc/ssh/ssh_known_hosts"):
            try:
                client.load_system_host_keys("/etc/ssh/ssh_known_hosts")
            except OSError:
                pass
        if os.path.exists(self.known_hosts):
            try:
                client.get_host_keys().load(self.known_hosts)
            except (OSError, paramiko.SSHException) as e:
                raise BackendError(f"{self.location}: cannot read known_hosts {self.known_hosts}: {e}") from e
        client.set_missing_host_key_policy(_HostKeyPolicy(self))
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                key_filename=self.key_file,
                passphrase=self._key_passphrase,
                allow_agent=self.use_agent,
                look_for_keys=self.key_file is None,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
                channel_timeout=self.timeout,
            )
        except Exception as e:
            client.close()
            err = self._connect_error(e)
            if err is e:
                raise
            raise err from e
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(30)
            if self._request_size_option is None:
                self.request_size = _request_size_for(transport.remote_version or "")
        return client

    def _connect_error(self, e: Exception) -> Exception:
        if isinstance(e, BackendError):
            return e
        if isinstance(e, paramiko.BadHostKeyException):
            return HostKeyChanged(
                f"{self.location}: WARNING: THE SSH HOST KEY OF {_host_entry(self.host, self.port)} HAS "
                f"CHANGED (possible man-in-the-middle attack): it offered {e.key.get_name()} "
                f"{fingerprint(e.key)}, {self.known_hosts} expects {fingerprint(e.expected_key)}; "
                "refusing to connect",
                hint="if the server was legitimately reinstalled, remove its old line from known_hosts "
                f"(ssh-keygen -R '{_host_entry(self.host, self.port)}' -f {self.known_hosts}) and verify "
                "the new fingerprint",
            )
        if isinstance(e, paramiko.PasswordRequiredException):
            return BackendError(f"{self.location}: key file {self.key_file} is encrypted; pass key_passphrase")
        if isinstance(e, paramiko.AuthenticationException):
            how = f"key {self.key_file}" if self.key_file else "ssh-agent and ~/.ssh keys"
            return BackendError(
                f"{self.location}: SSH authentication failed for user {self.user} ({how}): {e}",
                hint="check the key_file option or the keys loaded in ssh-agent, and the server's authorized_keys",
            )
        if isinstance(e, socket.gaierror):
            return BackendError(f"{self.location}: cannot resolve host {self.host}: {e.strerror}",
                                transient=e.errno == socket.EAI_AGAIN)
        if isinstance(e, (paramiko.SSHException, OSError, EOFError)):
            detail = getattr(e, "strerror", None) or str(e) or type(e).__name__
            return BackendError(f"{self.location}: cannot connect to {self.host}:{self.port}: {detail}",
                                transient=True)
        return e

    def _record_host_key(self, hostname: str, key: paramiko.PKey) -> None:
        """Append (never rewrite) a known_hosts line, so existing entries stay untouched."""
        with self._known_hosts_lock:
            directory = os.path.dirname(self.known_hosts)
            if directory:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(self.known_hosts, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")

    def _transport_alive(self) -> bool:
        client = self._client
        t = client.get_transport() if client is not None else None
        return t is not None and t.is_active()

    def _checkout(self) -> tuple[int, paramiko.SFTPClient]:
        with self._lock:
            if not self._transport_alive():
                self._reset_locked()
                self._client = self._connect()
                self._generation += 1
            while self._idle:
                gen, sftp = self._idle.pop()
                if gen == self._generation and not sftp.get_channel().closed:
                    return gen, sftp
                _quiet_close(sftp)
            assert self._client is not None
            transport = self._client.get_transport()
            assert transport is not None
            try:
                sftp = paramiko.SFTPClient.from_transport(transport, window_size=1 << 24)
            except (paramiko.SSHException, OSError, EOFError) as e:
                self._reset_locked()
                raise BackendError(f"{self.location}: cannot open an SFTP channel: {e}", transient=True) from e
            if sftp is None:
                raise BackendError(f"{self.location}: cannot open an SFTP channel", transient=True)
            sftp.get_channel().settimeout(self.timeout)
            if self.root is None:
                home = sftp.normalize(".")
                self.root = posixpath.join(home, self._rel) if self._rel else home
            return self._generation, sftp

    def _checkin(self, gen: int, sftp: paramiko.SFTPClient, healthy: bool) -> None:
        with self._lock:
            if healthy and gen == self._generation and not sftp.get_channel().closed:
                self._idle.append((gen, sftp))
                return
        _quiet_close(sftp)
        if not self._transport_alive():
            with self._lock:
                if gen == self._generation:
                    self._reset_locked()

    def _reset_locked(self) -> None:
        for _gen, sftp in self._idle:
            _quiet_close(sftp)
        self._idle.clear()
        if self._client is not None:
            with contextlib.suppress(Exception):  # closing a dead connection may fail any way
                self._client.close()
            self._client = None

    def _run(self, action: str, name: str | None, fn: Callable[[paramiko.SFTPClient], T]) -> T:
        """Run ``fn`` with a pooled channel, translating every failure into a BackendError."""
        if not self._slots.acquire(timeout=max(self.timeout * 4, 60.0)):
            raise BackendError(f"{self.location}: timed out waiting for a free SFTP channel", transient=True)
        try:
            try:
                gen, sftp = self._checkout()
            except BackendError:
                raise
            except Exception as e:
                raise self._error(e, "connect", None) from e
            healthy = False
            try:
                result = fn(sftp)
                healthy = True
                return result
            except BackendError:
                healthy = True
                raise
            except Exception as e:
                healthy = isinstance(e, OSError) and e.errno is not None and self._transport_alive()
                raise self._error(e, action, name) from e
            finally:
                self._checkin(gen, sftp, healthy)
        finally:
            self._slots.release()

    def _error(self, e: BaseException, action: str, name: str | None) -> BackendError:
        what = f"{action} {name}" if name else action
        if isinstance(e, OSError) and e.errno == errno.ENOENT:
            return ObjectNotFound(f"{self.location}: {name or self.root} does not exist")
        if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM):
            return BackendError(f"{self.location}: cannot {what}: permission denied")
        if isinstance(e, (TimeoutError, socket.timeout)):
            return BackendError(f"{self.location}: cannot {what}: timed out", transient=True)
        if (isinstance(e, (ConnectionError, EOFError, paramiko.SSHException))
                or not self._transport_alive()):
            detail = str(e) or type(e).__name__
            return BackendError(f"{self.location}: cannot {what}: connection lost ({detail})", transient=True)
        detail = getattr(e, "strerror", None) or str(e) or type(e).__name__
        return BackendError(f"{self.location}: cannot {what}: {detail}")

    # -- paths ---------------------------------------------------------------------------

    def _root(self) -> str:
        if self.root is None:  # home-relative: resolved on first connect
            self._run("connect", None, lambda sftp: None)
        assert self.root is not None
        return self.root

    def _path(self, name: str) -> str:
        check_name(self.location, name)
        return posixpath.join(self._root(), name)

    # -- the Backend protocol ------------------------------------------------------------

    def create(self) -> None:
        root = self._root()

        def check_and_make_root(sftp: paramiko.SFTPClient) -> None:
            try:
                st = sftp.stat(root)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
                _makedirs(sftp, root)
                return
            if not stat_mod.S_ISDIR(st.st_mode or 0):
                raise BackendError(f"{self.location}: {root} exists and is not a directory")
            if not sftp.listdir(root):
                return
            found = foreign_entries(lambda rel: [(a.filename, stat_mod.S_ISDIR(a.st_mode or 0))
                                                 for a in sftp.listdir_attr(posixpath.join(root, rel))])
            if found:
                raise not_empty_error(self.location, root, found)

        self._run("create repository", None, check_and_make_root)
        dirs = [posixpath.join(root, ns) for ns in NAMESPACES]
        self._run("create repository", None, lambda sftp: [_mkdir(sftp, d) for d in dirs])
        subdirs = [posixpath.join(root, "data", f"{i:02x}") for i in range(256)]
        batches = [subdirs[i :: self.max_channels] for i in range(self.max_channels)]
        with ThreadPoolExecutor(max_workers=self.max_channels) as ex:
            futures = [ex.submit(self._run, "create repository", None,
                                 lambda sftp, b=batch: [_mkdir(sftp, d) for d in b]) for batch in batches]
            for f in futures:
                f.result()

    def put(self, name: str, data: bytes | memoryview) -> None:
        path = self._path(name)
        view = memoryview(data).cast("B")
        size = view.nbytes
        directory, base = posixpath.split(path)
        tmp = posixpath.join(directory, f"{TMP_PREFIX}{base}-{os.urandom(6).hex()}")

        def upload(sftp: paramiko.SFTPClient) -> None:
            try:
                f = sftp.open(tmp, "wb")
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
                _makedirs(sftp, directory)
                f = sftp.open(tmp, "wb")
            try:
                try:
                    f.MAX_REQUEST_SIZE = self.request_size
                    f.set_pipelined(True)
                    for i in range(0, size, _WRITE_SLICE):
                        f.write(bytes(view[i : i + _WRITE_SLICE]))
                    f.flush()
                    if self.fsync and self._fsync_supported:
                        self._fsync(sftp, f)
                finally:
                    f.close()
                got = sftp.stat(tmp).st_size
                if got != size:
                    raise BackendError(
                        f"{self.location}: upload of {name} was truncated ({got} of {size} bytes)",
                        transient=True,
                    )
                # Create-only: SFTP's plain rename never replaces an existing name (OpenSSH links
                # the new name, then unlinks the old), unlike posix-rename@openssh.com. The name
                # existing means another host stored the same bytes (names are content hashes).
                try:
                    if name == "config":  # not a content hash: replaced (as init's own retry needs)
                        _replace(sftp, tmp, path)
                    else:
                        sftp.rename(tmp, path)
                except OSError:
                    try:
                        exists = stat_mod.S_ISREG(sftp.stat(path).st_mode or 0)
                    except OSError:
                        exists = False
                    if not exists:
                        raise
                    sftp.remove(tmp)
            except BaseException:
                with contextlib.suppress(Exception):  # best effort; the connection may be gone
                    sftp.remove(tmp)
                raise

        self._run("write", name, upload)

    def _fsync(self, sftp: paramiko.SFTPClient, f: paramiko.SFTPFile) -> None:
        try:
            sftp._request(CMD_EXTENDED, "fsync@openssh.com", f.handle)
        except OSError as e:
            if e.errno is None and "unsupported" in str(e).lower():
                self._fsync_supported = False
            else:
                raise

    def get(self, name: str) -> bytes:
        path = self._path(name)

        def download(sftp: paramiko.SFTPClient) -> bytes:
            with sftp.open(path, "rb") as f:
                f.MAX_REQUEST_SIZE = self.request_size
                size = f.stat().st_size or 0
                data = b"".join(f.readv([(0, size)], _PREFETCH_REQUESTS)) if size else b""
            if len(data) != size:
                raise BackendError(f"{self.location}: short read of {name} ({len(data)} of {size} bytes)",
                                   transient=True)
            return data

        return self._run("read", name, download)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise BackendError(f"{self.location}: invalid range {offset}+{length} of {name}")
        path = self._path(name)

        def download(sftp: paramiko.SFTPClient) -> bytes:
            with sftp.open(path, "rb") as f:
                f.MAX_REQUEST_SIZE = self.request_size
                if length == 0:
                    return b""
                if length <= self.request_size:
                    f.seek(offset)
                    return f.read(length)
                size = f.stat().st_size or 0
                n = max(0, min(length, size - offset))
                if n == 0:
                    return b""
                return b"".join(f.readv([(offset, n)], _PREFETCH_REQUESTS))

        return self._run("read", name, download)

    def list(self, namespace: str) -> Iterator[ObjectInfo]:
        if namespace not in NAMESPACES:
            raise BackendError(f"{self.location}: unknown namespace {namespace!r}")
        root = self._root()
        base = posixpath.join(root, namespace)

        def listdir(directory: str) -> list[paramiko.SFTPAttributes]:
            def op(sftp: paramiko.SFTPClient) -> list[paramiko.SFTPAttributes]:
                try:
                    return sftp.listdir_attr(directory)
                except OSError as e:
                    if e.errno == errno.ENOENT:
                        return []
                    raise
            return self._run("list", directory[len(root) + 1 :], op)

        found: list[ObjectInfo] = []
        pending = [base]
        with ThreadPoolExecutor(max_workers=self.max_channels) as ex:
            while pending:
                batch = pending
                pending = []
                for directory, entries in zip(batch, ex.map(listdir, batch), strict=True):
                    for a in entries:
                        if a.filename.startswith(TMP_PREFIX) or a.filename in (".", ".."):
                            continue
                        full = posixpath.join(directory, a.filename)
                        if stat_mod.S_ISDIR(a.st_mode or 0):
                            pending.append(full)
                        elif stat_mod.S_ISREG(a.st_mode or 0):
                            found.append(ObjectInfo(full[len(root) + 1 :], a.st_size or 0, a.st_mtime))
        yield from found

    def delete(self, name: str) -> None:
        path = self._path(name)

        def op(sftp: paramiko.SFTPClient) -> None:
            try:
                sftp.remove(path)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise

        self._run("delete", name, op)

    def stat(self, name: str) -> ObjectInfo:
        path = self._path(name)

        def op(sftp: paramiko.SFTPClient) -> ObjectInfo:
            st = sftp.stat(path)
            if stat_mod.S_ISDIR(st.st_mode or 0):
                raise OSError(errno.ENOENT, "is a directory")
            return ObjectInfo(name, st.st_size or 0, st.st_mtime)

        return self._run("stat", name, op)

    def close(self) -> None:
        with self._lock:
            self._reset_locked()

    def remove_temporaries(self, min_age: float | None = None) -> int:
        """Delete leftovers of interrupted uploads (only those idle for ``min_age`` seconds; prune passes an
        age far above any clock skew it accepts); returns how many."""
        root = self._root()
        n = 0
        cutoff = time.time() - (min_age or 0)

        def walk(sftp: paramiko.SFTPClient) -> int:
            count = 0
            stack = [root]
            while stack:
                d = stack.pop()
                try:
                    entries = sftp.listdir_attr(d)
                except OSError:
                    continue
                for a in entries:
                    full = posixpath.join(d, a.filename)
                    if stat_mod.S_ISDIR(a.st_mode or 0):
                        stack.append(full)
                    elif a.filename.startswith(TMP_PREFIX):
                        if min_age is not None and (a.st_mtime or 0) > cutoff:
                            continue
                        try:
                            sftp.remove(full)
                            count += 1
                        except OSError:
                            pass
            return count

        n = self._run("remove temporaries", None, walk)
        return n

    def __repr__(self) -> str:
        return f"SFTPBackend({self.location!r})"


def _quiet_close(sftp: paramiko.SFTPClient) -> None:
    with contextlib.suppress(Exception):  # the channel may already be dead
        sftp.close()


def _replace(sftp: paramiko.SFTPClient, tmp: str, path: str) -> None:
    """Rename ``tmp`` over ``path``: posix-rename@openssh.com, else remove then rename."""
    try:
        sftp.posix_rename(tmp, path)
    except OSError as e:
        if e.errno is not None:
            raise
        with contextlib.suppress(OSError):
            sftp.remove(path)
        sftp.rename(tmp, path)


def _mkdir(sftp: paramiko.SFTPClient, path: str) -> None:
    try:
        sftp.mkdir(path, 0o700)
    except OSError:
        # OpenSSH answers a plain "Failure" for an existing directory; check before failing.
        st = sftp.stat(path)
        if not stat_mod.S_ISDIR(st.st_mode or 0):
            raise


def _makedirs(sftp: paramiko.SFTPClient, path: str) -> None:
    missing: list[str] = []
    p = path
    while p not in ("", "/", "."):
        try:
            st = sftp.stat(p)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
            missing.append(p)
            p = posixpath.dirname(p)
            continue
        if not stat_mod.S_ISDIR(st.st_mode or 0):
            raise OSError(errno.ENOTDIR, f"{p} is not a directory")
        break
    for d in reversed(missing):
        _mkdir(sftp, d)
