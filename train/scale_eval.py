"""Figures of issue 15's goal table for one embedding, every one on persons it never saw.

Everything is scored by :mod:`ecgstream.pipeline.scores` (quality-weighted unit
centroid of the enrolment, cosine per beat, mean of consecutive good beats),
the daemon's own scoring, through :class:`train.protocols.Matcher`.

- **PTB-XL cross-ECG** (held-out fold of multi-ECG patients): enrol on the
  patient's first ECG (all its good lead-I beats), probe with each later ECG;
  ``all`` = mean over all good beats of the probe ECG (one 10-s ECG), ``1`` =
  single beats, ``10`` = 10 consecutive beats where the ECG has them.
  Impostor probes: every later ECG of every other patient of the fold.
  Rank-1: each later ECG's ``all`` score against all the fold's templates.
  Also the same with a **chest-strap stand-in** (bipolar V5 - V1 in enrolment
  and probe) and with a **frontal stand-in** (enrol lead I, probe lead II:
  another electrode pair on the same person).
- **ECG-ID** (every person, none trained on): enrol on the first record,
  probe with the others (1 and 10 beats); cross-day (10 beats).
- **MIT-BIH** identities as ECG-ID-like sessions (:func:`train.recognition.mitdb_as_sessions`).
- **Leave-one-dataset-out calibration**: FAR-0.1 % (and EER) thresholds
  calibrated on one set, applied to the others: the FAR and FRR they give
  there. With raw and cohort-normalised (``znorm``) scores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from .data import BeatSet
from .protocols import Matcher, crossday_protocol, summarise, verification_protocol
from .ptbxl import PtbxlBeats
from .recognition import mitdb_as_sessions, threshold_transfer
from .recognition import thresholds_by_k as thresholds

log = logging.getLogger(__name__)

Embed = Callable[[np.ndarray], np.ndarray]


def ptbxl_beatset(pb: PtbxlBeats, windows: np.ndarray | None = None) -> BeatSet:
    """A PTB-XL subset as a :class:`BeatSet` (person = patient, record = ECG, day = visit)."""
    w = pb.leads[:, 0] if windows is None else windows
    return BeatSet(np.ascontiguousarray(w, np.float32), pb.patient.copy(), pb.ecg_id.copy(), pb.visit.copy(),
                   pb.r_sample.copy())


def cross_ecg(bs: BeatSet, emb: np.ndarray, matcher: Matcher, ks=(1, 3, 5, 10),
              enrol_emb: np.ndarray | None = None) -> dict:
    """Enrol first ECG, probe later ones; scores by k plus ``all`` beats, and rank-1.

    ``enrol_emb``: embeddings to build templates from (another lead of the
    same beats); default ``emb``.
    """
    enrol_emb = emb if enrol_emb is None else enrol_emb
    recs: dict[int, list[int]] = {}
    for p, r in set(zip(bs.person.tolist(), bs.record.tolist(), strict=True)):
        recs.setdefault(p, []).append(r)
    persons = sorted(p for p, rs in recs.items())
    recs = {p: sorted(recs[p]) for p in persons}
    key = bs.person * 1_000_000 + bs.record
    rows_of = {}
    order = np.argsort(key, kind="stable")
    ks_sorted = key[order]
    uk, starts = np.unique(ks_sorted, return_index=True)
    ends = np.append(starts[1:], ks_sorted.size)
    for k_, s0, s1 in zip(uk.tolist(), starts, ends, strict=True):
        rows_of[k_] = order[s0:s1]
    scorer = matcher.scorer([matcher.centroid(enrol_emb[rows_of[p * 1_000_000 + recs[p][0]]]) for p in persons])
    col = {p: j for j, p in enumerate(persons)}
    gen: dict = {k: [] for k in (*ks, "all")}
    imp: dict = {k: [] for k in (*ks, "all")}
    hits = trials = 0
    for p in persons:
        for r in recs[p][1:]:
            s = scorer.scores(emb[rows_of[p * 1_000_000 + r]])  # (beats, persons)
            j = col[p]
            mask = np.ones(s.shape[1], bool)
            mask[j] = False
            allm = s.mean(axis=0)
            gen["all"].append(allm[j:j + 1])
            imp["all"].append(allm[mask])
            hits += int(np.argmax(allm) == j)
            trials += 1
            c = np.cumsum(np.vstack([np.zeros((1, s.shape[1])), s]), axis=0)  # once per probe, every k
            for k in ks:
                if s.shape[0] < k:
                    continue
                f = (c[k:] - c[:-k]) / k
                gen[k].append(f[:, j])
                imp[k].append(f[:, mask].ravel())
    scores = {k: (np.concatenate(gen[k]) if gen[k] else np.empty(0),
                  np.concatenate(imp[k]) if imp[k] else np.empty(0)) for k in gen}
    out = summarise(scores)
    out["rank1"] = {"hits": hits, "trials": trials, "rate": hits / max(1, trials), "among": len(persons)}
    return {"figures": out, "scores": scores}


def max_rule(*thrs: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per fused count and operating point, the largest of several sets' thresholds.

    The card's calibration rule: a threshold must hold on every population
    we hold, so it is the strictest of theirs. Whether the rule holds on a
    population it never saw is checked by leaving each dataset out in turn.
    """
    out: dict[str, dict[str, float]] = {}
    for k in [k for k in thrs[0] if all(k in t for t in thrs)]:  # the first one's order: reproducible cards
        out[k] = {op: max(t[k][op] for t in thrs) for op in thrs[0][k]}
    return out


def transfer(scores: dict, thr: dict[str, dict[str, float]]) -> dict:
    """FAR/FRR of ``scores`` at thresholds calibrated elsewhere (:func:`train.recognition.threshold_transfer`)."""
    return threshold_transfer(scores, thr)


def evaluate_embedding(
    embed: Embed,
    ptb_held: PtbxlBeats,
    ecgid: BeatSet,
    mitdb: BeatSet | None,
    matchers: dict[str, Matcher],
    ks=(1, 3, 5, 10),
) -> tuple[dict, dict]:
    """Every figure for one embedding function; returns (figures, raw scores for plots)."""
    from .ptbxl import LEADS

    res: dict = {}
    raw: dict = {}
    pbs = ptbxl_beatset(ptb_held)
    e_i = embed(pbs.windows)
    # Stand-ins for another device, same held-out patients: lead II (other
    # frontal pair) probes against lead-I templates; a bipolar chest lead
    # V5 - V1 for both enrolment and probe.
    e_ii = embed(np.ascontiguousarray(ptb_held.leads[:, LEADS.index("II")]))
    chest = ptb_held.has_chest
    v = ptb_held.leads[chest]
    e_ch = embed(np.ascontiguousarray(v[:, LEADS.index("V5")] - v[:, LEADS.index("V1")]))
    ebs = ecgid
    e_id = embed(ebs.windows)
    if mitdb is not None:
        mit, sel = mitdb_as_sessions(mitdb)
        e_mit = embed(mit.windows)
    for name, m in matchers.items():
        r: dict = {}
        cal = cross_ecg(pbs, e_i, m, ks)
        r["ptbxl_cross_ecg"] = cal["figures"]
        r["ptbxl_lead_ii_vs_lead_i"] = cross_ecg(pbs, e_ii, m, ks, enrol_emb=e_i)["figures"]
        r["ptbxl_chest_v5_v1"] = cross_ecg(pbs.subset(chest), e_ch, m, ks)["figures"]
        ver = verification_protocol(ebs, e_id, ks, m)
        cd, cd_p = crossday_protocol(ebs, e_id, ks, m)
        r["ecgid_verification"] = summarise(ver)
        r["ecgid_crossday"] = {**summarise(cd), "persons": len(cd_p)}
        thr = thresholds(cal["scores"])
        thr_id = thresholds(ver)
        r["thresholds_from_ptbxl"] = thr
        r["thresholds_from_ecgid"] = thr_id
        r["thresholds_max_ptbxl_ecgid"] = max_rule(thr, thr_id)
        r["lodo"] = {"calibrated_on": "PTB-XL held-out fold (cross-ECG)",
                     "ecgid": transfer(ver, thr)}
        raw[name] = {"ptbxl": cal["scores"], "ecgid": ver}
        if mitdb is not None:
            mv = verification_protocol(mit, e_mit, ks, m)
            r["mitdb_verification"] = summarise(mv)
            r["lodo"]["mitdb"] = transfer(mv, thr)
            # The card's rule (the larger of the two sets' thresholds), checked on the set left out of it.
            r["lodo"]["mitdb_max_rule"] = transfer(mv, r["thresholds_max_ptbxl_ecgid"])
            r["lodo"]["ecgid_from_ptbxl_mitdb_max_rule"] = transfer(ver, max_rule(thr, thresholds(mv)))
            r["lodo"]["ptbxl_from_ecgid_mitdb_max_rule"] = transfer(cal["scores"], max_rule(thr_id, thresholds(mv)))
            raw[name]["mitdb"] = mv
        res[name] = r
        log.info("%s: PTB-XL all-beats EER %.2f%% TAR %.1f%% rank-1 %.1f%%; ECG-ID 10-beat EER %s", name,
                 100 * r["ptbxl_cross_ecg"]["all"]["eer"], 100 * r["ptbxl_cross_ecg"]["all"]["tar_at_far_0.001"],
                 100 * r["ptbxl_cross_ecg"]["rank1"]["rate"],
                 f"{100 * r['ecgid_verification']['10']['eer']:.2f}%" if "10" in r["ecgid_verification"] else "-")
    return res, raw
