"""The liveness stage: is a real, living heart on the electrodes right now?

Checks, each with a reason string when it fails:

* ``leads off``: the stream reports lead-off, unreadable or flat signal.
* ``heart rate``: median RR of recent beats outside the plausible range.
* ``variability``: RR coefficient of variation too low (a generated,
  metronomic rhythm) or too high (not a rhythm).
* ``quality``: too few good beats among recent beats.
* ``rate``: samples arrive at a rate that differs from the declared one
  (a device or replay that lies about its clock): over windows of 5-30 s
  of host time within ``rate_tolerance``; before the first 5 s, a coarser
  check (the tolerance plus 0.5 s of samples) so that a fast device is
  flagged within about a second, before a first decision.
* ``loop``: the recent RR sequence (in source samples, to +-2 ms) repeats
  an earlier stretch of the same stream exactly, at least
  ``loop_min_period_s`` ago, and the beats there have the same shape: a
  looped or replayed recording. Hearts never repeat 6 intervals to 2 ms with the same beat shapes.

Limits, stated plainly: a high-fidelity replay of the genuine person's own,
never-looped ECG through a waveform generator passes every check here; it is
a known open attack on ECG biometrics (Eberz et al., NDSS 2017).

Live before accepted (issue 16): liveness must be *positively established*
before any ``authenticated`` state is published. Until ``establish_beats``
beats are in since leads on (or a gap) and, for a paced stream, the sample
rate has been measured over ``establish_rate_s`` of arrivals within
``rate_tolerance``, the state is ``live: false`` with reason ``warming up``
(:attr:`LivenessState.condition` ``"establishing"``); the decision stage
holds an ``authenticated`` outcome at ``unknown`` meanwhile
(:mod:`ecgstream.pipeline.decide`), and the daemon's publisher refuses one
whatever the decider says (:mod:`ecgstream.daemon.output`). Once
established, the checks run over the last ``window_beats`` beats as before.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..core.settings import LivenessConfig
from ..core.types import Beat

__all__ = ["LivenessState", "LivenessTracker"]

_FP_POINTS = 16
_WARMUP_ONLY = frozenset({"warmup"})
_ARTIFACT = frozenset({"clipped", "invalid", "edge"})
#: Prefix of a window check that fails on fewer than ``window_beats`` beats: it holds
#: liveness back (not established), it is not a positive failure.
ESTABLISHING = "establishing: "
#: Beats with a full quality assessment (not warm-up only) needed before liveness is established.
MIN_ASSESSED_BEATS = 3


def _median_of(s: list[float]) -> float:
    """Median of sorted finite floats, as ``np.median`` gives it (mean of the two middles when even)."""
    k = len(s)
    return s[k // 2] if k % 2 else (s[k // 2 - 1] + s[k // 2]) / 2.0


@functools.lru_cache(maxsize=8)
def _fp_index(n: int) -> np.ndarray:
    """Sample positions of a beat's fingerprint in a window of ``n`` samples (one per size)."""
    idx = np.linspace(0, n - 1, _FP_POINTS).astype(int)
    idx.flags.writeable = False
    return idx
#: Seconds of samples a window shorter than 5 s may be ahead or behind the declared rate.
EARLY_RATE_SLACK_S = 0.5


@dataclass(frozen=True)
class LivenessState:
    """Outcome of the liveness checks for one device."""

    live: bool
    leads_on: bool
    heart_rate_bpm: float | None
    signal_quality: float | None
    rr_cv: float | None
    reasons: tuple[str, ...]
    warming_up: bool
    rate_declared_hz: float
    rate_measured_hz: float | None

    @property
    def condition(self) -> str:
        """``"live"``, ``"leads_off"``, ``"failed"`` (a positive failure) or ``"establishing"``.

        The auth payload's ``liveness`` field; only ``"live"`` allows ``authenticated``.
        """
        if self.live:
            return "live"
        if not self.leads_on:
            return "leads_off"
        return "failed" if self.failed else "establishing"

    @property
    def pending(self) -> str | None:
        """Why liveness is not (yet) established when it has not failed either, else None."""
        if self.live or self.failed:
            return None
        return "; ".join(self.reasons) or "warming up"

    @property
    def failed(self) -> str | None:
        """The reasons of a positive failure (not warming up), or None."""
        if self.live:
            return None
        hard = [r for r in self.reasons if r != "warming up" and not r.startswith(ESTABLISHING)]
        return "; ".join(hard) if hard else None


class LivenessTracker:
    """Liveness state of one device stream.

    Parameters
    ----------
    fs_hz : float
        Declared source rate.
    cfg : LivenessConfig
    expected_speed : float or None
        Replay speed factor (1 for a live device); None disables the rate
        check (replay as fast as possible).
    """

    def __init__(self, fs_hz: float, cfg: LivenessConfig, expected_speed: float | None = 1.0) -> None:
        self.fs = float(fs_hz)
        self.cfg = cfg
        self.expected_speed = expected_speed
        # (rr_s, good) of the recent beats: all the checks read of them (a whole
        # Beat would keep its window alive, ~9 kB a device).
        self._recent: deque[tuple[float, bool, bool]] = deque(maxlen=cfg.window_beats)  # rr, good, warm-up only
        self._beat_figures: tuple | None = None  # (hr, cv, q, n) of _recent, until it changes
        n_hist = int(cfg.loop_max_period_s * cfg.max_hr_bpm / 60.0) + cfg.loop_match_beats + 2
        self._rr = np.zeros(n_hist, dtype=np.int32)  # ring of RR intervals (source samples)
        self._fp = np.zeros((n_hist, _FP_POINTS), dtype=np.float16)  # ~50 kB per device for 5 min
        self._t = np.zeros(n_hist)  # R times (s)
        self._n = 0
        self._tol = max(1, round(0.002 * self.fs))
        self._rate_t0: float | None = None
        self._rate_n = 0
        self._rate_hz: float | None = None
        self._rate_span = 0.0
        self.loop_flagged_at_s: float | None = None

    def reset_beats(self) -> None:
        """Forget recent beats (gap or leads off); the loop history is kept."""
        self._recent.clear()
        self._beat_figures = None

    def reset(self, reason: str = "leads off") -> None:
        """A new contact: forget recent beats and the loop flag (the loop history stays,
        so a loop that continues is flagged again within a few beats)."""
        self.reset_beats()
        self.loop_flagged_at_s = None

    # -- the stage contract ------------------------------------------------
    def push_samples(self, n: int, host_s: float, gap_before: bool = False) -> None:
        """One chunk's ``n`` samples arrived at host time ``host_s``.

        After a gap the arrival history restarts (time the device was away
        is not a slow sample clock).
        """
        if gap_before:
            self.reset_rate()
        self.on_samples(n, host_s)

    def push(self, beat: Beat, leads_off: bool) -> LivenessState:
        """Record one beat (good or not) and evaluate every check after it."""
        self.on_beat(beat)
        return self.state(leads_off)

    # -- inputs ----------------------------------------------------------
    def on_samples(self, n: int, host_s: float) -> None:
        """Count ``n`` samples that arrived at host time ``host_s``."""
        if self._rate_t0 is None:
            self._rate_t0 = host_s
            self._rate_n = 0
            self._rate_span = 0.0
            return
        self._rate_n += n
        span = host_s - self._rate_t0
        self._rate_span = span
        if span >= 5.0:
            self._rate_hz = self._rate_n / span
        if span >= 30.0:  # sliding: restart the window, keep the last estimate
            self._rate_t0, self._rate_n, self._rate_span = host_s, 0, 0.0

    def reset_rate(self) -> None:
        """Forget the arrival history (after a gap: a reconnect, lost messages).

        The next chunk starts a new window; until it spans 5 s the early
        check of :meth:`state` applies again.
        """
        self._rate_t0 = None
        self._rate_n = 0
        self._rate_span = 0.0
        self._rate_hz = None

    def _early_rate(self, expect: float) -> float | None:
        """Arrival rate of a window shorter than 5 s when it is clearly off, else None.

        Before the first 5-second estimate a device that sends at another
        rate than it declares would otherwise pass for the first seconds,
        long enough for a decision (a genuine replay at 2x is decided in
        about 2.5 s of host time). Samples received are compared with the
        declared rate over the window with the relative tolerance plus a
        slack of :data:`EARLY_RATE_SLACK_S` seconds of samples, which absorbs
        chunking and a start-up burst: at 2x the flag comes after about
        0.5 s.
        """
        span = self._rate_span
        if self._rate_hz is not None or span <= 0.0:
            return None
        tol = self.cfg.rate_tolerance
        slack = EARLY_RATE_SLACK_S * expect
        n = self._rate_n
        if expect * span * (1 - tol) - slack <= n <= expect * span * (1 + tol) + slack:
            return None
        return n / span

    def _rate_pending(self, expect: float) -> bool:
        """The rate is not yet measured well enough to establish liveness.

        Before the first 5-second window, ``establish_rate_s`` of arrivals
        within ``rate_tolerance`` of the declared rate (plus one 20 ms
        arrival jitter) establish it; a window that is clearly off is a
        failure (:meth:`_early_rate`), not pending.
        """
        if self._rate_hz is not None:
            return False
        span = self._rate_span
        if span < self.cfg.establish_rate_s:
            return True
        tol = self.cfg.rate_tolerance * expect * span + 0.02 * expect
        return abs(self._rate_n - expect * span) > tol

    def on_beat(self, beat: Beat) -> None:
        """Record one beat (good or not)."""
        # The RR of a beat whose window is an artifact (saturated, bridged over unreadable
        # samples, padded at a segment edge) is not a heart's interval: it counts as a bad
        # beat for quality, never in the rhythm figures.
        rr = float("nan") if beat.flags & _ARTIFACT else beat.rr_s
        self._recent.append((rr, beat.good, beat.flags == _WARMUP_ONLY))
        self._beat_figures = None
        if not np.isfinite(beat.rr_s):
            return
        i = self._n % self._rr.size
        self._rr[i] = round(beat.rr_s * self.fs)
        w = beat.window
        idx = _fp_index(w.size)
        self._fp[i] = w[idx]
        self._t[i] = beat.r_time_s
        self._n += 1
        if self.loop_flagged_at_s is None and self._looped():
            self.loop_flagged_at_s = beat.r_time_s

    # -- checks ----------------------------------------------------------
    def _looped(self) -> bool:
        m = self.cfg.loop_match_beats
        n = min(self._n, self._rr.size)
        if n < 2 * m:
            return False
        order = (np.arange(self._n - n, self._n)) % self._rr.size
        rr = self._rr[order]
        t = self._t[order]
        fp = self._fp[order].astype(np.float32)
        last = rr[-m:]
        # Earlier stretches ending at position j (exclusive of the last m).
        win = np.lib.stride_tricks.sliding_window_view(rr[:-m], m)
        hit = np.all(np.abs(win - last) <= self._tol, axis=1)
        if not hit.any():
            return False
        t_now = t[-1]
        fp_last = fp[-m:]
        ptp = float(np.ptp(fp_last)) or 1.0
        for j in np.flatnonzero(hit):
            if t_now - t[j + m - 1] < self.cfg.loop_min_period_s:
                continue
            if np.max(np.abs(fp[j:j + m] - fp_last)) <= 0.05 * ptp:
                return True
        return False

    def _figures(self) -> tuple:
        """Heart rate, RR variability and quality of the recent beats.

        Computed once per change of the recent beats, not on every call:
        :meth:`state` is called for every device on every daemon tick.
        """
        if self._beat_figures is None:
            beats = list(self._recent)
            rr_list = [rr for rr, _, _ in beats if math.isfinite(rr)]
            rr = np.array(rr_list)
            # The values of 60 / np.median(rr), np.std(rr) / np.mean(rr) and
            # np.mean(good), computed as numpy does (sorted middle; sum / n;
            # sqrt of the mean squared deviation; count / n) without its
            # wrappers: this runs for every beat of every device.
            hr = 60.0 / _median_of(sorted(rr_list)) if rr_list else None
            cv = None
            if rr.size >= 3:
                mean = np.add.reduce(rr) / rr.size
                dev = rr - mean
                cv = float(np.sqrt(np.add.reduce(dev * dev) / rr.size) / mean)
            # Quality: the share of good beats. While the window is filling (after leads on or
            # a reset) a beat flagged only "warmup" (no median beat yet to compare its shape
            # with; the RR, clipping and edge checks passed) is not counted either way: it has
            # not been judged. Once the window is full the old rule holds: it is not good.
            if len(beats) < self.cfg.window_beats:
                judged = [good for _, good, warm in beats if not warm]
            else:
                judged = [good for _, good, _ in beats]
            q = sum(judged) / len(judged) if judged else None
            self._beat_figures = (hr, cv, q, int(rr.size), len(beats), len(judged))
        return self._beat_figures

    def state(self, leads_off: bool) -> LivenessState:
        """Evaluate all checks now."""
        cfg = self.cfg
        reasons: list[str] = []
        hr, cv, q, n_rr, n_beats, n_judged = self._figures()
        few = n_beats < cfg.establish_beats or n_judged < min(MIN_ASSESSED_BEATS, cfg.establish_beats)
        warming = few
        if self.expected_speed and not few and not leads_off:
            warming = self._rate_pending(self.fs * self.expected_speed)
        if leads_off:
            reasons.append("leads off")
        if warming and not leads_off:
            reasons.append("warming up")
        if hr is not None and n_rr >= 3 and not cfg.min_hr_bpm <= hr <= cfg.max_hr_bpm:
            reasons.append(f"heart rate {hr:.0f}/min implausible")
        # The window checks (variability, quality) on fewer than window_beats beats can only
        # hold liveness back ("establishing: ..."): a positive failure needs the full window,
        # as it always has. Heart rate, rate and loop fail at once, as before.
        window: list[str] = []
        if cv is not None and not few:
            if cv < cfg.min_rr_cv:
                window.append(f"RR too regular (cv {cv:.4f})")
            elif cv > cfg.max_rr_cv:
                window.append(f"RR irregular beyond a rhythm (cv {cv:.2f})")
        if q is not None and not few and q < cfg.min_quality:
            window.append(f"signal quality {q:.2f}")
        if window and n_beats < cfg.window_beats:
            if not warming and not leads_off:
                reasons.append("warming up")
            reasons.extend(f"{ESTABLISHING}{r}" for r in window)
            warming = True
        else:
            reasons.extend(window)
        measured = self._rate_hz
        if self.expected_speed:
            expect = self.fs * self.expected_speed
            if self._rate_hz is not None:
                if abs(self._rate_hz - expect) > cfg.rate_tolerance * expect:
                    reasons.append(f"rate {self._rate_hz:.1f} Hz, declared {expect:.1f} Hz")
            else:
                early = self._early_rate(expect)
                if early is not None:
                    measured = early
                    reasons.append(f"rate {early:.1f} Hz, declared {expect:.1f} Hz")
        if self.loop_flagged_at_s is not None:
            reasons.append("looped or replayed recording")
        return LivenessState(
            live=not reasons,
            leads_on=not leads_off,
            heart_rate_bpm=hr,
            signal_quality=q,
            rr_cv=cv,
            reasons=tuple(reasons),
            warming_up=warming,
            rate_declared_hz=self.fs,
            rate_measured_hz=measured,
        )
