"""Concurrent 500 Hz streams through the full daemon path, this tree beside a baseline tree.

Issue 10's figures "concurrent 500 Hz streams, one core, full daemon path, 0.1 s
chunks, 0 dropped", "RSS with 100 / 1,000 streams, TensorFlow never imported" and
"decision latency p99 at 1,000 streams", with the tree before the fleet work as the
named baseline in the same run.

Each (tree, N) is one fresh process running this tree's ``bench/bench_daemon.py --one N``
(the same harness for both) on that tree's package (checked): N devices replay real ECG-ID records at real time from one thread in
0.1 s chunks (10 phases per period, not all at once) into a real ``Daemon``
(real LiteRT int8 model, a real template bound to every device, decisions,
liveness, a publisher that serialises every payload). Runs alternate baseline /
this tree for each N, so load from other work hits both alike.

Reported per run: chunks dropped (the daemon's queue overflowed: processing fell
behind real time), CPU share of one core, RSS at the end, decision latency (chunk
arrival to the auth publish of the beat it completed) p50 / p99. "Streams held"
is the largest N with 0 chunks dropped.

Usage::

    python bench/bench_streams.py --streams 100 250 500 1000 --seconds 30 --baseline 9021ab3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def _worktree(rev: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(where), rev], check=True)
    return where


def _one(tree: Path, n: int, seconds: float, data: Path, own_harness: bool = False) -> dict:
    # This tree's harness for both trees (only the package differs): ECGSTREAM_TREE.
    # A baseline older than the harness's needs (template cohort ids) runs its own.
    env = dict(os.environ, PYTHONPATH=str(tree), ECGSTREAM_TREE=str(tree))
    harness = (tree if own_harness else ROOT) / "bench" / "bench_daemon.py"
    p = subprocess.run([sys.executable, str(harness), "--one", str(n),
                        "--seconds", str(seconds), "--data", str(data)],
                       capture_output=True, text=True, env=env, cwd=str(tree))
    if p.returncode != 0:
        raise RuntimeError(f"{tree} N={n} failed:\n{p.stderr[-2000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["harness"] = str(harness.relative_to(harness.parents[1]))
    if "package" in r and Path(r["package"]).resolve() != (tree / "ecgstream").resolve():
        raise RuntimeError(f"measured {r['package']}, not {tree}")
    return r


def render(res: dict) -> str:
    rows = []
    by = {(r["tree"], r["streams"]): r for r in res["runs"]}
    for n in res["streams"]:
        for tree in ("baseline", "this"):
            r = by.get((tree, n))
            if r is None:
                continue
            rows.append(f"| {n} | {tree} | {r['chunks_dropped']} | {r['cpu_share_of_one_core']:.2f} | "
                        f"{r['rss_mb']:.1f} | {r['decision_latency_ms_p50']} | {r['decision_latency_ms_p99']} | "
                        f"{r['beats_embedded']} | {r.get('tensorflow_imported')} |")
    held = res["held"]
    return f"""# Concurrent streams through the full daemon path (issue 10)

Command: `{res['command']}`; machine: {res['machine']}; load average at start {res['load_average_at_start']};
{res['date']}. Baseline: the tree at `{res['baseline']}` (before the fleet DSP), run in the
same session, alternating with this tree (`{res['this']}`).

Each run: N devices replaying real ECG-ID records at real time (0.1 s chunks of 500 Hz)
for {res['seconds']} s into a real `Daemon` with the LiteRT int8 model, one template bound to
every device, decisions, liveness and a publisher that serialises every payload; a fresh
process per run (`bench/bench_daemon.py --one N`). "dropped": chunks the daemon's bounded
queue dropped because processing fell behind real time (goal 0). CPU: share of one core
used by the whole process (the replaying thread included). Latency: chunk arrival to the
auth publish of the beat it completed.

| streams | tree | chunks dropped | CPU (cores) | RSS MB | latency p50 ms | latency p99 ms | beats embedded | TensorFlow imported |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Streams held with 0 dropped (largest N tried): baseline **{held['baseline']}**, this tree **{held['this']}**.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[100, 250, 500, 1000])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--baseline", default="9021ab3", help="git revision of the baseline tree")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--baseline-own-harness", action="store_true",
                    help="run the baseline tree's own bench_daemon.py (a tree before issue 8's template format)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "streams.json")
    args = ap.parse_args()

    import bench_daemon

    from edge import EmbeddingModel

    tmp = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    data = tmp / "fleet.npz"
    bench_daemon._fleet_data(EmbeddingModel(), data)
    trees = {"this": ROOT}
    if not args.no_baseline:
        trees["baseline"] = _worktree(args.baseline, tmp / "baseline")
    this_rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    res = {"command": "python " + " ".join(sys.argv), "baseline": args.baseline,
           "this": this_rev + (" + uncommitted changes" if dirty else ""),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
           "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "seconds": args.seconds, "streams": args.streams, "runs": []}
    try:
        for n in args.streams:
            for name in ("baseline", "this"):
                if name not in trees:
                    continue
                r = _one(trees[name], n, args.seconds, data, own_harness=name == "baseline" and args.baseline_own_harness)
                r["tree"] = name
                res["runs"].append(r)
                print(json.dumps(r), flush=True)
    finally:
        if "baseline" in trees:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees["baseline"])])
    res["held"] = {name: max([r["streams"] for r in res["runs"] if r["tree"] == name and r["chunks_dropped"] == 0],
                             default=0) for name in trees}
    from _common import write_results

    write_results(args.out, res, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
