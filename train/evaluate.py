"""``python -m train.evaluate``: re-measure the shipped model, and a training run's folds.

Without TensorFlow. Always:

1. loads ``edge/model.tflite`` through :class:`edge.EmbeddingModel` (LiteRT,
   hash, card and cohort checked), cuts the ECG-ID beats with the card's DSP
   settings, re-runs the seed protocol on the card's held-out persons and the
   check of the card's (cross-validated) thresholds on them, and compares
   every figure with the card;
2. the daemon-path accuracy (:mod:`train.daemon_path`): enrol as ``ecgstream
   enroll`` does, replay genuine and impostor records through the daemon, at
   both card operating points (``--no-daemon`` skips it).

With ``--run DIR`` (a ``python -m train`` run folder, which keeps its fold
models in ``DIR/cv`` and its leave-one-dataset-out models beside them), also
re-embeds every beat with each fold model and prints every cross-validated
figure (5-fold verification, cross-day with and without adaptation,
rank-1, enrolment length, the card thresholds) beside the training-free
correlation baseline scored the same way, and the leave-one-dataset-out
check. Exit status 0 when every re-measured figure matches the card.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from ecgstream.dsp import DspConfig
from edge import EmbeddingModel, LiteRTEmbedder

from .data import BeatSet, build_beatset
from .evaluation import baseline_embed, evaluate_heldout, seed_figures
from .protocols import Matcher, summarise, verification_protocol

log = logging.getLogger("train.evaluate")
REPO = Path(__file__).resolve().parents[1]


def _flatten(d: object, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, int | float) and not isinstance(d, bool):
        out[prefix] = float(d)
    return out


def shipped_matcher(model: EmbeddingModel) -> Matcher:
    """The matcher the daemon uses with ``model`` (its card's normalisation and cohort)."""
    return Matcher(norm=model.score_norm, cohort=model.cohort, weighted=True)


def reevaluate(model: EmbeddingModel, bs: BeatSet) -> dict:
    """Recompute the card's seed metrics and the seed check of its thresholds."""
    from .recognition import threshold_transfer

    card = model.card
    held = np.isin(bs.person, card["split"]["heldout_persons"])
    hb = bs.subset(held)
    emb = model.embed(hb.windows)
    m8, _ = evaluate_heldout(hb, emb, seed=0)
    mb, _ = evaluate_heldout(hb, baseline_embed(hb.windows, card.normalisation["eps_mv"]), one_shot=False, seed=0)
    th = card.thresholds
    by_k = {"1": th["single"], **th.get("fused_by_beats", {})}
    by_k = {k: {op: v[op] for op in ("eer", "far_0.001")} for k, v in by_k.items()}
    seed_scores = verification_protocol(hb, emb, (1, 3, 5, 10), shipped_matcher(model))
    return {
        "metrics": {
            "seed": {
                **seed_figures(m8),
                "baseline_verification_eer": {k: v["eer"] for k, v in mb["verification"].items()},
            }
        },
        "thresholds": {"seed_check": threshold_transfer(seed_scores, by_k)},
        "_seed_shipped_matcher": summarise(seed_scores),
    }


def compare(card: dict, got: dict, tol: float = 1e-6) -> list[tuple[str, float | None, float, bool]]:
    """Rows (key, card value, re-measured value, match) for every re-measured figure."""
    got = {k: v for k, v in got.items() if not k.startswith("_")}
    want = _flatten({k: card.get(k) for k in got})
    rows = []
    for key, val in sorted(_flatten(got).items()):
        c = want.get(key)
        ok = c is not None and abs(c - val) <= tol * max(1.0, abs(c))
        rows.append((key, c, val, ok))
    return rows


def run_folds(run: Path, bs: BeatSet, eps_mv: float, threads: int = 2) -> dict:
    """Every cross-validated figure of a training run, re-measured from its saved models."""
    from .recognition import Fold, evaluate_folds, lodo_figures, thresholds_by_k

    rep = json.loads((run / "report.json").read_text())
    folds = rep["cv"]["folds"]
    fl = []
    for i, persons in enumerate(folds):
        rt = LiteRTEmbedder(run / "cv" / f"cv-fold{i}.tflite", eps_mv=eps_mv, num_threads=threads)
        fl.append(Fold(tuple(persons), rt.embed(bs.windows)))
    figures, scores = evaluate_folds(bs, fl)
    base = baseline_embed(bs.windows, eps_mv)
    bfig, _ = evaluate_folds(bs, [Fold(f.persons, base) for f in fl], variants=("weighted",))
    out = {"folds": folds, "figures": figures, "baseline": bfig["variants"]["weighted"],
           "thresholds": {v: thresholds_by_k(s["verification"]) for v, s in scores.items()}}
    lo = [run / "lodo-ecgid.tflite", run / "lodo-mitdb.tflite"]
    if all(p.is_file() for p in lo) and (~bs.is_ecgid).any():
        held = np.isin(bs.person, rep["seed"]["heldout_persons"])
        e1, e2 = (LiteRTEmbedder(p, eps_mv=eps_mv, num_threads=threads).embed(bs.windows) for p in lo)
        out["lodo"] = lodo_figures(bs, held, e1, e2)
    return out


def _pct(v: float | None, nd: int = 2) -> str:
    return "n/a" if v is None else f"{100 * v:.{nd}f}%"


def print_folds(res: dict) -> None:
    f = res["figures"]

    def row(name: str, v: dict) -> str:
        fe, ft, vp = v["verification_fold_eer"], v["verification_fold_tar"], v["verification_pooled"]
        cd, cda = v["crossday"].get("10", {}), v["crossday_adapted"].get("10", {})
        return (f"  {name:32s} EER 1 {_pct(fe['1']['mean'])} 10 {_pct(fe['10']['mean'])} | "
                f"TAR@0.1% 10 {_pct(ft['10']['mean'], 1)} (pooled {_pct(vp['10']['tar_at_far_0.001'], 1)}) | "
                f"cross-day EER 10 {_pct(cd.get('eer'))}, adapted {_pct(cda.get('eer'))} | "
                f"rank-1 {_pct(v.get('rank1_10_beats'), 1)}")

    print(f"{len(res['folds'])}-fold cross-validation (fold mean; held-out persons only):")
    for name, v in f["variants"].items():
        print(row(name, v))
    print(row("baseline (correlation)", res["baseline"]))
    print("enrolment beats -> pooled EER 1 / 10 beats: " + ", ".join(
        f"{n}: {_pct(v['1']['eer'])} / {_pct(v['10']['eer'])}" for n, v in f["enrolment_beats"].items()))
    lo = res.get("lodo")
    if lo:
        for name in [n for n in ("weighted", "weighted+znorm") if n in lo["ecgid_to_mitdb"]]:
            v = lo["ecgid_to_mitdb"][name]
            t = v["transfer"]["10"]
            print(f"  LODO ECG-ID -> MIT-BIH, {name}: EER 10 {_pct(v['other']['10']['eer'])}; at the transferred "
                  f"FAR-0.1% threshold FAR {_pct(t['far_0.001']['far'])} FRR {_pct(t['far_0.001']['frr'])}; "
                  f"at EER threshold FAR {_pct(t['eer']['far'])}")
            w = lo["mitdb_to_ecgid"][name]["verification"]
            print(f"  LODO MIT-BIH -> ECG-ID, {name}: EER 1 {_pct(w['1']['eer'])} 10 {_pct(w['10']['eer'])}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model .tflite (default: the shipped edge/model.tflite)")
    p.add_argument("--data", help="data directory (default ../shared/data or $ECGSTREAM_DATA)")
    p.add_argument("--run", help="a `python -m train` run folder: re-measure its cross-validation and LODO")
    p.add_argument("--no-daemon", action="store_true", help="skip the daemon-path accuracy")
    p.add_argument("--json", help="also write everything measured to this JSON file")
    p.add_argument("--ptbxl", action="store_true",
                   help="issue 15's goal table: the shipped model, the previous one, the correlation baseline and "
                        "every --runs folder on the same PTB-XL fold, ECG-ID and MIT-BIH (train/scale_report.py)")
    p.add_argument("--runs", nargs="*", default=[], help="`python -m train.scale` run folders (ablation rows)")
    p.add_argument("--ptbxl-daemon", type=int, default=40, metavar="N",
                   help="with --ptbxl: held-out PTB-XL patients replayed through the daemon (default 40; 0: none)")
    p.add_argument("--rescore", action="store_true",
                   help="with --runs: re-embed each run's model instead of reading the figures its own run wrote")
    p.add_argument("--write-docs", action="store_true",
                   help="with --ptbxl: write docs/model/scale.md and scale.json")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    model = EmbeddingModel(a.model)
    card = model.card
    if a.ptbxl:
        return ptbxl_main(a, model, argv)
    bs = build_beatset(DspConfig(**card.dsp), mitdb=a.run is not None, data_root=a.data,
                       cache_dir=REPO / "runs" / "cache")
    got = reevaluate(model, bs)
    rows = compare(dict(card), got)
    bad = [r for r in rows if not r[3]]
    print(f"{model.model_id} (score {model.score_norm}): {len(rows) - len(bad)}/{len(rows)} figures of the card "
          "match a re-run")
    for key, c, v, ok in rows:
        cs = "missing" if c is None else f"{c:.6f}"
        print(f"  {'ok ' if ok else 'DIFF'} {key:55s} card {cs:>10s}  re-run {v:.6f}")
    from .data import dsp_fingerprint

    trained = (card.get("dsp_fingerprint") or {}).get("sha256")
    now = dsp_fingerprint(model.dsp_config())
    if trained != now:
        print("note: ecgstream.dsp now cuts different beats than those the model was trained on "
              f"(fingerprint {'unknown' if trained is None else trained[:12]} != {now[:12]}): "
              "figures will differ; retrain with `python -m train --export`")
    out: dict = {"model_id": model.model_id, "rows": rows, "got": got}
    if not a.no_daemon:
        from .daemon_path import daemon_path_accuracy

        dp = []
        for op, ad in (("far_0.001", True), ("far_0.001", False), ("eer", True)):
            r = daemon_path_accuracy(model, card["split"]["heldout_persons"], op, a.data, adaptation=ad)
            dp.append(r)
            print(f"daemon path, {op}{'' if ad else ', no adaptation'}: genuine authenticated "
                  f"{_pct(r['genuine_authenticated'], 1)} of {r['genuine_runs']} ({r['genuine_undecided']} undecided); "
                  f"impostor rejected {_pct(r['impostor_rejected'], 1)} of {r['impostor_runs']} "
                  f"({r['impostor_authenticated']} authenticated, {r['impostor_undecided']} undecided); "
                  f"enrolled {r['enrolled']}/{r['persons']}"
                  + (f" (failed: {', '.join(f'{k}: {v}' for k, v in r['enrolment_failed'].items())})"
                     if r["enrolment_failed"] else ""))
            wrong = [f"{x['subject']} <- {x['record']}" for x in r["runs"] if not x["genuine"] and x["final"] == "authenticated"]
            if wrong:
                print(f"  impostor runs ending authenticated (template <- probe): {', '.join(wrong)}")
        out["daemon_path"] = dp
        from .daemon_path import enrolment_success

        for label, persons in (("seed held-out", card["split"]["heldout_persons"]), ("all ECG-ID", None)):
            es = enrolment_success(model, a.data, persons)
            out.setdefault("enrolment", {})[label] = es
            print(f"enrolment from one 20 s record ({label}): {es['enrolled']}/{es['records']} records enrol; "
                  f"{es['enrolled_of_those_with_min_beats']}/{es['with_min_beats']} of those with >= "
                  f"{es['min_beats']} good beats")
    if a.run:
        res = run_folds(Path(a.run), bs, float(card.normalisation["eps_mv"]))
        print_folds(res)
        out["run"] = res
    if a.json:
        from .report import _jsonable

        Path(a.json).write_text(json.dumps(_jsonable(out), indent=2))
    return 0 if not bad else 1


def ptbxl_main(a: argparse.Namespace, model: EmbeddingModel, argv: list[str] | None = None) -> int:
    """``--ptbxl``: every figure of issue 15's goal table, the ablation rows, the daemon path."""
    from .scale_report import enrolment_tradeoff, render, report

    card = model.card
    split = card.get("split", {})
    fold, folds = int(split.get("fold", 0)), int(split.get("folds", 5))
    shipped = Path(a.model) if a.model else REPO / "edge" / "model.tflite"
    out = report(a.data, [Path(r) for r in a.runs], fold=fold, folds=folds, shipped=shipped, rescore=a.rescore)
    md = render(out)
    # Enrolment length and the daemon path, for the shipped model with its own scoring.
    from ecgstream.dsp import DspConfig

    from .ptbxl import build_ptbxl, patient_folds

    pb = build_ptbxl(DspConfig(), a.data, cache_dir=REPO / "runs" / "cache")
    held_p = patient_folds(pb, folds, int(card.get("training", {}).get("seeds", {}).get("train", 1)))[fold]
    other = build_beatset(DspConfig(), mitdb=False, data_root=a.data, cache_dir=REPO / "runs" / "cache")
    kw = {"norm": model.score_norm, "cohort": model.cohort, "weighted": True}
    out["enrolment"] = enrolment_tradeoff(model.embed, pb.subset(np.isin(pb.patient, held_p)),
                                          other.subset(other.is_ecgid), kw)
    md += "\n### enrolment length (shipped model, its scoring): EER in %\n\n| enrolment beats | PTB-XL EER all | " \
          "PTB-XL TAR@FAR0.1% | ECG-ID EER 1 | ECG-ID EER 10 |\n|---|---|---|---|---|\n"
    for n, v in out["enrolment"].items():
        md += (f"| {n} | {_pct(v['ptbxl_eer_all'])} | {_pct(v['ptbxl_tar_all'], 1)} | {_pct(v['ecgid_eer_1'])} | "
               f"{_pct(v['ecgid_eer_10'])} |\n")
    if a.ptbxl_daemon and not a.no_daemon:
        from .daemon_path import daemon_path_accuracy, ptbxl_daemon_path

        dp = {"ptbxl": ptbxl_daemon_path(model, held_p[: a.ptbxl_daemon].tolist(), "far_0.001", a.data),
              "ecgid_seed": daemon_path_accuracy(model, split.get("heldout_persons"), "far_0.001", a.data)}
        out["daemon_path"] = dp
        md += "\n### daemon path (enrol as `ecgstream enroll`, replay through `Daemon`, default point far_0.001)\n\n"
        md += ("| set | enrolled | genuine runs | genuine authenticated (final) | impostor runs | impostors "
               "authenticated (final / ever) | first decision median / p90 s |\n|---|---|---|---|---|---|---|\n")
        for name, r in dp.items():
            md += (f"| {name} | {r['enrolled']}/{r['persons']} | {r['genuine_runs']} | "
                   f"{_pct(r['genuine_authenticated'], 1)} | {r['impostor_runs']} | {r['impostor_authenticated']} / "
                   f"{r['impostor_ever_authenticated']} | {r['time_to_first_decision_s_median']} / "
                   f"{r['time_to_first_decision_s_p90']} |\n")
    print(md)
    if a.write_docs:
        from .report import _jsonable

        (REPO / "docs" / "model" / "scale.json").write_text(json.dumps(_jsonable(out), indent=1) + "\n")
        (REPO / "docs" / "model" / "scale.md").write_text(
            f"# {model.model_id}: issue 15 figures\n\nMade by `python -m train.evaluate "
            f"{' '.join(argv if argv is not None else sys.argv[1:])}`.\n\n" + md)
    if a.json:
        from .report import _jsonable

        Path(a.json).write_text(json.dumps(_jsonable(out), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
