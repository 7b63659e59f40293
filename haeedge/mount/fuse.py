"""Serving a RepositoryView through the kernel's FUSE, with the ``mfusepy`` binding.

Why mfusepy: it is a maintained fork of fusepy (ctypes only, nothing to
compile) that speaks both libfuse 2 and libfuse 3, so it installs as a wheel
anywhere and uses whichever libfuse the system has. pyfuse3 needs a compiler
and the libfuse3 headers at install time and brings in trio for its async
API, which nothing else here uses; our reads are short blocking calls that
libfuse's own worker threads run fine.

The mount runs in the foreground. libfuse handles SIGINT, SIGTERM and SIGHUP:
it ends the session and unmounts before ``serve`` returns.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import signal
import threading

from haeedge.errors import HaeedgeError
from haeedge.mount.view import STOP_SIGNALS, RepositoryView

log = logging.getLogger("haeedge.mount")

#: The kernel keeps names and attributes this long (seconds): a snapshot never changes.
ATTR_TIMEOUT = 3600.0
#: libfuse worker threads (mfusepy leaves the limit unset, which libfuse 3 complains about).
MAX_THREADS = 16
#: fuse_main's status when its session loop ended with an error, as it does after SIGINT/SIGTERM.
LOOP_ENDED_BY_SIGNAL = 8


class FuseUnavailable(HaeedgeError):
    """FUSE cannot be used on this machine (no /dev/fuse, no libfuse, no binding)."""


def load_binding():
    """The mfusepy module, or FuseUnavailable saying what is missing."""
    if not os.path.exists("/dev/fuse"):
        raise FuseUnavailable("FUSE is not available: /dev/fuse does not exist",
                              hint="load the kernel module (modprobe fuse); in a container, pass --device /dev/fuse")
    try:
        import mfusepy
    except ModuleNotFoundError:
        raise FuseUnavailable("mount needs the Python package mfusepy, which is not installed",
                              hint="pip install 'haeedge[mount]'") from None
    except (OSError, AttributeError) as e:  # mfusepy looks for libfuse when imported
        raise FuseUnavailable(f"the FUSE library cannot be loaded: {e}",
                              hint="install libfuse (Debian: apt-get install fuse3)") from None
    return mfusepy


def _encode(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")  # mfusepy decodes paths this way


def _decode(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


def _guarded(method):
    """Unexpected failures become EIO and one log line, never a traceback from inside libfuse."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001 - the kernel only understands an errno
            log.warning("%s failed: %s: %s", method.__name__, type(e).__name__, e)
            raise OSError(errno.EIO, os.strerror(errno.EIO)) from None

    return wrapper


def _read_only(*_args, **_kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


def operations_class(mfusepy):
    """The Operations subclass for this binding (defined late: importing mfusepy needs libfuse)."""

    class HaeedgeOperations(mfusepy.Operations):
        use_ns = True  # times in nanoseconds

        def __init__(self, view: RepositoryView):
            self.view = view
            self.started = False
            self._handles: dict[int, object] = {}
            self._next_fh = 1
            self._lock = threading.Lock()

        def init(self, path):
            self.started = True  # the kernel mounted us: the session loop is running

        @_guarded
        def getattr(self, path, fh=None):
            return self.view.getattr(_encode(path))

        @_guarded
        def readdir(self, path, fh):
            # (name, attributes, 0): libfuse puts only the type and, with use_ino, the inode in a dirent;
            # a bare name would carry inode 0, which readdir(3) skips as a deleted entry.
            return [(_decode(name), {"st_mode": kind, "st_ino": ino}, 0)
                    for name, kind, ino in self.view.dir_entries(_encode(path))]

        @_guarded
        def readlink(self, path):
            return _decode(self.view.readlink(_encode(path)))

        @_guarded
        def open(self, path, flags):
            if flags & os.O_ACCMODE != os.O_RDONLY or flags & (os.O_TRUNC | os.O_APPEND | os.O_CREAT):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            state = self.view.open(_encode(path))
            with self._lock:
                fh = self._next_fh
                self._next_fh += 1
                self._handles[fh] = state
            return fh

        @_guarded
        def read(self, path, size, offset, fh):
            state = self._handles.get(fh)
            if state is None:
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))
            return self.view.read(state, offset, size)

        def release(self, path, fh):
            with self._lock:
                self._handles.pop(fh, None)
            return 0

        def statfs(self, path):
            return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 0, "f_bfree": 0, "f_bavail": 0,
                    "f_files": 0, "f_ffree": 0, "f_favail": 0, "f_namemax": 255}

        # The kernel refuses writes to a read-only mount itself; these answer anyone who asks anyway.
        chmod = chown = create = link = mkdir = mknod = rename = rmdir = symlink = _read_only
        truncate = unlink = utimens = write = setxattr = removexattr = _read_only

    return HaeedgeOperations


def serve(view: RepositoryView, mountpoint: str, *, debug: bool = False) -> None:
    """Mount ``view`` at ``mountpoint`` and serve it until Ctrl-C, SIGTERM or ``fusermount -u``."""
    mfusepy = load_binding()
    ops = operations_class(mfusepy)(view)
    options = {"foreground": True, "ro": True, "fsname": "haeedge", "subtype": "haeedge",
               "default_permissions": True, "use_ino": True, "kernel_cache": True,
               "attr_timeout": ATTR_TIMEOUT, "entry_timeout": ATTR_TIMEOUT, "debug": debug}
    if getattr(mfusepy, "fuse_version_major", 3) >= 3:  # libfuse 2 (mfusepy's choice when both are
        options |= {"max_threads": MAX_THREADS, "max_idle_threads": MAX_THREADS}  # there) refuses these
    # Only this thread may take the stop signals (libfuse's handler must wake its wait).
    old_mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        mfusepy.FUSE(ops, mountpoint, **options)
    except RuntimeError as e:
        if ops.started and str(e) == str(LOOP_ENDED_BY_SIGNAL):
            return  # libfuse 3 reports a session ended by a signal as a loop "error"; it did unmount
        raise HaeedgeError(f"cannot mount at {mountpoint}: libfuse failed (status {e})",
                           hint="see libfuse's message above; is something already mounted there?") from None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
