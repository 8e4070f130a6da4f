"""Electrode variation as training views: the same beat seen through other leads.

A wearable is not a 12-lead cart: a finger device sees roughly lead I, a
chest strap a bipolar lead between two points of the chest, and every wearer
puts the electrodes a little elsewhere. PTB-XL keeps, for every beat, leads
I and II (so every frontal-plane lead) and for the multi-ECG patients the six
chest leads. Each time a beat is drawn for training it is shown through one
of these views, so that the embedding learns what stays the same about a
person across leads rather than the look of lead I:

- **frontal mixing** (``mix_p``, ``mix_deg``): the frontal lead at a random
  angle around lead I (:func:`train.ptbxl.frontal_lead`), i.e. a small
  rotation of the electrical axis as seen by a slightly misplaced electrode
  pair; gain is irrelevant after z-scoring.
- **chest views** (``chest_p``): a bipolar chest lead ``Vj - Vi`` (what a
  strap's two chest electrodes measure; both are against the same Wilson
  terminal, so the difference is exactly the bipolar lead between them) or a
  lateral unipolar lead (V4..V6).

All views are linear in the conditioned leads, so they are exactly what the
daemon's DSP would cut from that lead (see :mod:`train.ptbxl`). Beats
without those leads (ECG-ID, MIT-BIH) are always shown as recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.preprocess import normalise_beats

from .ptbxl import frontal_lead

#: Bipolar chest pairs (positive, negative) as indices into V1..V6 (0..5):
#: the more lateral electrode positive, at least two positions apart.
CHEST_PAIRS = tuple((j, i) for i in range(6) for j in range(i + 2, 6))
#: Unipolar lateral chest leads (V4, V5, V6).
CHEST_UNIPOLAR = (3, 4, 5)


@dataclass(frozen=True)
class ViewConfig:
    mix_p: float = 0.0
    mix_deg: float = 40.0
    chest_p: float = 0.0

    def to_dict(self) -> dict:
        return {"mix_p": self.mix_p, "mix_deg": self.mix_deg, "chest_p": self.chest_p}


class Views:
    """``views(idx, rng)``: normalised windows of beats ``idx``, each through a random view.

    Parameters
    ----------
    leads : ndarray (n, 8, L)
        I, II, V1..V6 windows in mV (NaN where a lead is absent).
    cfg : ViewConfig
    eps_mv : float
        The card's normalisation floor (``edge.preprocess``).
    """

    def __init__(self, leads: np.ndarray, cfg: ViewConfig, eps_mv: float) -> None:
        self.leads = leads
        self.cfg = cfg
        self.eps = eps_mv
        self.has_ii = np.isfinite(leads[:, 1, 0])
        self.has_chest = np.isfinite(leads[:, 2:, 0]).all(axis=1)

    def raw(self, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The chosen views in mV (before normalisation)."""
        c = self.cfg
        sub = self.leads[idx]
        out = sub[:, 0].copy()
        n = idx.size
        u = rng.random(n)
        mix = (u < c.mix_p) & self.has_ii[idx]
        if mix.any():
            ang = rng.uniform(-c.mix_deg, c.mix_deg, int(mix.sum()))
            out[mix] = frontal_lead(sub[mix], ang)
        chest = (rng.random(n) < c.chest_p) & self.has_chest[idx]
        if chest.any():
            rows = np.flatnonzero(chest)
            n_pairs = len(CHEST_PAIRS)
            pick = rng.integers(0, n_pairs + len(CHEST_UNIPOLAR), rows.size)
            for r, k in zip(rows, pick, strict=True):
                v = sub[r, 2:]
                if k < n_pairs:
                    j, i = CHEST_PAIRS[k]
                    out[r] = v[j] - v[i]
                else:
                    out[r] = v[CHEST_UNIPOLAR[k - n_pairs]]
        return out

    def __call__(self, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return normalise_beats(self.raw(np.asarray(idx), rng), self.eps).astype(np.float32)
