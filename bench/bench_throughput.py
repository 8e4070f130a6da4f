"""Throughput of the streaming DSP: samples per CPU second, streams per core.

1. Samples per CPU second of conditioning + detection + beat extraction
   (``BeatPipeline.push`` over 0.25 s chunks, as the daemon runs it) beside
   ``biosppy.signals.ecg.ecg(show=False)`` on the same records, in the same
   run (goal: >= 10x biosppy).
2. Concurrent 500 Hz streams per core: CPU time (``time.process_time``) per
   second of stream of one pipeline fed 0.1 s and 0.25 s chunks, the maximum
   N it implies, and a real run of N=1000 pipelines fed round-robin, one chunk
   each per round, as fast as possible: its real-time factor is seconds of
   stream per pipeline divided by the CPU seconds the round-robin took (goal:
   1,000 streams at a real-time factor >= 1).
3. Memory per pipeline: ``tracemalloc`` over building 1000 pipelines and
   feeding each 10 s (the steady-state buffers are full by then).

All single-threaded; CPU time, not wall time, so other work on the machine
disturbs the figures less (it still does: caches, frequency).

Usage::

    python bench/bench_throughput.py
    python bench/bench_throughput.py --streams 1000 --seconds 10
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from _common import ROOT, git_rev, machine


def _records(n: int) -> list[tuple[np.ndarray, float]]:
    from ecgstream.sources.records import ecgid_records, read_record

    recs = ecgid_records()
    step = max(1, len(recs) // n)
    out = []
    for r in recs[::step][:n]:
        x, fs, _ = read_record(r.path, 0)
        out.append((x, fs))
    return out


def _feed(pipe, x: np.ndarray, fs: float, chunk: int, start: int = 0) -> int:
    from ecgstream.core.types import SampleChunk

    nb = 0
    for a in range(0, x.size, chunk):
        nb += len(pipe.push(SampleChunk(pipe.device, fs, start + a, x[a:a + chunk])))
    return nb


def throughput_vs_biosppy(recs: list[tuple[np.ndarray, float]], repeat: int) -> dict:
    from biosppy.signals import ecg

    from ecgstream.dsp import BeatPipeline

    n = sum(x.size for x, _ in recs)
    best_e = best_b = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        for x, fs in recs:
            p = BeatPipeline("t", fs)
            _feed(p, x, fs, round(0.25 * fs))
            p.flush()
        best_e = min(best_e, time.process_time() - t)
        t = time.process_time()
        for x, fs in recs:
            ecg.ecg(signal=x, sampling_rate=fs, show=False)
        best_b = min(best_b, time.process_time() - t)
    return {
        "samples": n, "records": len(recs),
        "ecgstream_cpu_s": best_e, "biosppy_cpu_s": best_b,
        "ecgstream_samples_per_cpu_s": n / best_e, "biosppy_samples_per_cpu_s": n / best_b,
        "ratio": best_b / best_e,
    }


def per_stream_cost(recs: list[tuple[np.ndarray, float]], chunk_s: float) -> dict:
    from ecgstream.dsp import BeatPipeline

    fs = recs[0][1]
    chunk = round(chunk_s * fs)
    stream_s = 0.0
    t = time.process_time()
    for x, f in recs:
        p = BeatPipeline("t", f)
        _feed(p, x, f, chunk)
        stream_s += x.size / f
    cpu = time.process_time() - t
    per = cpu / stream_s
    return {"chunk_s": chunk_s, "fs": fs, "stream_s": stream_s, "cpu_s": cpu,
            "cpu_s_per_stream_s": per, "max_streams_per_core": 1.0 / per}


def round_robin(recs: list[tuple[np.ndarray, float]], n_streams: int, seconds: float,
                chunk_s: float) -> dict:
    """N pipelines, one chunk each per round, ``seconds`` of stream each."""
    from ecgstream.core.types import SampleChunk
    from ecgstream.dsp import BeatPipeline

    fs = recs[0][1]
    chunk = round(chunk_s * fs)
    total = round(seconds * fs)
    pipes = [BeatPipeline(f"dev{i}", fs) for i in range(n_streams)]
    # Each stream plays one record, starting at a different offset.
    srcs = []
    for i in range(n_streams):
        x = recs[i % len(recs)][0]
        off = (i * 997) % x.size
        srcs.append(np.roll(x, -off))
    beats = 0
    gc.collect()
    t = time.process_time()
    w = time.perf_counter()
    for a in range(0, total, chunk):
        for p, x in zip(pipes, srcs, strict=True):
            j = a % x.size
            seg = x[j:j + chunk]
            beats += len(p.push(SampleChunk(p.device, fs, a, seg)))
    cpu = time.process_time() - t
    wall = time.perf_counter() - w
    return {"streams": n_streams, "seconds_per_stream": seconds, "chunk_s": chunk_s,
            "cpu_s": cpu, "wall_s": wall, "beats": beats,
            "real_time_factor_cpu": seconds / cpu, "real_time_factor_wall": seconds / wall}


def memory_per_pipeline(recs: list[tuple[np.ndarray, float]], n: int, seconds: float) -> dict:
    from ecgstream.dsp import BeatPipeline

    fs = recs[0][1]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    pipes = [BeatPipeline(f"dev{i}", fs) for i in range(n)]
    built = tracemalloc.get_traced_memory()[0]
    x = recs[0][0][: round(seconds * fs)]
    for p in pipes:
        _feed(p, x, fs, round(0.25 * fs))
    gc.collect()
    fed, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"pipelines": n, "bytes_per_pipeline_new": (built - base) / n,
            "bytes_per_pipeline_steady": (fed - base) / n, "peak_bytes": peak}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=40, help="ECG-ID records used (default 40)")
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0, help="stream seconds in the N-stream run")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many timings")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = ap.parse_args(argv)

    recs = _records(args.records)
    res: dict = {"command": "python " + " ".join(["bench/bench_throughput.py", *sys.argv[1:]]),
                 "git": git_rev(), "machine": machine()}
    print("throughput vs biosppy ...", flush=True)
    res["vs_biosppy"] = throughput_vs_biosppy(recs, args.repeat)
    print(res["vs_biosppy"], flush=True)
    res["per_stream"] = []
    for cs in (0.1, 0.25):
        best = min((per_stream_cost(recs, cs) for _ in range(args.repeat)),
                   key=lambda d: d["cpu_s"])
        res["per_stream"].append(best)
        print(best, flush=True)
    res["round_robin"] = []
    for cs in (0.1, 0.25):
        r = round_robin(recs, args.streams, args.seconds, cs)
        res["round_robin"].append(r)
        print(r, flush=True)
    res["memory"] = memory_per_pipeline(recs, min(args.streams, 1000), 10.0)
    print(res["memory"], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(res, indent=1))
    md = _markdown(res)
    (args.out / "throughput.md").write_text(md)
    print(md)
    return 0


def _markdown(r: dict) -> str:
    v = r["vs_biosppy"]
    L = ["# Streaming DSP throughput", "",
         f"Command: `{r['command']}` (git {r['git']}).", "", f"Machine: {r['machine']}.", "",
         "CPU time (`time.process_time`) of one process, best of the repeats; the machine is "
         "shared, so expect +-20 %.", "",
         "## Conditioning + detection + beat extraction vs biosppy", "",
         f"{v['records']} ECG-ID records (raw lead I, 500 Hz, {v['samples']} samples). "
         "ecgstream: `BeatPipeline.push` over 0.25 s chunks plus `flush` (resampling "
         "500 -> 250 Hz, band-pass, detection, beat windows, SQI). biosppy: "
         "`biosppy.signals.ecg.ecg(show=False)` (filtering, Hamilton, R correction, "
         "templates, heart rate) on each whole record.", "",
         "| | CPU s | samples per CPU s |", "| --- | ---: | ---: |",
         f"| ecgstream | {v['ecgstream_cpu_s']:.2f} | {v['ecgstream_samples_per_cpu_s']:,.0f} |",
         f"| biosppy ecg.ecg | {v['biosppy_cpu_s']:.2f} | {v['biosppy_samples_per_cpu_s']:,.0f} |",
         "", f"Ratio: **{v['ratio']:.1f}x** biosppy (goal >= 10x).", "",
         "## Streams per core (500 Hz)", "",
         "| chunk | CPU s per s of stream | max streams per core |", "| --- | ---: | ---: |"]
    for p in r["per_stream"]:
        L.append(f"| {p['chunk_s']} s | {p['cpu_s_per_stream_s'] * 1e3:.3f} ms | "
                 f"{p['max_streams_per_core']:,.0f} |")
    L += ["", "Goal: >= 1,000 streams per core.", "",
          "Round-robin run: N pipelines, each fed one chunk per round (a different record "
          "and offset per stream), for the given seconds of stream each, as fast as possible. "
          "Real-time factor = seconds of stream / seconds it took (CPU and wall); above 1 "
          "means one core keeps up with all N streams.", "",
          "| streams | chunk | stream s each | CPU s | wall s | real-time factor (CPU) | (wall) |",
          "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for q in r["round_robin"]:
        L.append(f"| {q['streams']} | {q['chunk_s']} s | {q['seconds_per_stream']:g} | "
                 f"{q['cpu_s']:.1f} | {q['wall_s']:.1f} | {q['real_time_factor_cpu']:.2f} | "
                 f"{q['real_time_factor_wall']:.2f} |")
    m = r.get("memory")
    if not m:
        L += ["", "## Memory per pipeline", "", "Not measured in this run.", ""]
        return "\n".join(L)
    L += ["", "## Memory per pipeline", "",
          f"`tracemalloc` over {m['pipelines']} pipelines at 500 Hz: "
          f"{m['bytes_per_pipeline_new'] / 1024:.1f} KiB each when built, "
          f"{m['bytes_per_pipeline_steady'] / 1024:.1f} KiB each after 10 s of stream "
          "(history buffers full: conditioned signal and raw input kept for the "
          "search-back span and the beat window).", ""]
    return "\n".join(L)


if __name__ == "__main__":
    raise SystemExit(main())
