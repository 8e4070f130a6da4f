"""Moved to :mod:`ecgstream.pipeline.decide`; this name stays for existing imports."""

from .pipeline.decide import AUTHENTICATED, REJECTED, UNKNOWN, AuthDecision, Decider, Thresholds

__all__ = ["AuthDecision", "Decider", "Thresholds", "UNKNOWN", "AUTHENTICATED", "REJECTED"]
