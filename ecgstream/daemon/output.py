"""The daemon's output side: states and events to the publisher, when and how often.

:class:`DaemonOutput` is the half of :class:`~ecgstream.daemon.loop.Daemon` that
turns decisions into payloads: the publish interval (states are republished
at least every ``publish_interval_s`` so their ``valid_until`` moves), the
trust hook's last word on an auth state, events on every change. The
daemon holds one (``daemon.output``) and calls it; it holds what it needs:
the publisher (``daemon.publisher`` is this one's), the run's counters, the
trust hooks and the clocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..pipeline import AUTHENTICATED, UNKNOWN, AuthDecision, LivenessState
from .state import DaemonStats, DeviceState

__all__ = ["DaemonOutput"]


@dataclass
class DaemonOutput:
    """Publishing for :class:`~ecgstream.daemon.loop.Daemon` (see the module docs)."""

    publisher: Any
    stats: DaemonStats
    trust: Any  # ecgstream/trust/hooks.py: the last word on an auth state
    decision_cfg: Any
    publish_interval_s: float
    model_id: str
    clock: Callable[[], float]
    wall: Callable[[], float]
    metrics: Any = None  # ecgstream/daemon/metrics.py: auth states by state, when [metrics] is on

    def publish_auth(self, dev: DeviceState, d: AuthDecision, force: bool) -> bool:
        from ..publish import auth_payload

        now = self.clock()
        if not force and now - dev.last_auth_pub < self.publish_interval_s:
            return False
        d = self.trust.decision(self, dev, d)
        if d.state == AUTHENTICATED and dev.live_condition != "live":
            # Live before accepted (issue 16): the decider holds this already; this is the last guard.
            d = AuthDecision(UNKNOWN, None, d.score, d.threshold, d.beats_used,
                             f"liveness not established ({dev.live_condition})", True)
        if d.changed:
            self.event(dev, "auth", {"state": d.state, "subject": d.subject}, d.reason)
        dev.last_auth_pub = now
        dev.auth_seq += 1
        t = self.wall()
        valid_until = t + self.decision_cfg.valid_for_s
        payload = auth_payload(
            state=d.state, subject=d.subject, score=d.score, threshold=d.threshold,
            beats_used=d.beats_used, time_s=t, valid_until=valid_until, seq=dev.auth_seq,
            model_id=self.model_id, reason=d.reason, liveness=dev.live_condition,
        )
        self.publisher.auth(dev.device, payload, valid_until)
        self.stats.auth_published += 1
        if self.metrics is not None:
            self.metrics.auth(dev.device, d.state)
        return True

    def publish_liveness(self, dev: DeviceState, live: LivenessState, force: bool = False) -> None:
        from ..publish import liveness_payload

        now = self.clock()
        key = (live.live, live.leads_on, live.reasons)
        changed = key != dev.live_key
        if not (force or changed) and now - dev.last_live_pub < self.publish_interval_s:
            return
        if changed and dev.live_key is not None:
            self.event(dev, "liveness", {"live": live.live, "leads_on": live.leads_on}, "; ".join(live.reasons))
        dev.live_key = key
        dev.last_live = live
        dev.last_live_pub = now
        t = self.wall()
        valid_until = t + self.decision_cfg.valid_for_s
        payload = liveness_payload(
            live=live.live, leads_on=live.leads_on, heart_rate_bpm=live.heart_rate_bpm,
            signal_quality=live.signal_quality, time_s=t, valid_until=valid_until,
            reasons=list(live.reasons), rate_declared_hz=live.rate_declared_hz,
            rate_measured_hz=live.rate_measured_hz,
        )
        self.publisher.liveness(dev.device, payload, valid_until)
        self.stats.liveness_published += 1

    def event(self, dev: DeviceState, what: str, after: dict, reason: str) -> None:
        before = dev.last_event_after.get(what)
        dev.last_event_after[what] = after
        self.publisher.event(dev.device, {"what": what, "before": before, "after": after,
                                          "reason": reason, "time": self.wall()})
        self.stats.events_published += 1
