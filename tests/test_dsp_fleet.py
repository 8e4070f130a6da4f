"""Batched fleet DSP == one BeatPipeline per device, bitwise (issue 10, item 1).

Whichever devices share a pass, however the rounds are formed and the
streams cut (ragged chunk sizes, several input rates, NaN, gaps, lead-off
marks, two chunks of a device in one round), every device's beats and DSP
state must be exactly those of its own pipeline fed the same chunks.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_dsp_chunking import _same

from ecgstream.core.types import SampleChunk
from ecgstream.dsp import BeatPipeline
from ecgstream.dsp.fleet import FleetDsp
from ecgstream.dsp.resample import StreamingResampler


def _same_beats(a: list, b: list) -> None:
    _same(a, b)  # positions, flags, windows, quality, RR
    assert [x.ready_sample for x in a] == [x.ready_sample for x in b]


def _same_state(p: BeatPipeline, q: BeatPipeline) -> None:
    for a, b in ((p.conditioner._zi, q.conditioner._zi), (p.detector._zi, q.detector._zi),
                 (p.detector._mwi_hist, q.detector._mwi_hist), (p._y, q._y), (p._raw, q._raw),
                 (p.conditioner.resampler._hist, q.conditioner.resampler._hist), (p.detector._buf, q.detector._buf)):
        if a is None or b is None:
            assert a is None and b is None
        else:
            assert a.tobytes() == b.tobytes()
    assert p.detector._prev == q.detector._prev
    assert p.status == q.status


@pytest.fixture(scope="module")
def streams(ecgid_record, mitbih_excerpt):
    """(name, samples, fs) of six devices: ECG-ID at 500 Hz, MIT-BIH at 360 Hz, one at 250 Hz."""
    x, fs = ecgid_record
    m, mfs = mitbih_excerpt
    n = int(12 * fs)
    out = [(f"e{i}", np.roll(x, 977 * i)[:n] * (1.0 + 0.1 * i), fs) for i in range(4)]
    out.append(("m0", m[: int(12 * mfs)], mfs))
    out.append(("q0", x[: int(12 * fs)][::2].copy(), fs / 2))
    return out


def _cut(x: np.ndarray, fs: float, name: str, size: int, rng: np.random.Generator, faults: bool) -> list[SampleChunk]:
    chunks, pos = [], 0
    while pos < x.size:
        n = size if rng.random() > 0.15 else int(rng.integers(1, 2 * size))
        seg = x[pos:pos + n].copy()
        gap = leads = False
        start = pos
        if faults:
            r = rng.random()
            if r < 0.03:
                seg[int(rng.integers(0, seg.size))] = np.nan
            elif r < 0.05:
                start += int(rng.integers(1, 100))  # samples lost: a jump
            elif r < 0.06:
                gap = True
            elif r < 0.07:
                leads = True
        chunks.append(SampleChunk(name, fs, start, seg, gap_before=gap, leads_off=leads))
        pos = start + seg.size
    return chunks


def _run(streams, seed: int, faults: bool, max_round: int) -> None:
    rng = np.random.default_rng(seed)
    base = int(rng.integers(20, 80))
    queues = {name: _cut(x, fs, name, base if name != "m0" else int(rng.integers(10, 90)), rng, faults)
              for name, x, fs in streams}
    fleet_p = {name: BeatPipeline(name, fs) for name, _, fs in streams}
    alone_p = {name: BeatPipeline(name, fs) for name, _, fs in streams}
    fleet = FleetDsp()
    got = {n: [] for n in fleet_p}
    want = {n: [] for n in fleet_p}
    while any(queues.values()):
        # A round: a random number of chunks from random devices, a device
        # possibly more than once (its chunks stay in order).
        rnd = []
        for _ in range(int(rng.integers(1, max_round + 1))):
            live = [n for n, q in queues.items() if q]
            if not live:
                break
            name = live[int(rng.integers(0, len(live)))]
            rnd.append((fleet_p[name], queues[name].pop(0)))
        for (_, c), beats in zip(rnd, fleet.push(rnd), strict=True):
            got[c.device].extend(beats)
            want[c.device].extend(alone_p[c.device].push(c))
    for name in fleet_p:
        got[name].extend(fleet_p[name].flush())
        want[name].extend(alone_p[name].flush())
        _same_beats(got[name], want[name])
        _same_state(fleet_p[name], alone_p[name])
    assert fleet.stats.batched > 0, "nothing was batched: the test would prove nothing"
    assert sum(len(b) for b in got.values()) > 40


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), faults=st.booleans(), max_round=st.integers(2, 24))
def test_fleet_equals_single_pipelines(streams, seed, faults, max_round):
    _run(streams, seed, faults, max_round)


def test_many_equal_devices_share_one_pass(ecgid_record):
    """The daemon's case: many devices, equal 0.1 s chunks; all but first chunks batched."""
    x, fs = ecgid_record
    devs = 50
    n = int(0.1 * fs)
    fleet_p = [BeatPipeline(f"d{i}", fs) for i in range(devs)]
    alone_p = [BeatPipeline(f"d{i}", fs) for i in range(devs)]
    fleet = FleetDsp()
    sig = [np.roll(x, 311 * i) for i in range(devs)]
    got, want = [[] for _ in range(devs)], [[] for _ in range(devs)]
    for k in range(int(8 / 0.1)):
        rnd = [(fleet_p[i], SampleChunk(f"d{i}", fs, k * n, sig[i][k * n:(k + 1) * n])) for i in range(devs)]
        for i, b in enumerate(fleet.push(rnd)):
            got[i].extend(b)
            want[i].extend(alone_p[i].push(rnd[i][1]))
    for i in range(devs):
        _same_beats(got[i], want[i])
        _same_state(fleet_p[i], alone_p[i])
    assert sum(map(len, got)) > devs * 5
    assert fleet.stats.single == devs  # only the first chunk of each device
    assert fleet.stats.passes == 80 - 1


def test_refused_chunk_raises_like_push(ecgid_record):
    x, fs = ecgid_record
    p = BeatPipeline("d", fs)
    fleet = FleetDsp()
    with pytest.raises(ValueError, match="pipeline built for"):
        fleet.push([(p, SampleChunk("d", fs * 2, 0, x[:50]))])
    res = fleet.push_round([(p, SampleChunk("d", fs, 0, np.array(["a", "b"]))),
                            (p, SampleChunk("d", fs, 0, x[:50]))])
    assert isinstance(res.errors[0], TypeError) and res.errors[1] is None
    assert res.leads_off[1] is p.status.leads_off


@pytest.mark.parametrize("fs_in", [360.0, 500.0, 1000.0, 128.0, 250.0])
def test_resampler_push_many_is_push(fs_in):
    rng = np.random.default_rng(1)
    rs = [StreamingResampler(fs_in, 250.0) for _ in range(5)]
    ref = [StreamingResampler(fs_in, 250.0) for _ in range(5)]
    for r, q in zip(rs, ref, strict=True):
        first = rng.standard_normal(7)
        r.push(first)
        q.push(first)
    for _ in range(30):
        x = rng.standard_normal((5, 37))
        plans = {r.plan(37) for r in rs}
        assert len(plans) == 1
        y = StreamingResampler.push_many(rs, x)
        for i, q in enumerate(ref):
            assert y[i].tobytes() == q.push(x[i]).tobytes()


@pytest.mark.parametrize("fs_in", [360.0, 500.0, 128.0, 1000.0])
def test_resampler_long_push_sums_by_column_bitwise(monkeypatch, fs_in):
    """A whole record sums the taps column by column: the same bytes as the chunk form."""
    import ecgstream.dsp.resample as R

    x = np.random.default_rng(2).standard_normal(5000)
    long = StreamingResampler(fs_in, 250.0).push(x)
    monkeypatch.setattr(R, "_COLUMNS_FROM", 10**12)
    assert long.tobytes() == StreamingResampler(fs_in, 250.0).push(x).tobytes()
