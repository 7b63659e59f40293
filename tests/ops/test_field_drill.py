"""What the disaster drill of issue 12 met, through the real CLI: each test fails on the code before the fix.

- ``latest`` in a repository shared by a files profile and a database profile
  (defect 4): ``--host``, ``--tag`` and ``--path`` choose among snapshots, a
  profile's ``latest`` is its own, and ``--include`` or ``ls PATH`` matching
  nothing is an error (exit 1), not "0 files", exit 0.
- ``dump ... | head`` (defect 7): the reader closing the pipe ends the run
  quietly, exit 0, nothing on stderr.
"""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from tests.support.ops import write_config


def _piped_to_head(cli, *args: str | os.PathLike) -> tuple[int, bytes, bytes]:
    """``haeedge ARGS | head -c 10`` in a real shell pipeline: (haeedge's exit code, head's output, stderr)."""
    words = " ".join(shlex.quote(w) for w in cli.command(*args))
    script = f'{words} 2>"$ERR" | head -c 10; exit "${{PIPESTATUS[0]}}"'
    err = cli.tmp_path / "stderr.txt"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, env={**cli.env, "ERR": str(err)},
                          stdin=subprocess.DEVNULL, timeout=300)
    return proc.returncode, proc.stdout, err.read_bytes()


@pytest.fixture
def shared(cli, fast_repo, tmp_path):
    """One repository, a files profile and a database profile; the database snapshot is the newest."""
    src = tmp_path / "srv"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "app.conf").write_text("setting = 1\n")
    (src / "big.bin").write_bytes(os.urandom(3 << 20))
    cfg = write_config(tmp_path / "cfg.yaml", f"""
profiles:
  files:
    repository: {cli.repo_path}
    password_file: {cli.password_file}
    backup:
      paths: [{src}]
      host: web1
  db:
    repository: {cli.repo_path}
    password_file: {cli.password_file}
    backup:
      stdin_from_command: true
      stdin_filename: postgres/app.dump
      paths: [printf, 'the database']
      host: web1
""")
    env = {"HAEEDGE_CONFIG": str(cfg)}
    cli("-q", "--profile", "files", "backup", env=env).ok()
    cli("-q", "--profile", "db", "backup", env=env).ok()
    return src, env


def test_latest_takes_host_tag_and_path_filters(cli, shared, tmp_path):
    src, _env = shared
    cli("-q", "backup", "--host", "other", "--tag", "mine", src).ok()  # the newest now: another host's
    assert cli("ls", "latest", "--host", "other").ok().stdout.count("app.conf") == 1
    r = cli("--json", "ls", "latest", "--host", "web1", "--path", src).ok().json()
    assert {e["path"] for e in r["entries"]} >= {f"{src}/etc/app.conf"}
    r = cli("--json", "ls", "latest", "--host", "web1").ok().json()
    assert [e["path"] for e in r["entries"] if e["type"] == "file"] == ["/postgres/app.dump"]
    r = cli("dump", "latest", "--tag", "mine", f"{src}/etc/app.conf").ok()
    assert r.stdout == "setting = 1\n"
    r = cli("restore", "latest", "--host", "web1", "--path", src, "--target", tmp_path / "r1",
            "--include", f"{src}/etc").ok()
    assert (tmp_path / "r1" / str(src).lstrip("/") / "etc" / "app.conf").read_text() == "setting = 1\n"
    r = cli("ls", "latest", "--host", "nobody")
    assert r.code == 1 and "no snapshot found for host nobody" in r.stderr, r.describe()
    # find, stats and diff resolve 'latest' with the same filters.
    r = cli("--json", "find", "-s", "latest", "--host", "web1", "--path", src, "app.conf").ok().json()
    assert r["matches"] == 1
    r = cli("--json", "diff", "latest", "latest", "--host", "web1").ok().json()
    assert r["stats"]["added"] == 0


def test_a_profile_latest_is_its_own(cli, shared, tmp_path):
    src, env = shared
    # The runbook's commands, as the drill ran them: the database snapshot is the newest overall.
    r = cli("--profile", "files", "restore", "latest", "--target", tmp_path / "r", "--include", f"{src}/etc",
            env=env).ok()
    assert "1 files" in r.stdout, r.describe()
    assert (tmp_path / "r" / str(src).lstrip("/") / "etc" / "app.conf").exists()
    r = cli("--profile", "db", "dump", "latest", "/postgres/app.dump", env=env).ok()
    assert r.stdout == "the database"
    # The command line's filters replace the profile's.
    r = cli("--profile", "files", "--json", "ls", "latest", "--path", "/postgres/app.dump", env=env).ok().json()
    assert any(e["path"] == "/postgres/app.dump" for e in r["entries"])


def test_include_or_ls_path_matching_nothing_fails(cli, shared, tmp_path):
    src, _env = shared
    r = cli("restore", "latest", "--target", tmp_path / "r", "--include", f"{src}/etc")  # latest: the dump
    assert r.code == 1, r.describe()
    assert f"{src}/etc" in r.stderr and "--include matched nothing" in r.stderr
    r = cli("restore", "latest", "--path", src, "--target", tmp_path / "r2", "--include", f"{src}/etc",
            "--include", "/no/such/dir")
    assert r.code == 1 and "/no/such/dir" in r.stderr and f"{src}/etc," not in r.stderr, r.describe()
    assert (tmp_path / "r2" / str(src).lstrip("/") / "etc" / "app.conf").exists()  # what matched is restored
    r = cli("ls", "latest", "--path", src, "/no/such/dir")
    assert r.code == 1 and "/no/such/dir: not in snapshot" in r.stderr and r.stdout == "", r.describe()
    r = cli("--json", "ls", "latest", "--path", src, "/no/such/dir")
    assert r.code == 1 and r.stdout == ""


@pytest.mark.parametrize("what", ["file", "tar"])
def test_dump_into_a_closed_pipe_exits_quietly(cli, shared, what):
    src, _env = shared
    path = f"{src}/big.bin" if what == "file" else str(src)
    code, out, err = _piped_to_head(cli, "dump", "latest", "--path", src, path)
    assert len(out) == 10
    assert code == 0 and err == b"", (code, err)



def test_json_runs_print_warnings_as_json_lines(cli, shared, tmp_path):
    """Defect 11: with --json, everything on stderr but the final error is a JSON line (docs/json.md)."""
    import json

    src, env = shared
    # A library warning (logging): opening reads keys/ by name, and this damaged object sorts first.
    (cli.repo_path / "keys" / ("0" * 64)).write_bytes(b"junk")
    hook = write_config(tmp_path / "hook.yaml", f"""
profiles:
  files:
    repository: {cli.repo_path}
    password_file: {cli.password_file}
    hooks: {{on_success: [sh, -c, 'exit 7'], commands: [backup]}}
""")
    for args, cfg in ((("--json", "backup", src), None), (("backup", "--json", src), hook)):
        extra = ("-c", str(cfg), "--profile", "files") if cfg else ()
        r = cli(*extra, *args)
        assert r.code == 0, r.describe()
        lines = r.stderr.splitlines()
        messages = [json.loads(line) for line in lines]  # every line parses
        assert {"message_type": "warning", "message": messages[0]["message"]} == messages[0]
        assert any("skipping key object" in m["message"] for m in messages), messages
        if cfg:
            assert any("hook" in m["message"] and "status 7" in m["message"] for m in messages), messages
    r = cli("backup", src).ok()  # without --json: one plain line
    assert "haeedge: warning: skipping key object" in r.stderr and "{" not in r.stderr
