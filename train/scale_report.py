"""The goal table of issue 15 and the ablation table, measured in one run.

``python -m train.evaluate --ptbxl [--runs DIR ...]`` calls :func:`report`:
every model named here (the shipped ``edge/model.tflite``, the previous
shipped model read from git, the training-free correlation baseline, and
each ``python -m train.scale`` run folder given) is scored on the same
persons: the same PTB-XL held-out fold (the shipped card names it), all 90
ECG-ID persons, and MIT-BIH as sessions, with :mod:`train.scale_eval`.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edge import LiteRTEmbedder
from edge.preprocess import NORMALISATION

from .evaluation import baseline_embed
from .ptbxl import patient_folds

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
#: The model shipped before PTB-XL (issue 15's "now" column), read from git.
PREVIOUS = ("d87f355", "ecgstream-embed-1f8cd8a91b1d")


def previous_model(dest: Path) -> Path | None:
    """Write the previous shipped model out of git into ``dest`` (None when git cannot)."""
    rev = PREVIOUS[0]
    try:
        blob = subprocess.run(["git", "show", f"{rev}:edge/model.tflite"], cwd=REPO, capture_output=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        log.warning("previous model %s not readable from git (a shallow clone?): its row is left out", PREVIOUS[1])
        return None
    p = dest / "previous.tflite"
    p.write_bytes(blob)
    return p


def _fmt(v: float | None, nd: int = 2) -> str:
    return "-" if v is None else f"{100 * v:.{nd}f}"


def summary_row(res: dict, variant: str) -> dict:
    """The figures of the goal table for one model and score variant (None where not measured)."""
    r = res.get(variant)
    if r is None:
        return {}
    px = r["ptbxl_cross_ecg"]
    ev, ec = r["ecgid_verification"], r["ecgid_crossday"]

    def g(d: dict, k: str, key: str):
        return (d.get(k) or {}).get(key)

    lo = r["lodo"]
    return {
        "ptb_eer_all": g(px, "all", "eer"), "ptb_tar_all": g(px, "all", "tar_at_far_0.001"),
        "ptb_rank1": px["rank1"]["rate"], "ptb_among": px["rank1"]["among"],
        "ptb_eer_1": g(px, "1", "eer"),
        "chest_eer_all": g(r["ptbxl_chest_v5_v1"], "all", "eer"),
        "leadii_eer_all": g(r["ptbxl_lead_ii_vs_lead_i"], "all", "eer"),
        "ecgid_eer_1": g(ev, "1", "eer"), "ecgid_eer_10": g(ev, "10", "eer"),
        "ecgid_crossday_10": g(ec, "10", "eer"),
        "lodo_ecgid_far_10": g((lo.get("ecgid") or {}).get("10", {}), "far_0.001", "far"),
        "lodo_ecgid_frr_10": g((lo.get("ecgid") or {}).get("10", {}), "far_0.001", "frr"),
        "lodo_mitdb_far_10": g((lo.get("mitdb") or {}).get("10", {}), "far_0.001", "far"),
        "mitdb_eer_10": g(r.get("mitdb_verification") or {}, "10", "eer"),
    }


COLS = [
    ("PTB-XL EER all beats", "ptb_eer_all"), ("PTB-XL TAR@FAR0.1%", "ptb_tar_all"), ("PTB-XL rank-1", "ptb_rank1"),
    ("PTB-XL EER 1 beat", "ptb_eer_1"), ("chest V5-V1 EER", "chest_eer_all"), ("lead II vs I EER", "leadii_eer_all"),
    ("ECG-ID EER 1", "ecgid_eer_1"), ("ECG-ID EER 10", "ecgid_eer_10"), ("ECG-ID cross-day EER 10", "ecgid_crossday_10"),
    ("LODO ECG-ID FAR (FAR-0.1% thr. from PTB-XL), 10", "lodo_ecgid_far_10"),
    ("LODO MIT-BIH FAR, 10", "lodo_mitdb_far_10"), ("MIT-BIH EER 10", "mitdb_eer_10"),
]


def markdown_table(rows: list[tuple[str, dict]]) -> str:
    head = "| model | " + " | ".join(c for c, _ in COLS) + " |"
    sep = "|---|" + "---|" * len(COLS)
    lines = [head, sep]
    for name, r in rows:
        lines.append(f"| {name} | " + " | ".join(_fmt(r.get(k), 1 if "tar" in k or "rank" in k else 2)
                                               for _, k in COLS) + " |")
    return "\n".join(lines) + "\n"


def report(data: str | None, runs: list[Path], fold: int = 0, folds: int = 5, seed: int = 1,
           threads: int = 2, shipped: Path | None = None, rescore: bool = False) -> dict:
    """Score every model on the same sets; returns everything measured."""
    from ecgstream.dsp import DspConfig

    from .data import build_beatset
    from .ptbxl import build_ptbxl
    from .scale import evaluate_run

    eps = float(NORMALISATION["eps_mv"])
    dsp = DspConfig()
    cache = REPO / "runs" / "cache"
    pb = build_ptbxl(dsp, data, cache_dir=cache)
    other = build_beatset(dsp, mitdb=True, data_root=data, cache_dir=cache)
    held_p = patient_folds(pb, folds, seed)[fold]
    held = np.isin(pb.patient, held_p)
    tr = pb.subset(~held)
    ecgid = other.subset(other.is_ecgid)
    mit = other.subset(~other.is_ecgid)
    models: list[tuple[str, object, bool]] = []  # name, embed, trained on MIT-BIH
    tmp = Path(tempfile.mkdtemp(prefix="ecgstream-eval-"))
    prev = previous_model(tmp)
    if shipped is not None and shipped.is_file():
        models.append(("shipped " + shipped.parent.name, LiteRTEmbedder(shipped, eps_mv=eps, num_threads=threads).embed,
                       True))
    if prev is not None:
        models.append((f"previous {PREVIOUS[1]}", LiteRTEmbedder(prev, eps_mv=eps, num_threads=threads).embed, True))
    models.append(("correlation baseline", lambda w: baseline_embed(w, eps), False))
    out: dict = {"fold": fold, "folds": folds, "seed": seed, "heldout_patients": int(held_p.size),
                 "models": {}}
    for r in runs:
        tj = json.loads((r / "train.json").read_text()) if (r / "train.json").is_file() else {}
        if tj.get("fold", fold) != fold or tj.get("folds", folds) != folds:
            log.warning("%s was trained with fold %s of %s held out, not %d of %d: skipped", r, tj.get("fold"),
                        tj.get("folds"), fold, folds)
            continue
        if not rescore and (r / "eval.json").is_file():
            # Written at the end of that run by the same evaluate_run on the same sets (int8 LiteRT
            # is deterministic): the same figures a re-embedding gives, without the minutes.
            out["models"][f"run {r.name}"] = {**json.loads((r / "eval.json").read_text()),
                                              "from": str(r / "eval.json"), "train": {
                                                  k: tj.get(k) for k in ("views", "mitdb", "params",
                                                                         "tflite_bytes", "seconds")}
                                              | {"config": {k: (tj.get("config") or {}).get(k) for k in
                                                            ("width", "depth", "embedding_dim", "epochs")}}}
            continue
        models.append((f"run {r.name}", LiteRTEmbedder(r / "model.tflite", eps_mv=eps, num_threads=threads).embed,
                       bool(tj.get("mitdb", True))))
    for name, emb, with_mit in models:
        log.info("scoring %s", name)
        # MIT-BIH figures only for models that never trained on it (a LODO figure).
        res = evaluate_run(emb, tr, pb.subset(held), ecgid, None if with_mit else mit, name)
        out["models"][name] = res
    return out


def render(out: dict) -> str:
    """Markdown of :func:`report`'s result: per variant, one row per model."""
    parts = [f"Same persons for every row: PTB-XL fold {out['fold']} of {out['folds']} "
             f"({out['heldout_patients']} held-out multi-ECG patients, patient-disjoint), all 90 ECG-ID persons, "
             "MIT-BIH as sessions (only for models not trained on it). Figures in %; int8 LiteRT except the "
             "baseline.\n"]
    def label(n: str, r: dict) -> str:
        t = r.get("train")
        if not t:
            return n
        c, v = t.get("config") or {}, t.get("views") or {}
        return (f"{n}: width {c.get('width')}, dim {c.get('embedding_dim')}, {t.get('params'):,} params, "
                f"{t.get('tflite_bytes'):,} B; views mix {v.get('mix_p')} chest {v.get('chest_p')}; "
                f"MIT-BIH {'in' if t.get('mitdb') else 'out'}; {c.get('epochs')} epochs")

    for variant in ("weighted", "weighted+znorm"):
        rows = [(label(n, r), summary_row(r, variant)) for n, r in out["models"].items() if variant in r]
        if rows:
            parts.append(f"\n### score: {variant}\n\n" + markdown_table(rows))
    lines = []
    for n, r in out["models"].items():
        lo = (r.get("weighted") or {}).get("lodo") or {}
        for key, what in (("mitdb_max_rule", "MIT-BIH (calibrated: max of PTB-XL fold, ECG-ID)"),
                          ("ecgid_from_ptbxl_mitdb_max_rule", "ECG-ID (calibrated: max of PTB-XL fold, MIT-BIH)"),
                          ("ptbxl_from_ecgid_mitdb_max_rule", "PTB-XL fold (calibrated: max of ECG-ID, MIT-BIH)"),
                          ("mitdb", "MIT-BIH (calibrated: PTB-XL fold alone)"),
                          ("ecgid", "ECG-ID (calibrated: PTB-XL fold alone)")):
            t = (lo.get(key) or {}).get("10")
            if t:
                lines.append(f"| {n} | {what} | {_fmt(t['far_0.001']['far'], 3)} | {_fmt(t['far_0.001']['frr'], 1)} | "
                             f"{_fmt(t['eer']['far'], 2)} | {_fmt(t['eer']['frr'], 1)} |")
    if lines:
        parts.append("\n### calibration left one dataset out (raw score, 10 beats): the card's rule is the max of "
                     "the sets it holds\n\n| model | left-out set (calibrated on) | FAR at FAR-0.1% point | FRR "
                     "there | FAR at EER point | FRR there |\n|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n")
    return "".join(parts)


def enrolment_tradeoff(embed, held, ecgid, matcher_kw: dict, sizes=(3, 4, 5, 6, 8, 10, None)) -> dict:
    """EER by enrolment length: templates from the first ``n`` good beats (None: all of the record)."""
    from .protocols import Matcher, summarise, verification_protocol
    from .scale_eval import cross_ecg, ptbxl_beatset

    pbs = ptbxl_beatset(held)
    e_p = embed(pbs.windows)
    e_i = embed(ecgid.windows)
    out = {}
    for n in sizes:
        m = Matcher(enrol_beats=n, **matcher_kw)
        px = cross_ecg(pbs, e_p, m, (1, 10))["figures"]
        ev = summarise(verification_protocol(ecgid, e_i, (1, 10), m))
        out["all" if n is None else str(n)] = {
            "ptbxl_eer_all": px["all"]["eer"], "ptbxl_tar_all": px["all"]["tar_at_far_0.001"],
            "ecgid_eer_1": ev["1"]["eer"], "ecgid_eer_10": ev["10"]["eer"]}
    return out
