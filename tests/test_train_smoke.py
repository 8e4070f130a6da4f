"""Training end to end on a tiny subset (the shipped excerpt), and the metrics."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
HAVE_TF = importlib.util.find_spec("tensorflow") is not None


@pytest.mark.train
@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TF, reason="needs TensorFlow: pip install -e '.[train]'")
def test_training_smoke_end_to_end(tmp_path: Path):
    """`python -m train --smoke`: beats, training, int8 export, CV, card, twin, report."""
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "train", "--smoke", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900,  # a hang guard, not a speed check
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "epoch   2/2" in r.stderr  # the progress display
    for name in ("model.tflite", "model.json", "embedding.keras", "report.json", "report.md",
                 "det_seed.png", "hist_seed.png", "det_cv.png", "twin/saved_model.pb"):
        assert (out / name).is_file(), name
    for png in out.glob("*.png"):
        assert png.stat().st_size < 200_000

    from edge import EmbeddingModel

    m = EmbeddingModel(out / "model.tflite")  # hash, shapes, quantization checked against the card
    card = m.card
    assert card["split"]["heldout_persons"] == [1, 6, 25, 29]
    assert not set(card["split"]["heldout_persons"]) & set(card["split"]["train_persons"])
    assert card["training"]["command"].startswith("python -m train --smoke")
    report = json.loads((out / "report.json").read_text())
    assert report["seed"]["tflite_ops"]["float_ops"] == []
    assert "L2_NORMALIZATION" in report["seed"]["tflite_ops"]["ops"]
    assert set(report["cv"]["int8"]["verification"]) >= {"1", "10"}
    # The card's thresholds come from the pooled cross-validated persons, and
    # the shipped model is checked at them on its own held-out persons.
    assert card["thresholds"]["calibrated_on"].startswith("2-fold cross-validation")
    rec = report["recognition"]["variants"]["weighted"]
    assert set(rec["verification_pooled"]) >= {"1", "10"}
    assert "crossday_adapted" in rec and "enrolment_beats" in report["recognition"]
    assert set(report["seed"]["at_card_thresholds"]["10"]) == {"eer", "far_0.001"}
    assert card["score"]["norm"] in ("none", "znorm")
    e = m.embed(np.random.default_rng(0).normal(size=(4, m.window_len)))
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)


def test_eer_and_tar_on_known_scores():
    from train.metrics import eer, far_threshold, tar_at_far

    gen = np.array([0.9, 0.8, 0.7, 0.6])
    imp = np.array([0.1, 0.2, 0.3, 0.65])
    e, t = eer(gen, imp)
    assert e == pytest.approx(0.25) and 0.6 <= t <= 0.65
    assert eer([1.0, 0.9], [0.1, 0.2])[0] == 0.0
    t = far_threshold(np.linspace(0, 1, 1001), 0.001)
    assert np.mean(np.linspace(0, 1, 1001) >= t) <= 0.001
    tar, _ = tar_at_far(gen, imp, 0.25)
    assert tar == 1.0
    with pytest.raises(ValueError):
        eer([], imp)


def test_protocol_scores_are_the_daemons():
    """Genuine/impostor scores come from ecgstream.pipeline.scores (template, cosine, mean fusion)."""
    from ecgstream.pipeline.scores import beat_scores, make_template, rolling_fused
    from train.data import BeatSet
    from train.protocols import verification_protocol

    rng = np.random.default_rng(0)
    n = 12
    emb = rng.normal(size=(4 * n, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    person = np.repeat([1, 1, 2, 2], n)
    record = np.repeat([1, 2, 1, 2], n)
    bs = BeatSet(np.zeros((4 * n, 5), np.float32), person, record, np.zeros(4 * n, int), np.tile(np.arange(n), 4))
    sc = verification_protocol(bs, emb, ks=(1, 3))
    t1 = make_template(emb[:n])
    np.testing.assert_allclose(sc[1][0][:n], beat_scores(emb[n:2 * n], t1))
    np.testing.assert_allclose(sc[3][0][: n - 2], rolling_fused(beat_scores(emb[n:2 * n], t1), 3))
    assert sc[1][1].size == 2 * n  # each person's probe record against the other's template
