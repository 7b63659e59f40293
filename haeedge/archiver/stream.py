"""Backup of a stream: standard input, or the output of a command such as ``pg_dump``.

A database is backed up by what its dump tool prints, not by its files. The
stream becomes one file (``--stdin-filename``) in a *full* snapshot of its
own: a stream has no stat data to compare with a parent, and deduplication
already makes an unchanged dump cost almost nothing.

For a command, the snapshot is the commit point and is written only when the
command exits 0: a dump that failed half-way must not look like a backup.
Blobs uploaded before the failure stay unreferenced until prune removes
them, as after any interrupted backup. The command's stderr is not captured:
it goes straight to ours, so the operator sees why it failed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from haeedge.archiver import BackupResult, new_snapshot
from haeedge.archiver.metadata import group_name, user_name
from haeedge.archiver.summary import BackupSummary
from haeedge.chunking import Chunker
from haeedge.errors import ExitCode, HaeedgeError, UsageError
from haeedge.monitoring import child_environment
from haeedge.progress import ProgressSink, SilentProgress
from haeedge.repo.pack import BLOB_DATA
from haeedge.repo.packer import WriteOptions
from haeedge.repo.repository import Repository
from haeedge.repo.snapshot import KIND_FULL
from haeedge.repo.tree import Node

#: Chunks being sealed at once (each up to the chunker's max size, 8 MiB by default).
MAX_IN_FLIGHT = 8


class StreamCommandFailed(HaeedgeError):
    """The command producing the stream failed; nothing was saved."""

    exit_code = ExitCode.FATAL


@dataclass
class StreamOptions:
    #: Path of the file inside the snapshot, e.g. ``db.sql`` or ``postgres/app.dump``.
    filename: str = "stdin"
    tags: list[str] = field(default_factory=list)
    host: str | None = None
    dry_run: bool = False
    compression_level: int | None = None
    #: ``None``: read ``fd``. Otherwise the command to run (no shell) whose stdout is the stream.
    command: list[str] | None = None
    workers: int = 3


def stream_path(filename: str) -> bytes:
    """The snapshot-relative path for ``--stdin-filename`` (``/db.sql`` and ``db.sql`` are the same)."""
    raw = os.fsencode(filename).strip(b"/")
    parts = raw.split(b"/")
    if not raw or b"\0" in raw or any(p in (b"", b".", b"..") for p in parts):
        raise UsageError(f"--stdin-filename {filename!r} is not a usable file name",
                         hint="use a relative name such as db.sql or postgres/app.dump")
    return raw


def backup_stream(repo: Repository, options: StreamOptions, fd: int | None = None,
                  progress: ProgressSink | None = None) -> BackupResult:
    """Store one stream as a full snapshot; returns the same result shape as a file backup."""
    progress = progress or SilentProgress()
    started = time.monotonic()
    rel = stream_path(options.filename)
    repo.begin_writes(WriteOptions(compression_level=options.compression_level, dry_run=options.dry_run))
    proc: subprocess.Popen | None = None
    if options.command is not None:
        proc = _start(options.command)
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
    elif fd is None:
        fd = sys.stdin.fileno()
    progress.start("stdin" if proc is None else os.path.basename(options.command[0]))  # type: ignore[index]
    try:
        chunks, size = _store_chunks(repo, fd, progress, options.workers)
        if proc is not None:
            proc.stdout.close()  # type: ignore[union-attr]
            code = proc.wait()
            if code != 0:
                raise StreamCommandFailed(f"{_describe(options.command, code)}; no snapshot was saved")
        entries = _entries(rel, chunks, size)
        tree = repo.tree_writer()
        for e in entries:
            tree.add(e)
        tree_ids = tree.finish()
        repo.flush()
    except BaseException:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        repo.abort_writes()
        raise
    finally:
        progress.finish()
    summary = BackupSummary(files_new=1, dirs=len(entries) - 1, entries=len(entries), bytes_read=size,
                            bytes_total=size).finish(repo.stats, KIND_FULL, "stream", started)
    # Only the program's name: the command's arguments may carry connection strings.
    summary.stream = {"source": "stdin" if proc is None else "command",
                         **({"program": os.path.basename(options.command[0])} if proc is not None else {})}
    snap = new_snapshot(host=options.host or socket.gethostname(), paths=["/" + os.fsdecode(rel)],
                        kind=KIND_FULL, tree=tree_ids, tags=options.tags, summary=summary.to_doc())
    if not options.dry_run:
        repo.save_snapshot(snap)
    return BackupResult(snap if not options.dry_run else None, summary, [])


def _start(argv: list[str]) -> subprocess.Popen:
    if not argv:
        raise UsageError("--stdin-from-command needs a command after '--'",
                         hint="haeedge backup --stdin-from-command --stdin-filename db.dump -- pg_dump -Fc mydb")
    env = child_environment()  # the command has no business with our credentials
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=None, env=env,
                                close_fds=True)
    except OSError as e:
        raise StreamCommandFailed(f"cannot run {os.path.basename(argv[0])!r}: {e.strerror or e}") from None


def _describe(argv: list[str] | None, code: int) -> str:
    name = os.path.basename(argv[0]) if argv else "command"
    if code < 0:
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = str(-code)
        return f"{name!r} was killed by {sig}"
    return f"{name!r} exited with status {code}"


def _store_chunks(repo: Repository, fd: int, progress: ProgressSink, workers: int) -> tuple[list, int]:
    """Chunk in this thread; hash, compress and seal in a few others (those release the GIL)."""
    chunker = Chunker(repo.config.chunker)
    chunks: list = []
    size = 0
    pending: deque[tuple[Future, int]] = deque()

    def collect() -> None:
        fut, length = pending.popleft()
        bid, _new = fut.result()
        chunks.append([bid.hex(), length])

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="stream") as pool:
        try:
            for chunk in chunker.chunks_of_fd(fd):
                data = bytes(chunk)  # the chunker reuses its buffer
                pending.append((pool.submit(repo.save_blob, BLOB_DATA, data), len(data)))
                size += len(data)
                progress.advance(nbytes=len(data))
                while len(pending) >= MAX_IN_FLIGHT:
                    collect()
            while pending:
                collect()
        except BaseException:
            for fut, _ in pending:
                fut.cancel()
            raise
    return chunks, size


def _entries(rel: bytes, chunks: list, size: int) -> list[Node]:
    """The stream's file entry, preceded by its parent directories (a tree is complete)."""
    now_ns = time.time_ns()
    uid, gid = os.getuid(), os.getgid()
    user, group = user_name(uid) or None, group_name(gid) or None
    out: list[Node] = []
    parts = rel.split(b"/")
    for i in range(1, len(parts)):
        out.append(Node(b"/".join(parts[:i]), "dir", 0o700, uid, gid, user, group, now_ns, now_ns))
    # 0600: a database dump holds everything the database does.
    out.append(Node(rel, "file", 0o600, uid, gid, user, group, now_ns, now_ns, size=size, chunks=chunks))
    return out
