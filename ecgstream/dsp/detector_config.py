"""Settings of the online R-peak detector (:mod:`ecgstream.dsp.detector` explains each step)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DetectorConfig"]


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of :class:`RPeakDetector`; times in seconds.

    ``min_rr_s < searchback window`` etc. are checked on construction.
    """

    band_hz: tuple[float, float] = (5.0, 20.0)
    feature_power: float = 1.5
    mwi_s: float = 0.1
    candidate_s: float = 0.2
    learn_s: float = 2.0
    threshold_frac: float = 0.25
    searchback_rr: float = 1.66
    searchback_frac: float = 0.5
    twave_s: float = 0.36
    twave_slope_frac: float = 0.5
    min_rr_s: float = 0.2
    max_rr_s: float = 2.0
    recover_factor: float = 0.6
    refine_back_s: float = 0.18
    refine_fwd_s: float = 0.03
    refine_half_s: float = 0.075
    refine_flip_ratio: float = 2.0
    flutter_back_s: float = 1.5
    flutter_enter: float = 0.4
    flutter_stay: float = 0.7
    flutter_smooth_s: float = 0.02

    def __post_init__(self) -> None:
        lo, hi = self.band_hz
        if not 0 < lo < hi:
            raise ValueError(f"band_hz must be increasing and positive, got {self.band_hz}")
        if not 0 < self.min_rr_s <= self.candidate_s * 2:
            raise ValueError("min_rr_s must be positive and at most twice candidate_s")
        if not self.min_rr_s < self.twave_s < self.max_rr_s:
            raise ValueError("need min_rr_s < twave_s < max_rr_s")
        if not 0 < self.threshold_frac < 1 or not 0 < self.searchback_frac <= 1:
            raise ValueError("threshold fractions must be in (0, 1)")
        if self.searchback_rr <= 1:
            raise ValueError("searchback_rr must exceed 1")
        if not 0.5 <= self.feature_power <= 2.0:
            raise ValueError(f"feature_power must be within 0.5..2, got {self.feature_power}")
        if not 0 < self.recover_factor < 1:
            raise ValueError("recover_factor must be in (0, 1)")
        if self.refine_back_s < 0 or self.refine_fwd_s < 0 or self.refine_half_s <= 0:
            raise ValueError("refinement spans must not be negative")
        # Refinement may look refine_fwd_s + refine_half_s past the MWI peak;
        # that must be inside the look-ahead the detector waits for anyway,
        # or the R would depend on how much had arrived (chunking) and the
        # delay would grow.
        if self.refine_fwd_s + self.refine_half_s > self.candidate_s:
            raise ValueError("need refine_fwd_s + refine_half_s <= candidate_s")
        if self.refine_flip_ratio < 1:
            raise ValueError("refine_flip_ratio must be at least 1")
        if self.flutter_back_s <= 0 or self.flutter_smooth_s < 0:
            raise ValueError("flutter window lengths must be positive")
        if not 0 <= self.flutter_enter <= self.flutter_stay <= 1:
            raise ValueError("need 0 <= flutter_enter <= flutter_stay <= 1 (0 disables)")
