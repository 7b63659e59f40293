"""``restore --delete``: remove from the target what the snapshot does not hold.

Only below the restored paths: the ``--include`` paths that matched something,
or without includes the snapshot's backup paths. Entries an ``--exclude``
pattern matches are neither restored nor deleted. Everything else the target
holds (its other directories, the target itself) is never touched.

The walk goes through directory descriptors, one component at a time with
``O_NOFOLLOW``: a symlink in the target (planted, or swapped in while this
runs) is removed as a link or skipped, never followed, so nothing outside
the target can be reached. Other file systems mounted inside the target are
not descended into.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class DeleteResult:
    #: Paths (relative to the target) removed, or with ``dry_run`` that would be; a directory before its contents.
    deleted: list[bytes] = field(default_factory=list)
    #: One message per entry that could not be removed or looked at.
    failed: list[str] = field(default_factory=list)


def delete_extraneous(target: bytes, roots: list[bytes], held: Callable[[bytes], bool],
                      excluded: Callable[[bytes], bool] = lambda rel: False, *, dry_run: bool = False) -> DeleteResult:
    """Remove every entry below ``target``/``roots`` that is neither ``held`` nor ``excluded``.

    ``held(rel)``: the snapshot's selection has it (a held directory is walked into);
    ``excluded(rel)``: the selection leaves it alone, with all it holds. Anything else
    is removed, a directory with all it holds.
    """
    result = DeleteResult()
    try:
        target_fd = os.open(target, _DIR_FLAGS)
    except OSError:
        return result  # no target (a dry run into a new directory): nothing to delete
    try:
        device = os.fstat(target_fd).st_dev
        for root in _outermost(roots):
            if any(part in (b"..", b".") for part in root.split(b"/")):
                # Roots come from --include and from the snapshot's recorded paths (hostile data):
                # one that climbs out would let the walk delete outside the target.
                result.failed.append(f"{os.fsdecode(root)}: not deleted below: not a plain path inside the target")
                continue
            try:
                fd = _open_below(target_fd, root)
            except OSError:
                continue  # absent, or reached through a symlink: nothing of ours is there
            try:
                _Walk(result, held, excluded, device, dry_run).directory(fd, root)
            finally:
                os.close(fd)
    finally:
        os.close(target_fd)
    return result


def _outermost(roots: list[bytes]) -> list[bytes]:
    """Roots without those inside another root (b"" is the whole target)."""
    out: list[bytes] = []
    for r in sorted(set(roots), key=lambda p: (p.count(b"/"), p)):
        if not any(o == b"" or r == o or r.startswith(o + b"/") for o in out):
            out.append(r)
    return out


def _open_below(dir_fd: int, rel: bytes) -> int:
    fd = os.dup(dir_fd)
    for step in (p for p in rel.split(b"/") if p):
        try:
            nfd = os.open(step, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nfd
    return fd


@dataclass
class _Walk:
    result: DeleteResult
    held: Callable[[bytes], bool]
    excluded: Callable[[bytes], bool]
    device: int
    dry_run: bool

    def directory(self, dir_fd: int, rel: bytes) -> None:
        """Walk a directory the snapshot holds: remove what it does not hold, descend into what it does."""
        for name in sorted(os.fsencode(n) for n in os.listdir(dir_fd)):
            child = rel + b"/" + name if rel else name
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as e:
                self._failed(child, e)
                continue
            if self.excluded(child):
                continue
            if not self.held(child):
                self.remove(dir_fd, name, child, st)
            elif stat.S_ISDIR(st.st_mode) and st.st_dev == self.device:
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                except OSError as e:
                    self._failed(child, e)
                    continue
                try:
                    self.directory(sub, child)
                finally:
                    os.close(sub)

    def remove(self, dir_fd: int, name: bytes, rel: bytes, st: os.stat_result) -> bool:
        """Remove ``name`` (a directory with all it holds); whether it is gone (or would be)."""
        self.result.deleted.append(rel)
        if stat.S_ISDIR(st.st_mode):
            if st.st_dev != self.device:
                self.result.failed.append(f"{os.fsdecode(rel)}: not deleted: another file system is mounted there")
                return False
            try:
                sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as e:
                self._failed(rel, e)
                return False
            emptied = True
            try:
                for child in sorted(os.fsencode(n) for n in os.listdir(sub)):
                    try:
                        cst = os.stat(child, dir_fd=sub, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    emptied &= self.remove(sub, child, rel + b"/" + child, cst)
            finally:
                os.close(sub)
            if self.dry_run or not emptied:
                return emptied
            try:
                os.rmdir(name, dir_fd=dir_fd)
            except OSError as e:
                self._failed(rel, e)
                return False
            return True
        if self.dry_run:
            return True
        try:
            os.unlink(name, dir_fd=dir_fd)  # a symlink is removed itself, never what it points to
        except FileNotFoundError:
            pass
        except OSError as e:
            self._failed(rel, e)
            return False
        return True

    def _failed(self, rel: bytes, e: OSError) -> None:
        self.result.failed.append(f"{os.fsdecode(rel)}: cannot delete: {e.strerror or e}")
