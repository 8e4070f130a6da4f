"""Attempt limits and untrusted input in the daemon (issue 11, parts 1 and 3)."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest
from helpers_realparts import enrol_with_cli

from ecgstream.core.settings import AttemptsConfig, DecisionConfig
from ecgstream.core.types import SampleChunk
from ecgstream.pipeline.decide import AUTHENTICATED, REJECTED, UNKNOWN, AuthDecision
from ecgstream.sources.records import excerpt_dir, read_record
from ecgstream.trust.attempts import AttemptLimiter

EX = excerpt_dir()


def _d(state):
    return AuthDecision(state, "p01" if state != UNKNOWN else None, 0.5, 0.6, 10, state, True)


def test_limiter_counts_turns_to_rejected_and_locks():
    lim = AttemptLimiter(AttemptsConfig(max_failures=3, window_s=60, lockout_s=100))
    t = 0.0
    for _ in range(2):
        out, ev = lim.apply("d", _d(REJECTED), t)
        assert out.state == REJECTED and ev is None
        lim.apply("d", _d(REJECTED), t + 1)  # staying rejected is the same attempt
        lim.apply("d", _d(UNKNOWN), t + 2)  # leads off
        t += 10
    out, ev = lim.apply("d", _d(REJECTED), t)
    assert ev is not None and ev.started and ev.failures == 3 and ev.until == t + 100
    out, _ = lim.apply("d", _d(AUTHENTICATED), t + 50)
    assert out.state == UNKNOWN and "locked out" in out.reason and out.changed
    assert lim.locked("d", t + 99) and not lim.locked("other", t)
    out, ev = lim.apply("d", _d(AUTHENTICATED), t + 100)
    assert out.state == AUTHENTICATED and out.changed and ev is not None and not ev.started


def test_limiter_window_and_success_reset():
    lim = AttemptLimiter(AttemptsConfig(max_failures=2, window_s=10, lockout_s=100))
    lim.apply("d", _d(REJECTED), 0)
    lim.apply("d", _d(UNKNOWN), 1)
    _, ev = lim.apply("d", _d(REJECTED), 20)  # the first is out of the window
    assert ev is None
    lim.apply("d", _d(AUTHENTICATED), 21)  # a success clears the count
    _, ev = lim.apply("d", _d(REJECTED), 22)
    assert ev is None
    lim.apply("d", _d(UNKNOWN), 23)
    _, ev = lim.apply("d", _d(REJECTED), 24)
    assert ev is not None and ev.started
    off = AttemptLimiter(AttemptsConfig(enabled=False))
    for t in range(20):
        off.apply("d", _d(REJECTED if t % 2 else UNKNOWN), t)
    assert off.apply("d", _d(AUTHENTICATED), 30)[0].state == AUTHENTICATED


def test_config_section():
    from ecgstream.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="attempts.max_failures"):
        load_config(None, {"attempts.max_failures": 0})
    cfg = load_config(None, {"attempts.lockout_s": 10.0, "input.max_devices": 5})
    assert cfg.attempts.lockout_s == 10.0 and cfg.input.max_devices == 5


# -- in the daemon, with the real model -------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    from edge import EmbeddingModel

    return EmbeddingModel()


@pytest.fixture(scope="module")
def templates(tmp_path_factory, model):
    from ecgstream.templates import TemplateStore, load_key

    s, k = enrol_with_cli(tmp_path_factory.mktemp("store"), EX / "Person_01" / "rec_1")
    return TemplateStore(s, load_key(key_file=str(k))).load_all(model.model_id)


class Segments:
    """Signal segments of one device, leads off between them; ``hook(i)`` runs before segment i."""

    def __init__(self, parts, fs, hook=None, device="dev1"):
        from ecgstream.sources.base import SourceStats

        self.uri, self.parts, self.fs, self.device, self.hook = f"memory:{device}", parts, fs, device, hook
        self.stats = SourceStats()
        self.on_untrusted = None

    def run(self, sink, stop):
        pos, n = 0, int(0.1 * self.fs)
        for i, x in enumerate(self.parts):
            if self.hook:
                self.hook(self, i)
            x = np.concatenate([x, np.full(int(2 * self.fs), np.nan)])  # leads off after each segment
            for k in range(0, x.size, n):
                part = x[k:k + n]
                sink(SampleChunk(self.device, self.fs, pos, part, arrival_s=time.monotonic(),
                                 leads_off=bool(np.isnan(part).all())))
                pos += part.size


def _run(model, templates, src, **kw):
    from ecgstream.daemon.loop import Daemon
    from ecgstream.publish import StdoutPublisher
    from ecgstream.trust.hooks import Trust

    buf = io.StringIO()
    d = Daemon([src], model, templates, StdoutPublisher(buf), default_subject="p01", speed=None,
               decision_cfg=DecisionConfig(operating_point="eer"), trust=Trust(**kw))
    assert d.run(threading.Event()) == 0
    return d, [json.loads(line) for line in buf.getvalue().splitlines()]


def test_daemon_locks_after_rejected_attempts_then_genuine_stays_unknown(model, templates):
    imp, fs = read_record(EX / "Person_06" / "rec_1", 0)[:2]
    gen, _ = read_record(EX / "Person_01" / "rec_2", 0)[:2]
    parts = [imp[: int(8 * fs)], imp[int(8 * fs): int(16 * fs)], gen]
    d, lines = _run(model, templates, Segments(parts, fs),
                    attempts=AttemptsConfig(max_failures=2, window_s=3600, lockout_s=3600))
    auth = [m for m in lines if m["kind"] == "auth"]
    assert sum(1 for a, b in zip(auth, auth[1:], strict=False) if b["state"] == "rejected" != a["state"]) >= 2
    events = [m for m in lines if m["kind"] == "event" and m.get("what") == "lockout"]
    assert events and events[0]["after"]["locked"] is True, [m for m in lines if m["kind"] == "event"]
    assert not any(m["state"] == "authenticated" for m in auth)
    assert any("locked out" in (m["reason"] or "") for m in auth)  # the genuine wearer was held
    assert d.trust.counters["lockouts"] == 1 and d.trust.counters["held"] > 0
    assert d.stats.adaptations == 0  # a locked device adapts nothing
    # control: without the limit the same stream authenticates in its genuine segment (and adapts)
    d2, lines = _run(model, templates, Segments(parts, fs), attempts=AttemptsConfig(enabled=False))
    assert any(m["kind"] == "auth" and m["state"] == "authenticated" for m in lines)
    assert d2.stats.adaptations > 0


def test_untrusted_chunk_sends_device_unknown_with_an_event(model, templates):
    gen, fs = read_record(EX / "Person_01" / "rec_2", 0)[:2]

    def hook(src, i):
        if i == 1:
            src.on_untrusted("dev1", "wrong MAC (forged, altered, or signed for another device)")
            time.sleep(0.6)  # the processing thread's tick (0.2 s) takes it

    half = gen.size // 2
    d, lines = _run(model, templates, Segments([gen[:half], gen[half:]], fs, hook))
    ev = [m for m in lines if m["kind"] == "event" and m.get("what") == "input"]
    assert ev and "wrong MAC" in ev[0]["reason"] and ev[0]["after"] == {"refused_chunks": 1}
    assert any("untrusted input: wrong MAC" in (m.get("reason") or "") for m in lines if m["kind"] == "auth")
    assert d.trust.counters["untrusted_chunks"] == 1
