"""Retention: which snapshots a policy keeps, and why.

A pure function of (snapshots, policy, now): no repository, no clock, no
environment, so decisions can be tested against golden files and explained
line by line in ``forget --dry-run``.

Semantics (restic's, with one safety change):

- snapshots are grouped (by host and paths by default) and each group is
  judged alone, newest first;
- ``last N`` keeps the N newest; ``hourly/daily/weekly/monthly/yearly N``
  keep the newest snapshot of each of the N newest hours/days/ISO weeks/
  months/years that have one (``UNLIMITED`` = every such period);
- ``within D`` keeps what is at most D older than the group's newest
  snapshot, so retention never deletes anything merely because backups
  stopped and time passed;
- ``tags``: a snapshot carrying every tag of one of the sets is kept;
- safety change: a snapshot dated after ``now`` (a host with a wrong clock)
  is kept and takes no part in the rules, so it can neither push real
  snapshots out of their periods nor become the reference of ``within``.

Chains are not considered here: a removed snapshot that kept ones depend on
is handled by the caller (rebasing), never by keeping extra snapshots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

#: A count meaning "every period that has a snapshot".
UNLIMITED = -1
GROUP_FIELDS = ("host", "paths", "tags")
DEFAULT_GROUP_BY = ("host", "paths")


@dataclass(frozen=True)
class SnapshotFacts:
    """What retention needs to know about a snapshot."""

    id: str
    time: datetime  # timezone-aware
    host: str = ""
    paths: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeepPolicy:
    """Counts are 0 (rule off), a positive number, or UNLIMITED."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: timedelta | None = None
    #: Keep a snapshot that has every tag of any one of these sets.
    tags: tuple[frozenset[str], ...] = ()
    #: Where calendar periods begin and end; None = this machine's local time.
    tz: tzinfo | None = UTC

    def is_empty(self) -> bool:
        return not (self.last or self.hourly or self.daily or self.weekly or self.monthly or self.yearly
                    or self.within is not None or self.tags)

    def describe(self) -> str:
        parts = [f"{name} {'unlimited' if n == UNLIMITED else n}"
                 for name, n in (("last", self.last), ("hourly", self.hourly), ("daily", self.daily),
                                 ("weekly", self.weekly), ("monthly", self.monthly), ("yearly", self.yearly)) if n]
        if self.within is not None:
            parts.append(f"within {format_timedelta(self.within)}")
        parts += [f"tag {','.join(sorted(t))}" for t in self.tags]
        return ", ".join(parts) or "nothing"


@dataclass(frozen=True)
class Decision:
    id: str
    keep: bool
    reasons: tuple[str, ...]


@dataclass
class GroupDecisions:
    """One group's snapshots, newest first, each with its decision."""

    key: dict[str, object]
    decisions: list[Decision] = field(default_factory=list)

    @property
    def kept(self) -> list[str]:
        return [d.id for d in self.decisions if d.keep]

    @property
    def removed(self) -> list[str]:
        return [d.id for d in self.decisions if not d.keep]


def _periods(tz: tzinfo | None) -> list[tuple[str, str, Callable[[datetime], tuple]]]:
    def local(t: datetime) -> datetime:
        return t.astimezone(tz) if tz is not None else t.astimezone()

    return [
        ("hourly", "hourly snapshot", lambda t: local(t).timetuple()[:4]),
        ("daily", "daily snapshot", lambda t: local(t).timetuple()[:3]),
        ("weekly", "weekly snapshot", lambda t: local(t).isocalendar()[:2]),
        ("monthly", "monthly snapshot", lambda t: local(t).timetuple()[:2]),
        ("yearly", "yearly snapshot", lambda t: local(t).timetuple()[:1]),
    ]


def group_key(snap: SnapshotFacts, group_by: Sequence[str]) -> tuple:
    out = []
    for f in group_by:
        if f == "host":
            out.append(snap.host)
        elif f == "paths":
            out.append(tuple(sorted(snap.paths)))
        elif f == "tags":
            out.append(tuple(sorted(snap.tags)))
        else:
            raise ValueError(f"cannot group by {f!r} (use {', '.join(GROUP_FIELDS)})")
    return tuple(out)


def decide(snapshots: Iterable[SnapshotFacts], policy: KeepPolicy, now: datetime,
           group_by: Sequence[str] = DEFAULT_GROUP_BY) -> list[GroupDecisions]:
    """Decisions for every snapshot, grouped; groups in order of their key."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    groups: dict[tuple, list[SnapshotFacts]] = {}
    for s in snapshots:
        groups.setdefault(group_key(s, group_by), []).append(s)
    out = []
    for key in sorted(groups):
        g = GroupDecisions(dict(zip(group_by, key, strict=True)))
        g.decisions = decide_group(groups[key], policy, now)
        out.append(g)
    return out


def decide_group(snapshots: Sequence[SnapshotFacts], policy: KeepPolicy, now: datetime) -> list[Decision]:
    """Decisions for one group of snapshots, newest first."""
    ordered = sorted(snapshots, key=lambda s: (s.time, s.id), reverse=True)
    present = [s for s in ordered if s.time <= now]
    newest = present[0].time if present else None
    remaining = {name: n for name, n in (("last", policy.last), ("hourly", policy.hourly),
                                         ("daily", policy.daily), ("weekly", policy.weekly),
                                         ("monthly", policy.monthly), ("yearly", policy.yearly))}
    last_period: dict[str, tuple | None] = dict.fromkeys(remaining)
    periods = _periods(policy.tz)
    out = []
    for s in ordered:
        reasons: list[str] = []
        if s.time > now:
            out.append(Decision(s.id, True, ("dated in the future (clock skew?)",)))
            continue
        if remaining["last"]:
            reasons.append("last snapshot")
            remaining["last"] -= 1 if remaining["last"] > 0 else 0
        for name, reason, period_of in periods:
            if not remaining[name]:
                continue
            p = period_of(s.time)
            if p != last_period[name]:
                last_period[name] = p
                reasons.append(reason)
                if remaining[name] > 0:
                    remaining[name] -= 1
        if policy.within is not None and newest is not None and newest - s.time <= policy.within:
            reasons.append(f"within {format_timedelta(policy.within)} of the newest")
        have = set(s.tags)
        for wanted in policy.tags:
            if wanted <= have:
                reasons.append(f"has tag{'s' if len(wanted) > 1 else ''} {','.join(sorted(wanted))}")
        out.append(Decision(s.id, bool(reasons), tuple(reasons) if reasons else ("no rule keeps it",)))
    return out


def format_timedelta(d: timedelta) -> str:
    secs = int(d.total_seconds())
    if secs == 0:
        return "0s"
    parts = []
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if secs >= n:
            parts.append(f"{secs // n}{unit}")
            secs %= n
    return "".join(parts)
