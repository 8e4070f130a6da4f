"""The stages after the DSP, in data-flow order: embed, match, decide, liveness.

Each stage follows the contract of :mod:`ecgstream.dsp`'s stages: one
stateful class, ``push(...)`` returns its typed output, ``tick(now)`` where
time matters, ``reset(reason)``; the offline API and enrolment run the same
classes over a whole recording.

============================  =========================================  ==========================
stage                         push                                        out
============================  =========================================  ==========================
:class:`Embedder`             beats (of any devices, one batch)           ``(n, dim)`` unit embeddings
:class:`Matcher`              embeddings of one device's beats            ``(n, n_subjects)`` scores
:class:`Decider`              one beat's scores, stream time, liveness    :class:`AuthDecision`
:class:`LivenessTracker`      one beat (``push_samples``: a chunk's size)  :class:`LivenessState`
============================  =========================================  ==========================
"""

from .decide import AUTHENTICATED, REJECTED, UNKNOWN, AuthDecision, Decider, Thresholds
from .embed import Embedder
from .liveness import LivenessState, LivenessTracker
from .match import Matcher

__all__ = [
    "AUTHENTICATED",
    "REJECTED",
    "UNKNOWN",
    "AuthDecision",
    "Decider",
    "Embedder",
    "LivenessState",
    "LivenessTracker",
    "Matcher",
    "Thresholds",
]
