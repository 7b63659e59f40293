"""The command-line interface: thin commands over the library."""

from __future__ import annotations

import logging
import os
import sys
import traceback

import click

from haeedge.errors import ExitCode, HaeedgeError


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn every failure into one line and an exit code."""
    from haeedge.cli.app import cli

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("HAEEDGE_DEBUG") == "1"
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="haeedge: %(levelname)s: %(message)s")
    try:
        rv = cli.main(args=args, prog_name="haeedge", standalone_mode=False)
        # click returns ctx.exit()'s code in non-standalone mode; commands return None on success.
        return rv if isinstance(rv, int) else ExitCode.OK
    except HaeedgeError as e:
        if debug:
            traceback.print_exc()
        click.echo(f"haeedge: error: {e.message}", err=True)
        if e.hint:
            click.echo(f"haeedge: hint: {e.hint}", err=True)
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.Abort:
        click.echo("haeedge: interrupted", err=True)
        return ExitCode.INTERRUPTED
    except click.ClickException as e:
        e.show()
        return ExitCode.USAGE
    except KeyboardInterrupt:
        click.echo("haeedge: interrupted", err=True)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        return ExitCode.OK
    except Exception as e:  # noqa: BLE001 - the last line of defence: no tracebacks for users
        if debug:
            traceback.print_exc()
        click.echo(f"haeedge: internal error: {type(e).__name__}: {e} (run with --debug for details)", err=True)
        return ExitCode.FATAL


def run() -> None:
    sys.exit(main())
