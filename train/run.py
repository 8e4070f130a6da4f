"""``python -m train``: build the beat set, train, evaluate, export, report.

One command, fixed seeds, CPU only. Stages:

1. cut the beat set from ECG-ID (and MIT-BIH) with ``ecgstream.dsp``, the
   daemon's own streaming DSP, on the raw channel 0;
2. train the shipped embedding network on every ECG-ID person except the
   seed protocol's 16 held-out persons (plus MIT-BIH's 47 persons), convert
   it to a full-integer int8 ``.tflite`` calibrated on training persons'
   beats, and evaluate it on the held-out persons with LiteRT (the runtime
   that ships) and with the float Keras model;
3. 5-fold subject-disjoint cross-validation over the 90 ECG-ID persons
   (each fold: train, convert to int8, evaluate on the fold's persons with
   LiteRT), including the cross-day protocol and the training-free baseline;
4. the same without MIT-BIH, to measure whether MIT-BIH helps;
5. the model card (thresholds calibrated on the held-out persons on LiteRT),
   the two-input twin SavedModel, report.json/.md and plots.

``--export`` installs the model, its card and the float reference into
``edge/`` and the report into ``docs/model/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ecgstream.dsp import DspConfig
from ecgstream.sources.records import SEED_HELDOUT
from edge.card import CARD_FORMAT_VERSION, ModelCard, sha256_file
from edge.preprocess import NORMALISATION
from edge.runtime import LiteRTEmbedder

from .data import build_beatset, dsp_fingerprint, dsp_source_digest
from .evaluation import (
    FUSED_K,
    card_thresholds_from,
    fit_probability,
    mean_sd,
)
from .export import save_twin, tflite_ops
from .model import TrainConfig, keras, tf
from .shipping import card_metrics, choose_norm, install, install_report
from .trainer import ABLATIONS, Trainer, lodo

log = logging.getLogger("train")

REPO = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """HEAD commit of the repository, with ``-dirty`` if train/ or edge/ code differs."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "train", "edge/preprocess.py", "edge/runtime.py",
             "edge/card.py", "ecgstream/dsp", "ecgstream/pipeline/scores.py"],
            cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="run folder (default runs/train-<time>)")
    p.add_argument("--data", help="data directory (default ../shared/data or $ECGSTREAM_DATA)")
    p.add_argument("--ecgid", help="ECG-ID folder to use instead (e.g. data/ecgid-excerpt)")
    p.add_argument("--heldout", help="comma-separated held-out persons (default: the seed protocol's 16)")
    p.add_argument("--no-mitdb", action="store_true", help="train the shipped model without MIT-BIH")
    p.add_argument("--no-ablation", action="store_true",
                   help="skip the ablation (each training change off, same folds) and the leave-one-dataset-out check")
    p.add_argument("--ablate", default=",".join(ABLATIONS),
                   help=f"training changes to ablate, comma-separated (default: all of {', '.join(ABLATIONS)})")
    p.add_argument("--score-norm", choices=("auto", "none", "znorm"), default="auto",
                   help="score normalisation shipped on the card (auto: znorm only if it makes the "
                        "card's FAR-0.1%% threshold hold better on the other dataset, see train/recognition.py)")
    p.add_argument("--epochs", type=int, default=40, help="epochs of the shipped model (default 40)")
    p.add_argument("--cv-epochs", type=int, default=25, help="epochs per cross-validation fold (default 25)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (0: none; default 5)")
    p.add_argument("--seed", type=int, default=1, help="seed of training, folds and sampling (default 1)")
    p.add_argument("--threads", type=int, default=2, help="TensorFlow threads (default 2)")
    p.add_argument("--export", action="store_true", help="install model+card into edge/ and report into docs/model/")
    p.add_argument("--smoke", action="store_true",
                   help="tiny end-to-end run on the shipped excerpt (tests): persons 1, 6, 25, 29 held out, "
                        "2 epochs, 2 folds, no MIT-BIH")
    a = p.parse_args(argv)
    if a.smoke:
        a.ecgid = a.ecgid or str(REPO / "data" / "ecgid-excerpt")
        a.heldout = a.heldout or "1,6,25,29"
        a.no_mitdb = True
        a.no_ablation = True
        a.epochs = min(a.epochs, 2)
        a.cv_epochs = min(a.cv_epochs, 1)
        a.folds = min(a.folds, 2)
    return a


def _ver(m: dict, k: int, key: str) -> float:
    return m["verification"][str(k)][key]


def run(a: argparse.Namespace) -> dict:
    t_start = time.monotonic()
    out = Path(a.out or REPO / "runs" / time.strftime("train-%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    dsp = DspConfig()
    heldout = tuple(int(v) for v in a.heldout.split(",")) if a.heldout else SEED_HELDOUT
    log.info("run folder %s", out)
    # Provenance as of the start of training (the code that actually ran).
    commit, dsp_src, dsp_fp = git_commit(), dsp_source_digest(), dsp_fingerprint(dsp)
    t0 = time.monotonic()
    use_mit_any = not (a.no_mitdb and a.no_ablation)
    bs = build_beatset(dsp, mitdb=use_mit_any, data_root=a.data, cache_dir=REPO / "runs" / "cache",
                       ecgid_root=a.ecgid)
    t_beats = time.monotonic() - t0
    ecg_persons = np.unique(bs.person[bs.is_ecgid])
    missing = sorted(set(heldout) - set(ecg_persons.tolist()))
    if missing:
        log.warning("held-out persons %s have no good beats (ecgstream.dsp flags every beat): "
                    "they cannot take part in any protocol", missing)
    if len(set(heldout) - set(missing)) < 2:
        raise SystemExit("fewer than 2 held-out persons have good beats")
    log.info("beat set: %d good beats, %d ECG-ID persons, %d MIT-BIH persons (%.0f s)",
             len(bs), ecg_persons.size, np.unique(bs.person[~bs.is_ecgid]).size, t_beats)
    base = TrainConfig(seed=a.seed, threads=a.threads)
    base.aug["r_index"] = dsp.n_before
    trainer = Trainer(bs, out, base)
    held = np.isin(bs.person, heldout)
    report: dict = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": "python -m train " + shlex.join(sys.argv[1:]),
                    "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                "tensorflow": tf.__version__, "python": platform.python_version()},
                    "dsp": asdict(dsp), "normalisation": NORMALISATION, "seeds": {"train": a.seed, "folds": a.seed,
                    "sampling": 0}, "timings_s": {"beat_set": t_beats}}

    def mit_mask(with_mit: bool) -> np.ndarray:
        return ~bs.is_ecgid if with_mit else np.zeros(len(bs), bool)

    # -- 1. the shipped model: seed split --------------------------------------------------
    train_mask = bs.is_ecgid & ~held | mit_mask(not a.no_mitdb)
    tfl = out / "model.tflite"
    model, info = trainer.fit(train_mask, a.epochs, "seed", tfl)
    report["timings_s"]["seed_model"] = info["total_seconds"]
    model.save(out / "embedding.keras")
    seed_res = trainer.evaluate(model, tfl, held, seed=0)
    m8, s8 = seed_res["int8"]
    mf, _ = seed_res["float"]
    mb, sb = seed_res["baseline"]
    report["seed"] = {
        "heldout_persons": list(heldout),
        "heldout_without_good_beats": missing,
        "train_persons": [int(p) for p in np.unique(bs.person[train_mask])],
        "train_beats": int(train_mask.sum()),
        "heldout_beats": int(held.sum()),
        "training": {k: v for k, v in info.items() if k != "history"},
        "history": info["history"],
        "int8": m8, "float": mf, "baseline": mb,
        "int8_minus_float_eer_points": {
            str(k): 100 * (_ver(m8, k, "eer") - _ver(mf, k, "eer")) for k in (1, 3, 5, 10)},
        "tflite_ops": tflite_ops(tfl),
        "tflite_bytes": tfl.stat().st_size,
    }
    plots_scores = {"seed_int8": s8, "seed_baseline": sb, "seed_float": seed_res["float"][1]}

    # -- 2. cross-validation ------------------------------------------------------------
    fold_sets: dict[str, list] = {}

    def cross_validate(with_mit: bool, tag: str, override: dict | None = None, full: bool = True) -> dict:
        """Train and evaluate the folds; keep every beat's int8 embedding by each fold model."""
        from .recognition import Fold

        rng = np.random.default_rng(a.seed)
        folds = np.array_split(rng.permutation(ecg_persons), a.folds)
        fold_sets[tag] = []
        per: dict[str, list] = {"int8": [], "float": [], "baseline": []}
        cd_scores: dict[str, dict] = {"int8": {}, "baseline": {}, "float": {}}
        secs = []
        for i, fp in enumerate(folds):
            fheld = np.isin(bs.person, fp)
            tm = bs.is_ecgid & ~fheld | mit_mask(with_mit)
            ftfl = out / "cv" / f"{tag}-fold{i}.tflite"
            ftfl.parent.mkdir(exist_ok=True)
            fm, finfo = trainer.fit(tm, a.cv_epochs, f"{tag} fold {i + 1}/{a.folds}", ftfl, override)
            secs.append(finfo["total_seconds"])
            frt = LiteRTEmbedder(ftfl, eps_mv=trainer.eps, num_threads=a.threads)
            fold_sets[tag].append(Fold(tuple(int(p) for p in fp), frt.embed(bs.windows)))
            if not full:
                keras.backend.clear_session()
                continue
            res = trainer.evaluate(fm, ftfl, fheld, seed=i)
            for name, (m, s) in res.items():
                m["persons"] = [int(p) for p in sorted(fp)]
                per[name].append(m)
                for k, (g, imp) in s["crossday"].items():
                    cg, ci = cd_scores[name].get(k, (np.empty(0), np.empty(0)))
                    cd_scores[name][k] = (np.concatenate([cg, g]), np.concatenate([ci, imp]))
                if name == "int8" and with_mit == (not a.no_mitdb):
                    plots_scores.setdefault("cv_int8", []).append(s["verification"])
                if name == "baseline" and with_mit == (not a.no_mitdb):
                    plots_scores.setdefault("cv_baseline", []).append(s["verification"])
            keras.backend.clear_session()
        from .protocols import summarise

        summary: dict = {"folds": [[int(p) for p in sorted(f)] for f in folds], "epochs": a.cv_epochs,
                         "mitdb": with_mit, "train_seconds": secs}
        if not full:
            return summary
        for name, ms in per.items():
            agg: dict = {}
            for k in ("1", "3", "5", "10"):
                vals = [m["verification"].get(k) for m in ms]
                if any(v is None for v in vals):
                    continue
                agg[k] = {"eer": mean_sd([v["eer"] for v in vals]),
                          "tar_at_far_0.001": mean_sd([v["tar_at_far_0.001"] for v in vals])}
            summary[name] = {"verification": agg, "crossday_pooled": summarise(cd_scores[name]),
                             "crossday_persons": sorted({p for m in ms for p in m["crossday"]["persons"]}),
                             "per_fold": ms}
        summary["int8_minus_float_eer_points"] = {
            k: 100 * (summary["int8"]["verification"][k]["eer"]["mean"]
                      - summary["float"]["verification"][k]["eer"]["mean"])
            for k in summary["int8"]["verification"]}
        return summary

    if a.folds >= 2:
        t0 = time.monotonic()
        report["cv"] = cross_validate(not a.no_mitdb, "cv")
        report["timings_s"]["cv"] = time.monotonic() - t0
    from .recognition import evaluate_folds, thresholds_by_k

    if a.folds < 2:
        raise SystemExit("the card's thresholds come from cross-validated held-out persons: need --folds >= 2")
    t0 = time.monotonic()
    rec, rec_scores = evaluate_folds(bs, fold_sets["cv"], shipped="weighted")
    report["recognition"] = rec
    report["timings_s"]["recognition"] = time.monotonic() - t0
    ablate = [v for v in a.ablate.split(",") if v] if not a.no_ablation else []
    for name in ablate:
        if name not in ABLATIONS:
            raise SystemExit(f"unknown ablation {name!r} (one of {', '.join(ABLATIONS)})")
    if not a.no_ablation:
        t0 = time.monotonic()
        report["lodo"] = lodo(trainer, bs, held, a, out)
        report["timings_s"]["lodo"] = time.monotonic() - t0

    # -- 3. card, twin, report -------------------------------------------------------------
    # Thresholds per fused count and the probability map come from the pooled
    # cross-validated held-out persons (all 90 ECG-ID persons, each scored by
    # a fold model that never saw them), not from the 16 seed persons alone.
    from .protocols import Matcher, build_cohort, summarise, verification_protocol
    from .recognition import threshold_transfer

    digest = sha256_file(tfl)
    model_id = f"ecgstream-embed-{digest[:12]}"
    rt = LiteRTEmbedder(tfl, eps_mv=float(NORMALISATION["eps_mv"]))
    norm, why = choose_norm(a.score_norm, report)
    report["score_norm"] = {"chosen": norm, "why": why}
    log.info("score normalisation: %s (%s)", norm, why)
    variant = "weighted+znorm" if norm == "znorm" else "weighted"
    cv_scores = rec_scores[variant]["verification"]
    cv_thr = thresholds_by_k(cv_scores)
    prob = fit_probability(*cv_scores[FUSED_K])
    score_block: dict = {"norm": norm, "template": "quality-weighted unit centroid per enrolment sitting; "
                                                   "a beat scores against its best sitting"}
    cohort = None
    (out / "cohort.npz").unlink(missing_ok=True)
    if norm == "znorm":
        # The shipped cohort: the shipped model's embeddings of its own ECG-ID
        # training persons (never a held-out person, never a user).
        cohort = build_cohort(bs, rt.embed(bs.windows), train_mask & bs.is_ecgid, model_id)
        cohort.save(out / "cohort.npz")
        score_block["cohort"] = {
            "file": "cohort.npz", "sha256": sha256_file(out / "cohort.npz"), "id": cohort.id, "n": len(cohort),
            "made_from": "unit centroid of each ECG-ID record of the model's training persons (int8 LiteRT)"}
    hb_seed = bs.subset(held)
    seed_scores = verification_protocol(hb_seed, rt.embed(hb_seed.windows), (1, 3, 5, 10),
                                        Matcher(norm=norm, cohort=cohort, weighted=True))
    seed_at_cv = threshold_transfer(seed_scores, cv_thr)
    report["seed"]["shipped_matcher"] = summarise(seed_scores)
    report["seed"]["at_card_thresholds"] = seed_at_cv
    card = {
        "format_version": CARD_FORMAT_VERSION,
        "model_id": model_id,
        "description": "int8 LiteRT beat-embedding network (1-D CNN, ArcFace-trained), "
                       "one branch of the ECG twin network",
        "model_file": "model.tflite",
        "sha256": digest,
        "dsp": asdict(dsp),
        "dsp_fingerprint": {"sha256": dsp_fp, "over": "every beat ecgstream.dsp cuts from "
                            "data/ecgid-excerpt: r_sample, flags, window rounded to 0.001 mV"},
        "dsp_source_sha256": dsp_src,
        "input": {
            "fs_hz": dsp.fs_hz, "window_len": dsp.window_len,
            "window_before_s": dsp.window_before_s, "window_after_s": dsp.window_after_s,
            "unit": "mV (Beat.window: causal band-pass, not normalised)",
            "normalisation": NORMALISATION,
        },
        "embedding": {"dim": rt.embedding_dim, "l2_normalised": True, "quantization": rt.quantization(),
                      "params": info["params"]},
        "thresholds": {**card_thresholds_from(cv_thr),
                       "calibrated_on": f"{a.folds}-fold cross-validation over {ecg_persons.size} ECG-ID persons: "
                                        "each scored only by the fold model that never saw them (fold models "
                                        "trained exactly as this one); enrol on the first record "
                                        "(quality-weighted centroid), probe with the others; LiteRT int8, XNNPACK",
                       "seed_check": seed_at_cv},
        "score": score_block,
        "probability": prob,
        "data": {
            "ecgid": "PhysioNet ecgiddb 1.0.0 (Lugovaya 2005), channel 0 (raw lead I), 500 Hz",
            "mitdb": None if a.no_mitdb else "PhysioNet mitdb 1.0.0, channel 0, 360 Hz, "
                                             f"{base.mitdb_cap} beats per person per epoch",
            "beats": "good beats (no quality flags) of ecgstream.dsp.extract_beats",
            "train_beats": int(train_mask.sum()),
        },
        "split": {"protocol": "seed", "heldout_persons": list(heldout),
                  "train_persons": report["seed"]["train_persons"],
                  "cv": {"folds": a.folds, "seed": a.seed} if a.folds >= 2 else None},
        "metrics": card_metrics(report),
        "training": {
            "command": "python -m train " + shlex.join(sys.argv[1:]),
            "commit": commit,
            "seconds": round(time.monotonic() - t_start, 1),
            "seeds": {"train": a.seed, "folds": a.seed, "sampling": 0},
            "config": info["config"],
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, tensorflow {tf.__version__}",
        },
    }
    ModelCard(card)  # validate
    (out / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    save_twin(model, dsp.window_len, float(NORMALISATION["eps_mv"]), prob, out / "twin")
    report["card"] = {"model_id": card["model_id"], "thresholds": card["thresholds"], "probability": prob}
    report["timings_s"]["total"] = time.monotonic() - t_start
    from .report import write_report

    write_report(report, plots_scores, out)
    if a.export:
        install(out)
    log.info("model, card and report written (%.0f s): %s", report["timings_s"]["total"], out)
    if ablate:
        # The ablation runs last, after the model and its card are written: it
        # only adds rows to the report (the shipped model does not depend on it).
        t0 = time.monotonic()
        abl: dict = {}
        for name in ablate:
            what, over = ABLATIONS[name]
            with_mit = (not a.no_mitdb) != (name == "mitdb")
            cross_validate(with_mit, f"abl-{name}", over, full=False)
            r_abl, _ = evaluate_folds(bs, fold_sets[f"abl-{name}"], shipped="weighted", variants=("weighted",))
            abl[name] = {"what": what, "override": over, "mitdb": with_mit,
                         "figures": r_abl["variants"]["weighted"]}
            report["ablation"] = abl
            report["timings_s"]["ablation"] = time.monotonic() - t0
            report["timings_s"]["total"] = time.monotonic() - t_start
            write_report(report, plots_scores, out)  # after each row: a stopped run keeps what it measured
            if a.export:
                install_report(out)
    log.info("done in %.0f s: %s", time.monotonic() - t_start, out)
    return report


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    a = parse_args(argv)
    run(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
