"""MQTT source: payload decoding (fuzzed), per-device rules, and a real Mosquitto."""

from __future__ import annotations

import contextlib
import json
import math
import struct
import threading

import numpy as np
import pytest
from helpers_broker import make_password_file, make_tls_broker
from helpers_realparts import Broker, SourceRunner, free_port, require_mosquitto, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from ecgstream.sources import SourceError, open_source
from ecgstream.sources.mqtt_payload import PayloadError, decode_payload, encode_binary, encode_json
from ecgstream.sources.mqtt_source import MqttSource
from ecgstream.sources.synthetic import synth_ecg
from tools.wearable_sim import MqttPlan, mqtt_messages, publish_mqtt

FS = 250.0
TOPIC = "ecgstream/+/ecg"


def _joined(chunks):
    idx = np.concatenate([np.arange(c.start_sample, c.end_sample) for c in chunks])
    return idx, np.concatenate([c.samples for c in chunks])


# -- decode_payload ----------------------------------------------------------------------------
def test_decode_json_and_binary_forms():
    x = np.array([0.5, np.nan, -1.25, 2.0])
    d = decode_payload(encode_json(x, 500, 42, leads_off=True))
    assert (d.fs_hz, d.seq, d.leads_off) == (500.0, 42, True)
    np.testing.assert_array_equal(d.samples, x)
    d = decode_payload(encode_binary(x, 360, 2**32 - 1))
    assert (d.fs_hz, d.seq, d.leads_off) == (360.0, 2**32 - 1, False)
    np.testing.assert_array_equal(d.samples, x)  # exact in float32
    d = decode_payload(encode_binary(x, 250, 7, leads_off=True, int16_scale=0.001))
    assert d.leads_off and np.isnan(d.samples[1])
    np.testing.assert_allclose(d.samples[[0, 2, 3]], x[[0, 2, 3]], atol=1e-6)
    # the documented header layout, written by hand
    raw = struct.pack("<2sBBHHIf", b"EC", 1, 0x02, 500, 2, 9, 0.5) + struct.pack("<hh", 4, -32768)
    d = decode_payload(raw)
    assert d.fs_hz == 500 and d.seq == 9 and d.samples[0] == 2.0 and math.isnan(d.samples[1])
    assert decode_payload(b'  {"fs":250,"seq":0,"samples":[1],"battery":0.8}').samples.tolist() == [1.0]


@pytest.mark.parametrize(("payload", "why"), [
    (b"", "neither"),
    (b"hello", "neither"),
    (b'{"fs":250,"seq":1}', "lacks samples"),
    (b'{"fs":250,"seq":-1,"samples":[1]}', "seq"),
    (b'{"fs":250,"seq":1.5,"samples":[1]}', "seq"),
    (b'{"fs":0,"seq":1,"samples":[1]}', "fs"),
    (b'{"fs":250,"seq":1,"samples":[]}', "samples"),
    (b'{"fs":250,"seq":1,"samples":["1"]}', r"samples\[0\]"),
    (b'{"fs":250,"seq":1,"samples":[true]}', r"samples\[0\]"),
    (b'{"fs":250,"seq":1,"samples":[Infinity]}', "Infinity"),
    (b'{"fs":250,"seq":1,"samples":[1],"leads_off":1}', "leads_off"),
    (b'[1,2]', "neither"),
    (b'{"fs":250,', "bad JSON"),
    (b'{"fs":250,"seq":1,"samples":[1]}\xff', "UTF-8"),
    (b"EC\x01\x00", "shorter"),
    (struct.pack("<2sBBHHIf", b"EC", 2, 0, 250, 1, 0, 1.0) + b"\0" * 4, "version"),
    (struct.pack("<2sBBHHIf", b"EC", 1, 0x80, 250, 1, 0, 1.0) + b"\0" * 4, "flag"),
    (struct.pack("<2sBBHHIf", b"EC", 1, 0, 250, 2, 0, 1.0) + b"\0" * 4, "header says"),
    (struct.pack("<2sBBHHIf", b"EC", 1, 0, 250, 1, 0, 1.0) + b"\0" * 5, "header says"),
    (struct.pack("<2sBBHHIf", b"EC", 1, 0, 250, 0, 0, 1.0), "count"),
    (struct.pack("<2sBBHHIf", b"EC", 1, 0, 250, 1, 0, 0.0) + b"\0" * 4, "scale"),
    (struct.pack("<2sBBHHIf", b"EC", 1, 0, 250, 1, 0, 1.0) + struct.pack("<f", math.inf), "infinite"),
])
def test_decode_rejects(payload, why):
    with pytest.raises(PayloadError, match=why):
        decode_payload(payload)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_decode_fuzz_bytes_raise_only_payload_error(data):
    for candidate in (data, b"EC" + data, b"{" + data):
        try:
            d = decode_payload(candidate)
        except PayloadError:
            continue
        assert d.samples.dtype == np.float64 and d.samples.size >= 1
        assert not np.isinf(d.samples).any()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries({}, optional={"fs": _JSON, "seq": _JSON, "samples": _JSON,
                                           "leads_off": _JSON}))
def test_decode_fuzz_json_shapes_raise_only_payload_error(obj):
    with contextlib.suppress(PayloadError):
        decode_payload(json.dumps(obj).encode())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-100, 100, width=32) | st.just(math.nan), min_size=1, max_size=50),
       st.integers(1, 20000), st.integers(0, 2**32 - 1), st.booleans(), st.integers(0, 299))
def test_binary_roundtrip_and_bit_flips(values, fs, seq, off, flip):
    x = np.array(values)
    raw = encode_binary(x, fs, seq, off)
    d = decode_payload(raw)
    assert (d.fs_hz, d.seq, d.leads_off) == (fs, seq, off)
    np.testing.assert_array_equal(d.samples, x)
    bad = bytearray(raw)
    bad[flip % len(bad)] ^= 0xFF
    with contextlib.suppress(PayloadError):
        decode_payload(bytes(bad))


# -- the per-device rules (no broker) ----------------------------------------------------------
def test_rules_seq_jump_duplicate_reboot_rate_change():
    src = MqttSource(f"mqtt://127.0.0.1:1883/{TOPIC}")
    ones = np.ones(10)

    def push(seq, fs=250, dev="a"):
        return src.handle(f"ecgstream/{dev}/ecg", encode_json(ones, fs, seq), 0.0)

    got = [push(s) for s in (0, 1, 4, 4, 2, 5)]
    assert [c and (c.start_sample, c.gap_before) for c in got] == [
        (0, False), (10, False), (40, True), None, None, (50, False)]
    assert (src.stats.lost_messages, src.stats.duplicates, src.stats.gaps) == (2, 2, 1)
    c = push(0)  # reboot
    assert c.gap_before and c.start_sample == 60 and src.stats.reboots == 1
    c = push(1, fs=500)  # a new rate
    assert c.gap_before and c.fs_hz == 500 and src.stats.declared_fs_hz["a"] == 500
    b = push(7, dev="b")  # another device starts anywhere, at index 0
    assert b.start_sample == 0 and not b.gap_before
    assert src.handle("ecgstream/a/ecg", b"junk", 0.0) is None and src.stats.garbled == 1
    assert src.handle("other/a/ecg", encode_json(ones, 250, 2), 0.0) is None
    # seq wraps around 2**32 without a gap
    src.handle("ecgstream/w/ecg", encode_json(ones, 250, 2**32 - 1), 0.0)
    assert not src.handle("ecgstream/w/ecg", encode_json(ones, 250, 0), 0.0).gap_before


@pytest.mark.parametrize(("uri", "match"), [
    ("mqtt://h:1883/ecgstream/#", "'#'"),
    ("mqtt://h:1883/ecgstream/+/+/ecg", "more than one"),
    ("mqtt://h:1883/ecgstream/x+/ecg", "must be like"),
    ("mqtt://u:p@h:1883/ecgstream/+/ecg", "credentials"),
    ("mqtt://h:1883/ecgstream/+/ecg?qos=2", "qos"),
    ("mqtt:///ecgstream/+/ecg", "host"),
    ("mqtt://h:1883/ecgstream/+/ecg?fs=250", "unknown parameter"),
])
def test_uri_errors(uri, match):
    with pytest.raises(SourceError, match=match):
        MqttSource(uri)


def test_single_device_topic_and_default_ports():
    s = MqttSource("mqtt://h/ecgstream/strap1/ecg")
    assert s.port == 1883 and s.device_of("ecgstream/strap1/ecg") == "strap1"
    assert s.device_of("ecgstream/strap2/ecg") is None
    assert MqttSource("mqtts://h/ecgstream/+/ecg").port == 8883


# -- a real broker -------------------------------------------------------------------------------
@pytest.fixture
def broker(tmp_path):
    with Broker(tmp_path) as b:
        yield b


def _source(broker, **kw):
    kw.setdefault("retry_min_s", 0.1)
    kw.setdefault("retry_max_s", 0.5)
    return open_source(f"mqtt://{broker.host}:{broker.port}/{TOPIC}", **kw)


def _start(src):
    run = SourceRunner(src).start()
    assert wait_for(src.connected.is_set, 5), run.error
    return run


@pytest.mark.broker
def test_broker_json_and_binary_from_many_devices(broker):
    signals = {f"dev{i}": synth_ecg(2.0, FS, 60 + 10 * i, seed=i) for i in range(3)}
    fmts = {"dev0": "json", "dev1": "binary", "dev2": "int16"}
    msgs = []
    for dev, x in signals.items():
        msgs += mqtt_messages(x, FS, dev, MqttPlan(fmts[dev]))
    src = _source(broker)
    run = _start(src)
    try:
        publish_mqtt(broker.host, broker.port, msgs, FS, speed=0)
        assert wait_for(lambda: run.samples() >= 3 * 500, 5), run.samples()
    finally:
        run.stop()
    assert run.error is None
    tol = {"dev0": 1e-4, "dev1": 1e-6, "dev2": 1e-3}
    for dev, x in signals.items():
        chunks = [c for c in run.snapshot() if c.device == dev]
        idx, val = _joined(chunks)
        np.testing.assert_array_equal(idx, np.arange(x.size))
        np.testing.assert_allclose(val, x, atol=tol[dev])
        assert not any(c.gap_before for c in chunks) and chunks[0].fs_hz == FS
    assert src.stats.devices == set(signals) and src.stats.garbled == 0


@pytest.mark.broker
def test_broker_seq_faults_are_gaps_drops_and_counts(broker):
    x = synth_ecg(2.0, FS, 70, seed=3)
    n = 25  # samples per message
    plan = MqttPlan("binary", drop=[5], duplicate=[8], swap=[12], corrupt=[15])
    src = _source(broker)
    run = _start(src)
    try:
        publish_mqtt(broker.host, broker.port, mqtt_messages(x, FS, "strap", plan), FS, speed=0)
        assert wait_for(lambda: src.stats.chunks >= 17, 5), src.stats
        assert not wait_for(lambda: src.stats.chunks > 17, 0.3)
    finally:
        run.stop()
    st_ = src.stats
    # 20 messages: 5 never sent; 8 twice; 13 before 12 (12 late: dropped); 15 corrupt.
    assert (st_.duplicates, st_.garbled) == (2, 1)
    assert st_.lost_messages == 3  # 5, 12 (when 13 came), 15
    chunks = run.snapshot()
    assert [c.start_sample // n for c in chunks] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 13, 14, 16,
                                                     17, 18, 19]
    gap_at = [c.start_sample // n for c in chunks if c.gap_before]
    assert gap_at == [6, 13, 16] and st_.gaps == 3
    for c in chunks:  # every sample sits at its true index
        np.testing.assert_allclose(c.samples, x[c.start_sample:c.end_sample], atol=1e-6)


@pytest.mark.broker
def test_broker_wrong_declared_rate_is_measured(broker):
    """Chunks paced at 250 Hz that claim 500 Hz: the arrival rate tells."""
    x = synth_ecg(1.6, FS, 70, seed=4)
    src = _source(broker)
    run = _start(src)
    try:
        publish_mqtt(broker.host, broker.port,
                     mqtt_messages(x, FS, "liar", MqttPlan("json", declared_fs=500)), FS, speed=1)
        assert wait_for(lambda: run.samples() >= x.size, 5)
    finally:
        run.stop()
    assert src.stats.declared_fs_hz["liar"] == 500
    assert src.stats.measured_fs_hz["liar"] == pytest.approx(FS, rel=0.15)


@pytest.mark.broker
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_broker_restart_reconnects_resubscribes_and_marks_a_gap(broker, protocol):
    x = synth_ecg(2.0, FS, 70, seed=5)
    msgs = mqtt_messages(x, FS, "strap", MqttPlan("json"))
    src = _source(broker, protocol=protocol)
    run = _start(src)
    try:
        publish_mqtt(broker.host, broker.port, msgs[:10], FS, speed=0)
        assert wait_for(lambda: src.stats.chunks == 10, 5)
        broker.restart()
        assert wait_for(lambda: src.stats.reconnects == 1 and src.subscribed_count == 2, 10), src.stats
        publish_mqtt(broker.host, broker.port, msgs[10:], FS, speed=0)
        assert wait_for(lambda: src.stats.chunks == 20, 5), src.stats
    finally:
        run.stop()
    assert run.error is None
    chunks = run.snapshot()
    assert [c.gap_before for c in chunks] == [False] * 10 + [True] + [False] * 9
    idx, val = _joined(chunks)
    np.testing.assert_array_equal(idx, np.arange(x.size))  # seq continued: nothing lost
    assert src.stats.gaps == 1 and src.stats.lost_messages == 0


@pytest.mark.broker
def test_connection_refused_is_a_source_error():
    require_mosquitto()
    port = free_port()
    src = open_source(f"mqtt://127.0.0.1:{port}/{TOPIC}")
    with pytest.raises(SourceError, match=f"127.0.0.1:{port}"):
        src.run(lambda c: None, threading.Event())


@pytest.mark.broker
def test_bad_credentials_are_a_source_error_with_the_reason(tmp_path):
    pw = make_password_file(tmp_path / "passwd", {"ecg": "right"})
    with Broker(tmp_path, extra_config=f"password_file {pw}", allow_anonymous=False) as b:
        src = open_source(f"mqtt://{b.host}:{b.port}/{TOPIC}", username="ecg", password="wrong",
                          connect_timeout_s=5)
        with pytest.raises(SourceError, match=rf"{b.port}: .*(Not authorized|Bad user name)") as ei:
            src.run(lambda c: None, threading.Event())
        assert "wrong" not in str(ei.value)
        ok = open_source(f"mqtt://{b.host}:{b.port}/{TOPIC}", username="ecg", password="right")
        run = _start(ok)
        run.stop()
        assert run.error is None


@pytest.mark.broker
def test_tls_with_credentials_subscribes_and_a_wrong_ca_fails(tmp_path):
    from helpers_broker import make_ca

    acl = "user ecg\ntopic read ecgstream/#\n"
    b = make_tls_broker(tmp_path / "b", {"ecg": "pw"}, acl)
    with b:
        uri = f"mqtts://localhost:{b.port}/{TOPIC}"
        src = open_source(uri, username="ecg", password="pw", tls={"ca_file": b.ca_file})
        run = _start(src)
        run.stop()
        assert run.error is None
        other_ca, _, _ = make_ca(tmp_path, "another CA")
        bad = open_source(uri, username="ecg", password="pw", tls={"ca_file": str(other_ca)},
                          connect_timeout_s=5)
        with pytest.raises(SourceError, match=f"localhost:{b.port}.*(certificate|SSL)"):
            bad.run(lambda c: None, threading.Event())


@pytest.mark.broker
def test_simulator_script_publishes_to_the_source(broker):
    import subprocess
    import sys

    from helpers_realparts import REPO

    src = _source(broker)
    run = _start(src)
    try:
        done = subprocess.run(
            [sys.executable, str(REPO / "tools" / "wearable_sim.py"), "mqtt", "--host", broker.host,
             "--port", str(broker.port), "--device", "cli", "--seconds", "1", "--fs", "250",
             "--speed", "0", "--format", "int16", "--drop", "3"],
            capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert wait_for(lambda: run.samples("cli") == 225, 5), run.samples("cli")
    finally:
        run.stop()
    assert src.stats.lost_messages == 1 and src.stats.gaps == 1
