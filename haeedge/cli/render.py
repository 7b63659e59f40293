"""Renderings several commands share (their --json shapes are in docs/json.md)."""

from __future__ import annotations

from haeedge.repo.tree import get_bytes_field, path_bytes


def entry_json(entry: dict) -> dict:
    out = {k: v for k, v in entry.items() if k not in ("chunks", "path", "path_b64", "target", "target_b64")}
    out["path"] = "/" + path_bytes(entry).decode("utf-8", "backslashreplace")
    t = get_bytes_field(entry, "target")
    if t is not None:
        out["target"] = t.decode("utf-8", "backslashreplace")
    out["chunks"] = len(entry.get("chunks") or ())
    return out
