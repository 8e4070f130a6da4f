"""Publishers: payload builders, the raw-data guard, stdout JSON lines, and MQTT
against a real Mosquitto (marker ``broker``; needs ``apt-get install -y mosquitto``)."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_broker import OPEN_PUBLISHERS, Broker, Observer, free_port, wait_for

from ecgstream.publish import (
    MqttPublisher,
    PayloadError,
    Publisher,
    PublishError,
    StdoutPublisher,
    auth_payload,
    check_payload,
    liveness_payload,
    stale_replacement,
)

REPO = Path(__file__).resolve().parents[1]


def _auth(state="authenticated", seq=1, t=None, valid_s=5.0, subject="alice"):
    t = time.time() if t is None else t
    return auth_payload(state, subject, 0.91234567, 0.8, 12, t, t + valid_s, seq, "m-1", "enough beats",
                        liveness="live" if state == "authenticated" else "establishing"), t + valid_s


def _live(t=None, valid_s=5.0):
    t = time.time() if t is None else t
    return liveness_payload(True, True, 71.26, 0.93, t, t + valid_s, [], 250.0, 249.7), t + valid_s


# -- pure functions -------------------------------------------------------------------
def test_auth_payload_fields_and_rounding():
    p, vu = _auth(t=1000.0)
    assert list(p) == ["state", "subject", "score", "threshold", "beats_used", "time",
                       "valid_until", "seq", "model_id", "reason", "liveness"]
    assert p["score"] == 0.9123 and p["time"] == 1000.0 and p["valid_until"] == 1005.0 == vu
    assert json.loads(json.dumps(p)) == p
    nan = auth_payload("unknown", None, float("nan"), math.inf, 0, 1.0, 2.0, 1, "m")
    assert nan["score"] is None and nan["threshold"] is None
    with pytest.raises(ValueError, match="auth state"):
        auth_payload("maybe", None, None, None, 0, 1.0, 2.0, 1, "m")
    with pytest.raises(ValueError, match="before time"):
        auth_payload("unknown", None, None, None, 0, 5.0, 2.0, 1, "m")


def test_liveness_payload_fields():
    p, _ = _live(t=10.0)
    assert set(p) == {"live", "leads_on", "heart_rate_bpm", "signal_quality", "time", "valid_until",
                      "reasons", "rate_declared_hz", "rate_measured_hz"}
    assert p["heart_rate_bpm"] == 71.3 and p["reasons"] == [] and p["live"] is True


def test_stale_replacement_never_authenticated():
    p, vu = _auth(t=100.0, valid_s=5.0)
    q, qvu = stale_replacement("auth", p, vu, now=200.0)
    assert q["state"] == "unknown" and q["stale"] is True and q["score"] is None
    assert q["time"] == 200.0 and qvu == q["valid_until"] == 205.0
    lp, lvu = _live(t=100.0)
    lq, _ = stale_replacement("liveness", lp, lvu, now=200.0)
    assert lq["live"] is False and lq["reasons"]


@pytest.mark.parametrize("bad", [
    {"samples": [1, 2]},
    {"Embedding": None},
    {"after": {"template_id": "x"}},
    {"beat_window": 1},
    {"x": list(range(100))},
    {"x": np.zeros(3)},
])
def test_payload_guard_refuses_raw_data(bad):
    with pytest.raises(PayloadError):
        check_payload(bad)
    pub = StdoutPublisher(io.StringIO())
    with pytest.raises(PayloadError):
        pub.event("dev1", bad)
    mq = MqttPublisher("127.0.0.1", 1)  # never started: the guard runs before any network
    with pytest.raises(PayloadError):
        mq.auth("dev1", bad, time.time() + 5)
    with pytest.raises(PayloadError):
        mq.event("dev1", bad)


def test_device_id_must_be_one_topic_level():
    pub = StdoutPublisher(io.StringIO())
    for bad in ("", "a/b", "+", "x#"):
        with pytest.raises(PayloadError):
            pub.availability(bad, True)


# -- stdout -----------------------------------------------------------------------------
def test_stdout_publisher_json_lines():
    out = io.StringIO()
    pub = StdoutPublisher(out)
    assert isinstance(pub, Publisher)
    pub.start()
    pub.availability("dev1", True)
    a, vu = _auth()
    pub.auth("dev1", a, vu)
    lv, lvu = _live()
    pub.liveness("dev1", lv, lvu)
    pub.event("dev1", {"what": "auth", "before": None, "after": {"state": "authenticated"}})
    pub.close()
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["kind"] for x in lines] == ["availability", "auth", "liveness", "event", "availability"]
    assert all(x["device"] == "dev1" for x in lines)
    assert lines[0]["state"] == "online" and lines[-1]["state"] == "offline"
    assert {k: v for k, v in lines[1].items() if k not in ("kind", "device")} == a
    assert pub.stats.published == 5 and pub.stats.dropped == 0


def test_stdout_publisher_broken_pipe_is_quiet():
    r, w = os.pipe()
    os.close(r)
    stream = os.fdopen(w, "w")
    pub = StdoutPublisher(stream)
    a, vu = _auth()
    pub.auth("dev1", a, vu)  # BrokenPipeError inside: no raise
    pub.auth("dev1", a, vu)
    assert pub.stats.dropped == 2 and pub.stats.published == 0
    closed = io.StringIO()
    closed.close()
    pub2 = StdoutPublisher(closed)
    pub2.availability("dev1", True)
    assert pub2.stats.dropped == 1
    with __import__("contextlib").suppress(OSError):
        stream.close()


def test_stdout_publisher_head_subprocess():
    """`... | head -n 1`: the publisher stops quietly and the process exits cleanly."""
    code = textwrap.dedent("""
        import sys, time
        from ecgstream.publish import StdoutPublisher, auth_payload
        pub = StdoutPublisher()
        t = time.time()
        for i in range(20000):
            pub.auth("dev1", auth_payload("unknown", None, None, None, 0, t, t + 5, i, "m"), t + 5)
        print("dropped", pub.stats.dropped, file=sys.stderr)
    """)
    p = subprocess.run(f"{sys.executable} -c '{code}' | head -n 1", shell=True, cwd=REPO,
                       capture_output=True, text=True, timeout=30)
    assert json.loads(p.stdout)["kind"] == "auth"
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr
    assert "dropped" in p.stderr and not p.stderr.startswith("dropped 0")


# -- MQTT against a real broker -------------------------------------------------------------
@pytest.fixture
def broker(tmp_path):
    with Broker(tmp_path / "broker") as b:
        yield b


_OPEN = OPEN_PUBLISHERS  # closed after each test by conftest's close_publishers


def _mqtt(host, port, **kw):
    pub = MqttPublisher(host, port, **kw)
    _OPEN.append(pub)
    return pub


def _pub(broker, **kw):
    kw.setdefault("retry_min_s", 0.1)
    kw.setdefault("connect_timeout_s", 3.0)
    return _mqtt(broker.host, broker.port, **kw)


@pytest.mark.broker
def test_broker_retained_states_qos1_and_expiry(broker):
    pub = _pub(broker, will_devices=["dev1"], client_id="t-retained")
    pub.start()
    assert pub.connected
    with Observer(broker, "ecgstream/#") as live_obs:
        pub.availability("dev1", True)
        a, vu = _auth(valid_s=30.0)
        pub.auth("dev1", a, vu)
        lv, lvu = _live(valid_s=20.0)
        pub.liveness("dev1", lv, lvu)
        pub.event("dev1", {"what": "auth", "before": None, "after": {"state": "authenticated"}})
        assert wait_for(lambda: pub.stats.published == 4), pub.stats
        ev = live_obs.wait("ecgstream/dev1/events")
        assert ev is not None and ev.retain is False and json.loads(ev.text)["what"] == "auth"
    with Observer(broker, "ecgstream/#") as obs:  # a late subscriber sees only retained messages
        auth = obs.wait("ecgstream/dev1/auth")
        live = obs.wait("ecgstream/dev1/liveness")
        avail = obs.wait("ecgstream/dev1/availability")
        time.sleep(0.2)
        assert obs.on("ecgstream/dev1/events") == []  # events are not retained
    assert auth.retain and auth.qos == 1 and json.loads(auth.text) == a
    assert live.retain and live.qos == 1 and json.loads(live.text) == lv
    assert avail.retain and avail.qos == 1 and avail.text == "online"
    expiry = auth.properties.MessageExpiryInterval  # the broker forwards what is left of it
    assert 28 <= expiry <= 30, expiry
    assert 18 <= live.properties.MessageExpiryInterval <= 20
    pub.close()
    with Observer(broker, "ecgstream/+/availability") as obs:
        off = obs.wait("ecgstream/dev1/availability")
    assert off.text == "offline" and off.retain


@pytest.mark.broker
def test_broker_retained_state_expires_at_valid_until(broker):
    pub = _pub(broker, will_devices=["dev1"])
    pub.start()
    a, vu = _auth(valid_s=1.0)
    pub.auth("dev1", a, vu)
    assert wait_for(lambda: pub.stats.published == 1)
    time.sleep(2.1)
    with Observer(broker, "ecgstream/#") as obs:
        time.sleep(0.3)
        assert obs.on("ecgstream/dev1/auth") == []
    pub.close()


@pytest.mark.broker
def test_broker_mqtt311_has_no_expiry(broker):
    pub = _pub(broker, protocol="3.1.1", will_devices=["dev1"])
    pub.start()
    a, vu = _auth()
    pub.auth("dev1", a, vu)
    assert wait_for(lambda: pub.stats.published == 1)
    with Observer(broker, "ecgstream/#") as obs:
        m = obs.wait("ecgstream/dev1/auth")
    assert json.loads(m.text)["valid_until"] == round(vu, 3)
    assert not hasattr(m.properties, "MessageExpiryInterval")
    pub.close()


@pytest.mark.broker
def test_broker_multi_device_daemon_availability(broker):
    pub = _pub(broker, client_id="gw-1")
    assert pub.daemon_topic == "ecgstream/daemon/gw-1/availability" == pub.will_topic
    pub.start()
    pub.availability("a", True)
    pub.availability("b", True)
    assert wait_for(lambda: pub.stats.published == 3)
    with Observer(broker, "ecgstream/#") as obs:
        assert obs.wait(pub.daemon_topic).text == "online"
    pub.close()
    with Observer(broker, "ecgstream/#") as obs:
        assert obs.wait(pub.daemon_topic).text == "offline"
        assert obs.wait("ecgstream/a/availability").text == "offline"
        assert obs.wait("ecgstream/b/availability").text == "offline"


WILL_SCRIPT = """
import sys, time
from ecgstream.publish import MqttPublisher
pub = MqttPublisher("127.0.0.1", int(sys.argv[1]), will_devices=sys.argv[2:3] or None, client_id="will-test")
pub.start()
pub.availability("dev9", True)
while pub.stats.published < (1 if sys.argv[2:3] else 2):
    time.sleep(0.01)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.broker
@pytest.mark.parametrize("single", [True, False], ids=["single-device", "multi-device"])
def test_broker_last_will_on_sigkill(broker, single):
    args = [sys.executable, "-c", WILL_SCRIPT, str(broker.port)] + (["dev9"] if single else [])
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        topic = "ecgstream/dev9/availability" if single else "ecgstream/daemon/will-test/availability"
        with Observer(broker, "ecgstream/#") as obs:
            assert obs.wait(topic).text == "online"
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
            off = obs.wait(topic, lambda m: m.text == "offline")
            assert off is not None, broker.log()
            assert not off.retain  # delivered live ...
        with Observer(broker, "ecgstream/#") as obs:  # ... and retained for later subscribers
            m = obs.wait(topic)
            assert m.text == "offline" and m.retain
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.broker
def test_broker_republish_after_restart(broker, caplog):
    caplog.set_level(logging.WARNING, logger="ecgstream.publish")
    pub = _pub(broker, will_devices=["dev1"])
    pub.start()
    pub.availability("dev1", True)
    a1, vu1 = _auth(seq=1, valid_s=60.0)
    pub.auth("dev1", a1, vu1)
    lv, lvu = _live(valid_s=60.0)
    pub.liveness("dev1", lv, lvu)
    assert wait_for(lambda: pub.stats.published == 3)
    broker.kill()  # no persistence: the broker forgets every retained message
    assert wait_for(lambda: not pub.connected)
    a2, vu2 = _auth(seq=2, state="rejected", valid_s=60.0)
    pub.auth("dev1", a2, vu2)
    pub.event("dev1", {"what": "auth", "before": {"state": "authenticated"}, "after": {"state": "rejected"}})
    # waiting: availability, auth and liveness (to republish) and the event
    assert wait_for(lambda: pub.stats.queued == 4), pub.stats
    broker.start()
    assert wait_for(lambda: pub.connected and pub.stats.queued == 0, 10), pub.stats
    assert pub.stats.reconnects == 1
    # online, auth seq 2, liveness, the event
    assert wait_for(lambda: pub.stats.published == 3 + 4), pub.stats
    with Observer(broker, "ecgstream/#") as obs:
        assert obs.wait("ecgstream/dev1/availability").text == "online"
        assert json.loads(obs.wait("ecgstream/dev1/auth").text) == a2
        assert json.loads(obs.wait("ecgstream/dev1/liveness").text) == lv
    assert any("lost" in r.getMessage() for r in caplog.records)
    pub.close()


@pytest.mark.broker
def test_broker_stale_state_is_replaced_not_republished(tmp_path):
    """A state that expired while disconnected reaches the broker as `unknown`, never `authenticated`."""
    port = free_port()
    now = [time.time()]
    pub = _mqtt("127.0.0.1", port, will_devices=["dev1"], retry_min_s=0.1, retry_max_s=0.2,
                        connect_timeout_s=1.0, clock=lambda: now[0])
    pub.start()  # retry mode: no broker yet, start() does not raise
    assert not pub.connected
    a, vu = _auth(t=now[0], valid_s=5.0)
    pub.auth("dev1", a, vu)
    now[0] += 30.0
    with Broker(tmp_path / "b", port=port) as broker:
        assert wait_for(lambda: pub.connected, 5)
        with Observer(broker, "ecgstream/#") as obs:
            m = json.loads(obs.wait("ecgstream/dev1/auth").text)
        assert m["state"] == "unknown" and m["stale"] is True and m["seq"] == 1
        assert m["valid_until"] >= now[0]
        pub.close()


def test_event_queue_bounded_while_disconnected(caplog):
    caplog.set_level(logging.WARNING, logger="ecgstream.publish")
    pub = _mqtt("127.0.0.1", free_port(), events_max=3, retry_min_s=5, connect_timeout_s=0.5)
    pub.start()
    for i in range(5):
        pub.event("dev1", {"what": "x", "i": i})
    assert pub.stats.dropped == 2 and pub.stats.queued == 3
    assert [p["i"] for _, p in pub._events] == [2, 3, 4]
    assert any("dropped" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    pub.close()


def test_exit_on_unreachable_broker():
    pub = _mqtt("127.0.0.1", free_port(), on_connect_failure="exit", connect_timeout_s=1.0)
    with pytest.raises(PublishError, match="refused"):
        pub.start()
