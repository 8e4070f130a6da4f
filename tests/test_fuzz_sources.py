"""Property-based fuzzing of the source edges (issue 5, item 5), bounded for CI.

What ``test_sources_serial.py``, ``test_config.py`` and ``test_wfdb_source.py``
already fuzz (``parse_line`` bytes, chunk-split invariance, config structures
and text, WFDB headers) is not repeated. Added here:

* the MQTT payload decoder on random bytes and on mutated valid payloads
  (only :class:`PayloadError`, and every accepted payload keeps the
  contract), and the encoders' round trip;
* :meth:`MqttSource.handle` on random sequences of ``seq`` numbers
  (duplicates, jumps, reboots, wraps): indices never go back without a gap,
  every drop is counted, nothing raises;
* :class:`SerialDecoder` on random byte streams split at random points: the
  sample clock stays honest (one sample per non-blank line, contiguous
  indices without a gap), nothing raises;
* source URIs: :func:`open_source` raises only :class:`SourceError` for any
  string.

The longer run over the same functions is ``bench/fuzz.py``
(``docs/benchmarks/fuzz.md``).
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecgstream.sources import SourceError, open_source
from ecgstream.sources.base import SourceStats
from ecgstream.sources.mqtt_payload import (
    MAX_ABS_VALUE,
    MAX_SAMPLES,
    SEQ_MOD,
    PayloadError,
    decode_payload,
    encode_binary,
    encode_json,
)
from ecgstream.sources.mqtt_source import MqttSource
from ecgstream.sources.serial_lines import SerialDecoder

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_samples = st.lists(st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.just(math.nan)), min_size=1, max_size=40)


def _check_decoded(d) -> None:
    x = d.samples
    assert x.dtype == np.float64 and x.ndim == 1 and 1 <= x.size <= MAX_SAMPLES
    assert not np.isinf(x).any()
    assert np.all(np.isnan(x) | (np.abs(x) <= MAX_ABS_VALUE))
    assert 1.0 <= d.fs_hz <= 20000.0 and 0 <= d.seq < SEQ_MOD and isinstance(d.leads_off, bool)


def _decode_or_reject(data: bytes) -> None:
    try:
        d = decode_payload(data)
    except PayloadError as exc:
        assert str(exc)
        return
    _check_decoded(d)


@FUZZ
@given(st.binary(max_size=200))
def test_decode_random_bytes_only_payload_error(data):
    _decode_or_reject(data)
    _decode_or_reject(b"EC" + data)
    _decode_or_reject(b"{" + data)


@st.composite
def _mutated_payload(draw):
    x = np.array(draw(_samples))
    fs = draw(st.sampled_from([1, 250, 360, 500, 1000, 20000]))
    seq = draw(st.integers(0, SEQ_MOD - 1))
    kind = draw(st.sampled_from(["json", "f32", "i16"]))
    off = draw(st.booleans())
    if kind == "json":
        data = bytearray(encode_json(x, fs, seq, off))
    else:
        data = bytearray(encode_binary(x, fs, seq, off, int16_scale=0.001 if kind == "i16" else None))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 3))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == 0 and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            del data[i:]
        elif op == 2:
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            data[i] = draw(st.integers(0, 255))
    return bytes(data)


@FUZZ
@given(_mutated_payload())
def test_decode_mutated_payloads_only_payload_error(data):
    _decode_or_reject(data)


@FUZZ
@given(_samples, st.sampled_from([250, 500, 1000]), st.integers(0, SEQ_MOD - 1), st.booleans())
def test_encode_decode_round_trip(vals, fs, seq, off):
    x = np.array(vals)
    for data, tol in ((encode_json(x, fs, seq, off), 1e-4), (encode_binary(x, fs, seq, off), 1e-3),
                      (encode_binary(x, fs, seq, off, int16_scale=0.1), 0.051)):
        d = decode_payload(data)
        assert (d.fs_hz, d.seq, d.leads_off) == (fs, seq, off)
        np.testing.assert_array_equal(np.isnan(d.samples), np.isnan(x))
        ok = ~np.isnan(x)
        big = np.abs(x[ok]) > 3276.7  # beyond int16 * 0.1: clipped by design
        want = np.where(big, np.sign(x[ok]) * 3276.7, x[ok]) if tol > 0.05 else x[ok]
        np.testing.assert_allclose(d.samples[ok], want, atol=tol, rtol=1e-6)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]),
                          st.one_of(st.integers(0, 40), st.sampled_from([SEQ_MOD - 1, SEQ_MOD - 2])),
                          st.integers(1, 30)), min_size=1, max_size=60))
def test_mqtt_handle_random_sequences(msgs):
    """Indices per device never go back; anything not newer is dropped and counted."""
    src = MqttSource("mqtt://127.0.0.1:1/ecgstream/+/ecg")
    end: dict[str, int] = {}
    last: dict[str, int] = {}
    delivered = dropped = 0
    for i, (dev, seq, n) in enumerate(msgs):
        ch = src.handle(f"ecgstream/{dev}/ecg", encode_binary(np.zeros(n), 500, seq), i * 0.1)
        if ch is None:
            dropped += 1
            prev = last[dev]
            assert not (seq == (prev + 1) % SEQ_MOD or seq > prev + 1 or (seq == 0 and prev > 0))
            continue
        delivered += 1
        assert ch.samples.size == n and ch.fs_hz == 500
        if dev in end:
            assert ch.start_sample >= end[dev]
            expected = (last[dev] + 1) % SEQ_MOD
            assert ch.gap_before == (seq != expected)
        end[dev] = ch.end_sample
        last[dev] = seq
    s = src.stats
    assert s.duplicates == dropped and s.chunks == delivered and s.garbled == 0


_lines = st.sampled_from([b"512\n", b"513\r\n", b"!\n", b"\n", b"x\n", b"1" * 70 + b"\n", b"\xff\n",
                          b" 7 \n", b"LO\n", b"1e5\n"])


@FUZZ
@given(st.lists(st.one_of(_lines, st.binary(max_size=12)), max_size=60), st.lists(st.integers(0, 2000), max_size=6))
def test_serial_decoder_random_streams_keep_the_clock(parts, cuts):
    data = b"\n" + b"".join(parts)  # the first fragment after opening is dropped
    stats = SourceStats()
    dec = SerialDecoder("d", "ascii", 250.0, 0.1, stats)
    out = []
    prev = 0
    for c in sorted(min(c, len(data)) for c in cuts) + [len(data)]:
        out += dec.feed(data[prev:c], c * 1e-3)
        prev = c
    out += dec.flush()
    idx = 0
    for ch in out:
        assert ch.start_sample == idx and not ch.gap_before  # no holes, no overlaps
        assert not np.isinf(ch.samples).any()
        idx = ch.end_sample
    # every non-blank line is one sample, good or NaN (the last, unterminated fragment waits)
    lines = data[1:].split(b"\n")[:-1]
    complete = [ln for ln in lines if ln.strip() and len(ln.rstrip(b"\r")) <= 64]
    assert idx <= len(lines)
    assert idx >= len(complete) - 1  # an overlong line can swallow the next when cut mid-way


@FUZZ
@given(st.one_of(st.text(max_size=80),
                 st.builds(lambda s, q: s + q, st.sampled_from(["serial:", "mqtt://", "mqtts://", "wfdb:",
                                                                 "synthetic:", "serial:/dev/x?", "mqtt://h:1/"]),
                           st.text(max_size=40))))
def test_open_source_only_source_error(uri):
    try:
        src = open_source(uri)
    except SourceError as exc:
        assert str(exc)
        return
    assert src.uri == uri
