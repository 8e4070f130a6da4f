"""DSP samples per CPU second on whole MIT-BIH records: ecgstream beside its peers.

Issue 10's figures "DSP samples per CPU-second vs biosppy ``ecg.ecg``, whole MIT-BIH
records, same run" (goal >= 10x) and "the same vs NeuroKit2 ``ecg_peaks``" (goal
>= 2x). Every method gets the same whole records (30 min each, lead 0, 360 Hz, mV),
in the same process, interleaved record by record, CPU time (``time.process_time``),
best of ``--repeat`` rounds:

- ``ecgstream``: :func:`ecgstream.dsp.extract_beats` (the streaming pipeline over the
  record as one chunk: resampling to 250 Hz, causal conditioning, online detection,
  beat windows with quality flags; what training uses);
- ``ecgstream fleet``: the records as devices of one fleet, advanced together by
  :class:`ecgstream.dsp.fleet.FleetDsp` in ``--chunk-s`` chunks (the daemon's way;
  bitwise the same beats as above, checked here);
- ``biosppy``: ``biosppy.signals.ecg.ecg(signal, sampling_rate, show=False)`` (filtering,
  Hamilton segmenter, correction, templates, heart rate);
- ``neurokit2``: ``neurokit2.ecg_peaks(signal, sampling_rate)`` (its default
  ``neurokit`` method: R peaks only, no filtering, no beat windows);
- ``wfdb xqrs`` with ``--xqrs`` (slow).

The peers do less or other work than ecgstream (NeuroKit2's ``ecg_peaks`` returns
peak indices only; ecgstream also cuts, grades and resamples every beat), so the
ratio is of throughput on the same input, not of equal output.

Usage::

    python bench/bench_dsp_peers.py --records 12 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# ECGSTREAM_TREE: measure another checkout's package (a baseline) with this script.
sys.path.insert(0, os.environ.get("ECGSTREAM_TREE", str(ROOT)))


def _records(n: int) -> list[tuple[str, np.ndarray, float]]:
    from ecgstream.sources.records import mitdb_records, read_record

    recs = sorted(mitdb_records(), key=lambda p: p.name)
    step = max(1, len(recs) // n)
    out = []
    for p in recs[::step][:n]:
        x, fs, _ = read_record(p, 0)
        out.append((p.name, x, fs))
    return out


def run_ecgstream(recs) -> int:
    from ecgstream.dsp import extract_beats

    return sum(len(extract_beats(x, fs)) for _, x, fs in recs)


def run_fleet(recs, chunk_s: float) -> tuple[int, list]:
    from ecgstream.core.types import SampleChunk
    from ecgstream.dsp import BeatPipeline
    from ecgstream.dsp.fleet import FleetDsp

    pipes = [BeatPipeline(name, fs) for name, _, fs in recs]
    fleet = FleetDsp()
    beats: list[list] = [[] for _ in recs]
    pos = [0] * len(recs)
    while any(pos[i] < recs[i][1].size for i in range(len(recs))):
        items, idx = [], []
        for i, (name, x, fs) in enumerate(recs):
            if pos[i] < x.size:
                n = round(chunk_s * fs)
                items.append((pipes[i], SampleChunk(name, fs, pos[i], x[pos[i]:pos[i] + n])))
                idx.append(i)
                pos[i] += n
        for i, b in zip(idx, fleet.push(items), strict=True):
            beats[i].extend(b)
    for i, p in enumerate(pipes):
        beats[i].extend(p.flush())
    return sum(map(len, beats)), beats


def run_biosppy(recs) -> int:
    from biosppy.signals import ecg

    return sum(len(ecg.ecg(signal=x, sampling_rate=fs, show=False)["rpeaks"]) for _, x, fs in recs)


def run_neurokit(recs) -> int:
    import neurokit2 as nk

    n = 0
    for _, x, fs in recs:
        _, info = nk.ecg_peaks(x, sampling_rate=int(fs))
        n += len(info["ECG_R_Peaks"])
    return n


def run_xqrs(recs) -> int:
    from wfdb import processing

    return sum(len(processing.xqrs_detect(sig=x, fs=fs, verbose=False)) for _, x, fs in recs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--chunk-s", type=float, default=10.0, help="chunk length of the fleet run")
    ap.add_argument("--xqrs", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "dsp_peers.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    recs = _records(args.records)
    n_samples = sum(x.size for _, x, _ in recs)
    methods = {
        "ecgstream": lambda r: run_ecgstream(r),
        "ecgstream fleet": lambda r: run_fleet(r, args.chunk_s)[0],
        "biosppy": run_biosppy,
        "neurokit2": run_neurokit,
    }
    if args.xqrs:
        methods["wfdb xqrs"] = run_xqrs
    import importlib.util

    import ecgstream

    if importlib.util.find_spec("ecgstream.dsp.fleet") is None:  # a baseline before the fleet DSP
        del methods["ecgstream fleet"]
    # Warm imports and caches outside the timings.
    short = [(name, x[: int(20 * fs)], fs) for name, x, fs in recs[:1]]
    for f in methods.values():
        f(short)
    # The fleet form must give the beats of the single form.
    from ecgstream.dsp import extract_beats

    if "ecgstream fleet" in methods:
        _, fb = run_fleet(recs[:2], args.chunk_s)
        for (_, x, fs), got in zip(recs[:2], fb, strict=True):
            want = extract_beats(x, fs)
            assert [b.r_sample for b in got] == [b.r_sample for b in want]
            assert all(np.array_equal(a.window, b.window) for a, b in zip(got, want, strict=True))
    cpu = {m: [0.0] * args.repeat for m in methods}
    found = {m: 0 for m in methods}
    for rep in range(args.repeat):
        for rec in recs:  # interleaved record by record: load hits every method alike
            for m, f in methods.items():
                t = time.process_time()
                k = f([rec])
                cpu[m][rep] += time.process_time() - t
                if rep == 0:
                    found[m] += k
    best = {m: min(v) for m, v in cpu.items()}
    rate = {m: n_samples / best[m] for m in methods}
    res = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "package": str(Path(ecgstream.__file__).parent),
        "records": [name for name, _, _ in recs], "samples": n_samples,
        "cpu_s_best": {m: round(v, 3) for m, v in best.items()},
        "samples_per_cpu_s": {m: round(v) for m, v in rate.items()},
        "peaks_or_beats_found": found,
        "ratio_vs_biosppy": {m: round(rate[m] / rate["biosppy"], 2) for m in methods},
        "ratio_vs_neurokit2": {m: round(rate[m] / rate["neurokit2"], 2) for m in methods},
    }
    print(json.dumps(res, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    rows = "\n".join(f"| {m} | {res['cpu_s_best'][m]} | {rate[m] / 1e6:.2f} M | {res['ratio_vs_biosppy'][m]} | "
                     f"{res['ratio_vs_neurokit2'][m]} | {found[m]} |" for m in methods)
    args.out.with_suffix(".md").write_text(f"""# DSP on whole MIT-BIH records: ecgstream beside its peers (issue 10)

Command: `{res['command']}` (package `{res['package']}`); machine: {res['machine']}; load average at start
{res['load_average_at_start']}; {res['date']}. Records (whole, lead 0, 360 Hz): {', '.join(res['records'])}
({n_samples:,} samples). CPU time, best of {args.repeat} rounds, methods interleaved record by record
in one process. What each method does: see `bench/bench_dsp_peers.py`; NeuroKit2's `ecg_peaks` returns
R-peak indices only, ecgstream also resamples, conditions causally and cuts and grades every beat.

| method | CPU s | samples per CPU s | vs biosppy | vs NeuroKit2 | peaks / beats found |
|---|---|---|---|---|---|
{rows}
""")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
