"""Online R-peak detection with a bounded delay.

The detector follows the structure of Pan & Tompkins (1985) and Hamilton &
Tompkins (1986), rebuilt for streams:

1. QRS feature: band-pass 5-20 Hz, derivative, magnitude raised to
   ``feature_power`` (1.5: between Hamilton's absolute value and Pan &
   Tompkins' square, so wide, slow ventricular beats are not crushed while
   noise is still suppressed), moving-window integration (MWI) over
   ``mwi_s``; all causal with persistent state.
2. Candidates: local maxima of the MWI that are the largest within
   ``+-candidate_s``. Deciding that needs ``candidate_s`` of look-ahead.
3. Classification of candidates in time order with adaptive signal and
   noise levels, a T-wave test (slope against the last QRS) and search-back:
   when no QRS was found for ``searchback_rr`` times the mean RR, the largest
   candidate since the last QRS that passes half the threshold is accepted.
4. Refinement (in :class:`~ecgstream.dsp.beats.BeatPipeline`): the QRS is
   located at the steepest slope of the conditioned signal in the span the
   MWI peak covers; the R peak is the extremum in the stream's dominant
   polarity within ``+-refine_half_s`` of that slope, or the opposite
   extremum where that is ``refine_flip_ratio`` times larger (an inverted
   ventricular beat).
5. Flutter suppression (also in the pipeline): a detection whose
   surrounding signal is a sustained near-sinusoid (Kuo & Dillman's VF-filter
   leakage below ``flutter_enter``, then below ``flutter_stay`` while it
   lasts) is not emitted as an R peak; see ``BeatPipeline._flutter``.

Every decision is tied to a sample index, never to a chunk boundary, so the
beats do not depend on how the stream was cut (tested by property tests).

Detection delay: a candidate at MWI index ``i`` is decided when sample
``i + candidate_s`` has arrived; the MWI peak lags the R peak by about
``mwi_s``/2 plus the 5-20 Hz band-pass delay, so a QRS is normally reported
about 0.3 s after its R peak (on MIT-BIH, counting the conditioner's delay
too: median 0.31 s, 99th percentile 0.35 s; see docs/benchmarks/detection.md). A QRS found by search-back is reported
when the search-back limit passes: at most ``searchback_rr`` x mean RR
(mean RR capped at ``max_rr_s``, so at most 3.3 s) after the previous QRS.
During the first ``learn_s`` of a segment detections are held until the
thresholds are learnt, so after a start or a gap the bound is
``max(learn_s + candidate_s, that)``. The conditioner adds its own delay
(``Conditioner.delay_s``), and a beat waits ``window_after_s`` more.
Neither the refinement (it reads at most ``refine_fwd_s + refine_half_s``,
0.105 s, past the MWI peak, inside the ``candidate_s`` look-ahead) nor the
flutter test (it reads only up to the end of the beat window) adds delay.
"""

from __future__ import annotations

import numpy as np

from ._sosfilt import prepare_sos, sosfilt_many, sosfilt_zi_step
from .design import butter_sos
from .detector_config import DetectorConfig

__all__ = ["DetectorConfig", "RPeakDetector"]


class RPeakDetector:
    """Streaming R-peak detector on a conditioned signal.

    Parameters
    ----------
    fs_hz : float
        Rate of the conditioned signal (the processing rate).
    cfg : DetectorConfig
        Settings.

    Notes
    -----
    :meth:`push` takes conditioned samples and returns the indices (in
    conditioned samples since :meth:`reset`) of the QRS complexes decided so
    far, in increasing order. :meth:`refine` maps such an index to the R peak
    and needs the conditioned signal around it, which the caller keeps.
    """

    def __init__(self, fs_hz: float, cfg: DetectorConfig | None = None) -> None:
        self.cfg = cfg = cfg or DetectorConfig()
        self.fs = float(fs_hz)
        hi = min(cfg.band_hz[1], 0.45 * fs_hz)
        self._sos = prepare_sos(butter_sos(2, (cfg.band_hz[0], hi), "bandpass", fs_hz))
        self._n_mwi = max(1, round(cfg.mwi_s * fs_hz))
        self._w = max(1, round(cfg.candidate_s * fs_hz))
        self._learn = round(cfg.learn_s * fs_hz)
        self._min_rr = round(cfg.min_rr_s * fs_hz)
        self._max_rr = round(cfg.max_rr_s * fs_hz)
        self._twave = round(cfg.twave_s * fs_hz)
        # MWI peak lags the QRS centre by about half the window plus the
        # band-pass delay; refinement searches this span before the peak.
        # It is a setting of its own (not derived from mwi_s), so tuning the
        # feature does not move the R peaks the model is trained on.
        self.refine_back = round(cfg.refine_back_s * fs_hz)
        self.refine_fwd = round(cfg.refine_fwd_s * fs_hz)
        self.refine_half = max(1, round(cfg.refine_half_s * fs_hz))
        self._pow = float(cfg.feature_power)
        self.reset()

    # -- state ---------------------------------------------------------
    def reset(self) -> None:
        """Forget everything; the next sample starts a new segment."""
        self._zi = np.zeros((self._sos.shape[0], 2))
        self._prev = 0.0  # last band-passed sample, for the derivative
        self._mwi_hist = np.zeros(self._n_mwi - 1)  # squared-slope history for the MWI
        self._slope_hist = np.zeros(0)  # |slope| aligned with _buf
        self._buf = np.zeros(0)  # MWI samples not yet decided, plus context
        self._buf0 = 0  # index of _buf[0]
        self._n = 0  # samples seen
        self._decided = 0  # candidate decisions made for indices < _decided
        self._cands: list[tuple[int, float, float]] = []  # (index, height, slope) since last QRS
        self._spk = 0.0
        self._npk = 0.0
        self._learnt = False
        self._last_qrs = -1
        self._anchor = -1  # search-back measures from here (last QRS or last empty search)
        self._last_slope = 0.0
        self._rr: list[int] = []
        self._pending: list[tuple[int, float, float]] = []  # candidates held during learning
        # Index of the newest sample a decision in progress depends on (for
        # measuring the detection delay; no effect on the output).
        self._now = -1

    @property
    def threshold(self) -> float:
        """Current primary threshold on the MWI feature."""
        return self._npk + self.cfg.threshold_frac * (self._spk - self._npk)

    def _rr_mean(self) -> float:
        # sum/len of the ints: exactly np.mean's value (an exact sum, one division), without its overhead.
        return sum(self._rr) / len(self._rr) if self._rr else self.fs

    # -- feature -------------------------------------------------------
    def _feature(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z, self._zi = sosfilt_zi_step(self._sos, y, self._zi)
        d = np.empty_like(z)
        d[0] = z[0] - self._prev
        np.subtract(z[1:], z[:-1], out=d[1:])
        self._prev = float(z[-1])
        sq = _power(np.abs(d), self._pow)
        ext = np.concatenate((self._mwi_hist, sq))
        n = self._n_mwi
        # A sum of n terms per sample (not a running cumsum, whose rounding
        # would depend on where the chunks start): same result per index.
        # The (len - n + 1, n) sliding view built directly: the same view and
        # the same reduction as sliding_window_view, without its overhead.
        st = ext.strides[0]
        view = np.ndarray((ext.size - n + 1, n), dtype=ext.dtype, buffer=ext, strides=(st, st))
        mwi = view.sum(axis=1) / n
        self._mwi_hist = ext[len(ext) - (n - 1):] if n > 1 else np.zeros(0)
        return mwi, np.abs(d)

    @staticmethod
    def feature_many(ds: list[RPeakDetector], y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_feature` of row ``i`` of ``y`` (G, n) for ``ds[i]``, in one pass.

        The detectors share one design (settings and rate). Returns (MWI,
        slope), both (G, n), each row bitwise what :meth:`_feature` gives:
        the same element-wise operations, and the MWI as the same n-term
        sum per sample over a view with one more axis (tested).
        """
        d0 = ds[0]
        z, zf = sosfilt_many(d0._sos, y, np.stack([d._zi for d in ds]))
        d = np.empty_like(z)
        d[:, 0] = z[:, 0] - np.array([det._prev for det in ds])
        np.subtract(z[:, 1:], z[:, :-1], out=d[:, 1:])
        sq = _power(np.abs(d), d0._pow)
        ext = np.concatenate((np.stack([det._mwi_hist for det in ds]), sq), axis=1)
        n = d0._n_mwi
        s0, s1 = ext.strides
        length = ext.shape[1] - n + 1
        view = np.ndarray((ext.shape[0], length, n), dtype=ext.dtype, buffer=ext, strides=(s0, s1, s1))
        mwi = view.sum(axis=2) / n
        last = z[:, -1].tolist()
        for i, det in enumerate(ds):
            det._zi = zf[i]
            det._prev = last[i]
            det._mwi_hist = ext[i, length:] if n > 1 else np.zeros(0)
        return mwi, np.abs(d)

    # -- streaming -----------------------------------------------------
    def push(self, y: np.ndarray) -> list[int]:
        """Feed conditioned samples; return QRS indices decided now."""
        y = np.asarray(y, dtype=np.float64)
        if y.size == 0:
            return []
        mwi, slope = self._feature(y)
        return self.advance(mwi, slope)

    def advance(self, mwi: np.ndarray, slope: np.ndarray) -> list[int]:
        """The part of :meth:`push` after the feature: candidates, classification.

        ``mwi`` and ``slope`` are what :meth:`_feature` returns for the next
        samples (:meth:`feature_many` computes them for many detectors at
        once, bitwise the same values).
        """
        self._append(mwi, slope)
        return self._scan()

    def _append(self, mwi: np.ndarray, slope: np.ndarray) -> None:
        self._n += mwi.size
        self._buf = np.concatenate((self._buf, mwi))
        self._slope_hist = np.concatenate((self._slope_hist, slope))

    def _scan(self) -> list[int]:
        out: list[int] = []
        w = self._w
        # Indices whose +-w neighbourhood is complete: < n - w.
        hi = self._n - w
        if hi > self._decided:
            lo_ctx = max(self._buf0, self._decided - w)
            seg = self._buf[lo_ctx - self._buf0: hi + w - self._buf0]
            mx = _centred_max(seg, w)
            a = self._decided - lo_ctx
            b = hi - lo_ctx
            core = seg[a:b]
            prev = seg[a - 1:b - 1] if a >= 1 else np.concatenate(([-np.inf], seg[a:b - 1]))
            is_c = (core >= mx[a:b]) & (core > prev) & (core > 0)
            out = self._decide_upto(hi, core, np.flatnonzero(is_c).tolist())
        self._trim()
        return out

    def _decide_upto(self, hi: int, core: np.ndarray, ks: list[int]) -> list[int]:
        """Classify the candidates at ``decided + k`` (``k`` in ``ks``); decided := ``hi``."""
        out: list[int] = []
        w = self._w
        for k in ks:
            i = self._decided + k
            s0 = max(self._buf0, i - self.refine_back)
            sl = float(self._slope_hist[s0 - self._buf0: i + 1 - self._buf0].max())
            self._now = i + w
            out.extend(self._candidate(i, float(core[k]), sl))
        self._decided = hi
        self._now = self._n - 1
        out.extend(self._searchback(self._decided - 1))
        return out

    def _trim(self) -> None:
        # Keep context for the next call: w before the undecided part and the
        # slope span refinement needs.
        w = self._w
        keep_from = max(0, min(self._decided - w, self._decided - self.refine_back) - 1)
        if keep_from > self._buf0:
            cut = keep_from - self._buf0
            self._buf = self._buf[cut:]
            self._slope_hist = self._slope_hist[cut:]
            self._buf0 = keep_from

    @staticmethod
    def advance_many(ds: list[RPeakDetector], mwi: np.ndarray, slope: np.ndarray) -> list[list[int]]:
        """:meth:`advance` of row ``i`` of ``mwi``/``slope`` (G, m) for ``ds[i]``.

        The candidate test (local maximum over +-candidate_s, rising, > 0)
        runs once over all detectors in steady state: those whose undecided
        span is exactly the new ``m`` samples with ``candidate_s`` of context
        before it, so that the span to test is the last ``m + 2w`` samples
        of each buffer. It is the same comparison of the same values as in
        :meth:`advance` (a maximum is exact in any order); the rest
        (classification, search-back) is per detector, where candidates are.
        Others (a segment's first samples) take :meth:`advance`'s path.
        """
        m = mwi.shape[1]
        out: list[list[int]] = [[] for _ in ds]
        steady: list[int] = []
        for k, det in enumerate(ds):
            det._append(mwi[k], slope[k])
            w = det._w
            if det._n - w - det._decided == m and det._decided - w >= det._buf0 and m > 0:
                steady.append(k)
            else:
                out[k] = det._scan()
        if not steady:
            return out
        w = ds[0]._w
        seg = np.stack([ds[k]._buf[ds[k]._buf.size - (m + 2 * w):] for k in steady])
        s0, s1 = seg.strides
        mx = np.ndarray((seg.shape[0], m, 2 * w + 1), dtype=seg.dtype, buffer=seg, strides=(s0, s1, s1)).max(axis=2)
        core = seg[:, w:w + m]
        is_c = (core >= mx) & (core > seg[:, w - 1:w - 1 + m]) & (core > 0)
        rows, cols = np.nonzero(is_c)
        ks: dict[int, list[int]] = {}
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            ks.setdefault(r, []).append(c)
        for r, k in enumerate(steady):
            det = ds[k]
            out[k] = det._decide_upto(det._n - det._w, core[r], ks.get(r, []))
            det._trim()
        return out

    def flush(self, tail: np.ndarray) -> list[int]:
        """End of segment: decide what the data allows.

        ``tail`` is a stand-in for the missing look-ahead (the caller passes
        the last conditioned value repeated); detections inside it are
        discarded.
        """
        n_real = self._n
        out = self.push(tail)
        if not self._learnt and self._pending:
            out.extend(self._finish_learning())
        return [q for q in out if q < n_real]

    def _candidate(self, i: int, h: float, slope: float) -> list[int]:
        if not self._learnt:
            self._pending.append((i, h, slope))
            if i < self._learn:
                return []
            return self._finish_learning()
        out = self._searchback(i - 1)
        out.extend(self._classify(i, h, slope))
        return out

    def _finish_learning(self) -> list[int]:
        hs = [h for _, h, _ in self._pending]
        # Thresholds start from the learning window's peaks: signal level at
        # a third of the largest peak (robust to one artefact), noise at half
        # the median candidate.
        self._spk = max(hs) / 3.0
        self._npk = float(np.median(hs)) / 2.0
        self._learnt = True
        pend, self._pending = self._pending, []
        out: list[int] = []
        for i, h, s in pend:
            out.extend(self._searchback(i - 1))
            out.extend(self._classify(i, h, s))
        return out

    def _classify(self, i: int, h: float, slope: float) -> list[int]:
        cfg = self.cfg
        if self._last_qrs >= 0 and i - self._last_qrs < self._min_rr:
            self._npk = 0.125 * h + 0.875 * self._npk
            return []
        if h > self.threshold:
            if (
                self._last_qrs >= 0
                and i - self._last_qrs < self._twave
                and slope < cfg.twave_slope_frac * self._last_slope
            ):
                self._npk = 0.125 * h + 0.875 * self._npk
                self._cands.append((i, h, slope))
                return []
            self._spk = 0.125 * h + 0.875 * self._spk
            return [self._accept(i, slope)]
        self._npk = 0.125 * h + 0.875 * self._npk
        self._cands.append((i, h, slope))
        return []

    def _accept(self, i: int, slope: float) -> int:
        if self._last_qrs >= 0:
            rr = i - self._last_qrs
            if rr <= self._max_rr:
                self._rr.append(rr)
                if len(self._rr) > 8:
                    self._rr.pop(0)
        self._last_qrs = i
        self._anchor = i
        self._last_slope = slope
        self._cands = []
        return i

    def _searchback(self, upto: int) -> list[int]:
        """Search back for missed QRS while the RR limit has passed by ``upto``."""
        out: list[int] = []
        while self._learnt and self._anchor >= 0:
            limit = self._anchor + round(self.cfg.searchback_rr * min(self._rr_mean(), self._max_rr))
            if upto < limit:
                break
            thr2 = self.cfg.searchback_frac * self.threshold
            ok = [
                c for c in self._cands
                if c[0] <= limit and c[0] - self._last_qrs >= self._min_rr and c[1] > thr2
            ]
            if ok:
                i, h, s = max(ok, key=lambda c: c[1])
                rest = [c for c in self._cands if c[0] > i]
                self._spk = 0.25 * h + 0.75 * self._spk
                out.append(self._accept(i, s))
                self._cands = rest
                continue
            # Nothing passes even the lower threshold: the amplitude may have
            # dropped (electrode moved). Lower the levels so the detector
            # recovers, and search on from the end of this span.
            self._cands = [c for c in self._cands if c[0] > limit]
            self._spk *= self.cfg.recover_factor
            self._npk *= self.cfg.recover_factor
            self._anchor = limit
        return out


def _power(a: np.ndarray, p: float) -> np.ndarray:
    """``a ** p`` for the slope magnitude ``a``; 1.5 and 2 as products (faster, exact for 2)."""
    if p == 2.0:
        return a * a
    if p == 1.5:
        return a * np.sqrt(a)
    return a**p


def _centred_max(x: np.ndarray, w: int) -> np.ndarray:
    """Maximum over ``x[i-w : i+w+1]`` for each i (-inf beyond the ends).

    The same values as ``scipy.ndimage.maximum_filter1d(x, 2*w+1,
    mode="constant", cval=-inf)``, without importing scipy.ndimage.
    """
    pad = np.full(w, -np.inf)
    ext = np.concatenate((pad, x, pad))
    st = ext.strides[0]
    view = np.ndarray((x.size, 2 * w + 1), dtype=ext.dtype, buffer=ext, strides=(st, st))
    return view.max(axis=1)
