"""``ecgstream beats``, ``--help`` and ``--version`` through the real console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import wfdb

from ecgstream import __version__
from ecgstream.sources.records import excerpt_dir

EXE = [sys.executable, "-m", "ecgstream"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=120)


def test_version_and_help():
    r = _run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"ecgstream {__version__}"
    r = _run("--help")
    assert r.returncode == 0
    for cmd in ("beats", "run", "enroll", "verify", "templates", "check-config", "demo"):
        assert cmd in r.stdout
    r = _run("beats", "--help")
    assert r.returncode == 0 and "sample" in r.stdout


def test_beats_csv_matches_annotations():
    rec = excerpt_dir() / "Person_01" / "rec_2"
    r = _run("beats", "--source", f"wfdb:{rec}")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "sample,time_s,rr_s,quality"
    rows = [ln.split(",") for ln in lines[1:]]
    samples = [int(x[0]) for x in rows]
    assert all(abs(float(x[1]) - int(x[0]) / 500.0) < 1e-3 for x in rows)
    assert rows[0][2] == ""  # no RR before the first beat
    ann = wfdb.rdann(str(rec), "atr")
    ref = [s for s, c in zip(ann.sample, ann.symbol, strict=True) if c == "N"]
    # Each annotated R (unaudited, 10 per record) has a beat within 50 ms.
    assert all(min(abs(s - q) for q in samples) <= 25 for s in ref)


def test_beats_resampled_source_reports_source_rate(tmp_path: Path):
    rec = excerpt_dir("mitdb-excerpt") / "100"
    r = _run("beats", "--source", f"wfdb:{rec}")
    assert r.returncode == 0, r.stderr
    samples = [int(ln.split(",")[0]) for ln in r.stdout.splitlines()[1:]]
    ann = wfdb.rdann(str(rec), "atr")
    ref = [s for s, c in zip(ann.sample, ann.symbol, strict=True) if c in "NLRVA"]
    tol = round(0.15 * 360)
    hits = sum(1 for s in ref if min(abs(s - q) for q in samples) <= tol)
    assert hits >= len(ref) - 1 and len(samples) <= len(ref) + 1


def test_beats_bad_inputs_exit_2_with_one_line():
    for src, msg in (
        ("wfdb:nope/none", "no WFDB record"),
        (f"wfdb:{excerpt_dir() / 'Person_01' / 'rec_1'}?channel=9", "no channel 9"),
        ("serial", "no scheme"),
    ):
        r = _run("beats", "--source", src)
        assert r.returncode == 2
        assert msg in r.stderr and "Traceback" not in r.stderr
    r = _run("beats")
    assert r.returncode == 2 and "--source" in r.stderr
