"""The command-line interface: thin commands over the library."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback

import click

from haeedge.errors import ExitCode, HaeedgeError


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, then report the outcome (hooks, metrics, log file) whatever it was."""
    from haeedge.allocator import tune_allocator
    from haeedge.monitoring import begin_run, finish_run

    tune_allocator()
    run = begin_run()
    code = _dispatch(sys.argv[1:] if argv is None else argv, run)
    finish_run(run, code)
    return code


def _dispatch(args: list[str], run) -> int:
    """Run the CLI and turn every failure into one line and an exit code (and ``run.error``)."""
    from haeedge.cli.app import cli
    from haeedge.cli.context import ReaderGone

    debug = "--debug" in args or os.environ.get("HAEEDGE_DEBUG") == "1"
    from haeedge.ui.format import MessageFormatter

    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(MessageFormatter())
    try:
        rv = cli.main(args=args, prog_name="haeedge", standalone_mode=False)
        # click returns ctx.exit()'s code in non-standalone mode; commands return None on success.
        return rv if isinstance(rv, int) else ExitCode.OK
    except HaeedgeError as e:
        if debug:
            traceback.print_exc()
        run.error = run.scrub(e.message)
        click.echo(f"haeedge: error: {run.error}", err=True)
        if e.hint:
            click.echo(f"haeedge: hint: {e.hint}", err=True)
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.Abort:
        run.error = "interrupted"
        click.echo("haeedge: interrupted", err=True)
        return ExitCode.INTERRUPTED
    except click.ClickException as e:
        run.error = e.format_message()
        e.show()
        return ExitCode.USAGE
    except KeyboardInterrupt:
        run.error = "interrupted"
        click.echo("haeedge: interrupted", err=True)
        return ExitCode.INTERRUPTED
    except ReaderGone:
        # The reader went away (``dump ... | head``): not an error; keep Python's exit-time flush quiet too.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
    except Exception as e:  # noqa: BLE001 - the last line of defence: no tracebacks for users
        if debug:
            traceback.print_exc()
        run.error = run.scrub(f"internal error: {type(e).__name__}: {e}")
        click.echo(f"haeedge: {run.error} (run with --debug for details)", err=True)
        return ExitCode.FATAL


def run() -> None:
    try:
        code = main()
    except KeyboardInterrupt:  # before the CLI's own handlers exist (during imports)
        click.echo("haeedge: interrupted", err=True)
        code = ExitCode.INTERRUPTED
    sys.exit(code)
