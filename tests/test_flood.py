"""Issue 16, item 2, end to end: a flooding wearable beside a genuine one (real Mosquitto, real daemon).

A short run of ``bench/bench_flood.py`` (the full figures are in
docs/benchmarks/flood.md): strap1 floods with valid chunks of 5,000 samples
(10 s each at its declared 500 Hz) at 285 a second, 285 x its declared rate;
strap2, the genuine wearer, streams at real time. The daemon's memory
stays bounded, strap2 stays authenticated, strap1 loses and says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers_broker import require_mosquitto

pytestmark = [pytest.mark.broker, pytest.mark.slow]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def test_a_flooding_wearable_loses_and_its_neighbour_stays_authenticated(tmp_path):
    require_mosquitto()
    from bench_flood import run

    r = run(flood_at=7.0, flood_s=10.0, after_s=10.0, chunk=5000, workdir=tmp_path, per_s=285.0)
    share = r["strap2_authenticated_share"]
    assert r["rss_growth_mb"] <= 50, r
    assert share["during"] >= 0.9 and share["after"] >= 0.9, r
    assert r["strap1_input_events"] >= 1 and any("faster than" in w for w in r["strap1_input_reasons"]), r
