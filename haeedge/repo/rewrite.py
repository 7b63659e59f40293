"""Rewriting snapshots without breaking chains.

Snapshots are immutable and named by their hash, and incrementals name their
parent and their chain's full by id. Changing a snapshot (tags, a rebase to a
full) therefore gives it a new id, and every snapshot that depends on it must
be rewritten to point at the new id. New objects are all written before any
old one is deleted, and old ones are deleted newest first, so a crash at any
moment leaves only intact chains (possibly two copies of some).

A hidden snapshot (forgotten, kept as chain support: repo/forgotten.py) that
is rewritten stays hidden: its copy gets its own forget marker, stored right
after the copy and before any original is deleted.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable

from haeedge.repo.forgotten import delete_marker, write_marker
from haeedge.repo.repository import Repository
from haeedge.repo.signing import before_rewrite
from haeedge.repo.snapshot import KIND_FULL, Snapshot


def dependants(snapshots: list[Snapshot]) -> dict[str, list[Snapshot]]:
    """parent id -> snapshots whose parent it is."""
    children: dict[str, list[Snapshot]] = defaultdict(list)
    for s in snapshots:
        if s.parent:
            children[s.parent].append(s)
    return children


def rewrite_snapshots(
    repo: Repository,
    changes: dict[str, Callable[[Snapshot], None]],
    *,
    snapshots: list[Snapshot] | None = None,
    delete_old: bool = True,
) -> dict[str, str]:
    """Apply ``changes`` (snapshot id -> mutation) and re-link every dependant.

    ``snapshots`` must include hidden ones (``list_snapshots(include_hidden=True)``):
    a hidden parent's dependants are re-linked too.

    Returns old id -> new id for every snapshot that was rewritten. A mutation
    may turn an incremental into a full (set kind, tree, parent=None, chain=None,
    depth=0); dependants then hang below the new full.
    """
    snaps = snapshots if snapshots is not None else repo.list_snapshots(include_hidden=True)
    hidden = dict(repo.markers().hidden)  # snapshot id -> its markers
    by_id = {s.id: s for s in snaps}
    children = dependants(snaps)
    new_of: dict[str, Snapshot] = {}

    def order() -> list[str]:
        # Parents before children: a rewritten parent's new id must be known first.
        todo = [sid for sid in changes if sid in by_id]
        seen: set[str] = set()
        out: list[str] = []
        stack = sorted(todo, key=lambda i: by_id[i].depth)
        while stack:
            sid = stack.pop(0)
            if sid in seen:
                continue
            seen.add(sid)
            out.append(sid)
            stack.extend(c.id for c in children.get(sid, ()))
        out.sort(key=lambda i: (by_id[i].chain_root, by_id[i].depth))
        return out

    for sid in order():
        old = by_id[sid]
        new = copy.deepcopy(old)
        new.id = ""
        if sid in changes:
            changes[sid](new)
        if new.kind != KIND_FULL and new.parent in new_of:
            parent_new = new_of[new.parent]
            new.parent = parent_new.id
            new.chain = parent_new.chain_root
            new.depth = parent_new.depth + 1
        before_rewrite(repo, old, new)  # the rewriter (an owner) re-signs: see repo/signing.py
        repo.save_snapshot(new)
        if sid in hidden and new.id != sid:
            write_marker(repo, new.id)
        new_of[sid] = new
    mapping = {old: new.id for old, new in new_of.items()}
    if delete_old:
        for old in sorted(mapping, key=lambda i: by_id[i].depth, reverse=True):
            if mapping[old] != old:
                repo.backend.delete(f"snapshots/{old}")
                for marker_id in hidden.get(old, ()):  # after the snapshot: it never reappears
                    delete_marker(repo, marker_id)
    return mapping
