"""What a ``python -m train`` run ships: the score normalisation, the card's metrics block, installation.

Split out of :mod:`train.run`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from .evaluation import seed_figures

log = logging.getLogger("train")

REPO = Path(__file__).resolve().parents[1]
EDGE = REPO / "edge"
DOCS = REPO / "docs" / "model"


def pick_norm(far: dict[str, float], tar: dict[str, float]) -> str:
    """``weighted`` or ``weighted+znorm``: the one whose transferred FAR-0.1 % threshold holds
    (FAR <= 0.3 % on the other set); if both or neither do, the one with the higher TAR."""
    ok = {v: far[v] <= 0.003 for v in far}
    if ok["weighted"] != ok["weighted+znorm"]:
        return "weighted+znorm" if ok["weighted+znorm"] else "weighted"
    return "weighted+znorm" if tar["weighted+znorm"] > tar["weighted"] else "weighted"


def choose_norm(requested: str, report: dict) -> tuple[str, str]:
    """The score normalisation to ship, and why.

    ``auto`` decides by calibration, the one job normalisation has: on the
    leave-one-dataset-out check (a model trained on ECG-ID, thresholds
    calibrated on its held-out ECG-ID persons, applied to MIT-BIH identities)
    the variant whose 10-beat FAR-0.1 % threshold keeps FAR at or below 0.3 %
    wins; if both or neither do, the one with the higher cross-validated
    TAR at FAR 0.1 % (10 beats) wins.
    """
    if requested != "auto":
        return requested, "requested on the command line"
    lo = (report.get("lodo") or {}).get("ecgid_to_mitdb")
    rec = report["recognition"]["variants"]
    if not lo:
        return "none", "no leave-one-dataset-out check in this run (--no-ablation)"
    if "weighted+znorm" not in lo or "weighted+znorm" not in rec:
        return "none", "no cohort could be made in this run (too few training recordings)"
    far = {v: lo[v]["transfer"]["10"]["far_0.001"]["far"] for v in ("weighted", "weighted+znorm")}
    tar = {v: rec[v]["verification_pooled"]["10"]["tar_at_far_0.001"] for v in ("weighted", "weighted+znorm")}
    pick = pick_norm(far, tar)
    why = (f"MIT-BIH FAR at the transferred 10-beat FAR-0.1% threshold: raw {100 * far['weighted']:.2f}%, "
           f"znorm {100 * far['weighted+znorm']:.2f}%; CV TAR@FAR0.1% 10 beats: raw "
           f"{100 * tar['weighted']:.1f}%, znorm {100 * tar['weighted+znorm']:.1f}%")
    return ("znorm" if pick == "weighted+znorm" else "none"), why


def card_metrics(report: dict) -> dict:
    """The metrics block of the card (all int8 LiteRT unless named otherwise)."""
    s = report["seed"]
    m8 = s["int8"]
    out: dict = {
        "runtime": "LiteRT int8 (ai-edge-litert, XNNPACK), 1 thread",
        "seed": {
            **seed_figures(m8),
            "float_verification_eer": {k: v["eer"] for k, v in s["float"]["verification"].items()},
            "baseline_verification_eer": {k: v["eer"] for k, v in s["baseline"]["verification"].items()},
        },
    }
    if "cv" in report:
        cv = report["cv"]
        out["cv"] = {"folds": len(cv["folds"]), "epochs": cv["epochs"],
                     "verification": {k: {"eer_mean": v["eer"]["mean"], "eer_sd": v["eer"]["sd"],
                                          "tar_at_far_0.001_mean": v["tar_at_far_0.001"]["mean"],
                                          "tar_at_far_0.001_sd": v["tar_at_far_0.001"]["sd"]}
                                      for k, v in cv["int8"]["verification"].items()},
                     "crossday_pooled": {k: {"eer": v["eer"], "tar_at_far_0.001": v["tar_at_far_0.001"]}
                                         for k, v in cv["int8"]["crossday_pooled"].items()}}
    return out


def copy_model_files(out: Path) -> Path:
    """Copy model, card, cohort (or remove a stale one) and the float Keras model into edge/.

    Returns edge/float, where the caller writes the twin.
    """
    shutil.copy2(out / "model.tflite", EDGE / "model.tflite")
    shutil.copy2(out / "model.json", EDGE / "model.json")
    if (out / "cohort.npz").is_file():
        shutil.copy2(out / "cohort.npz", EDGE / "cohort.npz")
    else:
        (EDGE / "cohort.npz").unlink(missing_ok=True)
    fl = EDGE / "float"
    fl.mkdir(exist_ok=True)
    shutil.copy2(out / "embedding.keras", fl / "embedding.keras")
    return fl


def install(out: Path) -> None:
    """Copy model, card and float reference into edge/, the report into docs/model/."""
    fl = copy_model_files(out)
    if (fl / "twin").exists():
        shutil.rmtree(fl / "twin")
    shutil.copytree(out / "twin", fl / "twin")
    install_report(out)
    log.info("installed %s into %s and the report into %s", out.name, EDGE, DOCS)


def install_report(out: Path) -> None:
    """Copy the report (markdown, JSON, plots) into docs/model/."""
    DOCS.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():
        if f.suffix in {".png", ".md"} or f.name == "report.json":
            shutil.copy2(f, DOCS / f.name)
