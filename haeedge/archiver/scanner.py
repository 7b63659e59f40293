"""Counting what a backup will read, alongside it, so progress can show a percentage and an ETA.

The scanner walks the same sources with the same excludes as the backup, in a
thread of its own, and reports running totals (regular files and their bytes)
to the progress sink. It is started only when someone watches (a terminal bar
or JSON status lines): it costs a second walk, as restic's scanner does.
"""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Callable, Iterator

from haeedge.archiver.walker import WalkItem
from haeedge.progress import ProgressSink

#: How often running totals are passed on (seconds).
REPORT_EVERY = 0.25


class Scanner:
    """A daemon thread summing the regular files of a walk; ``stop()`` ends it early."""

    def __init__(self, walk: Callable[[], Iterator[WalkItem]], progress: ProgressSink):
        self._walk = walk
        self._progress = progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scanner", daemon=True)
        self.files = 0
        self.nbytes = 0

    def start(self) -> Scanner:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
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
                    self._progress.total(self.files, self.nbytes)
        except Exception:  # noqa: BLE001 - totals are a nicety; the backup reports real errors itself
            return
        self._progress.total(self.files, self.nbytes, final=True)
