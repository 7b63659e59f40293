"""Errors that know their exit code.

Every failure a user can cause or meet is a ``HaeedgeError`` subclass; the CLI
turns any of them into one line on stderr and the documented exit code. The
table of codes lives here and nowhere else (README "Exit codes" mirrors it).
"""

from __future__ import annotations


class ExitCode:
    OK = 0
    FATAL = 1
    USAGE = 2
    PARTIAL = 3  # finished, but some files could not be read / restored
    INTEGRITY = 4  # verify or restore found damaged or missing data
    NO_REPOSITORY = 10
    LOCKED = 11
    WRONG_PASSWORD = 12
    UNTRUSTED = 13  # the repository's trust root changed, its trust manifest went back in time or is missing
    COLD_WAIT = 14  # archived objects were not restored within the cold wait (the restores keep going)
    INTERRUPTED = 130


class HaeedgeError(Exception):
    """A failure with a one-line message, an exit code and an optional hint."""

    exit_code: int = ExitCode.FATAL

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(HaeedgeError):
    exit_code = ExitCode.USAGE


class RepositoryNotFound(HaeedgeError):
    exit_code = ExitCode.NO_REPOSITORY


class RepositoryExists(HaeedgeError):
    exit_code = ExitCode.FATAL


class WrongPassword(HaeedgeError):
    exit_code = ExitCode.WRONG_PASSWORD


class NoReadAccess(HaeedgeError):
    """The credential opens the repository but cannot decrypt what was asked."""

    exit_code = ExitCode.WRONG_PASSWORD


class RepositoryLocked(HaeedgeError):
    exit_code = ExitCode.LOCKED


class ConcurrentChange(HaeedgeError):
    """Another command (a prune, a forget) changed what this one relied on while it ran: run it again."""

    exit_code = ExitCode.LOCKED


class IntegrityError(HaeedgeError):
    """Stored bytes do not match their name, MDC, keyed id or declared structure."""

    exit_code = ExitCode.INTEGRITY


class FormatError(IntegrityError):
    """Repository data is malformed (treated as hostile: never trusted)."""


class TrustError(HaeedgeError):
    """What the owner signed does not hold: trust root changed, manifest rolled back, config or slot not vouched for."""

    exit_code = ExitCode.UNTRUSTED


class UntrustedSnapshot(HaeedgeError):
    """A snapshot not signed by the owner or an approved writer for its host was asked for by name."""

    exit_code = ExitCode.INTEGRITY


class SnapshotNotFound(HaeedgeError):
    exit_code = ExitCode.FATAL


class PathNotFound(HaeedgeError):
    """A path asked for (``ls PATH``, ``dump``, ``restore --include``) is not in the snapshot."""

    exit_code = ExitCode.FATAL


class BackendError(HaeedgeError):
    """A storage location failed. ``transient`` tells a retry wrapper it may try again."""

    exit_code = ExitCode.FATAL

    def __init__(self, message: str, *, transient: bool = False, **kw):
        super().__init__(message, **kw)
        self.transient = transient


class ObjectNotFound(BackendError):
    def __init__(self, message: str, **kw):
        super().__init__(message, transient=False, **kw)


class ObjectRetained(BackendError):
    """A delete refused because S3 Object Lock retention (or a legal hold) still protects the object."""

    def __init__(self, message: str, *, until: str = "", **kw):
        super().__init__(message, transient=False, **kw)
        self.until = until


class ColdWaitExpired(HaeedgeError):
    """Archived objects a read needs were not restored in time; the restores requested go on."""

    exit_code = ExitCode.COLD_WAIT


class OpenPGPError(IntegrityError):
    """A message could not be parsed or decrypted."""
