"""Durations such as ``7d``, ``12h``, ``1w2d``, ``90m``, ``1y`` (y = 365 d, m = minutes, mo = 30 d)."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400, "y": 365 * 86400}
_PART = re.compile(r"(\d+)(mo|[smhdwy])")


def parse_duration(text: str) -> timedelta:
    s = text.strip().lower()
    if not s:
        raise ValueError("empty duration")
    pos = 0
    total = 0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(f"{text!r} is not a duration like 7d, 12h, 1w2d, 30m")
    return timedelta(seconds=total)
