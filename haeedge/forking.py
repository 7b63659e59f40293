"""Worker processes forked from the running command (backup, restore and verify use them).

The per-file and per-blob Python around the bytes holds the GIL (AES-CFB itself no
longer does in ``cryptography`` 51), so the byte work of a command runs in
processes, not threads. They are forked after the index and keys are loaded, so they
share that memory copy-on-write; they never touch a network client.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: a killed command must not leave workers behind writing files or holding pipes."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _ready() -> None:
    """A no-op task: submitting it makes the pool fork its workers now."""


def fork_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes forked from this one, sharing its memory copy-on-write.

    The garbage collector is frozen while they fork: a collection in a child
    walks every object it inherited and so copies every page holding one. Frozen,
    those objects are never walked and their pages stay shared.
    """
    gc.collect()
    gc.freeze()
    try:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=die_with_parent, initargs=(os.getpid(),))
        pool.submit(_ready).result()  # with fork, the first task starts every worker at once
    finally:
        gc.unfreeze()
    return pool
