"""Command line > environment > profile > defaults, for every option of every command (issue 12, defect 2).

A profile's ``verify: {read_data_subset: 10%}`` used to win over a
command-line ``verify --read-data`` (1 of 25 packs read): click lays a
profile under the command line option by option, while the command combined
two options into one setting. The generic test below walks every registered
command's parameters and resolves them exactly as a run does (the group's
callback applies the profile; ``profile_under_command_line`` is what
``pass_app`` hands each command body), without running the command:

- a profile holding a value for *every* option of the command, and the
  command line giving one of them: the command line's value is used, the
  profile's values for the other options of the same declared setting are
  dropped, and the profile's values for every unrelated option still apply;
- an option with an environment variable: the environment beats the profile,
  the command line beats both;
- every global setting a profile holds (repository, password, log file, ...):
  the command line and the environment beat it.
"""

from __future__ import annotations

import json
import os

import click
import pytest

from haeedge.cli.app import cli as root_command
from haeedge.cli.context import built_in_default, profile_under_command_line, settings_of
from haeedge.cli.profiles import command_specs
from tests.support.ops import run_cli, write_config
from tests.support.repos import init_library_repo


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


def _settable(cmd: click.Command) -> list[click.Parameter]:
    """The parameters a profile can set (as ``command_specs`` reads them)."""
    return [p for p in cmd.params if p.expose_value and not p.is_eager and p.name]


COMMANDS = list(_commands(root_command))
CASES = [(path, p.name) for path, cmd in COMMANDS for p in _settable(cmd)]


def _values(p: click.Parameter) -> tuple[object, object]:
    """(profile value, command-line value) of a parameter: valid for its type, and different."""
    t = p.type
    if isinstance(p, click.Option) and p.is_flag and not p.count:
        return False, True
    if isinstance(t, click.Choice):
        one, two = t.choices[0], t.choices[1]
    elif isinstance(t, click.types.IntParamType | click.types.FloatParamType) or t.name == "N|unlimited":
        one, two = 5, 3
    else:
        one, two = "from-profile", "from-command-line"
    if p.multiple or p.nargs == -1:
        return [one], [two]
    return one, two


def _positional(cmd: click.Command, given: dict[str, object]) -> list[str]:
    out: list[str] = []
    for p in cmd.params:
        if isinstance(p, click.Argument):
            if p.name in given:
                v = given[p.name]
                out += [str(x) for x in v] if isinstance(v, list) else [str(v)]
            elif p.required:
                out.append("1a2b3c4d")
    return out


def _options_argv(cmd: click.Command, given: dict[str, object]) -> list[str]:
    words: list[str] = []
    for p in cmd.params:
        if not isinstance(p, click.Option) or not p.expose_value or not p.name:
            continue
        if p.name in given:
            v = given[p.name]
            if p.is_flag:
                words.append(p.opts[0] if v else p.secondary_opts[0])
            else:
                for x in v if isinstance(v, list) else [v]:
                    words += [p.opts[0], str(x)]
        elif p.required:
            words += [p.opts[0], "required-value"]
    return words


def _section(path: tuple[str, ...], values: dict[str, object]) -> str:
    """The YAML of a profile section setting ``values`` for the command at ``path`` (JSON is YAML)."""
    body = json.dumps(values)
    for name in reversed(path):
        body = json.dumps({name: json.loads(body)})
    return body


def _resolve(tmp_path, path: tuple[str, ...], argv: list[str], profile_values: dict[str, object],
             global_args: tuple[str, ...] = ()) -> tuple[dict, object]:
    """Parse ``haeedge -c CFG --profile p [global_args] PATH... argv`` as a run does; return (params, app)."""
    keys = {name.rstrip("_"): value for name, value in profile_values.items()}  # as a profile names them
    doc = {"profiles": {"p": {"repository": "/nowhere", **json.loads(_section(path, keys))}}}
    cfg = write_config(tmp_path / "cfg.yaml", json.dumps(doc))
    root = root_command.make_context("haeedge", ["-c", str(cfg), "--profile", "p", *global_args, *path])
    with root:
        root.invoke(root_command.callback, **root.params)  # the group: applies the profile
        ctx, cmd = root, root_command
        for i, name in enumerate(path):
            cmd = cmd.commands[name]
            ctx = cmd.make_context(name, list(argv) if i == len(path) - 1 else list(path[i + 1:]), parent=ctx)
        with ctx:
            return profile_under_command_line(ctx, dict(ctx.params)), ctx.obj if ctx.obj else root.obj


def _converted(cmd: click.Command, name: str, value: object) -> object:
    p = next(p for p in cmd.params if p.name == name)
    with click.Context(cmd) as ctx:
        return p.type_cast_value(ctx, value)


def _default(cmd: click.Command, name: str) -> object:
    return built_in_default(cmd, name)


def test_every_command_body_gets_its_options_through_the_precedence_hook():
    """A command that bypassed ``pass_app`` could combine options behind the hook's back."""
    missing = [" ".join(path) for path, cmd in COMMANDS if not getattr(cmd.callback, "resolves_profile", False)]
    assert not missing, f"commands not using pass_app: {missing}"


def test_every_option_is_known_to_the_config_file():
    specs = command_specs(root_command)
    for path, cmd in COMMANDS:
        spec = specs[path[0]]
        for name in path[1:]:
            spec = spec.subcommands[name]
        assert {p.name for p in _settable(cmd)} <= {ps.name for ps in spec.params.values()}, path


@pytest.mark.parametrize("path,name", CASES, ids=[f"{' '.join(p)}:{n}" for p, n in CASES])
def test_command_line_beats_profile(tmp_path, monkeypatch, path, name):
    for var in [v for v in os.environ if v.startswith("HAEEDGE_")]:
        monkeypatch.delenv(var)
    cmd = dict(COMMANDS)[path]
    params = {p.name: p for p in _settable(cmd)}
    profile_values = {n: _values(p)[0] for n, p in params.items()}
    cli_value = _values(params[name])[1]
    argv = _options_argv(cmd, {name: cli_value}) + ["--", *_positional(cmd, {name: cli_value})]
    resolved, _app = _resolve(tmp_path, path, argv, profile_values)

    assert resolved[name] == _converted(cmd, name, cli_value), "the command line must win over the profile"
    same_setting = {n for group in settings_of(cmd) if name in group for n in group} - {name}
    for other, p in params.items():
        if other == name:
            continue
        if other in same_setting:
            assert resolved[other] == _default(cmd, other), (
                f"{other}: a profile's value must not blend with --{name.replace('_', '-')} given on the "
                "command line (they are one setting)")
        elif not p.required:  # a required one is given on the command line here too
            assert resolved[other] == _converted(cmd, other, profile_values[other]), (
                f"{other}: the profile's value must still apply")


ENV_CASES = [(path, p.name) for path, cmd in COMMANDS for p in _settable(cmd)
             if isinstance(p, click.Option) and p.envvar]


@pytest.mark.parametrize("path,name", ENV_CASES, ids=[f"{' '.join(p)}:{n}" for p, n in ENV_CASES])
def test_environment_beats_profile_and_command_line_beats_environment(tmp_path, monkeypatch, path, name):
    cmd = dict(COMMANDS)[path]
    p = next(p for p in cmd.params if p.name == name)
    profile_value, cli_value = _values(p)
    monkeypatch.setenv(p.envvar, "from-environment")
    resolved, _ = _resolve(tmp_path, path, _options_argv(cmd, {}) + ["--", *_positional(cmd, {})],
                           {name: profile_value})
    assert resolved[name] == "from-environment"
    resolved, _ = _resolve(tmp_path, path, _options_argv(cmd, {name: cli_value}) + ["--", *_positional(cmd, {})],
                           {name: profile_value})
    assert resolved[name] == _converted(cmd, name, cli_value)


#: Global settings a profile holds: (profile key, profile value, option, its environment variable, read back).
GLOBALS = [
    ("repository", "/from-profile", "-r", "HAEEDGE_REPOSITORY", lambda app: app.repos[0]),
    ("password_file", "/from-profile", "--password-file", "HAEEDGE_PASSWORD_FILE", lambda app: app.password_file),
    ("password_command", "from-profile", "--password-command", "HAEEDGE_PASSWORD_COMMAND",
     lambda app: app.password_command),
    ("identity_file", "/from-profile", "--identity-file", "HAEEDGE_IDENTITY_FILE", lambda app: app.identity_file),
    ("replica_policy", "continue", "--replica-policy", "HAEEDGE_REPLICA_POLICY",
     lambda app: "continue" if app.replica_policy == "continue" else "fail"),
    ("log_file", "/from-profile", "--log-file", "HAEEDGE_LOG_FILE", lambda app: app.run.log_file),
    ("metrics_file", "/from-profile", "--metrics-file", "HAEEDGE_METRICS_FILE", lambda app: app.run.metrics_file),
]


@pytest.mark.parametrize("key,profile_value,option,envvar,read", GLOBALS, ids=[g[0] for g in GLOBALS])
def test_global_settings_command_line_and_environment_beat_profile(tmp_path, monkeypatch, key, profile_value,
                                                                   option, envvar, read):
    for var in [v for v in os.environ if v.startswith("HAEEDGE_")]:
        monkeypatch.delenv(var)
    other = "fail" if key == "replica_policy" else "/from-other"

    def app_for(global_args: tuple[str, ...]):
        doc = {"profiles": {"p": {"repository": "/nowhere", key: profile_value}}}
        cfg = write_config(tmp_path / "cfg.yaml", json.dumps(doc))
        root = root_command.make_context("haeedge", ["-c", str(cfg), "--profile", "p", *global_args, "snapshots"])
        with root:
            root.invoke(root_command.callback, **root.params)
            return root.obj

    assert read(app_for(())) == profile_value
    assert read(app_for((option, other))) == other
    monkeypatch.setenv(envvar, other)
    assert read(app_for(())) == other
    if key == "password_file":  # one setting: a password command given elsewhere drops the profile's file
        monkeypatch.delenv(envvar)
        app = app_for(("--password-command", "true"))
        assert app.password_file is None and app.password_command == "true"


def test_verify_read_data_on_the_command_line_reads_every_pack(cli, tmp_path):
    """The drill's case through the real CLI: the profile says a part, the command line says all."""
    handle = init_library_repo(cli.repo_path, pack_size=1 << 20)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        (src / f"f{i}").write_bytes(os.urandom(900_000))
    cli("-q", "backup", src).ok()
    packs = [p.name for p in handle.objects("data")]
    assert len(packs) >= 4, "the test needs several packs"
    # A deterministic part N/M of the packs that is neither none nor all of them.
    part, count = next((f"{n}/{m}", c) for m in range(2, 20) for n in range(1, m + 1)
                        if 0 < (c := sum(int(p[:8], 16) % m == n - 1 for p in packs)) < len(packs))
    cfg = write_config(tmp_path / "cfg.yaml", f"""
profiles:
  weekly:
    repository: {cli.repo_path}
    password_file: {cli.password_file}
    verify:
      read_data_subset: {part}
""")
    args = ("-c", cfg, "--profile", "weekly", "--json", "verify")
    r = run_cli(cli, *args)
    assert r.code == 0, r.describe()
    subset = r.json()
    assert subset["packs"] == len(packs) and subset["packs_read"] == count, subset  # the profile applies...
    r = run_cli(cli, *args, "--read-data")
    assert r.code == 0, r.describe()
    full = r.json()
    assert full["packs_read"] == len(packs), full  # ...until the command line says otherwise


#: Options whose help names another option of the same command, yet are independent settings: the one
#: qualifies what the other does, and a profile's value for it may well stand beside a command-line value
#: for the other. Every other such pair must be declared one setting (``one_setting``).
INDEPENDENT = {
    ("backup", "stdin", "stdin_filename"), ("backup", "stdin_filename", "stdin"),
    ("backup", "stdin_filename", "stdin_from_command"),  # the stream's name, whatever produces it
    ("forget", "max_unused", "prune"),  # how prune repacks, when it runs
    # forget's --keep-* rules deliberately add up with a profile's (tests/lifecycle/test_forget.py):
    # dropping a profile's keep_tag because --keep-last was typed would remove snapshots meant to stay.
    ("init", "host", "recipient_file"), ("key add", "host", "writer"),  # the host a writer key signs for
    ("init", "object_lock_mode", "object_lock_days"),  # the mode matters only with days; its default stands
    ("tag", "all_", "hosts"), ("tag", "all_", "tags"),  # --all within the filters
    ("restore", "delete", "dry_run"),  # --dry-run lists what --delete would remove
}


def test_options_that_name_each_other_are_one_setting_or_known_independent():
    """Catches the next verify: two options that interact, but are not declared one setting."""
    import re

    undeclared = []
    for path, cmd in COMMANDS:
        by_opt = {o: p.name for p in cmd.params for o in getattr(p, "opts", []) if o.startswith("--")}
        grouped = {frozenset((a, b)) for group in settings_of(cmd) for a in group for b in group if a != b}
        for p in cmd.params:
            for opt in re.findall(r"--[a-z][a-z-]+", getattr(p, "help", None) or ""):
                other = by_opt.get(opt)
                if other is None or other == p.name or frozenset((p.name, other)) in grouped:
                    continue
                if (" ".join(path), p.name, other) not in INDEPENDENT:
                    undeclared.append(f"{' '.join(path)}: {p.name} names {opt}")
    assert not undeclared, undeclared
