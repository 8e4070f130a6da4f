"""Start-up against a baseline tree: cold start, ``check-config`` and peak RSS, interleaved.

Run: ``python bench/bench_startup.py [--base d8b9c1f] [--reps 9] [--out docs/benchmarks/startup.json]``

The baseline revision is checked out as a ``git worktree`` in a temporary
folder (removed at the end); the other tree is this checkout as it is on
disk. Every measure runs ``python -m ecgstream`` (this interpreter) with
``PYTHONPATH`` set to one tree, and each tree is first checked to import
its own ``ecgstream`` (the venv's editable install points elsewhere). Each
command runs *in* its tree: ``python -m`` puts the working directory before
``PYTHONPATH`` on ``sys.path``, so a run from the other tree's folder would
import that tree.
Runs alternate between the trees (A B, then B A, ...), so a change of load
on a shared machine falls on both alike; each figure is the median of
``--reps`` runs per tree (after one warm-up run each, not counted, that
compiles the trees' ``.pyc`` files, as an installed package has them:
``PYTHONDONTWRITEBYTECODE`` is removed from the children's environment, or
every start would compile every module again), and the ratio is this tree's median over the
baseline's.

* **cold start** ``synthetic:`` / ``wfdb:``: wall time from spawning
  ``ecgstream run --source ...`` to its first stdout line (written when the
  first chunk is processed), as ``bench_daemon.py`` measures it
  (:func:`bench_daemon.cold_start_once`); ``synthetic:`` stands for a live
  source (serial and MQTT sources do not import the WFDB reader), ``wfdb:``
  replays a shipped ECG-ID excerpt. The child's peak RSS (``ru_maxrss``)
  and CPU time up to then come with it.
* **check-config**: wall time, peak RSS and CPU of ``ecgstream
  check-config`` on the tree's own ``examples/ecgstream.toml``, to its exit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_daemon import cold_start_once  # noqa: E402 - bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
EXCERPT = Path("data") / "ecgid-excerpt" / "Person_01" / "rec_2"  # relative to a tree
MEASURES = ("cold_synthetic", "cold_wfdb", "check_config")


def _env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPATH": str(tree)}


def _imports_from(tree: Path) -> str:
    """The ``ecgstream`` package file that ``python`` imports with this tree's ``PYTHONPATH``, run in it."""
    out = subprocess.run([sys.executable, "-c", "import ecgstream; print(ecgstream.__file__)"],
                         env=_env(tree), capture_output=True, text=True, check=True, cwd=tree)
    f = out.stdout.strip()
    if not Path(f).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"PYTHONPATH={tree} imports {f}, not that tree")
    return f


def check_config_once(tree: Path) -> dict:
    """Wall time, peak RSS and CPU of ``ecgstream check-config`` on the tree's example config."""
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-m", "ecgstream", "check-config",
                          str(tree / "examples" / "ecgstream.toml")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(tree), cwd=tree)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"check-config exited {p.returncode} in {tree}")
    return {"s": wall, "rss_mb": ru.ru_maxrss / 1024.0, "cpu_s": ru.ru_utime + ru.ru_stime}


def measure(name: str, tree: Path, tmp: Path) -> dict:
    argv = [sys.executable, "-m", "ecgstream"]
    env = _env(tree)
    store, key = tmp / f"store-{tree.name}", tmp / "key"
    if name == "cold_synthetic":
        return cold_start_once(argv, "synthetic:?fs=500&seconds=30", store, key, env, cwd=tree)
    if name == "cold_wfdb":
        return cold_start_once(argv, f"wfdb:{tree / EXCERPT}", store, key, env, cwd=tree)
    return check_config_once(tree)


def _summary(runs: list[dict]) -> dict:
    return {f"{k}_median": round(statistics.median(r[k] for r in runs), 3 if k != "rss_mb" else 1)
            for k in ("s", "rss_mb", "cpu_s")} | {"s_all": [round(r["s"], 3) for r in runs]}


def render_md(m: dict) -> str:
    names = {"cold_synthetic": "cold start, `synthetic:` (live-like)",
             "cold_wfdb": "cold start, `wfdb:` replay",
             "check_config": "`check-config examples/ecgstream.toml`"}
    rows = []
    for k in MEASURES:
        a, b, r = m["base"]["results"][k], m["head"]["results"][k], m["ratios"][k]
        rows.append(f"| {names[k]} | {a['s_median']:.3f} s | {b['s_median']:.3f} s | **{r['s']:.2f}** "
                    f"| {a['cpu_s_median']:.3f} / {b['cpu_s_median']:.3f} s ({r['cpu_s']:.2f}) "
                    f"| {a['rss_mb_median']:.1f} / {b['rss_mb_median']:.1f} MB ({r['rss_mb']:.2f}) |")
    alls = "\n".join(f"- {names[k]}: baseline {m['base']['results'][k]['s_all']}, "
                     f"now {m['head']['results'][k]['s_all']}" for k in MEASURES)
    return f"""# Start-up against the tree before the change

Command: `{m['command']}`; machine: {m['machine']} (shared; load average at start
{m['load_average_at_start'][0]:.2f}, at the end {m['load_average_at_end'][0]:.2f}). Raw results: [startup.json](startup.json).
How each figure is measured is in the script's docstring.

Baseline: `{m['base']['rev']}` (a `git worktree`); now: `{m['head']['rev']}`{' plus uncommitted changes' if m['head']['dirty'] else ''}.
{m['reps']} runs per tree and measure, interleaved; medians; ratio = now / baseline.

| measure | baseline wall | now wall | ratio | CPU baseline / now (ratio) | peak RSS baseline / now (ratio) |
| --- | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

Every run's wall time:

{alls}
"""


def _rev(tree: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=tree, capture_output=True, text=True, check=True).stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="d8b9c1f", help="baseline revision (default d8b9c1f)")
    ap.add_argument("--reps", type=int, default=9, help="runs per tree and measure (default 9)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "startup.json"))
    ap.add_argument("--render", action="store_true", help="only rewrite the .md beside --out from its JSON")
    args = ap.parse_args()
    out = Path(args.out)
    if args.render:
        out.with_suffix(".md").write_text(render_md(json.loads(out.read_text())))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    base = tmp / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        trees = {"base": base, "head": ROOT}
        files = {k: _imports_from(t) for k, t in trees.items()}
        print("imports:", files, flush=True)
        subprocess.run([sys.executable, "-m", "ecgstream", "keygen", str(tmp / "key")], env=_env(ROOT),
                       check=True, capture_output=True)
        for name in MEASURES:  # warm-up, not counted: the fresh worktree compiles its .pyc files
            for t in trees.values():
                measure(name, t, tmp)
        load0 = os.getloadavg()
        runs: dict[str, dict[str, list[dict]]] = {k: {m: [] for m in MEASURES} for k in trees}
        for i in range(args.reps):
            order = ["base", "head"] if i % 2 == 0 else ["head", "base"]
            for name in MEASURES:
                for k in order:
                    runs[k][name].append(measure(name, trees[k], tmp))
            print(f"rep {i + 1}/{args.reps}: " + ", ".join(
                f"{n} {runs['base'][n][-1]['s']:.3f}/{runs['head'][n][-1]['s']:.3f}" for n in MEASURES), flush=True)
        res = {k: {"rev": _rev(t, "rev-parse", "--short", "HEAD"), "ecgstream": files[k],
                   "dirty": bool(_rev(t, "status", "--porcelain", "--untracked-files=no")),
                   "results": {n: _summary(runs[k][n]) for n in MEASURES}} for k, t in trees.items()}
        ratios = {n: {q: round(res["head"]["results"][n][f"{q}_median"] / res["base"]["results"][n][f"{q}_median"], 2)
                      for q in ("s", "cpu_s", "rss_mb")} for n in MEASURES}
        m = {"command": "python bench/bench_startup.py " + " ".join(sys.argv[1:]),
             "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
             "load_average_at_start": load0, "load_average_at_end": os.getloadavg(),
             "reps": args.reps, "base": res["base"], "head": res["head"], "ratios": ratios}
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    for n in MEASURES:
        b, h = m["base"]["results"][n], m["head"]["results"][n]
        print(f"{n}: baseline {b['s_median']:.3f} s, now {h['s_median']:.3f} s, ratio {ratios[n]['s']:.2f} "
              f"(CPU {ratios[n]['cpu_s']:.2f}, peak RSS {b['rss_mb_median']:.1f} -> {h['rss_mb_median']:.1f} MB)")
    out.write_text(json.dumps(m, indent=1) + "\n")
    out.with_suffix(".md").write_text(render_md(m))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
