"""Issue 16, item 4: no silent open door.

Each attack of the issue's row 4 (and row 8's restart replay and vanished
key), tried against the real parts: a real Mosquitto, the real MQTT
source, the real verifier and key store, the real ``ecgstream`` CLI.

* ``run`` and ``check-config`` warn loudly when the MQTT input is
  unauthenticated;
* a ``seq`` jump is a gap, never ownership: the wearer's own chunks keep
  flowing after a forged jump (2^32-2, last + 10^6);
* a retained ECG chunk is ignored (it would otherwise be delivered to every
  restarted daemon first);
* signed chunks made before the daemon started are refused;
* in ``keyed`` mode a device whose key file vanished is refused, never
  downgraded to unsigned.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_broker import Broker, require_mosquitto, wait_for
from helpers_realparts import SourceRunner

from ecgstream.sources import open_source
from ecgstream.sources.mqtt_payload import decode_payload, encode_json
from ecgstream.sources.mqtt_source import MqttSource
from ecgstream.sources.synthetic import synth_ecg

FS = 250.0
N = 25  # samples a chunk (0.1 s)
EXE = [sys.executable, "-m", "ecgstream"]


def _chunk(x: np.ndarray, seq: int, **kw) -> bytes:
    return encode_json(x[(seq % 400) * N:(seq % 400) * N + N], FS, seq, **kw)


# -- seq: a jump is a gap, not ownership (no broker needed for the rule) ---------------------------------
@pytest.mark.parametrize("forged", [2**32 - 2, 10**6, 2**31])
def test_a_forged_seq_jump_does_not_silence_the_devices_own_stream(forged):
    x = synth_ecg(40.0, FS, 70, seed=1)
    src = MqttSource("mqtt://127.0.0.1:1883/ecgstream/+/ecg")
    got = []
    for seq in range(50):
        got.append(src.handle("ecgstream/strap1/ecg", _chunk(x, seq), seq * 0.1))
    assert src.handle("ecgstream/strap1/ecg", _chunk(x, forged), 5.0) is not None  # the attacker's chunk: a gap
    after = [src.handle("ecgstream/strap1/ecg", _chunk(x, seq), 5.0 + seq * 0.1) for seq in range(50, 100)]
    assert all(c is not None for c in after), "the wearer's own chunks were dropped after a forged seq"
    assert after[0].gap_before and not any(c.gap_before for c in after[1:])  # one gap back, then continuous
    st = src.stats
    assert st.duplicates == 0 and st.resyncs == 2 and st.lost_messages == 0
    # the sample index did not jump by the forged seq times the chunk length
    assert after[-1].start_sample < 200 * N


def test_true_duplicates_and_short_reorders_are_still_dropped():
    x = synth_ecg(10.0, FS, 70, seed=2)
    src = MqttSource("mqtt://127.0.0.1:1883/ecgstream/+/ecg")
    for seq in range(20):
        assert src.handle("ecgstream/d/ecg", _chunk(x, seq), seq * 0.1) is not None
    assert src.handle("ecgstream/d/ecg", _chunk(x, 19), 2.0) is None
    assert src.handle("ecgstream/d/ecg", _chunk(x, 10), 2.0) is None
    assert src.stats.duplicates == 2 and src.stats.resyncs == 0


# -- a real broker ------------------------------------------------------------------------------------------
@pytest.fixture
def broker(tmp_path):
    require_mosquitto()
    with Broker(tmp_path) as b:
        yield b


def _client(broker):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{os.getpid()}-{time.monotonic_ns()}")
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


@pytest.mark.broker
def test_retained_ecg_is_ignored_and_cannot_starve_a_device_across_restarts(broker):
    """A retained chunk with seq 2^32-2 sits on the broker; a (re)started source ignores it, and the
    wearer's chunks from seq 0 all arrive."""
    x = synth_ecg(20.0, FS, 70, seed=3)
    pub = _client(broker)
    try:
        pub.publish("ecgstream/strap1/ecg", _chunk(x, 2**32 - 2), qos=1, retain=True).wait_for_publish(5)
        for _restart in range(2):
            src = open_source(f"mqtt://{broker.host}:{broker.port}/ecgstream/+/ecg", retry_min_s=0.1)
            with SourceRunner(src) as run:
                assert wait_for(src.connected.is_set, 5), run.error
                assert wait_for(lambda src=src: src.stats.retained >= 1, 5)
                for seq in range(30):
                    pub.publish("ecgstream/strap1/ecg", _chunk(x, seq), qos=1).wait_for_publish(5)
                assert wait_for(lambda: run.samples("strap1") >= 30 * N, 5), run.samples("strap1")
                assert src.stats.duplicates == 0 and src.stats.retained == 1
    finally:
        pub.loop_stop()
        pub.disconnect()


@pytest.mark.broker
def test_seq_jump_injected_through_a_real_broker_does_not_take_a_device_over(broker):
    x = synth_ecg(20.0, FS, 70, seed=4)
    src = open_source(f"mqtt://{broker.host}:{broker.port}/ecgstream/+/ecg", retry_min_s=0.1)
    wearer, attacker = _client(broker), _client(broker)
    try:
        with SourceRunner(src) as run:
            assert wait_for(src.connected.is_set, 5), run.error
            for seq in range(20):
                wearer.publish("ecgstream/strap1/ecg", _chunk(x, seq), qos=1).wait_for_publish(5)
            attacker.publish("ecgstream/strap1/ecg", _chunk(x, 10**6), qos=1).wait_for_publish(5)
            time.sleep(0.2)
            for seq in range(20, 60):
                wearer.publish("ecgstream/strap1/ecg", _chunk(x, seq), qos=1).wait_for_publish(5)
            assert wait_for(lambda: run.samples("strap1") >= 61 * N, 5), run.samples("strap1")
            assert src.stats.duplicates == 0
    finally:
        for c in (wearer, attacker):
            c.loop_stop()
            c.disconnect()


# -- signed chunks: made before the daemon's start; a vanished key ----------------------------------------
def test_signed_chunks_made_before_the_daemons_start_are_refused():
    from ecgstream.trust.msgauth import MessageVerifier

    key = bytes(range(32))
    x = synth_ecg(5.0, FS, 70, seed=5)
    t_capture = time.time() - 10  # captured 10 s before the restart, inside the 30 s MAC window
    captured = [decode_payload(encode_json(x[i * N:(i + 1) * N], FS, i, key=key, device="s1",
                                           t_ms=int(t_capture * 1000) + i * 100)) for i in range(20)]
    before = MessageVerifier({"s1": key}, "keyed", 30.0)  # the tree before: no start time
    assert all(before.check("s1", d) is None for d in captured)  # 20/20 accepted (the 200/200)
    after_restart = MessageVerifier({"s1": key}, "keyed", 30.0, not_before_s=time.time())
    why = [after_restart.check("s1", d) for d in captured]
    assert all(w is not None and "before the daemon started" in w for w in why)
    fresh = decode_payload(encode_json(x[:N], FS, 0, key=key, device="s1", t_ms=int(time.time() * 1000) + 5))
    assert after_restart.check("s1", fresh) is None


def test_keyed_mode_refuses_a_device_whose_key_vanished(tmp_path: Path):
    from ecgstream.trust.msgauth import DeviceKeyStore, MessageVerifier

    store = DeviceKeyStore(tmp_path / "device-keys", bytes(32))
    store.add("strap1")
    store.add("strap2")
    assert store.vanished() == []
    os.unlink(store.path_for("strap1"))  # deleted by hand (or by an intruder), not `device-key remove`
    assert store.vanished() == ["strap1"]
    v = MessageVerifier(store.load_all(), "keyed", 30.0, vanished=set(store.vanished()))
    unsigned = decode_payload(encode_json(np.zeros(N), FS, 0))
    why = v.check("strap1", unsigned)
    assert why is not None and "vanished" in why
    assert v.check("strap9", unsigned) is None  # a device that never had a key: keyed mode lets it in
    store.remove("strap1")  # the intended way: no longer refused as vanished
    assert store.vanished() == []


def test_a_store_made_before_the_register_gets_one_of_its_keys(tmp_path: Path):
    from ecgstream.trust.msgauth import DeviceKeyStore

    store = DeviceKeyStore(tmp_path / "device-keys", bytes(32))
    store.add("a")
    store.register_path.unlink()  # as a store of an older ecgstream
    assert store.vanished() == [] and store.register_path.read_text() == "a\n"
    os.unlink(store.path_for("a"))
    assert store.vanished() == ["a"]


# -- the loud warning --------------------------------------------------------------------------------------
def _config(tmp_path: Path, source: str, extra: str = "") -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[daemon]\nsource = "{source}"\nstore = "{tmp_path / "t"}"\n'
                   f'[templates]\nkey_file = "{tmp_path / "k"}"\n{extra}')
    return cfg


def test_check_config_warns_loudly_about_an_unauthenticated_mqtt_input(tmp_path: Path):
    cfg = _config(tmp_path, "mqtt://127.0.0.1:1883/ecgstream/+/ecg")
    r = subprocess.run([*EXE, "check-config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr  # valid; an open door is said, not refused
    assert "WARNING: INSECURE INPUT" in r.stderr and "UNAUTHENTICATED" in r.stderr, r.stderr
    assert "no device has a message key" in r.stderr
    ok = _config(tmp_path, "mqtts://broker.example:8883/ecgstream/+/ecg",
                 '[mqtt]\nusername = "svc@daemon"\npassword_file = "/dev/null"\n'
                 '[input]\nmessage_auth = "required"\n')
    r = subprocess.run([*EXE, "check-config", str(ok)], capture_output=True, text=True, timeout=60)
    assert "INSECURE" not in r.stderr, r.stderr
    plain = _config(tmp_path, "wfdb:x")
    r = subprocess.run([*EXE, "check-config", str(plain)], capture_output=True, text=True, timeout=60)
    assert "INSECURE" not in r.stderr, r.stderr


@pytest.mark.broker
def test_run_warns_loudly_about_an_unauthenticated_mqtt_input(broker, tmp_path: Path):
    from helpers_realparts import enrol_with_cli

    from ecgstream.sources.records import excerpt_dir

    store, key = enrol_with_cli(tmp_path, excerpt_dir() / "Person_01" / "rec_1")
    p = subprocess.Popen([*EXE, "run", "--source", f"mqtt://{broker.host}:{broker.port}/ecgstream/+/ecg",
                          "--store", str(store), "--key-file", str(key)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = p.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "INSECURE INPUT" in line and "UNAUTHENTICATED" in line:
                break
        assert any("INSECURE INPUT" in ln and "UNAUTHENTICATED" in ln for ln in lines), "".join(lines)
        assert any("WARNING" in ln and "INSECURE" in ln for ln in lines), "".join(lines)
    finally:
        p.terminate()
        p.wait(20)


def test_concurrent_adds_of_different_devices_all_reach_the_register(tmp_path: Path):
    import threading

    from ecgstream.trust.msgauth import DeviceKeyStore

    store = DeviceKeyStore(tmp_path / "device-keys", bytes(32))
    store.directory.mkdir(mode=0o700)
    ts = [threading.Thread(target=store.add, args=(f"s{i}",)) for i in range(12)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert store.register_path.read_text().split() == sorted(f"s{i}" for i in range(12))
