"""Second-order-section filtering with carried state, without per-call overhead.

``scipy.signal.sosfilt`` spends ~150 us per call on argument handling (axis
moves, validation, array-API dispatch) before its C loop runs: on a 25-sample
chunk that is >95 % of the cost, and the daemon makes two calls per chunk per
device. :func:`sosfilt_zi_step` calls SciPy's C kernel directly (see
:func:`ecgstream.dsp.design.sosfilt_kernel`) and falls back to the public
function. Both compute the same samples (tested).
"""

from __future__ import annotations

import numpy as np

from .design import sosfilt_kernel

__all__ = ["sosfilt_zi_step", "sosfilt_many", "prepare_sos"]


def prepare_sos(sos: np.ndarray) -> np.ndarray:
    """Return ``sos`` as the C-contiguous float64 array the kernel needs."""
    sos = np.ascontiguousarray(sos, dtype=np.float64)
    if sos.ndim != 2 or sos.shape[1] != 6:
        raise ValueError(f"sos must have shape (n_sections, 6), got {sos.shape}")
    return sos


def sosfilt_zi_step(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Filter 1-D ``x`` from state ``zi`` (n_sections, 2); return ``(y, zf)``.

    ``sos`` must come from :func:`prepare_sos`. Inputs are not modified.
    """
    kernel = sosfilt_kernel()
    if kernel is None:  # pragma: no cover - only without SciPy's extension
        from scipy import signal

        return signal.sosfilt(sos, x, zi=zi)
    y = np.array(x, dtype=np.float64, order="C").reshape(1, -1)
    z = np.array(zi, dtype=np.float64, order="C").reshape(1, sos.shape[0], 2)
    kernel(sos, y, z)
    return y[0], z[0]


def sosfilt_many(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Filter each row of ``x`` (G, n) from its state ``zi[i]`` (G, n_sections, 2).

    One kernel call for all rows; row ``i`` of the result is bitwise
    ``sosfilt_zi_step(sos, x[i], zi[i])`` (the kernel filters the rows one
    after another with the same arithmetic; tested). Inputs are not modified.
    """
    kernel = sosfilt_kernel()
    if kernel is None:  # pragma: no cover - only without SciPy's extension
        pairs = [sosfilt_zi_step(sos, x[i], zi[i]) for i in range(x.shape[0])]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    y = np.array(x, dtype=np.float64, order="C")
    z = np.array(zi, dtype=np.float64, order="C")
    kernel(sos, y, z)
    return y, z
