"""Hostile input at the daemon's edges (issue 11, part 4): serial lines without a
newline, impossible sampling rates, huge or lying payloads, a flood of device ids
at the daemon's own device table. Each: refused, counted, a bounded resource,
and the legitimate device on the same source keeps every chunk."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_realparts import PtyPair, SourceRunner, wait_for

from ecgstream.core.types import SampleChunk
from ecgstream.sources import SourceError, open_source
from ecgstream.sources.base import SourceStats
from ecgstream.sources.mqtt_payload import (
    BINARY_HEADER,
    BINARY_MAGIC,
    MAX_PAYLOAD_BYTES,
    PayloadError,
    decode_payload,
    encode_binary,
    encode_json,
)
from ecgstream.sources.mqtt_source import MqttSource
from ecgstream.sources.serial_format import MAX_LINE_BYTES
from ecgstream.sources.serial_lines import SerialDecoder
from ecgstream.sources.serial_source import SerialSource

FS = 250.0


# -- serial lines without a newline ------------------------------------------------------------
def _lines(values) -> bytes:
    return b"".join(b"%d\n" % v for v in values)


def test_a_line_without_newline_is_bounded_counted_and_the_device_stays_readable():
    st = SourceStats()
    dec = SerialDecoder("strap", "ascii", FS, 0.1, st)
    out = dec.feed(b"\n" + _lines(range(100)), 0.0)
    peak = 0
    for k in range(256):  # 1 MiB of digits, no newline, in 4 KiB reads
        out += dec.feed(b"7" * 4096, 0.01 * k)
        peak = max(peak, len(dec._buf))
    assert peak <= MAX_LINE_BYTES + 1  # the buffer never holds more than one line's worth
    out += dec.feed(b"\n" + _lines(range(100, 200)), 3.0) + dec.flush()
    assert st.garbled == 1  # one overlong line, one count, one unreadable sample
    x = np.concatenate([c.samples for c in out])
    assert x.size == 201 and np.isnan(x[100]) and x[:100].tolist() == list(range(100))
    assert x[101:].tolist() == list(range(100, 200))  # every line after it is read


def test_many_overlong_lines_each_counted_once():
    st = SourceStats()
    dec = SerialDecoder("strap", "ascii", FS, 0.1, st)
    data = b"\n" + b"".join(b"1" * 1000 + b"\n" + b"5\n" for _ in range(50))
    out = dec.feed(data, 0.0) + dec.flush()
    assert st.garbled == 50
    x = np.concatenate([c.samples for c in out])
    assert x.size == 100 and (x[1::2] == 5).all() and np.isnan(x[0::2]).all()


@pytest.mark.pty
def test_pty_a_megabyte_without_newline_then_the_wearable_is_still_heard():
    with PtyPair() as pty, SourceRunner(SerialSource(f"serial:{pty.path}?fs=250&device=strap")) as run:
        assert wait_for(run.source.connected.is_set, 5)
        pty.write(b"\n" + _lines(range(50)))
        assert wait_for(lambda: run.samples() >= 50, 5)
        for _ in range(64):
            pty.write(b"9" * 16384)
        pty.write(b"\n" + _lines(range(500, 550)))
        assert wait_for(lambda: run.samples() >= 101, 10), run.samples()
        assert len(run.source.decoder._buf) <= MAX_LINE_BYTES + 1
    assert run.error is None and run.source.stats.garbled == 1
    x = np.concatenate([c.samples for c in run.snapshot()])
    assert x[:50].tolist() == list(range(50)) and np.isnan(x[50]) and x[51:].tolist() == list(range(500, 550))


# -- impossible sampling rates -------------------------------------------------------------------
@pytest.mark.parametrize("fs", [b"0", b"-250", b"1e9", b"NaN", b"Infinity", b"-0.0", b"1e999", b'"500"',
                                b"true", b"null", b"20001"])
def test_json_payload_with_an_impossible_rate_is_refused(fs):
    with pytest.raises(PayloadError):
        decode_payload(b'{"fs":' + fs + b',"seq":1,"samples":[1,2,3]}')


@pytest.mark.parametrize("fs", [0, 20001, 65535])
def test_binary_payload_with_an_impossible_rate_is_refused(fs):
    p = BINARY_HEADER.pack(BINARY_MAGIC, 1, 0, fs, 3, 1, 1.0) + np.ones(3, "<f4").tobytes()
    with pytest.raises(PayloadError, match="fs"):
        decode_payload(p)


@pytest.mark.parametrize("fs", ["0", "-250", "1e9", "nan", "inf", "-inf", "x", ""])
def test_serial_uri_with_an_impossible_rate_is_refused(fs):
    with pytest.raises(SourceError, match="fs"):
        open_source(f"serial:/dev/ttyUSB0?fs={fs}")


@pytest.mark.parametrize("fs", ["0", "-250", "1e9", "nan", "inf", "50", "5000"])
def test_config_with_an_impossible_device_rate_is_refused(tmp_path, fs):
    from ecgstream.config import ConfigError, load_config

    p = tmp_path / "c.toml"
    p.write_text(f"[devices.strap1]\nfs = {fs}\n")
    with pytest.raises(ConfigError, match=r"devices\.strap1\.fs"):
        load_config(str(p), {}, environ={})


@pytest.mark.parametrize("fs", [1.0, 20.0, 99.9, 1000.1, 5000.0, 20000.0])
def test_a_rate_the_decoder_allows_but_the_dsp_cannot_use_is_refused_by_the_pipeline(fs):
    # the daemon builds a device's pipeline on its first chunk; this ValueError is
    # caught there and counted in DaemonStats.bad_chunks (ecgstream/daemon/loop.py)
    from ecgstream.dsp.beats import BeatPipeline

    with pytest.raises(ValueError, match="outside the supported 100..1000 Hz"):
        BeatPipeline("d", fs)


# -- huge or lying payloads, beside a legitimate device on the same source -------------------------
def _hostile() -> list[bytes]:
    x = np.ones(10)
    binary = encode_binary(x, 500, 3)
    head = BINARY_HEADER.unpack(binary[:BINARY_HEADER.size])
    lie_more = BINARY_HEADER.pack(*head[:4], 1000, *head[5:]) + binary[BINARY_HEADER.size:]
    lie_less = BINARY_HEADER.pack(*head[:4], 2, *head[5:]) + binary[BINARY_HEADER.size:]
    inf32 = BINARY_HEADER.pack(*head) + np.array([1, np.inf, 2, 3, 4, 5, 6, 7, 8, 9], "<f4").tobytes()
    return [
        b'{"fs":500,"seq":1,"samples":[' + b"1," * (MAX_PAYLOAD_BYTES // 2) + b"1]}",  # over 256 KiB
        b" " * (MAX_PAYLOAD_BYTES + 1),
        lie_more, lie_less,  # declared sample count vs what follows
        binary[:-1], binary + b"\0",
        b"[" * 100_000 + b"]" * 100_000,  # deeply nested JSON
        b'{"fs":500,"seq":1,"samples":' + b"[" * 50_000 + b"1" + b"]" * 50_000 + b"}",
        b'{"fs":500,"seq":' + b"9" * 5000 + b',"samples":[1]}',  # huge seq
        b'{"fs":500,"seq":4294967296,"samples":[1]}',
        b'{"fs":500,"seq":-1,"samples":[1]}',
        b'{"fs":500,"seq":1,"samples":[NaN]}', b'{"fs":500,"seq":1,"samples":[Infinity]}',
        b'{"fs":500,"seq":1,"samples":[1e999]}', b'{"fs":500,"seq":1,"samples":[-1e999]}',
        b'{"fs":500,"seq":1,"samples":[1e10]}', inf32,
        b'{"fs":500,"seq":1,"samples":[' + b"1," * 20_000 + b"1]}",  # 20,001 samples
        json.dumps({"fs": 500, "seq": 1, "samples": [1], "t_ms": 1, "mac": "zz" * 32}).encode(),
        b"\xff" * 100, b"",
    ]


@pytest.mark.parametrize("i", range(len(_hostile())))
def test_each_hostile_payload_is_refused_by_the_decoder(i):
    with pytest.raises(PayloadError):
        decode_payload(_hostile()[i])


def test_hostile_payloads_are_counted_and_the_legitimate_device_keeps_every_chunk():
    src = MqttSource("mqtt://127.0.0.1:1/ecgstream/+/ecg")
    src.max_devices = 3
    hostile = _hostile()
    got = []
    rng = np.random.default_rng(0)
    for seq in range(200):
        x = rng.normal(0, 1, 25)
        p = encode_json(x, 250, seq) if seq % 2 else encode_binary(x, 250, seq)
        ch = src.handle("ecgstream/strap1/ecg", p, seq * 0.1)
        assert ch is not None, seq
        got.append(ch)
        src.handle("ecgstream/evil/ecg", hostile[seq % len(hostile)], seq * 0.1)
    st = src.stats
    assert st.garbled == 200 and st.chunks == 200
    assert [c.start_sample for c in got] == list(range(0, 5000, 25))
    assert not any(c.gap_before for c in got) and st.lost_messages == 0
    assert set(src._devices) == {"strap1"}  # a device that never sent a valid chunk keeps no state


# -- the daemon's device table --------------------------------------------------------------------
class _Flood:
    """One source that delivers a flood of made-up device ids around a legitimate device."""

    uri = "memory:flood"

    def __init__(self, n_ids: int, legit: str, x: np.ndarray, fs: float) -> None:
        self.n_ids, self.legit, self.x, self.fs = n_ids, legit, x, fs
        self.stats = SourceStats()
        self.on_untrusted = None
        self.verifier = None  # a multi-device source: its devices are not reserved

    def run(self, sink, stop):
        n = int(0.1 * self.fs)
        junk = np.zeros(n)
        k = 0
        for pos in range(0, self.x.size, n):
            for _ in range(self.n_ids // (self.x.size // n) + 1):
                if k < self.n_ids:
                    sink(SampleChunk(f"fake{k}", self.fs, 0, junk))
                    k += 1
            sink(SampleChunk(self.legit, self.fs, pos, self.x[pos:pos + n]))


@pytest.fixture(scope="module")
def model():
    from edge import EmbeddingModel

    return EmbeddingModel()


def test_daemon_device_table_is_bounded_by_max_devices_and_the_configured_device_is_unaffected(model):
    import io
    import threading

    from ecgstream.core.settings import InputConfig
    from ecgstream.daemon.loop import Daemon
    from ecgstream.publish import StdoutPublisher
    from ecgstream.sources.records import excerpt_dir, read_record
    from ecgstream.trust.hooks import Trust

    x, fs, _ = read_record(excerpt_dir() / "Person_01" / "rec_1", 0)
    trust = Trust(input_cfg=InputConfig(max_devices=20))
    trust.configure_source(object(), {}, {"strap1"})  # strap1 is of [devices.strap1]
    src = _Flood(2000, "strap1", x, fs)
    d = Daemon([src], model, {}, StdoutPublisher(io.StringIO()), speed=None, trust=trust,
               queue_max_chunks=100_000)
    assert d.run(threading.Event()) == 0
    assert len(d.devices) == 21 and "strap1" in d.devices  # 20 made-up ids + the configured device
    assert trust.counters["devices_refused"] == 2000 - 20
    assert d.stats.chunks_dropped == 0
    legit = d.devices["strap1"]
    assert legit.pipeline.status.next_sample == x.size  # every sample of the legitimate device processed
    assert d.stats.bad_chunks == 0


def test_trust_admit_reserves_single_device_sources_and_only_known_devices():
    from types import SimpleNamespace

    from ecgstream.core.settings import InputConfig
    from ecgstream.trust.hooks import Trust

    t = Trust(input_cfg=InputConfig(only_known_devices=True))
    serial = SimpleNamespace(device="ttyUSB0")  # no verifier: one operator-chosen device
    t.attach(SimpleNamespace(sources=[serial]))
    t.configure_source(object(), {"keyed1": bytes(32)}, {"conf1"})
    daemon = SimpleNamespace(devices={})
    ok = [t.admit(daemon, SimpleNamespace(device=dev)) for dev in ("ttyUSB0", "keyed1", "conf1", "other")]
    assert ok == [True, True, True, False] and t.stats["devices_refused"] == 1
