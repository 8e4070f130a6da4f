"""Issue 16, item 2: the fair, bounded intake (ecgstream/daemon/intake.py), unit by unit.

The end-to-end figure (a flooding wearable beside a genuine one, a real
broker and daemon) is bench/bench_flood.py and tests/test_flood.py.
"""

from __future__ import annotations

import numpy as np

from ecgstream.core.types import SampleChunk
from ecgstream.daemon.intake import DROPPED, FairIntake, IntakeLimits

FS = 500.0


def _c(dev: str, start: int, n: int, t: float) -> SampleChunk:
    return SampleChunk(dev, FS, start, np.zeros(n), arrival_s=t)


def test_round_robin_serves_every_device_in_turn():
    q = FairIntake(IntakeLimits(rate_factor=None))
    for i in range(100):
        q.put(_c("flood", i * 50, 50, 1.0))
    for i in range(3):
        q.put(_c("calm", i * 50, 50, 1.0))
    first = q.drain(0.0, 8)
    assert [c.device for c in first].count("calm") == 3  # not behind 100 chunks of the other
    order = [c.start_sample for c in first if c.device == "flood"]
    assert order == sorted(order)  # each device's own order is kept


def test_memory_is_bounded_in_samples_and_the_heaviest_device_loses():
    q = FairIntake(IntakeLimits(max_samples=10_000, rate_factor=None, device_backlog_s=1e9))
    for i in range(100):
        q.put(_c("flood", i * 1000, 1000, 1.0))
    assert q.samples <= 10_000
    assert q.put(_c("calm", 0, 50, 1.0))
    got = q.drain(0.0, 1000)
    assert [c for c in got if c.device == "calm"], "the neighbour's chunk was dropped"
    assert q.stats.dropped_chunks > 80 and q.stats.peak_samples <= 10_000
    floods = q.take_floods()
    assert set(floods) == {"flood"} and floods["flood"][2].startswith(DROPPED)


def test_a_chunk_longer_than_the_cap_is_refused():
    q = FairIntake(IntakeLimits(max_chunk_s=2.0, rate_factor=None))
    assert not q.put(_c("big", 0, 20_000, 1.0))  # 40 s at 500 Hz
    assert q.put(_c("ok", 0, 1000, 1.0))
    assert q.stats.refused_long == 1 and "chunk of 40.0 s" in q.take_floods()["big"][2]


def test_rate_limit_is_tied_to_the_declared_rate():
    q = FairIntake(IntakeLimits(rate_factor=1.5, burst_s=2.0))
    t = 0.0
    ok = {"fast": 0, "paced": 0}
    for k in range(600):  # 60 s of host time in 0.1 s steps
        t = k * 0.1
        ok["paced"] += q.put(_c("paced", k * 50, 50, t))  # 500 Hz declared, 500 Hz sent
        for j in range(10):  # 10x its declared rate
            ok["fast"] += q.put(_c("fast", (k * 10 + j) * 50, 50, t))
        q.drain(0.0, 10_000)
    assert ok["paced"] == 600
    accepted = ok["fast"] * 50
    assert accepted <= 1.5 * FS * 60 + 2.0 * FS + 50  # the rate x time + the burst
    assert q.stats.refused_rate > 4000
    assert set(q.take_floods()) == {"fast"}


def test_a_devices_backlog_beyond_its_share_drops_its_own_oldest():
    q = FairIntake(IntakeLimits(rate_factor=None, device_backlog_s=1.0))
    for i in range(30):
        q.put(_c("d", i * 50, 50, 1.0))  # 3 s queued, 1 s allowed
    got = q.drain(0.0, 1000)
    assert len(got) == 10 and got[0].start_sample == 20 * 50  # the newest second stays
