"""``python -m train.evaluate``: re-run the evaluation of the shipped model.

Loads ``edge/model.tflite`` through :class:`edge.EmbeddingModel` (LiteRT,
the runtime that ships, after checking hash and card), cuts the ECG-ID beat
set with the card's DSP settings, re-runs the seed protocol on the card's
held-out persons, recomputes the thresholds and the probability map, and
compares every figure with the card. With TensorFlow available it also
re-measures the float reference (``edge/float/embedding.keras``) and the
float -> int8 EER change. Exit status 0 when everything matches.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from ecgstream.dsp import DspConfig
from edge import EmbeddingModel

from .data import build_beatset
from .evaluation import FUSED_K, baseline_embed, card_thresholds, evaluate_heldout, fit_probability

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


def reevaluate(model: EmbeddingModel, data: str | None = None, float_model: Path | None = None) -> dict:
    """Recompute the card's seed metrics, thresholds and probability for ``model``."""
    card = model.card
    bs = build_beatset(DspConfig(**card.dsp), mitdb=False, data_root=data, cache_dir=REPO / "runs" / "cache")
    held = np.isin(bs.person, card["split"]["heldout_persons"])
    hb = bs.subset(held)
    m8, s8 = evaluate_heldout(hb, model.embed(hb.windows), seed=0)
    mb, _ = evaluate_heldout(hb, baseline_embed(hb.windows, model.card.normalisation["eps_mv"]),
                             one_shot=False, seed=0)
    got = {
        "metrics": {
            "seed": {
                "verification": {k: {"eer": v["eer"], "tar_at_far_0.001": v["tar_at_far_0.001"]}
                                 for k, v in m8["verification"].items()},
                "crossday": {k: {"eer": v["eer"], "tar_at_far_0.001": v["tar_at_far_0.001"]}
                             for k, v in m8["crossday"].items() if k != "persons"},
                "pair_accuracy": m8.get("pairs", {}).get("accuracy"),
                "one_shot_accuracy": m8.get("one_shot", {}).get("accuracy"),
                "baseline_verification_eer": {k: v["eer"] for k, v in mb["verification"].items()},
            }
        },
        "thresholds": {k: v for k, v in card_thresholds(s8["verification"]).items() if k != "score"},
        "probability": {k: v for k, v in fit_probability(*s8["verification"][FUSED_K]).items()
                        if k in ("a", "b")},
    }
    if float_model is not None and float_model.is_file():
        try:
            from edge.preprocess import normalise_beats

            from .model import embed_float, keras

            fm = keras.models.load_model(float_model)
            mf, _ = evaluate_heldout(hb, embed_float(fm, normalise_beats(hb.windows)), one_shot=False)
            got["metrics"]["seed"]["float_verification_eer"] = {k: v["eer"] for k, v in mf["verification"].items()}
        except ImportError:
            log.warning("TensorFlow not installed: float reference not re-measured")
    return got


def compare(card: dict, got: dict, tol: float = 1e-6) -> list[tuple[str, float | None, float, bool]]:
    """Rows (key, card value, re-measured value, match) for every re-measured figure."""
    want = _flatten({k: card.get(k) for k in got})
    rows = []
    for key, val in sorted(_flatten(got).items()):
        c = want.get(key)
        ok = c is not None and abs(c - val) <= tol * max(1.0, abs(c)) * (1e3 if key.startswith("probability") else 1)
        rows.append((key, c, val, ok))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model .tflite (default: the shipped edge/model.tflite)")
    p.add_argument("--data", help="data directory (default ../shared/data or $ECGSTREAM_DATA)")
    p.add_argument("--json", help="also write the comparison to this JSON file")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    model = EmbeddingModel(a.model)
    float_model = model.model_path.parent / "float" / "embedding.keras"
    got = reevaluate(model, a.data, float_model)
    rows = compare(dict(model.card), got)
    bad = [r for r in rows if not r[3]]
    print(f"{model.model_id}: {len(rows) - len(bad)}/{len(rows)} figures of the card match a re-run")
    for key, c, v, ok in rows:
        cs = "missing" if c is None else f"{c:.6f}"
        print(f"  {'ok ' if ok else 'DIFF'} {key:55s} card {cs:>10s}  re-run {v:.6f}")
    from .data import dsp_fingerprint

    trained = (model.card.get("dsp_fingerprint") or {}).get("sha256")
    now = dsp_fingerprint(model.dsp_config())
    if trained != now:
        print("note: ecgstream.dsp now cuts different beats than those the model was trained on "
              f"(fingerprint {'unknown' if trained is None else trained[:12]} != {now[:12]}): "
              "figures will differ; retrain with `python -m train --export`")
    fe = got["metrics"]["seed"].get("float_verification_eer")
    if fe:
        ie = got["metrics"]["seed"]["verification"]
        print("float -> int8 EER change (points): "
              + ", ".join(f"{k} beats {100 * (ie[k]['eer'] - fe[k]):+.2f}" for k in fe))
    if a.json:
        Path(a.json).write_text(json.dumps({"model_id": model.model_id, "rows": rows, "got": got}, indent=2))
    return 0 if not bad else 1


if __name__ == "__main__":
    raise SystemExit(main())
