"""What a backup did: the counts of the walk and what the run added to the repository.

The same values go into the snapshot's ``summary`` (``to_doc``; the snapshot
document sorts its keys, so field order does not matter) and into the
``backup --json`` summary (``ui/messages.backup``, docs/json.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class BackupSummary:
    """Counted while the walk runs (plain attributes: ``+= 1`` per entry), completed by ``finish``."""

    files_new: int = 0
    files_changed: int = 0
    files_unchanged: int = 0
    dirs: int = 0
    others: int = 0
    files_deleted: int = 0
    errors: int = 0
    entries: int = 0
    bytes_read: int = 0
    bytes_total: int = 0
    kind: str = ""
    kind_reason: str = ""
    data_blobs_added: int = 0
    tree_blobs_added: int = 0
    blobs_added: int = 0
    bytes_added: int = 0
    raw_bytes_added: int = 0
    packs_written: int = 0
    duration: float = 0.0
    #: --skip-if-unchanged found nothing to save (only in the --json summary, never in a snapshot).
    skipped: bool = False
    #: Stream backups: where the data came from (``{"source": ..., "program": ...}``).
    stream: dict[str, str] | None = None

    def finish(self, stats: Any, kind: str, reason: str, started: float) -> BackupSummary:
        """Add what this run wrote (``Repository.stats``), the kind and why, and the time since ``started``."""
        self.kind = kind
        self.kind_reason = reason
        self.data_blobs_added = stats.data_blobs_added
        self.tree_blobs_added = stats.tree_blobs_added
        self.blobs_added = stats.blobs_added
        self.bytes_added = stats.stored_bytes_added
        self.raw_bytes_added = stats.raw_bytes_added
        self.packs_written = stats.packs_written
        self.duration = round(time.monotonic() - started, 3)
        return self

    def to_doc(self) -> dict[str, Any]:
        """The snapshot's ``summary`` object (and the body of the --json summary)."""
        doc: dict[str, Any] = {
            "files_new": self.files_new, "files_changed": self.files_changed,
            "files_unchanged": self.files_unchanged, "dirs": self.dirs, "others": self.others,
            "files_deleted": self.files_deleted, "errors": self.errors, "entries": self.entries,
            "bytes_read": self.bytes_read, "bytes_total": self.bytes_total, "kind": self.kind,
            "kind_reason": self.kind_reason, "data_blobs_added": self.data_blobs_added,
            "tree_blobs_added": self.tree_blobs_added, "blobs_added": self.blobs_added,
            "bytes_added": self.bytes_added, "raw_bytes_added": self.raw_bytes_added,
            "packs_written": self.packs_written, "duration": self.duration,
        }
        if self.stream is not None:
            doc["stream"] = self.stream
        if self.skipped:
            doc["skipped"] = True
        return doc
