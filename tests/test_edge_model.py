"""The shipped int8 model: loads under LiteRT without TensorFlow, matches its
card, separates persons of the committed excerpt, and refuses bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from ecgstream.api import beats_from_record
from ecgstream.dsp import DspConfig
from ecgstream.pipeline.scores import beat_scores, fuse, make_template
from ecgstream.sources.records import excerpt_dir
from edge import EmbeddingModel, ModelCard, ModelError, default_model_path, sha256_file

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model() -> EmbeddingModel:
    return EmbeddingModel()


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    beats = beats_from_record(excerpt_dir() / "Person_01" / "rec_1")
    return np.stack([b.window for b in beats])


def test_loads_without_tensorflow():
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from edge import EmbeddingModel
        m = EmbeddingModel()
        e = m.embed(np.random.default_rng(0).normal(size=(3, m.window_len)))
        assert e.shape == (3, m.embedding_dim)
        bad = sorted(n for n in sys.modules if n == "tensorflow" or n.startswith(("tensorflow.", "keras")))
        print("LOADED", bad)
        sys.exit(1 if bad else 0)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "LOADED []" in r.stdout


def test_card_matches_model(model: EmbeddingModel):
    card = model.card
    from edge import CARD_FORMAT_VERSION

    assert card["format_version"] == CARD_FORMAT_VERSION
    assert card["sha256"] == sha256_file(default_model_path())
    assert model.model_id == f"ecgstream-embed-{card['sha256'][:12]}"
    assert card["model_file"] == default_model_path().name
    assert (model.window_len, model.fs_hz) == (DspConfig().window_len, DspConfig().fs_hz)
    assert card["dsp"] == asdict(DspConfig()), "card DSP differs from the daemon's default DspConfig"
    assert model.dsp_config() == DspConfig()
    q = card["embedding"]["quantization"]
    assert q["input"]["dtype"] == "int8" and q["output"]["dtype"] == "int8"
    th = card["thresholds"]
    assert th["fused"]["beats"] == 10
    for block in (th["single"], th["fused"]):
        assert -1 <= block["eer"] <= block["far_0.001"] <= 1
    assert card["training"]["command"].startswith("python -m train")
    assert card["split"]["heldout_persons"]
    # Calibrated on persons no model saw (a PTB-XL held-out fold), and checked on a dataset that took
    # part in neither training nor calibration (ECG-ID): the card carries that check.
    assert th["calibrated_on"].startswith("the larger of two thresholds, each from persons this model never")
    assert "MIT-BIH took no part in calibration" in th["calibrated_on"]
    for op in ("eer", "far_0.001"):
        assert 0 <= th["lodo"]["ecgid_from_ptbxl_only"]["10"][op]["far"] <= 1
        assert 0 <= th["lodo"]["rule_check"]["mitdb_from_ptbxl_ecgid"]["10"][op]["far"] <= 1
    assert card["data"]["ecgid"].startswith("not trained on")
    assert card["score"]["norm"] in ("none", "znorm")
    assert (card["score"]["norm"] == "znorm") == (model.cohort is not None)


def test_dsp_cuts_the_beats_the_model_was_trained_on(model: EmbeddingModel):
    """Training and serving must see the same beats: the card's fingerprint of the beats
    ecgstream.dsp cuts from the excerpt must match what the DSP cuts today."""
    from train.data import dsp_fingerprint

    want = model.card["dsp_fingerprint"]["sha256"]
    assert dsp_fingerprint(model.dsp_config()) == want, (
        "ecgstream.dsp now cuts different beats than the shipped model was trained on: "
        "retrain and reinstall it with `python -m train --export`"
    )


def test_embeddings_are_unit_and_batch_invariant(model: EmbeddingModel, windows: np.ndarray):
    e = model.embed(windows)
    assert e.dtype == np.float32 and e.shape == (len(windows), model.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    one = np.concatenate([model.embed(w[None]) for w in windows[:5]])
    np.testing.assert_allclose(one, e[:5], atol=1e-6)
    two = EmbeddingModel(num_threads=2).embed(windows)
    np.testing.assert_allclose(two, e, atol=1e-6)
    assert model.embed(np.zeros((0, model.window_len))).shape == (0, model.embedding_dim)


def _fused(model, template, rec) -> float:
    beats = beats_from_record(excerpt_dir() / rec)
    return fuse(beat_scores(model.embed(np.stack([b.window for b in beats])), template))


def test_separates_two_persons_of_the_excerpt(model: EmbeddingModel, windows: np.ndarray):
    """Regression: Person_01 (held out in training) against Person_06 and the others."""
    template = make_template(model.embed(windows))
    thr = model.card["thresholds"]["fused"]["eer"]
    genuine = _fused(model, template, "Person_01/rec_2")
    impostor = _fused(model, template, "Person_06/rec_1")
    assert genuine >= thr > impostor
    assert genuine - impostor > 0.2
    others = [_fused(model, template, f"Person_{p}/rec_1") for p in ("06", "15", "25", "29", "38")]
    assert genuine > max(others)


# -- bad input: one clear error, never a wrong score ------------------------------------------
@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 100)), "100 samples, the model expects"),
        (np.zeros((2, 176)), "176 samples"),
        (np.zeros((2, 3, 175)), "shape"),
        (np.array([["a"] * 175]), "numeric"),
    ],
)
def test_wrong_shape_is_refused(model: EmbeddingModel, bad, match):
    with pytest.raises(ValueError, match=match):
        model.embed(bad)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_beats_are_refused(model: EmbeddingModel, windows: np.ndarray, value):
    w = windows[:4].copy()
    w[2, 50] = value
    with pytest.raises(ValueError, match=r"NaN or infinite.*rows \[2\]"):
        model.embed(w)


@pytest.fixture()
def copied(tmp_path: Path) -> tuple[Path, Path]:
    m, c = tmp_path / "model.tflite", tmp_path / "model.json"
    shutil.copy2(default_model_path(), m)
    shutil.copy2(default_model_path().with_suffix(".json"), c)
    return m, c


def test_hash_mismatch_is_refused(copied):
    m, _ = copied
    blob = bytearray(m.read_bytes())
    blob[-1] ^= 0xFF
    m.write_bytes(bytes(blob))
    with pytest.raises(ModelError, match="sha256"):
        EmbeddingModel(m)


def test_newer_card_format_is_refused(copied):
    m, c = copied
    card = json.loads(c.read_text())
    from edge import CARD_FORMAT_VERSION

    card["format_version"] = CARD_FORMAT_VERSION + 1
    c.write_text(json.dumps(card))
    with pytest.raises(ModelError, match=f"format_version {CARD_FORMAT_VERSION + 1}.*up to {CARD_FORMAT_VERSION}"):
        EmbeddingModel(m)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d["embedding"]["quantization"]["input"].update(scale=1.0), "input quantization"),
        (lambda d: d["input"].update(window_len=200), "card says 200"),
        (lambda d: d["input"]["normalisation"].update(method="minmax"), "normalisation"),
        (lambda d: d["thresholds"]["single"].pop("far_0.001"), "far_0.001"),
        (lambda d: d["dsp"].update(fs_hz=360.0), "dsp block"),
    ],
)
def test_inconsistent_card_is_refused(copied, edit, match):
    m, c = copied
    card = json.loads(c.read_text())
    edit(card)
    c.write_text(json.dumps(card))
    with pytest.raises(ModelError, match=match):
        EmbeddingModel(m)


def test_missing_files_are_refused(tmp_path: Path, copied):
    with pytest.raises(ModelError, match="not found"):
        EmbeddingModel(tmp_path / "nope.tflite")
    m, c = copied
    c.unlink()
    with pytest.raises(ModelError, match="card .* not found"):
        EmbeddingModel(m)


def test_card_class_reads_like_a_dict(model: EmbeddingModel):
    card = ModelCard.load(default_model_path().with_suffix(".json"))
    assert card.get("description")
    assert card.thresholds["single"]["eer"] == model.card["thresholds"]["single"]["eer"]


def _have_ecgid() -> bool:
    from ecgstream.sources.records import DataError, ecgid_records

    try:
        return len(ecgid_records()) >= 300
    except DataError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _have_ecgid(), reason="needs the full ECG-ID database (../shared/data or $ECGSTREAM_DATA)")
def test_card_metrics_match_a_rerun(model: EmbeddingModel):
    """The card's seed-protocol metrics, and the shipped model's FAR/FRR at the card's
    (cross-validated) thresholds on its held-out persons, are those a re-run of the
    evaluation measures on the shipped model (``python -m train.evaluate``)."""
    from ecgstream.dsp import DspConfig
    from train.data import build_beatset
    from train.evaluate import compare, reevaluate

    bs = build_beatset(DspConfig(**model.card.dsp), mitdb=False)
    rows = compare(dict(model.card), reevaluate(model, bs))
    bad = [r for r in rows if not r[3]]
    assert len(rows) > 30 and not bad, bad


def _with_cohort(copied, rng_seed: int = 0):
    """The copied model with a z-norm score block and a cohort file beside it."""
    from ecgstream.pipeline.scores import Cohort

    m, c = copied
    card = json.loads(c.read_text())
    dim = card["embedding"]["dim"]
    v = np.random.default_rng(rng_seed).normal(size=(40, dim))
    cohort = Cohort(v / np.linalg.norm(v, axis=1, keepdims=True), card["model_id"])
    cohort.save(m.parent / "cohort.npz")
    from edge import sha256_file

    card["score"] = {"norm": "znorm", "cohort": {"file": "cohort.npz", "sha256": sha256_file(m.parent / "cohort.npz"),
                                                 "id": cohort.id, "n": len(cohort)}}
    c.write_text(json.dumps(card))
    return m, c, cohort


def test_a_znorm_card_loads_its_cohort_and_the_daemon_scores_with_it(copied):
    m, _, cohort = _with_cohort(copied)
    model = EmbeddingModel(m)
    assert model.score_norm == "znorm" and model.cohort_id == cohort.id
    e = model.embed(np.random.default_rng(1).normal(size=(3, model.window_len)))
    t = e[0]
    sc = model.scorer([t[None]])
    mu, sd = cohort.stats(t[None])
    np.testing.assert_allclose(sc.scores(e)[:, 0], (e.astype(np.float64) @ t - mu[0]) / sd[0], rtol=1e-5)


@pytest.mark.parametrize("edit, match", [
    ("sha", "sha256"),
    ("missing", "not found"),
    ("id", "names"),
    ("nocohort", "needs 'score.cohort'"),
    ("norm", "'score.norm' must be"),
])
def test_a_bad_cohort_is_refused(copied, edit, match):
    m, c, _ = _with_cohort(copied)
    card = json.loads(c.read_text())
    if edit == "sha":
        card["score"]["cohort"]["sha256"] = "0" * 64
    elif edit == "missing":
        (m.parent / "cohort.npz").unlink()
    elif edit == "id":
        card["score"]["cohort"]["id"] = "cohort-000000000000"
    elif edit == "nocohort":
        del card["score"]["cohort"]
    elif edit == "norm":
        card["score"]["norm"] = "snorm"
    c.write_text(json.dumps(card))
    with pytest.raises(ModelError, match=match):
        EmbeddingModel(m)
