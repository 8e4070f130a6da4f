"""Issue 16, item 1: live before accepted.

No ``authenticated`` state leaves the daemon while liveness is not
positively established (or has failed); the auth payload says which
(``liveness``); a genuine wearer still gets a first ``authenticated`` within
about 5 s of leads on (``bench/bench_live_first_auth.py`` measures the
distribution; docs/benchmarks/live_first_auth.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ecgstream.core.settings import DecisionConfig, LivenessConfig
from ecgstream.core.types import Beat
from ecgstream.pipeline import (
    AUTHENTICATED,
    REJECTED,
    UNKNOWN,
    Decider,
    LivenessTracker,
    Thresholds,
)
from ecgstream.sources.records import excerpt_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def _beat(i: int, rr: float = 0.8, flags: frozenset = frozenset(), fs: float = 250.0) -> Beat:
    t = 1.0 + i * rr * (1 + 0.03 * np.sin(i))
    return Beat(device="d", r_sample=int(t * fs), r_time_s=t, window=np.sin(np.linspace(0, 3, 175)).astype(np.float32),
                rr_s=rr * (1 + 0.03 * np.sin(i)), quality=1.0, flags=flags)


def test_decider_holds_authenticated_until_liveness_is_established():
    d = Decider(["alice"], Thresholds({1: 0.5}), DecisionConfig(min_beats=2, hysteresis=0.0))
    for i in range(3):
        out = d.push(float(i), np.array([0.9]), live_pending="warming up")
        assert out.state == UNKNOWN
    assert "liveness not established" in out.reason
    assert d.tick(3.0, live_pending="warming up").state == UNKNOWN
    out = d.tick(3.2)  # established: decided at once, without waiting for a beat
    assert out.state == AUTHENTICATED and out.changed
    assert d.tick(3.4, live_pending="warming up").state == UNKNOWN  # not established any more (a gap)
    # rejected is not held: an impostor is told at once
    d2 = Decider(["alice"], Thresholds({1: 0.5}), DecisionConfig(min_beats=2))
    d2.push(0.0, np.array([0.1]), live_pending="warming up")
    assert d2.push(1.0, np.array([0.1]), live_pending="warming up").state == REJECTED


def test_liveness_is_established_by_beats_and_a_measured_rate():
    cfg = LivenessConfig()
    lv = LivenessTracker(250.0, cfg, expected_speed=1.0)
    t = 0.0
    lv.on_samples(25, t)
    states = []
    for i in range(12):
        for _ in range(8):  # 0.8 s of samples between beats, in 0.1 s chunks
            t += 0.1
            lv.on_samples(25, t)
        states.append(lv.push(_beat(i, flags=frozenset({"warmup"}) if i < 3 else frozenset()), False))
    first_live = next(i for i, s in enumerate(states) if s.live)
    assert first_live == cfg.establish_beats - 1  # the 6th beat, 3 s of arrivals are in by then
    assert all(s.condition == "establishing" and s.failed is None for s in states[:first_live])
    assert states[first_live].condition == "live"


def test_a_device_faster_than_declared_never_establishes():
    lv = LivenessTracker(250.0, LivenessConfig(), expected_speed=1.0)
    t = 0.0
    lv.on_samples(25, t)
    for i in range(10):
        for _ in range(8):
            t += 0.1
            lv.on_samples(28, t)  # 12 % fast: inside the early check's slack, outside the tolerance
        s = lv.push(_beat(i), False)
        assert not s.live


def test_few_bad_beats_hold_liveness_back_but_are_no_failure_before_the_window_is_full():
    lv = LivenessTracker(250.0, LivenessConfig(), expected_speed=None)
    for i in range(8):
        s = lv.push(_beat(i, flags=frozenset({"morphology"}) if i % 2 else frozenset()), False)
    assert not s.live and s.failed is None and s.condition == "establishing"
    assert any("signal quality" in r for r in s.reasons)
    for i in range(8, 14):
        s = lv.push(_beat(i, flags=frozenset({"morphology"}) if i % 2 else frozenset()), False)
    assert s.condition == "failed" and "signal quality" in s.failed


def test_a_paced_genuine_replay_publishes_no_authenticated_before_live():
    """The real daemon on a simulated paced clock (bench/bench_live_first_auth.py's harness)."""
    from bench_live_first_auth import one_run

    from ecgstream.sources import open_source
    from ecgstream.sources.records import read_record
    from ecgstream.templates.enroll import enrol
    from edge import EmbeddingModel

    model = EmbeddingModel()
    ex = excerpt_dir()
    tpl = enrol(open_source(f"wfdb:{ex / 'Person_01' / 'rec_1'}?speed=max"), model).template("p", model.model_id)
    for rec in ("rec_2", "rec_3"):
        x, fs, _ = read_record(ex / "Person_01" / rec, 0)
        r = one_run(model, tpl, x, fs, DecisionConfig(operating_point="eer"), LivenessConfig())
        assert r["authenticated_states"] > 5
        assert r["authenticated_while_liveness_not_live"] == 0
        assert r["authenticated_without_liveness_live_field"] == 0
        assert r["first_authenticated_s"] <= 6.5 and r["first_live_s"] <= r["first_authenticated_s"]
