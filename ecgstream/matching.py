"""Scores of beats against a template, and their fusion over beats.

One implementation for training's evaluation and for the daemon, so that the
thresholds calibrated by ``train`` are thresholds of exactly the score the
daemon computes.

* A **template** is the unit-length mean of a subject's enrolment
  embeddings (the centroid on the unit sphere).
* A **beat score** is the cosine similarity of a beat's unit-length
  embedding with the template, in [-1, 1].
* A **fused score** over ``k`` beats is the mean of their ``k`` beat scores.
"""

from __future__ import annotations

import numpy as np

__all__ = ["beat_scores", "fuse", "make_template", "rolling_fused"]


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    if np.any(n == 0) or not np.all(np.isfinite(n)):
        raise ValueError("embeddings must be finite and non-zero")
    return v / n


def make_template(embeddings: np.ndarray) -> np.ndarray:
    """Build a template from enrolment embeddings.

    Parameters
    ----------
    embeddings : ndarray, shape (n_beats, dim)
        Unit-length embeddings of the subject's good enrolment beats.

    Returns
    -------
    ndarray, shape (dim,)
        The unit-length centroid, float32.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] == 0:
        raise ValueError(f"need a non-empty (n_beats, dim) array, got shape {e.shape}")
    return _unit(_unit(e).mean(axis=0)).astype(np.float32)


def beat_scores(embeddings: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Cosine similarity of each beat embedding with a template.

    Parameters
    ----------
    embeddings : ndarray, shape (n, dim)
    template : ndarray, shape (dim,) or (m, dim)
        One template, or ``m`` templates (then the result is ``(n, m)``).
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

    Returns an array of ``len(scores) - k + 1`` values (empty if too few).
    """
    s = np.asarray(scores, dtype=np.float64)
    if k < 1:
        raise ValueError("k must be at least 1")
    if s.size < k:
        return np.empty(0)
    c = np.concatenate(([0.0], np.cumsum(s)))
    return (c[k:] - c[:-k]) / k
