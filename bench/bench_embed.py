"""Benchmark: microseconds per beat of the int8 LiteRT model vs the float Keras model.

Same beats (the committed ECG-ID excerpt, cut by ``ecgstream.dsp``), same
process, same run. Both paths include the input normalisation; LiteRT's also
validation, quantization and dequantization. Batch 1 is how the daemon embeds
a lone beat; batched is how it embeds beats of many devices together.

Usage::

    python bench/bench_embed.py [--n 1024] [--repeats 5] [--write docs/benchmarks/embed.md]

Needs TensorFlow (the ``[train]`` extra) for the Keras side; without it only
LiteRT is measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def excerpt_windows(n: int) -> np.ndarray:
    from ecgstream.api import beats_from_record
    from ecgstream.sources.records import excerpt_dir

    ws = [b.window for rec in sorted(excerpt_dir().glob("Person_*/rec_*.hea"))
          for b in beats_from_record(rec.with_suffix(""))]
    w = np.stack(ws)
    return np.resize(w, (n, w.shape[1])).astype(np.float32)


def time_per_beat(fn, x: np.ndarray, batch: int, repeats: int) -> float:
    """Median over repeats of microseconds per beat, embedding ``x`` in batches."""
    n = (x.shape[0] // batch) * batch
    fn(x[:batch])  # warm-up (allocation, tracing)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for a in range(0, n, batch):
            fn(x[a: a + batch])
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1024, help="beats per repeat (default 1024)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batches", default="1,16,64,256", help="batch sizes (default 1,16,64,256)")
    p.add_argument("--threads", default="1,2", help="LiteRT/TF thread counts (default 1,2)")
    p.add_argument("--write", help="also write the table as markdown to this file")
    a = p.parse_args(argv)
    from edge import EmbeddingModel
    from edge.preprocess import normalise_beats

    x = excerpt_windows(a.n)
    batches = [int(b) for b in a.batches.split(",")]
    threads = [int(t) for t in a.threads.split(",")]
    keras_model = None
    try:
        from train.model import keras, set_threads, tf

        keras_model = keras.models.load_model(ROOT / "edge" / "float" / "embedding.keras")
        tf_version = tf.__version__
    except ImportError:
        tf_version = None
    rows = []
    for th in threads:
        m = EmbeddingModel(num_threads=th)
        if keras_model is not None:
            set_threads(th)  # effective only for the first value (TF fixes it at start-up)

            @tf.function(reduce_retracing=True)
            def _call(z):
                return keras_model(z, training=False)

            def kfn(w):
                return _call(tf.constant(normalise_beats(w))).numpy()
        for b in batches:
            lite = time_per_beat(m.embed, x, b, a.repeats)
            flt = time_per_beat(kfn, x, b, a.repeats) if keras_model is not None else float("nan")
            rows.append((th, b, lite, flt))
            print(f"threads {th} batch {b:4d}: LiteRT int8 {lite:8.1f} us/beat   Keras float {flt:8.1f} us/beat"
                  f"   ratio float/int8 {flt / lite:5.2f}", flush=True)
    import ai_edge_litert

    lines = [
        "# Embedding speed: int8 LiteRT vs float Keras",
        "",
        f"`python bench/bench_embed.py --n {a.n} --repeats {a.repeats}` on {platform.platform()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; ai-edge-litert "
        f"{getattr(ai_edge_litert, '__version__', '?')}, TensorFlow {tf_version}; model "
        f"{EmbeddingModel().model_id}.",
        "",
        "Same beats (the ECG-ID excerpt, cut by `ecgstream.dsp`, repeated to "
        f"{a.n}) in the same process. Both include input normalisation; LiteRT also validation and "
        "(de)quantization. Microseconds per beat, median of the repeats. The machine is shared "
        "with other jobs: expect noise of tens of percent. TensorFlow's thread pool is fixed at "
        "its first use, so the Keras column uses the first thread count in every row.",
        "",
        "| threads | batch | LiteRT int8 (us/beat) | Keras float (us/beat) | float / int8 |",
        "|---|---|---|---|---|",
    ]
    for th, b, lite, flt in rows:
        lines.append(f"| {th} | {b} | {lite:.1f} | {flt:.1f} | {flt / lite:.2f} |")
    text = "\n".join(lines) + "\n"
    if a.write:
        Path(a.write).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
