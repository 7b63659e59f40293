"""haeedge init"""

from __future__ import annotations

import click

from haeedge.chunking import ChunkerParams
from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.repo.config import RepositoryConfig
from haeedge.repo.repository import Repository


@click.command("init")
@click.option("--compression", default="auto", show_default=True, metavar="off|auto|N",
              help="Default zstd level for this repository (auto = 3).")
@click.option("--chunk-min", type=int, default=512 * 1024, show_default=True, hidden=True)
@click.option("--chunk-avg", type=int, default=1024 * 1024, show_default=True, hidden=True)
@click.option("--chunk-max", type=int, default=8 * 1024 * 1024, show_default=True, hidden=True)
@json_option
@pass_app
def command(app: AppContext, compression: str, chunk_min: int, chunk_avg: int, chunk_max: int) -> None:
    """Create a new repository.

    \b
    Example:
      haeedge -r /srv/backup --password-file ~/.haeedge-pw init
    """
    import os

    from haeedge.cli.cmd_backup import parse_compression

    params = ChunkerParams(chunk_min, chunk_avg, chunk_max)
    try:
        params.validate()
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    level = parse_compression(compression)
    backend = app.backend()
    config = RepositoryConfig(repository_id=os.urandom(32).hex(), chunker=params, compression_level=level)
    password = app.read_password(confirm=True, purpose="new repository password")
    repo = Repository.init(backend, password, config=config)
    app.out(f"created repository {config.repository_id[:8]} at {backend.location}")
    app.out("keep the password safe: without it the data cannot be recovered")
    app.emit({"repository_id": config.repository_id, "location": backend.location, "key_slot": repo.slot.slot_id})
