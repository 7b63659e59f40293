"""Snapshot manifests: the commit point of a backup.

A snapshot is a sealed JSON document (meta key) stored as ``snapshots/<id>``
where ``id`` is the SHA-256 of the stored bytes. A ``full`` snapshot's tree
holds the complete file list; an ``incremental`` one holds only the entries
added, changed or removed relative to ``parent``. ``chain`` names the full
snapshot that starts the chain and ``depth`` counts the links after it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from haeedge.errors import FormatError
from haeedge.repo.tree import is_hex_id

SNAPSHOT_VERSION = 1
KIND_FULL = "full"
KIND_INCREMENTAL = "incremental"
MAX_TREE_BLOBS = 10_000_000
MAX_CHAIN_DEPTH = 100_000
MAX_TEXT = 1 << 16
MAX_LIST = 100_000
#: Summary counters commands add up or format as sizes: numbers (or absent / null) only.
SUMMARY_NUMBERS = frozenset({"bytes_total", "bytes_added", "raw_bytes_added", "files_new", "files_changed",
                             "files_unchanged", "errors", "duration", "data_blobs_added", "tree_blobs_added",
                             "blobs_added", "packs_written", "dirs", "files", "others"})


@dataclass
class Snapshot:
    time: str
    host: str
    paths: list[str]
    kind: str
    tree: list[str]
    parent: str | None = None
    chain: str | None = None
    depth: int = 0
    tags: list[str] = field(default_factory=list)
    username: str = ""
    summary: dict = field(default_factory=dict)
    program: str = ""
    id: str = ""  # filled when loaded or saved; not part of the document
    extra: dict = field(default_factory=dict)
    #: Fingerprint (hex) of the key that signed the snapshot, and its armored detached signature
    #: over ``signed_bytes()``; see haeedge/repo/signing.py.
    signer: str | None = None
    signature: str | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_doc(), sort_keys=True, separators=(",", ":")).encode()

    def signed_bytes(self) -> bytes:
        """What the signature covers: the canonical document without its ``signature`` field."""
        doc = self.to_doc()
        doc.pop("signature", None)
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def to_doc(self) -> dict:
        doc = {
            "haeedge_snapshot": SNAPSHOT_VERSION,
            "time": self.time,
            "host": self.host,
            "username": self.username,
            "paths": self.paths,
            "tags": self.tags,
            "kind": self.kind,
            "parent": self.parent,
            "chain": self.chain,
            "depth": self.depth,
            "tree": self.tree,
            "summary": self.summary,
            "program": self.program,
            **self.extra,
        }
        if self.signer is not None:
            doc["signer"] = self.signer
        if self.signature is not None:
            doc["signature"] = self.signature
        return doc

    @classmethod
    def from_bytes(cls, data: bytes, snapshot_id: str) -> Snapshot:
        try:
            doc = json.loads(data, parse_constant=_no_constant, parse_float=_finite_float)
            if not isinstance(doc, dict) or doc.get("haeedge_snapshot") != SNAPSHOT_VERSION:
                raise ValueError("not a version 1 snapshot")
            kind = doc["kind"]
            if kind not in (KIND_FULL, KIND_INCREMENTAL):
                raise ValueError(f"unknown kind {kind!r}")
            tree = doc["tree"]
            if not isinstance(tree, list) or len(tree) > MAX_TREE_BLOBS or not all(is_hex_id(t) for t in tree):
                raise ValueError("bad tree list")
            parent = doc.get("parent")
            chain = doc.get("chain")
            depth = doc.get("depth", 0)
            if not isinstance(depth, int) or isinstance(depth, bool) or not 0 <= depth <= MAX_CHAIN_DEPTH:
                raise ValueError("bad depth")
            if kind == KIND_FULL and (parent is not None or depth != 0):
                raise ValueError("a full snapshot has no parent")
            linked = is_hex_id(parent) and is_hex_id(chain) and 0 < depth <= MAX_CHAIN_DEPTH
            if kind == KIND_INCREMENTAL and not linked:
                raise ValueError("an incremental snapshot needs parent, chain and depth")
            paths = _strings(doc["paths"], "paths")
            tags = _strings(doc.get("tags", []), "tags")
            for name in ("time", "host", "username", "program"):
                if not isinstance(doc.get(name, ""), str) or len(doc.get(name, "")) > MAX_TEXT:
                    raise ValueError(f"bad {name}")
            known = {"haeedge_snapshot", "time", "host", "username", "paths", "tags", "kind", "parent", "chain",
                     "depth", "tree", "summary", "program", "signer", "signature"}
            signer, signature = doc.get("signer"), doc.get("signature")
            if (signer is not None and not isinstance(signer, str)) or (
                    signature is not None and not isinstance(signature, str)):
                raise ValueError("bad signer or signature field")
            summary = doc.get("summary", {})
            _check_summary(summary)
            parse_time(str(doc["time"]))
            return cls(time=str(doc["time"]), host=str(doc["host"]), paths=paths, kind=kind, tree=tree,
                       parent=parent, chain=chain, depth=depth, tags=tags, username=str(doc.get("username", "")),
                       summary=summary, program=str(doc.get("program", "")), id=snapshot_id,
                       extra={k: v for k, v in doc.items() if k not in known}, signer=signer, signature=signature)
        except (ValueError, KeyError, TypeError) as e:
            raise FormatError(f"snapshot {snapshot_id[:12]} is malformed: {e}") from e

    @property
    def chain_root(self) -> str:
        return self.id if self.kind == KIND_FULL else str(self.chain)

    @property
    def datetime(self) -> datetime:
        return parse_time(self.time)

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def matches(self, hosts: Iterable[str] = (), tags: Iterable[str] = (), paths: Iterable[str] = ()) -> bool:
        """Of one of ``hosts``, with one of ``tags``, including every one of ``paths``; empty means any."""
        hosts, tags = set(hosts), set(tags)
        return ((not hosts or self.host in hosts) and (not tags or bool(tags & set(self.tags)))
                and set(paths) <= set(self.paths))


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a snapshot may hold")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text[:40]} is out of range")
    return v


def _strings(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_LIST or not all(
            isinstance(v, str) and len(v) <= MAX_TEXT for v in value):
        raise ValueError(f"bad {what}")
    return value


def _check_summary(summary: object) -> None:
    """Text, flags, finite numbers (one level of nesting); the counters the CLI adds up must be numbers."""
    if not isinstance(summary, dict) or len(summary) > MAX_LIST:
        raise ValueError("bad summary")
    for k, v in summary.items():
        if isinstance(v, bool) or v is None:
            ok = k not in SUMMARY_NUMBERS or v is None
        elif isinstance(v, int):
            ok = -(1 << 63) <= v < (1 << 64)
        elif isinstance(v, float):
            ok = True  # finite: the parser refuses the others
        elif isinstance(v, str):
            ok = k not in SUMMARY_NUMBERS and len(v) <= MAX_TEXT
        elif isinstance(v, dict):  # one level of detail, e.g. a stream backup's source
            ok = k not in SUMMARY_NUMBERS and len(v) <= 64 and all(
                isinstance(x, str | int | float | bool) or x is None for x in v.values())
        else:
            ok = False
        if not ok:
            raise ValueError(f"bad summary field {k[:40]!r}")


def now_iso(*, whole_seconds: bool = False) -> str:
    """Now in UTC as the format writes a time: with microseconds (snapshots, forget markers, repair notes)
    or in ``whole_seconds`` (key slots, key records, the trust registry), as docs/format.md shows each."""
    return datetime.fromtimestamp(time.time(), UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ" if whole_seconds else "%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
