"""Cross-validated recognition figures from fold embeddings (numpy only).

Input: for each fold of a subject-disjoint split, the int8 LiteRT embeddings
of *every* beat by the model trained without that fold's persons. Each
held-out person is scored only by the fold model that never saw them, the
cohort of each fold is made from that fold's *training* persons, and every
score is the daemon's own (:class:`ecgstream.pipeline.scores.Scorer`). One function
serves ``python -m train`` (which trains the folds) and
``python -m train.evaluate --run`` (which re-embeds with the saved fold
models), so both print the same figures.

What it reports, per matcher variant (raw cosine, quality-weighted
template, cohort z-norm):

* verification (enrol on a person's first record, probe with the others;
  impostors: the other held-out persons' probe records), per fused count,
  fold mean and pooled;
* cross-day (persons with several dates), with and without online
  adaptation;
* identification rank-1 within each fold (cross-session, 10 beats);
* the enrolment-length trade-off (first N good beats of the enrolment record);
* the thresholds per fused count at EER and FAR 0.1 % from the pooled
  held-out scores (these go on the card), and a logistic probability map.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ecgstream.pipeline.scores import AdaptationPolicy, CohortError

from .data import BeatSet
from .metrics import eer, far_threshold, tar_at_far
from .protocols import (
    FAR_POINT,
    Matcher,
    _records,
    adaptive_crossday,
    build_cohort,
    crossday_protocol,
    summarise,
    verification_protocol,
)

KS = (1, 3, 5, 10)
ENROL_NS = (5, 8, 10, 12, 15, None)


@dataclass(frozen=True)
class Fold:
    """One fold: its held-out persons and all beats' embeddings by its model."""

    persons: tuple[int, ...]
    emb: np.ndarray


def _pool(acc: dict, scores: dict) -> None:
    for k, (g, i) in scores.items():
        pg, pi = acc.get(k, (np.empty(0), np.empty(0)))
        acc[k] = (np.concatenate([pg, g]), np.concatenate([pi, i]))


def _matchers(bs: BeatSet, f: Fold, cohort_ecgid_only: bool = True) -> dict[str, Matcher]:
    held = np.isin(bs.person, f.persons)
    # The cohort: training persons of this fold only. ECG-ID records only by
    # default: MIT-BIH's 30-min records would give a few persons most of it.
    mask = ~held & (bs.is_ecgid if cohort_ecgid_only else True)
    out = {"raw": Matcher(), "weighted": Matcher(weighted=True)}
    try:
        cohort = build_cohort(bs, f.emb, mask, "fold")
    except CohortError:  # too few training recordings (the smoke run): no znorm figures
        return out
    out["weighted+znorm"] = Matcher(norm="znorm", cohort=cohort, weighted=True)
    return out


def rank1(hb: BeatSet, emb: np.ndarray, matcher: Matcher, k: int = 10) -> tuple[int, int]:
    """Cross-session identification: (hits, trials) of k-beat windows of probe
    records against all held-out persons' first-record templates."""
    recs = _records(hb)
    persons = sorted(recs)
    sc = matcher.scorer([matcher.centroid(emb[(hb.person == p) & (hb.record == recs[p][0])]) for p in persons])
    hits = trials = 0
    for p in persons:
        for r in recs[p][1:]:
            s = sc.scores(emb[(hb.person == p) & (hb.record == r)])
            if s.shape[0] < k:
                continue
            c = np.cumsum(np.vstack([np.zeros((1, s.shape[1])), s]), axis=0)
            fused = (c[k:] - c[:-k]) / k
            hits += int(np.sum(np.argmax(fused, axis=1) == persons.index(p)))
            trials += fused.shape[0]
    return hits, trials


VARIANTS = ("raw", "weighted", "weighted+znorm")


def evaluate_folds(
    bs: BeatSet,
    folds: Sequence[Fold],
    shipped: str = "weighted",
    policy: AdaptationPolicy | None = None,
    adapt_margin: float = 0.0,
    variants: Sequence[str] = VARIANTS,
) -> tuple[dict, dict]:
    """Every cross-validated recognition figure; see the module docstring.

    Returns
    -------
    figures : dict
    scores : dict
        Pooled held-out scores per variant: ``{variant: {"verification": {k: (gen, imp)}}}``
        (thresholds, probability, plots).
    """
    policy = policy or AdaptationPolicy(rate=0.05, floor=0.9)
    out: dict = {"variants": {}, "shipped": shipped, "folds": [list(map(int, f.persons)) for f in folds]}
    pooled: dict = {}
    # Each fold's matchers (and the cohort z-norm needs) once, not per variant and table.
    fold_matchers = [_matchers(bs, f) for f in folds]
    for name in variants:
        if any(name not in fm for fm in fold_matchers):
            continue
        ver_pool: dict = {}
        cd_pool: dict = {}
        cda_pool: dict = {}
        per_fold: dict[str, list[float]] = {str(k): [] for k in KS}
        tar_fold: dict[str, list[float]] = {str(k): [] for k in KS}
        hits = trials = 0
        adapt_info = {"adapted_genuine": 0, "adapted_impostor": 0, "min_cos_to_enrolled": 1.0}
        for f, fm in zip(folds, fold_matchers, strict=True):
            held = np.isin(bs.person, f.persons)
            hb, he = bs.subset(held), f.emb[held]
            m = fm[name]
            ver = verification_protocol(hb, he, KS, m)
            for k in KS:
                g, i = ver[k]
                if g.size and i.size:
                    per_fold[str(k)].append(eer(g, i)[0])
                    tar_fold[str(k)].append(tar_at_far(g, i, FAR_POINT)[0])
            _pool(ver_pool, ver)
            cd, _ = crossday_protocol(hb, he, (1, 10), m)
            _pool(cd_pool, cd)
            # The adaptation gate uses this fold's own FAR-0.1 % 10-beat threshold
            # (no adaptation), as the daemon uses the card's.
            thr = far_threshold(ver[10][1], FAR_POINT)
            cda, info = adaptive_crossday(hb, he, m, thr, policy, adapt_margin)
            _pool(cda_pool, cda)
            adapt_info["adapted_genuine"] += info["adapted_genuine"]
            adapt_info["adapted_impostor"] += info["adapted_impostor"]
            adapt_info["min_cos_to_enrolled"] = min(adapt_info["min_cos_to_enrolled"], info["min_cos_to_enrolled"])
            h, t = rank1(hb, he, m)
            hits, trials = hits + h, trials + t
        v = {
            "verification_pooled": summarise(ver_pool),
            "verification_fold_eer": {k: _ms(x) for k, x in per_fold.items() if x},
            "verification_fold_tar": {k: _ms(x) for k, x in tar_fold.items() if x},
            "crossday": summarise(cd_pool),
            "crossday_adapted": summarise(cda_pool),
            "adaptation": adapt_info,
            "rank1_10_beats": hits / trials if trials else None,
            "rank1_trials": trials,
        }
        out["variants"][name] = v
        pooled[name] = {"verification": ver_pool}
    # Enrolment-length trade-off under the shipped matcher.
    enrol = {}
    for n in ENROL_NS:
        pool: dict = {}
        for f, fm in zip(folds, fold_matchers, strict=True):
            held = np.isin(bs.person, f.persons)
            m = fm[shipped]
            m = Matcher(norm=m.norm, cohort=m.cohort, weighted=m.weighted, enrol_beats=n)
            _pool(pool, verification_protocol(bs.subset(held), f.emb[held], (1, 10), m))
        enrol["all" if n is None else str(n)] = summarise(pool)
    out["enrolment_beats"] = enrol
    return out, pooled


def _ms(v: list[float]) -> dict:
    a = np.asarray(v, dtype=np.float64)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if a.size > 1 else 0.0, "folds": a.tolist()}


def thresholds_by_k(scores: dict) -> dict[str, dict[str, float]]:
    """EER and FAR-0.1 % thresholds per fused count from pooled held-out scores."""
    out = {}
    for k, (g, i) in scores.items():
        if g.size and i.size:
            out[str(k)] = {"eer": eer(g, i)[1], "far_0.001": far_threshold(i, FAR_POINT)}
    return out


def mitdb_as_sessions(bs: BeatSet, beats: int = 20, probes: int = 10,
                      gap_beats: int = 300) -> tuple[BeatSet, np.ndarray]:
    """MIT-BIH identities cut into ECG-ID-like 20-beat "records".

    Record 0 of each person is their first ``beats`` good beats (the
    enrolment); records 1..``probes`` are consecutive ``beats``-beat runs
    starting ``gap_beats`` beats later (minutes apart in the same
    half-hour recording: another dataset and device for a model trained on
    ECG-ID, though not another day). Day is 0 throughout. Returns the set and
    the rows of ``bs`` it was taken from.
    """
    keep, rec = [], []
    for p in np.unique(bs.person[~bs.is_ecgid]):
        idx = np.flatnonzero(bs.person == p)
        if idx.size < gap_beats + beats * (probes + 1):
            continue
        keep.append(idx[:beats])
        rec.append(np.zeros(beats, np.int64))
        for j in range(probes):
            s0 = gap_beats + j * beats
            keep.append(idx[s0:s0 + beats])
            rec.append(np.full(beats, j + 1, np.int64))
    sel = np.concatenate(keep)
    sub = bs.subset(sel)
    return BeatSet(sub.windows, sub.person, np.concatenate(rec), np.zeros(sel.size, np.int64), sub.r_sample), sel


def threshold_transfer(g_i: dict, thresholds: dict[str, dict[str, float]]) -> dict:
    """FAR and FRR of scores ``{k: (gen, imp)}`` at given per-k thresholds."""
    out = {}
    for k, (g, i) in g_i.items():
        t = thresholds.get(str(k))
        if t is None or not g.size or not i.size:
            continue
        out[str(k)] = {op: {"threshold": float(v), "far": float(np.mean(i >= v)), "frr": float(np.mean(g < v))}
                       for op, v in t.items()}
    return out


def lodo_figures(bs: BeatSet, held: np.ndarray, emb_ecgid: np.ndarray, emb_mitdb: np.ndarray) -> dict:
    """Leave-one-dataset-out figures from two models' embeddings of every beat.

    ``emb_ecgid``: a model trained on the seed split's ECG-ID persons only
    (``~held``); its thresholds are calibrated on the held-out ECG-ID persons
    (``held``), as a card is, and applied to MIT-BIH identities
    (:func:`mitdb_as_sessions`). ``emb_mitdb``: a model trained on MIT-BIH
    only, probed on every ECG-ID person. Raw and cohort-normalised scores,
    each cohort from that model's own training persons.
    """
    ks = (1, 3, 5, 10)
    res: dict = {"ecgid_to_mitdb": {}, "mitdb_to_ecgid": {}}
    def matchers(emb: np.ndarray, mask: np.ndarray, tag: str) -> list[tuple[str, Matcher]]:
        out = [("weighted", Matcher(weighted=True))]
        with contextlib.suppress(CohortError):  # too few training recordings for a cohort (tiny runs)
            out.append(("weighted+znorm", Matcher("znorm", build_cohort(bs, emb, mask, tag), True)))
        return out

    tm = bs.is_ecgid & ~held
    mit, sel = mitdb_as_sessions(bs)
    for name, m in matchers(emb_ecgid, tm, "lodo-ecgid"):
        cal = verification_protocol(bs.subset(held), emb_ecgid[held], ks, m)
        other = verification_protocol(mit, emb_ecgid[sel], ks, m)
        res["ecgid_to_mitdb"][name] = {"calibration": summarise(cal), "other": summarise(other),
                                       "transfer": threshold_transfer(other, thresholds_by_k(cal))}
    res["ecgid_to_mitdb"]["mitdb_persons"] = int(np.unique(mit.person).size)
    ecg = bs.is_ecgid
    for name, m in matchers(emb_mitdb, ~bs.is_ecgid, "lodo-mitdb"):
        res["mitdb_to_ecgid"][name] = {
            "verification": summarise(verification_protocol(bs.subset(ecg), emb_mitdb[ecg], ks, m)),
            "crossday": summarise(crossday_protocol(bs.subset(ecg), emb_mitdb[ecg], ks, m)[0])}
    return res
