"""haeedge mount"""

from __future__ import annotations

import os
import re
import signal
import stat

import click

from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.cli.selection import all_snapshots, filter_snapshots
from haeedge.errors import UsageError
from haeedge.ui import messages
from haeedge.ui.format import human_size

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``256MiB``, ``1G``, ``512k`` or a plain number of bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not m:
        raise UsageError(f"{text!r} is not a size (examples: 512MiB, 2G, 1048576)")
    return int(m.group(1)) * _UNITS[m.group(2)]


def check_mountpoint(path: str) -> str:
    """An existing directory, not already a mount point of ours or anyone's."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"mount point {path} does not exist", hint=f"create it first: mkdir -p {path}") from None
    except OSError as e:
        raise UsageError(f"mount point {path}: {e.strerror}",
                         hint="a stale mount? unmount it with: fusermount3 -u " + path) from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"mount point {path} is not a directory")
    if os.path.ismount(path):
        raise UsageError(f"{path} is already a mount point", hint=f"unmount it first: fusermount3 -u {path}")
    return os.path.abspath(path)


@click.command("mount")
@click.argument("mountpoint", type=click.Path())
@click.option("--cache-size", default="256MiB", show_default=True, metavar="SIZE",
              help="Memory for decrypted file data (an LRU of blobs), e.g. 64MiB or 1GiB.")
@click.option("--host", "hosts", multiple=True, help="Show only snapshots of this host (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Show only snapshots with this tag (repeatable).")
@click.option("--no-lock", is_flag=True,
              help="Hold no shared lock while mounted (prune may then remove data being read).")
@click.option("--debug-fuse", is_flag=True, hidden=True, help="libfuse's own debug output.")
@json_option
@pass_app
def command(app: AppContext, mountpoint, cache_size, hosts, tags, no_lock, debug_fuse) -> None:
    """Browse snapshots as a read-only file system (FUSE), until Ctrl-C or SIGTERM.

    \b
    MOUNTPOINT/snapshots/<time>_<id>/...    every snapshot, its full tree
    MOUNTPOINT/hosts/<host>/<time>_<id>/... by host, with a 'latest' link
    MOUNTPOINT/tags/<tag>/<time>_<id>/...   by tag
    MOUNTPOINT/latest                       the newest snapshot

    Files keep their recorded mode, owner, times, symlinks and hardlinks.
    Incremental snapshots show their whole tree. Reads fetch only the chunks
    they need. Ctrl-C or SIGTERM unmounts and exits 0.

    \b
    Example:
      haeedge mount /mnt/backup &
      cp /mnt/backup/latest/etc/nginx/nginx.conf /tmp/
      kill %1        (or: fusermount3 -u /mnt/backup)
    """
    from haeedge.mount.fuse import load_binding, serve
    from haeedge.mount.view import STOP_SIGNALS, RepositoryView

    target = check_mountpoint(mountpoint)
    cache_bytes = parse_size(cache_size)
    load_binding()  # fail before asking for a password when FUSE is missing
    # Threads made from here on (storage clients, lock refresh, fetchers) never take the stop
    # signals: libfuse's handler has to run in the thread that waits for the session to end.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        with app.open_repo(lock=None if no_lock else "shared", command="mount") as repo:
            repo.require_reader("mount")
            snaps = filter_snapshots(all_snapshots(repo), hosts, tags)
            view = RepositoryView(repo, snaps, cache_bytes=cache_bytes)
            if not app.json and not app.quiet:
                click.echo(f"serving {len(snaps)} snapshots at {target}; Ctrl-C or 'fusermount3 -u {target}' "
                           "to unmount", err=True)
            try:
                serve(view, target, debug=debug_fuse)
            finally:
                view.close()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    stats = view.stats()
    if app.json:
        app.emit(messages.mount(target, len(snaps), stats))
    else:
        app.out(f"unmounted {target}: fetched {stats['blobs_fetched']} blobs "
                f"({human_size(stats['bytes_fetched'])}), {stats['cache_hits']} cache hits")
