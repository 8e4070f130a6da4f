"""Beats must not depend on how the stream is chunked (DESIGN.md)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ecgstream.core.types import SampleChunk
from ecgstream.dsp import BeatPipeline, extract_beats


def _beats_chunked(x: np.ndarray, fs: float, sizes: list[int]) -> list:
    pipe = BeatPipeline("d", fs)
    out = []
    pos = 0
    i = 0
    while pos < x.size:
        n = sizes[i % len(sizes)]
        i += 1
        out.extend(pipe.push(SampleChunk("d", fs, pos, x[pos:pos + n])))
        pos += n
    out.extend(pipe.flush())
    return out


def _same(a: list, b: list) -> None:
    assert [x.r_sample for x in a] == [x.r_sample for x in b]
    assert [x.flags for x in a] == [x.flags for x in b]
    for p, q in zip(a, b, strict=True):
        np.testing.assert_array_equal(p.window, q.window)
        assert p.quality == q.quality
        assert (np.isnan(p.rr_s) and np.isnan(q.rr_s)) or p.rr_s == q.rr_s


def test_one_sample_chunks_match_whole_record(ecgid_record):
    x, fs = ecgid_record
    x = x[: int(fs * 8)]
    whole = extract_beats(x, fs)
    assert len(whole) >= 6
    _same(whole, _beats_chunked(x, fs, [1]))


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=20))
def test_random_chunk_sizes_match_whole_record(ecgid_record, sizes):
    x, fs = ecgid_record
    whole = extract_beats(x, fs)
    _same(whole, _beats_chunked(x, fs, sizes))


@settings(max_examples=8, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=500), min_size=1, max_size=10))
def test_chunking_invariance_with_resampling(mitbih_excerpt, sizes):
    x, fs = mitbih_excerpt
    whole = extract_beats(x, fs)
    assert len(whole) > 10
    _same(whole, _beats_chunked(x, fs, sizes))
