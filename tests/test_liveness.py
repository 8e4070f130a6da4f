"""Liveness checks on real and manipulated beat streams."""

from __future__ import annotations

import numpy as np

from ecgstream.core.settings import LivenessConfig
from ecgstream.dsp import extract_beats
from ecgstream.pipeline.liveness import LivenessTracker


def _track(beats, fs, **kw):
    tr = LivenessTracker(fs, LivenessConfig(**kw), expected_speed=None)
    for b in beats:
        tr.on_beat(b)
    return tr


def test_real_record_is_live(ecgid_record):
    x, fs = ecgid_record
    beats = extract_beats(x, fs)
    st = _track(beats, fs).state(leads_off=False)
    assert st.live, st.reasons
    assert 40 < st.heart_rate_bpm < 120


def test_looped_record_is_flagged(ecgid_record):
    x, fs = ecgid_record
    looped = np.concatenate([x, x, x])  # continuous, no gap marker: an attacker's loop
    beats = extract_beats(looped, fs)
    tr = _track(beats, fs)
    st = tr.state(leads_off=False)
    assert not st.live and "looped or replayed recording" in st.reasons
    assert tr.loop_flagged_at_s is not None
    assert 20.0 < tr.loop_flagged_at_s < 32.0  # within ~10 beats of the first repeat


def test_metronome_rhythm_is_not_live(ecgid_record):
    x, fs = ecgid_record
    beats = extract_beats(x, fs)
    # One real beat pasted at a perfectly fixed period: a generator's signal.
    b = beats[5]
    lo = b.r_sample - int(0.3 * fs)
    one = x[lo: lo + int(0.8 * fs)]
    synth = np.tile(one, 30)
    st = _track(extract_beats(synth, fs), fs).state(leads_off=False)
    assert not st.live
    assert any("regular" in r or "loop" in r for r in st.reasons), st.reasons


def test_leads_off_is_not_live(ecgid_record):
    x, fs = ecgid_record
    st = _track(extract_beats(x, fs), fs).state(leads_off=True)
    assert not st.live and not st.leads_on and "leads off" in st.reasons


def test_rate_mismatch_flagged():
    tr = LivenessTracker(500.0, LivenessConfig(), expected_speed=1.0)
    t = 0.0
    for _ in range(70):  # 250 samples per 0.1 s host: 2500 Hz, declared 500
        tr.on_samples(250, t)
        t += 0.1
    st = tr.state(leads_off=False)
    assert any(r.startswith("rate") for r in st.reasons)
