"""Typed settings of the decision and liveness stages.

They live here, apart from the stages, so that the config loader, the stages
and the tests share one definition. They are :func:`ecgstream.core.fields.section`
models: strict types, limits declared beside each field, unknown keys
refused; a bad value raises :class:`ecgstream.core.fields.SettingsError` (a
``ValueError``) that names the field. Every field documents itself
(``description``); ``docs/config.md`` is generated from these.
"""

from typing import Annotated

from .fields import Bool, Field, Float, Int, Text, check, one_of, section, within

__all__ = ["AdaptationConfig", "AttemptsConfig", "DecisionConfig", "InputConfig", "LivenessConfig"]


@section
class DecisionConfig:
    """Rolling fusion of beat scores into an authentication state."""

    window_beats: Int = Field(10, description="Good beats fused (mean score) for a decision.")
    min_beats: Int = Field(4, description="Good beats needed before leaving ``unknown``.")
    operating_point: Annotated[Text, check(lambda v: v in {"far_0.001", "eer"},
                                           "operating_point must be 'far_0.001' or 'eer'")] = Field(
        "far_0.001", description="Which model-card threshold to use: ``\"far_0.001\"`` (default: "
        "at most 0.1 % impostor acceptance on held-out persons) or ``\"eer\"``.")
    threshold: Annotated[Float, check(lambda v: -1.0 <= v <= 1.0,
                                      "threshold must be a cosine score in [-1, 1]")] | None = Field(
        None, description="Explicit fused-score threshold overriding the card (None: the card).")
    hysteresis: Annotated[Float, check(lambda v: 0 <= v < 0.5, "hysteresis must be in [0, 0.5)")] = Field(
        0.02, description="Margin around the threshold: an ``authenticated`` state needs the fused "
        "score to fall below ``threshold - hysteresis`` to turn ``rejected``, and vice versa.")
    stale_s: Annotated[Float, check(lambda v: v > 0, "stale_s must be positive")] = Field(
        5.0, description="Without a new good beat for this long (stream seconds) the state goes "
        "back to ``unknown``.")
    valid_for_s: Annotated[Float, check(lambda v: v > 0, "valid_for_s must be positive")] = Field(
        5.0, description="Validity of a published state (its ``valid_until``) after the evidence "
        "it rests on; consumers fail closed after it.")
    max_beat_age_s: Annotated[Float, check(lambda v: v > 0, "max_beat_age_s must be positive")] = Field(
        20.0, description="Beats older than this (stream seconds) leave the rolling window.")
    match_warmup_beats: Bool = Field(
        True, description="Also match the first beats of a segment whose only flag is ``warmup`` "
        "(they passed the RR, clipping and edge checks, but no median beat exists yet to compare "
        "their shape with). Without them the first decision waits for about three more beats (~2.5 s).")

    def _cross(self) -> list[tuple[str, str]]:
        if not 1 <= self.min_beats <= self.window_beats <= 200:
            return [("min_beats", "need 1 <= min_beats <= window_beats <= 200")]
        return []


_RR_CV = ("Natural beat-to-beat variability: coefficient of variation of RR intervals over the "
          "window. Below ``min_rr_cv`` the rhythm is too regular for a heart (a synthetic or "
          "generated signal); above ``max_rr_cv`` it is not a rhythm.")
_HR = "Plausible heart-rate range (beats per minute)."
_LOOP = ("Search range for repetition of the beat sequence (a looped recording repeats its RR "
         "sequence and its waveforms exactly).")


@section
class LivenessConfig:
    """Checks that a living heart is on the electrodes now."""

    min_hr_bpm: Float = Field(35.0, description=_HR)
    max_hr_bpm: Float = Field(200.0, description=_HR)
    min_rr_cv: Float = Field(0.005, description=_RR_CV)
    max_rr_cv: Float = Field(0.35, description=_RR_CV)
    min_quality: Annotated[Float, check(lambda v: 0 <= v <= 1, "min_quality must be in [0, 1]")] = Field(
        0.6, description="Share of good beats among recent beats.")
    rate_tolerance: Annotated[Float, check(lambda v: 0 < v < 1, "rate_tolerance must be in (0, 1)")] = Field(
        0.05, description="Allowed relative difference between the declared and the measured "
        "sample rate (samples per second of host time).")
    window_beats: Annotated[Int, check(lambda v: v >= 3, "window_beats must be at least 3")] = Field(
        12, description="Recent beats the checks look at.")
    establish_beats: Annotated[Int, check(lambda v: v >= 3, "establish_beats must be at least 3")] = Field(
        6, description="Beats after leads on (or a gap) before liveness can be established: the "
        "heart-rate, variability and quality checks then run on the beats in hand (up to "
        "``window_beats``). Until liveness is established no ``authenticated`` state is published.")
    establish_rate_s: Annotated[Float, check(lambda v: 1.0 <= v <= 5.0, "establish_rate_s must be in [1, 5]")] = Field(
        3.0, description="Seconds of arrivals needed before the sample rate counts as measured "
        "(within ``rate_tolerance`` of the declared rate); until then liveness is not established "
        "(a paced stream only; the 5-30 s windows take over after 5 s).")
    loop_min_period_s: Float = Field(4.0, description=_LOOP)
    loop_max_period_s: Float = Field(300.0, description=_LOOP)
    loop_match_beats: Annotated[Int, check(lambda v: v >= 3, "loop_match_beats must be at least 3")] = Field(
        6, description="Consecutive beats that must repeat to flag a loop.")

    def _cross(self) -> list[tuple[str, str]]:
        p = []
        if not 0 < self.min_hr_bpm < self.max_hr_bpm <= 300:
            p.append(("min_hr_bpm", "need 0 < min_hr_bpm < max_hr_bpm <= 300"))
        if not 0 <= self.min_rr_cv < self.max_rr_cv:
            p.append(("min_rr_cv", "need 0 <= min_rr_cv < max_rr_cv"))
        if self.establish_beats > self.window_beats:
            p.append(("establish_beats", "need establish_beats <= window_beats"))
        if not 0 < self.loop_min_period_s < self.loop_max_period_s:
            p.append(("loop_min_period_s", "need 0 < loop_min_period_s < loop_max_period_s"))
        return p


@section
class AdaptationConfig:
    """Online template adaptation during continuous authentication.

    While a device is ``authenticated`` on a full window, positively live,
    and its fused score clears the threshold by ``margin``, each fresh good
    beat is folded into *that device's in-memory copy* of the wearer's
    template (an exponential moving average with weight ``rate``), never
    further than ``floor`` (cosine) from the enrolled centroid. Never from
    ``unknown``, a liveness failure, a flagged or a warm-up beat. The stored
    template is not changed; a restart starts from the enrolled one.
    """

    enabled: Bool = Field(True, description="Adapt the device's template copy while authenticated and live.")
    rate: Annotated[Float, check(lambda v: 0 < v <= 0.2, "rate must be in (0, 0.2]")] = Field(
        0.05, description="Weight of one accepted beat in the adapted centroid (moving average).")
    margin: Annotated[Float, check(lambda v: 0 <= v < 10, "margin must be in [0, 10)")] = Field(
        0.0, description="How far above the threshold the fused score must be for a beat to adapt "
        "(score units of the model card).")
    floor: Annotated[Float, check(lambda v: 0 < v < 1, "floor must be in (0, 1)")] = Field(
        0.9, description="Least cosine between the adapted and the enrolled centroid: no sequence of "
        "accepted beats can move a template further.")

    def policy(self):  # noqa: ANN201 - ecgstream.pipeline.scores is imported lazily
        """The :class:`ecgstream.pipeline.scores.AdaptationPolicy` of these settings."""
        from ..pipeline.scores import AdaptationPolicy

        return AdaptationPolicy(rate=self.rate, floor=self.floor)


# -- the trust boundary (issue 11): ecgstream/trust/attempts.py, ecgstream/trust/hooks.py ------------------
@section
class AttemptsConfig:
    """Limits on failed attempts (NIST SP 800-63B, 5.2.3: a biometric verifier limits
    consecutive failed attempts).

    A failed attempt is a device's state turning ``rejected``. When
    ``max_failures`` of them fall within ``window_s`` seconds, the device's
    path to ``authenticated`` is locked for ``lockout_s`` seconds: it is
    published as ``unknown`` with the reason "locked out ...", whatever the
    scores, and an event ``{"what": "lockout"}`` says why. An ``authenticated``
    decision outside a lockout clears the count (the failures were not
    consecutive). Times are the daemon host's seconds.
    """

    enabled: Bool = Field(True, description="Limit failed attempts.")
    max_failures: Annotated[Int, within(1, 100)] = Field(
        5, description="Failed attempts (turns to ``rejected``) within ``window_s`` that lock the "
        "device (1..100; SP 800-63B allows at most 5, or 10 with presentation attack detection).")
    window_s: Annotated[Float, within(0, 86400, lo_open=True, unit=" seconds")] = Field(
        300.0, description="Window in which the failed attempts are counted (seconds).")
    lockout_s: Annotated[Float, within(0, 86400, lo_open=True, unit=" seconds")] = Field(
        300.0, description="How long a locked device cannot be ``authenticated`` (seconds).")


@section
class InputConfig:
    """What the daemon accepts from wearables: message authentication and device limits.

    ``docs/security.md`` has the broker's side (one account per wearable, an
    ACL that lets each publish only to its own ``ecg`` topic).
    """

    message_auth: Annotated[Text, one_of("off", "keyed", "required")] = Field(
        "keyed", description="Per-device HMAC of ECG chunks (``ecgstream device-key add``): "
        "``\"keyed\"``: devices that have a key must sign every chunk, others may send unsigned "
        "ones; ``\"required\"``: every chunk must be signed with a provisioned key; ``\"off\"``: "
        "no check. A refused chunk is counted, its device goes ``unknown``, an event says why.")
    mac_window_s: Annotated[Float, within(0, 3600, lo_open=True, unit=" seconds")] = Field(
        30.0, description="Largest difference between a signed chunk's time and the host's clock "
        "(seconds); it also bounds what can be replayed after a daemon restart.")
    max_devices: Annotated[Int, within(0, 1_000_000)] = Field(
        1000, description="Most devices one MQTT source keeps state for; chunks of further new "
        "device ids are refused and counted. Devices of ``[devices.<id>]`` and devices with a key "
        "are always admitted. This bounds memory under a flood of made-up device ids.")
    only_known_devices: Bool = Field(
        False, description="Accept only devices of ``[devices.<id>]`` and devices with a key.")
    # -- the fair, bounded intake (issue 16): ecgstream/daemon/intake.py ---------------------
    max_queued_samples: Annotated[Int, within(1000, 100_000_000)] = Field(
        2_000_000, description="Most samples waiting between the sources and the processing thread, "
        "all devices together (memory: 8 bytes a sample); when full, the device with the most samples "
        "waiting loses its oldest chunk.")
    max_chunk_s: Annotated[Float, within(0, 60, lo_open=True, unit=" seconds")] = Field(
        10.0, description="Longest chunk accepted, in seconds of its declared rate (a wearable sends "
        "tenths of a second); longer ones are refused and counted.")
    rate_limit: Annotated[Float, within(0, 100)] = Field(
        1.5, description="Most samples per second of host time a device may send, as a multiple of "
        "its declared rate (times the replay speed); beyond it chunks are refused, the device goes "
        "``unknown`` and an ``input`` event says why. 0: no limit.")
    burst_s: Annotated[Float, within(0, 600, lo_open=True, unit=" seconds")] = Field(
        10.0, description="Seconds of samples a device may send at once above ``rate_limit`` (a "
        "reconnect's backlog).")
    device_expiry_s: Annotated[Float, within(0, 86400 * 30, unit=" seconds")] = Field(
        600.0, description="A device that is neither configured (``[devices.<id>]``) nor keyed and "
        "has sent nothing for this long is forgotten by the daemon and the MQTT source (its state "
        "``unknown``, its availability ``offline``); it starts afresh when it comes back. 0: never.")
    device_backlog_s: Annotated[Float, within(0, 3600, lo_open=True, unit=" seconds")] = Field(
        30.0, description="Most seconds of one device's samples waiting for processing; beyond it "
        "the device's own oldest chunk is dropped.")
