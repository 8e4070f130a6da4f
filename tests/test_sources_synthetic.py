"""Synthetic ECG: deterministic, chunking-independent, plausible to the beat pipeline."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ecgstream.dsp import BeatPipeline, extract_beats
from ecgstream.sources import SourceError, open_source
from ecgstream.sources.synthetic import EcgSynth, synth_ecg


def test_same_seed_same_signal_other_seed_other_signal():
    a = synth_ecg(10, 500, 70, seed=1, noise_mv=0.02)
    assert a.shape == (5000,) and a.dtype == np.float64
    np.testing.assert_array_equal(a, synth_ecg(10, 500, 70, seed=1, noise_mv=0.02))
    assert not np.allclose(a, synth_ecg(10, 500, 70, seed=2, noise_mv=0.02))


@pytest.mark.parametrize("sizes", [[1, 7, 333, 2, 4657], [5000], [250] * 20])
def test_rendering_in_pieces_equals_rendering_at_once(sizes):
    g = EcgSynth(500, 70, 3, 0.05, 0.02)
    x = np.concatenate([g.render(k) for k in sizes])
    np.testing.assert_array_equal(x, synth_ecg(10, 500, 70, seed=3, noise_mv=0.02))


@pytest.mark.parametrize(("hr", "fs"), [(55, 250), (70, 500), (110, 360)])
def test_beats_found_at_the_heart_rate_with_natural_variability(hr, fs):
    x = synth_ecg(40, fs, hr, seed=hr, rr_cv=0.05, noise_mv=0.02)
    beats = extract_beats(x, float(fs))
    rr = np.array([b.rr_s for b in beats if np.isfinite(b.rr_s)])
    assert abs(len(beats) - 40 * hr / 60) <= 3
    assert 60 / rr.mean() == pytest.approx(hr, rel=0.05)
    assert 0.02 < rr.std() / rr.mean() < 0.09  # variable, but a heart, not noise
    assert sum(b.good for b in beats) >= 0.8 * len(beats)


def test_metronome_when_rr_cv_is_zero():
    beats = extract_beats(synth_ecg(20, 500, 60, seed=0, rr_cv=0.0), 500.0)
    rr = np.array([b.rr_s for b in beats if np.isfinite(b.rr_s)])
    assert rr.std() < 0.01


def test_source_chunks_leads_off_and_pipeline():
    src = open_source("synthetic:?fs=250&hr=70&seconds=12&device=syn&seed=1&leads_off_at=5"
                      "&leads_off_s=1.5&noise=0.02&chunk_s=0.2")
    chunks = list(src.chunks())
    idx = np.concatenate([np.arange(c.start_sample, c.end_sample) for c in chunks])
    np.testing.assert_array_equal(idx, np.arange(3000))
    off = [c for c in chunks if c.leads_off]
    assert off[0].start_sample == 1250 and sum(c.samples.size for c in off) == 375
    assert all(np.isnan(c.samples).all() for c in off)
    assert all(c.device == "syn" and c.fs_hz == 250 for c in chunks)
    assert src.stats.samples == 3000
    pipe = BeatPipeline("syn", 250.0)
    beats = [b for c in chunks for b in pipe.push(c)]
    assert len(beats) >= 9 and pipe.status.segments == 2


def test_source_paced_with_injected_clock():
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    src = open_source("synthetic:?fs=100&seconds=2&speed=1&chunk_s=0.5",
                      clock=lambda: now[0], sleep=sleep)
    got = []
    src.run(got.append, threading.Event())
    assert sum(c.samples.size for c in got) == 200
    assert now[0] == pytest.approx(2.0) and len(slept) == 4


@pytest.mark.parametrize(("uri", "match"), [
    ("synthetic:?hr=300", "hr_bpm"),
    ("synthetic:?seconds=0", "seconds"),
    ("synthetic:?fps=5", "unknown parameter"),
    ("synthetic:?leads_off_at=-1", "leads_off_at"),
    ("synthetic:?speed=-1", "speed"),
])
def test_uri_errors(uri, match):
    with pytest.raises(SourceError, match=match):
        open_source(uri)
