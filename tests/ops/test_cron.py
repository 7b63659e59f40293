"""Unattended runs as cron makes them: quiet on success, loud on failure, hooks, metrics and a log line."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time

from haeedge.monitoring import RunOutcome, log_line, metrics_text, parse_metrics
from tests.support.ops import parse_prometheus, write_config

HOOK = """import json, os, sys
out = {k: v for k, v in os.environ.items() if k.startswith("HAEEDGE_")}
out["argv"] = sys.argv[1:]
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(out) + "\\n")
"""


def _hook(tmp_path, name: str) -> list[str]:
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    return [sys.executable, str(script), str(tmp_path / f"{name}.jsonl")]


def _hook_calls(tmp_path, name: str) -> list[dict]:
    path = tmp_path / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _profile(cli, tmp_path, src, **extra) -> dict:
    ok, bad = _hook(tmp_path, "success"), _hook(tmp_path, "failure")
    cfg = write_config(tmp_path / "haeedge.yaml", f"""
profiles:
  nightly:
    repository: {cli.repo_path}
    password_file: {cli.password_file}
    log_file: {tmp_path / 'haeedge.log'}
    metrics_file: {tmp_path / 'metrics' / 'haeedge.prom'}
    hooks:
      on_success: {json.dumps(ok)}
      on_failure: {shlex.join(bad)}
      commands: [backup, verify]
    backup:
      paths: [{src}]
      tags: [cron]
""" + "".join(f"    {k}: {v}\n" for k, v in extra.items()))
    (tmp_path / "metrics").mkdir(exist_ok=True)
    # Only the environment configures the run, as in a crontab line.
    return {"HAEEDGE_CONFIG": str(cfg), "HAEEDGE_PROFILE": "nightly"}


UNSET = ("HAEEDGE_REPOSITORY", "HAEEDGE_PASSWORD_FILE")


def _metrics(tmp_path) -> dict:
    return parse_prometheus((tmp_path / "metrics" / "haeedge.prom").read_text())


def test_cron_success_is_silent_and_reported(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(os.urandom(3000) * 3)
    env = _profile(cli, tmp_path, src)
    t0 = time.time()
    r = cli("-q", "backup", env=env, unset=UNSET).ok()
    assert r.stdout == "" and r.stderr == ""
    (snap,) = cli("--json", "snapshots", env=env, unset=UNSET).ok().json()

    (call,) = _hook_calls(tmp_path, "success")
    assert not _hook_calls(tmp_path, "failure")
    assert call["HAEEDGE_HOOK"] == "on_success" and call["HAEEDGE_COMMAND"] == "backup"
    assert call["HAEEDGE_PROFILE"] == "nightly" and call["HAEEDGE_EXIT_CODE"] == "0"
    assert call["HAEEDGE_SUCCESS"] == "1" and call["HAEEDGE_ERROR"] == ""
    assert call["HAEEDGE_SNAPSHOT_ID"] == snap["id"]
    assert int(call["HAEEDGE_BYTES_ADDED"]) == snap["summary"]["bytes_added"] > 0
    assert call["HAEEDGE_FILES"] == "5" and int(call["HAEEDGE_BYTES_TOTAL"]) == 5 * 9000
    assert 0 < float(call["HAEEDGE_DURATION"]) < 60
    assert not any(k.startswith("HAEEDGE_PASSWORD") for k in call), "hooks never see credentials"

    m = _metrics(tmp_path)
    labels = (("command", "backup"), ("profile", "nightly"))
    assert m["haeedge_last_exit_code"][labels] == 0
    assert t0 - 1 <= m["haeedge_last_success_timestamp_seconds"][labels] <= time.time() + 1
    assert m["haeedge_last_run_timestamp_seconds"][labels] == m["haeedge_last_success_timestamp_seconds"][labels]
    assert m["haeedge_last_bytes_added"][labels] == snap["summary"]["bytes_added"]
    assert m["haeedge_last_files"][labels] == 5 and m["haeedge_last_bytes_total"][labels] == 45000
    assert 0 < m["haeedge_last_duration_seconds"][labels] < 60
    assert sorted(os.listdir(tmp_path / "metrics")) == [".haeedge.prom.lock", "haeedge.prom"]  # no temp files

    line = (tmp_path / "haeedge.log").read_text().splitlines()[0]
    fields = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line))
    assert fields["command"] == "backup" and fields["exit_code"] == "0" and fields["outcome"] == "success"
    assert fields["snapshot_id"] == snap["id"] and fields["profile"] == "nightly" and fields["files"] == "5"

    # `snapshots` is not in hooks.commands: no hook, but a log line and its own metric series.
    assert len(_hook_calls(tmp_path, "success")) == 1
    assert len((tmp_path / "haeedge.log").read_text().splitlines()) == 2  # backup, snapshots
    m = _metrics(tmp_path)
    assert m["haeedge_last_exit_code"][(("command", "snapshots"), ("profile", "nightly"))] == 0
    assert m["haeedge_last_exit_code"][labels] == 0


def test_cron_failure_alerts_and_keeps_last_success(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    env = _profile(cli, tmp_path, src)
    cli("-q", "backup", env=env, unset=UNSET).ok()
    success_time = _metrics(tmp_path)["haeedge_last_success_timestamp_seconds"]
    inode = os.stat(tmp_path / "metrics" / "haeedge.prom").st_ino

    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    r = cli("-q", "--password-file", wrong, "backup", env=env, unset=UNSET)
    assert r.code == 12 and r.stdout == "" and "wrong password" in r.stderr.lower()
    (call,) = _hook_calls(tmp_path, "failure")
    assert call["HAEEDGE_HOOK"] == "on_failure" and call["HAEEDGE_EXIT_CODE"] == "12"
    assert call["HAEEDGE_SUCCESS"] == "0" and call["HAEEDGE_SNAPSHOT_ID"] == ""
    assert "password" in call["HAEEDGE_ERROR"].lower()
    m = _metrics(tmp_path)
    labels = (("command", "backup"), ("profile", "nightly"))
    assert m["haeedge_last_exit_code"][labels] == 12
    assert m["haeedge_last_success_timestamp_seconds"] == success_time  # kept from the last good run
    assert m["haeedge_last_run_timestamp_seconds"][labels] > success_time[labels]
    assert labels not in m.get("haeedge_last_bytes_added", {})  # no stale figures for a failed run
    assert os.stat(tmp_path / "metrics" / "haeedge.prom").st_ino != inode  # replaced, never rewritten in place
    last = (tmp_path / "haeedge.log").read_text().splitlines()[-1]
    assert "exit_code=12" in last and "outcome=failure" in last and 'error="' in last

    # A usage error fails the run too (a broken crontab line must alert), with exit code 2.
    r = cli("-q", "backup", "--no-such-option", env=env, unset=UNSET)
    assert r.code == 2
    assert _hook_calls(tmp_path, "failure")[-1]["HAEEDGE_EXIT_CODE"] == "2"

    # Partial backups (exit 3) are failures for monitoring, with the reason.
    (src / "unreadable").write_text("secret")
    os.chmod(src / "unreadable", 0)
    # uid 0 without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH: mode 000 means no access.
    drop_dac = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all", "--"]
    r = cli("-q", "backup", env=env, unset=UNSET, prefix=drop_dac)
    assert r.code == 3 and r.stdout == "" and "unreadable" in r.stderr, r.describe()
    call = _hook_calls(tmp_path, "failure")[-1]
    assert call["HAEEDGE_EXIT_CODE"] == "3" and call["HAEEDGE_SNAPSHOT_ID"]  # saved, but incomplete
    assert "1 files could not be read" in call["HAEEDGE_ERROR"]


def test_help_is_not_a_run(cli, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    env = _profile(cli, tmp_path, src)
    cli("backup", "--help", env=env, unset=UNSET).ok()
    cli("--version", env=env, unset=UNSET).ok()
    assert not (tmp_path / "haeedge.log").exists() and not (tmp_path / "metrics" / "haeedge.prom").exists()
    assert not _hook_calls(tmp_path, "success")


def test_failing_hook_warns_without_changing_the_exit_code(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    cfg = write_config(tmp_path / "c.yaml", """
profiles:
  default:
    hooks:
      on_success: [sh, -c, 'echo hook says hi; exit 7']
      on_failure: [/nonexistent/notify]
""")
    r = cli("-c", cfg, "-q", "backup", src)
    assert r.code == 0 and r.stdout == ""  # the hook's stdout goes to stderr: stdout stays clean for cron/JSON
    assert "hook says hi" in r.stderr and "warning: on_success hook sh exited with status 7" in r.stderr
    r = cli("-c", cfg, "-q", "backup", tmp_path / "missing")
    assert r.code == 2 and "on_failure hook notify could not run" in r.stderr


def test_log_and_metrics_from_global_options_and_environment(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    log, prom = tmp_path / "log", tmp_path / "m.prom"
    cli("-q", "--log-file", log, "--metrics-file", prom, "backup", src).ok()
    cli("-q", "verify", env={"HAEEDGE_LOG_FILE": str(log), "HAEEDGE_METRICS_FILE": str(prom)}).ok()
    lines = log.read_text().splitlines()
    assert [re.search(r"command=(\w+)", ln).group(1) for ln in lines] == ["backup", "verify"]
    m = parse_prometheus(prom.read_text())
    assert set(m["haeedge_last_exit_code"]) == {(("command", "backup"), ("profile", "")),
                                                (("command", "verify"), ("profile", ""))}


def test_verbose_adds_detail_and_progress_needs_a_terminal(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(100_000))
    r = cli("-v", "backup", src).ok()
    assert "full backup (no parent snapshot)" in r.stderr
    assert "\r" not in r.stderr and "it/s" not in r.stderr and "B/s" not in r.stderr
    r = cli("backup", src).ok()
    assert r.stderr == ""


def test_metrics_and_log_format_units():
    run = RunOutcome(command="backup", profile='we"ird\\', exit_code=0, snapshot_id="ab" * 32, bytes_added=10,
                     files=3, invoked=True)
    run.add_secret("hunter2hunter2")
    run.error = "failed for hunter2hunter2\nsecond line"
    text = metrics_text(run, {("haeedge_last_exit_code", '{command="verify",profile=""}'): "4",
                              ("haeedge_custom_thing", '{a="b"}'): "1"})
    m = parse_prometheus(text)
    assert m["haeedge_last_exit_code"][(("command", "verify"), ("profile", ""))] == 4  # other series kept
    assert m["haeedge_custom_thing"][(("a", "b"),)] == 1
    assert parse_metrics(text)[("haeedge_last_files", '{command="backup",profile="we\\"ird\\\\"}')] == "3"
    line = log_line(run)
    assert line.endswith("\n") and line.count("\n") == 1
    assert "hunter2" not in line and 'error="failed for *** second line"' in line
