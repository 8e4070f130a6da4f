"""Typed settings of the decision and liveness stages.

They live here, apart from the stages, so that the config loader, the stages
and the tests share one definition. Every field documents itself; the config
loader rejects keys that are not fields.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AdaptationConfig", "DecisionConfig", "LivenessConfig"]


@dataclass(frozen=True)
class DecisionConfig:
    """Rolling fusion of beat scores into an authentication state.

    Attributes
    ----------
    window_beats : int
        Good beats fused (mean score) for a decision.
    min_beats : int
        Good beats needed before leaving ``unknown``.
    operating_point : str
        Which model-card threshold to use: ``"far_0.001"`` (default: at most
        0.1 % impostor acceptance on held-out persons) or ``"eer"``.
    threshold : float or None
        Explicit fused-score threshold overriding the card (None: the card).
    hysteresis : float
        Margin around the threshold: an ``authenticated`` state needs the
        fused score to fall below ``threshold - hysteresis`` to turn
        ``rejected``, and vice versa.
    stale_s : float
        Without a new good beat for this long (stream seconds) the state
        goes back to ``unknown``.
    valid_for_s : float
        Validity of a published state (its ``valid_until``) after the
        evidence it rests on; consumers fail closed after it.
    max_beat_age_s : float
        Beats older than this (stream seconds) leave the rolling window.
    match_warmup_beats : bool
        Also match the first beats of a segment whose only flag is
        ``warmup`` (they passed the RR, clipping and edge checks, but no
        median beat exists yet to compare their shape with). Without them
        the first decision waits for about three more beats (~2.5 s).
    """

    window_beats: int = 10
    min_beats: int = 4
    operating_point: str = "far_0.001"
    threshold: float | None = None
    hysteresis: float = 0.02
    stale_s: float = 5.0
    valid_for_s: float = 5.0
    max_beat_age_s: float = 20.0
    match_warmup_beats: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.min_beats <= self.window_beats <= 200:
            raise ValueError("need 1 <= min_beats <= window_beats <= 200")
        if self.operating_point not in {"far_0.001", "eer"}:
            raise ValueError("operating_point must be 'far_0.001' or 'eer'")
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise ValueError("threshold must be a cosine score in [-1, 1]")
        if not 0 <= self.hysteresis < 0.5:
            raise ValueError("hysteresis must be in [0, 0.5)")
        for name in ("stale_s", "valid_for_s", "max_beat_age_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


@dataclass(frozen=True)
class LivenessConfig:
    """Checks that a living heart is on the electrodes now.

    Attributes
    ----------
    min_hr_bpm, max_hr_bpm : float
        Plausible heart-rate range (beats per minute).
    min_rr_cv, max_rr_cv : float
        Natural beat-to-beat variability: coefficient of variation of RR
        intervals over the window. Below ``min_rr_cv`` the rhythm is too
        regular for a heart (a synthetic or generated signal); above
        ``max_rr_cv`` it is not a rhythm.
    min_quality : float
        Share of good beats among recent beats.
    rate_tolerance : float
        Allowed relative difference between the declared and the measured
        sample rate (samples per second of host time).
    window_beats : int
        Recent beats the checks look at.
    loop_min_period_s, loop_max_period_s : float
        Search range for repetition of the beat sequence (a looped
        recording repeats its RR sequence and its waveforms exactly).
    loop_match_beats : int
        Consecutive beats that must repeat to flag a loop.
    """

    min_hr_bpm: float = 35.0
    max_hr_bpm: float = 200.0
    min_rr_cv: float = 0.005
    max_rr_cv: float = 0.35
    min_quality: float = 0.6
    rate_tolerance: float = 0.05
    window_beats: int = 12
    loop_min_period_s: float = 4.0
    loop_max_period_s: float = 300.0
    loop_match_beats: int = 6

    def __post_init__(self) -> None:
        if not 0 < self.min_hr_bpm < self.max_hr_bpm <= 300:
            raise ValueError("need 0 < min_hr_bpm < max_hr_bpm <= 300")
        if not 0 <= self.min_rr_cv < self.max_rr_cv:
            raise ValueError("need 0 <= min_rr_cv < max_rr_cv")
        if not 0 <= self.min_quality <= 1:
            raise ValueError("min_quality must be in [0, 1]")
        if not 0 < self.rate_tolerance < 1:
            raise ValueError("rate_tolerance must be in (0, 1)")
        if self.window_beats < 3 or self.loop_match_beats < 3:
            raise ValueError("window_beats and loop_match_beats must be at least 3")
        if not 0 < self.loop_min_period_s < self.loop_max_period_s:
            raise ValueError("need 0 < loop_min_period_s < loop_max_period_s")


@dataclass(frozen=True)
class AdaptationConfig:
    """Online template adaptation during continuous authentication.

    While a device is ``authenticated`` on a full window, positively live,
    and its fused score clears the threshold by ``margin``, each fresh good
    beat is folded into *that device's in-memory copy* of the wearer's
    template (an exponential moving average with weight ``rate``), never
    further than ``floor`` (cosine) from the enrolled centroid. Never from
    ``unknown``, a liveness failure, a flagged or warm-up beat. The stored
    template is not changed; a restart starts from the enrolled one.

    Attributes
    ----------
    enabled : bool
    rate : float
        Weight of one beat, in (0, 0.2].
    margin : float
        How far above the threshold the fused score must be (score units).
    floor : float
        Least cosine between the adapted and the enrolled centroid, in (0, 1).
    """

    enabled: bool = True
    rate: float = 0.02
    margin: float = 0.0
    floor: float = 0.9

    def __post_init__(self) -> None:
        self.policy()  # validates rate and floor
        if not 0 <= self.margin < 10:
            raise ValueError("margin must be in [0, 10)")

    def policy(self):  # noqa: ANN201 - matching imports settings' users, keep this lazy
        """The :class:`ecgstream.matching.AdaptationPolicy` of these settings."""
        from .matching import AdaptationPolicy

        return AdaptationPolicy(rate=self.rate, floor=self.floor)
