"""Which snapshots a command works on: named ones or all, filtered by --host, --tag and --path."""

from __future__ import annotations

from collections.abc import Iterable

import click

from haeedge.repo.repository import Repository
from haeedge.repo.snapshot import Snapshot


def all_snapshots(repo: Repository, *, trusted_only: bool = True) -> list[Snapshot]:
    """Every readable snapshot; each unreadable one is a warning on stderr, not a failure.

    Readers act only on trusted snapshots (signed by the owner or an approved
    writer for their host; ``--allow-untrusted`` lets the others through, warned);
    ``snapshots`` and ``verify`` list all.
    """
    snaps = repo.list_snapshots(on_error=lambda sid, e: click.echo(f"warning: snapshot {sid[:8]}: {e}", err=True))
    return repo.trusted_snapshots(snaps) if trusted_only else snaps


def filter_snapshots(snaps: Iterable[Snapshot], hosts: Iterable[str] = (), tags: Iterable[str] = (),
                     paths: Iterable[str] = ()) -> list[Snapshot]:
    """Of ``hosts`` (any), with one of ``tags``, including every one of ``paths``; empty means no filter."""
    hosts, tags, paths = set(hosts), set(tags), set(paths)
    return [s for s in snaps if (not hosts or s.host in hosts) and (not tags or tags & set(s.tags))
            and paths <= set(s.paths)]


def select_snapshots(repo: Repository, refs: tuple[str, ...], hosts: tuple[str, ...], tags: tuple[str, ...],
                     paths: tuple[str, ...] = (), *, trusted_only: bool = True) -> list[Snapshot]:
    """Snapshots named by id (or 'latest'), else all; then filtered by host, tag and path."""
    if refs:
        seen: dict[str, Snapshot] = {}
        for r in refs:
            s = repo.resolve_snapshot(r)
            seen.setdefault(s.id, s)
        snaps = sorted(seen.values(), key=lambda s: (s.time, s.id))
    else:
        snaps = all_snapshots(repo, trusted_only=trusted_only)
    return filter_snapshots(snaps, hosts, tags, paths)
