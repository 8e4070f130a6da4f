"""Flutter test: is a detection inside sustained sinusoidal activity?

Ventricular flutter (and fibrillation of coarse, regular waves) is a
near-sinusoid at 3-5 Hz with no isoelectric line: the detector, being
built to find beats, reports many of its waves as QRS complexes
(MIT-BIH record 207: about 400 false detections, 70 % of all false
positives). Those waves are not heartbeats: EC57 annotates no beats
there, and they are no use to a biometric matcher either. So such
detections are not emitted as R peaks; they are only counted
(``StreamStatus.flutter_suppressed``).

The test is Kuo & Dillman's VF filter (1978; evaluated by Amann et
al., Biomed Eng Online 2005, among the reliable simple VF
detectors): with half a period ``N = pi * sum|x| / sum|dx|``, the
leakage ``sum|x[i] + x[i-N]| / sum(|x[i]| + |x[i-N]|)`` is 0 for a
sinusoid and near 1 for a beat sequence (a QRS is not cancelled by
the signal half a "period" earlier). It is computed on the
conditioned signal smoothed over ``flutter_smooth_s`` (20 ms:
high-frequency noise otherwise inflates the leakage of flutter
waves), over ``flutter_back_s`` (1.5 s) before R to the end of the
beat window: data the beat waits for anyway, so there is no added
delay. Hysteresis: flutter starts below ``flutter_enter`` (0.4, the
published threshold is 0.406) and lasts while the leakage stays
below ``flutter_stay`` (0.7): inside an episode the leakage of single
windows wanders up to about 0.7 (noise, changing wave shape), while
ordinary beat sequences, ventricular tachycardia included, never go
below 0.4 on MIT-BIH (lowest 0.41; median about 0.8), so the entry
threshold is what keeps real beats. The price of the high exit
threshold: after an episode a few beats may still be withheld until
the leakage passes 0.7. The thresholds were chosen on MIT-BIH as a
whole (where only record 207 has flutter), never per record, and
the benchmark that reports the result is the same data: treat the
figure as fitted, not as an independent validation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["leakage"]


def leakage(x: np.ndarray, k: int) -> float | None:
    """Kuo & Dillman's VF-filter leakage of the conditioned span ``x``, smoothed over ``k`` samples.

    None when the span is too short to tell (no flutter).
    """
    if x.size < 2 * k + 4:
        return None
    if k > 1:
        # Moving sum over k samples, one sum of k terms per output (no
        # running cumsum): the same value for the same samples.
        st = x.strides[0]
        x = np.ndarray((x.size - k + 1, k), dtype=x.dtype, buffer=x, strides=(st, st)).sum(axis=1) / k
    x = x - _median(x)
    ax = np.abs(x)
    dsum = float(np.abs(np.diff(x)).sum())
    if dsum <= 0:
        return None
    n = max(1, int(np.floor(np.pi * float(ax.sum()) / dsum + 0.5)))
    if n >= x.size:
        return None
    den = float((ax[n:] + ax[:-n]).sum())
    leak = float(np.abs(x[n:] + x[:-n]).sum()) / den if den > 0 else 1.0
    return leak


def _median(x: np.ndarray) -> float:
    """``np.median(x)`` of a 1-D array, the same value, without its wrapper's overhead.

    As numpy does: partition at the middle (both middles when even), then
    the middle value or the mean of the two; non-finite input takes
    ``np.median`` itself.
    """
    n = x.size
    h = n // 2
    if n % 2:
        v = np.partition(x, h)[h]
    else:
        p = np.partition(x, (h - 1, h))
        v = (p[h - 1] + p[h]) / 2.0
    return float(v) if np.isfinite(v) else float(np.median(x))
