"""Rewrite snapshots without some paths: a secret backed up by mistake.

Why chain-aware: an incremental's file list holds only what changed since its
parent, so a path removed from a full lives on in every incremental that
inherited it, and an incremental whose secret changed holds its own copy.
Whether a path is excluded depends on the path alone, so removing it from
every layer of a chain (file entries and deletion markers alike) removes it
from every effective file list and changes nothing else.

Which snapshots are rewritten: the ones chosen, and every incremental built on
them (they inherit from them, so they would lose the paths anyway; their own
layers are filtered too, so nothing reintroduces them). A chosen incremental
whose unchosen ancestors still hold an excluded path becomes a full snapshot
of its file list without the paths (its ancestors stay as they are). A
snapshot whose chain holds none of the paths keeps its id; an incremental
below a rewritten one gets a new id (re-linked), as with ``tag``.

Order (a crash at any moment leaves a repository that verifies): the new
file lists are stored and indexed, then the new snapshots, each signed by the
owner key (``repo/rewrite.rewrite_snapshots``), then the originals are
forgotten through ``forget``'s machinery (``operations/prune.plan_forget``):
deepest first, hidden ones' markers after them. Copies name their original
in ``"replaces"`` (so after a crash the next ``forget`` or ``rewrite`` removes
the leftover originals) and in ``"rewritten"`` (what was done). With
``keep_old`` the originals stay and copies carry no ``"replaces"``: nothing
would ever remove an original a user chose to keep. ``prune`` then frees the
data only the originals used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from haeedge.archiver.walker import Excluder, exclude_patterns
from haeedge.errors import IntegrityError, UsageError
from haeedge.operations.prune import ForgetResult, forget_snapshots, leftover_originals, plan_forget
from haeedge.progress import ProgressSink, SilentProgress
from haeedge.repo.forgotten import can_write_markers
from haeedge.repo.repository import Repository
from haeedge.repo.rewrite import dependants, rewrite_snapshots
from haeedge.repo.snapshot import KIND_FULL, Snapshot, now_iso
from haeedge.repo.tree import Node

#: Paths listed per snapshot in a result (the counts are always exact).
MAX_LISTED_PATHS = 1000
_MAX_CACHED_DIRS = 200_000

FILTER = "filter"  # its own file list without the excluded paths
REBASE = "rebase"  # a full snapshot of its effective list without them (unchosen ancestors hold them)
KEEP = "keep"  # nothing to remove; only re-linked when an ancestor changed


class PathMatcher:
    """Is a stored path excluded? Backup's ``Excluder`` applied to the path and each of its ancestors
    (a backup never descends into an excluded directory, so an excluded directory's contents go too)."""

    def __init__(self, excluder: Excluder):
        self.excluder = excluder
        self._dirs: dict[bytes, bool] = {}

    def __call__(self, path: bytes) -> bool:
        head, _sep, name = path.rpartition(b"/")
        if head and self._dir_excluded(head):
            return True
        return self.excluder.excluded(b"/" + path, name)

    def _dir_excluded(self, d: bytes) -> bool:
        hit = self._dirs.get(d)
        if hit is not None:
            return hit
        if len(self._dirs) > _MAX_CACHED_DIRS:
            self._dirs.clear()
        pending = []
        cur = d
        while cur and cur not in self._dirs:
            pending.append(cur)
            cur = cur.rpartition(b"/")[0]
        state = self._dirs.get(cur, False) if cur else False
        for p in reversed(pending):
            state = state or self.excluder.excluded(b"/" + p, p.rpartition(b"/")[2])
            self._dirs[p] = state
        return state


def build_matcher(excludes: list[str], exclude_files: list[str], iexcludes: list[str] = (),
                  iexclude_files: list[str] = ()) -> tuple[PathMatcher, list[str], list[str]]:
    """The matcher for backup's ``--exclude``/``--iexclude`` syntax; also the patterns, as recorded."""

    def patterns(given: list[str], files: list[str]) -> list[str]:
        return [p for p in exclude_patterns(given, files) if p.strip() and not p.strip().startswith("#")]

    pats, ipats = patterns(list(excludes), list(exclude_files)), patterns(list(iexcludes), list(iexclude_files))
    if not pats and not ipats:
        raise UsageError("nothing to remove: give --exclude PATTERN (or --exclude-file, --iexclude)",
                         hint="haeedge rewrite --exclude '/home/*/.aws/credentials' --dry-run")
    return PathMatcher(Excluder(pats, ipats)), pats, ipats


@dataclass
class SnapshotRewrite:
    """One snapshot this run rewrites (or, dry, would)."""

    old_id: str
    time: str
    host: str
    kind: str
    #: FILTER, REBASE, or KEEP (re-linked only: an ancestor changed).
    action: str
    #: Chosen by the user (else: an incremental built on a chosen one).
    chosen: bool
    #: What its effective file list (what restore gives) loses.
    removed_paths: list[str] = field(default_factory=list)
    removed_entries: int = 0
    removed_bytes: int = 0
    new_id: str | None = None


@dataclass
class RewriteResult:
    dry_run: bool
    keep_old: bool
    excludes: list[str]
    iexcludes: list[str]
    #: Snapshots chosen (after the filters).
    chosen: int = 0
    #: Rewritten ones, oldest first.
    rewritten: list[SnapshotRewrite] = field(default_factory=list)
    #: Chosen snapshots left untouched (same id): nothing to remove anywhere in their chain.
    unchanged: list[str] = field(default_factory=list)
    #: The forget step (None with keep_old or a dry run).
    forget: ForgetResult | None = None


def _display(path: bytes) -> str:
    return "/" + path.decode("utf-8", "backslashreplace")


class _Planner:
    def __init__(self, repo: Repository, everything: list[Snapshot], match: PathMatcher):
        self.repo = repo
        self.by_id = {s.id: s for s in everything}
        self.match = match
        self._effective_has: dict[str, bool] = {}

    def own_matches(self, snap: Snapshot) -> tuple[int, int]:
        """(file entries, deletion markers) of its own file list that are excluded."""
        entries = markers = 0
        for e in self.repo.iter_tree(snap.tree):
            if self.match(e.path):
                if e.deleted:
                    markers += 1
                else:
                    entries += 1
        return entries, markers

    def effective_has(self, snap: Snapshot) -> bool:
        hit = self._effective_has.get(snap.id)
        if hit is None:
            hit = self._effective_has[snap.id] = any(self.match(e.path) for e in self.repo.iter_entries(snap))
        return hit

    def removed(self, snap: Snapshot, rec: SnapshotRewrite) -> None:
        for e in self.repo.iter_entries(snap):
            p = e.path
            if self.match(p):
                rec.removed_entries += 1
                if e.type == "file":
                    rec.removed_bytes += e.size or 0
                if len(rec.removed_paths) < MAX_LISTED_PATHS:
                    rec.removed_paths.append(_display(p))


def plan_rewrite(repo: Repository, chosen: list[Snapshot], everything: list[Snapshot], match: PathMatcher,
                 progress: ProgressSink | None = None) -> tuple[list[SnapshotRewrite], list[str]]:
    """Which snapshots change and how: (rewrites in parent-before-child order, ids of chosen ones untouched).

    ``everything``: every trusted snapshot, hidden ones included (dependants to re-link).
    """
    progress = progress or SilentProgress()
    planner = _Planner(repo, everything, match)
    children = dependants(everything)
    scope: dict[str, bool] = {}  # id -> chosen
    todo = [s.id for s in chosen]
    for sid in todo:
        scope.setdefault(sid, True)
    while todo:
        sid = todo.pop()
        for c in children.get(sid, ()):
            if c.id not in scope:
                scope[c.id] = False
                todo.append(c.id)
    changed: dict[str, bool] = {}
    out: list[SnapshotRewrite] = []
    progress.start("plan", len(scope))
    for sid in sorted(scope, key=lambda i: (planner.by_id[i].depth, planner.by_id[i].time, i)):
        s = planner.by_id[sid]
        own_entries, own_markers = planner.own_matches(s)
        parent = planner.by_id.get(s.parent or "") if s.kind != KIND_FULL else None
        if s.kind == KIND_FULL or (parent is not None and parent.id in scope):
            action = FILTER if own_entries or own_markers else KEEP
            change = action == FILTER or (parent is not None and changed.get(parent.id, False))
        elif parent is None:
            raise IntegrityError(f"snapshot {s.short_id}: its parent {str(s.parent)[:8]} is missing; nothing was "
                                 "rewritten", hint="run 'haeedge verify' and 'haeedge repair snapshots'")
        elif not planner.effective_has(parent):
            action = FILTER if own_entries or own_markers else KEEP  # the parent has none: markers are moot
            change = action == FILTER
        elif own_entries or planner.effective_has(s):
            action, change = REBASE, True  # unchosen ancestors hold the paths: a full snapshot without them
        else:
            action, change = KEEP, False  # its deletion markers hide what its unchosen ancestors hold
        changed[sid] = change
        progress.advance(files=1)
        if not change:
            continue
        rec = SnapshotRewrite(sid, s.time, s.host, s.kind, action, scope[sid])
        planner.removed(s, rec)
        out.append(rec)
    progress.finish()
    untouched = [sid for sid, is_chosen in scope.items() if is_chosen and not changed[sid]]
    return out, sorted(untouched, key=lambda i: (planner.by_id[i].time, i))


def _write_tree(repo: Repository, entries: Iterator[Node], match: PathMatcher) -> list[str]:
    writer = repo.tree_writer()
    for e in entries:
        if not match(e.path):
            writer.add(e)
    return writer.finish()


def rewrite_paths(repo: Repository, chosen: list[Snapshot], everything: list[Snapshot], match: PathMatcher, *,
                  excludes: list[str], iexcludes: list[str] = (), keep_old: bool = False, dry_run: bool = False,
                  progress: ProgressSink | None = None) -> RewriteResult:
    """Remove the paths ``match`` accepts from ``chosen`` (see the module docstring).

    Needs the index loaded and, unless ``dry_run``, an exclusive lock. ``everything``:
    every trusted snapshot, hidden ones included.
    """
    progress = progress or SilentProgress()
    repo.require_reader("rewrite")
    # Never trusted because --allow-untrusted let it through: the owner's signature on a copy would launder it.
    for s in chosen:
        if not repo.is_trusted(s):
            progress.warning(f"snapshot {s.short_id} (host {s.host}) is not trusted and is not rewritten: "
                             f"{repo.snapshot_status(s).message}")
    chosen = [s for s in chosen if repo.is_trusted(s)]
    everything = [s for s in everything if repo.is_trusted(s)]
    result = RewriteResult(dry_run, keep_old, list(excludes), list(iexcludes), chosen=len(chosen))
    leftovers: set[str] = set()
    if not keep_old:  # originals an interrupted rewrite left: the forget step below removes them
        leftovers = leftover_originals(everything, may_replace=repo.is_owner_signed)
        chosen = [s for s in chosen if s.id not in leftovers]
    result.rewritten, result.unchanged = plan_rewrite(repo, chosen, everything, match, progress)
    if dry_run:
        return result
    mapping: dict[str, str] = {}
    if result.rewritten:
        mapping = _write(repo, result, everything, match, keep_old, progress)
    originals = {old for old, new in mapping.items() if new != old}
    if not keep_old and (originals or leftovers):
        after = repo.trusted_snapshots(repo.list_snapshots(include_hidden=True), warn=False)
        markers = repo.markers().hidden
        plan = plan_forget(after, originals, markers, rebase=not can_write_markers(repo),
                           scope={s.id for s in after if s.id not in markers}, may_replace=repo.is_owner_signed)
        result.forget = forget_snapshots(repo, plan, progress)
    return result


def _write(repo: Repository, result: RewriteResult, everything: list[Snapshot], match: PathMatcher,
           keep_old: bool, progress: ProgressSink) -> dict[str, str]:
    """Store the new file lists, then the new (owner-signed) snapshots; returns old id -> new id."""
    by_id = {s.id: s for s in everything}
    trees: dict[str, list[str]] = {}
    progress.start("write file lists", len(result.rewritten))
    for rec in result.rewritten:
        s = by_id[rec.old_id]
        if rec.action == FILTER:
            trees[rec.old_id] = _write_tree(repo, repo.iter_tree(s.tree), match)
        elif rec.action == REBASE:
            trees[rec.old_id] = _write_tree(repo, repo.iter_entries(s), match)
        progress.advance(files=1)
    repo.flush()  # file lists stored and indexed before any snapshot names them
    progress.finish()
    when = now_iso()
    changes = {rec.old_id: _change(rec, trees.get(rec.old_id), result.excludes, result.iexcludes, when, keep_old)
               for rec in result.rewritten}
    mapping = rewrite_snapshots(repo, changes, snapshots=everything, delete_old=False)
    for rec in result.rewritten:
        rec.new_id = mapping.get(rec.old_id)
        progress.info(f"snapshot {rec.old_id[:8]} -> {str(rec.new_id)[:8]}: {rec.removed_entries} entries removed")
    return mapping


def _change(rec: SnapshotRewrite, tree: list[str] | None, excludes: list[str], iexcludes: list[str], when: str,
            keep_old: bool) -> Callable[[Snapshot], None]:
    def apply(s: Snapshot) -> None:
        if not keep_old:
            s.extra["replaces"] = rec.old_id
        else:
            s.extra.pop("replaces", None)
        info: dict = {"original": rec.old_id, "time": when, "excludes": list(excludes),
                      "entries_removed": rec.removed_entries, "bytes_removed": rec.removed_bytes}
        if iexcludes:
            info["iexcludes"] = list(iexcludes)
        s.extra["rewritten"] = info
        if tree is not None:
            s.tree = tree
        if rec.action == REBASE:
            s.kind, s.parent, s.chain, s.depth = KIND_FULL, None, None, 0

    return apply
