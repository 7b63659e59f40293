"""Text formatting helpers for command output."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import Any


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


#: Set once a run prints JSON (``--json``): then every message on stderr is a JSON line too.
_json_messages = False


def set_json_messages(enabled: bool) -> None:
    global _json_messages
    _json_messages = enabled


def message_line(kind: str, message: str) -> str:
    """One stderr line: ``{"message_type": KIND, "message": ...}`` under --json, else ``haeedge: KIND: ...``."""
    if _json_messages:
        return json.dumps({"message_type": kind, "message": message})
    return f"haeedge: {kind}: {message}"


def warn(message: str) -> None:
    """A warning on stderr, shown even with -q (a JSON line under --json, for monitoring wrappers)."""
    sys.stderr.write(message_line("warning", message) + "\n")
    sys.stderr.flush()


class MessageFormatter(logging.Formatter):
    """Log records as ``message_line``: library warnings read like the CLI's own (JSON under --json)."""

    def format(self, record: logging.LogRecord) -> str:
        return message_line(record.levelname.lower(), record.getMessage())


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()
