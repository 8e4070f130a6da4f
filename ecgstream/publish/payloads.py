"""Pure builders of the published payloads (``auth``, ``liveness``) and their fail-closed stand-ins.

Pure functions, no I/O: easy to test, and the one place where the payload
fields of ``docs/mqtt_output.md`` are defined. Times are Unix seconds (float,
millisecond resolution).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["AUTH_STATES", "LIVENESS_CONDITIONS", "auth_payload", "liveness_payload", "stale_replacement"]

AUTH_STATES = ("authenticated", "rejected", "unknown")
#: The auth payload's ``liveness`` field (``LivenessState.condition``).
LIVENESS_CONDITIONS = ("live", "establishing", "failed", "leads_off")


def _num(x: float | None, ndigits: int) -> float | None:
    """Round a number for JSON; ``None``, NaN and infinities become ``None``."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    return round(x, ndigits)


def auth_payload(
    state: str,
    subject: str | None,
    score: float | None,
    threshold: float | None,
    beats_used: int,
    time_s: float,
    valid_until: float,
    seq: int,
    model_id: str,
    reason: str | None = None,
    liveness: str | None = None,
) -> dict[str, Any]:
    """Build the payload of ``<prefix>/<device>/auth``.

    Parameters
    ----------
    state : {"authenticated", "rejected", "unknown"}
        The rolling decision.
    subject : str or None
        Enrolled subject the decision is about (``None`` when unknown).
    score : float or None
        Fused similarity score over the beats used (cosine, -1..1).
    threshold : float or None
        Fused threshold the score was compared with (from the model card).
    beats_used : int
        Number of good beats fused into ``score``.
    time_s : float
        Time of the decision, Unix seconds.
    valid_until : float
        Unix seconds after which the state must be treated as not
        authenticated (consumers fail closed).
    seq : int
        Per-device sequence number of auth states (increases by one each
        publish of the daemon; restarts at 1 when the daemon restarts).
    model_id : str
        Id of the embedding model (from its model card).
    reason : str, optional
        Why the state is what it is (human readable).
    liveness : {"live", "establishing", "failed", "leads_off"}, optional
        The liveness condition the decision rests on (issue 16: live before
        accepted). ``authenticated`` is only ever published with ``"live"``;
        None (a caller without liveness) is published as ``"establishing"``.

    Returns
    -------
    dict
        ``state, subject, score, threshold, beats_used, time, valid_until,
        seq, model_id, reason, liveness``.

    Raises
    ------
    ValueError
        Unknown state, or ``valid_until`` before ``time_s``.
    """
    if state not in AUTH_STATES:
        raise ValueError(f"auth state must be one of {AUTH_STATES}, not {state!r}")
    if not valid_until >= time_s:
        raise ValueError(f"valid_until {valid_until!r} is before time {time_s!r}")
    live = liveness or "establishing"
    if live not in LIVENESS_CONDITIONS:
        raise ValueError(f"liveness must be one of {LIVENESS_CONDITIONS}, not {liveness!r}")
    if state == "authenticated" and live != "live":
        raise ValueError(f"an authenticated state needs liveness 'live', not {live!r}")
    return {
        "state": state,
        "subject": subject,
        "score": _num(score, 4),
        "threshold": _num(threshold, 4),
        "beats_used": int(beats_used),
        "time": _num(time_s, 3),
        "valid_until": _num(valid_until, 3),
        "seq": int(seq),
        "model_id": model_id,
        "reason": reason,
        "liveness": live,
    }


def liveness_payload(
    live: bool,
    leads_on: bool,
    heart_rate_bpm: float | None,
    signal_quality: float | None,
    time_s: float,
    valid_until: float,
    reasons: Iterable[str],
    rate_declared_hz: float | None,
    rate_measured_hz: float | None,
) -> dict[str, Any]:
    """Build the payload of ``<prefix>/<device>/liveness``.

    Parameters
    ----------
    live : bool
        All liveness checks pass right now.
    leads_on : bool
        The electrodes are in contact.
    heart_rate_bpm : float or None
        Recent heart rate, beats per minute.
    signal_quality : float or None
        Recent signal-quality index, 0..1.
    time_s, valid_until : float
        Unix seconds, as in :func:`auth_payload`.
    reasons : iterable of str
        Checks that fail (empty when ``live``).
    rate_declared_hz, rate_measured_hz : float or None
        Sampling rate the source declares and the rate samples really arrive at.

    Returns
    -------
    dict
        ``live, leads_on, heart_rate_bpm, signal_quality, time, valid_until,
        reasons, rate_declared_hz, rate_measured_hz``.
    """
    if not valid_until >= time_s:
        raise ValueError(f"valid_until {valid_until!r} is before time {time_s!r}")
    return {
        "live": bool(live),
        "leads_on": bool(leads_on),
        "heart_rate_bpm": _num(heart_rate_bpm, 1),
        "signal_quality": _num(signal_quality, 3),
        "time": _num(time_s, 3),
        "valid_until": _num(valid_until, 3),
        "reasons": [str(r) for r in reasons],
        "rate_declared_hz": _num(rate_declared_hz, 2),
        "rate_measured_hz": _num(rate_measured_hz, 2),
    }


def stale_replacement(kind: str, payload: dict[str, Any], valid_until: float,
                      now: float) -> tuple[dict[str, Any], float]:
    """The fail-closed stand-in for a state whose ``valid_until`` has passed.

    A state is never published after its ``valid_until``: an expired auth
    state becomes ``unknown`` and an expired liveness state becomes
    ``live: false``, both marked ``"stale": true``, stamped ``now`` and valid
    for as long as the original was.

    Parameters
    ----------
    kind : {"auth", "liveness"}
    payload : dict
        The expired payload.
    valid_until, now : float
        Unix seconds.

    Returns
    -------
    (dict, float)
        The replacement payload and its ``valid_until``.
    """
    span = max(1.0, float(valid_until) - float(payload.get("time") or valid_until))
    new_until = now + span
    p = dict(payload)
    p.update(time=_num(now, 3), valid_until=_num(new_until, 3), stale=True)
    why = "state expired before it could be published"
    if kind == "auth":
        p.update(state="unknown", score=None, beats_used=0, reason=why)
    else:
        p.update(live=False, reasons=[why])
    return p, new_until
