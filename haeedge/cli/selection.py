"""Which snapshots a command works on: named ones or all, filtered by --host, --tag and --path."""

from __future__ import annotations

import os
from collections.abc import Iterable

import click

from haeedge.cli.context import AppContext
from haeedge.errors import SnapshotNotFound
from haeedge.repo.repository import Repository
from haeedge.repo.snapshot import Snapshot
from haeedge.ui.format import warn

#: (hosts, tags, paths): what chooses among snapshots; empty tuples choose all.
Filter = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]


def all_snapshots(repo: Repository) -> list[Snapshot]:
    """Every readable snapshot; each unreadable one is a warning on stderr, not a failure."""
    return repo.list_snapshots(on_error=lambda sid, e: warn(f"snapshot {sid[:8]}: {e}"))


def filter_snapshots(snaps: Iterable[Snapshot], hosts: Iterable[str] = (), tags: Iterable[str] = (),
                     paths: Iterable[str] = ()) -> list[Snapshot]:
    """Of ``hosts`` (any), with one of ``tags``, including every one of ``paths``; empty means no filter."""
    hosts, tags, paths = tuple(hosts), tuple(tags), tuple(paths)
    return [s for s in snaps if s.matches(hosts, tags, paths)]


def select_snapshots(repo: Repository, refs: tuple[str, ...], hosts: tuple[str, ...], tags: tuple[str, ...],
                     paths: tuple[str, ...] = ()) -> list[Snapshot]:
    """Snapshots named by id (or 'latest': the newest that passes the filters), else all; then filtered."""
    if refs:
        seen: dict[str, Snapshot] = {}
        for r in refs:
            s = repo.resolve_snapshot(r, hosts=hosts, tags=tags, paths=paths)
            seen.setdefault(s.id, s)
        snaps = sorted(seen.values(), key=lambda s: (s.time, s.id))
    else:
        snaps = all_snapshots(repo)
    return filter_snapshots(snaps, hosts, tags, paths)


def latest_options(*, with_path: bool = True):
    """``--host``, ``--tag`` and ``--path``: which snapshots ``latest`` chooses from (as restic's)."""

    def add(f):
        if with_path:
            f = click.option("--path", "paths", multiple=True, metavar="PATH",
                             help="With 'latest': the newest snapshot that includes PATH (repeatable: all).")(f)
        f = click.option("--tag", "tags", multiple=True, metavar="TAG",
                         help="With 'latest': the newest snapshot with TAG (repeatable: any).")(f)
        return click.option("--host", "hosts", multiple=True, metavar="HOST",
                            help="With 'latest': the newest snapshot of HOST (repeatable: any).")(f)

    return add


def profile_filter(backup_section: dict | None) -> Filter:
    """The snapshots a profile's ``backup:`` section makes: its host, its tags, the paths it records.

    In a repository shared by several profiles (files and a database), a
    profile's ``latest`` is the newest of *its* snapshots.
    """
    from haeedge.archiver.stream import stream_path
    from haeedge.archiver.walker import normalize_sources

    sec = backup_section or {}
    hosts = (str(sec["host"]),) if sec.get("host") else ()
    tags = tuple(str(t) for t in sec.get("tags") or ())
    if sec.get("stdin") or sec.get("stdin_from_command"):
        paths: tuple[str, ...] = ("/" + os.fsdecode(stream_path(str(sec.get("stdin_filename") or "stdin"))),)
    else:
        paths = tuple(os.fsdecode(p) for p in normalize_sources([str(p) for p in sec.get("paths") or ()]))
    return hosts, tags, paths


def resolve(app: AppContext, repo: Repository, ref: str, hosts: Iterable[str] = (), tags: Iterable[str] = (),
            paths: Iterable[str] = ()) -> Snapshot:
    """``ref`` as ``Repository.resolve_snapshot``: ``latest`` with the filters given, else the profile's."""
    given: Filter = (tuple(hosts), tuple(tags), tuple(paths))
    profile = profile_filter(app.profile_backup) if app.profile_backup is not None else None
    if ref != "latest" or any(given) or profile is None or not any(profile):
        return repo.resolve_snapshot(ref, hosts=given[0], tags=given[1], paths=given[2])
    try:
        return repo.resolve_snapshot(ref, hosts=profile[0], tags=profile[1], paths=profile[2])
    except SnapshotNotFound as e:
        raise SnapshotNotFound(f"{e.message} (the host, tags and paths of profile {app.run.profile}'s backup)",
                               hint="--host, --tag or --path choose other snapshots") from None
