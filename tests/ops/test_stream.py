"""Backups of streams (--stdin, --stdin-from-command) and `dump` of files and directories."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import sys
import tarfile

import pytest

from tests.support.ops import run_cli, validate, write_config
from tests.support.repos import SMALL_CHUNKS, init_library_repo


@pytest.fixture
def small_repo(cli):
    """Small chunks so that a few MiB of stream make many blobs."""
    return init_library_repo(cli.repo_path, chunker=SMALL_CHUNKS)


def _data(n: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    words = [bytes(rng.choices(b"abcdefghij ", k=rng.randrange(3, 12))) for _ in range(500)]
    return b"\n".join(rng.choices(words, k=n // 6))[:n]


def _dump_bytes(cli, *args) -> bytes:
    import subprocess

    proc = subprocess.run(cli.command("dump", *args), stdin=subprocess.DEVNULL, capture_output=True,
                          env=cli.environ())
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def test_stdin_round_trip(cli, small_repo, schemas):
    data = _data(3 << 20)
    r = run_cli(cli, "--json", "backup", "--stdin", "--stdin-filename", "db.sql", "--tag", "db", stdin_data=data)
    assert r.code == 0, r.describe()
    summary = r.json()
    validate(summary, schemas["backup"])
    assert summary["kind"] == "full" and summary["stream"] == {"source": "stdin"}
    assert summary["bytes_total"] == len(data) and summary["files_new"] == 1 and summary["data_blobs_added"] > 10
    snap = cli("--json", "snapshots").ok().json()[-1]
    assert snap["paths"] == ["/db.sql"] and snap["tags"] == ["db"]
    # Found as db.sql and as /db.sql; bytes identical.
    assert _dump_bytes(cli, "latest", "db.sql") == data
    assert _dump_bytes(cli, summary["snapshot_id"][:10], "/db.sql") == data
    (entry,) = cli("--json", "ls", "latest").ok().json()["entries"]
    assert entry["path"] == "/db.sql" and entry["mode"] == 0o600 and entry["size"] == len(data)
    # The same stream again: deduplicated, and again a full snapshot.
    again = run_cli(cli, "--json", "backup", "--stdin", "--stdin-filename", "db.sql", stdin_data=data).json()
    assert again["kind"] == "full" and again["parent"] is None and again["data_blobs_added"] == 0
    # -q: nothing on stdout.
    r = run_cli(cli, "-q", "backup", "--stdin", stdin_data=b"tiny")
    assert r.code == 0 and r.stdout == "" and r.stderr == ""
    assert _dump_bytes(cli, "latest", "stdin") == b"tiny"


def test_command_round_trip_shows_its_stderr(cli, small_repo, tmp_path):
    data = _data(1 << 20, seed=2)
    (tmp_path / "payload").write_bytes(data)
    prog = ("import sys; sys.stderr.write('dumping...\\n'); "
            f"sys.stdout.buffer.write(open({str(tmp_path / 'payload')!r}, 'rb').read())")
    r = cli("--json", "backup", "--stdin-from-command", "--stdin-filename", "/dumps/app.dump", "--",
            sys.executable, "-c", prog).ok()
    summary = r.json()
    assert "dumping..." in r.stderr
    assert summary["stream"] == {"source": "command", "program": os.path.basename(sys.executable)}
    assert _dump_bytes(cli, "latest", "dumps/app.dump") == data
    # A directory of a stream snapshot dumps as tar too.
    tar = tarfile.open(fileobj=io.BytesIO(_dump_bytes(cli, "latest", "/dumps")))
    assert tar.getnames() == ["dumps", "dumps/app.dump"]
    assert tar.extractfile("dumps/app.dump").read() == data


@pytest.mark.parametrize("script,why", [
    ("import sys; sys.stdout.write('partial dump'); sys.stderr.write('FATAL: connection refused\\n'); "
     "sys.exit(1)", "exited with status 1"),
    ("import os, signal, sys; sys.stdout.write('x' * 100000); sys.stdout.flush(); "
     "os.kill(os.getpid(), signal.SIGKILL)", "killed by SIGKILL"),
])
def test_failing_command_leaves_no_snapshot(cli, small_repo, script, why):
    r = cli("backup", "--stdin-from-command", "--stdin-filename", "db.sql", "--", sys.executable, "-c", script)
    assert r.code == 1 and r.stdout == "", r.describe()
    assert why in r.stderr and "no snapshot was saved" in r.stderr
    if "connection refused" in script:
        assert "FATAL: connection refused" in r.stderr  # the command's own stderr is shown
    assert cli("--json", "snapshots").ok().json() == []
    r = cli("backup", "--stdin-from-command", "--", "/nonexistent/pg_dump")
    assert r.code == 1 and "cannot run 'pg_dump'" in r.stderr
    assert cli("--json", "snapshots").ok().json() == []
    cli("verify").ok()


def test_stream_usage_errors(cli, small_repo, tmp_path):
    for args in (["--stdin", "--exclude", "*.tmp"], ["--stdin", "--stdin-from-command", "--", "true"],
                 ["--stdin-from-command"], ["--stdin", "/etc"], ["--stdin-filename", "x", str(tmp_path)],
                 ["--stdin", "--stdin-filename", "../escape"], ["--stdin", "--parent", "abc"]):
        r = run_cli(cli, "backup", *args, stdin_data=b"x")
        assert r.code == 2 and r.stdout == "", r.describe()
    # Under cron stdin is /dev/null: --stdin there is a mistake, not an empty backup.
    r = cli("backup", "--stdin")
    assert r.code == 2 and "not a pipe or file" in r.stderr
    assert cli("--json", "snapshots").ok().json() == []


def test_stream_from_a_profile(cli, small_repo, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", f"""
profiles:
  db:
    backup:
      stdin_from_command: true
      paths: [{sys.executable}, -c, "print('from the profile')"]
      stdin_filename: db/dump.sql
      tags: [db]
      exclude: ['*.tmp']   # for file backups; ignored for a stream
""")
    r = cli("-c", cfg, "-q", "backup").ok()
    assert r.stdout == ""
    assert _dump_bytes(cli, "latest", "/db/dump.sql") == b"from the profile\n"
    # --stdin-from-command given on the command line never runs the profile's paths.
    assert cli("-c", cfg, "backup", "--stdin-from-command").code == 2


def test_dump_directory_as_tar(cli, small_repo, tmp_path, schemas):
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    big = os.urandom(300_000)
    (src / "sub" / "big.bin").write_bytes(big)
    (src / "sub" / "deeper" / "small.txt").write_text("small\n")
    (src / "sub" / "empty").write_bytes(b"")
    os.link(src / "sub" / "big.bin", src / "sub" / "hard.bin")
    os.symlink("deeper/small.txt", src / "sub" / "link")
    os.mkfifo(src / "sub" / "fifo")
    os.chmod(src / "sub" / "deeper" / "small.txt", 0o640)
    os.utime(src / "sub" / "empty", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    cli("-q", "backup", src).ok()
    rel = str(src / "sub").lstrip("/")
    tar = tarfile.open(fileobj=io.BytesIO(_dump_bytes(cli, "latest", src / "sub")))
    members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {rel, *(f"{rel}/{n}" for n in ("big.bin", "deeper", "deeper/small.txt", "empty",
                                                           "fifo", "hard.bin", "link"))}
    assert tar.extractfile(f"{rel}/big.bin").read() == big
    assert members[f"{rel}/hard.bin"].islnk() and members[f"{rel}/hard.bin"].linkname == f"{rel}/big.bin"
    assert members[f"{rel}/link"].issym() and members[f"{rel}/link"].linkname == "deeper/small.txt"
    assert members[f"{rel}/fifo"].isfifo() and members[f"{rel}/deeper"].isdir()
    assert members[f"{rel}/deeper/small.txt"].mode == 0o640
    assert abs(members[f"{rel}/empty"].mtime - 1_600_000_000.123456789) < 1e-5
    # The whole snapshot with '/', to a file, with the JSON summary on stdout.
    out = tmp_path / "all.tar"
    r = cli("--json", "dump", "latest", "/", "--output", out).ok()
    summary = r.json()
    validate(summary, schemas["dump"])
    assert summary["kind"] == "tar" and summary["bytes"] == 2 * len(big) - len(big) + 6  # hardlink stored once
    names = tarfile.open(out).getnames()
    assert names[0] == src.parts[1] and f"{rel}/big.bin" in names
    # Without --output, the summary goes to stderr and the data alone to stdout.
    import subprocess

    proc = subprocess.run(cli.command("--json", "dump", "latest", src / "sub" / "deeper" / "small.txt"),
                          stdin=subprocess.DEVNULL, capture_output=True, env=cli.environ())
    assert proc.returncode == 0 and proc.stdout == b"small\n"
    validate(json.loads(proc.stderr), schemas["dump"])
    # Missing paths and other entry types are errors.
    r = cli("dump", "latest", src / "nope")
    assert r.code == 1 and "not in snapshot" in r.stderr
    r = cli("dump", "latest", src / "sub" / "link")
    assert r.code == 2 and "symlink" in r.stderr


def test_dump_to_a_closed_pipe_is_quiet(cli, small_repo, tmp_path):
    import subprocess

    run_cli(cli, "-q", "backup", "--stdin", stdin_data=_data(2 << 20)).ok()
    cmd = f"{' '.join(cli.command('dump', 'latest', 'stdin'))} | head -c 10 > /dev/null"
    proc = subprocess.run(["sh", "-c", f"set -o pipefail 2>/dev/null; {cmd}; echo rc=${{PIPESTATUS[0]:-0}}"],
                          capture_output=True, env=cli.environ(), stdin=subprocess.DEVNULL)
    assert b"Traceback" not in proc.stderr and b"BrokenPipe" not in proc.stderr, proc.stderr
    digest = hashlib.sha256(_dump_bytes(cli, "latest", "stdin")).hexdigest()
    assert digest == hashlib.sha256(_data(2 << 20)).hexdigest()
