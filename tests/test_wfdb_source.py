"""WFDB replay source and data access, on the shipped excerpt."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecgstream.sources import SourceError, open_source
from ecgstream.sources.records import DataError, ecgid_records, excerpt_dir, read_record

REC = excerpt_dir() / "Person_01" / "rec_1"


def test_replay_covers_record_in_order():
    src = open_source(f"wfdb:{REC}?chunk_s=0.25")
    chunks = list(src.chunks())
    x, fs, info = read_record(REC, 0)
    assert info["sig_name"] == "ECG I"  # the raw lead, not PhysioNet's filtered copy
    assert all(c.fs_hz == fs == 500.0 for c in chunks)
    assert [c.start_sample for c in chunks] == list(range(0, x.size, 125))
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), x)
    assert not any(c.gap_before for c in chunks)
    assert chunks[0].device == "Person_01-rec_1"


def test_channel_by_name_and_index():
    a = open_source(f"wfdb:{REC}?channel=1").samples
    b = open_source(f"wfdb:{REC}?channel=ECG%20I%20filtered").samples
    np.testing.assert_array_equal(a, b)


def test_loop_marks_gap_and_keeps_counting():
    src = open_source(f"wfdb:{REC}?loop=1&chunk_s=1")
    got = []
    stop = threading.Event()

    def sink(c):
        got.append(c)
        if len(got) >= 45:
            stop.set()

    src.run(sink, stop)
    starts = [c.start_sample for c in got]
    assert starts == sorted(starts) and starts[20] == 10000
    assert [i for i, c in enumerate(got) if c.gap_before] == [20, 40]


def test_paced_replay_uses_the_clock():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    src = open_source(f"wfdb:{REC}?speed=2&chunk_s=1", clock=lambda: now[0], sleep=sleep)
    src.run(lambda c: None, threading.Event())
    # 20 s of signal at 2x: 10 s of (fake) wall time, in 0.5 s steps.
    assert now[0] == pytest.approx(10.0)
    assert len(slept) == 20


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("wfdb:does/not/exist", "no WFDB record"),
        (f"wfdb:{REC}?channel=7", "no channel 7"),
        (f"wfdb:{REC}?channel=V5", "no channel 'V5'"),
        (f"wfdb:{REC}?speed=-1", "speed"),
        (f"wfdb:{REC}?bogus=1", "unknown parameter"),
        ("nonsense", "no scheme"),
        ("ftp://x/y", "unknown source scheme"),
    ],
)
def test_bad_sources_give_one_clear_error(uri, match):
    with pytest.raises(SourceError, match=match):
        open_source(uri)


def test_excerpt_records_listed():
    recs = ecgid_records(excerpt_dir())
    assert {r.person for r in recs} == {1, 6, 13, 15, 25, 29, 38}
    assert all(r.date for r in recs)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.text(max_size=300), data=st.binary(max_size=64))
def test_wfdb_header_fuzz_only_dataerror(tmp_path, header, data):
    """Random header text and signal bytes: a DataError or samples, nothing else."""
    (tmp_path / "r.hea").write_bytes(header.encode("utf-8", "surrogatepass"))
    (tmp_path / "r.dat").write_bytes(data)
    try:
        x, fs, _ = read_record(tmp_path / "r", 0)
    except DataError:
        return
    assert x.ndim == 1 and fs > 0
