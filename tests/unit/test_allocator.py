"""The allocator tuning really returns freed megabyte buffers to the system (glibc)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import os, sys
    from haeedge.allocator import tune_allocator
    if sys.argv[1] == "tune":
        assert tune_allocator()
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    big = b"x" * (8 << 20)   # freeing a mapped 8 MiB buffer raises glibc's dynamic threshold
    del big
    base = rss()
    bufs = [b"y" * (1 << 20) for _ in range(100)]
    last = b"z" * (1 << 20)  # still alive above them: a heap cannot shrink past it
    del bufs
    print((rss() - base) >> 20)
""")


def _resident_after_free(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc behaviour")
def test_freed_megabyte_buffers_leave_the_process():
    untuned = _resident_after_free("plain")
    tuned = _resident_after_free("tune")
    assert untuned >= 50, f"the probe no longer shows glibc keeping freed memory ({untuned} MiB)"
    assert tuned <= 10, f"{tuned} MiB of freed buffers still resident with the tuning"


def test_the_cli_tunes_the_allocator_before_it_runs():
    code = ("import haeedge.allocator as a, haeedge.cli as c\n"
            "c.main(['--version'])\n"
            "print(a._tuned)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().endswith("True"), out.stdout + out.stderr
