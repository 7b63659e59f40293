"""Local-disk backend: atomic, durable, create-only writes (temp file, fsync, link, fsync dir).

The finished temporary file is hard-linked to its name, which fails when the
name exists: two hosts writing into one repository (an NFS export, a shared
disk) never replace each other's objects. Where the filesystem has no hard
links, a rename that first checks for the name is used instead.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator

from haeedge.backends.base import (
    NAMESPACES,
    BackendProperties,
    ObjectInfo,
    StorageBackend,
    check_name,
    foreign_entries,
    not_empty_error,
)
from haeedge.errors import BackendError, ObjectNotFound


class LocalBackend(StorageBackend):
    def __init__(self, path: str):
        self.root = os.path.abspath(os.path.expanduser(path))
        self.location = self.root
        self.properties = BackendProperties(local_paths=(self.root,), cheap_ranged_reads=True, spooled_writes=True)

    def _path(self, name: str) -> str:
        check_name(self.location, name)
        return os.path.join(self.root, name)

    def create(self) -> None:
        try:
            os.makedirs(self.root, exist_ok=True)
            found = foreign_entries(self._list_dir)
            if found:
                raise not_empty_error(self.location, self.root, found)
            for ns in NAMESPACES:
                os.makedirs(os.path.join(self.root, ns), mode=0o700, exist_ok=True)
            for i in range(256):
                os.makedirs(os.path.join(self.root, "data", f"{i:02x}"), mode=0o700, exist_ok=True)
            _fsync_dir(self.root)
        except OSError as e:
            raise BackendError(f"{self.root}: cannot create repository: {e.strerror}") from e

    def _list_dir(self, rel: str) -> list[tuple[str, bool]]:
        with os.scandir(os.path.join(self.root, rel)) as it:
            return [(e.name, e.is_dir(follow_symlinks=False)) for e in it]

    def put(self, name: str, data: bytes | memoryview) -> None:
        path = self._path(name)
        directory = os.path.dirname(path)
        tmp = os.path.join(directory, f".tmp-{os.path.basename(path)}-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileNotFoundError:
                os.makedirs(directory, mode=0o700, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
            finally:
                os.close(fd)
            if name == "config":  # the one name that is not a content hash: init may write it again
                os.replace(tmp, path)
            else:
                place_new(tmp, path)
            _fsync_dir(directory)
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise BackendError(f"{self.location}: cannot write {name}: {e.strerror}",
                               transient=e.errno in (errno.EINTR, errno.EAGAIN)) from e

    def get(self, name: str) -> bytes:
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except FileNotFoundError as e:
            raise ObjectNotFound(f"{self.location}: {name} does not exist") from e
        except OSError as e:
            raise BackendError(f"{self.location}: cannot read {name}: {e.strerror}") from e

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self._path(name), os.O_RDONLY)
        except FileNotFoundError as e:
            raise ObjectNotFound(f"{self.location}: {name} does not exist") from e
        except OSError as e:
            raise BackendError(f"{self.location}: cannot read {name}: {e.strerror}") from e
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def list(self, namespace: str) -> Iterator[ObjectInfo]:
        base = os.path.join(self.root, namespace)
        if not os.path.isdir(base):
            return
        stack = [base]
        while stack:
            d = stack.pop()
            try:
                entries = list(os.scandir(d))
            except FileNotFoundError:
                continue
            for e in entries:
                if e.name.startswith(".tmp-"):
                    continue
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    rel = os.path.relpath(e.path, self.root).replace(os.sep, "/")
                    try:
                        st = e.stat(follow_symlinks=False)
                        yield ObjectInfo(rel, st.st_size, st.st_mtime)
                    except FileNotFoundError:
                        continue

    def delete(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise BackendError(f"{self.location}: cannot delete {name}: {e.strerror}") from e

    def stat(self, name: str) -> ObjectInfo:
        try:
            st = os.stat(self._path(name))
            return ObjectInfo(name, st.st_size, st.st_mtime)
        except FileNotFoundError as e:
            raise ObjectNotFound(f"{self.location}: {name} does not exist") from e

    def exists(self, name: str) -> bool:
        return os.path.exists(self._path(name))

    def close(self) -> None:
        pass

    def open_spool(self) -> LocalSpool:
        """A pack file written in place as blobs arrive, committed by fsync and rename (see ``put``)."""
        directory = os.path.join(self.root, "data")
        tmp = os.path.join(directory, f".tmp-pack-{os.getpid()}-{os.urandom(6).hex()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise BackendError(f"{self.location}: cannot create a pack file: {e.strerror}") from e
        return LocalSpool(self, fd, tmp)

    def remove_temporaries(self, min_age: float | None = None) -> int:
        """Delete leftovers of interrupted writes (only those idle for ``min_age`` seconds); returns how many."""
        n = 0
        now = time.time()
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                if f.startswith(".tmp-"):
                    full = os.path.join(dirpath, f)
                    try:
                        if min_age is not None and now - os.stat(full).st_mtime < min_age:
                            continue
                        os.unlink(full)
                        n += 1
                    except OSError:
                        pass
        return n


class LocalSpool:
    """One pack file under ``data/.tmp-pack-*`` until ``commit`` renames it to its name.

    A crash leaves the temporary file, which nothing lists or reads; ``prune``
    removes such leftovers.
    """

    def __init__(self, backend: LocalBackend, fd: int, tmp: str):
        self.backend = backend
        self.fd: int | None = fd
        self.tmp = tmp

    def write(self, data: bytes | memoryview) -> None:
        assert self.fd is not None
        try:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError as e:
            raise BackendError(f"{self.backend.location}: cannot write a pack file: {e.strerror}") from e

    def commit(self, name: str) -> None:
        path = self.backend._path(name)
        assert self.fd is not None
        try:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None
            directory = os.path.dirname(path)
            try:
                place_new(self.tmp, path)
            except FileNotFoundError:
                os.makedirs(directory, mode=0o700, exist_ok=True)
                place_new(self.tmp, path)
            _fsync_dir(directory)
        except OSError as e:
            raise BackendError(f"{self.backend.location}: cannot write {name}: {e.strerror}") from e

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def place_new(tmp: str, path: str) -> bool:
    """Give the finished file ``tmp`` the name ``path`` unless that exists (then drop ``tmp``); True when
    placed. A hard link is atomic and create-only; without hard links, check then rename."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        os.unlink(tmp)
        return False
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        if os.path.exists(path):
            os.unlink(tmp)
            return False
        os.replace(tmp, path)
        return True
    os.unlink(tmp)
    return True


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
