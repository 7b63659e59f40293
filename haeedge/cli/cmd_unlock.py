"""haeedge unlock"""

from __future__ import annotations

import click

from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.ui import messages


@click.command("unlock")
@click.option("--remove-all", is_flag=True, help="Remove every lock, not just stale ones (dangerous).")
@json_option
@pass_app
def command(app: AppContext, remove_all) -> None:
    """Remove stale locks left by crashed processes.

    \b
    Example:
      haeedge unlock
    """
    with app.open_repo(lock=None, load_index=False) as repo:
        n = repo.remove_stale_locks(all_locks=remove_all)
    app.out(f"removed {n} locks")
    app.emit(messages.unlock(n))
