"""Progress sinks for the CLI: a tqdm bar on a terminal, warnings on stderr, JSON lines."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from tqdm import tqdm

#: Seconds between JSON status lines (HAEEDGE_PROGRESS_INTERVAL overrides it, e.g. for tests).
JSON_STATUS_INTERVAL = 1.0


class _Counters:
    """Done and total counts of one phase, updated from the work and from a scanner thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.phase = ""
        self.started = time.monotonic()
        self.files = 0
        self.nbytes = 0
        self.total_files: int | None = None
        self.total_bytes: int | None = None
        self.totals_final = False

    def begin(self, phase: str, total_bytes: int | None, total_files: int | None) -> None:
        with self.lock:
            self.phase, self.started = phase, time.monotonic()
            self.files = self.nbytes = 0
            self.total_files, self.total_bytes = total_files, total_bytes
            self.totals_final = total_bytes is not None

    def eta(self) -> float | None:
        """Seconds left at the rate so far, once the totals are known and something is done."""
        if not self.totals_final or not self.total_bytes or not self.nbytes:
            return None
        elapsed = time.monotonic() - self.started
        return max(0.0, elapsed * (self.total_bytes - self.nbytes) / self.nbytes)


class TerminalProgress:
    """A bar on stderr (only when stderr is a terminal): bytes and files done against the totals,
    percentage and ETA once a total is known; warnings as lines."""

    def __init__(self, show_bar: bool, quiet: bool = False, verbose: int = 0):
        self.show_bar = show_bar
        self.quiet = quiet
        self.verbose = verbose
        self.bar: tqdm | None = None
        self.counts = _Counters()
        self.warnings: list[str] = []

    @property
    def wants_totals(self) -> bool:
        return self.show_bar

    @property
    def files(self) -> int:
        return self.counts.files

    def start(self, phase: str, total_bytes: int | None = None, total_files: int | None = None) -> None:
        self.counts.begin(phase, total_bytes, total_files)
        if self.show_bar and self.bar is None:
            self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=phase,
                            file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.2)

    def total(self, files: int, nbytes: int, final: bool = False) -> None:
        c = self.counts
        with c.lock:
            c.total_files, c.total_bytes, c.totals_final = files, nbytes, final
        if self.bar is not None:
            self.bar.total = nbytes
            self._postfix()
            self.bar.refresh()

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        c = self.counts
        with c.lock:
            c.files += files
            c.nbytes += nbytes
        if self.bar is not None:
            if nbytes:
                self.bar.update(nbytes)
            if files:
                self._postfix()

    def _postfix(self) -> None:
        c = self.counts
        if c.total_files is None:
            text = f"{c.files} files"
        else:
            text = f"{c.files}/{c.total_files}{'' if c.totals_final else '+'} files"
        self.bar.set_postfix_str(text, refresh=False)  # type: ignore[union-attr]

    def warning(self, message: str) -> None:
        self.warnings.append(message)
        if self.bar is not None:
            self.bar.write(f"warning: {message}", file=sys.stderr)
        else:
            print(f"warning: {message}", file=sys.stderr)

    def info(self, message: str) -> None:
        if self.verbose and not self.quiet:
            print(message, file=sys.stderr)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class JsonLinesProgress:
    """Messages as JSON lines on stderr, so stdout keeps the single summary object.

    Status lines (``"message_type": "status"``, docs/json.md) come at most once per
    interval while a phase runs and, if any came, once when it ends; ``-q`` and
    ``--no-progress`` leave them out.
    """

    def __init__(self, quiet: bool = False, interval: float | None = None) -> None:
        self.warnings: list[str] = []
        self.quiet = quiet
        env = os.environ.get("HAEEDGE_PROGRESS_INTERVAL")
        self.interval = interval if interval is not None else float(env) if env else JSON_STATUS_INTERVAL
        self.counts = _Counters()
        self._active = False
        self._last = 0.0
        self._shown = False

    @property
    def wants_totals(self) -> bool:
        return not self.quiet

    def _emit(self, **obj) -> None:
        sys.stderr.write(json.dumps(obj, allow_nan=False) + "\n")
        sys.stderr.flush()

    def start(self, phase: str, total_bytes: int | None = None, total_files: int | None = None) -> None:
        self.counts.begin(phase, total_bytes, total_files)
        self._active = True
        self._last = time.monotonic()

    def total(self, files: int, nbytes: int, final: bool = False) -> None:
        c = self.counts
        with c.lock:
            c.total_files, c.total_bytes, c.totals_final = files, nbytes, final

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        c = self.counts
        with c.lock:
            c.files += files
            c.nbytes += nbytes
        now = time.monotonic()
        if self._active and now - self._last >= self.interval:
            self._last = now
            self._shown = True
            self._status()

    def _status(self, done: bool = False) -> None:
        if self.quiet:
            return
        c = self.counts
        with c.lock:
            percent = None
            if done:
                percent = 1.0
            elif c.total_bytes:
                percent = min(1.0, c.nbytes / c.total_bytes)
            eta = 0.0 if done else c.eta()
            self._emit(message_type="status", phase=c.phase,
                       seconds_elapsed=round(time.monotonic() - c.started, 3),
                       seconds_remaining=None if eta is None else round(eta, 1),
                       percent_done=None if percent is None else round(percent, 4),
                       files_done=c.files, total_files=c.total_files, bytes_done=c.nbytes,
                       total_bytes=c.total_bytes, totals_final=c.totals_final or done)

    def warning(self, message: str) -> None:
        self.warnings.append(message)
        self._emit(message_type="warning", message=message)

    def info(self, message: str) -> None:
        pass

    def finish(self) -> None:
        if self._active and self._shown:  # a run too short for a status line gets no closing one either
            self._status(done=True)
        self._active = self._shown = False
