"""Shared fixtures: real records from the shipped excerpts."""

from __future__ import annotations

import pytest
from helpers_broker import OPEN_PUBLISHERS

from ecgstream.sources.records import excerpt_dir, read_record


@pytest.fixture(autouse=True)
def close_publishers():
    """Close every MQTT publisher a test put in ``OPEN_PUBLISHERS``, also when it fails half-way."""
    yield
    while OPEN_PUBLISHERS:
        OPEN_PUBLISHERS.pop().close()


@pytest.fixture(scope="session")
def ecgid_record():
    """Person_01 rec_1 of ECG-ID, raw lead I, 20 s at 500 Hz (mV)."""
    x, fs, _ = read_record(excerpt_dir() / "Person_01" / "rec_1", 0)
    return x, fs


@pytest.fixture(scope="session")
def mitbih_excerpt():
    """First 60 s of MIT-BIH record 100, lead 0, at 360 Hz (mV)."""
    x, fs, _ = read_record(excerpt_dir("mitdb-excerpt") / "100", 0)
    return x, fs
