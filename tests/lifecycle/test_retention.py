"""Retention is a pure function: golden cases, hand-checked rules, and properties.

Golden files live in tests/golden/retention/*.json; each holds the
snapshots, the policy, "now" and the expected decisions as readable lines.
``HAEEDGE_UPDATE_GOLDEN=1`` rewrites the expected lines (review the diff!).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haeedge.durations import parse_duration
from haeedge.operations.retention import UNLIMITED, KeepPolicy, SnapshotFacts, decide, decide_group

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "retention"
#: 400 Gregorian years: the calendar (weekdays, leap years, ISO weeks) repeats exactly.
GREGORIAN_CYCLE = timedelta(days=146097)


def ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def policy_from_json(d: dict) -> KeepPolicy:
    def count(k: str) -> int:
        v = d.get(k, 0)
        return UNLIMITED if v == "unlimited" else int(v)

    within = parse_duration(d["within"]) if d.get("within") else None
    return KeepPolicy(last=count("last"), hourly=count("hourly"), daily=count("daily"), weekly=count("weekly"),
                      monthly=count("monthly"), yearly=count("yearly"), within=within,
                      tags=tuple(frozenset(t) for t in d.get("tags", [])), tz=UTC)


def snapshots_from_json(rows: list) -> list[SnapshotFacts]:
    return [SnapshotFacts(r[0], ts(r[1]), r[2], tuple(r[3]), tuple(r[4])) for r in rows]


def render(case: dict) -> list[str]:
    snaps = snapshots_from_json(case["snapshots"])
    times = {s.id: s.time for s in snaps}
    lines = []
    for g in decide(snaps, policy_from_json(case["policy"]), ts(case["now"]), case.get("group_by", ["host", "paths"])):
        lines.append("group " + " ".join(f"{k}={','.join(v) if isinstance(v, tuple) else v}" for k, v in g.key.items()))
        for d in g.decisions:
            lines.append(f"{'keep' if d.keep else 'forget':<6} {d.id} {fmt(times[d.id])}  {', '.join(d.reasons)}")
    return lines


def dump_case(case: dict) -> str:
    """JSON with one snapshot and one expected line per line, for reviewable diffs."""
    head = {k: v for k, v in case.items() if k not in ("snapshots", "expected")}
    parts = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    for key in ("snapshots", "expected"):
        rows = [f"  {json.dumps(r)}" for r in case[key]]
        parts.append(f' "{key}": [' + ("\n" + ",\n".join(rows) + "\n ]" if rows else "]")
                     + ("," if key == "snapshots" else ""))
    return "\n".join(parts) + "\n}\n"


CASES = sorted(GOLDEN.glob("*.json"))


def test_there_are_enough_golden_cases():
    assert len(CASES) >= 50


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden(path: Path):
    case = json.loads(path.read_text())
    got = render(case)
    if os.environ.get("HAEEDGE_UPDATE_GOLDEN") == "1":
        case["expected"] = got
        path.write_text(dump_case(case))
    assert got == case["expected"], "\n".join(got)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden_moving_now_changes_nothing(path: Path):
    """Later "now" (backups stopped) and a whole Gregorian cycle later: the same decisions."""
    case = json.loads(path.read_text())
    snaps = snapshots_from_json(case["snapshots"])
    now = ts(case["now"])
    policy = policy_from_json(case["policy"])
    group_by = case.get("group_by", ["host", "paths"])

    def answer(snaps, now):
        return [(d.id, d.keep, d.reasons) for g in decide(snaps, policy, now, group_by) for d in g.decisions]

    base = answer(snaps, now)
    if all(s.time <= now for s in snaps):
        for later in (timedelta(hours=1), timedelta(days=400), timedelta(days=365 * 30)):
            assert answer(snaps, now + later) == base
    shifted = [SnapshotFacts(s.id, s.time + GREGORIAN_CYCLE, s.host, s.paths, s.tags) for s in snaps]
    assert answer(shifted, now + GREGORIAN_CYCLE) == base


# ---------------------------------------------------------------------- rules checked by hand


def _ids(decisions, keep=True):
    return [d.id for d in decisions if d.keep == keep]


def _series(*times: str) -> list[SnapshotFacts]:
    return [SnapshotFacts(f"s{i}", ts(t)) for i, t in enumerate(times)]


NOW = ts("2026-03-01T00:00:00Z")


def test_keep_last_keeps_the_newest():
    snaps = _series("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z")
    assert _ids(decide_group(snaps, KeepPolicy(last=2), NOW)) == ["s2", "s1"]


def test_daily_keeps_the_newest_of_each_day_and_counts_days_that_have_one():
    snaps = _series("2026-01-01T08:00:00Z", "2026-01-01T20:00:00Z",  # two on the 1st
                    "2026-01-03T09:00:00Z",  # none on the 2nd
                    "2026-01-04T01:00:00Z", "2026-01-04T02:00:00Z")
    ds = decide_group(snaps, KeepPolicy(daily=3), NOW)
    assert _ids(ds) == ["s4", "s2", "s1"]  # the 2nd has none, so the 1st is the third day


def test_weekly_uses_iso_weeks_across_the_year_boundary():
    # 2025-12-29 (Mon) .. 2026-01-04 (Sun) is ISO week 2026-W01.
    snaps = _series("2025-12-28T12:00:00Z", "2025-12-29T12:00:00Z", "2026-01-04T12:00:00Z",
                    "2026-01-05T12:00:00Z")
    assert _ids(decide_group(snaps, KeepPolicy(weekly=3), NOW)) == ["s3", "s2", "s0"]


def test_monthly_and_yearly_periods():
    snaps = _series("2024-02-29T12:00:00Z", "2024-03-01T00:00:00Z", "2025-12-31T23:59:59Z",
                    "2026-01-01T00:00:00Z", "2026-01-31T00:00:00Z")
    assert _ids(decide_group(snaps, KeepPolicy(monthly=3), NOW)) == ["s4", "s2", "s1"]
    assert _ids(decide_group(snaps, KeepPolicy(yearly=UNLIMITED), NOW)) == ["s4", "s2", "s1"]


def test_within_is_relative_to_the_newest_snapshot_not_to_now():
    snaps = _series("2020-01-01T00:00:00Z", "2020-01-05T00:00:00Z", "2020-01-08T00:00:00Z")
    assert _ids(decide_group(snaps, KeepPolicy(within=timedelta(days=3)), NOW)) == ["s2", "s1"]


def test_keep_tag_needs_every_tag_of_one_list():
    snaps = [SnapshotFacts("a", ts("2026-01-01T00:00:00Z"), tags=("x",)),
             SnapshotFacts("b", ts("2026-01-02T00:00:00Z"), tags=("x", "y")),
             SnapshotFacts("c", ts("2026-01-03T00:00:00Z"), tags=("z",))]
    ds = decide_group(snaps, KeepPolicy(tags=(frozenset({"x", "y"}), frozenset({"z"}))), NOW)
    assert _ids(ds) == ["c", "b"]
    assert dict((d.id, d.reasons) for d in ds)["b"] == ("has tags x,y",)


def test_future_snapshot_is_kept_and_does_not_push_others_out():
    snaps = _series("2026-02-27T00:00:00Z", "2026-02-28T00:00:00Z", "2099-01-01T00:00:00Z")
    ds = decide_group(snaps, KeepPolicy(last=1, within=timedelta(days=1)), NOW)
    assert _ids(ds) == ["s2", "s1", "s0"]
    assert ds[0].reasons == ("dated in the future (clock skew?)",)


def test_groups_are_judged_separately():
    snaps = [SnapshotFacts("a1", ts("2026-01-01T00:00:00Z"), host="a", paths=("/x",)),
             SnapshotFacts("a2", ts("2026-01-02T00:00:00Z"), host="a", paths=("/x",)),
             SnapshotFacts("b1", ts("2026-01-01T00:00:00Z"), host="b", paths=("/x",)),
             SnapshotFacts("a3", ts("2026-01-03T00:00:00Z"), host="a", paths=("/y",))]
    by_group = {tuple(g.key.values()): g.kept for g in decide(snaps, KeepPolicy(last=1), NOW)}
    assert by_group == {("a", ("/x",)): ["a2"], ("a", ("/y",)): ["a3"], ("b", ("/x",)): ["b1"]}
    one = decide(snaps, KeepPolicy(last=1), NOW, group_by=())
    assert len(one) == 1 and one[0].kept == ["a3"]


def test_empty_policy_keeps_nothing_and_says_so():
    ds = decide_group(_series("2026-01-01T00:00:00Z"), KeepPolicy(), NOW)
    assert ds[0].keep is False and ds[0].reasons == ("no rule keeps it",)


# ---------------------------------------------------------------------- properties

_times = st.lists(st.integers(min_value=0, max_value=3 * 365 * 24 * 60), min_size=0, max_size=40)
_counts = st.sampled_from([0, 0, 1, 2, 3, 5, UNLIMITED])
_policies = st.builds(
    KeepPolicy, last=_counts, hourly=_counts, daily=_counts, weekly=_counts, monthly=_counts, yearly=_counts,
    within=st.one_of(st.none(), st.integers(0, 400).map(lambda d: timedelta(days=d))),
    tags=st.sampled_from([(), (frozenset({"a"}),), (frozenset({"a", "b"}), frozenset({"c"}))]))
_BASE = ts("2023-06-15T13:37:00Z")


def _snaps_from(minutes: list[int], tag_seed: int) -> list[SnapshotFacts]:
    tags = [(), ("a",), ("a", "b"), ("c",), ("b",)]
    return [SnapshotFacts(f"s{i:03d}", _BASE + timedelta(minutes=m), "h", ("/p",), tags[(i * 7 + tag_seed) % 5])
            for i, m in enumerate(minutes)]


@settings(max_examples=150, deadline=None)
@given(_times, _policies, st.integers(0, 4), st.integers(0, 10**6))
def test_property_later_now_and_calendar_cycle_change_nothing(minutes, policy, tag_seed, later_minutes):
    snaps = _snaps_from(minutes, tag_seed)
    now = max((s.time for s in snaps), default=_BASE)
    base = decide_group(snaps, policy, now)
    assert decide_group(snaps, policy, now + timedelta(minutes=later_minutes)) == base
    shifted = [SnapshotFacts(s.id, s.time + GREGORIAN_CYCLE, s.host, s.paths, s.tags) for s in snaps]
    assert decide_group(shifted, policy, now + GREGORIAN_CYCLE) == base


@settings(max_examples=150, deadline=None)
@given(_times, _policies, st.integers(0, 4), st.sampled_from(["last", "hourly", "daily", "weekly", "monthly",
                                                             "yearly"]))
def test_property_a_larger_count_never_keeps_less(minutes, policy, tag_seed, rule):
    snaps = _snaps_from(minutes, tag_seed)
    now = max((s.time for s in snaps), default=_BASE)
    n = getattr(policy, rule)
    bigger = KeepPolicy(**{**policy.__dict__, rule: UNLIMITED if n == UNLIMITED else n + 1})
    kept = set(_ids(decide_group(snaps, policy, now)))
    assert kept <= set(_ids(decide_group(snaps, bigger, now)))


@settings(max_examples=100, deadline=None)
@given(_times, st.integers(1, 6), st.integers(0, 4))
def test_property_counts_are_respected_and_the_newest_is_kept(minutes, n, tag_seed):
    snaps = _snaps_from(minutes, tag_seed)
    now = max((s.time for s in snaps), default=_BASE)
    for rule in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
        ds = decide_group(snaps, KeepPolicy(**{rule: n}), now)
        assert len(_ids(ds)) == min(n, len(ds)) if rule == "last" else len(_ids(ds)) <= n
        if snaps:
            assert ds[0].keep
        assert len(ds) == len(snaps) and {d.id for d in ds} == {s.id for s in snaps}
