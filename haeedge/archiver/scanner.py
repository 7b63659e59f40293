"""Counting what a backup will read, alongside it, so progress can show a percentage and an ETA.

The scanner walks the same sources with the same excludes as the backup, in a
thread of its own, and reports running totals (regular files and their bytes)
to the progress sink. It is started only when someone watches (a terminal bar
or JSON status lines): it costs a second walk, as restic's scanner does.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator

from haeedge.archiver.walker import WalkItem
from haeedge.forking import die_with_parent
from haeedge.progress import ProgressSink

#: How often running totals are passed on (seconds).
REPORT_EVERY = 0.25


_TOTALS = struct.Struct("<QQB")


class Scanner:
    """Sums the regular files of a walk alongside the backup; ``stop()`` ends it early.

    With ``fork`` the walk runs in a child process and a thread of ours only passes its
    totals on: a second walk in a thread held the GIL against the main walk (a sixth of an
    unchanged backup of small files), a process runs on another core. Without fork (the
    thread fallback of the pipeline), it is a daemon thread.
    """

    def __init__(self, walk: Callable[[], Iterator[WalkItem]], progress: ProgressSink, fork: bool = False):
        self._walk = walk
        self._progress = progress
        self._stop = threading.Event()
        self._fork = fork and hasattr(os, "fork")
        self._pid = 0
        self._thread = threading.Thread(target=self._relay if self._fork else self._run, name="scanner", daemon=True)
        self._rfd = -1
        self.files = 0
        self.nbytes = 0

    def start(self) -> Scanner:
        if self._fork:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: walk, report, and leave without running any of the parent's exit code
                # No collections: one would walk every object inherited from the parent and copy
                # every page holding one (the walk makes no cycles worth collecting).
                gc.disable()
                code = 0
                try:
                    os.close(r)
                    die_with_parent(os.getppid())
                    self._run(lambda files, nbytes, final: os.write(w, _TOTALS.pack(files, nbytes, final)))
                except BaseException:  # noqa: BLE001 - a broken pipe or anything else: only the totals are lost
                    code = 1
                finally:
                    os._exit(code)
            os.close(w)
            self._pid, self._rfd = pid, r
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._pid:
            with contextlib.suppress(OSError):
                os.kill(self._pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.waitpid(self._pid, 0)
            self._pid = 0
        self._thread.join(timeout=5)
        if self._rfd >= 0 and not self._thread.is_alive():
            os.close(self._rfd)
            self._rfd = -1

    def _relay(self) -> None:
        """Pass the child's totals on (records of 17 bytes, written whole: a pipe write under
        PIPE_BUF is atomic, and a short read keeps its rest for the next)."""
        rest = b""
        while True:
            try:
                data = os.read(self._rfd, 4096)
            except OSError:
                return
            if not data:
                return
            data = rest + data
            whole = len(data) - len(data) % _TOTALS.size
            rest = data[whole:]
            for files, nbytes, final in _TOTALS.iter_unpack(data[:whole]):
                if self._stop.is_set():
                    return
                self.files, self.nbytes = files, nbytes
                self._progress.total(files, nbytes, final=bool(final))

    def _run(self, report: Callable[[int, int, bool], object] | None = None) -> None:
        if report is None:
            report = lambda files, nbytes, final: self._progress.total(files, nbytes, final=final)  # noqa: E731
        last = time.monotonic()
        try:
            for item in self._walk():
                if self._stop.is_set():
                    return
                if stat.S_ISREG(item.st.st_mode):
                    self.files += 1
                    self.nbytes += item.st.st_size
                now = time.monotonic()
                if now - last >= REPORT_EVERY:
                    last = now
                    report(self.files, self.nbytes, False)
        except Exception:  # noqa: BLE001 - totals are a nicety; the backup reports real errors itself
            return
        report(self.files, self.nbytes, True)
