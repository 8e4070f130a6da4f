"""Serial source: line parsing (fuzzed) and a real pseudo-terminal fed by the simulator."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from helpers_realparts import PtyPair, SocatLink, SourceRunner, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecgstream.dsp.beats import BeatPipeline
from ecgstream.sources import SourceError, open_source
from ecgstream.sources.base import SourceStats
from ecgstream.sources.serial_format import (
    MAX_LINE_BYTES,
    LineError,
    ParsedLine,
    estimate_fs,
    parse_line,
)
from ecgstream.sources.serial_lines import SerialDecoder
from ecgstream.sources.serial_source import SerialSource
from tools.wearable_sim import GARBAGE_LINES, SerialPlan, adc_counts, serial_lines, write_lines

FS = 250.0


def _signal(seconds: float, seed: int = 1) -> np.ndarray:
    from ecgstream.sources.synthetic import synth_ecg

    return adc_counts(synth_ecg(seconds, FS, 72, seed=seed, noise_mv=0.01), bits=10)


def _joined(chunks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample indices, values, leads_off per sample) of a list of chunks."""
    idx = np.concatenate([np.arange(c.start_sample, c.end_sample) for c in chunks])
    val = np.concatenate([c.samples for c in chunks])
    off = np.concatenate([np.full(c.samples.size, c.leads_off) for c in chunks])
    return idx, val, off


# -- parse_line ------------------------------------------------------------------------------
@pytest.mark.parametrize(("line", "fmt", "want"), [
    (b"512\r\n", "ascii", ParsedLine(512.0)),
    (b"-0.25\n", "ascii", ParsedLine(-0.25)),
    (b"  7 ", "ascii", ParsedLine(7.0)),
    (b"\r\n", "ascii", None),
    (b"1234,512\n", "csv", ParsedLine(512.0, False, 1234.0)),
    (b"1234,!\n", "csv", ParsedLine(math.nan, True, 1234.0)),
])
def test_parse_line_accepts(line, fmt, want):
    got = parse_line(line, fmt)
    if want is None or math.isnan(want.value):
        assert got == want or (got.leads_off and got.t_ms == want.t_ms)
    else:
        assert got == want


@pytest.mark.parametrize("marker", [b"!", b"LO", b"lo", b"leads off", b"Leads-Off", b"LEADOFF",
                                    b"lead off", b"LEADS_OFF"])
def test_parse_line_lead_off_markers(marker):
    for fmt in ("ascii", "csv"):
        p = parse_line(marker + b"\n", fmt)
        assert p is not None and p.leads_off and math.isnan(p.value)


@pytest.mark.parametrize("line", [b"5x2", b"\xff\xfe", b"1" * (MAX_LINE_BYTES + 1), b"hello",
                                  b"99999999999", b"nan", b"inf", b"1e5", b"0x10", b"1_000",
                                  b"--1", b"1.2.3", b"\x00"])
def test_parse_line_rejects(line):
    with pytest.raises(LineError):
        parse_line(line, "ascii")


@pytest.mark.parametrize("line", [b"12", b"a,1", b"1,2,3", b"-5,1", b"1,", b",1", b"1,x"])
def test_parse_line_csv_rejects(line):
    with pytest.raises(LineError):
        parse_line(line, "csv")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=100), st.sampled_from(["ascii", "csv"]))
def test_parse_line_fuzz_raises_only_line_error(data, fmt):
    try:
        p = parse_line(data, fmt)
    except LineError:
        return
    if p is not None:
        assert p.leads_off or (math.isfinite(p.value) and -8388608 <= p.value <= 16777215)
        assert (p.t_ms is not None) == (fmt == "csv" and p.t_ms is not None)


_LINE = st.one_of(
    st.integers(0, 4095).map(lambda v: b"%d" % v),
    st.sampled_from([b"!", b"LO", b"", b"\r"] + list(GARBAGE_LINES)),
    st.binary(max_size=80).filter(lambda b: b"\n" not in b),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINE, max_size=60), st.lists(st.integers(1, 50), min_size=1, max_size=20))
def test_decoder_same_samples_however_bytes_are_split(lines, cuts):
    """Reads of any size give the same samples, indices without holes, one sample per line."""
    data = b"\n" + b"".join(ln + b"\n" for ln in lines)

    def run(pieces):
        stats = SourceStats()
        dec = SerialDecoder("d", "ascii", FS, 0.1, stats)
        out = []
        for p in pieces:
            out += dec.feed(p, 0.0)
        out += dec.flush()
        return out, stats

    whole, st_whole = run([data])
    pieces, pos, k = [], 0, 0
    while pos < len(data):
        n = cuts[k % len(cuts)]
        pieces.append(data[pos:pos + n])
        pos, k = pos + n, k + 1
    split, st_split = run(pieces)
    assert st_whole.garbled == st_split.garbled
    for chunks in (whole, split):
        for a, b in zip(chunks, chunks[1:], strict=False):
            assert b.start_sample == a.end_sample
    if whole:
        i1, v1, o1 = _joined(whole)
        i2, v2, o2 = _joined(split)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(v1, v2)
        np.testing.assert_array_equal(o1, o2)
    blank = sum(1 for ln in lines if ln.strip() == b"" and len(ln) <= MAX_LINE_BYTES)
    assert sum(c.samples.size for c in whole) == len(lines) - blank


def test_estimate_fs_snaps_to_usual_rates():
    t = np.floor(np.arange(64) * 1000 / 360)  # integer-ms stamps of a 360 Hz device
    assert estimate_fs(t) == 360.0
    assert estimate_fs(np.arange(64) * 3.0) == pytest.approx(333.3, abs=0.1)
    with pytest.raises(ValueError):
        estimate_fs([5.0, 5.0])


def test_uri_errors():
    with pytest.raises(SourceError, match="fs=HZ"):
        SerialSource("serial:/dev/ttyUSB0")
    with pytest.raises(SourceError, match="unknown parameter"):
        SerialSource("serial:/dev/ttyUSB0?fs=250&bauds=9600")
    with pytest.raises(SourceError, match="format"):
        SerialSource("serial:/dev/ttyUSB0?fs=250&format=hex")


def test_missing_port_raises_source_error_with_path(tmp_path):
    src = open_source(f"serial:{tmp_path}/nope?fs=250")
    with pytest.raises(SourceError, match=f"{tmp_path}/nope"):
        src.run(lambda c: None, threading.Event())


# -- a real pseudo-terminal ------------------------------------------------------------------
@pytest.mark.pty
def test_pty_samples_arrive_in_order_with_indices():
    counts = _signal(4.0)
    with PtyPair() as pty, SourceRunner(SerialSource(f"serial:{pty.path}?fs=250&device=strap")) as run:
        assert wait_for(run.source.connected.is_set, 5)
        write_lines(pty.master, serial_lines(counts, FS), FS, speed=0)
        assert wait_for(lambda: run.samples() >= counts.size, 5), run.samples()
        assert wait_for(lambda: run.samples() == counts.size, 0.3)
    assert run.error is None
    chunks = run.snapshot()
    idx, val, off = _joined(chunks)
    np.testing.assert_array_equal(idx, np.arange(counts.size))
    np.testing.assert_array_equal(val, counts)
    assert not off.any() and not any(c.gap_before for c in chunks)
    assert all(c.device == "strap" and c.fs_hz == FS for c in chunks)
    assert max(c.samples.size for c in chunks) <= 25  # chunk_s = 0.1 s
    assert run.source.stats.garbled == 0


@pytest.mark.pty
def test_pty_garbled_lines_and_lead_off():
    counts = _signal(6.0)
    plan = SerialPlan("ascii", leads_off=[(2.0, 1.0)], garble_every=97)
    lines = serial_lines(counts, FS, plan)
    with PtyPair() as pty, SourceRunner(SerialSource(f"serial:{pty.path}?fs=250")) as run:
        assert wait_for(run.source.connected.is_set, 5)
        write_lines(pty.master, lines, FS, speed=0)
        assert wait_for(lambda: run.samples() >= counts.size, 5)
    assert run.error is None
    stats = run.source.stats
    garbled = [ln.index for ln in lines if ln.kind == "garbled"]
    offs = [ln.index for ln in lines if ln.kind == "off"]
    assert stats.garbled == len(garbled) > 0
    assert len(offs) == 250
    idx, val, off = _joined(run.snapshot())
    np.testing.assert_array_equal(idx, np.arange(counts.size))  # the clock stays honest
    assert np.flatnonzero(np.isnan(val) & ~off).tolist() == garbled
    assert np.flatnonzero(off).tolist() == offs
    assert np.isnan(val[off]).all()
    good = ~np.isnan(val)
    np.testing.assert_array_equal(val[good], counts[good])
    # The pipeline takes it: it bridges the garbled samples and sees leads off.
    pipe = BeatPipeline("d", FS)
    beats = [b for c in run.snapshot() for b in pipe.push(c)]
    assert len(beats) >= 4 and pipe.status.segments >= 2


@pytest.mark.pty
def test_pty_csv_rate_estimated_and_time_jump_is_a_gap():
    counts = _signal(5.0)
    lines = serial_lines(counts, FS, SerialPlan("csv", drop=[(600, 25)], t0_ms=123456))
    with PtyPair() as pty, SourceRunner(SerialSource(f"serial:{pty.path}?format=csv")) as run:
        assert wait_for(run.source.connected.is_set, 5)
        write_lines(pty.master, lines, FS, speed=0)
        assert wait_for(lambda: run.samples() >= counts.size - 25, 5), run.samples()
    stats = run.source.stats
    chunks = run.snapshot()
    assert stats.declared_fs_hz[run.source.device] == FS
    assert stats.measured_fs_hz[run.source.device] == pytest.approx(FS, rel=0.02)
    gaps = [c for c in chunks if c.gap_before]
    assert len(gaps) == 1 and gaps[0].start_sample == 625
    idx, val, _ = _joined(chunks)
    keep = np.r_[0:600, 625:counts.size]
    np.testing.assert_array_equal(idx, keep)
    np.testing.assert_array_equal(val, counts[keep])


@pytest.mark.pty
def test_pty_measured_rate_from_arrival_differs_from_a_wrong_declared_rate():
    """The wearable sends 500 lines/s while the URI declares 250 Hz: the measured rate shows it."""
    counts = _signal(3.0)
    with PtyPair() as pty, SourceRunner(SerialSource(f"serial:{pty.path}?fs=250")) as run:
        assert wait_for(run.source.connected.is_set, 5)
        write_lines(pty.master, serial_lines(counts, FS), FS, speed=2.0)
        assert wait_for(lambda: run.samples() >= counts.size, 5)
    stats = run.source.stats
    assert stats.declared_fs_hz[run.source.device] == FS
    assert stats.measured_fs_hz[run.source.device] == pytest.approx(2 * FS, rel=0.1)


@pytest.mark.pty
def test_pty_stop_is_honoured_quickly():
    with PtyPair() as pty:
        run = SourceRunner(SerialSource(f"serial:{pty.path}?fs=250")).start()
        assert wait_for(run.source.connected.is_set, 5)
        took = run.stop()
        assert not run.thread.is_alive() and took < 0.5, took


@pytest.mark.pty
def test_socat_unplug_and_replug_reconnects_with_a_gap(tmp_path):
    counts = _signal(3.0)
    first, second = counts[:500], counts[500:]
    with SocatLink(tmp_path) as link:
        src = SerialSource(f"serial:{link.dev}?fs=250", retry_min_s=0.05, retry_max_s=0.2)
        with SourceRunner(src) as run:
            assert wait_for(src.connected.is_set, 5)
            write_lines(link.sim, serial_lines(first, FS), FS, speed=0)
            assert wait_for(lambda: run.samples() >= first.size, 5)
            link.unplug()
            assert wait_for(lambda: not src.connected.is_set(), 5)
            assert run.thread.is_alive() and run.error is None
            link.replug()
            assert wait_for(lambda: src.stats.reconnects == 1 and src.connected.is_set(), 5)
            write_lines(link.sim, serial_lines(second, FS), FS, speed=0)
            assert wait_for(lambda: run.samples() >= counts.size, 5), run.samples()
        assert run.error is None
    chunks = run.snapshot()
    gaps = [i for i, c in enumerate(chunks) if c.gap_before]
    assert len(gaps) == 1 and src.stats.gaps == 1
    before, after = chunks[:gaps[0]], chunks[gaps[0]:]
    i1, v1, _ = _joined(before)
    i2, v2, _ = _joined(after)
    np.testing.assert_array_equal(i1, np.arange(first.size))
    np.testing.assert_array_equal(v1, first)
    np.testing.assert_array_equal(v2, second)
    # The index skipped the time the port was away, then runs on without holes.
    assert i2[0] > first.size
    np.testing.assert_array_equal(i2, np.arange(i2[0], i2[0] + second.size))


@pytest.mark.pty
def test_reopen_backs_off_exponentially_up_to_the_cap(tmp_path):
    """Injected sleep: waits double from retry_min_s to retry_max_s while the port is away."""
    waits: list[float] = []
    unplugged = threading.Event()
    with SocatLink(tmp_path) as link:

        def sleep(s: float) -> None:
            waits.append(s)
            if len(waits) == 6:
                # The cable is back during the sixth wait. The injected waits are
                # instant, so the retries can outrun the unplug itself (still
                # reaping socat and removing its links; CI once saw "socat already
                # running"): replug only once it is done. Under load socat can
                # take seconds to create its links: give it time (a timeout here
                # would kill the source thread, not test the backoff).
                unplugged.wait(30)
                link.start(timeout_s=30)

        src = SerialSource(f"serial:{link.dev}?fs=250", retry_min_s=0.05, retry_max_s=0.3,
                           sleep=sleep)
        with SourceRunner(src) as run:
            assert wait_for(src.connected.is_set, 5)
            link.unplug()
            unplugged.set()
            assert wait_for(lambda: src.stats.reconnects == 1, 40), (waits, run.error)
    assert run.error is None
    assert waits[:6] == [0.05, 0.1, 0.2, 0.3, 0.3, 0.3]
    assert all(w == 0.3 for w in waits[6:])  # a slow socat start only adds capped waits
