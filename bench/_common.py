"""Shared helpers of the DSP benchmarks: reference beats, matching, detectors.

Scoring follows ANSI/AAMI EC57: a detection matches a reference beat when it
lies within +-150 ms of it, each detection matches at most one beat, and
gross statistics are sums over all beats of all records.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Beat labels of EC57 (MIT-BIH codes); everything else ('+', '~', '|', '!', '[', ']',
#: 'x', 'p', 't', 'u', '"', ...) is not a beat.
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
#: Records with a pacemaker (paced beats '/' and fusion of paced 'f').
PACED = ("102", "104", "107", "217")


@dataclass
class Reference:
    """Reference beats of one record (indices at the record's rate)."""

    name: str
    fs: float
    n: int
    beats: np.ndarray
    vf: list[tuple[int, int]] = field(default_factory=list)  # [start, end] of VF/flutter


def load_mitdb(path: Path, channel: int = 0) -> tuple[np.ndarray, Reference]:
    """Signal (mV) and EC57 reference beats of one MIT-BIH record."""
    import wfdb

    from ecgstream.sources.records import read_record

    x, fs, _ = read_record(path, channel)
    ann = wfdb.rdann(str(path), "atr")
    sym = np.asarray(ann.symbol)
    samp = np.asarray(ann.sample, dtype=np.int64)
    beats = samp[np.isin(sym, list(BEAT_SYMBOLS))]
    vf: list[tuple[int, int]] = []
    start = None
    for s, k in zip(sym, samp, strict=True):
        if s == "[":
            start = int(k)
        elif s == "]" and start is not None:
            vf.append((start, int(k)))
            start = None
    if start is not None:
        vf.append((start, x.size))
    return x, Reference(path.name, fs, x.size, beats, vf)


def load_ecgid_r(path: Path) -> tuple[np.ndarray, float, np.ndarray]:
    """Raw lead I of an ECG-ID record and its annotated R peaks (symbol 'N')."""
    import wfdb

    from ecgstream.sources.records import read_record

    x, fs, _ = read_record(path, 0)
    ann = wfdb.rdann(str(path), "atr")
    sym = np.asarray(ann.symbol)
    r = np.asarray(ann.sample, dtype=np.int64)[sym == "N"]
    return x, fs, r


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    err: list[float] = field(default_factory=list)  # signed detection - reference, s

    def add(self, o: Score) -> None:
        self.tp += o.tp
        self.fp += o.fp
        self.fn += o.fn
        self.err.extend(o.err)

    @property
    def se(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def ppv(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0

    @property
    def median_abs_err_ms(self) -> float:
        return float(np.median(np.abs(self.err)) * 1000) if self.err else float("nan")

    @property
    def median_err_ms(self) -> float:
        return float(np.median(self.err) * 1000) if self.err else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {
            "tp": self.tp, "fp": self.fp, "fn": self.fn,
            "se": self.se, "ppv": self.ppv, "f1": self.f1,
            "median_abs_err_ms": self.median_abs_err_ms,
            "median_signed_err_ms": self.median_err_ms,
        }


def match(det: np.ndarray, ref: np.ndarray, tol: int, fs: float) -> Score:
    """One-to-one matching of detections to references within ``tol`` samples.

    Pairs are formed closest first (all candidate pairs sorted by distance),
    which is the optimal assignment for points on a line within a window
    shorter than the minimum RR interval.
    """
    det = np.sort(np.asarray(det, dtype=np.int64))
    ref = np.sort(np.asarray(ref, dtype=np.int64))
    pairs = []
    if det.size and ref.size:
        lo = np.searchsorted(det, ref - tol, side="left")
        hi = np.searchsorted(det, ref + tol, side="right")
        for j, (a, b) in enumerate(zip(lo, hi, strict=True)):
            for i in range(a, b):
                pairs.append((abs(int(det[i]) - int(ref[j])), i, j))
    pairs.sort()
    used_d: set[int] = set()
    used_r: set[int] = set()
    err = []
    for _, i, j in pairs:
        if i in used_d or j in used_r:
            continue
        used_d.add(i)
        used_r.add(j)
        err.append((int(det[i]) - int(ref[j])) / fs)
    tp = len(used_r)
    return Score(tp, det.size - tp, ref.size - tp, err)


def outside(idx: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """The indices of ``idx`` that lie outside every ``[a, b]`` span."""
    keep = np.ones(idx.size, dtype=bool)
    for a, b in spans:
        keep &= ~((idx >= a) & (idx <= b))
    return idx[keep]


# -- detectors ------------------------------------------------------------
def det_ecgstream(x: np.ndarray, fs: float) -> np.ndarray:
    from ecgstream.dsp import extract_beats

    return np.array([b.r_sample for b in extract_beats(x, fs)], dtype=np.int64)


def det_biosppy_hamilton(x: np.ndarray, fs: float) -> np.ndarray:
    from biosppy.signals import ecg

    return np.asarray(ecg.ecg(signal=x, sampling_rate=fs, show=False)["rpeaks"], dtype=np.int64)


def det_biosppy_christov(x: np.ndarray, fs: float) -> np.ndarray:
    """biosppy's Christov segmenter in the place of Hamilton in ``ecg.ecg``:
    the same FIR 0.67-45 Hz filter before it and ``correct_rpeaks`` after."""
    from biosppy.signals import ecg, tools

    filt, _, _ = tools.filter_signal(
        signal=x, ftype="FIR", band="bandpass", order=int(1.5 * fs),
        frequency=[0.67, 45], sampling_rate=fs,
    )
    filt = filt - np.mean(filt)
    (r,) = ecg.christov_segmenter(signal=filt, sampling_rate=fs)
    (r,) = ecg.correct_rpeaks(signal=filt, rpeaks=r, sampling_rate=fs, tol=0.05)
    return np.asarray(r, dtype=np.int64)


def det_neurokit(x: np.ndarray, fs: float) -> np.ndarray:
    import neurokit2 as nk

    _, info = nk.ecg_peaks(x, sampling_rate=int(round(fs)))
    return np.asarray(info["ECG_R_Peaks"], dtype=np.int64)


DETECTORS = {
    "ecgstream": det_ecgstream,
    "biosppy-hamilton": det_biosppy_hamilton,
    "biosppy-christov": det_biosppy_christov,
    "neurokit2": det_neurokit,
}


def cpu_model() -> str:
    """The processor's model name from /proc/cpuinfo ("" where unknown)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def machine_info() -> dict:
    """This machine, for a benchmark's JSON: CPU, cores, Python, platform, load average."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "load_avg_at_start": [round(v, 2) for v in os.getloadavg()]}


def rss_mb() -> float:
    """Resident set size of this process in MB (VmRSS from /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def machine() -> str:
    """One line describing this machine and the library versions."""
    import importlib.metadata as md

    cpu = cpu_model() or platform.processor() or platform.machine()
    vers = []
    for p in ("numpy", "scipy", "biosppy", "neurokit2", "wfdb"):
        with contextlib.suppress(md.PackageNotFoundError):
            vers.append(f"{p} {md.version(p)}")
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs (shared with other work, timings noisy), "
        f"Python {platform.python_version()}, " + ", ".join(vers)
    )


def git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
            text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(out: Path, res: dict, render) -> None:
    """Write a benchmark's results as ``out`` (JSON) and its page beside it (``.md``, ``render(res)``)."""
    import json

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(render(res))
    print(f"wrote {out} and {out.with_suffix('.md')}")
