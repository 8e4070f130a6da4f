"""Attempt limits: repeated ``rejected`` decisions lock a device's path to ``authenticated``.

NIST SP 800-63B (5.2.3) asks a biometric verifier to limit consecutive
failed attempts. Here a failed attempt is a device's decision *turning*
``rejected`` (a stream that stays rejected is one attempt; taking the strap
off and on again, or an impostor's signal flipping around the threshold,
makes new ones). ``max_failures`` of them within ``window_s`` lock the
device for ``lockout_s``: every ``authenticated`` decision is published as
``unknown`` ("locked out ...") until the lock ends. An ``authenticated``
decision outside a lock clears the count. Settings:
:class:`ecgstream.core.settings.AttemptsConfig` (``[attempts]``).

:class:`AttemptLimiter` is pure (host time passed in), one entry per device.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..core.settings import AttemptsConfig
from ..pipeline.decide import AUTHENTICATED, REJECTED, UNKNOWN, AuthDecision

__all__ = ["AttemptLimiter", "Lockout"]


@dataclass
class _Dev:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float | None = None
    raw: str = UNKNOWN
    out: tuple[str, str | None] = (UNKNOWN, None)
    lockouts: int = 0


@dataclass(frozen=True)
class Lockout:
    """A lock that began or ended (for the event)."""

    device: str
    started: bool
    until: float | None
    failures: int
    reason: str


class AttemptLimiter:
    """Counts failed attempts per device and holds locked devices at ``unknown`` (module docs)."""

    def __init__(self, cfg: AttemptsConfig | None = None) -> None:
        self.cfg = cfg or AttemptsConfig()
        self._devs: dict[str, _Dev] = {}
        self.lockouts = 0  # locks begun
        self.held = 0  # authenticated decisions published as unknown because of a lock

    def locked(self, device: str, now: float) -> bool:
        """Whether ``device`` is locked at host time ``now``."""
        s = self._devs.get(device)
        return bool(s and s.locked_until is not None and now < s.locked_until)

    def apply(self, device: str, d: AuthDecision, now: float) -> tuple[AuthDecision, Lockout | None]:
        """The decision to publish for ``d`` at host time ``now``, and a lock that began or ended."""
        cfg = self.cfg
        if not cfg.enabled:
            return d, None
        s = self._devs.setdefault(device, _Dev())
        ev: Lockout | None = None
        if s.locked_until is not None and now >= s.locked_until:
            s.locked_until = None
            ev = Lockout(device, False, None, 0, "lockout ended")
        if d.state == REJECTED and s.raw != REJECTED:
            s.failures.append(now)
        s.raw = d.state
        while s.failures and now - s.failures[0] > cfg.window_s:
            s.failures.popleft()
        if s.locked_until is None:
            if len(s.failures) >= cfg.max_failures:
                n = len(s.failures)
                s.failures.clear()
                s.locked_until = now + cfg.lockout_s
                s.lockouts += 1
                self.lockouts += 1
                ev = Lockout(device, True, s.locked_until, n,
                             f"{n} rejected attempts within {cfg.window_s:.0f} s: locked for {cfg.lockout_s:.0f} s")
            elif d.state == AUTHENTICATED:
                s.failures.clear()
        out = d
        if s.locked_until is not None and d.state == AUTHENTICATED:
            self.held += 1
            out = AuthDecision(UNKNOWN, None, d.score, d.threshold, d.beats_used,
                               f"locked out after {cfg.max_failures} rejected attempts; "
                               f"{s.locked_until - now:.0f} s left", False)
        key = (out.state, out.subject)
        out = AuthDecision(out.state, out.subject, out.score, out.threshold, out.beats_used, out.reason,
                           key != s.out)
        s.out = key
        return out, ev
