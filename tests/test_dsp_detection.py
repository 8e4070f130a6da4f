"""Detection accuracy on the shipped excerpts, the resampler and the conditioner.

The accuracy floors sit below what the detector achieves today (see the
figures in the comments) with room for chance, and above what a broken
detector gets, so a regression fails them. Full-database figures are in
docs/benchmarks/detection.md (bench/bench_detection.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import wfdb

from ecgstream.core.types import SampleChunk
from ecgstream.dsp import (
    BeatPipeline,
    Conditioner,
    DspConfig,
    RPeakDetector,
    StreamingResampler,
    extract_beats,
)
from ecgstream.sources.records import ecgid_records, excerpt_dir, read_record

BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")


def _match(det: np.ndarray, ref: np.ndarray, tol: int) -> tuple[int, int, int]:
    """(TP, FN, FP) with one-to-one matching within ``tol`` samples."""
    det = np.sort(det)
    used = np.zeros(det.size, dtype=bool)
    tp = 0
    for r in np.sort(ref):
        cand = np.flatnonzero(~used & (np.abs(det - r) <= tol))
        if cand.size:
            used[cand[np.argmin(np.abs(det[cand] - r))]] = True
            tp += 1
    return tp, ref.size - tp, det.size - tp


def _mitdb_excerpt(name: str) -> tuple[np.ndarray, float, np.ndarray]:
    path = excerpt_dir("mitdb-excerpt") / name
    x, fs, _ = read_record(path, 0)
    ann = wfdb.rdann(str(path), "atr")
    ref = np.array([s for s, c in zip(ann.sample, ann.symbol, strict=True) if c in BEAT_SYMBOLS])
    return x, fs, ref


# Today (detector of f365e52): 100: 74 of 74 beats, 0 FP; 208: 93 of 106 beats,
# 0 FP (11 of the 13 misses are PVCs of the first 20 s, before the adaptive
# levels have seen any; over the whole half hour of 208 only 27 of 2955 beats
# are missed).
@pytest.mark.parametrize(("record", "min_se", "min_ppv"), [("100", 0.98, 0.98), ("208", 0.83, 0.97)])
def test_mitdb_excerpt_detection(record, min_se, min_ppv):
    x, fs, ref = _mitdb_excerpt(record)
    det = np.array([b.r_sample for b in extract_beats(x, fs)])
    tp, fn, fp = _match(det, ref, round(0.15 * fs))
    assert tp / (tp + fn) >= min_se, (tp, fn, fp)
    assert tp / (tp + fp) >= min_ppv, (tp, fn, fp)


def test_mitdb_excerpt_timing_error():
    """Matched R peaks lie close to the annotated fiducial points."""
    x, fs, ref = _mitdb_excerpt("100")
    det = np.array([b.r_sample for b in extract_beats(x, fs)])
    err = np.array([np.min(np.abs(det - r)) for r in ref]) / fs
    assert np.median(err) <= 0.010  # today 2.8 ms
    assert np.percentile(err, 95) <= 0.030


def test_ecgid_excerpt_agreement():
    """Annotated R peaks ('N') of the 16 shipped ECG-ID records, within 50 ms."""
    n = matched = 0
    for rec in ecgid_records(excerpt_dir()):
        x, fs, _ = read_record(rec.path, 0)
        ann = wfdb.rdann(str(rec.path), "atr")
        ref = np.array([s for s, c in zip(ann.sample, ann.symbol, strict=True) if c == "N"])
        det = np.array([b.r_sample for b in extract_beats(x, fs)])
        tp, _, _ = _match(det, ref, round(0.05 * fs))
        n += ref.size
        matched += tp
    assert n >= 150
    # Today 151 of 160; the misses are first beats of a record (thresholds
    # still learning) and a few where the annotation sits off the R peak.
    assert matched / n >= 0.90, (matched, n)


# -- resampler ---------------------------------------------------------------
@pytest.mark.parametrize("fs_in", [100.0, 360.0, 500.0, 1000.0])
@pytest.mark.parametrize("f_hz", [1.0, 10.0, 30.0])
def test_resampler_keeps_sine(fs_in, f_hz):
    """Amplitude within 5 % and frequency within 0.1 Hz up to 30 Hz.

    Today the gain at 30 Hz is 0.96 from 1000 Hz (16 taps at 1000 Hz droop),
    1.00 from 100, 360 and 500 Hz.
    """
    rs = StreamingResampler(fs_in, 250.0)
    t = np.arange(round(10 * fs_in)) / fs_in
    y = rs.push(np.sin(2 * np.pi * f_hz * t))
    assert abs(y.size - 10 * 250) <= 1
    core = y[250:-250]  # past the start-up
    assert np.sqrt(2 * np.mean(core**2)) == pytest.approx(1.0, rel=0.05)
    spec = np.abs(np.fft.rfft(core * np.hanning(core.size), n=1 << 16))
    f_peak = np.argmax(spec) * 250.0 / (1 << 16)
    assert f_peak == pytest.approx(f_hz, abs=0.1)
    # The group delay maps output back onto the input's time axis.
    m = np.arange(250, 2250)
    t_in = rs.output_to_input_index(m) / fs_in
    np.testing.assert_allclose(y[m], np.sin(2 * np.pi * f_hz * t_in), atol=0.06)


@pytest.mark.parametrize("fs_in", [100.0, 360.0, 1000.0])
def test_resampler_chunk_invariance(fs_in):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(round(3 * fs_in))
    whole = StreamingResampler(fs_in, 250.0).push(x)
    rs = StreamingResampler(fs_in, 250.0)
    parts, pos = [], 0
    while pos < x.size:
        n = int(rng.integers(0, 40))
        parts.append(rs.push(x[pos:pos + n]))
        pos += n
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_resampler_rejects_bad_rate():
    with pytest.raises(ValueError, match="sampling rate"):
        StreamingResampler(float("nan"), 250.0)
    with pytest.raises(ValueError, match="sampling rate"):
        StreamingResampler(0.0, 250.0)


# -- conditioner -------------------------------------------------------------
def test_conditioner_state_continuity(ecgid_record):
    """Filter state carries over between pushes; reset starts afresh."""
    x, fs = ecgid_record
    cfg = DspConfig()
    whole = Conditioner(fs, cfg).push(x)
    c = Conditioner(fs, cfg)
    cuts = [0, 1, 7, 500, 501, 2999, x.size]
    parts = [c.push(x[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert c.n_out == whole.size
    c.reset()
    np.testing.assert_array_equal(c.push(x), whole)


def test_conditioner_removes_offset_and_wander():
    """A DC offset and 0.1 Hz wander are removed; the start has no step transient."""
    fs = 500.0
    t = np.arange(round(20 * fs)) / fs
    x = 5.0 + 0.5 * np.sin(2 * np.pi * 0.1 * t) + 0.2 * np.sin(2 * np.pi * 10 * t)
    y = Conditioner(fs, DspConfig()).push(x)
    assert np.max(np.abs(y[: 2500])) < 1.0  # no 5 mV step ringing
    tail = y[-2500:]
    assert abs(np.mean(tail)) < 0.02
    assert np.sqrt(2 * np.mean(tail**2)) == pytest.approx(0.2, rel=0.1)


def test_detector_chunk_invariance(mitbih_excerpt):
    x, fs = mitbih_excerpt
    y = Conditioner(fs, DspConfig()).push(x)
    a = RPeakDetector(250.0)
    whole = a.push(y) + a.flush(np.full(60, y[-1]))
    b = RPeakDetector(250.0)
    got, pos = [], 0
    rng = np.random.default_rng(3)
    while pos < y.size:
        n = int(rng.integers(1, 300))
        got += b.push(y[pos:pos + n])
        pos += n
    got += b.flush(np.full(60, y[-1]))
    assert got == whole
    assert len(whole) > 60


def test_pipeline_reports_delays(mitbih_excerpt):
    """Beats come out in order, ready after their window, within the bound."""
    x, fs = mitbih_excerpt
    pipe = BeatPipeline("d", fs)
    last_ready, out = -1, []
    step = round(0.1 * fs)
    for a in range(0, x.size, step):
        for b in pipe.push(SampleChunk("d", fs, a, x[a:a + step])):
            # Emitted by the chunk that holds its ready sample.
            assert b.ready_sample < a + step
            assert b.ready_sample >= last_ready
            last_ready = b.ready_sample
            out.append(b)
    delays = np.array([(b.ready_sample - b.r_sample) / fs for b in out])
    assert np.all(delays >= DspConfig().window_after_s - 0.02)
    # window 0.45 s; search-back bound 1.66 x 2 s + look-ahead (DetectorConfig).
    assert np.all(delays <= 0.45 + 3.32 + 0.3)
    assert np.median(delays) < 0.6


def test_direct_sosfilt_kernel_matches_scipy():
    """The fast path of ecgstream.dsp._sosfilt computes what scipy.signal.sosfilt does."""
    from scipy import signal

    from ecgstream.dsp._sosfilt import prepare_sos, sosfilt_zi_step

    rng = np.random.default_rng(3)
    sos = prepare_sos(signal.butter(4, (5, 20), btype="bandpass", fs=250, output="sos"))
    x = rng.standard_normal(300)
    zi = rng.standard_normal((sos.shape[0], 2))
    y_ref, z_ref = signal.sosfilt(sos, x, zi=zi)
    x_copy, zi_copy = x.copy(), zi.copy()
    y, z = sosfilt_zi_step(sos, x, zi)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(z, z_ref)
    np.testing.assert_array_equal(x, x_copy)  # inputs untouched
    np.testing.assert_array_equal(zi, zi_copy)


def test_wide_beats_r_lands_on_the_qrs_not_the_t_wave():
    """Paced (wide, ventricular-like) beats of MIT-BIH 104: R on the QRS.

    The former refinement took the dominant-polarity extremum over a 210 ms
    span and landed 215-235 ms after 15 of these beats (on the T wave):
    each one a miss and a false positive. Refining around the steepest
    slope of the QRS puts them within a few ms of the annotation.
    """
    path = excerpt_dir("mitdb-excerpt") / "104"
    x, fs, _ = read_record(path, 0)
    ann = wfdb.rdann(str(path), "atr")
    det = np.array([b.r_sample for b in extract_beats(x, fs)])
    paced = np.array([s for s, c in zip(ann.sample, ann.symbol, strict=True) if c == "/"])
    # Beats after the learning span (the first 2 s hold no decision yet).
    paced = paced[paced > 3 * fs]
    err = np.array([np.min(np.abs(det - s)) for s in paced]) / fs
    assert paced.size > 40
    # Today 45 of 48 within 10 ms, 3 at 90-125 ms (fusion-like shapes).
    assert np.mean(err <= 0.030) >= 0.9, np.round(err[err > 0.030], 3)
    assert np.all(err <= 0.150), np.round(err[err > 0.150], 3)
    ref = np.array([s for s, c in zip(ann.sample, ann.symbol, strict=True) if c in BEAT_SYMBOLS])
    tp, fn, fp = _match(det, ref, round(0.15 * fs))
    assert fp <= 2 and fn <= 3, (tp, fn, fp)


@pytest.mark.parametrize("f_hz", [3.0, 4.0, 5.0])
def test_sinusoidal_flutter_gives_no_beats(f_hz):
    """Sustained flutter-like sinusoid: no burst of R peaks (the old detector
    reported one per wave, 60-85 in 30 s); the waves are counted instead."""
    fs = 250.0
    t = np.arange(int(30 * fs)) / fs
    rng = np.random.default_rng(1)
    x = np.sin(2 * np.pi * f_hz * t) + 0.05 * rng.standard_normal(t.size)
    pipe = BeatPipeline("f", fs)
    beats = pipe.push(SampleChunk("f", fs, 0, x)) + pipe.flush()
    assert len(beats) <= 2
    assert pipe.status.flutter_suppressed > 30


def test_flutter_rule_leaves_ordinary_rhythms_alone():
    """No detection is withheld on the shipped MIT-BIH and ECG-ID excerpts."""
    paths = [excerpt_dir("mitdb-excerpt") / n for n in ("100", "104", "208")]
    paths += [r.path for r in ecgid_records(excerpt_dir())]
    for p in paths:
        x, fs, _ = read_record(p, 0)
        pipe = BeatPipeline("o", fs)
        pipe.push(SampleChunk("o", fs, 0, x))
        pipe.flush()
        assert pipe.status.flutter_suppressed == 0, p


def test_flutter_then_sinus_chunk_invariance(mitbih_excerpt):
    """Flutter state and its look-back do not depend on the chunking."""
    x0, fs = mitbih_excerpt
    t = np.arange(int(12 * fs)) / fs
    flutter = 0.8 * np.sin(2 * np.pi * 4.0 * t)
    x = np.concatenate((x0[: int(20 * fs)], flutter, x0[int(20 * fs): int(40 * fs)]))

    def run(sizes):
        pipe = BeatPipeline("c", fs)
        out, pos = [], 0
        for n in sizes:
            out += pipe.push(SampleChunk("c", fs, pos, x[pos:pos + n]))
            pos += n
            if pos >= x.size:
                break
        out += pipe.flush()
        return [(b.r_sample, b.flags, b.window.tobytes()) for b in out], pipe.status.flutter_suppressed

    whole = run([x.size])
    rng = np.random.default_rng(5)
    assert run(rng.integers(1, 700, size=x.size)) == whole
    assert whole[1] > 10
    assert len(whole[0]) > 40
