"""Configuration profiles: a YAML file of named sets of defaults for the CLI.

An administrator runs ``haeedge -c /etc/haeedge.yaml --profile nightly backup``
from cron instead of a long command line. A profile holds the global settings
(repository locations, password source, backend options, hooks, log and
metrics files) and, per command, defaults for that command's own options
(``backup: {paths: [...], exclude: [...]}``); the command line always wins.

Mistakes in a file that runs unattended must fail loudly and precisely, so
the file is read as YAML *nodes* (which carry line numbers), and every
unknown key or wrongly typed value is an error naming the file, the line and
the key. Values are never echoed in errors: they may be secrets.

Command sections are checked against the commands that are actually
registered (``command_specs``), so the file's schema can never drift from
the CLI. ``config.example.yaml`` documents every field.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from haeedge.backends.replicated import REPLICA_POLICIES
from haeedge.durations import parse_duration
from haeedge.errors import UsageError
from haeedge.monitoring import DEFAULT_HOOK_COMMANDS, DEFAULT_HOOK_TIMEOUT, Hooks

CONFIG_VERSION = 1
#: Where ``--profile`` without ``-c`` looks, in order.
DEFAULT_LOCATIONS = ("{xdg}/haeedge/config.yaml", "/etc/haeedge/config.yaml")
#: backend_options keys whose values are secrets (scrubbed from logs and hook environments).
SECRET_OPTION_WORDS = ("secret", "password", "passphrase", "token", "credential")

_TAG_NAMES = {
    "tag:yaml.org,2002:str": "a string", "tag:yaml.org,2002:int": "an integer", "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean", "tag:yaml.org,2002:null": "nothing (null)",
    "tag:yaml.org,2002:seq": "a list", "tag:yaml.org,2002:map": "a mapping",
    "tag:yaml.org,2002:timestamp": "a date", "tag:yaml.org,2002:binary": "binary data",
}

#: The retention policy's fields when no ``forget`` command is registered to describe them.
RETENTION_FIELDS: dict[str, str] = {
    "keep_last": "int", "keep_hourly": "int", "keep_daily": "int", "keep_weekly": "int", "keep_monthly": "int",
    "keep_yearly": "int", "keep_within": "duration", "keep_tag": "str_list", "group_by": "str", "prune": "bool",
}


class ConfigError(UsageError):
    """A configuration file problem: ``FILE:LINE:COLUMN: key: problem`` (exit code 2)."""


@dataclass
class ParamSpec:
    """One command option as the config file sees it."""

    name: str  # the click parameter name: the key in ``default_map``
    kind: str  # "bool", "int", "float", "str" or "count"
    multiple: bool = False
    convert: Callable[[Any], Any] | None = None  # raises ValueError with a message on a bad value
    display: str = ""  # the name shown in errors: the long option without dashes


@dataclass
class CommandSpec:
    params: dict[str, ParamSpec] = field(default_factory=dict)  # accepted key -> spec
    subcommands: dict[str, CommandSpec] = field(default_factory=dict)


@dataclass
class Profile:
    name: str
    source: str
    repositories: list[str] = field(default_factory=list)
    password_file: str | None = None
    password_command: str | None = None
    identity_file: str | None = None
    backend_options: dict[str, dict] = field(default_factory=dict)
    replica_policy: str | None = None
    #: KiB/s (--limit-upload / --limit-download).
    limit_upload: int | None = None
    limit_download: int | None = None
    log_file: str | None = None
    metrics_file: str | None = None
    hooks: Hooks = field(default_factory=Hooks)
    description: str = ""
    #: command name -> {param name: value}; groups nest their subcommands' sections.
    commands: dict[str, dict] = field(default_factory=dict)

    def secrets(self) -> list[str]:
        """Values that must never be written anywhere (backend passwords and keys)."""
        out: list[str] = []

        def walk(opts: dict) -> None:  # storage_options nest: {storage_options: {secret: ...}}
            for k, v in opts.items():
                if isinstance(v, dict):
                    walk(v)
                elif isinstance(v, str) and (k == "key" or any(w in k.lower() for w in SECRET_OPTION_WORDS)):
                    out.append(v)

        for opts in self.backend_options.values():
            walk(opts)
        return out


@dataclass
class ConfigFile:
    path: str
    profiles: dict[str, Profile]
    default_profile: str | None = None

    def select(self, name: str | None) -> Profile:
        """``name``, else ``default_profile``, else ``default``, else the only profile."""
        if name is None:
            name = self.default_profile or ("default" if "default" in self.profiles else None)
            if name is None and len(self.profiles) == 1:
                name = next(iter(self.profiles))
        if name is None:
            raise ConfigError(f"{self.path}: several profiles and none chosen",
                              hint=f"use --profile NAME (one of: {', '.join(sorted(self.profiles))})")
        if name not in self.profiles:
            known = ", ".join(sorted(self.profiles)) or "none"
            raise ConfigError(f"{self.path}: no profile named {name!r} (profiles: {known})")
        return self.profiles[name]


# ---------------------------------------------------------------------- reading nodes


class _Reader:
    def __init__(self, path: str):
        self.path = path
        self.constructor = yaml.constructor.SafeConstructor()

    def error(self, node: yaml.Node, key: str, problem: str) -> ConfigError:
        m = node.start_mark
        return ConfigError(f"{self.path}:{m.line + 1}:{m.column + 1}: {key}: {problem}")

    def what(self, node: yaml.Node) -> str:
        return _TAG_NAMES.get(node.tag, f"a value tagged {node.tag}")

    def mapping(self, node: yaml.Node, key: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """(key, key node, value node) in file order; merge keys (``<<: *anchor``) applied."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, f"expected a mapping, got {self.what(node)}")
        own = {id(k) for k, _v in node.value}
        try:
            self.constructor.flatten_mapping(node)
        except yaml.MarkedYAMLError as e:
            raise self.error(node, key, f"bad merge key: {e.problem}") from None
        # Merged keys come first; a key written in this mapping overrides them (YAML merge, shallow).
        out: dict[str, tuple[str, yaml.Node, yaml.Node]] = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode) or k.tag != "tag:yaml.org,2002:str":
                raise self.error(k, key, f"keys must be strings, got {self.what(k)}")
            name = str(k.value)
            prev = out.get(name)
            if prev is not None and id(k) in own and id(prev[1]) in own:
                first = prev[1].start_mark.line + 1
                raise self.error(k, _join(key, name), f"duplicate key (first given on line {first})")
            out[name] = (name, k, v)
        return list(out.values())

    def scalar(self, node: yaml.Node, key: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, key, f"expected a single value, got {self.what(node)}")
        return self.constructor.construct_object(node, deep=True)

    def string(self, node: yaml.Node, key: str, *, numbers: bool = False) -> str:
        ok = ("tag:yaml.org,2002:str",) + (("tag:yaml.org,2002:int", "tag:yaml.org,2002:float") if numbers else ())
        if not isinstance(node, yaml.ScalarNode) or node.tag not in ok:
            raise self.error(node, key, f"expected a string, got {self.what(node)}")
        return str(self.scalar(node, key)) if node.tag != "tag:yaml.org,2002:str" else str(node.value)

    def nonempty(self, node: yaml.Node, key: str) -> str:
        s = self.string(node, key)
        if not s.strip():
            raise self.error(node, key, "must not be empty")
        return s

    def file_name(self, node: yaml.Node, key: str) -> str:
        """A file name; relative ones are relative to this file (cron runs in $HOME, not where you wrote it)."""
        s = self.nonempty(node, key)
        if os.path.isabs(s) or s.startswith("~"):
            return s
        return os.path.join(os.path.dirname(os.path.abspath(os.path.expanduser(self.path))), s)

    def integer(self, node: yaml.Node, key: str, minimum: int | None = None) -> int:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:int":
            raise self.error(node, key, f"expected an integer, got {self.what(node)}")
        v = int(self.scalar(node, key))
        if minimum is not None and v < minimum:
            raise self.error(node, key, f"must be at least {minimum}")
        return v

    def number(self, node: yaml.Node, key: str) -> float:
        if not isinstance(node, yaml.ScalarNode) or node.tag not in ("tag:yaml.org,2002:int",
                                                                      "tag:yaml.org,2002:float"):
            raise self.error(node, key, f"expected a number, got {self.what(node)}")
        return float(self.scalar(node, key))

    def boolean(self, node: yaml.Node, key: str) -> bool:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:bool":
            raise self.error(node, key, f"expected true or false, got {self.what(node)}")
        return bool(self.scalar(node, key))

    def sequence(self, node: yaml.Node, key: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, key, f"expected a list, got {self.what(node)}")
        return list(node.value)

    def string_list(self, node: yaml.Node, key: str) -> list[str]:
        return [self.string(n, f"{key}[{i}]", numbers=True) for i, n in enumerate(self.sequence(node, key))]

    def strings(self, node: yaml.Node, key: str) -> list[str]:
        """A string or a list of strings."""
        if isinstance(node, yaml.SequenceNode):
            return self.string_list(node, key)
        return [self.string(node, key)]

    def argv(self, node: yaml.Node, key: str) -> list[str]:
        """A command: a list of arguments, or a string split like a shell would (no shell runs it)."""
        if isinstance(node, yaml.SequenceNode):
            argv = self.string_list(node, key)
        else:
            try:
                argv = shlex.split(self.string(node, key))
            except ValueError as e:
                raise self.error(node, key, f"cannot split into arguments: {e}") from None
        if not argv or not argv[0]:
            raise self.error(node, key, "the command is empty")
        return argv


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


# ---------------------------------------------------------------------- the file


def load_config(path: str, commands: Mapping[str, CommandSpec] | None = None) -> ConfigFile:
    """Read and check a whole file (every profile, not just the one used)."""
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise ConfigError(f"{where}: not valid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if root is None:
        raise ConfigError(f"{path}: the file is empty", hint="see config.example.yaml")
    r = _Reader(path)
    commands = commands or {}
    profiles: dict[str, Profile] = {}
    default_profile: str | None = None
    profiles_node: yaml.Node | None = None
    default_node: yaml.Node | None = None
    for key, knode, vnode in r.mapping(root, ""):
        if key == "version":
            if r.integer(vnode, key) != CONFIG_VERSION:
                raise r.error(vnode, key, f"this haeedge reads version {CONFIG_VERSION}")
        elif key == "default_profile":
            default_profile, default_node = r.nonempty(vnode, key), vnode
        elif key == "profiles":
            profiles_node = vnode
        elif key.startswith("x-"):
            continue  # a place for YAML anchors shared by profiles
        else:
            raise r.error(knode, key, "unknown key (expected version, default_profile, profiles or x-...)")
    if profiles_node is None:
        raise ConfigError(f"{path}: no 'profiles' mapping", hint="see config.example.yaml")
    for name, _knode, pnode in r.mapping(profiles_node, "profiles"):
        profiles[name] = _profile(r, name, pnode, commands)
    if not profiles:
        raise r.error(profiles_node, "profiles", "no profiles defined")
    if default_profile is not None and default_profile not in profiles:
        raise r.error(default_node, "default_profile", "names a profile that is not defined")
    return ConfigFile(path=path, profiles=profiles, default_profile=default_profile)


def _profile(r: _Reader, name: str, node: yaml.Node, commands: Mapping[str, CommandSpec]) -> Profile:
    prefix = f"profiles.{name}"
    p = Profile(name=name, source=r.path)
    retention: tuple[yaml.Node, yaml.Node] | None = None
    options_node: yaml.Node | None = None
    for key, knode, v in r.mapping(node, prefix):
        k = _join(prefix, key)
        if key == "repository":
            p.repositories = r.strings(v, k)
            if not p.repositories or not all(s.strip() for s in p.repositories):
                raise r.error(v, k, "must name at least one location")
        elif key == "password_file":
            p.password_file = r.file_name(v, k)
        elif key == "password_command":
            p.password_command = r.nonempty(v, k)
        elif key == "identity_file":
            p.identity_file = r.file_name(v, k)
        elif key == "backend_options":
            p.backend_options = _backend_options(r, v, k)
            options_node = v
        elif key == "replica_policy":
            p.replica_policy = r.string(v, k)
            if p.replica_policy not in REPLICA_POLICIES:
                raise r.error(v, k, f"must be one of {', '.join(REPLICA_POLICIES)}")
        elif key == "limit_upload":
            p.limit_upload = r.integer(v, k, minimum=1)
        elif key == "limit_download":
            p.limit_download = r.integer(v, k, minimum=1)
        elif key == "log_file":
            p.log_file = r.file_name(v, k)
        elif key == "metrics_file":
            p.metrics_file = r.file_name(v, k)
        elif key == "hooks":
            p.hooks = _hooks(r, v, k)
        elif key == "description":
            p.description = r.string(v, k)
        elif key == "retention":
            retention = (knode, v)
        elif key in commands:
            section = _command_section(r, commands[key], v, k)
            p.commands[key] = merge_defaults(p.commands.get(key, {}), section)
        else:
            raise r.error(knode, k, "unknown key" + _suggest(key, commands))
    if retention is not None:
        knode, v = retention
        if "forget" in commands:
            section = _command_section(r, commands["forget"], v, _join(prefix, "retention"))
        else:
            section = _static_retention(r, v, _join(prefix, "retention"))
        # An explicit ``forget:`` section is more specific than ``retention:``.
        p.commands["forget"] = merge_defaults(section, p.commands.get("forget", {}))
    if options_node is not None and p.repositories:
        for loc in p.backend_options:
            if loc not in p.repositories:
                raise r.error(options_node, _join(prefix, "backend_options"),
                              "names a location that is not in 'repository' (the options would be ignored)")
    return p


def _suggest(key: str, commands: Mapping[str, CommandSpec]) -> str:
    known = ["repository", "password_file", "password_command", "identity_file", "backend_options",
             "replica_policy", "limit_upload", "limit_download", "log_file", "metrics_file", "hooks", "retention",
             "description", *sorted(commands)]
    if key in ("password", "passphrase"):
        return " (passwords are never stored in the file: use password_file or password_command)"
    import difflib

    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})"


def _backend_options(r: _Reader, node: yaml.Node, key: str) -> dict[str, dict]:
    """Per-location options, each value checked against ``backends/options.py`` (with its FILE:LINE:COLUMN)."""
    from haeedge.backends.options import option_kinds

    out: dict[str, dict] = {}
    for loc, _kn, v in r.mapping(node, key):
        k = _join(key, loc)
        what, kinds = option_kinds(loc)
        opts: dict[str, Any] = {}
        for name, kn2, vn in r.mapping(v, k):
            kk = _join(k, name)
            kind = kinds.get(name)
            if kind is None:
                known = f"known: {', '.join(sorted(kinds))}" if kinds else "it takes none"
                raise r.error(kn2, kk, f"unknown option for {what} ({known})")
            opts[name] = _option_value(r, kind, vn, kk)
        out[loc] = opts
    return out


def _option_value(r: _Reader, kind: str, node: yaml.Node, key: str) -> Any:
    if kind == "mapping":
        return {n: _plain(r, x, _join(key, n)) for n, _k, x in r.mapping(node, key)}
    if kind in ("text", "file"):
        return r.nonempty(node, key)
    if kind == "bool":
        return r.boolean(node, key)
    if kind == "port":
        port = r.integer(node, key, minimum=1)
        if port > 65535:
            raise r.error(node, key, "must be at most 65535")
        return port
    if kind == "seconds":
        seconds = r.number(node, key)
        if not seconds > 0 or seconds != seconds or seconds == float("inf"):
            raise r.error(node, key, "must be a number of seconds above 0")
        return seconds
    return r.integer(node, key, minimum=1 if kind == "count" else 0)  # count, retries


def _plain(r: _Reader, node: yaml.Node, key: str) -> Any:
    """A value passed on as is (fsspec's storage_options): scalars, lists and mappings."""
    if isinstance(node, yaml.SequenceNode):
        return [_plain(r, x, f"{key}[{i}]") for i, x in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        return {n: _plain(r, x, _join(key, n)) for n, _k, x in r.mapping(node, key)}
    return r.scalar(node, key)


def _hooks(r: _Reader, node: yaml.Node, key: str) -> Hooks:
    h = Hooks()
    for name, knode, v in r.mapping(node, key):
        k = _join(key, name)
        if name == "on_success":
            h.on_success = r.argv(v, k)
        elif name == "on_failure":
            h.on_failure = r.argv(v, k)
        elif name == "timeout":
            h.timeout = r.number(v, k)
            if h.timeout <= 0:
                raise r.error(v, k, "must be more than 0 seconds")
        elif name == "commands":
            h.commands = tuple(r.string_list(v, k))
        else:
            raise r.error(knode, k, "unknown key (expected on_success, on_failure, timeout or commands)")
    return h


def _static_retention(r: _Reader, node: yaml.Node, key: str) -> dict:
    out: dict[str, Any] = {}
    for name, knode, v in r.mapping(node, key):
        norm = name.replace("-", "_")
        k = _join(key, name)
        kind = RETENTION_FIELDS.get(norm)
        if kind is None:
            raise r.error(knode, k, f"unknown key (expected one of {', '.join(RETENTION_FIELDS)})")
        if kind == "int":
            out[norm] = r.integer(v, k, minimum=0)
        elif kind == "bool":
            out[norm] = r.boolean(v, k)
        elif kind == "str_list":
            out[norm] = r.string_list(v, k)
        elif kind == "duration":
            out[norm] = r.string(v, k)
            try:
                parse_duration(out[norm])
            except ValueError:
                raise r.error(v, k, "expected a duration such as 7d, 12h or 1w2d") from None
        else:
            out[norm] = r.string(v, k)
    return out


def _command_section(r: _Reader, spec: CommandSpec, node: yaml.Node, key: str) -> dict:
    out: dict[str, Any] = {}
    for name, knode, v in r.mapping(node, key):
        norm = name.replace("-", "_")
        k = _join(key, name)
        if norm in spec.params:
            ps = spec.params[norm]
            if ps.name in out:
                raise r.error(knode, k, "given twice (under two names)")
            out[ps.name] = _param_value(r, ps, v, k)
        elif norm in spec.subcommands or name in spec.subcommands:
            sub = name if name in spec.subcommands else norm
            out[sub] = _command_section(r, spec.subcommands[sub], v, k)
        else:
            known = sorted({ps.display or ps.name for ps in spec.params.values()} | set(spec.subcommands))
            raise r.error(knode, k, f"unknown key (this command takes: {', '.join(known) or 'nothing'})")
    return out


def _param_value(r: _Reader, ps: ParamSpec, node: yaml.Node, key: str) -> Any:
    if ps.multiple:
        return [_one_value(r, ps, n, f"{key}[{i}]") for i, n in enumerate(r.sequence(node, key))]
    return _one_value(r, ps, node, key)


def _one_value(r: _Reader, ps: ParamSpec, node: yaml.Node, key: str) -> Any:
    if ps.kind == "bool":
        value: Any = r.boolean(node, key)
    elif ps.kind == "count":
        value = r.integer(node, key, minimum=0)
    elif ps.kind == "int":
        value = r.integer(node, key)
    elif ps.kind == "float":
        value = r.number(node, key)
    else:
        r.string(node, key, numbers=True)
        value = r.scalar(node, key)  # as written: click's type converts it (a count type may want the int)
    if ps.convert is not None and ps.kind not in ("bool", "count"):
        try:
            ps.convert(value)
        except ValueError as e:
            raise r.error(node, key, str(e) or "invalid value") from None
    return value


def find_default_config() -> str | None:
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    for pattern in DEFAULT_LOCATIONS:
        path = pattern.format(xdg=xdg)
        if os.path.isfile(path):
            return path
    return None


def merge_defaults(base: dict, over: dict) -> dict:
    """``over`` laid onto ``base``, mappings merged key by key (a profile's command sections)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_defaults(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


__all__ = ["ConfigError", "ConfigFile", "Profile", "CommandSpec", "ParamSpec", "load_config",
           "find_default_config", "merge_defaults", "DEFAULT_HOOK_COMMANDS", "DEFAULT_HOOK_TIMEOUT"]
