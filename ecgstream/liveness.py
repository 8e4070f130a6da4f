"""Moved to :mod:`ecgstream.pipeline.liveness`; this name stays for existing imports."""

from .pipeline.liveness import EARLY_RATE_SLACK_S, LivenessState, LivenessTracker

__all__ = ["EARLY_RATE_SLACK_S", "LivenessState", "LivenessTracker"]
