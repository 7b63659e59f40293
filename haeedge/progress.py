"""How the core reports progress and warnings without printing anything."""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    #: Whether running totals are worth computing for this sink (a scanner costs a second walk).
    wants_totals: bool

    def start(self, phase: str, total_bytes: int | None = None, total_files: int | None = None) -> None: ...

    def total(self, files: int, nbytes: int, final: bool = False) -> None:
        """Totals found so far by a scanner running alongside the work (``final`` once it is done)."""

    def advance(self, files: int = 0, nbytes: int = 0) -> None: ...

    def warning(self, message: str) -> None: ...

    def info(self, message: str) -> None: ...

    def finish(self) -> None: ...


class SilentProgress:
    """Collects warnings; shows nothing. The default for library callers."""

    wants_totals = False

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.infos: list[str] = []

    def start(self, phase: str, total_bytes: int | None = None, total_files: int | None = None) -> None:
        pass

    def total(self, files: int, nbytes: int, final: bool = False) -> None:
        pass

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        pass

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def info(self, message: str) -> None:
        self.infos.append(message)

    def finish(self) -> None:
        pass
