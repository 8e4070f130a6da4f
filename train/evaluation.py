"""Evaluation of one model (any embedding function) on held-out persons.

Shared by the training command (seed split and cross-validation folds) and
by ``python -m train.evaluate`` (the re-run of the shipped model), so both
compute the same figures the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize

from edge.preprocess import normalise_beats

from .data import BeatSet
from .metrics import eer
from .protocols import (
    crossday_protocol,
    one_shot_accuracy,
    pair_accuracy,
    summarise,
    thresholds_from,
    verification_protocol,
)

KS = (1, 3, 5, 10)
FUSED_K = 10

EmbedFn = Callable[[np.ndarray], np.ndarray]


def baseline_embed(windows: np.ndarray, eps_mv: float = 0.01) -> np.ndarray:
    """The training-free baseline as an "embedding": the z-scored beat scaled to unit length.

    Cosine similarity of two such vectors is the Pearson correlation of the
    beats, and the cosine with the unit centroid of enrolment beats is the
    correlation with the mean z-scored enrolment beat: the baseline of the
    issue, scored by the very same ``ecgstream.pipeline.scores`` functions.
    """
    z = normalise_beats(windows, eps_mv).astype(np.float64)
    return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)


def evaluate_heldout(hb: BeatSet, emb: np.ndarray, one_shot: bool = True, seed: int = 0) -> tuple[dict, dict]:
    """All protocols on one held-out set of persons.

    Returns
    -------
    metrics : dict
        ``verification`` (per fused count: EER, TAR at FAR 0.1 %, thresholds,
        counts), ``crossday`` (same, persons used), ``pairs`` (single-beat
        pair accuracy), ``one_shot`` (N-way accuracy, any record and other
        record), ``n_persons``, ``n_beats``.
    scores : dict
        Raw genuine/impostor scores: ``{"verification": {k: (g, i)}, "crossday": ...}``.
    """
    ver = verification_protocol(hb, emb, KS)
    cd, cd_persons = crossday_protocol(hb, emb, KS)
    metrics: dict = {
        "n_persons": int(np.unique(hb.person).size),
        "n_beats": len(hb),
        "verification": summarise(ver),
        "crossday": {"persons": [int(p) for p in cd_persons], **summarise(cd)},
    }
    if one_shot and metrics["n_persons"] >= 4:
        n = metrics["n_persons"]
        metrics["pairs"] = pair_accuracy(hb, emb, seed=seed)
        metrics["one_shot"] = {
            "ways": n,
            "accuracy": one_shot_accuracy(hb, emb, seed=seed),
            "accuracy_other_record": one_shot_accuracy(hb, emb, seed=seed, other_record=True),
        }
    return metrics, {"verification": ver, "crossday": cd}


def fit_probability(gen: np.ndarray, imp: np.ndarray) -> dict:
    """Logistic map ``p = 1 / (1 + exp(-(a * score + b)))`` of a fused score.

    Fitted by class-balanced maximum likelihood on genuine and impostor
    scores of held-out persons, so ``p`` is the probability that the two
    recordings are of the same person *under equal prior odds*; it is not a
    probability for any other prior.
    """
    s = np.concatenate([gen, imp]).astype(np.float64)
    y = np.concatenate([np.ones(gen.size), np.zeros(imp.size)])
    w = np.where(y == 1, 0.5 / gen.size, 0.5 / imp.size)

    def nll(ab: np.ndarray) -> float:
        z = ab[0] * s + ab[1]
        return float(np.sum(w * (np.logaddexp(0, -z) * y + np.logaddexp(0, z) * (1 - y))))

    e, t = eer(gen, imp)
    res = minimize(nll, x0=np.array([10.0, -10.0 * t]), method="Nelder-Mead",
                   options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 4000})
    a, b = (float(v) for v in res.x)
    return {"kind": "logistic", "a": a, "b": b, "beats": FUSED_K,
            "prior": "equal odds (class-balanced fit)", "log_loss": float(res.fun)}


def card_thresholds(scores: dict) -> dict:
    """The card's ``thresholds`` block from verification scores by fused count."""
    th = thresholds_from(scores)
    out = {
        "score": "cosine of unit embedding and unit template centroid (ecgstream.pipeline.scores); "
                 "fused = mean of k consecutive good-beat scores; accept when score >= threshold",
        "single": th["1"],
        "fused": {"beats": FUSED_K, **th[str(FUSED_K)]},
        "fused_by_beats": {k: v for k, v in th.items() if k != "1"},
    }
    return out


def card_thresholds_from(th: dict[str, dict[str, float]]) -> dict:
    """The card's ``thresholds`` block from thresholds by fused count (``{"1": {op: t}, ...}``)."""
    return {
        "score": "per beat: best over the subject's sittings of the cosine of the beat's unit embedding "
                 "with the sitting's quality-weighted unit centroid (ecgstream.pipeline.scores.Scorer, "
                 "normalised as the card's score block says); fused = mean of k consecutive good-beat "
                 "scores; accept when score >= threshold",
        "single": th["1"],
        "fused": {"beats": FUSED_K, **th[str(FUSED_K)]},
        "fused_by_beats": {k: v for k, v in th.items() if k != "1"},
    }


def mean_sd(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "folds": [float(x) for x in v]}


def seed_figures(m: dict) -> dict:
    """The card's per-protocol figures of one :func:`evaluate_heldout` result (EER and TAR per k)."""
    return {
        "verification": {k: {"eer": v["eer"], "tar_at_far_0.001": v["tar_at_far_0.001"]}
                         for k, v in m["verification"].items()},
        "crossday": {k: {"eer": v["eer"], "tar_at_far_0.001": v["tar_at_far_0.001"]}
                     for k, v in m["crossday"].items() if k != "persons"},
        "pair_accuracy": m.get("pairs", {}).get("accuracy"),
        "one_shot_accuracy": m.get("one_shot", {}).get("accuracy"),
    }
