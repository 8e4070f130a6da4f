"""Soak test (issue 5, item 7): many simulated wearables through the Daemon for a long
simulated time, as fast as the daemon takes them; memory growth and drops.

Run::

    python bench/soak.py --streams 1000 --minutes 60 --out docs/benchmarks/soak.json
    python bench/soak.py --measure            # a short run to measure samples/s first

What is run and measured:

* **streams**: N devices (``dev0000``..), each replaying real ECG-ID records
  (raw lead I, 500 Hz, :func:`ecgstream.sources.records.ecgid_records`,
  :func:`ecgstream.sources.records.read_record`). Each device walks through a list of
  ``--records`` records starting at its own record and its own sample
  offset, one record after the other, marking a gap at each switch (a
  replay jump). With 20 s records and 40 records a device's signal repeats
  only after 13 simulated minutes, longer than liveness's 5-minute loop
  window, so the loop check does not turn every stream into "replayed".
* **pace**: no pacing at real time. One feeder thread produces
  ``--chunk-s`` seconds of signal for every device in turn (lock-step
  simulated time) and waits while the daemon's bounded queue is more than
  half full or holds more than two chunks per device (back-pressure): the daemon runs as fast as it can. The daemon
  runs with ``speed=None`` (as fast as possible: the rate check of
  liveness is off), the real LiteRT int8 model, a real template (Person_01
  rec_1 enrolled) bound to every device, real decision and liveness, and a
  publisher that serialises every payload to JSON and counts it.
* **RSS**: VmRSS of this process from ``/proc/self/status`` at every
  simulated minute (sampled by the feeder). Growth is reported from the end
  of warm-up (``--warmup-min``, default 5 simulated minutes, when every
  per-device buffer, including the 5-minute loop history, has filled) to
  the end.
* **drops**: chunks and samples the daemon dropped because its queue
  (``--queue`` chunks) was full; the goal is none (the feeder's
  back-pressure keeps the queue below the limit, so a drop means the limit
  itself was hit).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
from _common import machine_info, rss_mb  # noqa: E402 - bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class CountingPublisher:
    """Serialises every payload to JSON (as the stdout publisher would) and counts."""

    def __init__(self) -> None:
        self.n = 0
        self.bytes = 0
        self.states: dict[str, int] = {}

    def start(self) -> None:
        pass

    def availability(self, device: str, online: bool) -> None:
        self.n += 1

    def auth(self, device: str, payload: dict, valid_until: float) -> None:
        self.n += 1
        self.bytes += len(json.dumps(payload))
        s = payload["state"]
        self.states[s] = self.states.get(s, 0) + 1

    def liveness(self, device: str, payload: dict, valid_until: float) -> None:
        self.n += 1
        self.bytes += len(json.dumps(payload))

    def event(self, device: str, payload: dict) -> None:
        self.n += 1

    def close(self) -> None:
        pass


class Fleet:
    """N devices replaying real records in lock-step simulated time, with back-pressure."""

    def __init__(self, n: int, records: list[np.ndarray], fs: float, chunk_s: float,
                 minutes: float, queue_max: int) -> None:
        from ecgstream.sources.base import SourceStats

        self.uri = f"fleet:{n}"
        self.n = n
        self.records = records
        self.fs = fs
        self.chunk = round(chunk_s * fs)
        self.ticks = round(minutes * 60.0 * fs / self.chunk)
        self.queue_max = queue_max
        self.stats = SourceStats()
        self.daemon = None  # set after the Daemon is built (queue occupancy)
        self.rss: list[tuple[float, float, float]] = []  # (sim minute, wall s, RSS MB)
        self.waits_s = 0.0
        self.sim_s = 0.0
        self.wall_t0 = 0.0
        self.done = threading.Event()

    def run(self, sink, stop) -> None:
        from ecgstream.core.types import SampleChunk

        n_rec = len(self.records)
        rec = [i % n_rec for i in range(self.n)]
        pos = [(i * 977) % self.records[i % n_rec].size for i in range(self.n)]
        index = [0] * self.n
        gap = [False] * self.n
        per_min = round(60.0 * self.fs / self.chunk)
        q = self.daemon.queue
        high = min(self.queue_max // 2, max(2 * self.n, 100))
        self.wall_t0 = time.monotonic()
        self.rss.append((0.0, 0.0, rss_mb()))
        for k in range(self.ticks):
            if stop.is_set():
                break
            for i in range(self.n):
                need = self.chunk
                while need > 0:
                    x = self.records[rec[i]]
                    take = min(need, x.size - pos[i])
                    while q.qsize() > high:
                        t = time.monotonic()
                        time.sleep(0.002)
                        self.waits_s += time.monotonic() - t
                    sink(SampleChunk(f"dev{i:04d}", self.fs, index[i], x[pos[i]:pos[i] + take],
                                     arrival_s=time.monotonic(), gap_before=gap[i]))
                    gap[i] = False
                    index[i] += take
                    pos[i] += take
                    need -= take
                    self.stats.chunks += 1
                    self.stats.samples += take
                    if pos[i] >= x.size:  # next record: a replay jump, marked as a gap
                        rec[i] = (rec[i] + 1) % n_rec
                        pos[i] = 0
                        gap[i] = True
            self.sim_s = (k + 1) * self.chunk / self.fs
            if (k + 1) % per_min == 0:
                self.rss.append(((k + 1) / per_min, time.monotonic() - self.wall_t0, rss_mb()))
                m = self.rss[-1]
                print(f"  sim {m[0]:5.1f} min  wall {m[1]:7.1f} s  RSS {m[2]:7.1f} MB  "
                      f"dropped {self.daemon.stats.chunks_dropped}", file=sys.stderr, flush=True)
        self.done.set()


def load_records(count: int) -> tuple[list[np.ndarray], float, list[str]]:
    """Raw lead I of ``count`` ECG-ID records spread over the persons (500 Hz, mV)."""
    from ecgstream.sources.records import ecgid_records, read_record

    recs = ecgid_records()
    step = max(1, len(recs) // count)
    chosen = recs[::step][:count]
    out, names, fs0 = [], [], None
    for r in chosen:
        x, fs, _ = read_record(r.path, 0)
        fs0 = fs0 or fs
        if fs != fs0:
            continue
        out.append(np.ascontiguousarray(x, dtype=np.float64))
        names.append(f"Person_{r.person:02d}/rec_{r.record}")
    return out, float(fs0), names


def make_template(model):
    from ecgstream.cli.commands import excerpt_record
    from ecgstream.sources import open_source
    from ecgstream.templates.enroll import enrol

    path = excerpt_record(1, 1)
    res = enrol(open_source(f"wfdb:{path}?speed=max"), model, seconds=15.0, min_beats=10)
    return {"p01": res.template("p01", model.model_id, str(path))}


def soak(streams: int, minutes: float, chunk_s: float, queue: int, warmup_min: float,
         n_records: int, model_threads: int) -> dict:
    from ecgstream.daemon.loop import Daemon
    from edge import EmbeddingModel

    model = EmbeddingModel(num_threads=model_threads)
    templates = make_template(model)
    records, fs, names = load_records(n_records)
    pub = CountingPublisher()
    fleet = Fleet(streams, records, fs, chunk_s, minutes, queue)
    d = Daemon([fleet], model, templates, pub, default_subject="p01", speed=None,
               queue_max_chunks=queue, publish_interval_s=1.0)
    fleet.daemon = d
    cpu0 = time.process_time()
    w0 = time.monotonic()
    code = d.run(threading.Event())
    wall = time.monotonic() - w0
    cpu = time.process_time() - cpu0
    st = d.stats
    rss = fleet.rss
    warm = [r for r in rss if r[0] >= warmup_min]
    growth = None
    if len(warm) >= 2:
        growth = (warm[-1][2] - warm[0][2]) / warm[0][2] * 100.0
    sim_s = fleet.sim_s
    return {
        "exit_code": code,
        "streams": streams,
        "simulated_minutes_per_stream": round(sim_s / 60.0, 3),
        "simulated_stream_hours_total": round(streams * sim_s / 3600.0, 2),
        "chunk_s": chunk_s,
        "fs_hz": fs,
        "records": names,
        "queue_max_chunks": queue,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "speedup_vs_real_time_per_stream": round(sim_s / wall, 3) if wall else None,
        "samples": st.samples,
        "samples_per_s_wall": round(st.samples / wall) if wall else None,
        "chunks": st.chunks,
        "chunks_dropped": st.chunks_dropped,
        "samples_dropped": st.samples_dropped,
        "bad_chunks": st.bad_chunks,
        "feeder_backpressure_wait_s": round(fleet.waits_s, 1),
        "beats": st.beats,
        "beats_good": st.beats_good,
        "beats_embedded": st.beats_embedded,
        "decisions_published": st.auth_published,
        "auth_states_published": pub.states,
        "liveness_published": st.liveness_published,
        "events_published": st.events_published,
        "devices_with_a_decision": len(st.first_decision_s),
        "rss_mb_samples": [[round(m, 2), round(w, 1), round(r, 1)] for m, w, r in rss],
        "warmup_min": warmup_min,
        "rss_mb_after_warmup": round(warm[0][2], 1) if warm else None,
        "rss_mb_end": round(rss[-1][2], 1),
        "rss_growth_pct_after_warmup": round(growth, 2) if growth is not None else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=60.0, help="simulated minutes per stream")
    ap.add_argument("--chunk-s", type=float, default=0.5, help="seconds of signal per chunk")
    ap.add_argument("--queue", type=int, default=10_000, help="daemon queue bound (chunks)")
    ap.add_argument("--warmup-min", type=float, default=5.0)
    ap.add_argument("--records", type=int, default=40, help="distinct ECG-ID records replayed")
    ap.add_argument("--model-threads", type=int, default=1)
    ap.add_argument("--measure", action="store_true", help="short run: 100 streams x 1 minute")
    ap.add_argument("--note", default="", help="free text stored with the result")
    ap.add_argument("--out", help="write the result as JSON here")
    args = ap.parse_args(argv)
    if args.measure:
        args.streams, args.minutes, args.warmup_min = 100, 1.0, 0.0
    cmd = "python bench/soak.py " + " ".join(argv if argv is not None else sys.argv[1:])
    info = machine_info()
    res = soak(args.streams, args.minutes, args.chunk_s, args.queue, args.warmup_min,
               args.records, args.model_threads)
    res = {"command": cmd, "machine": info, "note": args.note, **res}
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0 if res["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
