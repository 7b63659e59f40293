"""Config file profiles: strict checking with file:line:key errors, and defaults the command line overrides."""

from __future__ import annotations

import re

import pytest

from haeedge.cli.app import cli as root_command
from haeedge.cli.profiles import command_specs
from haeedge.config_file import ConfigError, load_config
from tests.support.ops import ROOT, write_config


@pytest.fixture(scope="module")
def specs():
    return command_specs(root_command)


def load(tmp_path, text: str, specs):
    return load_config(str(write_config(tmp_path / "haeedge.yaml", text)), specs)


def test_example_file_is_valid_and_complete(specs):
    cfg = load_config(str(ROOT / "config.example.yaml"), specs)
    nightly = cfg.select(None)
    assert nightly.name == "nightly" and len(nightly.repositories) == 2
    assert nightly.hooks.on_success and nightly.hooks.on_failure and nightly.log_file and nightly.metrics_file
    backup = nightly.commands["backup"]
    assert backup["paths"] and backup["excludes"] and backup["tags"] == ["nightly"]
    assert backup["full_every"] == 7 and backup["full_if_older_than"] == "7d"
    assert nightly.commands["forget"]["keep_daily"] == 7
    assert nightly.commands["forget"].get("keep_tags", nightly.commands["forget"].get("keep_tag")) == ["keep-forever"]
    pg = cfg.select("postgres")
    assert pg.commands["backup"]["stdin_from_command"] is True and pg.commands["backup"]["paths"][0] == "pg_dump"
    # Documented field by field: every key used in the example carries a comment somewhere in the file.
    text = (ROOT / "config.example.yaml").read_text()
    assert text.count("#") > 60


BAD = [
    # (yaml, line, key path, words in the problem)
    ("profiles:\n  a:\n    repository: /r\n    colour: red\n", 4, "profiles.a.colour", "unknown key"),
    ("profile:\n  a: {}\n", 1, "profile", "unknown key"),
    ("profiles:\n  a:\n    backup:\n      pathz: [/etc]\n", 4, "profiles.a.backup.pathz", "unknown key"),
    ("profiles:\n  a:\n    backup:\n      paths: /etc\n", 4, "profiles.a.backup.paths", "expected a list"),
    ("profiles:\n  a:\n    backup:\n      full_every: weekly\n", 4, "profiles.a.backup.full_every",
     "expected an integer"),
    ("profiles:\n  a:\n    backup:\n      full_every: 0\n", 4, "profiles.a.backup.full_every", "range"),
    ("profiles:\n  a:\n    backup:\n      one_file_system: 'yes'\n", 4, "profiles.a.backup.one_file_system",
     "expected true or false"),
    ("profiles:\n  a:\n    repository: [/r, [/x]]\n", 3, "profiles.a.repository[1]", "expected a string"),
    ("profiles:\n  a:\n    password_file: 12\n", 3, "profiles.a.password_file", "expected a string"),
    ("profiles:\n  a:\n    replica_policy: sometimes\n", 3, "profiles.a.replica_policy", "one of"),
    ("profiles:\n  a:\n    hooks:\n      on_sucess: [true]\n", 4, "profiles.a.hooks.on_sucess", "unknown key"),
    ("profiles:\n  a:\n    hooks:\n      timeout: soon\n", 4, "profiles.a.hooks.timeout", "expected a number"),
    ("profiles:\n  a:\n    retention:\n      keep_dayly: 7\n", 4, "profiles.a.retention.keep_dayly", "unknown key"),
    ("profiles:\n  a:\n    log_file: /a\n    log_file: /b\n", 4, "profiles.a.log_file", "duplicate key"),
    ("profiles:\n  a:\n    repository: /r\n    backend_options:\n      /other: {}\n", 5,
     "profiles.a.backend_options", "not in 'repository'"),
    ("default_profile: b\nprofiles:\n  a: {}\n", 1, "default_profile", "not defined"),
    ("profiles:\n  a:\n    verify:\n      read_data: maybe\n", 4, "profiles.a.verify.read_data",
     "expected true or false"),
    ("profiles:\n  a:\n    password: hunter2hunter2\n", 3, "profiles.a.password", "password_file"),
]


@pytest.mark.parametrize("text,line,key,words", BAD, ids=[b[2] for b in BAD])
def test_mistakes_name_file_line_and_key(tmp_path, specs, text, line, key, words):
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, text, specs)
    msg = ei.value.message
    assert re.match(rf"^{re.escape(str(tmp_path / 'haeedge.yaml'))}:{line}:\d+: {re.escape(key)}: ", msg), msg
    assert words in msg, msg
    assert ei.value.exit_code == 2


def test_values_are_never_echoed(tmp_path, specs):
    secret = "s3cr3t-Value-NEVER-shown"
    for text in (f"profiles:\n  a:\n    password_file: [{secret}]\n",
                 f"profiles:\n  a:\n    password_command: {{x: {secret}}}\n",
                 f"profiles:\n  a:\n    {secret}: 1\n".replace(secret, "pw"),
                 f"profiles:\n  a:\n    hooks:\n      on_success: '{secret} \"unbalanced'\n",
                 f"profiles:\n  a:\n    backup:\n      tags: {secret}\n"):
        with pytest.raises(ConfigError) as ei:
            load(tmp_path, text, specs)
        assert secret not in str(ei.value) and secret not in (ei.value.hint or "")


def test_yaml_syntax_error_has_a_line(tmp_path, specs):
    with pytest.raises(ConfigError, match=r"haeedge\.yaml:3:\d+: not valid YAML: mapping values"):
        load(tmp_path, "profiles:\n  a:\n    repository: /r: x\n  b: {}\n", specs)


def test_anchors_merge_and_overrides(tmp_path, specs):
    cfg = load(tmp_path, """
version: 1
x-base: &base
  repository: /srv/r
  password_file: /etc/pw
  backup: {tags: [base], exclude: ['*.tmp']}
profiles:
  one:
    <<: *base
  two:
    <<: *base
    backup: {tags: [two]}
    hooks: {on_success: 'notify --ok "all good"', commands: [backup, verify]}
""", specs)
    one, two = cfg.profiles["one"], cfg.profiles["two"]
    assert one.repositories == ["/srv/r"] and one.commands["backup"] == {"tags": ["base"], "excludes": ["*.tmp"]}
    assert two.commands["backup"] == {"tags": ["two"]}  # a merge is shallow: the section is replaced
    assert two.hooks.on_success == ["notify", "--ok", "all good"] and two.hooks.commands == ("backup", "verify")
    with pytest.raises(ConfigError, match="several profiles and none chosen"):
        cfg.select(None)
    with pytest.raises(ConfigError, match="no profile named 'three'"):
        cfg.select("three")


def test_option_names_by_long_option_or_parameter(tmp_path, specs):
    cfg = load(tmp_path, """
profiles:
  default:
    backup:
      exclude-file: [/a]
      excludes: ['*.o']
      full-if-older-than: 3d
      compression: 5
""", specs)
    assert cfg.select(None).commands["backup"] == {"exclude_files": ["/a"], "excludes": ["*.o"],
                                                   "full_if_older_than": "3d", "compression": 5}


# ---------------------------------------------------------------------- through the CLI


def _tree(root):
    (root / "a").mkdir(parents=True)
    (root / "a" / "one.txt").write_text("one\n")
    (root / "a" / "skip.tmp").write_text("tmp\n")
    (root / "b.txt").write_text("b\n")
    return root


def test_profile_gives_defaults_and_the_command_line_wins(cli, fast_repo, tmp_path):
    src = _tree(tmp_path / "src")
    other = _tree(tmp_path / "other")
    cfg = write_config(tmp_path / "cfg.yaml", f"""
profiles:
  nightly:
    repository: {cli.repo_path}
    password_file: {cli.password_file}
    backup:
      paths: [{src}]
      exclude: ['*.tmp']
      tags: [nightly]
  other:
    repository: {tmp_path / 'nowhere'}
    password_file: {cli.password_file}
""")
    env = {"HAEEDGE_CONFIG": str(cfg), "HAEEDGE_PROFILE": "nightly"}
    unset = ("HAEEDGE_REPOSITORY", "HAEEDGE_PASSWORD_FILE")
    cli("-q", "backup", env=env, unset=unset).ok()
    r = cli("ls", "latest", env=env, unset=unset).ok()
    assert f"{src}/a/one.txt" in r.stdout and "skip.tmp" not in r.stdout
    (s1,) = cli("--json", "snapshots", env=env, unset=unset).ok().json()
    assert s1["tags"] == ["nightly"] and s1["paths"] == [str(src)]
    # Command-line options and arguments override the profile's.
    cli("-q", "backup", other, "--tag", "manual", env=env, unset=unset).ok()
    s2 = cli("--json", "snapshots", env=env, unset=unset).ok().json()[-1]
    assert s2["tags"] == ["manual"] and s2["paths"] == [str(other)]
    # -r and the environment override the profile's repository; --profile overrides HAEEDGE_PROFILE.
    r = cli("--profile", "other", "snapshots", env=env, unset=unset)
    assert r.code == 10 and "nowhere" in r.stderr
    cli("--profile", "other", "-r", cli.repo_path, "snapshots", env=env, unset=unset).ok()
    r = cli("--profile", "other", "snapshots", env={**env, "HAEEDGE_REPOSITORY": str(cli.repo_path)},
            unset=("HAEEDGE_PASSWORD_FILE",))
    assert r.code == 0, r.describe()


def test_bad_config_fails_every_command_with_exit_2(cli, tmp_path):
    cfg = write_config(tmp_path / "bad.yaml", "profiles:\n  default:\n    backup:\n      tagz: [x]\n")
    for args in (["-c", cfg, "backup"], ["-c", cfg, "snapshots"]):
        r = cli(*args)
        assert r.code == 2 and r.stdout == ""
        assert f"{cfg}:4:7: profiles.default.backup.tagz: unknown key" in r.stderr, r.stderr
    r = cli("--profile", "x", "snapshots", env={"XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert r.code == 2 and "no config file given and none found" in r.stderr


def test_default_config_location(cli, fast_repo, tmp_path):
    xdg = tmp_path / "xdg"
    (xdg / "haeedge").mkdir(parents=True)
    write_config(xdg / "haeedge" / "config.yaml", f"profiles:\n  mine:\n    repository: {cli.repo_path}\n"
                                                 f"    password_file: {cli.password_file}\n")
    r = cli("--profile", "mine", "--json", "snapshots", env={"XDG_CONFIG_HOME": str(xdg)},
            unset=("HAEEDGE_REPOSITORY", "HAEEDGE_PASSWORD_FILE"))
    assert r.code == 0 and r.json() == [], r.describe()


def test_relative_files_are_relative_to_the_config_file(tmp_path, specs):
    cfg = load(tmp_path, "profiles:\n  a:\n    password_file: secrets/pw\n    log_file: ~/h.log\n"
                         "    metrics_file: /abs/m.prom\n", specs).select("a")
    assert cfg.password_file == str(tmp_path / "secrets" / "pw")
    assert cfg.log_file == "~/h.log" and cfg.metrics_file == "/abs/m.prom"
