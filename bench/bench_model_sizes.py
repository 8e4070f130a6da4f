"""Benchmark: size and LiteRT microseconds per beat of each model size tried (issue 15, capacity).

Same beats (the committed ECG-ID excerpt), same process, same run, models
interleaved per repeat; the baseline is the previous shipped model, read out
of git (``train.scale_report.PREVIOUS``), and every ratio is against it.

Usage::

    python bench/bench_model_sizes.py edge/model.tflite runs/abl-small/model.tflite [--write docs/benchmarks/model_sizes.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help=".tflite files (their card, if any, is not needed)")
    p.add_argument("--n", type=int, default=1024, help="beats per repeat (default 1024)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--batches", default="1,64", help="batch sizes (default 1,64)")
    p.add_argument("--write", help="also write the table as markdown to this file")
    a = p.parse_args(argv)
    from bench.bench_embed import excerpt_windows
    from edge.preprocess import NORMALISATION
    from edge.runtime import LiteRTEmbedder
    from train.scale_report import PREVIOUS, previous_model

    x = excerpt_windows(a.n)
    tmp = Path(tempfile.mkdtemp(prefix="ecgstream-sizes-"))
    prev = previous_model(tmp)
    paths = ([("previous " + PREVIOUS[1], prev)] if prev else []) + [(str(m), Path(m)) for m in a.models]
    eps = float(NORMALISATION["eps_mv"])
    rts = {name: LiteRTEmbedder(path, eps_mv=eps, num_threads=1) for name, path in paths}
    batches = [int(b) for b in a.batches.split(",")]
    times: dict = {(n, b): [] for n in rts for b in batches}
    for rt in rts.values():
        rt.embed(x[:64])  # warm-up
    for _ in range(a.repeats):
        for b in batches:
            m = (x.shape[0] // b) * b
            for name, rt in rts.items():
                t0 = time.perf_counter()
                for s in range(0, m, b):
                    rt.embed(x[s:s + b])
                times[(name, b)].append((time.perf_counter() - t0) / m * 1e6)
    base = paths[0][0]
    lines = [f"{platform.machine()}, Python {platform.python_version()}, LiteRT int8, 1 thread, "
             f"{a.n} excerpt beats, median of {a.repeats} interleaved repeats; ratio against {base}.", "",
             "| model | .tflite bytes | " + " | ".join(f"us/beat, batch {b} (ratio)" for b in batches) + " |",
             "|---|---|" + "---|" * len(batches)]
    for name, path in paths:
        cells = []
        for b in batches:
            t, tb = statistics.median(times[(name, b)]), statistics.median(times[(base, b)])
            cells.append(f"{t:.1f} ({t / tb:.2f}x)")
        lines.append(f"| {name} | {path.stat().st_size:,} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.write:
        Path(a.write).write_text(f"# Model sizes: bytes and speed\n\n`python bench/bench_model_sizes.py "
                                 f"{' '.join(a.models)}`\n\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
