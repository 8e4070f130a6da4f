"""A flooding wearable beside a genuine one (issue 16, item 2): real Mosquitto, real daemon.

Run: ``python bench/bench_flood.py [--flood-s 20] [--after-s 30] [--chunk 5000] [--out docs/benchmarks/flood.json]``

What runs (all on 127.0.0.1):

* a Mosquitto started for the run (``tests/helpers_broker.py``);
* ``ecgstream run --source mqtt://.../ecgstream/+/ecg`` (a separate process,
  subject ``p01`` enrolled from ECG-ID Person_01 rec_1 through the CLI,
  ``operating_point = "eer"``), publishing to the same broker;
* **strap2**, the genuine wearer: Person_01 rec_2, rec_3 and rec_4 (60 s) at
  real time, 0.1 s JSON chunks (``tools/wearable_sim.py``);
* **strap1**, the flooder: valid JSON chunks of ``--chunk`` samples at a
  declared 500 Hz, published as fast as one client can for ``--flood-s``
  seconds, starting ``--flood-at`` seconds after strap2 began
  (``--chunk 20000`` is the issue's chunk; the daemon's cap refuses it, so the
  default is 5000, under the cap, to test the rate limit and the bound in
  samples);
* an :class:`~ecgstream.reader.AuthReader` on strap2 polled every 0.5 s.

Figures: the daemon's RSS (``/proc/<pid>/status``) before the flood and its
peak during and after; strap2's polls that read ``authenticated`` during the
flood and after it (polls from strap2's first ``authenticated`` on, so the
leads-on seconds do not count); the messages strap1 published and the
``input`` events the daemon sent for it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers_broker import Broker, Observer  # noqa: E402
from helpers_realparts import enrol_with_cli  # noqa: E402

from ecgstream.reader import AuthReader  # noqa: E402
from ecgstream.sources.mqtt_payload import encode_json  # noqa: E402
from ecgstream.sources.records import excerpt_dir, read_record  # noqa: E402
from tools.wearable_sim import MqttPlan, mqtt_messages, publish_mqtt  # noqa: E402

EXE = [sys.executable, "-m", "ecgstream"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def flood(host: str, port: int, seconds: float, chunk: int, stop: threading.Event,
          per_s: float = 0.0) -> int:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"flooder-{os.getpid()}")
    c.max_queued_messages_set(2000)
    c.connect(host, port)
    c.loop_start()
    rng = np.random.default_rng(0)
    payloads = [encode_json(rng.normal(0, 0.1, chunk), 500.0, 0) for _ in range(4)]
    sent = 0
    t_start = time.monotonic()
    t_end = t_start + seconds
    try:
        while time.monotonic() < t_end and not stop.is_set():
            seq = sent + 1
            p = payloads[sent % 4].replace(b'"seq":0', b'"seq":%d' % seq)
            info = c.publish("ecgstream/strap1/ecg", p, qos=0)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                time.sleep(0.001)
                continue
            sent += 1
            if per_s:  # paced flood: the was 12,000 chunks in 42 s (285/s)
                time.sleep(max(0.0, t_start + sent / per_s - time.monotonic()))
    finally:
        c.loop_stop()
        c.disconnect()
    return sent


def run(flood_at: float = 8.0, flood_s: float = 20.0, after_s: float = 30.0, chunk: int = 5000,
        workdir: Path | None = None, per_s: float = 0.0) -> dict:
    wd = Path(workdir or tempfile.mkdtemp(prefix="flood-"))
    store, key = enrol_with_cli(wd, excerpt_dir() / "Person_01" / "rec_1")
    cfg = wd / "d.toml"
    cfg.write_text('[decision]\noperating_point = "eer"\n[mqtt]\nkeepalive = 60\n')
    x = np.concatenate([read_record(excerpt_dir() / "Person_01" / r, 0)[0] for r in ("rec_2", "rec_3", "rec_4")])
    total = flood_at + flood_s + after_s
    x = x[: int(min(total + 2, x.size / 500.0) * 500)]
    with Broker(wd / "b") as b:
        p = subprocess.Popen([*EXE, "run", "--config", str(cfg), "--subject", "p01",
                              "--source", f"mqtt://{b.host}:{b.port}/ecgstream/+/ecg",
                              "--store", str(store), "--key-file", str(key),
                              "--mqtt-host", b.host, "--mqtt-port", str(b.port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        err_lines: list[str] = []
        threading.Thread(target=lambda: err_lines.extend(p.stderr), daemon=True).start()
        stop = threading.Event()
        res: dict = {"flood_messages_per_s": per_s or "as fast as possible", "chunk_samples": chunk, "flood_at_s": flood_at, "flood_s": flood_s, "after_s": after_s}
        try:
            obs = Observer(b, "ecgstream/strap1/events")  # not ecgstream/#: the flood would drown it
            obs2 = Observer(b, "ecgstream/strap2/#")
            with AuthReader(b.host, b.port, device="strap2") as reader:
                time.sleep(3.0)  # the daemon subscribes
                rss0 = rss_mb(p.pid)
                msgs = mqtt_messages(x, 500.0, "strap2", MqttPlan("json", chunk_s=0.1))
                genuine = threading.Thread(target=publish_mqtt, args=(b.host, b.port, msgs, 500.0),
                                           kwargs={"speed": 1.0, "stop": stop}, daemon=True)
                t0 = time.monotonic()
                genuine.start()
                sent = [0]
                flooder = threading.Thread(
                    target=lambda: (time.sleep(flood_at), sent.__setitem__(0, flood(b.host, b.port, flood_s,
                                                                                   chunk, stop, per_s))),
                    daemon=True)
                flooder.start()
                polls = {"before": [], "during": [], "after": []}
                rss_peak = {"during": rss0, "after": rss0}
                first_auth = None
                while time.monotonic() - t0 < total:
                    t = time.monotonic() - t0
                    ok = reader.authenticated()
                    if ok and first_auth is None:
                        first_auth = t
                    phase = "before" if t < flood_at else "during" if t < flood_at + flood_s else "after"
                    if first_auth is not None:
                        polls[phase].append(ok)
                    if phase != "before":
                        rss_peak[phase] = max(rss_peak[phase], rss_mb(p.pid))
                    time.sleep(0.5)
                stop.set()
                flooder.join(10)
            events = [json.loads(m.payload) for m in obs.on("ecgstream/strap1/events")]
            from collections import Counter

            why = Counter(json.loads(m.payload).get("reason") for m in obs2.on("ecgstream/strap2/auth")
                          if json.loads(m.payload).get("state") != "authenticated")
            live_why = Counter(r for m in obs2.on("ecgstream/strap2/liveness") for r in json.loads(m.payload)["reasons"])
            res["strap2_not_authenticated_reasons"] = dict(why.most_common(6))
            res["strap2_liveness_reasons"] = dict(live_why.most_common(6))
            for o in (obs, obs2):
                with contextlib.suppress(AttributeError):  # paho without a loop thread (dropped by the broker)
                    o.close()
            res.update({
                "rss_before_mb": round(rss0, 1), "rss_peak_during_mb": round(rss_peak["during"], 1),
                "rss_peak_after_mb": round(rss_peak["after"], 1),
                "rss_growth_mb": round(max(rss_peak.values()) - rss0, 1),
                "strap2_first_authenticated_s": first_auth,
                "strap2_polls": {k: f"{sum(v)}/{len(v)}" for k, v in polls.items()},
                "strap2_authenticated_share": {k: round(sum(v) / len(v), 3) if v else None for k, v in polls.items()},
                "strap1_messages_sent": sent[0],
                "strap1_input_events": len([e for e in events if e.get("what") == "input"]),
                "strap1_input_reasons": sorted({e.get("reason", "") for e in events if e.get("what") == "input"}),
                "daemon_warnings": [ln.strip()[:200] for ln in err_lines if "strap1" in ln][:5],
            })
        finally:
            stop.set()
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flood-at", type=float, default=8.0)
    ap.add_argument("--flood-s", type=float, default=20.0)
    ap.add_argument("--after-s", type=float, default=30.0)
    ap.add_argument("--chunk", type=int, default=5000)
    ap.add_argument("--per-s", type=float, default=0.0, help="flood messages a second (0: as fast as possible)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    res = run(a.flood_at, a.flood_s, a.after_s, a.chunk, per_s=a.per_s)
    res.update({"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count()})
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
