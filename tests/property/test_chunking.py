"""Content-defined chunking: pinned boundaries, streaming == whole buffer, locality, compiled speed."""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haeedge.chunking import TREE_PARAMS, Chunker, ChunkerParams, _fastcdc, chunk_boundaries

MiB = 1 << 20
SMALL = ChunkerParams(4096, 16384, 65536)

#: Recorded once from the compiled fastcdc build. If this changes, every existing
#: repository stops deduplicating against new backups: do not "fix" the numbers.
PINNED_DEFAULT_42 = [
    (0, 685196), (685196, 726246), (1411442, 780182), (2191624, 721798), (2913422, 1579768),
    (4493190, 1010153), (5503343, 737319), (6240662, 533316), (6773978, 829982), (7603960, 1184075),
    (8788035, 1222416), (10010451, 961147), (10971598, 619783), (11591381, 604562), (12195943, 1656871),
    (13852814, 769484), (14622298, 582739), (15205037, 933126), (16138163, 686817), (16824980, 754827),
    (17579807, 682385), (18262192, 1192091), (19454283, 570685), (20024968, 946552),
]
PINNED_SMALL_7_COUNT = 62
PINNED_SMALL_7_HEAD = [(0, 17018), (17018, 17659), (34677, 14953), (49630, 18682), (68312, 13872), (82184, 5168)]
PINNED_SMALL_7_SHA256 = "63bc952be0181d0652467685e690eba6d6e25227d7c72fba31d5da8accab4874"


def _check_tiling(bounds, n, params):
    pos = 0
    for i, (off, length) in enumerate(bounds):
        assert off == pos and length > 0
        if i < len(bounds) - 1:
            assert params.min_size <= length <= params.max_size
        else:
            assert length <= params.max_size
        pos += length
    assert pos == n


def test_default_boundaries_are_pinned():
    data = random.Random(42).randbytes(20 * MiB)
    bounds = chunk_boundaries(data, ChunkerParams())
    assert bounds == PINNED_DEFAULT_42
    # Not trivial: content-defined sizes, neither fixed blocks nor one chunk.
    assert len({length for _o, length in bounds}) == len(bounds) > 15
    _check_tiling(bounds, len(data), ChunkerParams())


def test_small_boundaries_are_pinned():
    data = random.Random(7).randbytes(MiB)
    bounds = chunk_boundaries(data, SMALL)
    assert len(bounds) == PINNED_SMALL_7_COUNT
    assert bounds[:6] == PINNED_SMALL_7_HEAD
    assert hashlib.sha256(repr(bounds).encode()).hexdigest() == PINNED_SMALL_7_SHA256


def test_default_parameters_and_tree_parameters():
    assert ChunkerParams() == ChunkerParams(512 * 1024, MiB, 8 * MiB)
    TREE_PARAMS.validate()
    assert TREE_PARAMS.max_size < ChunkerParams().min_size


def test_tiny_and_empty_inputs():
    assert chunk_boundaries(b"", SMALL) == []
    assert chunk_boundaries(b"x" * 100, SMALL) == [(0, 100)]
    assert chunk_boundaries(b"x" * SMALL.min_size, SMALL) == [(0, SMALL.min_size)]


def test_zeros_cut_at_max_size():
    bounds = chunk_boundaries(bytes(10 * SMALL.max_size + 5), SMALL)
    assert [length for _o, length in bounds[:-1]] == [SMALL.max_size] * 10 and bounds[-1][1] == 5


def test_chunking_runs_compiled():
    """No byte loop in Python: the fastcdc Cython build does the scanning."""
    assert "cython" in type(_fastcdc).__name__ or type(_fastcdc).__name__ == "builtin_function_or_method"
    data = random.Random(1).randbytes(64 * MiB)
    t = time.perf_counter()
    chunk_boundaries(data, ChunkerParams())
    elapsed = time.perf_counter() - t
    assert elapsed < 1.0, f"64 MiB took {elapsed:.2f} s: not the compiled chunker"


# ---------------------------------------------------------------------- streaming == whole buffer


def _stream_chunks(data: bytes, params: ChunkerParams, read_size: int, pieces: list[int]) -> list[bytes]:
    """Chunk ``data`` read from a pipe that a writer fills in ``pieces``-sized writes (short reads)."""
    r, w = os.pipe()

    def writer():
        view = memoryview(data)
        i = 0
        try:
            while view:
                n = pieces[i % len(pieces)]
                i += 1
                written = os.write(w, view[:n])
                view = view[written:]
        finally:
            os.close(w)

    t = threading.Thread(target=writer)
    t.start()
    try:
        return [bytes(c) for c in Chunker(params, read_size=read_size).chunks_of_fd(r)]
    finally:
        t.join()
        os.close(r)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(0, 700_000),
       read_size=st.integers(1, 400_000), pieces=st.lists(st.integers(1, 200_000), min_size=1, max_size=5),
       zero_run=st.booleans())
def test_streaming_equals_whole_buffer(seed, size, read_size, pieces, zero_run):
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(size))
    if zero_run and size > 10:  # long zero runs: where real files (and sparse ones) cut at max_size
        a = rng.randrange(size)
        n = len(data[a : a + rng.randrange(200_000)])
        data[a : a + n] = bytes(n)
    data = bytes(data)
    whole = [data[o : o + n] for o, n in chunk_boundaries(data, SMALL)]
    streamed = _stream_chunks(data, SMALL, read_size, pieces)
    assert streamed == whole
    assert b"".join(streamed) == data
    _check_tiling(chunk_boundaries(data, SMALL), len(data), SMALL)


def test_streaming_a_large_file_with_default_parameters(tmp_path):
    data = random.Random(3).randbytes(40 * MiB)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        streamed = [len(c) for c in Chunker(ChunkerParams()).chunks_of_fd(fd)]
    finally:
        os.close(fd)
    assert streamed == [n for _o, n in chunk_boundaries(data, ChunkerParams())]


# ---------------------------------------------------------------------- locality (why dedup survives edits)


@settings(max_examples=30, deadline=None, database=None)
@given(seed=st.integers(0, 2**32 - 1), insert=st.binary(min_size=1, max_size=64),
       where=st.floats(0, 1))
def test_an_edit_changes_only_nearby_chunks(seed, insert, where):
    data = random.Random(seed).randbytes(600_000)
    at = int(where * len(data))
    edited = data[:at] + insert + data[at:]
    before = {data[o : o + n] for o, n in chunk_boundaries(data, SMALL)}
    after = [edited[o : o + n] for o, n in chunk_boundaries(edited, SMALL)]
    new = [c for c in after if c not in before]
    assert len(new) <= 3, f"{len(new)} new chunks for a {len(insert)}-byte insert"


@pytest.mark.parametrize("params", [SMALL, TREE_PARAMS, ChunkerParams()])
def test_boundaries_are_deterministic(params):
    data = random.Random(11).randbytes(3 * params.max_size)
    assert chunk_boundaries(data, params) == chunk_boundaries(bytearray(data), params) == \
        chunk_boundaries(memoryview(data), params)
