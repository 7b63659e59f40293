"""haeedge tag"""

from __future__ import annotations

from collections.abc import Callable

import click

from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.cli.selection import select_snapshots
from haeedge.errors import UsageError
from haeedge.repo.rewrite import rewrite_snapshots
from haeedge.repo.snapshot import Snapshot
from haeedge.ui import messages


def new_tags(current: list[str], set_: tuple[str, ...] | None, add: tuple[str, ...],
             remove: tuple[str, ...]) -> list[str]:
    """--set replaces, then --remove, then --add; the result is sorted and without duplicates."""
    tags = set(current) if set_ is None else {t for t in set_ if t}
    tags -= set(remove)
    tags |= set(add)
    return sorted(tags)


@click.command("tag")
@click.argument("snapshots", nargs=-1)
@click.option("--add", "add", multiple=True, metavar="TAG", help="Add TAG (repeatable).")
@click.option("--remove", "remove", multiple=True, metavar="TAG", help="Remove TAG (repeatable).")
@click.option("--set", "set_", multiple=True, metavar="TAG",
              help="Replace all tags with these (repeatable; --set '' removes every tag).")
@click.option("--all", "all_", is_flag=True, help="Change every snapshot (with --host/--tag: every matching one).")
@click.option("--host", "hosts", multiple=True, help="Only snapshots of this host (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Only snapshots that have this tag (repeatable).")
@json_option
@pass_app
def command(app: AppContext, snapshots, add, remove, set_, all_, hosts, tags) -> None:
    """Add, remove or replace the tags of snapshots.

    Snapshots are immutable objects named by their hash, so a changed
    snapshot gets a new id, and incrementals that depend on it are re-linked
    to the new id (their ids change too). The mapping is printed.

    \b
    Examples:
      haeedge tag latest --add keep-forever
      haeedge tag --all --host web1 --remove nightly --add weekly
      haeedge tag 1a2b3c4d --set audit-2026
    """
    if not (add or remove or set_):
        raise UsageError("nothing to do: give --add, --remove or --set")
    if not snapshots and not all_:
        raise UsageError("name the snapshots to change, or use --all", hint="haeedge tag latest --add TAG")
    if snapshots and all_:
        raise UsageError("give snapshot ids or --all, not both")
    set_tags = set_ if set_ else None
    with app.open_repo(lock="exclusive", command="tag", load_index=False) as repo:
        everything = repo.list_snapshots(include_hidden=True)  # dependants to re-link
        chosen = select_snapshots(repo, snapshots, hosts, tags)
        changes = {}
        wanted: dict[str, list[str]] = {}
        for s in chosen:
            target = new_tags(s.tags, set_tags, add, remove)
            if target != sorted(s.tags):
                wanted[s.id] = target
                changes[s.id] = _setter(target)
        mapping = rewrite_snapshots(repo, changes, snapshots=everything) if changes else {}
    by_id = {s.id: s for s in everything}
    order = sorted(mapping.items(), key=lambda kv: (by_id[kv[0]].time, kv[0]))
    changed = [messages.tag_change(old, new, wanted.get(old, sorted(by_id[old].tags)), old not in wanted)
               for old, new in order]
    if app.json:
        app.emit(messages.tag(changed, len(chosen) - len(wanted)))
        return
    for c in changed:
        why = " (re-linked to its new parent)" if c["relinked"] else ""
        app.out(f"{c['old_id'][:8]} -> {c['new_id'][:8]}  tags: {','.join(c['tags']) or '-'}{why}")
    app.out(f"{len(wanted)} snapshots tagged, {len(changed) - len(wanted)} dependants re-linked, "
            f"{len(chosen) - len(wanted)} unchanged")


def _setter(tags: list[str]) -> Callable[[Snapshot], None]:
    def apply(snap: Snapshot) -> None:
        snap.tags = list(tags)

    return apply
