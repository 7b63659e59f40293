"""The command line's side of config files: what each click command accepts, and laying a profile
under the command line (command line and environment always win over the file).

``haeedge.config_file`` reads and checks the YAML; this module is the only one that knows click.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from haeedge.backends.replicated import write_policy_of
from haeedge.config_file import (
    CommandSpec,
    ConfigError,
    ParamSpec,
    Profile,
    find_default_config,
    load_config,
    merge_defaults,
)


def command_specs(group: Any) -> dict[str, CommandSpec]:
    """What each registered click command accepts, so the file is checked against the real CLI."""
    def spec_of(cmd: click.Command) -> CommandSpec:
        s = CommandSpec()
        for p in cmd.params:
            if not p.expose_value or p.is_eager or p.name is None:
                continue
            multiple = bool(getattr(p, "multiple", False)) or p.nargs == -1
            if getattr(p, "is_flag", False) and not getattr(p, "count", False):
                kind = "bool"
            elif getattr(p, "count", False):
                kind = "count"
            elif isinstance(p.type, click.types.IntParamType):
                kind = "int"
            elif isinstance(p.type, click.types.FloatParamType):
                kind = "float"
            else:
                kind = "str"
            longs = [o[2:].replace("-", "_") for o in getattr(p, "opts", []) if o.startswith("--")]
            ps = ParamSpec(p.name, kind, multiple, _converter(p), longs[0] if longs else p.name.rstrip("_"))
            s.params[p.name.rstrip("_")] = ps
            for opt in getattr(p, "opts", []):
                if opt.startswith("--"):
                    s.params[opt[2:].replace("-", "_")] = ps
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                s.subcommands[name] = spec_of(sub)
        return s

    return {name: spec_of(cmd) for name, cmd in getattr(group, "commands", {}).items()}


def _converter(param: Any) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        try:
            return param.type.convert(value, param, None)
        except click.BadParameter as e:
            raise ValueError(e.message) from None

    return convert


def apply_profile(ctx: Any, app: Any, config_path: str | None, profile_name: str | None) -> Profile | None:
    """Load the profile and lay it under the command line: globals onto ``app``, defaults into ``default_map``.

    Command line and environment variables always win over the file.
    """
    if not config_path:
        if not profile_name:
            return None
        config_path = find_default_config()
        if config_path is None:
            raise ConfigError(f"--profile {profile_name}: no config file given and none found",
                              hint="use -c FILE or HAEEDGE_CONFIG, or create ~/.config/haeedge/config.yaml "
                                   "or /etc/haeedge/config.yaml")
    specs = command_specs(ctx.command)
    profile = load_config(config_path, specs).select(profile_name)

    def unset(param: str) -> bool:
        return ctx.get_parameter_source(param) in (None, click.core.ParameterSource.DEFAULT)

    run = app.run
    run.profile = profile.name
    for s in profile.secrets():
        run.add_secret(s)
    if profile.repositories and unset("repos"):
        app.repos = list(profile.repositories)
    if unset("password_file") and unset("password_command"):
        app.password_file = profile.password_file
        app.password_command = profile.password_command
    if profile.identity_file and unset("identity_file") and hasattr(app, "identity_file"):
        app.identity_file = profile.identity_file
    for loc, opts in profile.backend_options.items():
        app.backend_options.setdefault(loc, dict(opts))
    if profile.replica_policy and unset("replica_policy"):
        app.replica_policy = write_policy_of(profile.replica_policy)
    if profile.limit_upload and unset("limit_upload"):
        app.limit_upload = profile.limit_upload
    if profile.limit_download and unset("limit_download"):
        app.limit_download = profile.limit_download
    if profile.log_file and not run.log_file:
        run.log_file = profile.log_file
    if profile.metrics_file and not run.metrics_file:
        run.metrics_file = profile.metrics_file
    run.hooks = profile.hooks
    if hasattr(app, "profile_backup"):
        app.profile_backup = dict(profile.commands.get("backup") or {})
    if profile.commands:
        ctx.default_map = merge_defaults(ctx.default_map or {}, profile.commands)
    return profile
