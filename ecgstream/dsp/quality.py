"""Per-beat signal-quality index (SQI).

A beat is matched only if nothing is wrong with it. The index itself is the
Pearson correlation of the beat with the median of the stream's recent beats
(a robust running template: up to half of them may be artefacts), clipped to
[0, 1]. Flags name what is wrong; a beat with any flag is counted but never
matched.
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["BeatQuality", "FLAG_NAMES"]

FLAG_NAMES = {
    "edge": "window runs past the start or end of the segment (padded)",
    "invalid": "unreadable samples (NaN, inf, lost lines) were bridged inside the window",
    "clipped": "the raw maximum or minimum repeats: amplifier or ADC saturation",
    "rr": "RR interval outside 0.25..2.0 s (heart rate 30..240 /min)",
    "morphology": "correlation with the recent median beat below the limit",
    "amplitude": "R amplitude outside 0.4..2.5 x the recent median",
    "warmup": "fewer than 3 earlier beats in the segment to compare with",
}


class BeatQuality:
    """Running state for the SQI of one segment.

    Parameters
    ----------
    history : int
        Number of recent beats whose median forms the template.
    min_corr : float
        Correlation below which a beat is flagged ``morphology``.
    """

    def __init__(self, history: int = 8, min_corr: float = 0.8) -> None:
        self.min_corr = min_corr
        self._windows: deque[np.ndarray] = deque(maxlen=history)
        self._amps: deque[float] = deque(maxlen=history)

    def reset(self) -> None:
        """Forget the recent beats (a new segment)."""
        self._windows.clear()
        self._amps.clear()

    def assess(self, window: np.ndarray, r_index: int, rr_s: float) -> tuple[float, set[str]]:
        """Return ``(quality, flags)`` for a beat and remember it.

        Parameters
        ----------
        window : ndarray
            Conditioned beat window.
        r_index : int
            Position of R inside ``window``.
        rr_s : float
            RR interval in seconds (NaN when unknown).
        """
        flags: set[str] = set()
        amp = float(abs(window[r_index]))
        if len(self._windows) < 3:
            flags.add("warmup")
            quality = 0.0
        else:
            tmpl = _median_rows(np.stack(self._windows))
            a = window - window.mean()
            b = tmpl - tmpl.mean()
            den = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
            corr = float(np.dot(a, b) / den) if den > 0 else 0.0
            quality = min(1.0, max(0.0, corr))
            if corr < self.min_corr:
                flags.add("morphology")
            med_amp = _median_floats(self._amps)
            if med_amp > 0 and not 0.4 <= amp / med_amp <= 2.5:
                flags.add("amplitude")
        if np.isfinite(rr_s) and not 0.25 <= rr_s <= 2.0:
            flags.add("rr")
        # A copy: a view would pin the whole conditioned buffer it came from.
        self._windows.append(np.array(window, dtype=np.float64))
        self._amps.append(amp)
        return quality, flags


def _median_rows(x: np.ndarray) -> np.ndarray:
    """``np.median(x, axis=0)``, the same values, without its per-call overhead.

    The middle row of the sorted columns, or the mean of the two middle
    rows computed as numpy's median does (sum of the two, divided by 2).
    Non-finite input takes ``np.median`` itself (its NaN rules).
    """
    k = x.shape[0]
    if not np.isfinite(x).all():
        return np.median(x, axis=0)
    s = np.sort(x, axis=0)
    if k % 2:
        return s[k // 2]
    return (s[k // 2 - 1] + s[k // 2]) / 2.0


def _median_floats(v: deque[float]) -> float:
    """``float(np.median(v))`` for a few floats (the same value; NaN as numpy gives it)."""
    s = sorted(v)
    if any(x != x for x in s):
        return float("nan")
    k = len(s)
    return s[k // 2] if k % 2 else (s[k // 2 - 1] + s[k // 2]) / 2.0
