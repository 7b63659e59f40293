"""Progress sinks for the CLI: a tqdm bar on a terminal, warnings on stderr, JSON lines."""

from __future__ import annotations

import json
import sys

from tqdm import tqdm


class TerminalProgress:
    """A byte-counting bar on stderr (only when stderr is a terminal), warnings as lines."""

    def __init__(self, show_bar: bool, quiet: bool = False, verbose: int = 0):
        self.show_bar = show_bar
        self.quiet = quiet
        self.verbose = verbose
        self.bar: tqdm | None = None
        self.files = 0
        self.warnings: list[str] = []

    def start(self, phase: str, total_bytes: int | None = None) -> None:
        if self.show_bar and self.bar is None:
            self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=phase,
                            file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.2)

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        self.files += files
        if self.bar is not None:
            if nbytes:
                self.bar.update(nbytes)
            if files:
                self.bar.set_postfix_str(f"{self.files} files", refresh=False)

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
    """Messages as JSON lines on stderr, so stdout keeps the single summary object."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def _emit(self, **obj) -> None:
        sys.stderr.write(json.dumps(obj, allow_nan=False) + "\n")

    def start(self, phase: str, total_bytes: int | None = None) -> None:
        pass

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        pass

    def warning(self, message: str) -> None:
        self.warnings.append(message)
        self._emit(message_type="warning", message=message)

    def info(self, message: str) -> None:
        pass

    def finish(self) -> None:
        pass
