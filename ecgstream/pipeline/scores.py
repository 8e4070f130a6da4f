"""Scores of beats against templates, their normalisation, and their fusion.

One implementation for training's evaluation and for the daemon, so that the
thresholds calibrated by ``train`` are thresholds of exactly the score the
daemon computes.

* A **template** holds one or more unit-length **centroids** of a subject:
  one per enrolment sitting (``ecgstream enroll --append`` adds a sitting),
  each the unit mean of that sitting's (quality-weighted) good-beat
  embeddings (:func:`make_template`).
* A **raw beat score** is the cosine similarity of a beat's unit embedding
  with a centroid, in [-1, 1].
* A **normalised beat score** puts the raw score on the scale of an
  impostor cohort shipped with the model (:class:`Cohort`): ``znorm``
  subtracts the mean of the centroid's cosines with the cohort and divides
  by their spread, so a score says "this many impostor spreads above what
  an impostor scores against this template". It is what makes one threshold
  mean the same thing for every template (a template that sits in a crowded
  part of the sphere no longer draws high impostor scores). ``none`` keeps
  the raw cosine.
* A subject's beat score is the best of its centroids' scores (a probe
  matches the sitting it resembles most).
* A **fused score** over ``k`` beats is the mean of their ``k`` beat scores.

:class:`Scorer` is the matcher stage: templates (and an optional cohort) in,
``(n_beats, n_subjects)`` scores out; it also carries the online template
adaptation (:meth:`Scorer.adapt`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "NORMS",
    "AdaptationPolicy",
    "Cohort",
    "CohortError",
    "Scorer",
    "beat_scores",
    "fuse",
    "make_template",
    "quality_weights",
    "rolling_fused",
]

#: Score normalisations a model card may name.
NORMS = ("none", "znorm")


class CohortError(ValueError):
    """A cohort file is missing, malformed or does not belong to the model."""


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    if np.any(n == 0) or not np.all(np.isfinite(n)):
        raise ValueError("embeddings must be finite and non-zero")
    return v / n


def make_template(embeddings: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Build one centroid from a sitting's enrolment embeddings.

    Parameters
    ----------
    embeddings : ndarray, shape (n_beats, dim)
        Unit-length embeddings of the subject's good enrolment beats.
    weights : ndarray, shape (n_beats,), optional
        Non-negative weight of each beat (quality weighting); default equal.

    Returns
    -------
    ndarray, shape (dim,)
        The unit-length (weighted) centroid, float32.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] == 0:
        raise ValueError(f"need a non-empty (n_beats, dim) array, got shape {e.shape}")
    if weights is None:
        return _unit(_unit(e).mean(axis=0)).astype(np.float32)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size != e.shape[0] or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative, one per beat, not all zero")
    return _unit((_unit(e) * w[:, None]).sum(axis=0)).astype(np.float32)


def quality_weights(embeddings: np.ndarray, floor: float = 0.25) -> np.ndarray:
    """Weights of enrolment beats by how typical they are of the sitting.

    A beat's typicality is its cosine with the sitting's plain centroid,
    measured in median absolute deviations (MAD) below the median: beats
    within 3 MADs weigh 1, weight falls linearly to ``floor`` at 6 MADs and
    stays there. Outliers (a movement, a half-detected beat that passed the
    quality gate) count less without any beat being dropped.
    """
    e = _unit(np.asarray(embeddings, dtype=np.float64))
    s = e @ _unit(e.mean(axis=0))
    med = float(np.median(s))
    mad = float(np.median(np.abs(s - med))) + 1e-6
    z = (med - s) / mad
    return np.clip(1.0 - (z - 3.0) / 3.0 * (1.0 - floor), floor, 1.0)


def beat_scores(embeddings: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Raw cosine similarity of each beat embedding with centroid(s).

    Parameters
    ----------
    embeddings : ndarray, shape (n, dim)
    template : ndarray, shape (dim,) or (m, dim)
        One centroid, or ``m`` centroids (then the result is ``(n, m)``).
    """
    e = _unit(np.atleast_2d(np.asarray(embeddings, dtype=np.float64)))
    t = _unit(np.asarray(template, dtype=np.float64))
    if e.shape[-1] != t.shape[-1]:
        raise ValueError(f"embedding size {e.shape[-1]} != template size {t.shape[-1]}")
    return e @ t.T


def fuse(scores: np.ndarray) -> float:
    """Fused score of a set of beat scores: their mean."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ValueError("cannot fuse zero beats")
    return float(s.mean())


def rolling_fused(scores: np.ndarray, k: int) -> np.ndarray:
    """Fused scores of every run of ``k`` consecutive beats (for evaluation).

    ``scores`` may be 1-D (one template) or ``(n_beats, m)``; the result has
    ``len(scores) - k + 1`` rows (empty if too few).
    """
    s = np.asarray(scores, dtype=np.float64)
    if k < 1:
        raise ValueError("k must be at least 1")
    if s.shape[0] < k:
        return np.empty((0,) + s.shape[1:])
    c = np.concatenate((np.zeros((1,) + s.shape[1:]), np.cumsum(s, axis=0)))
    return (c[k:] - c[:-k]) / k


class Cohort:
    """An impostor cohort: unit embeddings of persons the model was trained on.

    Shipped with the model (``edge/cohort.npz``), made by ``train`` from the
    training persons' record centroids with the shipped int8 model; never
    templates of users. Its id (``cohort-<sha256[:12]>`` of the vectors) is
    stored in every template made against it.

    Parameters
    ----------
    vectors : ndarray, shape (m, dim)
        Unit embeddings; at least 20 rows.
    model_id : str
        The model that made them.
    """

    MIN_SIZE = 20

    def __init__(self, vectors: np.ndarray, model_id: str) -> None:
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape[0] < self.MIN_SIZE:
            raise CohortError(f"a cohort needs at least {self.MIN_SIZE} vectors of shape (m, dim), got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise CohortError("cohort vectors must be finite")
        norms = np.linalg.norm(v.astype(np.float64), axis=1)
        if np.any(np.abs(norms - 1.0) > 1e-3):
            raise CohortError("cohort vectors must have unit length")
        v = np.ascontiguousarray(v)
        v.setflags(write=False)
        self.vectors = v
        self.model_id = str(model_id)
        self.id = "cohort-" + hashlib.sha256(v.astype("<f4").tobytes()).hexdigest()[:12]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def __repr__(self) -> str:
        return f"Cohort({self.id!r}, {len(self)} x {self.dim}, model {self.model_id!r})"

    def stats(self, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread of each centroid's cosines with the cohort.

        The spread is floored at 0.02 (a cosine spread below that is not
        measurable from a cohort of this size and would blow scores up).
        """
        c = _unit(np.atleast_2d(np.asarray(centroids, dtype=np.float64)))
        if c.shape[1] != self.dim:
            raise CohortError(f"cohort has dimension {self.dim}, centroids {c.shape[1]}")
        s = c @ self.vectors.T.astype(np.float64)
        return s.mean(axis=1), np.maximum(s.std(axis=1), 0.02)

    def save(self, path: str | Path) -> None:
        """Write ``vectors`` and ``model_id`` to an ``.npz`` file."""
        np.savez(Path(path), vectors=self.vectors, model_id=np.array(self.model_id))

    @classmethod
    def load(cls, path: str | Path, model_id: str | None = None, cohort_id: str | None = None) -> Cohort:
        """Read a cohort file, checking it belongs to ``model_id`` and has ``cohort_id``.

        Raises
        ------
        CohortError
            Missing, malformed, made by another model, or another version.
        """
        p = Path(path)
        if not p.is_file():
            raise CohortError(f"cohort file {p} not found (it ships beside the model; reinstall the model)")
        try:
            with np.load(p, allow_pickle=False) as z:
                vec, mid = z["vectors"], str(z["model_id"])
        except (OSError, ValueError, KeyError) as exc:
            raise CohortError(f"cohort file {p} is not a valid cohort: {exc}") from None
        c = cls(vec, mid)
        if model_id is not None and c.model_id != model_id:
            raise CohortError(f"cohort {p} was made by model {c.model_id!r}, not {model_id!r}")
        if cohort_id is not None and c.id != cohort_id:
            raise CohortError(f"cohort {p} is {c.id!r}, the model card names {cohort_id!r}")
        return c


@dataclass(frozen=True)
class AdaptationPolicy:
    """How far and how fast a template may follow its wearer.

    Attributes
    ----------
    rate : float
        Weight of one fresh beat in the adapted centroid (exponential moving
        average), 0 < rate <= 0.2.
    floor : float
        The adapted centroid's cosine with the enrolled centroid never goes
        below this (it is pulled back onto that cone), so no sequence of
        accepted beats can move a template anywhere else.
    """

    rate: float = 0.02
    floor: float = 0.9

    def __post_init__(self) -> None:
        if not 0.0 < self.rate <= 0.2:
            raise ValueError(f"adaptation rate must be in (0, 0.2], got {self.rate}")
        if not 0.0 < self.floor < 1.0:
            raise ValueError(f"adaptation floor must be in (0, 1), got {self.floor}")


class Scorer:
    """The matcher stage: beat embeddings -> one score per subject.

    Parameters
    ----------
    centroids : sequence of ndarray
        Per subject, its centroids ``(c_i, dim)`` (one row per sitting).
    norm : str
        ``none`` or ``znorm`` (see the module docstring); from the model card.
    cohort : Cohort, optional
        Needed for ``znorm``.
    """

    def __init__(self, centroids: Sequence[np.ndarray], norm: str = "none", cohort: Cohort | None = None) -> None:
        if norm not in NORMS:
            raise ValueError(f"unknown score normalisation {norm!r} (one of {', '.join(NORMS)})")
        if norm != "none" and cohort is None:
            raise ValueError(f"score normalisation {norm!r} needs a cohort")
        if not centroids:
            raise ValueError("a scorer needs at least one subject")
        self.norm = norm
        self.cohort = cohort
        self._enrolled = [np.atleast_2d(np.asarray(c, dtype=np.float64)) for c in centroids]
        dims = {c.shape[1] for c in self._enrolled}
        if len(dims) != 1 or any(c.shape[0] == 0 for c in self._enrolled):
            raise ValueError("every subject needs at least one centroid, all of one dimension")
        if cohort is not None and dims != {cohort.dim}:
            raise ValueError(f"templates have dimension {dims.pop()}, the cohort {cohort.dim}")
        # Adapted copy of each subject's centroids (the enrolled ones stay as anchors).
        self._adapted = [c.copy() for c in self._enrolled]
        self._rebuild()

    def _rebuild(self) -> None:
        self._owner = np.concatenate([np.full(c.shape[0], j) for j, c in enumerate(self._adapted)])
        self._mat = _unit(np.concatenate(self._adapted))
        if self.norm == "znorm":
            assert self.cohort is not None
            self._mu, self._sd = self.cohort.stats(self._mat)
        else:
            self._mu, self._sd = np.zeros(len(self._owner)), np.ones(len(self._owner))
        self._single = all(c.shape[0] == 1 for c in self._adapted)

    @property
    def n_subjects(self) -> int:
        return len(self._enrolled)

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Scores ``(n, n_subjects)`` of unit beat embeddings ``(n, dim)``."""
        e = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
        if e.shape[1] != self._mat.shape[1]:
            raise ValueError(f"embedding size {e.shape[1]} != template size {self._mat.shape[1]}")
        s = (_unit(e) @ self._mat.T - self._mu) / self._sd
        if self._single:
            return s
        out = np.full((s.shape[0], self.n_subjects), -np.inf)
        np.maximum.at(out.T, self._owner, s.T)
        return out

    def adapt(self, subject: int, embedding: np.ndarray, policy: AdaptationPolicy) -> float:
        """Fold one accepted beat into subject ``subject``'s nearest centroid.

        The caller decides *whether* a beat may adapt (authenticated, live,
        a good beat, a confident score); this decides *how much*: an
        exponential moving average with ``policy.rate``, then pulled back so
        its cosine with the enrolled centroid stays at least ``policy.floor``.

        Returns the adapted centroid's cosine with its enrolled centroid.
        """
        e = _unit(np.asarray(embedding, dtype=np.float64).reshape(1, -1))[0]
        ad, en = self._adapted[subject], _unit(self._enrolled[subject])
        i = int(np.argmax(_unit(ad) @ e))
        a = _unit((1 - policy.rate) * _unit(ad[i]) + policy.rate * e)
        anchor = en[i]
        cos = float(a @ anchor)
        if cos < policy.floor:
            # Move back along the great circle to the floor: the part of `a`
            # orthogonal to the anchor, scaled so cos(result, anchor) == floor.
            ortho = _unit(a - cos * anchor)
            a = policy.floor * anchor + np.sqrt(1 - policy.floor**2) * ortho
            cos = policy.floor
        ad[i] = a
        self._rebuild()
        return cos

    def adapted_centroids(self, subject: int) -> np.ndarray:
        """The subject's current (adapted) centroids, unit rows, float32."""
        return _unit(self._adapted[subject]).astype(np.float32)
