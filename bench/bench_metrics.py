"""What ``/metrics`` costs: CPU at N streams, RSS and cold start, metrics on vs off in one run.

Run: ``python bench/bench_metrics.py [--streams 100] [--seconds 20] [--reps 3] [--cold-reps 7]``
(writes ``docs/benchmarks/metrics.json`` and ``metrics.md``).

* **CPU and RSS at N streams**: the harness of ``bench/bench_streams.py``
  (``bench/bench_daemon.py --one N``: a fresh process, N devices replaying real
  ECG-ID records at real time in 0.1 s chunks into a real ``Daemon`` with the
  LiteRT model, decisions, liveness, a publisher that serialises every
  payload). With metrics on, the child serves ``/metrics`` (every device
  labelled: ``max_device_labels`` = N) and scrapes it over HTTP every
  ``--scrape-s`` seconds (1 s: 15 times Prometheus's default rate, so the
  figure is pessimistic). Off and on alternate (off-on, on-off, ...) so that
  load from other work on a shared machine falls on both alike; each figure
  is the median over ``--reps`` runs, and the ratio is on / off.
* **cold start**: ``ecgstream run --source synthetic:...`` to its first stdout
  line (``bench_daemon.cold_start_once``), with and without ``--metrics 0``,
  alternating; the child's peak RSS (``ru_maxrss``) up to then comes with it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def _stream_run(n: int, seconds: float, data: Path, scrape_s: float) -> dict:
    cmd = [sys.executable, str(ROOT / "bench" / "bench_daemon.py"), "--one", str(n), "--seconds", str(seconds),
           "--data", str(data)]
    if scrape_s > 0:
        cmd += ["--metrics-scrape-s", str(scrape_s)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
    if p.returncode != 0:
        raise RuntimeError(f"N={n} metrics={scrape_s > 0} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _store(tmp: Path) -> tuple[Path, Path]:
    from ecgstream.sources.records import excerpt_dir

    exe = Path(sys.executable).with_name("ecgstream")
    key, store = tmp / "key", tmp / "store"
    subprocess.run([str(exe), "keygen", str(key)], check=True, capture_output=True)
    subprocess.run([str(exe), "enroll", "--subject", "p01", "--source",
                    f"wfdb:{excerpt_dir() / 'Person_01' / 'rec_1'}", "--store", str(store), "--key-file", str(key)],
                   check=True, capture_output=True)
    return store, key


def _med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def render(res: dict) -> str:
    s, c = res["summary"], res["cold_summary"]
    rows = "\n".join(
        f"| {r['rep']} | {'on' if r['metrics'] else 'off'} | {r['chunks_dropped']} | {r['cpu_share_of_one_core']:.3f} | "
        f"{r['rss_mb']:.1f} | {r['decision_latency_ms_p50']} | {r['decision_latency_ms_p99']} | "
        f"{r.get('scrapes', '-')} | {r.get('scrape_ms_p50', '-')} | {r.get('scrape_bytes', '-')} |"
        for r in res["runs"])
    crow = "\n".join(f"| {k} | {c[k]['s_median']:.3f} | {c[k]['rss_mb_median']:.1f} | {c[k]['cpu_s_median']:.3f} | "
                     f"{c[k]['s_all']} |" for k in ("off", "on"))
    n = res["streams"]
    return f"""# What `/metrics` costs

Command: `{res['command']}`; machine: {res['machine']}; load average at start {res['load_average_at_start']};
{res['date']}; tree `{res['tree']}`. Raw results: [metrics.json](metrics.json). How each figure is
measured: the docstring of `bench/bench_metrics.py`. The page it belongs to: [../metrics.md](../metrics.md).

## CPU and RSS at {n} streams, metrics off and on

{n} devices replaying real ECG-ID records at real time (0.1 s chunks of 500 Hz) for {res['seconds']} s into a
real `Daemon` (the harness of `bench/bench_streams.py`, a fresh process per run). "on": `/metrics`
served by `prometheus_client` with every device labelled ({n} device labels, {s['series_on']} series a
scrape) and scraped over HTTP every {res['scrape_s']} s by a thread of the same process (its CPU is
counted). Off and on alternate; medians over {res['reps']} runs each.

| | off | on | on / off |
| --- | ---: | ---: | ---: |
| CPU (share of one core) | {s['cpu_off']:.3f} | {s['cpu_on']:.3f} | **{s['cpu_ratio']:.3f}** |
| RSS at the end, MB | {s['rss_off']:.1f} | {s['rss_on']:.1f} | **{s['rss_ratio']:.3f}** (+{s['rss_on'] - s['rss_off']:.1f} MB) |
| decision latency p99, ms | {s['p99_off']} | {s['p99_on']} | {s['p99_ratio']:.2f} |
| chunks dropped (all runs) | {s['dropped_off']} | {s['dropped_on']} | |

One scrape of {s['scrape_bytes']:,} bytes took {s['scrape_ms_p50']} ms (median) while the daemon ran.

Every run:

| rep | metrics | chunks dropped | CPU (cores) | RSS MB | latency p50 ms | p99 ms | scrapes | scrape ms p50 | scrape bytes |
| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{rows}

## Cold start

`ecgstream run --source '{res['cold_source']}'` to its first stdout line, with and without
`--metrics 0` (any free loopback port), alternating, {res['cold_reps']} runs each; peak RSS and CPU of
the child up to that line.

| metrics | median s | peak RSS MB | CPU s | all s |
| --- | ---: | ---: | ---: | --- |
{crow}

Cold start on / off: **{c['ratio_s']:.3f}** (+{1000 * (c['on']['s_median'] - c['off']['s_median']):.0f} ms);
peak RSS on / off: **{c['ratio_rss']:.3f}**.

{res.get('note', '')}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scrape-s", type=float, default=1.0)
    ap.add_argument("--cold-reps", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "metrics.json")
    ap.add_argument("--render", action="store_true", help="only rewrite the .md beside --out from its JSON")
    args = ap.parse_args()
    if args.render:
        args.out.with_suffix(".md").write_text(render(json.loads(args.out.read_text())))
        return 0

    import bench_daemon

    from edge import EmbeddingModel

    tmp = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    data = tmp / "fleet.npz"
    bench_daemon._fleet_data(EmbeddingModel(), data)
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    res: dict = {"command": "python " + " ".join(sys.argv), "tree": rev + (" + uncommitted changes" if dirty else ""),
                 "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                 "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "streams": args.streams,
                 "seconds": args.seconds, "reps": args.reps, "scrape_s": args.scrape_s, "runs": []}
    for rep in range(args.reps):
        for on in ((False, True) if rep % 2 == 0 else (True, False)):
            r = _stream_run(args.streams, args.seconds, data, args.scrape_s if on else 0.0)
            r["rep"] = rep
            res["runs"].append(r)
            print(json.dumps(r), flush=True)
    off = [r for r in res["runs"] if not r["metrics"]]
    on = [r for r in res["runs"] if r["metrics"]]
    res["summary"] = {
        "cpu_off": _med(off, "cpu_share_of_one_core"), "cpu_on": _med(on, "cpu_share_of_one_core"),
        "rss_off": _med(off, "rss_mb"), "rss_on": _med(on, "rss_mb"),
        "p99_off": _med(off, "decision_latency_ms_p99"), "p99_on": _med(on, "decision_latency_ms_p99"),
        "dropped_off": sum(r["chunks_dropped"] for r in off), "dropped_on": sum(r["chunks_dropped"] for r in on),
        "scrape_bytes": int(_med(on, "scrape_bytes")), "scrape_ms_p50": _med(on, "scrape_ms_p50"),
        "series_on": int(_med(on, "scrape_series")),
    }
    s = res["summary"]
    s["cpu_ratio"] = s["cpu_on"] / s["cpu_off"]
    s["rss_ratio"] = s["rss_on"] / s["rss_off"]
    s["p99_ratio"] = s["p99_on"] / s["p99_off"]

    store, key = _store(tmp)
    exe = [str(Path(sys.executable).with_name("ecgstream"))]
    src = "synthetic:?fs=500&seconds=30"
    cold: dict[str, list[dict]] = {"off": [], "on": []}
    for i in range(args.cold_reps + 1):  # the first pair warms the caches, not counted
        for name in (("off", "on") if i % 2 == 0 else ("on", "off")):
            r = bench_daemon.cold_start_once(exe, src, store, key, extra=("--metrics", "0") if name == "on" else ())
            if i:
                cold[name].append(r)
    cs = {k: {"s_median": statistics.median(x["s"] for x in v), "rss_mb_median": statistics.median(x["rss_mb"] for x in v),
              "cpu_s_median": statistics.median(x["cpu_s"] for x in v), "s_all": [round(x["s"], 3) for x in v]}
          for k, v in cold.items()}
    cs["ratio_s"] = cs["on"]["s_median"] / cs["off"]["s_median"]
    cs["ratio_rss"] = cs["on"]["rss_mb_median"] / cs["off"]["rss_mb_median"]
    res.update(cold_summary=cs, cold_source=src, cold_reps=args.cold_reps)
    print(json.dumps(cs), flush=True)
    from _common import write_results

    write_results(args.out, res, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
