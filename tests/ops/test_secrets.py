"""The repository password never leaks: not in children's argv or environment, output, logs, metrics or JSON."""

from __future__ import annotations

import json
import os
import shlex
import sys

from haeedge.backends.local import LocalBackend
from haeedge.repo.repository import Repository
from tests.support.ops import write_config

SECRET = "Zq9-distinctive-Passw0rd-7731-xyzzy"
BACKEND_SECRET = "AKIA-backend-secret-value-4242"

SPY = """import json, os, sys
procs = {}
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            procs[pid] = open(f"/proc/{pid}/cmdline", "rb").read().decode("utf-8", "replace")
        except OSError:
            pass
parent_env = ""
try:
    parent_env = open(f"/proc/{os.getppid()}/environ", "rb").read().decode("utf-8", "replace")
except OSError:
    pass
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"argv": sys.argv, "env": dict(os.environ), "procs": procs, "parent_env": parent_env}) + "\\n")
if len(sys.argv) > 2:
    sys.stdout.write(sys.argv[2] * 1000)
"""


def test_password_never_leaks(cli, tmp_path):
    Repository.init(LocalBackend(str(cli.repo_path)), SECRET.encode(), s2k_count_byte=0x10).close()
    (tmp_path / "pw").write_text(SECRET + "\n")
    os.chmod(tmp_path / "pw", 0o600)
    spy = tmp_path / "spy.py"
    spy.write_text(SPY)
    record = tmp_path / "spy.jsonl"
    src = tmp_path / "src"
    src.mkdir()
    (src / "file.txt").write_text("contents\n")
    cfg = write_config(tmp_path / "c.yaml", f"""
profiles:
  default:
    repository: local://{cli.repo_path}
    password_command: cat {tmp_path / 'pw'}
    log_file: {tmp_path / 'log'}
    metrics_file: {tmp_path / 'm.prom'}
    backend_options:
      local://{cli.repo_path}: {{storage_options: {{secret_access_key: {BACKEND_SECRET}}}}}
    hooks:
      on_success: [{sys.executable}, {spy}, {record}]
      on_failure: [{sys.executable}, {spy}, {record}]
      commands: [backup, verify, snapshots, dump, restore]
""")
    env = {"HAEEDGE_CONFIG": str(cfg)}
    unset = ("HAEEDGE_REPOSITORY", "HAEEDGE_PASSWORD_FILE")
    outputs = []

    def run(*args, expect=0, **kw):
        # A child each: the hooks read their parent's /proc/PID/environ, which must be haeedge's own.
        r = cli.subprocess(*args, env={**env, **kw.pop("env", {})}, unset=kw.pop("unset", unset), **kw)
        assert r.code == expect, r.describe()
        outputs.extend([r.stdout, r.stderr])
        return r

    run("-v", "backup", src)
    run("--json", "-v", "backup", src)
    run("--json", "backup", "--stdin-from-command", "--stdin-filename", "db.sql", "--",
        sys.executable, str(spy), str(record), "x")
    run("--json", "snapshots")
    run("--json", "ls", "latest")
    run("--json", "stats")
    run("--json", "find", "*")
    run("--json", "verify", "--read-data")
    run("--json", "dump", "latest", "/db.sql", "--output", tmp_path / "db.sql")
    run("--json", "restore", "latest", "--target", tmp_path / "r", "--dry-run")
    # Failures: a failing stream command, a crashing run with --debug, a wrong password from a file.
    run("--debug", "backup", "--stdin-from-command", "--", sys.executable, "-c", "import sys; sys.exit(3)", expect=1)
    run("--debug", "dump", "latest", "/nope", expect=1)
    (tmp_path / "wrong").write_text("wrong\n")
    run("--debug", "--password-file", tmp_path / "wrong", "verify", expect=12)
    run("-r", cli.repo_path, "snapshots", unset=(*unset, "HAEEDGE_CONFIG"),
        env={"HAEEDGE_CONFIG": "", "HAEEDGE_PASSWORD_FILE": str(tmp_path / "pw")})

    records = [json.loads(line) for line in record.read_text().splitlines()]
    hooks = [r for r in records if "HAEEDGE_HOOK" in r["env"]]
    streams = [r for r in records if "HAEEDGE_HOOK" not in r["env"]]
    assert len(hooks) >= 10 and len(streams) == 1
    assert {h["env"]["HAEEDGE_HOOK"] for h in hooks} == {"on_success", "on_failure"}
    for rec in records:
        assert not [k for k in rec["env"] if k.startswith("HAEEDGE_PASSWORD")], "children get no password source"
        # Nobody's argv holds the secret: not the child's, not haeedge's, not any process's.
        for pid, cmdline in rec["procs"].items():
            assert SECRET not in cmdline and BACKEND_SECRET not in cmdline, (pid, cmdline)
        assert SECRET not in rec["parent_env"]  # not even haeedge's own environment
    everything = "\n".join([
        *outputs,
        json.dumps(records),
        (tmp_path / "log").read_text(),
        (tmp_path / "m.prom").read_text(),
    ])
    for secret in (SECRET, BACKEND_SECRET):
        assert secret not in everything
        assert shlex.quote(secret) not in everything
    # The outputs are real (the test would pass vacuously otherwise).
    assert "snapshot_id" in everything and "haeedge_last_exit_code" in everything and "exit_code=12" in everything


def test_backend_secrets_are_scrubbed_from_errors_and_hooks():
    from haeedge.monitoring import RunOutcome, hook_environment, log_line

    run = RunOutcome(command="backup", exit_code=1, invoked=True)
    run.add_secret(BACKEND_SECRET)
    run.add_secret(SECRET.encode())
    run.error = f"s3 said: InvalidAccessKeyId {BACKEND_SECRET} for {SECRET}"
    env = hook_environment(run, "on_failure", base={"HAEEDGE_PASSWORD_FILE": "/pw", "PATH": "/bin"})
    assert "HAEEDGE_PASSWORD_FILE" not in env and env["PATH"] == "/bin"
    text = log_line(run) + json.dumps(env)
    assert BACKEND_SECRET not in text and SECRET not in text and "***" in text
