"""Live before accepted (issue 16, item 1): genuine first ``authenticated`` after leads on.

Run: ``python bench/bench_live_first_auth.py [--out docs/benchmarks/live_first_auth.json]``

For every ordered pair of records of one person in ``data/ecgid-excerpt``
(enrol on one, replay the other: 16 genuine pairs over 7 persons) and every
leads-on offset in ``--offsets`` (where in the replayed record the
electrodes touch), the real :class:`~ecgstream.daemon.loop.Daemon` (DSP,
int8 LiteRT embedding, matcher, decider, liveness, output) is fed the
record from that offset in 0.1 s chunks, paced on a simulated host clock
(each chunk arrives ``0.1 s`` after the one before; the daemon's clock and
the chunks' arrival times are that clock, so the liveness rate check runs
exactly as for a live wearable, without waiting 20 s of wall time per run).
The daemon's ticks run every 0.2 s of that clock, as in ``Daemon.run``.

Per run: the time from leads on (the first sample) to the first published
``authenticated`` state, the time liveness is first established (``live``),
and every ``authenticated`` state published while the payload's ``liveness``
is not ``live`` (the goal is 0). Runs that never authenticate within the
record (the operating point refuses the genuine person) are counted apart.
Each configuration named in ``--configs`` is measured (``establish_beats``
of ``[liveness]``; ``12`` is the old window, the least evidence the old
code waited for before ``live``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# ECGSTREAM_TREE: measure another checkout's package with this harness (the tree before issue 16).
sys.path.insert(0, os.environ.get("ECGSTREAM_TREE", str(ROOT)))

from ecgstream.core.settings import DecisionConfig, LivenessConfig  # noqa: E402
from ecgstream.core.types import SampleChunk  # noqa: E402
from ecgstream.daemon.loop import Daemon  # noqa: E402
from ecgstream.sources import open_source  # noqa: E402
from ecgstream.sources.records import excerpt_dir, read_record  # noqa: E402
from ecgstream.templates.enroll import EnrolError, enrol  # noqa: E402


class Recorder:
    """A publisher that keeps every auth and liveness payload with the simulated time."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.auth_list: list[tuple[float, dict]] = []
        self.live_list: list[tuple[float, dict]] = []
        self.auth_while_not_live = 0  # authenticated while the last liveness state was not live

    def start(self) -> None:
        pass

    def availability(self, device: str, online: bool) -> None:
        pass

    def auth(self, device: str, payload: dict, valid_until: float) -> None:
        self.auth_list.append((self.clock(), payload))
        if payload["state"] == "authenticated" and not (self.live_list and self.live_list[-1][1]["live"]):
            self.auth_while_not_live += 1

    def liveness(self, device: str, payload: dict, valid_until: float) -> None:
        self.live_list.append((self.clock(), payload))

    def event(self, device: str, payload: dict) -> None:
        pass

    def close(self) -> None:
        pass


def one_run(model, template, x: np.ndarray, fs: float, decision: DecisionConfig,
            liveness: LivenessConfig, chunk_s: float = 0.1) -> dict:
    now = [1000.0]
    clock = lambda: now[0]  # noqa: E731
    pub = Recorder(clock)
    d = Daemon([], model, {"p": template}, pub, default_subject="p", decision_cfg=decision,
               liveness_cfg=liveness, speed=1.0, clock=clock, wall=clock)
    n = int(round(chunk_s * fs))
    t0 = now[0]
    last_tick = t0
    for pos in range(0, x.size - n + 1, n):
        now[0] = t0 + (pos + n) / fs  # the chunk's last sample has just been taken
        d._process([SampleChunk("dev", fs, pos, x[pos:pos + n], arrival_s=now[0])])
        if now[0] - last_tick >= 0.2:
            d._tick(now[0])
            last_tick = now[0]
    first_auth = next((t - t0 for t, p in pub.auth_list if p["state"] == "authenticated"), None)
    first_live = next((t - t0 for t, p in pub.live_list if p["live"]), None)
    bad = sum(1 for _, p in pub.auth_list if p["state"] == "authenticated" and p.get("liveness") != "live")
    decided = next((t - t0 for t, p in pub.auth_list if p["state"] != "unknown"), None)
    n_auth = sum(1 for _, p in pub.auth_list if p["state"] == "authenticated")
    return {"authenticated_while_liveness_not_live": pub.auth_while_not_live,
            "first_authenticated_s": first_auth, "first_live_s": first_live, "first_decided_s": decided,
            "authenticated_without_liveness_live_field": bad, "authenticated_states": n_auth,
            "auth_states": len(pub.auth_list)}


def pct(v: list[float], q: float) -> float | None:
    return float(np.percentile(v, q)) if v else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--offsets", default="0,2,4,6", help="leads-on offsets into the record, seconds")
    ap.add_argument("--configs", default="6,12", help="establish_beats values to measure")
    ap.add_argument("--operating-points", default="eer,far_0.001")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from edge import EmbeddingModel

    model = EmbeddingModel()
    ex = excerpt_dir()
    persons = sorted(p for p in ex.iterdir() if p.is_dir())
    templates: dict[str, object] = {}
    pairs: list[tuple[Path, Path]] = []
    unenrollable: list[str] = []
    for p in persons:
        recs = sorted(r.with_suffix("") for r in p.glob("rec_*.hea"))
        for r in recs:
            try:
                res = enrol(open_source(f"wfdb:{r}?speed=max"), model, seconds=30.0)
            except EnrolError as exc:  # too few good beats: no template, the pair is skipped
                unenrollable.append(f"{r.parent.name}/{r.name}: {exc}")
                continue
            templates[str(r)] = res.template("p", model.model_id)
        pairs += [(a, b) for a, b in itertools.permutations(recs, 2) if str(a) in templates]
    offsets = [float(o) for o in args.offsets.split(",")]
    report: dict = {"tree": os.environ.get("ECGSTREAM_TREE", str(ROOT)), "pairs": len(pairs), "unenrollable": unenrollable, "offsets_s": offsets, "machine": platform.machine(),
                    "python": platform.python_version(), "runs": {}}
    for op in args.operating_points.split(","):
        for eb in (int(c) for c in args.configs.split(",")):
            try:
                live_cfg = LivenessConfig(establish_beats=eb, window_beats=max(12, eb))
            except TypeError:  # a tree before issue 16: no establish_beats
                live_cfg, eb = LivenessConfig(), 0
            rows = []
            for (a, b), off in itertools.product(pairs, offsets):
                x, fs, _ = read_record(b, 0)
                r = one_run(model, templates[str(a)], x[int(off * fs):], fs, DecisionConfig(operating_point=op),
                            live_cfg)
                rows.append({"enrol": f"{a.parent.name}/{a.name}", "replay": f"{b.parent.name}/{b.name}",
                             "offset_s": off, **r})
            fa = [r["first_authenticated_s"] for r in rows if r["first_authenticated_s"] is not None]
            fl = [r["first_live_s"] for r in rows if r["first_live_s"] is not None]
            fd = [r["first_decided_s"] for r in rows if r["first_decided_s"] is not None]
            key = f"{op}/establish_beats={eb}"
            summary = {
                "runs": len(rows), "runs_authenticated": len(fa),
                "first_authenticated_median_s": pct(fa, 50), "first_authenticated_p90_s": pct(fa, 90),
                "first_live_median_s": pct(fl, 50), "first_live_p90_s": pct(fl, 90),
                "first_decision_median_s": pct(fd, 50),
                "authenticated_payload_liveness_not_live": sum(r["authenticated_without_liveness_live_field"]
                                                               for r in rows),
                "authenticated_while_liveness_state_not_live": sum(r["authenticated_while_liveness_not_live"]
                                                                   for r in rows),
                "authenticated_states": sum(r["authenticated_states"] for r in rows),
            }
            report["runs"][key] = {"summary": summary, "rows": rows}
            print(key, json.dumps(summary), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
