"""The fail-closed reader (issue 11, part 2): rules, then a real daemon and broker.

The rules are :func:`ecgstream.reader.evaluate`, tested with an injected
clock. Then ``python -m ecgstream run`` publishes to a Mosquitto the test
starts while an :class:`~ecgstream.reader.AuthReader` and ``ecgstream watch``
follow it: the reader must stop answering ``True`` after the daemon is
killed (SIGKILL: the broker fires the last will), paused (SIGSTOP: nothing
fires; ``valid_until`` passes) and when the clock passes ``valid_until``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from helpers_broker import Broker, require_mosquitto, wait_for
from helpers_realparts import enrol_with_cli

from ecgstream.reader import AuthReader, DeviceView, evaluate
from ecgstream.sources.records import excerpt_dir

EX = excerpt_dir()
EXE = [sys.executable, "-m", "ecgstream"]
DEV = "Person_01-rec_2"


def _auth(**kw):
    a = {"state": "authenticated", "subject": "alice", "time": 100.0, "valid_until": 102.0,
         "model_id": "m1", "seq": 3, "liveness": "live"}
    a.update(kw)
    return DeviceView("online", a)


@pytest.mark.parametrize("view,kw,reason", [
    (None, {}, "nothing heard"),
    (DeviceView("offline", _auth().auth), {}, "device offline"),
    (DeviceView(None, _auth().auth), {}, "availability unknown"),
    (DeviceView("online", None), {}, "no readable auth state"),
    (_auth(state="rejected"), {}, "'rejected'"),
    (_auth(state="unknown"), {}, "'unknown'"),
    (_auth(state=1), {}, "no state"),
    (_auth(valid_until="102"), {}, "numeric"),
    (_auth(valid_until=float("nan")), {}, "numeric"),
    (_auth(valid_until=None), {}, "numeric"),
    (_auth(valid_until=100.0 + 3600), {}, "claims"),
    (_auth(model_id="m2"), {"model_id": "m1"}, "not the expected"),
    (_auth(model_id=None), {}, "lacks a model id"),
    (_auth(subject="bob"), {"subject": "alice"}, "subject"),
    (_auth(), {"daemon_online": False}, "daemon offline"),
    (_auth(), {"connected": False}, "not connected"),
    (_auth(), {"skew_s": 1.5}, "expired"),
])
def test_every_rule_fails_closed(view, kw, reason):  # now = 101.0
    v = evaluate(view, 101.0, **kw)
    assert not v.authenticated and reason in v.reason, v


def test_clock_passing_valid_until():
    v = _auth()
    assert evaluate(v, 101.999, model_id="m1").authenticated
    assert not evaluate(v, 102.0, model_id="m1").authenticated  # at valid_until it means nothing
    assert evaluate(v, 101.0, daemon_online=True, subject="alice").authenticated


def test_reader_without_broker_messages_and_injected_clock():
    now = [100.5]
    r = AuthReader("127.0.0.1", 1, device="d1", model_id="m1", clock=lambda: now[0])
    r._connected.set()  # as after a SUBACK; messages come through on_message
    assert not r.authenticated()
    r.on_message("ecgstream/d1/auth", json.dumps(_auth().auth).encode())
    assert not r.authenticated()  # availability not heard yet
    r.on_message("ecgstream/d1/availability", b"online")
    assert r.authenticated()
    r.on_message("ecgstream/d2/auth", json.dumps(_auth().auth).encode())  # another device: ignored
    assert r.devices() == ["d1"]
    now[0] = 102.0
    assert not r.authenticated()
    now[0] = 100.5
    r.on_message("ecgstream/d1/auth", b"\xff not json")
    assert not r.authenticated()
    r.on_message("ecgstream/d1/auth", json.dumps(_auth().auth).encode())
    r._on_lost()  # a lost connection forgets everything
    assert not r.authenticated()


# -- a real daemon ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return enrol_with_cli(tmp_path_factory.mktemp("store"), EX / "Person_01" / "rec_1")


def _daemon(b: Broker, store, tmp_path, valid_for_s: float = 2.0) -> subprocess.Popen:
    cfg = tmp_path / "d.toml"
    cfg.write_text(f"[decision]\nvalid_for_s = {valid_for_s}\noperating_point = \"eer\"\n"
                   "[mqtt]\nkeepalive = 60\n")
    return subprocess.Popen(
        [*EXE, "run", "--config", str(cfg), "--source", f"wfdb:{EX / 'Person_01' / 'rec_2'}?loop=1",
         "--speed", "4", "--subject", "p01", "--store", str(store[0]), "--key-file", str(store[1]),
         "--mqtt-host", b.host, "--mqtt-port", str(b.port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGCONT)
        p.kill()
    p.communicate(timeout=30)


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_reader_fails_closed_when_daemon_dies_or_hangs(tmp_path, store, sig):
    require_mosquitto()
    with Broker(tmp_path / "b") as b:
        p = _daemon(b, store, tmp_path)
        try:
            with AuthReader(b.host, b.port, device=DEV) as r:
                assert wait_for(r.authenticated, timeout_s=60, step_s=0.1), (r.verdict(), p.stderr)
                vu = r.verdict().valid_until
                t0 = time.time()
                p.send_signal(sig)
                assert wait_for(lambda: not r.authenticated(), timeout_s=10, step_s=0.01)
                lag = time.time() - t0
                assert lag <= (vu - t0) + 0.5, (lag, vu - t0)  # never later than valid_until (+ poll)
                if sig == signal.SIGKILL:
                    assert wait_for(lambda: "offline" in r.verdict().reason, 5), r.verdict()
                else:
                    assert "expired" in r.verdict().reason, r.verdict()
                    time.sleep(0.5)
                    assert not r.authenticated()
        finally:
            _stop(p)


@pytest.mark.broker
@pytest.mark.slow
def test_watch_command_follows_the_daemon(tmp_path, store):
    require_mosquitto()
    with Broker(tmp_path / "b") as b:
        p = _daemon(b, store, tmp_path)
        w = None
        try:
            w = subprocess.Popen([*EXE, "watch", "--device", DEV, "--mqtt-host", b.host,
                                  "--mqtt-port", str(b.port)], stdout=subprocess.PIPE, text=True)
            lines: list[dict] = []

            def read_until(pred, timeout_s):
                deadline = time.monotonic() + timeout_s
                while time.monotonic() < deadline:
                    ln = w.stdout.readline()
                    if not ln:
                        return False
                    lines.append(json.loads(ln))
                    if pred(lines[-1]):
                        return True
                return False

            assert read_until(lambda v: v["authenticated"], 60), lines
            assert lines[0]["authenticated"] is False  # first answer before any state: not authenticated
            once = subprocess.run([*EXE, "watch", "--once", "--device", DEV, "--mqtt-host", b.host,
                                   "--mqtt-port", str(b.port)], capture_output=True, text=True, timeout=60)
            assert once.returncode == 0 and json.loads(once.stdout)["authenticated"], once
            p.send_signal(signal.SIGSTOP)
            assert read_until(lambda v: not v["authenticated"], 10), lines
            assert "expired" in lines[-1]["reason"]
            once = subprocess.run([*EXE, "watch", "--once", "--wait", "0.5", "--device", DEV,
                                   "--mqtt-host", b.host, "--mqtt-port", str(b.port)],
                                  capture_output=True, text=True, timeout=60)
            assert once.returncode == 1 and not json.loads(once.stdout)["authenticated"], once
        finally:
            if w is not None:
                w.terminate()
                w.communicate(timeout=10)
            _stop(p)
