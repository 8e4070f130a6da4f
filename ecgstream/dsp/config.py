"""Settings of the streaming DSP, validated on construction."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

__all__ = ["DspConfig"]


@dataclass(frozen=True)
class DspConfig:
    """Settings shared by the daemon and training.

    Training and serving must cut beats identically, so the model card
    stores these values and the daemon refuses to run a model whose card
    disagrees with its own ``DspConfig``.

    Parameters
    ----------
    fs_hz : float
        Processing (and model input) rate in Hz.
    highpass_hz, lowpass_hz : float
        Corners of the causal Butterworth band-pass applied to the signal.
    notch_hz : float or None
        Mains notch (50 or 60 Hz), or None for none.
    window_before_s, window_after_s : float
        Beat window around the R peak, in seconds.
    min_input_hz, max_input_hz : float
        Input rates accepted by the resampler.
    hold_max_s : float
        Longest run of unreadable samples (NaN, inf, dropped lines) bridged
        by holding the last value; a longer run ends the segment (a gap).
    flat_s : float
        Identical samples for this long mean a flat line (leads off).
    clip_run_s : float
        A beat whose maximum or minimum raw value repeats for this long is
        flagged as clipped (saturated amplifier or ADC).
    """

    fs_hz: float = 250.0
    highpass_hz: float = 0.5
    lowpass_hz: float = 40.0
    notch_hz: float | None = None
    window_before_s: float = 0.25
    window_after_s: float = 0.45
    min_input_hz: float = 100.0
    max_input_hz: float = 1000.0
    hold_max_s: float = 0.02
    flat_s: float = 1.0
    clip_run_s: float = 0.02

    def __post_init__(self) -> None:
        if not 100.0 <= self.fs_hz <= 1000.0:
            raise ValueError(f"fs_hz must be within 100..1000 Hz, got {self.fs_hz}")
        if not 0.0 < self.highpass_hz < self.lowpass_hz < self.fs_hz / 2:
            raise ValueError(
                "need 0 < highpass_hz < lowpass_hz < fs_hz/2, got "
                f"{self.highpass_hz}, {self.lowpass_hz}, fs_hz={self.fs_hz}"
            )
        if self.notch_hz is not None and not 0 < self.notch_hz < self.fs_hz / 2:
            raise ValueError(f"notch_hz must be below fs_hz/2, got {self.notch_hz}")
        if self.window_before_s <= 0 or self.window_after_s <= 0:
            raise ValueError("beat window lengths must be positive")
        if not 0 < self.min_input_hz <= self.max_input_hz:
            raise ValueError("need 0 < min_input_hz <= max_input_hz")

    @property
    def n_before(self) -> int:
        """Samples before R in a beat window (at ``fs_hz``)."""
        return round(self.window_before_s * self.fs_hz)

    @property
    def n_after(self) -> int:
        """Samples from R (inclusive) to the end of a beat window."""
        return round(self.window_after_s * self.fs_hz)

    @property
    def window_len(self) -> int:
        """Beat window length in samples at ``fs_hz``."""
        return self.n_before + self.n_after

    def check_input_rate(self, fs_in_hz: float) -> None:
        """Raise ValueError if ``fs_in_hz`` cannot be processed."""
        ok = isinstance(fs_in_hz, numbers.Real) and not isinstance(fs_in_hz, bool)
        if not (ok and self.min_input_hz <= fs_in_hz <= self.max_input_hz):
            raise ValueError(
                f"sampling rate {fs_in_hz!r} Hz is outside the supported "
                f"{self.min_input_hz:g}..{self.max_input_hz:g} Hz"
            )
