"""Beat normalisation shared by training (``train``) and the edge runtime.

One numpy implementation: ``train`` imports :func:`normalise_beats` so the
network is trained on exactly the inputs the edge runtime feeds it. The
method and its parameters are written into the model card
(``input.normalisation``) and read back by :class:`edge.EmbeddingModel`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["NORMALISATION", "check_windows", "normalise_beats", "normalisation_from_card"]

#: The normalisation of the shipped model, as stored in its card.
#: ``zscore``: subtract the window's mean, divide by its standard deviation
#: (population, ``ddof=0``), floored at ``eps_mv`` mV so a flat window is
#: not blown up into noise.
NORMALISATION: dict[str, object] = {"method": "zscore", "eps_mv": 0.01}


def check_windows(windows: object, window_len: int) -> np.ndarray:
    """Validate beat windows and return them as a float64 (n, window_len) array.

    Parameters
    ----------
    windows : array_like, shape (n, window_len) or (window_len,)
        Beat windows (``Beat.window``) in mV at the model's rate; a single
        1-D window is accepted as one row.
    window_len : int
        Samples per window the model expects.

    Raises
    ------
    ValueError
        Not numeric, wrong number of dimensions, wrong length, or rows with
        NaN or infinite samples (the message lists the first bad rows).
    """
    arr = np.asarray(windows)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"beat windows must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"beat windows must have shape (n, {window_len}), got {arr.shape}")
    if arr.shape[1] != window_len:
        raise ValueError(
            f"beat windows have {arr.shape[1]} samples, the model expects {window_len} "
            "(check the DspConfig against the model card)"
        )
    arr = arr.astype(np.float64, copy=False)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{bad.size} beat window(s) contain NaN or infinite samples (rows {bad[:5].tolist()}"
            f"{'...' if bad.size > 5 else ''}); refusing to score them"
        )
    return arr


def normalise_beats(windows: np.ndarray, eps_mv: float = 0.01) -> np.ndarray:
    """Z-score each beat window (the model's input normalisation).

    Parameters
    ----------
    windows : ndarray, shape (n, window_len)
        Finite beat windows in mV (``Beat.window``, conditioned, not normalised).
    eps_mv : float
        Floor of the standard deviation in mV.

    Returns
    -------
    ndarray, shape (n, window_len), float32
        ``(w - mean(w)) / max(std(w), eps_mv)`` per row (dimensionless).
    """
    w = np.asarray(windows, dtype=np.float64)
    mu = w.mean(axis=-1, keepdims=True)
    sd = np.maximum(w.std(axis=-1, keepdims=True), eps_mv)
    return ((w - mu) / sd).astype(np.float32)


def normalisation_from_card(spec: Mapping[str, object]) -> dict[str, float]:
    """Check a card's ``input.normalisation`` block; return its parameters.

    Raises
    ------
    ValueError
        Unknown method or missing parameter.
    """
    method = spec.get("method")
    if method != "zscore":
        raise ValueError(f"unknown input normalisation {method!r} (this runtime knows 'zscore')")
    try:
        eps = float(spec["eps_mv"])  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        raise ValueError("normalisation 'zscore' needs a numeric 'eps_mv'") from None
    if not eps > 0:
        raise ValueError(f"normalisation eps_mv must be positive, got {eps}")
    return {"eps_mv": eps}
