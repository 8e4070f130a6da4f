"""The matcher stage: a beat's embedding in, one score per subject out.

The score itself (cosine against a template's centroids, cohort z-norm) is
:class:`ecgstream.pipeline.scores.Scorer`, the one definition training calibrates
its thresholds on. This stage is what the daemon keeps per device around
it: its own copy of the templates, and the gate of online adaptation (which
beats may move that copy; :class:`~ecgstream.pipeline.scores.AdaptationPolicy`
says how far).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.types import Beat
from .decide import AUTHENTICATED, AuthDecision
from .liveness import LivenessState
from .scores import AdaptationPolicy, Cohort, Scorer

__all__ = ["Matcher"]


class Matcher:
    """Scores of beat embeddings against the templates of one device's subjects.

    Parameters
    ----------
    subjects : list of str
        Subjects scored, in the order of the score columns.
    centroids : sequence of ndarray
        Per subject, its centroids ``(sittings, dim)``.
    norm : str
        ``none`` or ``znorm``, from the model card.
    cohort : Cohort, optional
        The model's impostor cohort (needed for ``znorm``).
    adaptation : AdaptationConfig, optional
        Online adaptation settings (``enabled``, ``margin``, ``rate``,
        ``floor``); None: never adapt.
    window_beats : int
        The decision's window: a beat adapts only on a full window.
    policy : AdaptationPolicy, optional
        ``adaptation.policy()`` when not given.

    Examples
    --------
    >>> m = Matcher(["alice"], [template.centroids], norm="none")  # doctest: +SKIP
    >>> m.push(embeddings).shape  # (n_beats, n_subjects)  # doctest: +SKIP
    (10, 1)
    """

    def __init__(self, subjects: Sequence[str], centroids: Sequence[np.ndarray], norm: str = "none",
                 cohort: Cohort | None = None, adaptation: Any = None, window_beats: int = 0,
                 policy: AdaptationPolicy | None = None) -> None:
        self.subjects = list(subjects)
        self.scorer = Scorer(centroids, norm=norm, cohort=cohort)
        self.adaptation = adaptation
        if policy is None and adaptation is not None:
            policy = adaptation.policy()
        self._policy = policy
        self.window_beats = window_beats

    def push(self, embeddings: np.ndarray) -> np.ndarray:
        """Scores ``(n, n_subjects)`` of unit embeddings ``(n, dim)`` (or one ``(dim,)``)."""
        return self.scorer.scores(embeddings)

    def adapt(self, beat: Beat, embedding: np.ndarray, d: AuthDecision, live: LivenessState) -> bool:
        """Fold a beat into the template copy when the evidence is beyond doubt; True if it was.

        Only a fully good beat (not a warm-up one), while the device is
        ``authenticated`` on a full window, positively live, and the fused
        score clears the threshold by ``margin``: never from ``unknown``, a
        liveness failure or a flagged beat. How far the template may move is
        :class:`~ecgstream.pipeline.scores.AdaptationPolicy`'s business (rate, floor).
        """
        cfg = self.adaptation
        if cfg is None or not cfg.enabled or d.state != AUTHENTICATED or d.subject is None:
            return False
        if not beat.good or not live.live or live.failed or d.threshold is None or d.score is None:
            return False
        if d.beats_used < self.window_beats or d.score < d.threshold + cfg.margin:
            return False
        assert self._policy is not None
        self.scorer.adapt(self.subjects.index(d.subject), embedding, self._policy)
        return True

    def reset(self, reason: str = "") -> None:
        """A new contact keeps the adapted copy: it is the same device's wearer until a restart."""
