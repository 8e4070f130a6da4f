"""Progress on long offline work (issue 18): tqdm on stderr, silent off a terminal unless ``--progress``."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import numpy as np
import pytest

from ecgstream.sources.records import excerpt_dir, read_record

EXE = [sys.executable, "-m", "ecgstream"]
SYN = "synthetic:?fs=500&seconds=150&seed=3"
MIT = [str(excerpt_dir().parent / "mitdb-excerpt" / r) for r in ("100", "208")]


def _cli(*args: str, stderr=subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run([*EXE, *args], stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=120)


def test_beats_is_silent_in_a_pipe_and_shows_progress_when_asked():
    quiet = _cli("beats", "--source", SYN)
    loud = _cli("beats", "--source", SYN, "--progress")
    assert quiet.returncode == loud.returncode == 0
    assert quiet.stderr == ""
    assert "beats: 100%" in loud.stderr and "150/150 s of signal" in loud.stderr
    assert loud.stdout == quiet.stdout and loud.stdout.count("\n") > 100  # the CSV is untouched


@pytest.mark.pty
def test_beats_shows_progress_on_a_terminal_without_the_flag():
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 wide
    try:
        r = _cli("beats", "--source", SYN, stderr=slave)
        os.close(slave)
        slave = -1
        seen = b""
        while True:
            try:
                part = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not part:
                break
            seen += part
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert r.returncode == 0
    assert b"beats: 100%" in seen, seen[-500:]
    assert "%" not in r.stdout  # the bar never goes to stdout


def test_verify_progress_only_when_asked():
    quiet = _cli("verify", *MIT)
    loud = _cli("verify", *MIT, "--progress")
    assert quiet.returncode == loud.returncode == 1  # two persons: reject
    assert "verify:" not in quiet.stderr
    assert "verify: 100%" in loud.stderr and "120/120 s of signal" in loud.stderr
    assert loud.stdout == quiet.stdout


def test_progress_gives_the_same_beats_and_reaches_the_end():
    from ecgstream.dsp import extract_beats

    x, fs, _ = read_record(MIT[0], 0)
    calls: list[tuple[int, int]] = []
    a = extract_beats(x, fs)
    b = extract_beats(x, fs, progress=lambda n, t: calls.append((n, t)), progress_chunk_s=7.0)
    assert len(a) == len(b) > 50
    for p, q in zip(a, b, strict=True):
        assert p.r_sample == q.r_sample and p.flags == q.flags
        np.testing.assert_array_equal(p.window, q.window)
    assert calls[-1] == (x.size, x.size) and len(calls) == -(-x.size // round(7.0 * fs))
    assert [n for n, _ in calls] == sorted(n for n, _ in calls)
