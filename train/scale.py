"""``python -m train.scale``: the embedding learned from thousands of people (PTB-XL).

One command, fixed seeds, runs on this 2-core CPU (checkpointed every epoch:
rerun the same command with the same ``--out`` to resume a stopped run).

1. PTB-XL beats by the daemon's DSP (:mod:`train.ptbxl`, cached), MIT-BIH
   and ECG-ID beats (:mod:`train.data`, cached).
2. Train on every PTB-XL patient except the held-out fold's (patient-
   disjoint folds of the multi-ECG patients, :func:`train.ptbxl.patient_folds`)
   plus MIT-BIH's 47 persons (``--no-mitdb``: without). **ECG-ID is never
   trained on**: all 90 of its persons are unseen, another device and
   population, so every ECG-ID figure is a leave-one-dataset-out figure.
   Each beat is shown through a random lead view (:mod:`train.views`).
3. Convert to int8 LiteRT (calibrated on training beats) and evaluate the
   int8 model with :mod:`train.scale_eval` (PTB-XL held-out fold, ECG-ID,
   MIT-BIH unless it was trained on, thresholds transferred across sets).

Output in ``--out``: ``model.tflite``, ``embedding.keras``, ``cohort.npz``,
``eval.json``, ``train.json``, ``ckpt/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from ecgstream.dsp import DspConfig
from ecgstream.pipeline.scores import Cohort, CohortError, make_template
from edge.preprocess import NORMALISATION, normalise_beats
from edge.runtime import LiteRTEmbedder

from .data import BeatSet, build_beatset
from .export import to_tflite_int8
from .model import TrainConfig, keras, tf, train_embedding
from .protocols import Matcher
from .ptbxl import PtbxlBeats, build_ptbxl, patient_folds
from .scale_eval import evaluate_embedding
from .views import ViewConfig, Views

log = logging.getLogger("train.scale")
REPO = Path(__file__).resolve().parents[1]
#: MIT-BIH identities are shifted past every PTB-XL patient id.
MIT_OFFSET = 1_000_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="run folder (resumes a stopped run in it)")
    p.add_argument("--data", help="data directory (default ../shared/data or $ECGSTREAM_DATA)")
    p.add_argument("--fold", type=int, default=0, help="held-out fold of the multi-ECG patients (default 0)")
    p.add_argument("--folds", type=int, default=5, help="number of patient-disjoint folds (default 5)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--width", type=int, default=32, help="channels of the first convolution (default 32)")
    p.add_argument("--depth", type=int, default=1, help="convolutions per stage (default 1)")
    p.add_argument("--dim", type=int, default=128, help="embedding dimension (default 128)")
    p.add_argument("--margin", type=float, default=0.2)
    p.add_argument("--sampled", type=int, default=4096,
                   help="class centres scored per step (partial FC; 0: all; default 4096)")
    p.add_argument("--margin-warmup", type=int, default=2, help="epochs over which the margin rises from 0 (default 2)")
    p.add_argument("--mix-p", type=float, default=0.5, help="probability of a mixed frontal lead view")
    p.add_argument("--mix-deg", type=float, default=40.0, help="largest rotation from lead I (degrees)")
    p.add_argument("--chest-p", type=float, default=0.25, help="probability of a chest-lead view")
    p.add_argument("--no-mitdb", action="store_true", help="train without MIT-BIH")
    p.add_argument("--limit", type=int, help="only the first N PTB-XL ECGs (smoke tests)")
    p.add_argument("--ecgid", help="ECG-ID folder to evaluate on instead (e.g. data/ecgid-excerpt)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-only", action="store_true", help="evaluate the run's model.tflite again")
    p.add_argument("--export", action="store_true",
                   help="write the card (train/scale_export.py) and install model, card, cohort and float "
                        "reference into edge/")
    p.add_argument("--lodo-run", help="with --export: a run trained without MIT-BIH whose eval.json checks the "
                                      "card's calibration rule leave-one-dataset-out (e.g. runs/abl-nomitdb)")
    return p.parse_args(argv)


def load_sets(a: argparse.Namespace, dsp: DspConfig) -> tuple[PtbxlBeats, BeatSet]:
    cache = REPO / "runs" / "cache"
    pb = build_ptbxl(dsp, a.data, cache_dir=cache, limit=a.limit)
    other = build_beatset(dsp, mitdb=not (a.no_mitdb and a.ecgid), data_root=a.data, cache_dir=cache,
                          ecgid_root=a.ecgid)
    return pb, other


def cohort_from(pb: PtbxlBeats, emb: np.ndarray, model_id: str, n: int = 2000, seed: int = 0) -> Cohort:
    """An impostor cohort: one unit centroid per ECG of ``n`` random training patients."""
    rng = np.random.default_rng(seed)
    pats = rng.choice(np.unique(pb.patient), min(n, np.unique(pb.patient).size), replace=False)
    vecs = []
    sel = np.isin(pb.patient, pats)
    idx = np.flatnonzero(sel)
    keys = pb.ecg_id[idx]
    for e in np.unique(keys):
        rows = idx[keys == e]
        if rows.size >= 4:
            vecs.append(make_template(emb[rows]))
    return Cohort(np.stack(vecs), model_id)


def run(a: argparse.Namespace) -> dict:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dsp = DspConfig()
    eps = float(NORMALISATION["eps_mv"])
    t0 = time.monotonic()
    from .run import git_commit

    commit = git_commit()  # the code that trains, as of the start
    pb, other = load_sets(a, dsp)
    folds = patient_folds(pb, a.folds, a.seed)
    held_p = folds[a.fold]
    held = np.isin(pb.patient, held_p)
    log.info("PTB-XL: %d beats, %d patients; fold %d holds out %d patients (%d beats)", len(pb),
             np.unique(pb.patient).size, a.fold, held_p.size, int(held.sum()))
    tr = pb.subset(~held)
    mit = other.subset(~other.is_ecgid)
    ecgid = other.subset(other.is_ecgid)
    leads = tr.leads
    person = tr.patient
    capped = np.zeros(len(tr), bool)
    if not a.no_mitdb:
        ml = np.full((len(mit), leads.shape[1], leads.shape[2]), np.nan, np.float32)
        ml[:, 0] = mit.windows
        leads = np.concatenate([leads, ml])
        person = np.concatenate([person, MIT_OFFSET + mit.person])
        capped = np.concatenate([capped, np.ones(len(mit), bool)])
    vcfg = ViewConfig(mix_p=a.mix_p, mix_deg=a.mix_deg, chest_p=a.chest_p)
    views = Views(leads, vcfg, eps)
    cfg = TrainConfig(embedding_dim=a.dim, width=a.width, depth=a.depth, epochs=a.epochs, batch_size=a.batch,
                      lr=a.lr, margin=a.margin, margin_warmup=a.margin_warmup,
                      sampled_classes=a.sampled, seed=a.seed, threads=a.threads)
    cfg.aug["r_index"] = dsp.n_before
    tfl = out / "model.tflite"
    info: dict = {}
    if not a.eval_only:
        x0 = normalise_beats(leads[:, 0], eps).astype(np.float32)
        model, info = train_embedding(x0, person, cfg, capped=capped, label=out.name, views=views,
                                      checkpoint=str(out / "ckpt"))
        model.save(out / "embedding.keras")
        rng = np.random.default_rng(a.seed)
        rep = views(rng.choice(len(tr), min(2000, len(tr)), replace=False), rng)
        to_tflite_int8(model, rep, tfl)
        keras.backend.clear_session()
        (out / "train.json").write_text(json.dumps({
            "command": "python -m train.scale " + shlex.join(sys.argv[1:]),
            "config": cfg.to_dict(), "views": vcfg.to_dict(), "mitdb": not a.no_mitdb,
            "fold": a.fold, "folds": a.folds, "heldout_patients": held_p.tolist(),
            "train_patients": int(np.unique(tr.patient).size), "train_beats": int(len(person)),
            "params": info.get("params"), "history": info.get("history"),
            "seconds": time.monotonic() - t0, "tflite_bytes": tfl.stat().st_size,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, tensorflow {tf.__version__}",
            "commit": commit,
        }, indent=1) + "\n")
    rt = LiteRTEmbedder(tfl, eps_mv=eps, num_threads=a.threads)
    # MIT-BIH figures only for a model that never trained on it (a leave-one-dataset-out figure).
    mit_eval = mit if a.no_mitdb and len(mit) else None
    res = evaluate_run(rt.embed, tr, pb.subset(held), ecgid, mit_eval, f"run:{out.name}")
    res["tflite_bytes"] = tfl.stat().st_size
    (out / "eval.json").write_text(json.dumps(res, indent=1) + "\n")
    if a.export:
        from .scale_export import export

        card = export(out, install=True, data=a.data, lodo_run=Path(a.lodo_run) if a.lodo_run else None)
        log.info("installed %s into edge/", card["model_id"])
    log.info("done in %.0f s: %s", time.monotonic() - t0, out)
    return res


def evaluate_run(embed, train_ptb: PtbxlBeats | None, held: PtbxlBeats, ecgid: BeatSet, mit: BeatSet | None,
                 model_id: str) -> dict:
    """Raw and cohort-normalised figures for one embedding."""
    matchers = {"weighted": Matcher(weighted=True)}
    if train_ptb is not None:
        rng = np.random.default_rng(0)
        allp = np.unique(train_ptb.patient)
        pats = rng.choice(allp, min(2000, allp.size), replace=False)
        sub = train_ptb.subset(np.isin(train_ptb.patient, pats))
        try:
            coh = cohort_from(sub, embed(np.ascontiguousarray(sub.leads[:, 0])), model_id)
            matchers["weighted+znorm"] = Matcher("znorm", coh, True)
        except CohortError as exc:  # too few training ECGs (the excerpt): raw scores only
            log.warning("no cohort: %s", exc)
    res, _ = evaluate_embedding(embed, held, ecgid, mit, matchers)
    return res


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    a = parse_args(argv)
    run(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
