"""Rolling decision: states, hysteresis, staleness, identification."""

from __future__ import annotations

import numpy as np
import pytest

from ecgstream.core.settings import DecisionConfig
from ecgstream.pipeline.decide import AUTHENTICATED, REJECTED, UNKNOWN, Decider, Thresholds

THR = Thresholds({1: 0.6, 3: 0.55, 10: 0.5})


def _decider(**kw):
    cfg = DecisionConfig(window_beats=10, min_beats=3, hysteresis=0.05, stale_s=5.0, **kw)
    return Decider(["alice"], THR, cfg)


def test_unknown_until_min_beats_then_authenticated():
    d = _decider()
    assert d.add_beat(0.0, [0.9]).state == UNKNOWN
    assert d.add_beat(1.0, [0.9]).state == UNKNOWN
    out = d.add_beat(2.0, [0.9])
    assert out.state == AUTHENTICATED and out.changed and out.subject == "alice"
    assert out.threshold == 0.55  # the 3-beat threshold, not the 10-beat one
    assert out.beats_used == 3


def test_impostor_rejected_and_hysteresis_holds():
    d = _decider()
    for t in range(3):
        out = d.add_beat(float(t), [0.2])
    assert out.state == REJECTED
    # Scores just above the threshold do not flip a rejected state...
    for t in range(3, 13):
        out = d.add_beat(float(t), [0.52])
    assert out.state == REJECTED
    # ...scores above threshold + hysteresis do.
    for t in range(13, 23):
        out = d.add_beat(float(t), [0.7])
    assert out.state == AUTHENTICATED
    # And a fused score slightly below the threshold keeps it authenticated.
    for t in range(23, 33):
        out = d.add_beat(float(t), [0.47])
    assert out.state == AUTHENTICATED
    for t in range(33, 43):
        out = d.add_beat(float(t), [0.3])
    assert out.state == REJECTED


def test_stale_evidence_goes_unknown():
    d = _decider()
    for t in range(3):
        d.add_beat(float(t), [0.9])
    assert d.tick(6.9).state == AUTHENTICATED
    out = d.tick(7.1)
    assert out.state == UNKNOWN and out.changed and "stale" in out.reason


def test_liveness_failure_blocks_authentication():
    d = _decider()
    for t in range(5):
        out = d.add_beat(float(t), [0.95], live_failed="looped or replayed recording")
    assert out.state == UNKNOWN and "not live" in out.reason


def test_identification_picks_best_subject():
    cfg = DecisionConfig(window_beats=5, min_beats=3)
    d = Decider(["alice", "bob"], THR, cfg)
    for t in range(3):
        out = d.add_beat(float(t), [0.2, 0.8])
    assert out.state == AUTHENTICATED and out.subject == "bob"
    for t in range(3, 8):
        out = d.add_beat(float(t), [0.1, 0.1])
    assert out.state == REJECTED and out.subject is None


def test_bad_scores_rejected():
    d = _decider()
    with pytest.raises(ValueError):
        d.add_beat(0.0, [np.nan])
    with pytest.raises(ValueError):
        d.add_beat(0.0, [0.1, 0.2])


def test_thresholds_from_card():
    card = {"single": {"eer": 0.4, "far_0.001": 0.6}, "fused": {"beats": 10, "eer": 0.3, "far_0.001": 0.5},
            "fused_by_beats": {"3": {"eer": 0.35, "far_0.001": 0.55}}}
    t = Thresholds.from_card(card, "far_0.001")
    assert t.for_beats(1) == (0.6, 1)
    assert t.for_beats(4) == (0.55, 3)
    assert t.for_beats(12) == (0.5, 10)
    with pytest.raises(ValueError):
        Thresholds.from_card({"single": {}}, "eer")
