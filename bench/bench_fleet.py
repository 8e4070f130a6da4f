"""Daemon groups behind one nats-server: streams held per daemon count, and SIGKILL takeover.

    python bench/bench_fleet.py scale [--daemons 1 2 4] [--steps 50 100 150 ...] [--step-s 25]
    python bench/bench_fleet.py takeover [--daemons 2] [--devices 12] [--trials 3]
    python bench/bench_fleet.py overhead [--streams 50] [--seconds 20] [--repeats 2]

Both write their section of ``docs/benchmarks/fleet.json`` and re-render
``docs/benchmarks/fleet.md`` (``--no-save`` to only print). Real parts
throughout (``tools/fleet_lab.py``): nats-server 2.9 with the partition
mapping (16 partitions), ``python -m ecgstream run`` processes with a CLI-
enrolled store (Person_01 rec_2 of the ECG-ID excerpt), simulated wearables
(one publisher process playing Person_01 rec_4 + rec_3, each device at its
own offset, 500 Hz, 0.1 s binary chunks, QoS 0, real time).

scale
    For each daemon count N, a ramp of stream counts S; each step starts N
    fresh daemons, lets them settle, streams S wearables for ``--step-s``
    seconds and reads the outcome. A step is **held** when no daemon dropped a
    chunk from its queue ("processing falls behind" in its log), no daemon
    saw a ``seq`` gap (messages lost between broker and daemon: "message(s)
    lost"), nats-server reported no slow consumer, every device was served
    (an ``auth`` publish from its partition's owner in the last 5 s) and
    every device's ``auth`` kept coming at least every 2.5 s over the last
    10 s (the publish interval is 1 s; a daemon that falls behind stretches
    it). The ramp stops at the first step not held.
    streams(N) is the largest held S; efficiency = streams(N) / (N x streams(1)).
takeover
    N daemons, D genuine wearables; once every device is ``authenticated``,
    SIGKILL the daemon that serves the most devices. Per device of the dead
    daemon: seconds from the kill to its first ``authenticated``/``rejected``
    from its new owner. Stale ``authenticated`` (docs/fleet.md): received
    after its ``valid_until``, or after its serving daemon's ``offline`` --
    counted on a subscriber present throughout and on a late subscriber that
    connects 0.3 s after the kill (it gets the retained states), and the
    fail-closed reader polled every 0.1 s must not report such a device
    authenticated between the will and the new owner's decision.
overhead
    The CPU share of one plain daemon on Mosquitto and of one group daemon
    on nats-server with the same wearables, alternating: what the group
    machinery (and nats-server's MQTT delivery) adds per stream.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import ROOT, git_rev, machine

from ecgstream.fleet.partitions import assignment, partition_of
from tools.fleet_lab import (
    GroupDaemon,
    NatsServer,
    Observer,
    Wearables,
    genuine_signal,
    stale_authenticated,
    wait_for,
)

EX = ROOT / "data" / "ecgid-excerpt"
OUT = ROOT / "docs" / "benchmarks"
P = 16
TOPICS = ("ecgstream/+/auth", "ecgstream/daemon/+/availability", "ecgstream/fleet/#")


def _store(work: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers_realparts import enrol_with_cli

    return enrol_with_cli(work / "store", EX / "Person_01" / "rec_2")


def _cpu_s(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / 100.0
    except (OSError, IndexError, ValueError):
        return float("nan")


def _auth_times(msgs, since: float) -> dict[str, list[tuple[float, dict]]]:
    out: dict[str, list[tuple[float, dict]]] = {}
    for m in msgs:
        lv = m.topic.split("/")
        if m.t >= since and len(lv) == 3 and lv[2] == "auth" and isinstance(m.json(), dict):
            out.setdefault(lv[1], []).append((m.t, m.json()))
    return out


def _start_group(work: Path, n: NatsServer, members: list[str], store, obs: Observer) -> list[GroupDaemon]:
    ds = [GroupDaemon(work, n, m, store).start() for m in members]
    ok = wait_for(lambda: {m.topic.rsplit("/", 1)[1] for m in obs.snapshot()
                           if m.topic.startswith("ecgstream/fleet/lab/member/") and b'"online"' in m.payload}
                  >= set(members), 90)
    if not ok:
        raise RuntimeError("daemons did not join: " + ds[0].log()[-2000:])
    time.sleep(1.5)  # the first live sets settle in every member
    return ds


def scale_step(work: Path, store, x, fs, n_daemons: int, streams: int, step_s: float) -> dict:
    members = [f"s{n_daemons}x{streams}m{i}" for i in range(n_daemons)]
    devices = [f"w{i}" for i in range(streams)]
    owners = {d: m for m, parts in assignment(members, P).items() for d in devices if partition_of(d, P) in parts}
    with NatsServer(work / f"nats-{n_daemons}-{streams}", P) as n:
        obs = Observer(n.host, n.mqtt_port, topics=TOPICS)
        ds = _start_group(work / f"logs-{n_daemons}-{streams}", n, members, store, obs)
        cpu0 = [_cpu_s(d.proc.pid) for d in ds]
        nats0, me0 = _cpu_s(n.proc.pid), time.process_time()
        wear = Wearables(n.host, n.mqtt_port, devices, x[: int(fs * (step_s + 5))], fs,
                         offset_s=0.37).start()
        t0 = time.time()
        time.sleep(step_s)
        t_end = time.time()
        cpu1 = [_cpu_s(d.proc.pid) for d in ds]
        nats1, me1 = _cpu_s(n.proc.pid), time.process_time()
        load1 = round(os.getloadavg()[0], 2)
        wear.close()
        msgs = obs.snapshot()
        for d in ds:
            d.stop()
        obs.close()
        nats_log = (n.dir / "nats.log").read_text(errors="replace")
    logs = [d.log() for d in ds]
    dropped = sum(1 for lg in logs for _ in re.finditer(r"processing falls behind", lg))
    lost = sum(int(k) for lg in logs for k in re.findall(r": (\d+) message\(s\) lost", lg))
    slow = len(re.findall(r"[Ss]low [Cc]onsumer", nats_log))
    auths = _auth_times(msgs, t0)
    unserved = [d for d in devices if not any(t >= t_end - 5 and a.get("served_by") == owners[d]
                                              for t, a in auths.get(d, []))]
    worst_gap = 0.0
    for d in devices:
        ts = [t_end - 10] + [t for t, _ in auths.get(d, []) if t >= t_end - 10] + [t_end]
        worst_gap = max(worst_gap, max(b - a for a, b in zip(ts, ts[1:], strict=False)))
    per_daemon = {m: sum(1 for d in devices if owners[d] == m) for m in members}
    held = dropped == 0 and lost == 0 and slow == 0 and not unserved and worst_gap <= 2.5
    r = {"daemons": n_daemons, "streams": streams, "held": held, "queue_drop_warnings": dropped,
         "lost_messages": lost, "slow_consumer_reports": slow, "unserved_devices": len(unserved),
         "worst_auth_gap_s": round(worst_gap, 2), "streams_per_daemon": sorted(per_daemon.values()),
         "daemon_cpu_share": [round((b - a) / (t_end - t0), 2) for a, b in zip(cpu0, cpu1, strict=True)],
         "nats_cpu_share": round((nats1 - nats0) / (t_end - t0), 2),
         "wearables_and_observer_cpu_share": round((me1 - me0) / (t_end - t0), 2),
         "load_avg_1min_at_end": load1, "wearable_messages_sent": wear.sent}
    print(json.dumps(r), flush=True)
    return r


def cmd_scale(args, work: Path, store) -> dict:
    x, fs = genuine_signal([EX / "Person_01" / "rec_4", EX / "Person_01" / "rec_3"])
    rows, best = [], {}
    for n in args.daemons:
        best[n] = 0
        for s in args.steps:
            r = scale_step(work, store, x, fs, n, s, args.step_s)
            rows.append(r)
            if not r["held"]:
                break
            best[n] = s
    eff = {n: (round(best[n] / (n * best[1]), 2) if best.get(1) else None) for n in best}
    return {"command": "python bench/bench_fleet.py " + " ".join(sys.argv[1:]), "partitions": P,
            "step_s": args.step_s, "steps": rows, "streams_held": best, "efficiency": eff}


def takeover_trial(work: Path, store, x, fs, n_daemons: int, n_devices: int, trial: int) -> dict:
    members = [f"t{trial}m{i}" for i in range(n_daemons)]
    devices = [f"g{trial}x{i}" for i in range(n_devices)]
    owners = {d: m for m, parts in assignment(members, P).items() for d in devices if partition_of(d, P) in parts}
    victim = max(members, key=lambda m: sum(owners[d] == m for d in devices))
    theirs = [d for d in devices if owners[d] == victim]
    from ecgstream.reader import AuthReader

    samples: list[tuple[float, str, bool]] = []
    with NatsServer(work / f"nats-t{trial}", P) as n:
        obs = Observer(n.host, n.mqtt_port, topics=TOPICS)
        reader = AuthReader(n.host, n.mqtt_port, protocol="3.1.1", client_id=f"reader-{trial}").start()
        ds = dict(zip(members, _start_group(work / f"logs-t{trial}", n, members, store, obs), strict=True))
        wear = Wearables(n.host, n.mqtt_port, devices, x, fs, offset_s=0.5).start()
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                for d in theirs:
                    samples.append((time.time(), d, reader.authenticated(d)))
                stop.wait(0.1)

        threading.Thread(target=poll, daemon=True).start()
        late = None
        try:
            all_auth = wait_for(lambda: all(reader.authenticated(d) for d in theirs), 40)
            time.sleep(1.0)
            t_kill = ds[victim].kill()
            time.sleep(0.3)
            late = Observer(n.host, n.mqtt_port, topics=TOPICS)
            survivors = [m for m in members if m != victim]
            after = {d: m for m, parts in assignment(survivors, P).items() for d in theirs
                     if partition_of(d, P) in parts}

            def decided(d: str) -> float | None:
                return next((t - t_kill for t, a in _auth_times(obs.snapshot(), t_kill).get(d, [])
                             if a.get("served_by") == after[d] and a.get("state") in ("authenticated", "rejected")),
                            None)

            wait_for(lambda: all(decided(d) is not None for d in theirs), 30)
            took = {d: decided(d) for d in theirs}
            time.sleep(1.0)
        finally:
            stop.set()
            wear.close()
            for d in ds.values():
                if d.alive():
                    d.stop()
            reader.close()
            obs.close()
            if late is not None:
                late.close()
    msgs = obs.snapshot()
    t_off = min((m.t for m in msgs if m.topic == f"ecgstream/daemon/{victim}/availability"
                 and m.payload == b"offline"), default=None)
    reader_wrong = 0
    for d in theirs:
        until = t_kill + took[d] if took[d] is not None else float("inf")
        reader_wrong += sum(ok for t, dd, ok in samples if dd == d and t_off is not None and t_off + 0.3 <= t < until)
    states = [a["state"] for d in theirs for t, a in _auth_times(msgs, t_kill).get(d, []) if t < t_kill + (took[d] or 99)]
    r = {"trial": trial, "daemons": n_daemons, "devices": n_devices, "killed_devices": len(theirs),
         "all_killed_devices_authenticated_at_kill": all_auth,
         "will_s": round(t_off - t_kill, 3) if t_off else None,
         "decide_again_s": {d: (round(v, 2) if v is not None else None) for d, v in took.items()},
         "stale_authenticated": len(stale_authenticated(msgs)),
         "stale_authenticated_late_subscriber": len(stale_authenticated(late.snapshot())) if late else None,
         "reader_authenticated_after_will": reader_wrong,
         "states_between_kill_and_decision": sorted(set(states))}
    print(json.dumps(r), flush=True)
    return r


def cmd_takeover(args, work: Path, store) -> dict:
    x, fs = genuine_signal([EX / "Person_01" / f"rec_{k}" for k in (4, 3, 2, 1)])
    trials = [takeover_trial(work, store, x, fs, args.daemons, args.devices, k) for k in range(args.trials)]
    times = [v for t in trials for v in t["decide_again_s"].values()]
    ok = [v for v in times if v is not None]
    return {"command": "python bench/bench_fleet.py " + " ".join(sys.argv[1:]), "partitions": P,
            "trials": trials,
            "decide_again_s": {"n": len(times), "not_decided_within_30_s": len(times) - len(ok),
                               "median": round(statistics.median(ok), 2) if ok else None,
                               "max": round(max(ok), 2) if ok else None},
            "stale_authenticated_total": sum(t["stale_authenticated"] + (t["stale_authenticated_late_subscriber"] or 0)
                                             for t in trials),
            "reader_authenticated_after_will_total": sum(t["reader_authenticated_after_will"] for t in trials)}


def cmd_overhead(args, work: Path, store) -> dict:
    """One daemon, the same S wearables: plain on Mosquitto vs a group daemon on nats-server (CPU share)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import subprocess

    from helpers_broker import Broker

    x, fs = genuine_signal([EX / "Person_01" / "rec_4", EX / "Person_01" / "rec_3"])
    devices = [f"o{i}" for i in range(args.streams)]
    rows = []
    for rep in range(args.repeats):
        for mode in ("mosquitto", "nats-group"):
            d = work / f"ovh-{mode}-{rep}"
            d.mkdir(parents=True)
            if mode == "mosquitto":
                srv: object = Broker(d / "broker")
                srv.start()  # type: ignore[attr-defined]
                host, port = srv.host, srv.port  # type: ignore[attr-defined]
                cfg = d / "solo.toml"
                cfg.write_text(f'[mqtt]\nhost = "{host}"\nport = {port}\nclient_id = "solo"\n')
                with open(d / "log", "ab") as lg:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "ecgstream", "-v", "run", "--config", str(cfg), "--source",
                         f"mqtt://{host}:{port}/ecgstream/+/ecg", "--subject", "p01", "--store", str(store[0]),
                         "--key-file", str(store[1])], stdout=subprocess.DEVNULL, stderr=lg)
            else:
                srv = NatsServer(d / "nats", P).start()
                host, port = srv.host, srv.mqtt_port  # type: ignore[attr-defined]
                proc = GroupDaemon(d, srv, "solo", store).start().proc  # type: ignore[arg-type]
            time.sleep(6.0)  # model loaded, connected (and joined)
            wear = Wearables(host, port, devices, x[: int(fs * (args.seconds + 10))], fs, offset_s=0.37).start()
            time.sleep(3.0)
            c0, t0 = _cpu_s(proc.pid), time.time()
            time.sleep(args.seconds)
            c1, t1 = _cpu_s(proc.pid), time.time()
            wear.close()
            proc.terminate()
            proc.wait(30)
            srv.stop()  # type: ignore[attr-defined]
            rows.append({"mode": mode, "repeat": rep, "cpu_share": round((c1 - c0) / (t1 - t0), 3)})
            print(json.dumps(rows[-1]), flush=True)
    med = {m: round(statistics.median(r["cpu_share"] for r in rows if r["mode"] == m), 3)
           for m in ("mosquitto", "nats-group")}
    return {"command": "python bench/bench_fleet.py " + " ".join(sys.argv[1:]), "streams": args.streams,
            "seconds": args.seconds, "rows": rows, "median_cpu_share": med}


def _markdown(r: dict) -> str:
    lines = ["# Daemon groups behind one nats-server", "",
             "Produced by `bench/bench_fleet.py` (how each figure is measured: its docstring). "
             f"git {r.get('git')}. Machine: {r.get('machine')}.", "",
             "Topology and the definitions (held, stale) are in [../fleet.md](../fleet.md).", ""]
    s = r.get("scale")
    if s:
        lines += ["## Scale: N daemon processes, one nats-server", "", f"Command: `{s['command']}`; "
                  f"{s['partitions']} partitions, {s['step_s']} s per step, load average at start "
                  f"{s.get('load_avg')}.", "",
                  "| daemons | streams held (0 dropped) | efficiency streams(N) / (N x streams(1)) | goal |",
                  "| --- | --- | --- | --- |"]
        for n, v in s["streams_held"].items():
            lines.append(f"| {n} | {v} | {s['efficiency'][n]} | >= 0.8 |")
        lines += ["", "Every step:", "",
                  "| daemons | streams | held | queue drops | lost msgs | slow consumer | unserved | "
                  "worst auth gap s | streams per daemon | daemon CPU (share of a core) | nats-server CPU | "
                  "wearables + observer CPU | load avg |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for x in s["steps"]:
            lines.append(f"| {x['daemons']} | {x['streams']} | {'yes' if x['held'] else 'no'} | "
                         f"{x['queue_drop_warnings']} | {x['lost_messages']} | {x['slow_consumer_reports']} | "
                         f"{x['unserved_devices']} | {x['worst_auth_gap_s']} | {x['streams_per_daemon']} | "
                         f"{x['daemon_cpu_share']} | {x.get('nats_cpu_share')} | "
                         f"{x.get('wearables_and_observer_cpu_share')} | {x.get('load_avg_1min_at_end')} |")
        lines += ["", s.get("notes", ""), ""]
    t = r.get("takeover")
    if t:
        d = t["decide_again_s"]
        lines += ["## Takeover after SIGKILL", "", f"Command: `{t['command']}`; {t['partitions']} partitions.", "",
                  f"- time from SIGKILL to the dead daemon's devices deciding again (new owner's first "
                  f"`authenticated`/`rejected`): median **{d['median']} s**, max **{d['max']} s** over {d['n']} "
                  f"device takeovers ({d['not_decided_within_30_s']} not within 30 s); goal <= 10 s",
                  f"- stale `authenticated` received (subscriber throughout + late subscriber): "
                  f"**{t['stale_authenticated_total']}**; goal: never",
                  f"- fail-closed reader answering `authenticated` for a dead daemon's device after its will: "
                  f"**{t['reader_authenticated_after_will_total']}** polls", "",
                  "| trial | devices | of the killed daemon | will after kill s | decide again s (per device) | "
                  "stale | stale (late sub) | states in between |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for x in t["trials"]:
            lines.append(f"| {x['trial']} | {x['devices']} | {x['killed_devices']} | {x['will_s']} | "
                         f"{sorted(v for v in x['decide_again_s'].values() if v is not None)} | "
                         f"{x['stale_authenticated']} | {x['stale_authenticated_late_subscriber']} | "
                         f"{', '.join(x['states_between_kill_and_decision'])} |")
        lines += ["", t.get("notes", ""), ""]
    o = r.get("overhead")
    if o:
        m = o["median_cpu_share"]
        lines += ["## What a group daemon costs beside a plain one", "", f"Command: `{o['command']}`: one daemon, "
                  f"{o['streams']} wearables, CPU over {o['seconds']} s, alternating runs.", "",
                  f"- plain daemon on Mosquitto (`mqtt://.../ecgstream/+/ecg`): median **{m['mosquitto']}** of a core",
                  f"- group daemon on nats-server (`?partitions=16`, membership, `served_by`): median "
                  f"**{m['nats-group']}** of a core", "",
                  "Runs: " + ", ".join(f"{x['mode']} {x['cpu_share']}" for x in o["rows"]) + ".", "",
                  o.get("notes", ""), ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scale")
    s.add_argument("--daemons", type=int, nargs="+", default=[1, 2, 4])
    s.add_argument("--steps", type=int, nargs="+", default=[50, 100, 150, 200, 250, 300, 350, 400])
    s.add_argument("--step-s", type=float, default=25.0)
    t = sub.add_parser("takeover")
    t.add_argument("--daemons", type=int, default=2)
    t.add_argument("--devices", type=int, default=12)
    t.add_argument("--trials", type=int, default=3)
    o = sub.add_parser("overhead")
    o.add_argument("--streams", type=int, default=50)
    o.add_argument("--seconds", type=float, default=20.0)
    o.add_argument("--repeats", type=int, default=2)
    for p in (s, t, o):
        p.add_argument("--no-save", action="store_true")
        p.add_argument("--notes", default="", help="a paragraph for the page (what the machine was doing)")
    args = ap.parse_args(argv)
    import signal

    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop nats-server and the daemons
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        store = _store(work)
        load = [round(v, 2) for v in os.getloadavg()]
        res = {"scale": cmd_scale, "takeover": cmd_takeover, "overhead": cmd_overhead}[args.cmd](args, work, store)
    res["load_avg"] = load
    res["notes"] = args.notes
    print(json.dumps(res, indent=1))
    if not args.no_save:
        path = OUT / "fleet.json"
        all_r = json.loads(path.read_text()) if path.exists() else {}
        all_r.update({args.cmd: res, "git": git_rev(), "machine": machine()})
        path.write_text(json.dumps(all_r, indent=1) + "\n")
        (OUT / "fleet.md").write_text(_markdown(all_r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
