"""End to end with real parts (issue 4): a real pty, a real broker, the daemon as a process.

The wearable is ``tools/wearable_sim.py`` (imported) speaking the ASCII serial
protocol (AD8232 counts, one line per sample, ``!`` while the leads are off)
into one side of an ``os.openpty()`` pair, or publishing JSON and binary
chunks to a Mosquitto the test starts. The daemon is
``python -m ecgstream run`` in a subprocess, with an encrypted template store
enrolled through the real CLI (Person_01 rec_2 as subject ``p01``; with the
current model, rec_2's template authenticates rec_3 and rec_4 of the same
person, rec_1's template sits at the threshold for them), and
publishes to that Mosquitto. An observer subscribed to ``ecgstream/#``
records every state.

Pacing: the serial and MQTT sources are live sources, so the daemon runs
them with the rate check of liveness on (samples must arrive at the
declared rate, measured on the host clock over >= 5 s). Playing a 500 Hz
record at 2-4x while declaring ``fs=500`` would be flagged ``rate ...``
(correctly: that is what :mod:`tests.test_faults` checks), and declaring
the rate the simulator really sends (1000-2000 Hz) would make the DSP see a
heart at a half or a quarter of its rate, with beats of the wrong shape. So
these tests play at real time and keep the spans short (12-20 s of signal):
each test takes 15-30 s.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_broker import Observer
from helpers_realparts import Broker, PtyPair, enrol_with_cli, require_mosquitto, wait_for

from ecgstream.sources.records import excerpt_dir
from tools.wearable_sim import (
    MqttPlan,
    SerialPlan,
    adc_counts,
    load_signal,
    mqtt_messages,
    publish_mqtt,
    serial_lines,
    write_lines,
)

EX = excerpt_dir()
EXE = [sys.executable, "-m", "ecgstream"]
FS = 500.0
#: AD8232 counts on a 10-bit ADC back to mV (gain 1100, 3.3 V reference, centred at 511.5).
COUNTS_TO_MV = "offset=511.5&scale=0.0029325513"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real encrypted store with p01 enrolled from Person_01 rec_2 through the CLI."""
    return enrol_with_cli(tmp_path_factory.mktemp("store"), EX / "Person_01" / "rec_2")


@pytest.fixture
def broker(tmp_path):
    require_mosquitto()
    with Broker(tmp_path / "broker") as b:
        yield b


class DaemonProc:
    """``python -m ecgstream run ...`` as a process; its stderr is kept line by line."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([*EXE, "run", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)

    def stderr(self) -> str:
        return "".join(self.err)

    def wait_log(self, pattern: str, timeout_s: float = 30.0) -> bool:
        rx = re.compile(pattern)
        return wait_for(lambda: any(rx.search(ln) for ln in list(self.err)) or self.proc.poll() is not None,
                        timeout_s, 0.05) and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._t.join(5)
        return self.proc.returncode


def _daemon_args(store, b: Broker, source: str) -> list[str]:
    return ["--source", source, "--subject", "p01", "--store", str(store[0]),
            "--key-file", str(store[1]), "--mqtt-host", b.host, "--mqtt-port", str(b.port)]


def _json(obs: Observer, topic: str) -> list[dict]:
    return [json.loads(m.payload) for m in obs.on(topic)]


def _states(obs: Observer, dev: str) -> list[str]:
    return [m["state"] for m in _json(obs, f"ecgstream/{dev}/auth")]


def _serial_counts(record: Path, seconds: float) -> np.ndarray:
    x, fs = load_signal(record, 0, seconds)
    assert fs == FS
    return adc_counts(x, bits=10)


def _play_serial(pty: PtyPair, counts: np.ndarray, plan: SerialPlan, stop: threading.Event) -> threading.Thread:
    lines = serial_lines(counts, FS, plan)
    t = threading.Thread(target=write_lines, args=(pty.master, lines, FS),
                         kwargs={"speed": 1.0, "stop": stop}, daemon=True)
    t.start()
    return t


# -- serial over a real pseudo-terminal --------------------------------------------------------
@pytest.mark.pty
@pytest.mark.broker
@pytest.mark.slow
def test_serial_pty_genuine_authenticates_then_leads_off_and_garbage(store, broker):
    """Person_01 rec_4 as ASCII lines at real time (500 lines/s, declared fs=500).

    0-11 s signal: ``authenticated`` for p01 (score >= threshold, valid_until
    in the future). 11-13 s ``!`` lines: auth ``unknown`` (reason leads off),
    liveness ``live: false, leads_on: false``. 13-15 s: every line garbage
    (1000 lines of typos, noise bytes, overlong and out-of-range lines): the
    source counts them (its log says ``1000 so far``), the daemon does not
    crash and publishes no ``authenticated`` state while they last. It
    stops cleanly on SIGTERM (exit 0, auth ``unknown``, ``offline``).
    """
    counts = _serial_counts(EX / "Person_01" / "rec_4", 15.0)
    garbage = list(range(int(13 * FS), int(15 * FS)))
    plan = SerialPlan("ascii", leads_off=[(11.0, 2.0)], garble_at=garbage)
    dev = "strap1"
    with PtyPair() as pty, Observer(broker, "ecgstream/#") as obs:
        d = DaemonProc(_daemon_args(store, broker, f"serial:{pty.path}?fs=500&format=ascii&device={dev}&"
                                    + COUNTS_TO_MV))
        stop = threading.Event()
        try:
            assert d.wait_log(r"serial strap1: opened"), d.stderr()
            t0 = time.monotonic()
            player = _play_serial(pty, counts, plan, stop)
            auth = f"ecgstream/{dev}/auth"
            live = f"ecgstream/{dev}/liveness"
            assert obs.wait(auth, lambda m: json.loads(m.payload)["state"] == "authenticated",
                            timeout_s=12), (_states(obs, dev), d.stderr()[-3000:])
            t_auth = time.monotonic() - t0
            assert t_auth < 11.5, t_auth  # decided on the signal before the leads came off
            good = [m for m in _json(obs, auth) if m["state"] == "authenticated"]
            assert all(m["subject"] == "p01" and m["score"] >= m["threshold"] for m in good)
            assert all(m["valid_until"] > m["time"] for m in good)
            # leads off: unknown, not live, leads not on
            assert obs.wait(auth, lambda m: "leads off" in json.loads(m.payload)["reason"],
                            timeout_s=max(1.0, 14.0 - (time.monotonic() - t0))), _states(obs, dev)
            off = obs.wait(live, lambda m: not json.loads(m.payload)["leads_on"], timeout_s=3)
            assert off is not None
            p = json.loads(off.payload)
            assert p["live"] is False and "leads off" in p["reasons"]
            n_before_garbage = len(obs.on(auth))
            player.join(15)
            assert not player.is_alive()
            assert d.wait_log(r"garbled line .*; 1000 so far", timeout_s=5), d.stderr()[-3000:]
            assert d.proc.poll() is None  # no crash
            during = _json(obs, auth)[n_before_garbage:]
            assert all(m["state"] != "authenticated" for m in during), during
        finally:
            stop.set()
            code = d.stop()
        assert code == 0, d.stderr()[-3000:]
        assert "Traceback" not in d.stderr()
        assert _states(obs, dev)[-1] == "unknown"
        assert obs.wait(f"ecgstream/{dev}/availability", lambda m: m.payload == b"offline", 3)


@pytest.mark.pty
@pytest.mark.broker
@pytest.mark.slow
def test_serial_pty_impostor_is_rejected(store, broker):
    """Person_06 rec_1 over the pty against p01's template: ``rejected``, never ``authenticated``."""
    counts = _serial_counts(EX / "Person_06" / "rec_1", 14.0)
    dev = "strap6"
    with PtyPair() as pty, Observer(broker, "ecgstream/#") as obs:
        d = DaemonProc(_daemon_args(store, broker, f"serial:{pty.path}?fs=500&device={dev}&" + COUNTS_TO_MV))
        stop = threading.Event()
        try:
            assert d.wait_log(r"serial strap6: opened"), d.stderr()
            _play_serial(pty, counts, SerialPlan("ascii"), stop)
            assert obs.wait(f"ecgstream/{dev}/auth", lambda m: json.loads(m.payload)["state"] == "rejected",
                            timeout_s=14), (_states(obs, dev), d.stderr()[-3000:])
            assert d.proc.poll() is None
        finally:
            stop.set()
            code = d.stop()
        assert code == 0, d.stderr()[-3000:]
        st = _states(obs, dev)
        assert "rejected" in st and "authenticated" not in st
        rejected = [m for m in _json(obs, f"ecgstream/{dev}/auth") if m["state"] == "rejected"]
        assert all(m["score"] < m["threshold"] for m in rejected)


# -- MQTT in, MQTT out ---------------------------------------------------------------------------
@pytest.mark.broker
@pytest.mark.slow
def test_mqtt_source_serves_several_devices_with_corrupt_payloads(store, broker):
    """Three wearables on ``ecgstream/<dev>/ecg``, one daemon on ``ecgstream/+/ecg``.

    ``genuine`` (Person_01 rec_4, JSON), ``impostor`` (Person_06 rec_1,
    binary float32) and ``third`` (Person_13 rec_1, binary int16, with three
    corrupt payloads in a row at 0.8 s: a counted loss and a gap), published
    together at real time for 16 s. Each device gets its own states on its own output topics:
    ``genuine`` authenticated, the others rejected and never authenticated.
    The corrupt payloads are counted (the source logs them with their
    device and reason) and crash nothing.
    """
    plans = {
        "genuine": (EX / "Person_01" / "rec_4", MqttPlan("json", chunk_s=0.1)),
        "impostor": (EX / "Person_06" / "rec_1", MqttPlan("binary", chunk_s=0.1)),
        "third": (EX / "Person_13" / "rec_1", MqttPlan("int16", chunk_s=0.1, corrupt=[8, 9, 10])),
    }
    msgs = []
    for dev, (rec, plan) in plans.items():
        x, fs = load_signal(rec, 0, 16.0)
        msgs += mqtt_messages(x, fs, dev, plan)
    msgs.sort(key=lambda m: (m.start_sample + m.n, m.topic))
    with Observer(broker, "ecgstream/#") as obs:
        d = DaemonProc(_daemon_args(store, broker, f"mqtt://{broker.host}:{broker.port}/ecgstream/+/ecg"))
        stop = threading.Event()
        try:
            assert d.wait_log(r"MQTT: subscribed to ecgstream/\+/ecg"), d.stderr()
            pub = threading.Thread(target=publish_mqtt, args=(broker.host, broker.port, msgs, FS),
                                   kwargs={"speed": 1.0, "stop": stop}, daemon=True)
            pub.start()
            ok = wait_for(lambda: "authenticated" in _states(obs, "genuine")
                          and "rejected" in _states(obs, "impostor") and "rejected" in _states(obs, "third"),
                          timeout_s=20, step_s=0.2)
            assert ok, ({dev: [(m["state"], m["score"], m["reason"]) for m in _json(obs, f"ecgstream/{dev}/auth")]
                        for dev in plans}, d.stderr()[-3000:])
            pub.join(10)
            assert d.wait_log(r"MQTT device third: corrupt payload .*; 1 so far", timeout_s=3), d.stderr()
            assert d.wait_log(r"MQTT device third: 3 message\(s\) lost", timeout_s=1), d.stderr()
            assert d.proc.poll() is None
        finally:
            stop.set()
            code = d.stop()
        assert code == 0, d.stderr()[-3000:]
        assert "Traceback" not in d.stderr()
        for dev in plans:  # every device has its own retained-topic set
            assert obs.on(f"ecgstream/{dev}/liveness") and obs.on(f"ecgstream/{dev}/availability")
        assert "authenticated" not in _states(obs, "impostor")
        assert "authenticated" not in _states(obs, "third")
        decided = [m for dev in plans for m in _json(obs, f"ecgstream/{dev}/auth") if m["state"] != "unknown"]
        assert decided and all(m["subject"] == "p01" for m in decided)
