"""Every command: help with a purpose and an example, --json accepted and documented, shell completion."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys

import click
import pytest

from haeedge.cli import main
from haeedge.cli.app import cli as root
from tests.support.ops import ROOT, documented_schemas, validate


def _walk(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, cmd in sorted(group.commands.items()):
        path = (*prefix, name)
        yield path, cmd
        if isinstance(cmd, click.Group):
            yield from _walk(cmd, path)


ALL = list(_walk(root))
LEAVES = [(p, c) for p, c in ALL if not isinstance(c, click.Group)]


def test_every_command_module_is_listed_in_the_app():
    """Commands are listed explicitly in haeedge/cli/app.py: a new cmd_*.py must be added there."""
    from haeedge.cli.app import COMMAND_MODULES

    on_disk = sorted(f[:-3] for f in os.listdir(ROOT / "haeedge" / "cli") if re.fullmatch(r"cmd_\w+\.py", f))
    assert sorted(COMMAND_MODULES) == on_disk
    for module in COMMAND_MODULES:  # the command NAME lives in cmd_NAME (the group loads it by that name)
        assert importlib.import_module(f"haeedge.cli.{module}").command.name == module.removeprefix("cmd_")
    assert {m.removeprefix("cmd_") for m in COMMAND_MODULES} == set(root.commands)


def test_a_command_loads_only_its_own_module():
    """Startup time of a cron run: 'snapshots' does not import the other commands, the archiver,
    the restorer, prune or mount."""
    code = ("import json, sys; from haeedge.cli.app import cli; "
            "cli.main(['snapshots', '--help'], standalone_mode=False); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('haeedge.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    assert [m for m in loaded if m.startswith("haeedge.cli.cmd_")] == ["haeedge.cli.cmd_snapshots"], loaded
    for heavy in ("haeedge.archiver", "haeedge.restorer", "haeedge.operations.prune", "haeedge.mount"):
        assert heavy not in loaded, heavy


def test_command_modules_do_not_import_each_other():
    """What two commands share lives in cli/shared.py (or context.py, selection.py), not in one of them."""
    import ast

    cli_dir = ROOT / "haeedge" / "cli"
    crossing = []
    for path in sorted(cli_dir.glob("cmd_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            crossing += [f"{path.name}: {n}" for n in names if re.search(r"(^|\.)cmd_\w+$", n)]
    assert len(list(cli_dir.glob("cmd_*.py"))) > 15
    assert crossing == []


def test_the_expected_commands_are_registered():
    names = {" ".join(p) for p, _ in ALL}
    assert {"backup", "restore", "verify", "snapshots", "ls", "init", "unlock", "dump", "find", "diff", "stats",
            "tag", "completion"} <= names


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in ALL])
def test_help_has_purpose_and_example(path, capsys):
    assert main([*path.split(), "--help"]) == 0
    text = capsys.readouterr().out
    cmd = dict((" ".join(p), c) for p, c in ALL)[path]
    purpose = (cmd.help or "").strip().splitlines()[0] if cmd.help else ""
    assert purpose and len(purpose) <= 100 and purpose.endswith("."), f"{path}: no one-line purpose: {purpose!r}"
    assert " ".join(purpose.split()) in " ".join(text.split())
    m = re.search(r"^\s*Examples?:\s*\n((?:\s+\S.*\n?)+)", text, re.M)
    assert m, f"haeedge {path} --help has no 'Example:' block:\n{text}"
    assert "haeedge" in m.group(1) or isinstance(cmd, click.Group), m.group(1)


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in LEAVES])
def test_every_command_accepts_json(path, capsys):
    assert main([*path.split(), "--json", "--help"]) == 0, f"haeedge {path} does not accept --json"
    capsys.readouterr()


def test_every_command_has_a_documented_json_schema():
    documented = documented_schemas()
    missing = [" ".join(p) for p, _ in LEAVES if " ".join(p) not in documented]
    assert not missing, f"docs/json.md has no 'json schema=' block for: {', '.join(missing)}"
    stale = sorted(set(documented) - {" ".join(p) for p, _ in LEAVES})
    assert not stale, f"docs/json.md documents commands that do not exist: {stale}"


def test_validator_rejects_what_it_should(schemas):
    validate({"removed": 1}, schemas["unlock"])
    for bad, schema in (({"removed": -1}, "unlock"), ({}, "unlock"), ({"removed": "1"}, "unlock"),
                        ({"shell": "tcsh", "script": "", "install": ""}, "completion"),
                        ({"shell": "bash", "script": "", "install": "", "x": 1}, "completion"),
                        ([{"id": "zz"}], "snapshots")):
        with pytest.raises(AssertionError):
            validate(bad, schemas[schema])


def test_json_output_of_other_commands_validates(cli, schemas, tmp_path):
    """The commands not already validated by the other ops tests, run for real."""
    r = cli("--json", "init").ok()
    validate(r.json(), schemas["init"])
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(5000))
    r = cli("--json", "backup", src).ok()
    (line,) = r.stdout.splitlines()
    validate(json.loads(line), schemas["backup"])
    (src / "g").write_text("more")
    validate(cli("backup", "--json", src).ok().json(), schemas["backup"])
    for args, schema in ((["verify", "--read-data"], "verify"), (["unlock"], "unlock"),
                         (["completion", "zsh"], "completion"), (["forget", "--keep-last", "1", "--dry-run"], "forget"),
                         (["prune", "--dry-run"], "prune"),
                         (["rewrite", "--exclude", "g", "--dry-run"], "rewrite"),
                         (["rewrite", "--exclude", "g"], "rewrite"), (["repair", "index", "--dry-run"], "repair index"),
                         (["repair", "snapshots", "--dry-run"], "repair snapshots"), (["key", "list"], "key list"),
                         (["key", "signers"], "key signers"), (["trust", "show"], "trust show")):
        if tuple(args[:2]) not in {p[:2] for p, _ in LEAVES} and (args[0],) not in {p[:1] for p, _ in LEAVES}:
            continue
        r = cli("--json", *args)
        assert r.code == 0, r.describe()
        validate(r.json(), schemas[schema])
        assert r.stdout.count("\n") == 1, "one JSON document on one line"
    # copy into a second repository, and sync two replicas.
    other = tmp_path / "other"
    cli("-r", other, "init").ok()
    r = cli("--json", "copy", "--to", other).ok()
    validate(r.json(), schemas["copy"])
    replica = tmp_path / "replica"
    r = cli("--json", "-r", cli.repo_path, "-r", replica, "sync", env={"HAEEDGE_REPOSITORY": ""})
    if r.code == 0:
        validate(r.json(), schemas["sync"])
    else:  # an empty second location is not a repository yet: the error is clean, not JSON garbage
        assert r.stdout == "" and "Traceback" not in r.stderr, r.describe()


# ---------------------------------------------------------------------- completion


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(cli, shell):
    r = cli("completion", shell).ok()
    assert "_HAEEDGE_COMPLETE" in r.stdout and r.stderr == ""
    if shell == "bash":
        proc = subprocess.run(["bash", "-n"], input=r.stdout, text=True, capture_output=True)
        assert proc.returncode == 0, proc.stderr


def test_completion_callback_completes_commands_and_options(cli):
    r = cli(env={"_HAEEDGE_COMPLETE": "bash_complete", "COMP_WORDS": "haeedge st", "COMP_CWORD": "1"})
    assert r.code == 0 and {"plain,stats"} <= set(r.stdout.split()), r.describe()
    r = cli(env={"_HAEEDGE_COMPLETE": "fish_complete", "COMP_WORDS": "haeedge backup --stdin-f",
                 "COMP_CWORD": "--stdin-f"})
    assert "--stdin-filename" in r.stdout and "--stdin-from-command" in r.stdout, r.describe()
    r = cli(env={"_HAEEDGE_COMPLETE": "zsh_complete", "COMP_WORDS": "haeedge completion ", "COMP_CWORD": "2"})
    assert all(s in r.stdout for s in ("bash", "zsh", "fish")), r.describe()


def test_operations_doc_has_schedules_and_runbook():
    text = (ROOT / "docs" / "operations.md").read_text()
    assert re.search(r"^\s*\d+ \d+ \* \* \* .*haeedge .*-q", text, re.M), "a crontab line"
    for needle in ("[Service]", "[Timer]", "Nice=", "IOSchedulingClass=", "OnCalendar=", "Persistent=true",
                   "host is gone", "cloud", "fog node"):
        assert needle in text, needle
    # Every haeedge command the document shows is a real command.
    names = {p[0] for p, _ in ALL}
    takes_value = {"-c", "--config", "--profile", "-r", "--repo", "--password-file", "--password-command",
                   "--log-file", "--metrics-file", "--replica-policy", "--sftp-key-file", "--sftp-known-hosts"}
    shown = 0
    code = re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M) + re.findall(r"`([^`\n]+)`", text)
    for line in "\n".join(code).splitlines():
        line = line.split("#", 1)[0]  # not comments
        for m in re.finditer(r"(?:^|[\s;|&(`$])haeedge((?: \S+)+)", line):
            words = m.group(1).split()
            while words and words[0].startswith("-"):
                words = words[2:] if words[0] in takes_value else words[1:]
            if words and re.fullmatch(r"[a-z]+", words[0]):
                assert words[0] in names, f"docs/operations.md shows an unknown command: {line.strip()}"
                shown += 1
    assert shown >= 10
