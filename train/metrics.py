"""Verification metrics (numpy only): EER, TAR at a FAR, DET/ROC points.

Convention throughout: a higher score means "same person"; a pair is
accepted when ``score >= threshold``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["det_curve", "eer", "far_threshold", "tar_at_far"]


def _check(gen: np.ndarray, imp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(gen, dtype=np.float64).ravel()
    i = np.asarray(imp, dtype=np.float64).ravel()
    if g.size == 0 or i.size == 0:
        raise ValueError(f"need genuine and impostor scores, got {g.size} and {i.size}")
    return g, i


def det_curve(gen: np.ndarray, imp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FAR and FRR at every distinct score used as threshold.

    Returns
    -------
    thresholds, far, frr : ndarray
        Ascending thresholds; ``far[j] = mean(imp >= t_j)``,
        ``frr[j] = mean(gen < t_j)``.
    """
    g, i = _check(gen, imp)
    t = np.unique(np.concatenate([g, i]))
    gs, is_ = np.sort(g), np.sort(i)
    frr = np.searchsorted(gs, t, side="left") / g.size
    far = 1.0 - np.searchsorted(is_, t, side="left") / i.size
    return t, far, frr


def eer(gen: np.ndarray, imp: np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold.

    Returns
    -------
    eer : float
        ``(FAR + FRR) / 2`` at the threshold where they are closest (0..1).
    threshold : float
        That threshold (accept ``score >= threshold``).
    """
    t, far, frr = det_curve(gen, imp)
    j = int(np.argmin(np.abs(far - frr)))
    return float((far[j] + frr[j]) / 2), float(t[j])


def far_threshold(imp: np.ndarray, far: float) -> float:
    """Lowest threshold whose false-accept rate on ``imp`` is at most ``far``."""
    i = np.sort(np.asarray(imp, dtype=np.float64).ravel())[::-1]
    if i.size == 0:
        raise ValueError("need impostor scores")
    allowed = int(np.floor(far * i.size))
    if allowed >= i.size:
        return float(i[-1])
    return float(np.nextafter(i[allowed], np.inf))


def tar_at_far(gen: np.ndarray, imp: np.ndarray, far: float) -> tuple[float, float]:
    """True-accept rate at the threshold of :func:`far_threshold`.

    Returns
    -------
    tar : float
    threshold : float
    """
    g, i = _check(gen, imp)
    t = far_threshold(i, far)
    return float(np.mean(g >= t)), t
