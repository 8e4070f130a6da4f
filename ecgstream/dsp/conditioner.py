"""Causal conditioning: resampling, band-pass and optional mains notch.

Everything here is causal and keeps its filter state between calls, so the
daemon and training see the same samples whatever the chunking. No
``filtfilt``: a zero-phase filter needs the future, and a model trained on
zero-phase beats would not match what a live stream gives.
"""

from __future__ import annotations

import numpy as np

from ._sosfilt import prepare_sos, sosfilt_many, sosfilt_zi_step
from .config import DspConfig
from .design import butter_sos, notch_sos, sos_group_delay, sos_zi_unit
from .resample import StreamingResampler

__all__ = ["Conditioner"]


class Conditioner:
    """Resample any rate in 100..1000 Hz to ``cfg.fs_hz`` and band-pass it.

    Parameters
    ----------
    fs_in_hz : float
        Rate of the incoming samples in Hz.
    cfg : DspConfig
        Processing settings.

    Attributes
    ----------
    delay_s : float
        Nominal delay of the conditioned signal behind the input, in seconds
        (resampler group delay plus the band-pass group delay at 10 Hz, the
        centre of the QRS energy). R positions are corrected by it.
    """

    def __init__(self, fs_in_hz: float, cfg: DspConfig) -> None:
        cfg.check_input_rate(fs_in_hz)
        self.cfg = cfg
        self.fs_in_hz = float(fs_in_hz)
        self.resampler = StreamingResampler(fs_in_hz, cfg.fs_hz)
        sos = [
            butter_sos(2, cfg.highpass_hz, "highpass", cfg.fs_hz),
            butter_sos(4, cfg.lowpass_hz, "lowpass", cfg.fs_hz),
        ]
        if cfg.notch_hz is not None:
            sos.append(notch_sos(cfg.notch_hz, 30.0, cfg.fs_hz))
        self.sos = prepare_sos(np.vstack(sos))
        self._zi_unit = sos_zi_unit(self.sos)
        gd = [sos_group_delay(self.sos, 10.0, cfg.fs_hz)]
        self.delay_s = float(self.resampler.delay_in_samples / self.fs_in_hz + gd[0] / cfg.fs_hz)
        self.reset()

    def reset(self) -> None:
        """Forget the filter state; the next sample starts a new segment."""
        self.resampler.reset()
        self._zi: np.ndarray | None = None
        self.n_out = 0  # conditioned samples produced since reset

    def push(self, x: np.ndarray) -> np.ndarray:
        """Condition finite input samples; returns samples at ``cfg.fs_hz``."""
        y = self.resampler.push(x)
        if y.size == 0:
            return y
        if self._zi is None:
            # Start in the steady state of the first value: no step transient.
            self._zi = self._zi_unit * y[0]
        out, self._zi = sosfilt_zi_step(self.sos, y, self._zi)
        self.n_out += out.size
        return out

    @staticmethod
    def push_many(cs: list[Conditioner], x: np.ndarray) -> np.ndarray:
        """:meth:`push` of row ``i`` of ``x`` (G, n) into ``cs[i]``, one filter call.

        The conditioners share one design and have filter state (a first
        chunk goes through :meth:`push`), and their resamplers have equal
        plans for ``n`` samples (:meth:`StreamingResampler.plan`). Returns
        (G, m), each row bitwise what :meth:`push` returns.
        """
        y = StreamingResampler.push_many([c.resampler for c in cs], x)
        if y.shape[1] == 0:
            return y
        out, zf = sosfilt_many(cs[0].sos, y, np.stack([c._zi for c in cs]))
        m = out.shape[1]
        for i, c in enumerate(cs):
            c._zi = zf[i]
            c.n_out += m
        return out
