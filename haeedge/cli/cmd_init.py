"""haeedge init"""

from __future__ import annotations

import click

from haeedge.chunking import ChunkerParams
from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.cli.shared import parse_compression
from haeedge.repo.config import RepositoryConfig
from haeedge.repo.repository import Repository
from haeedge.ui import messages


@click.command("init")
@click.option("--compression", default="auto", show_default=True, metavar="off|auto|N",
              help="Default zstd level for this repository (auto = 3).")
@click.option("--chunk-min", type=int, default=512 * 1024, show_default=True, hidden=True)
@click.option("--chunk-avg", type=int, default=1024 * 1024, show_default=True, hidden=True)
@click.option("--chunk-max", type=int, default=8 * 1024 * 1024, show_default=True, hidden=True)
@click.option("--recipient-file", metavar="CERT",
              help="Make a write-only repository: file contents can be read only with the secret key of this "
                   "OpenPGP certificate (gpg --export --armor KEYID). The password given here opens a "
                   "write-only key for this host: it can back up, not restore.")
@click.option("--host", help="With --recipient-file: the host name the write-only key signs snapshots for "
                             "(default: this machine's name).")
@click.option("--object-lock-days", type=click.IntRange(1, 36500), metavar="DAYS",
              help="S3 Object Lock: every object written to this repository is retained for DAYS days (the bucket "
                   "must have Object Lock enabled). Recorded in the config: every later writer applies it.")
@click.option("--object-lock-mode", type=click.Choice(["governance", "compliance"], case_sensitive=False),
              default="governance", show_default=True,
              help="With --object-lock-days: compliance retention cannot be shortened by anyone, governance "
                   "retention only by users allowed to bypass it.")
@json_option
@pass_app
def command(app: AppContext, compression: str, chunk_min: int, chunk_avg: int, chunk_max: int,
            recipient_file: str | None, host: str | None, object_lock_days: int | None,
            object_lock_mode: str) -> None:
    """Create a new repository.

    \b
    Examples:
      haeedge -r /srv/backup --password-file ~/.haeedge-pw init
      haeedge -r /srv/backup --password-file /etc/haeedge/pw init --recipient-file owner.asc
      haeedge -r s3://locked-bucket/host1 init --object-lock-days 30 --object-lock-mode compliance
    """
    import os
    import socket

    params = ChunkerParams(chunk_min, chunk_avg, chunk_max)
    try:
        params.validate()
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    level = parse_compression(compression)
    backend = app.backend()
    config = RepositoryConfig(repository_id=os.urandom(32).hex(), chunker=params, compression_level=level)
    if object_lock_days is not None:
        from haeedge.backends.s3policy import ObjectLock, check_object_lock_bucket

        check_object_lock_bucket(backend)  # before anything is written
        config.object_lock = ObjectLock(object_lock_mode.upper(), object_lock_days)
    if recipient_file:
        from haeedge.operations.keys import init_write_only, read_certificate

        cert = read_certificate(recipient_file)
        host = host or socket.gethostname()
        password = app.read_password(confirm=True, purpose=f"new password of the write-only key for host {host}")
        repo, writer_slot = init_write_only(backend, config, cert, password, host)
        app.out(f"created write-only repository {config.repository_id[:8]} at {backend.location}")
        app.out(f"file contents can be read only with the secret key of {cert.fingerprint_hex}")
        app.out(f"this password opens a write-only key for host {host}: it can back up, not restore")
        app.out("restore with: haeedge --identity-file OWNER-SECRET.asc restore ...")
        app.emit(messages.init_certificate(config, backend.location, repo.slot.slot_id, writer_slot, host,
                                           cert.fingerprint_hex))
        return
    if host:
        raise click.BadParameter("--host goes with --recipient-file", param_hint="--host")
    password = app.read_password(confirm=True, purpose="new repository password")
    repo = Repository.init(backend, password, config=config)
    from haeedge.repo.trust import remember_created

    remember_created(repo)
    app.out(f"created repository {config.repository_id[:8]} at {backend.location}")
    if config.object_lock is not None:
        app.out(f"objects are retained for {config.object_lock.days} days "
                f"({config.object_lock.mode.lower()} mode Object Lock)")
    app.out("keep the password safe: without it the data cannot be recovered")
    app.emit(messages.init(config, backend.location, repo.slot.slot_id))
