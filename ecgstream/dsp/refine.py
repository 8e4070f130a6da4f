"""Refinement of a detection to the R peak (step 4 of :mod:`.detector`).

Move a detector index to the R extremum of the conditioned signal.

Two steps. (1) The QRS is located at the steepest slope of the
conditioned signal in the span the MWI peak covers
(``refine_back`` before to ``refine_fwd`` after ``q``). (2) R is the
extremum within ``+-refine_half`` (75 ms) of that slope: in the
stream's dominant polarity, unless the opposite extremum there is
``refine_flip_ratio`` (2x) larger.

Why: the former rule took the dominant-polarity extremum over the
whole 210 ms span. On a ventricular or aberrant beat of inverted
polarity that extremum is the T wave or the rebound after the QRS,
150-300 ms from the annotated R (65 of the 228 MIT-BIH misses, each
also a false positive). The QRS has the steepest slopes of a beat
(T waves are slower), so a window around the steepest slope cannot
reach the T wave; inside it the dominant polarity still decides on
ordinary beats (their R stays where it was), and only a clearly
larger opposite deflection (an inverted QRS) overrides it.
"""

from __future__ import annotations

import numpy as np

from .detector import RPeakDetector

__all__ = ["PeakRefiner"]


class PeakRefiner:
    """The R peak of each detection, and the stream's dominant polarity (one segment)."""

    def __init__(self, detector: RPeakDetector) -> None:
        self.detector = detector
        self.reset()

    def reset(self) -> None:
        """A new segment: the polarity is voted again over its first 8 beats."""
        self._votes = 0
        self._n = 0

    def refine(self, y: np.ndarray, y0: int, q: int) -> int:
        """Index of the R peak for the detector index ``q``; ``y`` is the conditioned signal from index ``y0``."""
        det = self.detector
        n_total = y0 + y.size
        lo = max(y0, q - det.refine_back)
        hi = min(n_total, q + det.refine_fwd + 1)
        seg = y[lo - y0: hi - y0]
        if seg.size < 2:
            return min(max(q, y0), n_total - 1) if seg.size == 0 else lo
        c = lo + 1 + int(np.argmax(np.abs(np.diff(seg))))
        a = max(y0, c - det.refine_half)
        b = min(n_total, c + det.refine_half + 1)
        win = y[a - y0: b - y0]
        if self._n < 8:
            k = int(np.argmax(np.abs(win)))
            self._votes += 1 if win[k] >= 0 else -1
            self._n += 1
            return a + k
        sw = win if self._votes >= 0 else -win
        kp, ko = int(np.argmax(sw)), int(np.argmin(sw))
        vp, vo = float(sw[kp]), -float(sw[ko])
        k = ko if vo > det.cfg.refine_flip_ratio * max(vp, 0.0) else kp
        return a + k
