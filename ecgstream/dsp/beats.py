"""From chunks of samples to beats: the streaming pipeline of one device.

:class:`BeatPipeline` chains the conditioner, the R-peak detector and the
beat extractor for one device's stream. Its offline form,
:func:`ecgstream.dsp.offline.extract_beats` (training, benchmarks), is this
same class run over a whole record; its fleet form,
:class:`ecgstream.dsp.fleet.FleetDsp`, runs many of them in shared passes.
"""

from __future__ import annotations

import numpy as np

from ..core.types import Beat, SampleChunk
from .conditioner import Conditioner
from .config import DspConfig
from .detector import DetectorConfig, RPeakDetector
from .flutter import leakage
from .quality import BeatQuality
from .refine import PeakRefiner
from .status import StreamStatus, coerce_samples

__all__ = ["BeatPipeline", "StreamStatus", "coerce_samples"]


class BeatPipeline:
    """Condition, detect and cut beats from one device's stream.

    Parameters
    ----------
    device : str
        Device id written into every beat.
    fs_in_hz : float
        Declared rate of the incoming samples (100..1000 Hz).
    cfg : DspConfig, optional
        Processing settings (those of the model card in the daemon).
    detector : DetectorConfig, optional
        R-peak detector settings.

    Notes
    -----
    Output does not depend on chunking: every decision is tied to a sample
    index. A beat is emitted once ``window_after_s`` of signal after its R
    peak has arrived, plus the detector's delay (see
    :mod:`ecgstream.dsp.detector`).
    """

    def __init__(
        self,
        device: str,
        fs_in_hz: float,
        cfg: DspConfig | None = None,
        detector: DetectorConfig | None = None,
    ) -> None:
        self.cfg = cfg = cfg or DspConfig()
        cfg.check_input_rate(fs_in_hz)
        self.device = device
        self.fs_in = float(fs_in_hz)
        self.conditioner = Conditioner(fs_in_hz, cfg)
        self.detector = RPeakDetector(cfg.fs_hz, detector)
        self.quality = BeatQuality()
        self._refiner = PeakRefiner(self.detector)
        up, down = self.conditioner.resampler.up, self.conditioner.resampler.down
        self._in_per_out = down / up  # source samples per processing sample
        self._delay_in = self.conditioner.delay_s * self.fs_in
        self._hold_max = max(1, round(cfg.hold_max_s * self.fs_in))
        self._flat_n = max(2, round(cfg.flat_s * self.fs_in))
        self._clip_n = max(3, round(cfg.clip_run_s * self.fs_in))
        self._qrs_half_in = max(1, round(_QRS_HALF_S * self.fs_in))
        # Conditioned history to keep: the detector may report a QRS as late
        # as its search-back span (or the learning span) after it happened.
        dc = self.detector.cfg
        late_s = max(dc.learn_s, dc.searchback_rr * dc.max_rr_s) + dc.candidate_s
        # The flutter test reads flutter_back before R (more than the beat
        # window), so that much more is kept, whatever the chunking.
        self._flutter_back = max(cfg.n_before, round(dc.flutter_back_s * cfg.fs_hz))
        self._flutter_k = max(1, round(dc.flutter_smooth_s * cfg.fs_hz))
        self._y_keep = (self.detector.refine_back + self._flutter_back + cfg.n_before
                        + self.detector.refine_half + round(late_s * cfg.fs_hz) + 8)
        self._raw_keep = round((cfg.window_before_s + cfg.window_after_s + late_s + self.conditioner.delay_s) * self.fs_in) + 64
        # Pipelines with equal keys share a pass in ecgstream.dsp.fleet.
        self.design_key = _design_key(cfg, self.detector.cfg, self.fs_in)
        self.status = StreamStatus()
        self._started = False
        self._flat_run = 0  # identical raw samples ending at the last one
        self._flat_last: float | None = None
        self._new_segment(0)

    # -- segment state ---------------------------------------------------
    def _new_segment(self, src_start: int) -> None:
        self.conditioner.reset()
        self.detector.reset()
        self.quality.reset()
        self._seg0 = src_start  # source index of the segment's first sample
        self._y = np.zeros(0)  # conditioned history
        self._y0 = 0  # processing index of _y[0]
        self._pending: list[int] = []  # refined R indices waiting for their window
        self._last_r_src: int | None = None
        self._refiner.reset()
        self._in_flutter = False
        self._raw = np.zeros(0)  # raw history (source rate), held values in place of NaN
        self._raw_bad = np.zeros(0, dtype=bool)
        self._raw0 = src_start
        self._fed = 0  # finite samples fed to the conditioner in this segment
        self._invalid_run = 0
        self._last_valid: float | None = None
        self.status.segments += 1

    def reset(self) -> None:
        """Forget everything, including counters."""
        self.status = StreamStatus()
        self._started = False
        self._flat_run = 0
        self._flat_last = None
        self._new_segment(0)

    # -- public API ------------------------------------------------------
    def push(self, chunk: SampleChunk) -> list[Beat]:
        """Process one chunk; return the beats completed by it.

        Raises
        ------
        TypeError
            If the samples are not a 1-D numeric array.
        ValueError
            If the chunk's rate differs from the pipeline's.
        """
        x = coerce_samples(chunk.samples)
        if chunk.fs_hz != self.fs_in:
            raise ValueError(
                f"device {self.device!r}: chunk at {chunk.fs_hz} Hz fed to a pipeline "
                f"built for {self.fs_in} Hz; a rate change needs a new pipeline"
            )
        st = self.status
        start = int(chunk.start_sample)
        beats: list[Beat] = []
        if not self._started:
            self._started = True
            self._new_segment(start)
            st.segments = 1
            st.next_sample = start
        elif chunk.gap_before or start > st.next_sample:
            beats.extend(self._flush_segment())
            self._new_segment(start)
        elif start < st.next_sample:
            dup = min(st.next_sample - start, x.size)
            st.samples_duplicate += dup
            x = x[dup:]
            start += dup
        if x.size == 0:
            return beats
        st.samples_in += x.size
        bad = ~np.isfinite(x) if not chunk.leads_off else np.ones(x.size, dtype=bool)
        if not bad.any() and self._invalid_run == 0:
            beats.extend(self._feed(x, start))
        else:
            beats.extend(self._feed_with_invalid(x, bad, start))
        st.next_sample = start + x.size
        return beats

    def flush(self) -> list[Beat]:
        """End of stream: emit beats still waiting, padded and flagged ``edge``."""
        return self._flush_segment()

    # -- internals -------------------------------------------------------
    def _feed_with_invalid(self, x: np.ndarray, bad: np.ndarray, start: int) -> list[Beat]:
        st = self.status
        beats: list[Beat] = []
        st.samples_invalid += int(bad.sum())
        # Split into runs of equal validity.
        edges = np.flatnonzero(np.diff(bad.astype(np.int8))) + 1
        bounds = np.concatenate(([0], edges, [x.size]))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            a, b = int(a), int(b)
            if not bad[a]:
                if self._invalid_run > self._hold_max:
                    # Contact is back after a long dropout: a new segment.
                    self._new_segment(start + a)
                elif self._fed == 0:
                    # Unreadable samples before any data: the segment starts here.
                    self._seg0 = self._raw0 = start + a
                self._invalid_run = 0
                beats.extend(self._feed(x[a:b], start + a))
                continue
            n = b - a
            room = max(0, self._hold_max - self._invalid_run)
            bridge = min(room, n)
            if bridge and self._last_valid is not None and self._fed:
                held = np.full(bridge, self._last_valid)
                beats.extend(self._feed(held, start + a, bad=True))
            self._invalid_run += n
            if self._invalid_run > self._hold_max:
                if not st.leads_off:
                    beats.extend(self._flush_segment())
                st.leads_off = True
        return beats

    def _feed(self, x: np.ndarray, src_start: int, bad: bool = False) -> list[Beat]:
        """Feed finite samples that continue the current segment."""
        self._take(x, src_start, bad)
        return self._conditioned(self.conditioner.push(x))

    def _take(self, x: np.ndarray, src_start: int, bad: bool, last_change: int | None = None) -> None:
        """Bookkeeping of samples about to be conditioned (raw history, contact).

        ``last_change``: index in ``np.diff(x)`` of the last non-zero
        difference (-1: none), when the caller computed it for many chunks at
        once (:mod:`.fleet`); else it is computed here.
        """
        st = self.status
        if not bad:
            self._last_valid = float(x[-1])
            self._track_flat(x, last_change)
            st.leads_off = st.flat
        expect = self._seg0 + self._fed
        if src_start != expect:
            # Samples skipped inside a segment cannot happen here: the caller
            # starts a new segment on any jump.
            raise AssertionError("segment bookkeeping out of step")
        self._fed += x.size
        self._raw = np.concatenate((self._raw, x))
        self._raw_bad = np.concatenate((self._raw_bad, np.full(x.size, bad)))

    def _conditioned(self, y: np.ndarray, qrs: list[int] | None = None) -> list[Beat]:
        """Detect and cut beats in newly conditioned samples ``y``.

        ``qrs``: what the detector decided on ``y``, when :mod:`.fleet` ran
        the detectors of many devices at once; None runs it here.
        """
        if y.size == 0:
            self._trim_raw()
            return []
        self._y = np.concatenate((self._y, y))
        qs = self.detector.push(y) if qrs is None else qrs
        for q in qs:
            self._pending.append(self._refine(q))
        beats = self._emit(final=False)
        # Trim the raw history only after the beats of this chunk have read
        # it: a large chunk (a whole record) emits beats from its start too.
        self._trim_raw()
        keep = self._y_keep
        n_total = self._y0 + self._y.size
        oldest = min([n_total - keep] + [r - self._flutter_back for r in self._pending])
        if oldest > self._y0:
            self._y = self._y[oldest - self._y0:]
            self._y0 = oldest
        return beats

    def plain(self, chunk: SampleChunk) -> np.ndarray | None:
        """The chunk's samples if it simply continues the stream, else None.

        A plain chunk (same rate, contiguous, no gap or lead-off mark, no
        dropout in progress, a primed conditioner) can be advanced in a batch
        of devices by :class:`~ecgstream.dsp.fleet.FleetDsp`; any other goes
        through :meth:`push`. Finiteness is checked by the caller. Nothing is
        changed here.
        """
        if (chunk.fs_hz != self.fs_in or chunk.gap_before or chunk.leads_off or not self._started
                or self._invalid_run or int(chunk.start_sample) != self.status.next_sample
                or self.conditioner._zi is None):
            return None
        x = coerce_samples(chunk.samples)
        return x if x.size else None

    def _trim_raw(self) -> None:
        if self._raw.size > self._raw_keep:
            cut = self._raw.size - self._raw_keep
            self._raw = self._raw[cut:]
            self._raw_bad = self._raw_bad[cut:]
            self._raw0 += cut

    def _track_flat(self, x: np.ndarray, last_change: int | None = None) -> None:
        # Length of the run of identical values ending at the last sample.
        if last_change is None:
            ch = np.flatnonzero(np.diff(x) != 0)
            last_change = int(ch[-1]) if ch.size else -1
        if last_change < 0:
            run = self._flat_run + x.size if x[0] == self._flat_last else x.size
        else:
            run = x.size - 1 - last_change
        self._flat_run = run
        self._flat_last = float(x[-1])
        self.status.flat = run >= self._flat_n

    def _refine(self, q: int) -> int:
        """Move a detector index to the R extremum of the conditioned signal (:mod:`.refine`)."""
        return self._refiner.refine(self._y, self._y0, q)

    def _emit(self, final: bool) -> list[Beat]:
        cfg = self.cfg
        n_total = self._y0 + self._y.size
        out: list[Beat] = []
        while self._pending:
            r = self._pending[0]
            end = r + cfg.n_after
            if end > n_total and not final:
                break
            self._pending.pop(0)
            if self._flutter(r, min(end, n_total)):
                self.status.flutter_suppressed += 1
                # What follows a flutter run has no meaningful RR.
                self._last_r_src = None
                continue
            out.append(self._make_beat(r, end, n_total))
        return out

    def _flutter(self, r: int, end: int) -> bool:
        """True if the detection at ``r`` lies in sustained sinusoidal activity.

        The test and why: :mod:`.flutter`. Hysteresis: flutter starts below
        ``flutter_enter`` and lasts while the leakage stays below
        ``flutter_stay``.
        """
        dc = self.detector.cfg
        if dc.flutter_enter <= 0:
            return False
        lo = max(0, self._y0, r - self._flutter_back)
        leak = leakage(self._y[lo - self._y0: end - self._y0], self._flutter_k)
        if leak is None:
            return False
        self._in_flutter = leak < (dc.flutter_stay if self._in_flutter else dc.flutter_enter)
        return self._in_flutter

    def _make_beat(self, r: int, end: int, n_total: int) -> Beat:
        cfg = self.cfg
        st = self.status
        flags: set[str] = set()
        lo = r - cfg.n_before
        a, b = max(lo, self._y0), min(end, n_total)
        win = self._y[a - self._y0: b - self._y0]
        if a > lo or b < end:
            flags.add("edge")
            win = np.pad(win, (a - lo, end - b), mode="edge")
        r_src = self._seg0 + round(r * self._in_per_out - self._delay_in)
        rr_s = float("nan") if self._last_r_src is None else (r_src - self._last_r_src) / self.fs_in
        self._last_r_src = r_src
        # Raw span of the window, for clipping and bridged samples.
        s_lo = self._seg0 + int(np.floor(lo * self._in_per_out - self._delay_in))
        s_hi = self._seg0 + int(np.ceil(end * self._in_per_out - self._delay_in))
        ra = max(0, s_lo - self._raw0)
        rb = max(ra, min(self._raw.size, s_hi - self._raw0))
        raw = self._raw[ra:rb]
        if _bridged_too_much(self._raw_bad[ra:rb], r_src - (self._raw0 + ra), self._qrs_half_in):
            flags.add("invalid")
        if raw.size and (_run_at(raw, raw.max(), self._clip_n) >= self._clip_n
                         or _run_at(raw, raw.min(), self._clip_n) >= self._clip_n):
            flags.add("clipped")
        quality, qflags = self.quality.assess(win, cfg.n_before, rr_s)
        flags |= qflags
        if flags:
            quality = min(quality, 0.5) if flags - {"warmup"} else quality
        st.beats += 1
        if not flags:
            st.beats_good += 1
        for f in flags:
            st.flags[f] = st.flags.get(f, 0) + 1
        ready = self._seg0 + int(np.ceil(min(end, n_total) * self._in_per_out)) - 1
        return Beat(
            device=self.device,
            r_sample=int(r_src),
            r_time_s=r_src / self.fs_in,
            window=win.astype(np.float32),
            rr_s=rr_s,
            quality=float(quality),
            flags=frozenset(flags),
            ready_sample=int(ready),
        )

    def _flush_segment(self) -> list[Beat]:
        """Decide what the segment's data allows, emit pending beats padded."""
        if self._fed == 0:
            return []
        # Let the detector decide its look-ahead span by feeding it the
        # conditioned signal's last value (no new QRS can appear in it).
        tail = np.full(self.detector._w + 1, self._y[-1] if self._y.size else 0.0)
        for q in self.detector.flush(tail):
            self._pending.append(self._refine(q))
        return self._emit(final=True)


_DESIGNS: dict[tuple, int] = {}


#: Half-width of the QRS around R (seconds): a bridged sample there makes a beat "invalid".
_QRS_HALF_S = 0.06
#: Bridged samples a beat window may hold outside the QRS and still be good.
_BRIDGED_OK = 2


def _bridged_too_much(bad: np.ndarray, r_at: int, qrs_half: int) -> bool:
    """Whether the bridged (held) samples of a beat's raw span make it ``invalid``.

    A held sample or two outside the QRS change the window by less than the
    noise (one garbled serial line a second must not flag every beat, issue
    18); one inside the QRS, where the template is most specific, or more
    than :data:`_BRIDGED_OK` anywhere, do.

    Parameters
    ----------
    bad : ndarray of bool
        Bridged samples of the beat's raw span (source rate).
    r_at : int
        Index of R within ``bad``.
    qrs_half : int
        Half-width of the QRS in source samples.
    """
    n = int(np.count_nonzero(bad))
    if n == 0:
        return False
    if n > _BRIDGED_OK:
        return True
    lo, hi = max(0, r_at - qrs_half), max(0, r_at + qrs_half + 1)
    return bool(bad[lo:hi].any())


def _design_key(cfg: DspConfig, det: DetectorConfig, fs_in: float) -> int:
    """A small int per distinct (settings, detector settings, rate): exact, unlike a hash."""
    return _DESIGNS.setdefault((cfg, det, fs_in), len(_DESIGNS))


def _run_at(x: np.ndarray, value: float, at_least: int = 0) -> int:
    """Longest run of consecutive samples of ``x`` equal to ``value``.

    With ``at_least``: when fewer samples than that equal ``value`` at all,
    their count (no run can be longer) is returned at once: the caller only
    asks whether a run reaches ``at_least``, and most beats have one maximum.
    """
    hit = x == value
    if at_least:
        n = int(np.count_nonzero(hit))
        if n < at_least:
            return n
    eq = np.concatenate(([False], hit, [False]))
    d = np.diff(eq.astype(np.int8))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    return int((ends - starts).max()) if starts.size else 0
