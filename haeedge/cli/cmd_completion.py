"""haeedge completion"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.ui import messages

SHELLS = ("bash", "zsh", "fish")
#: The variable click's completion scripts set when they call haeedge back.
COMPLETE_VAR = "_HAEEDGE_COMPLETE"

_INSTALL = {
    "bash": "haeedge completion bash > /etc/bash_completion.d/haeedge   # or: eval \"$(haeedge completion bash)\"",
    "zsh": "haeedge completion zsh > \"${fpath[1]}/_haeedge\"             # or: eval \"$(haeedge completion zsh)\"",
    "fish": "haeedge completion fish > ~/.config/fish/completions/haeedge.fish",
}


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@json_option
@pass_app
def command(app: AppContext, shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish.

    The script calls haeedge back to complete commands, options and choices.

    \b
    Examples:
      eval "$(haeedge completion bash)"
      haeedge completion fish > ~/.config/fish/completions/haeedge.fish
    """
    root = click.get_current_context().find_root().command
    script = get_completion_class(shell)(root, {}, "haeedge", COMPLETE_VAR).source()
    if app.json:
        app.emit(messages.completion(shell, script, _INSTALL[shell]))
    else:
        click.echo(script)
