"""The ``haeedge`` command group and its global options."""

from __future__ import annotations

import click

from haeedge import __version__
from haeedge.cli.context import AppContext


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="haeedge")
@click.option("-r", "--repo", "repos", multiple=True, envvar="HAEEDGE_REPOSITORY", metavar="LOCATION",
              help="Repository location: a path, sftp://, s3:// or another fsspec URL. [env: HAEEDGE_REPOSITORY]")
@click.option("--password-file", envvar="HAEEDGE_PASSWORD_FILE", metavar="FILE",
              help="Read the repository password from the first line of FILE. [env: HAEEDGE_PASSWORD_FILE]")
@click.option("--password-command", envvar="HAEEDGE_PASSWORD_COMMAND", metavar="CMD",
              help="Run CMD (no shell) and use the first line it prints. [env: HAEEDGE_PASSWORD_COMMAND]")
@click.option("--json", "json_", is_flag=True, help="Print machine-readable JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors (for cron).")
@click.option("-v", "--verbose", count=True, help="Print more detail.")
@click.option("--no-progress", is_flag=True, help="Never show a progress bar.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, repos, password_file, password_command, json_, quiet, verbose, no_progress, debug):
    """Encrypted, deduplicated backups in OpenPGP format.

    \b
    Example:
      haeedge -r /srv/backup --password-file ~/.haeedge-pw init
      haeedge -r /srv/backup --password-file ~/.haeedge-pw backup /etc /home
    """
    if isinstance(repos, str):
        repos = [repos]
    ctx.obj = AppContext(repos=list(repos or []), password_file=password_file, password_command=password_command,
                         json=json_, quiet=quiet, verbose=verbose, debug=debug, progress_enabled=not no_progress)


def _register() -> None:
    """Every ``haeedge/cli/cmd_*.py`` module contributes its ``command``."""
    import importlib
    import pkgutil

    import haeedge.cli as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("cmd_"):
            cli.add_command(importlib.import_module(f"haeedge.cli.{info.name}").command)


_register()
