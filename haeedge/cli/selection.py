"""Which snapshots a command works on: named ones or all, filtered by --host, --tag and --path."""

from __future__ import annotations

from collections.abc import Iterable

import click

from haeedge.repo.repository import Repository
from haeedge.repo.snapshot import Snapshot


def all_snapshots(repo: Repository, include_hidden: bool = False) -> list[Snapshot]:
    """Every readable snapshot (not the forgotten ones kept hidden as chain support, unless
    ``include_hidden``); each unreadable one is a warning on stderr, not a failure."""
    return repo.list_snapshots(on_error=lambda sid, e: click.echo(f"warning: snapshot {sid[:8]}: {e}", err=True),
                               include_hidden=include_hidden)


def filter_snapshots(snaps: Iterable[Snapshot], hosts: Iterable[str] = (), tags: Iterable[str] = (),
                     paths: Iterable[str] = ()) -> list[Snapshot]:
    """Of ``hosts`` (any), with one of ``tags``, including every one of ``paths``; empty means no filter."""
    hosts, tags, paths = set(hosts), set(tags), set(paths)
    return [s for s in snaps if (not hosts or s.host in hosts) and (not tags or tags & set(s.tags))
            and paths <= set(s.paths)]


def select_snapshots(repo: Repository, refs: tuple[str, ...], hosts: tuple[str, ...], tags: tuple[str, ...],
                     paths: tuple[str, ...] = ()) -> list[Snapshot]:
    """Snapshots named by id (or 'latest'), else all; then filtered by host, tag and path."""
    if refs:
        seen: dict[str, Snapshot] = {}
        for r in refs:
            s = repo.resolve_snapshot(r)
            seen.setdefault(s.id, s)
        snaps = sorted(seen.values(), key=lambda s: (s.time, s.id))
    else:
        snaps = all_snapshots(repo)
    return filter_snapshots(snaps, hosts, tags, paths)
