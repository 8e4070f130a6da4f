"""A deterministic synthetic ECG, as a function and as a source.

``synthetic:?fs=500&hr=70&seconds=30&device=ID&seed=1&leads_off_at=10&noise=0.02``

* ``fs``: sampling rate in Hz (default 500).
* ``hr``: mean heart rate in beats per minute (default 70; 20..250).
* ``seconds``: length of the stream in seconds (default 30).
* ``device``: device id (default ``synthetic``).
* ``seed``: seed of the random parts (RR variability, noise); the same seed
  gives the same samples however the stream is chunked.
* ``rr_cv``: coefficient of variation of the RR intervals (default 0.05).
* ``noise``: standard deviation of the added white noise in mV (default 0.02).
* ``leads_off_at``: comma-separated start times in seconds of lead-off
  periods; each lasts ``leads_off_s`` seconds (default 2). Their samples are
  NaN in chunks marked ``leads_off=True``, as a wearable that reports lead
  off would send them.
* ``speed``: 1 paces at real time, 0 or ``max`` as fast as possible (default).
* ``chunk_s``: seconds of signal per chunk (default 0.1).

The waveform is a sum of Gaussians per wave (P, Q, R, S, T) per beat, in the
spirit of McSharry et al. (2003), "A dynamical model for generating synthetic
electrocardiogram signals", IEEE TBME 50(3), but placed beat by beat rather
than integrated. RR intervals carry respiratory sinus arrhythmia (0.25 Hz),
a slower Mayer-wave component (0.1 Hz) and AR(1) noise; the QT interval
follows the RR (Bazett). Baseline wander at the breathing rate is added.
It is a test signal: plausible to the DSP and to liveness, not a person.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

from ..core.types import SampleChunk
from .base import FiniteSource, SourceError, SourceStats, SourceURI, parse_speed

__all__ = ["EcgSynth", "SyntheticSource", "synth_ecg"]

log = logging.getLogger(__name__)

# (offset from R in s at RR = 1 s, amplitude in mV, width in s) per wave.
_WAVES = (
    ("P", -0.20, 0.15, 0.025),
    ("Q", -0.035, -0.12, 0.010),
    ("R", 0.0, 1.10, 0.011),
    ("S", 0.035, -0.28, 0.011),
    ("T", 0.28, 0.32, 0.050),
)
_RESP_HZ = 0.25  # breathing rate
_MAYER_HZ = 0.1  # blood-pressure (Mayer) waves
_SPAN_S = 0.6  # a wave's Gaussian is evaluated within this distance of the R peak


class EcgSynth:
    """Streaming generator of a synthetic single-lead ECG in mV.

    Parameters
    ----------
    fs_hz : float
        Sampling rate in Hz.
    hr_bpm : float
        Mean heart rate in beats per minute.
    seed : int
        Seed of the RR variability and the noise.
    rr_cv : float
        Coefficient of variation of the RR intervals (0 = metronome).
    noise_mv : float
        Standard deviation of white noise in mV.

    Notes
    -----
    :meth:`render` returns the next ``n`` samples; the concatenation of any
    sequence of calls equals one call for the total (the RR series and the
    noise use separate random streams, drawn in stream order).
    """

    def __init__(self, fs_hz: float = 500.0, hr_bpm: float = 70.0, seed: int = 0,
                 rr_cv: float = 0.05, noise_mv: float = 0.0) -> None:
        if not 20.0 <= hr_bpm <= 250.0:
            raise ValueError(f"hr_bpm must be in 20..250, got {hr_bpm}")
        if not 10.0 <= fs_hz <= 20000.0:
            raise ValueError(f"fs_hz must be in 10..20000 Hz, got {fs_hz}")
        if not 0.0 <= rr_cv <= 0.3:
            raise ValueError(f"rr_cv must be in 0..0.3, got {rr_cv}")
        if not noise_mv >= 0.0:
            raise ValueError(f"noise_mv must be >= 0, got {noise_mv}")
        self.fs_hz = float(fs_hz)
        self.rr_mean_s = 60.0 / float(hr_bpm)
        self.rr_cv = float(rr_cv)
        self.noise_mv = float(noise_mv)
        rr_ss, noise_ss, phase_ss = np.random.SeedSequence(seed).spawn(3)
        self._rng_rr = np.random.default_rng(rr_ss)
        self._rng_noise = np.random.default_rng(noise_ss)
        self._phase = float(np.random.default_rng(phase_ss).uniform(0, 2 * math.pi))
        self._ar = 0.0
        self._beats: list[tuple[float, float]] = []  # (R time s, RR before it s)
        self._t_last = 0.25 + 0.5 * self.rr_mean_s * float(self._rng_rr.uniform())
        self._beats.append((self._t_last, self.rr_mean_s))
        self._n = 0  # samples rendered so far

    def _next_rr(self, t: float) -> float:
        # Shares of the variance: RSA 50 %, Mayer 20 %, AR(1) noise 30 %.
        sd = self.rr_cv * self.rr_mean_s
        rsa = math.sqrt(2 * 0.5) * sd * math.sin(2 * math.pi * _RESP_HZ * t + self._phase)
        mayer = math.sqrt(2 * 0.2) * sd * math.sin(2 * math.pi * _MAYER_HZ * t + 2 * self._phase)
        rho = 0.5
        self._ar = rho * self._ar + math.sqrt(1 - rho * rho) * float(self._rng_rr.standard_normal())
        rr = self.rr_mean_s + rsa + mayer + math.sqrt(0.3) * sd * self._ar
        return min(max(rr, 0.25, 0.6 * self.rr_mean_s), 1.6 * self.rr_mean_s)

    def render(self, n: int) -> np.ndarray:
        """Return the next ``n`` samples (float64, mV)."""
        n = int(n)
        if n < 0:
            raise ValueError("n must be >= 0")
        fs = self.fs_hz
        i0 = self._n
        t = (i0 + np.arange(n)) / fs
        t_end = (i0 + n) / fs
        while self._t_last < t_end + _SPAN_S + 1.0:
            rr = self._next_rr(self._t_last)
            self._t_last += rr
            self._beats.append((self._t_last, rr))
        x = np.zeros(n)
        resp = np.sin(2 * math.pi * _RESP_HZ * t + self._phase)
        for tr, rr in self._beats:
            a = max(0, math.floor((tr - _SPAN_S) * fs) - i0)
            b = min(n, math.ceil((tr + _SPAN_S) * fs) - i0 + 1)
            if a >= b:
                continue
            dt = t[a:b] - tr
            qt = math.sqrt(rr)  # Bazett: QT grows with the square root of RR
            amp = 1.0 + 0.08 * math.sin(2 * math.pi * _RESP_HZ * tr + self._phase)
            for name, off, mv, width in _WAVES:
                scale = qt if name in ("T", "P") else 1.0
                w = width * (qt if name == "T" else 1.0)
                x[a:b] += amp * mv * np.exp(-0.5 * ((dt - off * scale) / w) ** 2)
        # Forget beats that can no longer reach future samples.
        keep_from = t_end - _SPAN_S - 0.1
        self._beats = [bt for bt in self._beats if bt[0] >= keep_from]
        x += 0.06 * resp  # baseline wander at the breathing rate
        if self.noise_mv > 0 and n:
            x += self.noise_mv * self._rng_noise.standard_normal(n)
        self._n += n
        return x


def synth_ecg(seconds: float, fs: float = 500.0, hr_bpm: float = 70.0, seed: int = 0,
              rr_cv: float = 0.05, noise_mv: float = 0.0) -> np.ndarray:
    """Synthesise a single-lead ECG.

    Parameters
    ----------
    seconds : float
        Length in seconds.
    fs : float
        Sampling rate in Hz.
    hr_bpm : float
        Mean heart rate in beats per minute.
    seed : int
        Seed; equal arguments give equal samples.
    rr_cv : float
        Coefficient of variation of the RR intervals.
    noise_mv : float
        Standard deviation of added white noise in mV.

    Returns
    -------
    numpy.ndarray
        float64 samples in mV, ``round(seconds * fs)`` of them.

    Examples
    --------
    >>> x = synth_ecg(10, fs=250, hr_bpm=60, seed=1)
    >>> x.shape
    (2500,)
    """
    return EcgSynth(fs, hr_bpm, seed, rr_cv, noise_mv).render(round(seconds * fs))


def _times(v: str) -> tuple[float, ...]:
    out = tuple(float(p) for p in v.split(",") if p.strip())
    if any(not (math.isfinite(t) and t >= 0) for t in out):
        raise ValueError("times must be finite and >= 0 seconds")
    return out


class SyntheticSource(FiniteSource):
    """A source of synthetic ECG (see the module docs for the URI).

    Parameters
    ----------
    uri : str
        ``synthetic:?...``.
    speed : float, optional
        Overrides the URI's ``speed`` (0 = as fast as possible).
    clock, sleep : callables, optional
        Monotonic clock and sleep in seconds, injectable for tests.
    """

    ALLOWED = {"fs", "hr", "seconds", "device", "seed", "rr_cv", "noise", "leads_off_at",
               "leads_off_s", "speed", "chunk_s"}

    def __init__(self, uri: str, speed: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        u = SourceURI.parse(uri)
        if u.scheme != "synthetic":
            raise SourceError(f"not a synthetic: source: {uri!r}")
        u.check_keys(self.ALLOWED)
        self.uri = uri
        self.fs_hz = float(u.take("fs", float, 500.0))  # type: ignore[arg-type]
        self.hr_bpm = float(u.take("hr", float, 70.0))  # type: ignore[arg-type]
        self.seconds = float(u.take("seconds", float, 30.0))  # type: ignore[arg-type]
        self.device = u.params.get("device", "synthetic") or "synthetic"
        self.seed = int(u.take("seed", int, 0))  # type: ignore[call-overload]
        self.rr_cv = float(u.take("rr_cv", float, 0.05))  # type: ignore[arg-type]
        self.noise_mv = float(u.take("noise", float, 0.02))  # type: ignore[arg-type]
        self.leads_off_at: tuple[float, ...] = u.take("leads_off_at", _times, ())  # type: ignore[assignment]
        self.leads_off_s = float(u.take("leads_off_s", float, 2.0))  # type: ignore[arg-type]
        self.speed = speed if speed is not None else float(u.take("speed", parse_speed, 0.0))  # type: ignore[arg-type]
        self.chunk_s = float(u.take("chunk_s", float, 0.1))  # type: ignore[arg-type]
        if not (math.isfinite(self.seconds) and 0 < self.seconds <= 7 * 86400):
            raise SourceError(f"source {uri!r}: seconds must be in (0, 604800]")
        if not 0 < self.chunk_s <= 10:
            raise SourceError(f"source {uri!r}: chunk_s must be in (0, 10] seconds")
        if not (math.isfinite(self.leads_off_s) and self.leads_off_s > 0):
            raise SourceError(f"source {uri!r}: leads_off_s must be > 0 seconds")
        try:
            EcgSynth(self.fs_hz, self.hr_bpm, self.seed, self.rr_cv, self.noise_mv)
        except ValueError as exc:
            raise SourceError(f"source {uri!r}: {exc}") from None
        self.stats = SourceStats()
        self.stats.declared_fs_hz[self.device] = self.fs_hz
        self._clock = clock
        self._sleep = sleep

    def _off_mask(self, start: int, n: int) -> np.ndarray:
        t = (start + np.arange(n)) / self.fs_hz
        off = np.zeros(n, dtype=bool)
        for t0 in self.leads_off_at:
            off |= (t >= t0) & (t < t0 + self.leads_off_s)
        return off

    def _iter(self, stop: threading.Event, pace: Callable[[int], None],
              once: bool) -> Iterator[SampleChunk]:
        gen = EcgSynth(self.fs_hz, self.hr_bpm, self.seed, self.rr_cv, self.noise_mv)
        total = round(self.seconds * self.fs_hz)
        n = max(1, round(self.chunk_s * self.fs_hz))
        index = 0
        while index < total and not stop.is_set():
            m = min(n, total - index)
            x = gen.render(m)
            off = self._off_mask(index, m)
            pace(index + m)
            # Split the block where lead-off starts or ends.
            edges = np.flatnonzero(np.diff(off.astype(np.int8))) + 1
            bounds = [0, *edges.tolist(), m]
            now = self._clock()
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                part = x[a:b].copy()
                lo = bool(off[a])
                if lo:
                    part[:] = np.nan
                yield SampleChunk(self.device, self.fs_hz, index + a, part, arrival_s=now,
                                  leads_off=lo)
                self.stats.chunks += 1
                self.stats.samples += b - a
            index += m
        log.debug("synthetic source %s: %d samples generated", self.device, index)
