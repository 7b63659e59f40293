"""The ``--json`` documents of every command, one function per message type (docs/json.md).

Commands hand their results here and print what comes back (``AppContext.emit``),
so each message's fields are written down once, next to each other, and a
change to one is a change to docs/json.md. Fields are only ever added, never
renamed or removed. Key order does not matter: documents are printed with
sorted keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from haeedge.archiver import BackupResult
    from haeedge.operations.check import Finding, VerifyReport
    from haeedge.operations.copy import CopyResult
    from haeedge.operations.keys import Approval, KeyInfo
    from haeedge.operations.prune import PruneResult
    from haeedge.operations.repair import IndexRepairResult, SnapshotsRepairResult
    from haeedge.operations.rewrite import RewriteResult, SnapshotRewrite
    from haeedge.repo.config import RepositoryConfig
    from haeedge.repo.signing import SignatureStatus
    from haeedge.repo.snapshot import Snapshot
    from haeedge.repo.tree import Node
    from haeedge.restorer import RestoreResult


def entry(node: Node) -> dict:
    """A file-list entry as ``ls`` and ``find`` print it: the stored fields (``Node.to_doc``) with ``path``
    made absolute, ``target`` decoded and ``chunks`` replaced by their count."""
    out = {k: v for k, v in node.to_doc().items() if k not in ("chunks", "path", "path_b64", "target", "target_b64")}
    out["path"] = "/" + node.path.decode("utf-8", "backslashreplace")
    if node.target is not None:
        out["target"] = node.target.decode("utf-8", "backslashreplace")
    out["chunks"] = len(node.chunks or ())
    return out


def backup(result: BackupResult, dry_run: bool, lagging: list[str] | None) -> dict:
    """``backup``: the snapshot's summary with its id and parent (``lagging`` only for replicated storage)."""
    snap, unchanged = result.snapshot, result.unchanged_since
    out = {"message_type": "summary", "snapshot_id": snap.id if snap else None, "dry_run": dry_run,
           "parent": snap.parent if snap else None, **result.summary.to_doc(), "warnings": result.warnings}
    if unchanged is not None:
        out["unchanged_since"] = unchanged.id
    if lagging is not None:
        out["lagging_replicas"] = lagging
    return out


def restore(snap: Snapshot, result: RestoreResult, overwrite: str, bytes_read: int, dry_run: bool) -> dict:
    out = {"message_type": "summary", "snapshot_id": snap.id, "files": result.files, "dirs": result.dirs,
           "others": result.others, "bytes": result.bytes, "damaged": result.damaged,
           "skipped": result.skipped, "warnings": result.warnings,
           "overwrite": overwrite, "unchanged": result.unchanged, "kept": result.kept,
           "bytes_skipped": result.bytes_skipped, "deleted": result.deleted, "verified": result.verified,
           "mismatched": result.mismatched, "bytes_read": bytes_read}
    if dry_run:
        out["planned"] = result.planned
    return out


def finding(f: Finding) -> dict:
    return {"severity": f.severity, "object": f.object, "message": f.message, "snapshots": f.snapshots,
            "files": f.files}


def verify(report: VerifyReport) -> dict:
    out = {"message_type": "summary", "ok": report.ok, "snapshots": report.snapshots,
           "hidden_snapshots": report.hidden, "packs": report.packs, "packs_read": report.packs_read,
           "blobs_checked": report.blobs_checked, "bytes_read": report.bytes_read,
           "findings": [finding(f) for f in report.findings]}
    if report.replicas:
        out["replicas"] = report.replicas
    return out


def signature(check: SignatureStatus) -> dict:
    return {"state": check.state, "signer": check.signer, "role": check.role, "signer_host": check.host,
            "message": check.message}


def snapshot(s: Snapshot) -> dict:
    return {"id": s.id, "short_id": s.short_id, "time": s.time, "host": s.host, "username": s.username,
            "paths": s.paths, "tags": s.tags, "kind": s.kind, "parent": s.parent, "chain": s.chain_root,
            "depth": s.depth, "program": s.program, "summary": s.summary}


def snapshots(snaps: Iterable[Snapshot], signed: dict[str, SignatureStatus]) -> list[dict]:
    """``snapshots``: an array, each with who signed it."""
    return [{**snapshot(s), "signature": signature(signed[s.id])} for s in snaps]


def ls(snapshot_id: str, entries: list[dict]) -> dict:
    """``ls``: ``entries`` already encoded with ``entry``."""
    return {"snapshot_id": snapshot_id, "entries": entries}


def find_snapshot(snap: Snapshot, found: Iterable[Node]) -> dict:
    return {"snapshot_id": snap.id, "time": snap.time, "host": snap.host, "entries": [entry(e) for e in found]}


def find(patterns: Sequence[str], matches: int, results: list[dict]) -> dict:
    return {"patterns": list(patterns), "matches": matches, "snapshots": results}


def diff(s1: Snapshot, s2: Snapshot, lists: dict[str, list[str]], no_metadata: bool, bytes_added: int,
         bytes_removed: int) -> dict:
    """``diff``: ``lists`` maps added, removed, modified and metadata to display paths."""
    return {"snapshot_1": s1.id, "snapshot_2": s2.id, "added": lists["added"], "removed": lists["removed"],
            "modified": lists["modified"], "metadata_only": [] if no_metadata else lists["metadata"],
            "stats": {"added": len(lists["added"]), "removed": len(lists["removed"]),
                      "modified": len(lists["modified"]), "metadata_only": len(lists["metadata"]),
                      "bytes_added": bytes_added, "bytes_removed": bytes_removed}}


def stats_snapshot(snap: Snapshot, sizes: dict) -> dict:
    return {"snapshot_id": snap.id, "time": snap.time, "host": snap.host, "kind": snap.kind,
            "bytes_added": snap.summary.get("bytes_added"), **sizes}


def stats(rows: list[dict], totals: dict) -> dict:
    return {"snapshots": rows, "total": totals}


def tag(changed: list[dict], unchanged: int) -> dict:
    return {"changed": changed, "unchanged": unchanged}


def tag_change(old_id: str, new_id: str, tags: list[str], relinked: bool) -> dict:
    return {"old_id": old_id, "new_id": new_id, "tags": tags, "relinked": relinked}


def completion(shell: str, script: str, install: str) -> dict:
    return {"shell": shell, "script": script, "install": install}


def copy(result: CopyResult) -> dict:
    return {"message_type": "summary",
            "copied": [{"source": s, "target": t} for s, t in result.copied],
            "skipped": [{"source": s, "target": t} for s, t in result.skipped],
            "failed": [{"source": s, "error": e} for s, e in result.failed],
            "chunks_read": result.chunks_read, "chunks_deduplicated": result.chunks_deduplicated,
            "raw_bytes_read": result.raw_bytes_read, "data_blobs_added": result.data_blobs_added,
            "tree_blobs_added": result.tree_blobs_added, "bytes_added": result.bytes_added}


def sync_replica(location: str, objects: int, lacking: int, damaged: int, copied: int, error: str | None) -> dict:
    return {"location": location, "objects": objects, "lacking": lacking, "damaged": damaged, "copied": copied,
            "error": error}


def sync(dry_run: bool, deep: bool, replicas: list[dict], report: Any) -> dict:
    """``sync``: the audit of each replica, and what the repair copied (``report``, None in a dry run)."""
    out: dict = {"message_type": "summary", "dry_run": dry_run, "deep": deep, "replicas": replicas}
    if report is not None:
        out.update(objects_copied=report.objects_copied, bytes_copied=report.bytes_copied,
                   failed=[{"object": n, "replica": loc, "error": e} for n, loc, e in report.failed],
                   unrecoverable=report.unrecoverable, conflicts=report.conflicts,
                   unreachable=report.unreachable, unwritable=report.unwritable)
    return out


def prune(result: PruneResult) -> dict:
    return {**asdict(result), "bytes_freed": result.bytes_freed}


def forget_snapshot(snap: Snapshot, keep: bool, reasons: Iterable[str], hidden: bool, rebase: bool) -> dict:
    return {"id": snap.id, "time": snap.time, "kind": snap.kind, "keep": keep, "reasons": list(reasons),
            "hidden": hidden, "rebase": rebase}


def forget(*, dry_run: bool, policy: dict, groups: list[dict], remove: list[str], leftovers: list[str],
           kept: list[str], hide: list[str], release: list[str], result: Any, rebase: list[str],
           pruned: PruneResult | None) -> dict:
    """``forget``: the plan (``groups`` of ``forget_snapshot``), and what ``result`` did (None when dry)."""
    return {"dry_run": dry_run, "policy": policy, "groups": groups, "remove": remove, "leftovers": leftovers,
            "kept": kept, "hide": hide, "release": release,
            "removed": result.removed if result else [], "hidden": result.hidden if result else [],
            "released": result.released if result else [], "retained": result.retained if result else [],
            "rebase": rebase, "rewritten": result.rewritten if result else {},
            "prune": prune(pruned) if pruned else None}


def rewrite_snapshot(r: SnapshotRewrite, action: str) -> dict:
    return {"old_id": r.old_id, "new_id": r.new_id, "time": r.time, "host": r.host, "kind": r.kind,
            "action": action, "chosen": r.chosen, "removed_entries": r.removed_entries,
            "removed_bytes": r.removed_bytes, "removed_paths": r.removed_paths,
            "paths_truncated": r.removed_entries > len(r.removed_paths)}


def rewrite(result: RewriteResult, action_names: dict[str, str]) -> dict:
    """``rewrite``: ``action_names`` maps the planner's actions to the documented words."""
    f = result.forget
    return {"dry_run": result.dry_run, "keep_old": result.keep_old, "excludes": result.excludes,
            "iexcludes": result.iexcludes, "chosen": result.chosen,
            "snapshots": [rewrite_snapshot(r, action_names.get(r.action, r.action)) for r in result.rewritten],
            "unchanged": result.unchanged,
            "forgotten": f.removed if f else [], "released": f.released if f else [],
            "hidden": f.hidden if f else []}


def repair_index(result: IndexRepairResult) -> dict:
    return asdict(result)


def repair_snapshots(result: SnapshotsRepairResult) -> dict:
    return {"dry_run": result.dry_run, "snapshots": result.snapshots, "bad_blobs": result.bad_blobs,
            "unreadable": result.unreadable, "rewritten": result.rewritten,
            "packs_replaced": result.packs_replaced, "warnings": result.warnings,
            "repaired": [{"old_id": x.old_id, "new_id": x.new_id, "damaged_files": x.damaged_files,
                          "lost_ranges": x.lost_ranges_text(), "dropped_entries": x.dropped_entries,
                          "broken_chain": x.broken_chain} for x in result.repaired]}


def _problems(problems: Iterable[tuple[str, str]]) -> list[dict]:
    return [{"object": f"keys/{o}", "message": m} for o, m in problems]


def key_list(infos: Iterable[KeyInfo], problems: Iterable[tuple[str, str]]) -> dict:
    return {"keys": [asdict(i) for i in infos], "problems": _problems(problems)}


def key_add(slot_id: str, kind: str, host: str | None, label: str | None, recipient: str | None) -> dict:
    return {"id": slot_id, "kind": kind, "host": host, "label": label, "recipient_fingerprint": recipient}


def key_remove(info: KeyInfo) -> dict:
    return {"removed": info.id, "kind": info.kind, "role": info.role}


def key_passwd(old: str, new: str) -> dict:
    return {"old": old, "new": new}


def key_signer(fingerprint: str, role: str, host: str | None, state: str, cert: str) -> dict:
    return {"fingerprint": fingerprint, "role": role, "host": host, "state": state, "cert": cert}


def key_signers(signers: list[dict], problems: Iterable[tuple[str, str]]) -> dict:
    return {"signers": signers, "problems": _problems(problems)}


def trust_show(repository_id: str, trust: Any) -> dict:
    """``trust show``: the repository's trust state (``repo.trust``)."""
    m = trust.manifest
    return {"repository_id": repository_id, "mode": trust.mode, "root_fingerprint": trust.root_fingerprint,
            "root_kind": m.root_kind if m else None, "sequence": m.sequence if m else 0,
            "owner_keys": sorted(m.owner_keys) if m else [],
            "writers": {f: w.host for f, w in sorted(m.writers.items())} if m else {},
            "removed": {f: w.host for f, w in sorted(m.removed.items())} if m else {}}


def trust_approve(result: Approval) -> dict:
    return asdict(result)


def _object_lock(config: RepositoryConfig) -> dict:
    return {"object_lock": config.object_lock.to_json()} if config.object_lock is not None else {}


def init(config: RepositoryConfig, location: str, key_slot: str) -> dict:
    """``init`` of a password repository."""
    return {"repository_id": config.repository_id, "location": location, "key_slot": key_slot,
            **_object_lock(config)}


def init_certificate(config: RepositoryConfig, location: str, key_slot: str, writer_slot: str, host: str,
                     recipient: str) -> dict:
    """``init --recipient-file``: the owner's slot and the backup host's write-only one."""
    return {**init(config, location, key_slot), "writer_key_slot": writer_slot, "host": host,
            "recipient_fingerprint": recipient}


def unlock(removed: int) -> dict:
    return {"removed": removed}


def dump(snapshot_id: str, path: str, kind: str, entries: int, nbytes: int, damaged: list[str],
         warnings: list[str], output: str | None) -> dict:
    return {"message_type": "summary", "snapshot_id": snapshot_id, "path": path, "kind": kind,
            "entries": entries, "bytes": nbytes, "damaged": damaged, "warnings": warnings, "output": output}


def mount(mountpoint: str, snapshots: int, stats: dict) -> dict:
    """``mount``: what the mount fetched (``stats`` from ``SnapshotView.stats``)."""
    return {"message_type": "summary", "mountpoint": mountpoint, "snapshots": snapshots, **stats}
