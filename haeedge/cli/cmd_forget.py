"""haeedge forget"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from haeedge.cli.context import AppContext, json_option, pass_app
from haeedge.cli.selection import all_snapshots, filter_snapshots
from haeedge.cli.shared import parse_max_unused, report_prune
from haeedge.durations import parse_duration
from haeedge.errors import UsageError
from haeedge.operations.prune import forget_snapshots, leftover_originals, plan_forget
from haeedge.operations.prune import prune as prune_repository
from haeedge.operations.retention import (
    GROUP_FIELDS,
    UNLIMITED,
    Decision,
    GroupDecisions,
    KeepPolicy,
    SnapshotFacts,
    decide,
)
from haeedge.repo.forgotten import can_write_markers
from haeedge.ui import messages


class CountType(click.ParamType):
    """A non-negative count, or 'unlimited'."""

    name = "N|unlimited"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and value == UNLIMITED:  # from a profile's default_map
            return UNLIMITED
        if str(value).strip().lower() == "unlimited":
            return UNLIMITED
        try:
            n = int(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not a count or 'unlimited'", param, ctx)
        if n < 0:
            self.fail(f"{value!r} is negative (use 'unlimited' for no limit)", param, ctx)
        return n


COUNT = CountType()


def _keep_option(period: str, what: str):
    return click.option(f"--keep-{period}", f"keep_{period}", type=COUNT, default=0, metavar="N",
                        help=f"Keep the newest snapshot of each of the last N {what} that have one.")


def build_policy(keep_last: int, keep_hourly: int, keep_daily: int, keep_weekly: int, keep_monthly: int,
                 keep_yearly: int, keep_within: str | None, keep_tags: tuple[str, ...]) -> KeepPolicy:
    within = None
    if keep_within:
        try:
            within = parse_duration(keep_within)
        except ValueError as e:
            raise UsageError(f"--keep-within: {e}") from None
    tags = tuple(frozenset(t.strip() for t in spec.split(",") if t.strip()) for spec in keep_tags)
    if any(not t for t in tags):
        raise UsageError("--keep-tag: give at least one tag")
    return KeepPolicy(last=keep_last, hourly=keep_hourly, daily=keep_daily, weekly=keep_weekly,
                      monthly=keep_monthly, yearly=keep_yearly, within=within, tags=tags, tz=None)


def parse_group_by(value: str) -> tuple[str, ...]:
    fields = tuple(f.strip() for f in value.split(",") if f.strip())
    bad = [f for f in fields if f not in GROUP_FIELDS]
    if bad:
        raise UsageError(f"--group-by: unknown field {bad[0]!r} (use {', '.join(GROUP_FIELDS)}, or '' for none)")
    return fields


@click.command("forget")
@click.argument("snapshot_ids", nargs=-1, metavar="[SNAPSHOT]...")
@click.option("--keep-last", "keep_last", type=COUNT, default=0, metavar="N", help="Keep the N newest snapshots.")
@_keep_option("hourly", "hours")
@_keep_option("daily", "days")
@_keep_option("weekly", "ISO weeks")
@_keep_option("monthly", "months")
@_keep_option("yearly", "years")
@click.option("--keep-within", metavar="DURATION",
              help="Keep snapshots at most DURATION older than the group's newest one (e.g. 7d, 1y2mo).")
@click.option("--keep-tag", "keep_tag", multiple=True, metavar="TAG[,TAG...]",
              help="Keep snapshots that have all these tags (repeatable: any of the lists).")
@click.option("--group-by", default="host,paths", show_default=True, metavar="FIELDS",
              help="Judge snapshots in groups with equal host, paths and/or tags ('' = one group).")
@click.option("--host", "hosts", multiple=True, help="Only consider snapshots of this host (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Only consider snapshots with this tag (repeatable).")
@click.option("--path", "paths", multiple=True, help="Only consider snapshots that include this path.")
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be kept and removed, and why; change nothing.")
@click.option("--prune", "prune", is_flag=True, help="Run 'prune' afterwards to free the space.")
@click.option("--rebase", is_flag=True,
              help="Free forgotten parents now: rebase kept incrementals that need them onto new full file "
                   "lists. Those snapshots get new ids (reported old -> new).")
@click.option("--max-unused", default="5%", show_default=True, metavar="P%",
              help="With --prune: repack packs with more than this share unused.")
@json_option
@pass_app
def command(app: AppContext, snapshot_ids, keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly,
            keep_yearly, keep_within, keep_tag, group_by, hosts, tags, paths, dry_run, prune,
            rebase, max_unused) -> None:
    """Remove snapshots by a retention policy, or the snapshots given.

    Kept snapshots keep their ids. A removed snapshot that a kept incremental
    still needs (its parent chain) is kept hidden as chain support until no
    kept snapshot needs it; then it is deleted. Space is freed by 'prune'
    (or --prune); --rebase frees forgotten parents at once instead, at the
    price of new ids for the kept snapshots that needed them.

    \b
    Examples:
      haeedge forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run
      haeedge forget --keep-last 10 --group-by host --prune
      haeedge forget 1a2b3c4d
    """
    policy = build_policy(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, keep_within,
                          keep_tag)
    fields = parse_group_by(group_by)
    share = parse_max_unused(max_unused)
    if snapshot_ids and _policy_given_here():
        raise UsageError("give either snapshots or a --keep-* policy, not both")
    if not snapshot_ids and policy.is_empty():
        raise UsageError("no snapshots and no --keep-* policy given: nothing to do",
                         hint="for example: haeedge forget --keep-daily 7 --keep-weekly 4")
    now = datetime.now(UTC)
    lock = "shared" if dry_run else "exclusive"
    with app.open_repo(lock=lock, command="forget", load_index=not dry_run) as repo:
        # trusted only: retention never counts a snapshot a writer forged
        everything = all_snapshots(repo, include_hidden=True)
        markers = repo.markers().hidden
        snaps = [s for s in everything if s.id not in markers]
        leftovers = leftover_originals(everything, may_replace=repo.is_owner_signed)
        considered = filter_snapshots((s for s in snaps if s.id not in leftovers), hosts, tags, paths)
        if snapshot_ids:
            named = {repo.resolve_snapshot(ref).id for ref in snapshot_ids}
            groups = [GroupDecisions({}, [Decision(s.id, False, ("given on the command line",))
                                          for s in reversed(snaps) if s.id in named])]
        else:
            groups = decide([SnapshotFacts(s.id, s.datetime, s.host, tuple(s.paths), tuple(s.tags))
                             for s in considered], policy, now, fields)
        remove = {d.id for g in groups for d in g.decisions if not d.keep}
        plan = plan_forget(everything, remove, markers, rebase=rebase or not can_write_markers(repo),
                           scope={s.id for s in considered}, may_replace=repo.is_owner_signed)
        result = forget_snapshots(repo, plan, app.progress()) if not dry_run else None
        pruned = prune_repository(repo, share, progress=app.progress()) if prune and not dry_run else None
    by_id = {s.id: s for s in everything}
    rebased = {s.id for s in plan.rebase}
    hide = {s.id for s in plan.hide}
    removed = {s.id for s in plan.remove}
    renamed = result.rewritten if result else {}  # only with --rebase
    kept = sorted(renamed.get(s.id, s.id) for s in snaps if s.id not in removed)
    forgotten = result.removed if result else []
    app.run.record_forget(kept=kept, removed=forgotten, hidden=result.hidden if result else [])
    if app.json:
        groups_json = [{"key": g.key, "snapshots": [
            messages.forget_snapshot(by_id[d.id], d.keep, d.reasons, d.id in hide, d.id in rebased)
            for d in g.decisions]} for g in groups]
        app.emit(messages.forget(dry_run=dry_run, policy=policy.describe(), groups=groups_json,
                                 remove=sorted(removed), leftovers=sorted(leftovers), kept=kept, hide=sorted(hide),
                                 release=sorted(s.id for s in plan.release), result=result,
                                 rebase=sorted(rebased), pruned=pruned))
        return
    for g in groups:
        key = "  ".join(f"{k} {' '.join(v) if isinstance(v, tuple) else v}" for k, v in g.key.items())
        app.out(key or "all snapshots")
        for d in g.decisions:
            s = by_id[d.id]
            note = ""
            if d.id in hide:
                note = "; kept hidden as chain support (a kept snapshot needs it)"
            elif d.id in rebased:
                note = "; rebased: becomes a full snapshot (its parent is removed)"
            app.out(f"  {'keep' if d.keep else 'remove':<6}  {s.short_id}  {s.time[:19].replace('T', ' ')}  "
                    f"{s.kind:<11}  {', '.join(d.reasons)}{note}")
    for sid in sorted(leftovers):
        app.out(f"  remove  {sid[:8]}  (left by an interrupted forget or repair; a rewritten copy exists)")
    for s in plan.release:
        app.out(f"  delete  {s.short_id}  (forgotten earlier and kept hidden; no kept snapshot needs it any more)")
    if result is not None:
        for s in plan.rebase:
            app.out(f"  rebased {s.short_id} -> {result.rewritten[s.id][:8]} (a full snapshot now)")
    verb = "would remove" if dry_run else "removed"
    line = f"{verb} {len(plan.remove)} snapshots"
    if hide:
        line += f" ({len(hide)} kept hidden as chain support)"
    if plan.release:
        line += f", {'would delete' if dry_run else 'deleted'} {len(plan.release)} hidden ones no longer needed"
    if rebased:
        line += f", {'would rebase' if dry_run else 'rebased'} {len(rebased)}"
    app.out(f"{line}, kept {len(kept)} (ids unchanged)" if not rebased else f"{line}, kept {len(kept)}")
    if result is not None and result.retained:
        app.out(f"{len(result.retained)} forgotten snapshots are under Object Lock retention: hidden now, "
                "deleted by a later forget")
    if pruned is not None:
        report_prune(app, pruned)
    elif prune and dry_run:
        app.out("prune skipped (dry run)")


def _policy_given_here() -> bool:
    """A --keep-* option on the command line (a profile's policy does not stop 'forget ID')."""
    ctx = click.get_current_context()
    return any(ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE
               for p in ctx.command.params if p.name and p.name.startswith("keep_"))
