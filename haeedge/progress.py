"""How the core reports progress and warnings without printing anything."""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    def start(self, phase: str, total_bytes: int | None = None) -> None: ...

    def advance(self, files: int = 0, nbytes: int = 0) -> None: ...

    def warning(self, message: str) -> None: ...

    def info(self, message: str) -> None: ...

    def finish(self) -> None: ...


class SilentProgress:
    """Collects warnings; shows nothing. The default for library callers."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.infos: list[str] = []

    def start(self, phase: str, total_bytes: int | None = None) -> None:
        pass

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        pass

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def info(self, message: str) -> None:
        self.infos.append(message)

    def finish(self) -> None:
        pass
