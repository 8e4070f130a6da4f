"""Evaluation protocols on persons unseen in training (numpy only).

Every protocol takes unit embeddings of a held-out :class:`~train.data.BeatSet`
and scores them with :mod:`ecgstream.pipeline.scores`, the daemon's own template,
beat and fused scores, so that the thresholds found here are thresholds of
exactly the score the daemon computes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ecgstream.pipeline.scores import Cohort, Scorer, make_template, quality_weights, rolling_fused

from .data import BeatSet
from .metrics import eer, far_threshold, tar_at_far

__all__ = [
    "FAR_POINT",
    "enrol_probe_scores",
    "one_shot_accuracy",
    "pair_accuracy",
    "summarise",
    "verification_protocol",
    "crossday_protocol",
]

FAR_POINT = 0.001


@dataclass(frozen=True)
class Matcher:
    """How templates are made and scores computed in a protocol (the daemon's choices).

    Attributes
    ----------
    norm : str
        ``none`` or ``znorm`` (:class:`ecgstream.pipeline.scores.Scorer`).
    cohort : Cohort or None
        Impostor cohort for ``znorm`` (made from the training persons only).
    weighted : bool
        Quality-weighted enrolment centroid (:func:`ecgstream.pipeline.scores.quality_weights`).
    enrol_beats : int or None
        Use only the first ``enrol_beats`` good beats of the enrolment record
        (the enrolment-length trade-off); None: all.
    """

    norm: str = "none"
    cohort: Cohort | None = None
    weighted: bool = False
    enrol_beats: int | None = None

    def centroid(self, emb: np.ndarray) -> np.ndarray:
        e = emb[: self.enrol_beats] if self.enrol_beats else emb
        return make_template(e, quality_weights(e) if self.weighted else None)

    def scorer(self, centroids: list[np.ndarray]) -> Scorer:
        return Scorer(centroids, norm=self.norm, cohort=self.cohort)


RAW = Matcher()


def _records(bs: BeatSet) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for p, r in set(zip(bs.person.tolist(), bs.record.tolist(), strict=True)):
        out.setdefault(p, []).append(r)
    return {p: sorted(v) for p, v in sorted(out.items())}


def enrol_probe_scores(
    bs: BeatSet,
    emb: np.ndarray,
    enrol: dict[int, int],
    genuine: set[tuple[int, int]],
    impostor_probes: Iterable[tuple[int, int]],
    ks: Iterable[int] = (1, 3, 5, 10),
    matcher: Matcher = RAW,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Genuine and impostor scores of probe records against enrolled templates.

    Parameters
    ----------
    bs : BeatSet
        Held-out beats (in stream order within each record).
    emb : ndarray (len(bs), dim)
        Their unit embeddings.
    enrol : dict person -> record
        The record each template is built from (all its good beats).
    genuine : set of (person, record)
        Probe records scored against their own person's template.
    impostor_probes : iterable of (person, record)
        Probe records scored against every *other* person's template.
    ks : iterable of int
        Numbers of consecutive good beats fused (mean score); 1 = single beat.
    matcher : Matcher
        Template making and score normalisation (default: raw cosine).

    Returns
    -------
    dict k -> (genuine_scores, impostor_scores)
    """
    ks = list(ks)
    keys = np.stack([bs.person, bs.record], axis=1)
    persons = sorted(enrol)
    scorer = matcher.scorer([matcher.centroid(emb[(bs.person == p) & (bs.record == enrol[p])])
                             for p in persons])
    probe_keys = sorted(set(genuine) | set(impostor_probes))
    imp_set = set(impostor_probes)
    gen_out: dict[int, list[np.ndarray]] = {k: [] for k in ks}
    imp_out: dict[int, list[np.ndarray]] = {k: [] for k in ks}
    for p, r in probe_keys:
        m = (keys[:, 0] == p) & (keys[:, 1] == r)
        if not m.any():
            continue
        s = scorer.scores(emb[m])  # (n_beats, n_templates)
        for j, tp in enumerate(persons):
            if tp == p:
                if (p, r) not in genuine or r == enrol[p]:
                    continue
                dest = gen_out
            elif (p, r) in imp_set:
                dest = imp_out
            else:
                continue
            for k in ks:
                dest[k].append(rolling_fused(s[:, j], k))
    return {
        k: (np.concatenate(gen_out[k]) if gen_out[k] else np.empty(0),
            np.concatenate(imp_out[k]) if imp_out[k] else np.empty(0))
        for k in ks
    }


def verification_protocol(bs: BeatSet, emb: np.ndarray, ks: Iterable[int] = (1, 3, 5, 10),
                          matcher: Matcher = RAW):
    """Enrol on each person's first record, probe with all their other records.

    Impostor probes: every non-enrolment record of every other held-out person
    (a person with a single record is only ever an enrolled target).
    """
    recs = _records(bs)
    enrol = {p: rs[0] for p, rs in recs.items()}
    probes = {(p, r) for p, rs in recs.items() for r in rs[1:]}
    return enrol_probe_scores(bs, emb, enrol, probes, probes, ks, matcher)


def crossday_protocol(bs: BeatSet, emb: np.ndarray, ks: Iterable[int] = (1, 3, 5, 10),
                      matcher: Matcher = RAW):
    """Cross-day: enrol on a person's first record of their first day, probe
    with their records of later days.

    Only persons recorded on more than one date get templates; impostor
    probes are all non-enrolment records of the other held-out persons.
    Returns ``(scores by k, persons used)``.
    """
    recs = _records(bs)
    enrol: dict[int, int] = {}
    genuine: set[tuple[int, int]] = set()
    for p, rs in recs.items():
        days = {r: int(bs.day[(bs.person == p) & (bs.record == r)][0]) for r in rs}
        if max(days.values()) == 0:
            continue
        first = [r for r in rs if days[r] == 0]
        enrol[p] = first[0]
        genuine |= {(p, r) for r in rs if days[r] > 0}
    all_enrol = {p: rs[0] for p, rs in recs.items()} | enrol
    imp = {(p, r) for p, rs in recs.items() for r in rs if r != all_enrol[p]}
    if not enrol:
        return {k: (np.empty(0), np.empty(0)) for k in ks}, []
    return enrol_probe_scores(bs, emb, enrol, genuine, imp, ks, matcher), sorted(enrol)


def summarise(scores: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, float]]:
    """EER, TAR at FAR 0.1 % and their thresholds for each fused count."""
    out: dict[str, dict[str, float]] = {}
    for k, (g, i) in scores.items():
        if g.size == 0 or i.size == 0:
            continue
        e, te = eer(g, i)
        tar, tf = tar_at_far(g, i, FAR_POINT)
        out[str(k)] = {
            "eer": e,
            "eer_threshold": te,
            "tar_at_far_0.001": tar,
            "far_0.001_threshold": tf,
            "n_genuine": int(g.size),
            "n_impostor": int(i.size),
        }
    return out


def _best_acc_threshold(s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    order = np.argsort(s)
    ss, yy = s[order], y[order]
    # threshold at ss[j]: accept indices >= j
    pos_at_or_above = np.cumsum(yy[::-1])[::-1]
    neg_below = np.concatenate(([0], np.cumsum(1 - yy)[:-1]))
    acc = (pos_at_or_above + neg_below) / s.size
    j = int(np.argmax(acc))
    return float(acc[j]), float(ss[j])


def pair_accuracy(bs: BeatSet, emb: np.ndarray, n_pairs: int = 20000, seed: int = 0) -> dict[str, float]:
    """Single-beat pair accuracy on balanced same/different pairs.

    Pairs of two distinct good beats: half from one person, half from two
    different persons, persons drawn uniformly. The accept threshold must be
    chosen somewhere: ``accuracy`` uses a threshold fitted on the pairs of
    the *other* half of the persons (two-fold swap over persons, so no pair
    is judged by a threshold fitted on its own persons); ``accuracy_oracle``
    fits it on all pairs (an upper bound, as in much of the literature).
    """
    rng = np.random.default_rng(seed)
    persons = np.unique(bs.person)
    idx = {p: np.flatnonzero(bs.person == p) for p in persons}
    if persons.size < 4:
        raise ValueError(f"pair accuracy needs at least 4 persons (two per half), got {persons.size}")
    half = rng.permutation(persons)
    groups = [set(half[: len(half) // 2].tolist()), set(half[len(half) // 2:].tolist())]

    def draw(group: list[int], n: int) -> tuple[np.ndarray, np.ndarray]:
        multi = [p for p in group if idx[p].size >= 2]
        s_same = np.empty(n)
        s_diff = np.empty(n)
        for t in range(n):
            p = multi[rng.integers(len(multi))]
            a, b = rng.choice(idx[p], 2, replace=False)
            s_same[t] = float(emb[a] @ emb[b])
            p, q = rng.choice(group, 2, replace=False)
            s_diff[t] = float(emb[rng.choice(idx[p])] @ emb[rng.choice(idx[q])])
        return np.concatenate([s_same, s_diff]), np.concatenate([np.ones(n), np.zeros(n)])

    per = [draw(sorted(g), n_pairs // 4) for g in groups]
    swap = []
    for a, b in ((0, 1), (1, 0)):
        _, t = _best_acc_threshold(*per[a])
        s, y = per[b]
        swap.append(float(np.mean((s >= t) == (y == 1))))
    s_all = np.concatenate([per[0][0], per[1][0]])
    y_all = np.concatenate([per[0][1], per[1][1]])
    oracle, t_or = _best_acc_threshold(s_all, y_all)
    e, _ = eer(s_all[y_all == 1], s_all[y_all == 0])
    return {
        "accuracy": float(np.mean(swap)),
        "accuracy_oracle": oracle,
        "oracle_threshold": t_or,
        "pair_eer": e,
        "n_pairs": int(s_all.size),
    }


def one_shot_accuracy(
    bs: BeatSet, emb: np.ndarray, n_trials: int = 4000, seed: int = 0, other_record: bool = False
) -> float:
    """N-way one-shot identification accuracy (N = number of persons in ``bs``).

    Each trial draws one support beat per person and one query beat of a
    random person (a different beat; with ``other_record``, from a different
    record of that person when the person has one) and predicts the person
    whose support beat is most similar (cosine).
    """
    rng = np.random.default_rng(seed)
    persons = np.unique(bs.person)
    idx = {p: np.flatnonzero(bs.person == p) for p in persons}
    hits = 0
    for _ in range(n_trials):
        sup = np.array([rng.choice(idx[p]) for p in persons])
        qi = int(rng.integers(len(persons)))
        p = persons[qi]
        cand = idx[p][idx[p] != sup[qi]]
        if other_record:
            other = cand[bs.record[cand] != bs.record[sup[qi]]]
            cand = other if other.size else cand
        q = rng.choice(cand)
        hits += int(np.argmax(emb[sup] @ emb[q]) == qi)
    return hits / n_trials


def thresholds_from(scores: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, float]]:
    """EER and FAR-0.1 % thresholds of each fused count (for the card)."""
    out = {}
    for k, (g, i) in scores.items():
        _, te = eer(g, i)
        out[str(k)] = {"eer": te, "far_0.001": far_threshold(i, FAR_POINT)}
    return out


def adaptive_crossday(
    bs: BeatSet,
    emb: np.ndarray,
    matcher: Matcher,
    threshold: float,
    policy,
    margin: float = 0.0,
    k: int = 10,
) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], dict]:
    """Cross-day scores with online template adaptation, as the daemon adapts.

    Each person recorded on several dates is enrolled on their first record
    of their first day; then all their other records are streamed in time
    order through one :class:`~ecgstream.pipeline.scores.Scorer` (the daemon kept
    running between sittings). Every beat is scored *before* it may adapt the
    template; it adapts (``Scorer.adapt`` with ``policy``) when the fused
    score of the last ``k`` beats is at least ``threshold + margin`` over a
    full window, exactly the daemon's gate (held-out beats are all good and
    taken as live). Genuine scores are those of the later days' records.

    Impostors then try the *adapted* template: every non-enrolment record of
    every other held-out person is streamed against a copy of it, and may
    adapt it in turn through the same gate (a capture attempt).

    Returns
    -------
    scores : dict {1: (gen, imp), k: (gen, imp)}
    info : dict
        Beats adapted (genuine, impostor), persons, and the least cosine
        between an adapted and its enrolled centroid.
    """
    import copy

    recs = _records(bs)
    day_of = {(p, r): int(bs.day[(bs.person == p) & (bs.record == r)][0]) for p, rs in recs.items() for r in rs}
    out_g: dict[int, list[np.ndarray]] = {1: [], k: []}
    out_i: dict[int, list[np.ndarray]] = {1: [], k: []}
    info = {"persons": [], "adapted_genuine": 0, "adapted_impostor": 0, "min_cos_to_enrolled": 1.0}
    all_enrol = {p: rs[0] for p, rs in recs.items()}

    def stream(scorer: Scorer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        s1 = np.empty(len(x))
        win: list[float] = []
        fused: list[float] = []
        n_ad = 0
        for j, e in enumerate(x):
            s = float(scorer.scores(e[None, :])[0, 0])
            s1[j] = s
            win.append(s)
            if len(win) > k:
                win.pop(0)
            if len(win) == k:
                f = float(np.mean(win))
                fused.append(f)
                if f >= threshold + margin:
                    c = scorer.adapt(0, e, policy)
                    info["min_cos_to_enrolled"] = min(info["min_cos_to_enrolled"], c)
                    n_ad += 1
        return s1, np.asarray(fused), n_ad

    for p, rs in recs.items():
        days = sorted(rs, key=lambda r: (day_of[(p, r)], r))
        if max(day_of[(p, r)] for r in rs) == 0:
            continue
        first = [r for r in days if day_of[(p, r)] == 0][0]
        info["persons"].append(int(p))
        sc = matcher.scorer([matcher.centroid(emb[(bs.person == p) & (bs.record == first)])])
        for r in days:
            if r == first:
                continue
            s1, fk, n_ad = stream(sc, emb[(bs.person == p) & (bs.record == r)])
            info["adapted_genuine"] += n_ad
            if day_of[(p, r)] > 0:
                out_g[1].append(s1)
                out_g[k].append(fk)
        for q, qrs in recs.items():
            if q == p:
                continue
            for r in qrs:
                if r == all_enrol[q]:
                    continue
                s1, fk, n_ad = stream(copy.deepcopy(sc), emb[(bs.person == q) & (bs.record == r)])
                info["adapted_impostor"] += n_ad
                out_i[1].append(s1)
                out_i[k].append(fk)
    cat = lambda v: np.concatenate(v) if v else np.empty(0)  # noqa: E731
    return {kk: (cat(out_g[kk]), cat(out_i[kk])) for kk in (1, k)}, info


def build_cohort(bs: BeatSet, emb: np.ndarray, mask: np.ndarray, model_id: str,
                 chunk_beats: int = 25, per_person_max: int = 12) -> Cohort:
    """The impostor cohort: unit centroids of training persons' recordings.

    One vector per ECG-ID record and per run of ``chunk_beats`` consecutive
    beats of a long (MIT-BIH) record, at most ``per_person_max`` per person,
    all from beats under ``mask`` (training persons only: never a person
    who is evaluated or enrolled).
    """
    vecs = []
    idx = np.flatnonzero(mask)
    keys = bs.person[idx] * 100_000 + bs.record[idx]
    for p in np.unique(bs.person[idx]):
        pv = []
        for key in np.unique(keys[bs.person[idx] == p]):
            rows = idx[keys == key]
            for c0 in range(0, max(1, len(rows) - chunk_beats + 1), chunk_beats):
                part = rows[c0:c0 + chunk_beats]
                if len(part) >= 5:
                    pv.append(make_template(emb[part]))
        vecs.extend(pv[:per_person_max])
    return Cohort(np.stack(vecs), model_id)
