"""Byte sizes such as ``500``, ``64k``, ``1.5M``, ``2G``, ``1T`` (binary units: k = 1024)."""

from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?")


def parse_size(text: str) -> int:
    m = _SIZE.fullmatch(text.strip().lower())
    if not m:
        raise ValueError(f"{text!r} is not a size like 500, 64k, 1.5M, 2G")
    return int(float(m.group(1)) * _UNITS[m.group(2)])
