"""Training, conversion and evaluation of models on parts of one ECG-ID/MIT-BIH beat set (``python -m train``).

:class:`Trainer` fits the embedding on a mask of beats, converts it to int8
and evaluates it on held-out persons; :data:`ABLATIONS` are the training
changes the report measures one at a time; :func:`lodo` is the
leave-one-dataset-out pair of models. Split out of :mod:`train.run`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edge.preprocess import NORMALISATION, normalise_beats
from edge.runtime import LiteRTEmbedder

from .data import BeatSet
from .evaluation import baseline_embed, evaluate_heldout
from .export import to_tflite_int8
from .model import TrainConfig, embed_float, keras, train_embedding


def sessions(bs: BeatSet) -> np.ndarray:
    """Session of each beat: its ECG-ID record; for a long MIT-BIH record, its first or second half."""
    sess = bs.record.astype(np.int64) * 2
    for p in np.unique(bs.person[~bs.is_ecgid]):
        idx = np.flatnonzero(bs.person == p)
        sess[idx[idx.size // 2:]] += 1
    return sess


#: The ablation: each entry flips one training change relative to the shipped
#: configuration (TrainConfig defaults) and retrains every fold with it:
#: name -> (what the row changes, config override). Changes that were tried
#: and are off in the shipped model are here too, so the table shows why.
ABLATIONS: dict[str, tuple[str, dict]] = {
    "subcenters": ("3 ArcFace sub-centres per person instead of one centre", {"subcenters": 3}),
    "record_pairs": ("plus a cross-session contrastive term (each recording a domain), weight 0.5",
                     {"record_pairs": 0.5}),
    "session_aug": ("plus session augmentation (QT scaling 0.1, electrode mixing 0.3, P/QRS/T gain 0.15)",
                    {"aug": {"qt": 0.1, "mix": 0.3, "envelope": 0.15}}),
    "mitdb": ("without MIT-BIH persons as extra training identities", {}),
}


class Trainer:
    """Train, convert and evaluate models on parts of one beat set."""

    def __init__(self, bs: BeatSet, out: Path, base_cfg: TrainConfig, one_shot: bool = True) -> None:
        self.bs = bs
        self.out = out
        self.base = base_cfg
        self.x = normalise_beats(bs.windows, float(NORMALISATION["eps_mv"]))
        self.one_shot = one_shot
        self.eps = float(NORMALISATION["eps_mv"])

    def fit(self, train_mask: np.ndarray, epochs: int, label: str, tflite: Path, override: dict | None = None):
        over = dict(override or {})
        aug = {**self.base.aug, **over.pop("aug", {})}
        cfg = TrainConfig(**{**asdict(self.base), "epochs": epochs, "aug": aug, **over})
        bs = self.bs
        t0 = time.monotonic()
        model, info = train_embedding(self.x[train_mask], bs.person[train_mask], cfg,
                                      capped=~bs.is_ecgid[train_mask], label=label,
                                      session=sessions(bs)[train_mask])
        rng = np.random.default_rng(cfg.seed)
        idx = np.flatnonzero(train_mask)
        rep = self.x[rng.choice(idx, min(1000, idx.size), replace=False)]
        t1 = time.monotonic()
        to_tflite_int8(model, rep, tflite)
        info["convert_seconds"] = time.monotonic() - t1
        info["total_seconds"] = time.monotonic() - t0
        info["config"] = cfg.to_dict()
        return model, info

    def evaluate(self, model, tflite: Path, held: np.ndarray, seed: int) -> dict:
        hb = self.bs.subset(held)
        rt = LiteRTEmbedder(tflite, eps_mv=self.eps, num_threads=1)
        res = {}
        for name, emb in (
            ("int8", rt.embed(hb.windows)),
            ("float", embed_float(model, self.x[held])),
            ("baseline", baseline_embed(hb.windows, self.eps)),
        ):
            m, s = evaluate_heldout(hb, emb, one_shot=self.one_shot, seed=seed)
            res[name] = (m, s)
        return res


def lodo(trainer: Trainer, bs: BeatSet, held: np.ndarray, a: argparse.Namespace, out: Path) -> dict:
    """Leave-one-dataset-out: the nearest stand-in for persons on an unseen device.

    ECG-ID -> MIT-BIH: trained on the seed split's ECG-ID persons only,
    thresholds calibrated on the seed held-out persons (as a card is),
    then applied to MIT-BIH identities (:func:`train.recognition.mitdb_as_sessions`):
    EER, TAR and the FAR/FRR the transferred thresholds give there.
    MIT-BIH -> ECG-ID: trained on MIT-BIH only, every ECG-ID person probed.
    Both with raw and cohort-normalised scores (each cohort from that model's
    own training persons).
    """
    from .recognition import lodo_figures

    tm = bs.is_ecgid & ~held
    tfl = out / "lodo-ecgid.tflite"
    trainer.fit(tm, a.epochs, "lodo ECG-ID only", tfl)
    emb = LiteRTEmbedder(tfl, eps_mv=trainer.eps, num_threads=a.threads).embed(bs.windows)
    keras.backend.clear_session()
    tfl2 = out / "lodo-mitdb.tflite"
    trainer.fit(~bs.is_ecgid, a.epochs, "lodo MIT-BIH only", tfl2)
    emb2 = LiteRTEmbedder(tfl2, eps_mv=trainer.eps, num_threads=a.threads).embed(bs.windows)
    keras.backend.clear_session()
    return lodo_figures(bs, held, emb, emb2)
