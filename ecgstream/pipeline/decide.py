"""The decision stage: rolling fusion of beat scores into an authentication state.

States: ``unknown`` until ``min_beats`` good beats are in the window, then
``authenticated`` or ``rejected``; back to ``unknown`` when contact is lost,
the evidence goes stale, or liveness positively fails. Live before accepted
(issue 16): while liveness is not yet established (``live_pending``), an
``authenticated`` outcome is held at ``unknown`` with the reason "liveness
not established"; ``rejected`` is published as it is. Hysteresis keeps the
state from flapping around the threshold: once decided, the fused score must
cross ``threshold -+ hysteresis`` to change side.

The fused score is :func:`ecgstream.pipeline.scores.fuse` (the mean beat score) of
the last ``window_beats`` good beats, exactly the score the model card's
fused thresholds were calibrated on. With fewer beats than the card's
calibrated fused count, the threshold of the largest calibrated count not
above the beats in hand is used (the card lists thresholds per count), so
a decision on 3 beats is held to a 3-beat threshold, never a 10-beat one.

Identification: with several templates (no subject bound to the device) the
window holds one score per subject; the best fused subject is the candidate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..core.settings import DecisionConfig

__all__ = ["AuthDecision", "Decider", "Thresholds", "UNKNOWN", "AUTHENTICATED", "REJECTED"]

UNKNOWN = "unknown"
AUTHENTICATED = "authenticated"
REJECTED = "rejected"


@dataclass(frozen=True)
class Thresholds:
    """Fused-score thresholds by number of fused beats (from the model card).

    ``by_beats`` maps a beat count to the threshold at the configured
    operating point; count 1 is the single-beat threshold.
    """

    by_beats: dict[int, float]

    def __post_init__(self) -> None:
        if not self.by_beats or 1 not in self.by_beats:
            raise ValueError("thresholds need at least the single-beat (1) entry")

    def for_beats(self, n: int) -> tuple[float, int]:
        """Threshold for a fusion of ``n`` beats, and the count it was made for."""
        k = max(c for c in self.by_beats if c <= max(1, n))
        return self.by_beats[k], k

    @classmethod
    def from_card(cls, thresholds: dict, operating_point: str, override: float | None = None) -> Thresholds:
        """Read a model card's ``thresholds`` block.

        Accepted layouts: ``{"single": {op: t}, "fused": {"beats": k, op: t},
        "fused_by_beats": {"3": {op: t}, ...}}`` (the last optional).
        """
        try:
            by: dict[int, float] = {1: float(thresholds["single"][operating_point])}
            fused = thresholds.get("fused")
            if fused:
                by[int(fused["beats"])] = float(fused[operating_point])
            for k, v in (thresholds.get("fused_by_beats") or {}).items():
                by[int(k)] = float(v[operating_point])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"model card thresholds lack operating point {operating_point!r}: {exc}") from None
        if override is not None:
            by = {k: float(override) for k in by}
        return cls(by)


@dataclass(frozen=True)
class AuthDecision:
    """The outcome of one update of a :class:`Decider`."""

    state: str
    subject: str | None
    score: float | None
    threshold: float | None
    beats_used: int
    reason: str
    changed: bool


class Decider:
    """Per-device rolling decision.

    Parameters
    ----------
    subjects : list of str
        Subjects whose scores come with each beat (one when verifying a bound
        subject, all enrolled ones when identifying).
    thresholds : Thresholds
    cfg : DecisionConfig
    """

    def __init__(self, subjects: list[str], thresholds: Thresholds, cfg: DecisionConfig) -> None:
        if not subjects:
            raise ValueError("a decider needs at least one subject")
        self.subjects = list(subjects)
        self.thresholds = thresholds
        self.cfg = cfg
        self.state = UNKNOWN
        self.subject: str | None = None
        self._beats: deque[tuple[float, np.ndarray]] = deque(maxlen=cfg.window_beats)
        self._last_good_s: float | None = None
        self.last = AuthDecision(UNKNOWN, None, None, None, 0, "no beats yet", False)
        self._held = False  # an authenticated outcome waits for liveness

    def reset(self, reason: str) -> AuthDecision:
        """Forget the evidence and go to ``unknown`` (leads off, gap, stale)."""
        self._beats.clear()
        self._last_good_s = None
        self._held = False
        return self._set(UNKNOWN, None, None, None, 0, reason)

    def push(self, t_s: float, scores: np.ndarray, live_failed: str | None = None,
             live_pending: str | None = None) -> AuthDecision:
        """Add one good beat's scores (one per subject) at stream time ``t_s``.

        ``live_failed`` is the reason liveness positively failed, if it did:
        the state then stays or goes ``unknown`` whatever the scores.
        ``live_pending`` is why liveness is not established yet, if it is not:
        an ``authenticated`` outcome is then held at ``unknown``.
        """
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if s.size != len(self.subjects) or not np.all(np.isfinite(s)):
            raise ValueError(f"expected {len(self.subjects)} finite scores, got {s!r}")
        self._beats.append((t_s, s))
        self._last_good_s = t_s
        self._drop_old(t_s)
        return self._decide(live_failed, live_pending)

    add_beat = push  # the name before the stages shared one contract

    def tick(self, t_s: float, live_failed: str | None = None, live_pending: str | None = None) -> AuthDecision:
        """Re-evaluate at stream time ``t_s`` without a new beat (staleness, liveness).

        An outcome held for liveness is decided as soon as liveness is
        established, without waiting for the next beat.
        """
        if self._last_good_s is not None and t_s - self._last_good_s > self.cfg.stale_s:
            return self.reset("stale: no good beat for %.1f s" % (t_s - self._last_good_s))
        if live_failed and self.state != UNKNOWN:
            return self._set(UNKNOWN, None, self.last.score, self.last.threshold, len(self._beats),
                             f"not live: {live_failed}")
        if live_pending and self.state == AUTHENTICATED:
            self._held = True
            return self._set(UNKNOWN, None, self.last.score, self.last.threshold, len(self._beats),
                             f"liveness not established: {live_pending}")
        if self._held and not live_failed and not live_pending and self._beats:
            return self._decide(None, None)
        return self._unchanged()

    def _unchanged(self) -> AuthDecision:
        d = self.last
        self.last = AuthDecision(d.state, d.subject, d.score, d.threshold, d.beats_used, d.reason, False)
        return self.last

    def _drop_old(self, t_s: float) -> None:
        while self._beats and t_s - self._beats[0][0] > self.cfg.max_beat_age_s:
            self._beats.popleft()

    def _decide(self, live_failed: str | None, live_pending: str | None = None) -> AuthDecision:
        n = len(self._beats)
        if n < self.cfg.min_beats:
            return self._set(UNKNOWN, None, None, None, n, f"{n} of {self.cfg.min_beats} good beats")
        fused = np.mean(np.stack([b[1] for b in self._beats]), axis=0)
        best = int(np.argmax(fused))
        score = float(fused[best])
        thr, _k = self.thresholds.for_beats(n)
        if live_failed:
            return self._set(UNKNOWN, None, score, thr, n, f"not live: {live_failed}")
        h = self.cfg.hysteresis
        cand = self.subjects[best]
        if self.state == AUTHENTICATED and cand == self.subject:
            accept = score >= thr - h
        elif self.state == REJECTED:
            accept = score >= thr + h
        else:
            accept = score >= thr
        self._held = bool(accept and live_pending)
        if self._held:
            return self._set(UNKNOWN, None, score, thr, n, f"liveness not established: {live_pending}")
        if accept:
            return self._set(AUTHENTICATED, cand, score, thr, n, "fused score at or above threshold")
        subj = self.subjects[0] if len(self.subjects) == 1 else None
        return self._set(REJECTED, subj, score, thr, n, "fused score below threshold")

    def _set(self, state: str, subject: str | None, score: float | None, thr: float | None,
             n: int, reason: str) -> AuthDecision:
        changed = state != self.state or subject != self.subject
        self.state = state
        self.subject = subject
        self.last = AuthDecision(state, subject, score, thr, n, reason, changed)
        return self.last
