"""PTB-XL beats: the DSP at 100 Hz, lead views that are exactly what the DSP cuts, folds by patient.

Uses the shipped excerpts (``data/ptbxl-excerpt``, ``data/mitdb-excerpt``).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import wfdb
from scipy.signal import resample_poly
from test_dsp_detection import BEAT_SYMBOLS, _match

from ecgstream.core.types import SampleChunk
from ecgstream.dsp import BeatPipeline, Conditioner, DspConfig, extract_beats
from ecgstream.sources.records import excerpt_dir, read_record

REPO = Path(__file__).resolve().parents[1]
PTBXL = REPO / "data" / "ptbxl-excerpt"
HAVE_TF = importlib.util.find_spec("tensorflow") is not None


@pytest.mark.parametrize(("record", "min_se", "min_ppv"), [("100", 0.98, 0.98), ("208", 0.83, 0.97)])
def test_dsp_detects_at_100_hz(record, min_se, min_ppv):
    """MIT-BIH at 360 Hz brought down to 100 Hz (PTB-XL's rate): same detection floors as at 360 Hz."""
    path = excerpt_dir("mitdb-excerpt") / record
    x, fs, _ = read_record(path, 0)
    ann = wfdb.rdann(str(path), "atr")
    ref = np.array([s for s, c in zip(ann.sample, ann.symbol, strict=True) if c in BEAT_SYMBOLS]) * 100 / fs
    x100 = resample_poly(x, 5, 18)
    det = np.array([b.r_sample for b in extract_beats(x100, 100.0)])
    tp, fn, fp = _match(det, ref, 15)  # 150 ms
    assert tp / (tp + fn) >= min_se, (tp, fn, fp)
    assert tp / (tp + fp) >= min_ppv, (tp, fn, fp)


def test_beat_windows_at_100_hz_match_those_at_360_hz():
    """The window the model sees (0.5-40 Hz at 250 Hz) is the same beat whether the wearable sends 360 or 100 Hz."""
    x, fs, _ = read_record(excerpt_dir("mitdb-excerpt") / "100", 0)
    hi = {round(b.r_time_s * 100): b for b in extract_beats(x, fs) if b.good}
    lo = [b for b in extract_beats(resample_poly(x, 5, 18), 100.0) if b.good]
    cors = []
    for b in lo:
        h = next((hi[k] for k in range(b.r_sample - 2, b.r_sample + 3) if k in hi), None)
        if h is not None:
            cors.append(np.corrcoef(b.window, h.window)[0, 1])
    assert len(cors) >= 0.9 * len(lo) > 40
    assert np.median(cors) > 0.97, np.median(cors)


@pytest.mark.parametrize("fs", [99.0, 50.0, 1001.0, 2000.0])
def test_rates_the_dsp_cannot_take_are_refused_with_the_rate(fs):
    with pytest.raises(ValueError, match=f"{fs!r} Hz is outside the supported 100..1000 Hz"):
        BeatPipeline("d", fs)


def test_lead_views_are_exactly_what_the_dsp_cuts_from_that_lead():
    """``frontal_lead`` of the cut windows equals the window the daemon's conditioner makes of that lead."""
    from train.ptbxl import _RecordingPipeline, cut_record, frontal_lead, ptbxl_records, read_leads

    cfg = DspConfig()
    rec = min(ptbxl_records(PTBXL), key=lambda r: r.ecg_id)
    w, r_src, _ = cut_record(rec.path, cfg)
    assert len(w) >= 5 and np.isfinite(w[:, :2]).all()
    x, fs, names = read_leads(rec.path)
    pipe = _RecordingPipeline("d", fs, cfg)
    beats = pipe.push(SampleChunk("d", fs, 0, x[names.index("I")])) + pipe.flush()
    good = [(b, r) for b, r in zip(beats, pipe.r_proc, strict=True) if b.good]
    assert [b.r_sample for b, _ in good] == r_src.tolist()
    for ang in (-40.0, 25.0, 60.0):
        lead = frontal_lead(np.stack([x[names.index("I")], x[names.index("II")]])[None], ang)[0]
        y = Conditioner(fs, cfg).push(lead.astype(np.float64))
        mixed = frontal_lead(w, ang)
        for (_, r), mw in zip(good, mixed, strict=True):
            lo = r - cfg.n_before
            assert np.allclose(y[lo:lo + cfg.window_len], mw, atol=1e-4), ang
    # and lead I's own windows are the pipeline's beat windows, unchanged
    assert np.array_equal(w[:, 0], np.stack([b.window for b, _ in good]))


def test_frontal_lead_angles():
    from train.ptbxl import frontal_lead

    rng = np.random.default_rng(0)
    leads = rng.normal(size=(3, 8, 10)).astype(np.float32)
    i, ii = leads[:, 0], leads[:, 1]
    assert np.allclose(frontal_lead(leads, 0.0), i, atol=1e-6)
    assert np.allclose(frontal_lead(leads, 60.0), ii, atol=1e-5)
    assert np.allclose(frontal_lead(leads, 120.0), ii - i, atol=1e-5)  # lead III
    assert np.allclose(frontal_lead(leads, -30.0) * np.sqrt(3) / 2, i - ii / 2, atol=1e-5)  # aVL (unit gain)


def test_ptbxl_excerpt_beats_and_patient_folds(tmp_path):
    from train.ptbxl import build_ptbxl, patient_folds

    pb = build_ptbxl(DspConfig(), str(PTBXL), cache_dir=None, workers=1)
    assert len(pb) > 150
    assert np.unique(pb.patient).size == 16
    multi = np.unique(pb.patient[pb.n_ecgs >= 2])
    assert multi.size == 10
    assert pb.has_chest[pb.n_ecgs >= 2].all() and not pb.has_chest[pb.n_ecgs == 1].any()
    folds = patient_folds(pb, 5, seed=1)
    got = np.concatenate(folds)
    assert sorted(got.tolist()) == sorted(multi.tolist())  # every multi-ECG patient in exactly one fold
    for f in folds:
        held = np.isin(pb.patient, f)
        # never one ECG of a patient in training and another held out
        assert not set(pb.patient[held]) & set(pb.patient[~held])
    assert set(pb.visit[pb.n_ecgs >= 2].tolist()) == {0, 1}


def test_views_keep_single_lead_beats_and_mix_the_others():
    from train.views import ViewConfig, Views

    rng = np.random.default_rng(1)
    leads = rng.normal(size=(40, 8, 174)).astype(np.float32)
    leads[:20, 1:] = np.nan  # ECG-ID-like rows: lead I only
    leads[20:30, 2:] = np.nan  # limb leads only
    v = Views(leads, ViewConfig(mix_p=1.0, mix_deg=40, chest_p=1.0), 0.01)
    out = v.raw(np.arange(40), np.random.default_rng(0))
    assert np.array_equal(out[:20], leads[:20, 0])  # nothing to mix: as recorded
    assert np.isfinite(out).all()
    assert not np.allclose(out[20:], leads[20:, 0])
    off = Views(leads, ViewConfig(), 0.01).raw(np.arange(40), np.random.default_rng(0))
    assert np.array_equal(off, leads[:, 0])


@pytest.mark.train
@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TF, reason="needs TensorFlow: pip install -e '.[train]'")
def test_scale_training_smoke_and_resume(tmp_path):
    """`python -m train.scale` on the excerpts: trains, exports int8, evaluates; a rerun resumes."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "train.scale", "--out", str(out), "--data", str(PTBXL),
           "--ecgid", str(REPO / "data" / "ecgid-excerpt"), "--no-mitdb", "--epochs", "1", "--batch", "32",
           "--folds", "2", "--width", "8", "--dim", "16", "--sampled", "8", "--threads", "1"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)  # a hang guard
    assert r.returncode == 0, r.stderr[-3000:]
    ev = json.loads((out / "eval.json").read_text())
    px = ev["weighted"]["ptbxl_cross_ecg"]
    assert px["rank1"]["among"] == 5 and 0 <= px["all"]["eer"] <= 1
    tj = json.loads((out / "train.json").read_text())
    assert len(tj["history"]["loss"]) == 1
    cmd[cmd.index("--epochs") + 1] = "2"
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stderr and "after epoch 1" in r.stderr
    tj = json.loads((out / "train.json").read_text())
    assert len(tj["history"]["loss"]) == 2


def test_max_rule_takes_the_strictest_threshold_of_each_population():
    from train.scale_eval import max_rule, transfer

    a = {"1": {"eer": 0.3, "far_0.001": 0.7}, "10": {"eer": 0.31, "far_0.001": 0.66}, "all": {"eer": 0.2, "far_0.001": 0.5}}
    b = {"1": {"eer": 0.35, "far_0.001": 0.65}, "10": {"eer": 0.30, "far_0.001": 0.80}}
    m = max_rule(a, b)
    assert m == {"1": {"eer": 0.35, "far_0.001": 0.7}, "10": {"eer": 0.31, "far_0.001": 0.80}}
    g, i = np.array([0.9, 0.7, 0.5]), np.array([0.1, 0.75, 0.85, 0.2])
    t = transfer({10: (g, i)}, m)["10"]["far_0.001"]
    assert (t["far"], t["frr"]) == (0.25, 2 / 3)
