"""Real parts for a daemon group on one machine: nats-server, daemon processes, wearables, an observer.

Used by ``tests/test_fleet_nats.py`` and ``bench/bench_fleet.py``; nothing
here is imported by the daemon. Every part is real: ``nats-server`` (the
Debian package, 2.9) started on free ports with its MQTT listener and the
partition mapping of ``ecgstream nats-config``; ``python -m ecgstream run``
processes; wearables from :mod:`tools.wearable_sim` over MQTT 3.1.1; an
MQTT observer that records every state message with its arrival time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecgstream.fleet.natsconf import nats_config
from tools.netwait import free_port, wait_for, wait_port  # noqa: F401 - re-exported to the fleet tests and bench

NATS_SERVER = shutil.which("nats-server") or next(
    (p for p in ("/usr/sbin/nats-server", "/usr/local/bin/nats-server") if os.path.exists(p)), None)

EXE = [sys.executable, "-m", "ecgstream"]


class NatsServer:
    """nats-server with JetStream, its MQTT listener and the partition mapping, on free ports."""

    def __init__(self, workdir: Path, partitions: int) -> None:
        if NATS_SERVER is None:
            raise FileNotFoundError("nats-server not installed (apt-get install -y nats-server)")
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.partitions = partitions
        self.host = "127.0.0.1"
        self.port = free_port()
        self.mqtt_port = free_port()
        self.conf = self.dir / "nats.conf"
        self.conf.write_text(nats_config(partitions, store_dir=str(self.dir / "js"), port=self.port,
                                         mqtt_port=self.mqtt_port, server_name=f"lab{self.mqtt_port}"))
        self.proc: subprocess.Popen | None = None

    def start(self) -> NatsServer:
        with open(self.dir / "nats.log", "ab") as log:
            self.proc = subprocess.Popen([NATS_SERVER, "-c", str(self.conf)], stdout=log, stderr=log)
        if not wait_port(self.mqtt_port, 15.0):
            self.stop()
            raise RuntimeError(f"nats-server did not open its MQTT port; see {self.dir / 'nats.log'}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GroupDaemon:
    """``python -m ecgstream run`` as a member of a group; its log goes to a file."""

    def __init__(self, workdir: Path, nats: NatsServer, member: str, store: tuple[Path, Path],
                 subject: str = "p01", group: str = "lab", extra_source: str = "") -> None:
        self.member = member
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = self.dir / f"{member}.toml"
        cfg.write_text(f'[mqtt]\nhost = "{nats.host}"\nport = {nats.mqtt_port}\nprotocol = "3.1.1"\n'
                       f'client_id = "{member}"\n')
        self.source = (f"mqtt://{nats.host}:{nats.mqtt_port}/ecgstream/+/ecg?partitions={nats.partitions}"
                       f"&group={group}&client_id={member}-in{extra_source}")
        self.log_path = self.dir / f"{member}.log"
        self.args = [*EXE, "-v", "run", "--config", str(cfg), "--source", self.source, "--subject", subject,
                     "--store", str(store[0]), "--key-file", str(store[1])]
        self.proc: subprocess.Popen | None = None

    def start(self) -> GroupDaemon:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=log)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> float:
        """SIGKILL; returns the wall time of the kill."""
        assert self.proc is not None
        t = time.time()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return t

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@dataclass
class Seen:
    """One message the observer received."""

    t: float  # wall time of arrival
    topic: str
    payload: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.payload)
        except ValueError:
            return None


class Observer:
    """An MQTT 3.1.1 subscriber to ``ecgstream/#`` keeping every message with its arrival time."""

    def __init__(self, host: str, port: int, topics: tuple[str, ...] = ("ecgstream/#",),
                 skip_ecg: bool = True) -> None:
        import paho.mqtt.client as mqtt

        self.msgs: list[Seen] = []
        self._lock = threading.Lock()
        self._sub = threading.Event()
        self.skip_ecg = skip_ecg
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"observer-{os.getpid()}-{id(self):x}",
                             protocol=mqtt.MQTTv311)
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self._sub.set()
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe([(t, 1) for t in topics])
        self.c.connect(host, port, 30)
        self.c.loop_start()
        self._sub.wait(10)

    def _on_message(self, c: Any, u: Any, msg: Any) -> None:
        if self.skip_ecg and msg.topic.endswith("/ecg"):
            return
        with self._lock:
            self.msgs.append(Seen(time.time(), msg.topic, bytes(msg.payload)))

    def snapshot(self) -> list[Seen]:
        with self._lock:
            return list(self.msgs)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def stale_authenticated(msgs: list[Seen], prefix: str = "ecgstream", skew_s: float = 0.0) -> list[tuple[Seen, str]]:
    """Every ``authenticated`` an observer received that it must not believe (docs/fleet.md, "stale").

    Stale is either (a) received after its own ``valid_until`` (plus
    ``skew_s``), or (b) received after the observer had already received
    ``offline`` on ``<prefix>/daemon/<served_by>/availability`` (and no
    ``online`` since) — the daemon that vouched for it was known dead.
    """
    daemon_state: dict[str, str] = {}
    out = []
    for m in msgs:
        lv = m.topic.split("/")
        if len(lv) == 4 and lv[0] == prefix and lv[1] == "daemon" and lv[3] == "availability":
            daemon_state[lv[2]] = m.payload.decode(errors="replace")
            continue
        if len(lv) == 3 and lv[2] == "auth":
            a = m.json()
            if not isinstance(a, dict) or a.get("state") != "authenticated":
                continue
            if m.t > float(a.get("valid_until", 0)) + skew_s:
                out.append((m, "received after its valid_until"))
            elif daemon_state.get(str(a.get("served_by"))) == "offline":
                out.append((m, f"received after daemon {a.get('served_by')} was announced offline"))
    return out


def genuine_signal(records: list[Path], seconds_each: float | None = None) -> tuple[np.ndarray, float]:
    """Records of one person played one after another (no loop within their total length)."""
    from tools.wearable_sim import load_signal

    parts, fs = [], None
    for r in records:
        x, f = load_signal(r, 0, seconds_each)
        fs = fs or f
        parts.append(x)
    assert fs is not None
    return np.concatenate(parts), float(fs)


class Wearables:
    """Many simulated wearables in one thread (``tools.wearable_sim.publish_mqtt``), real time."""

    def __init__(self, host: str, port: int, devices: list[str], x: np.ndarray, fs: float,
                 chunk_s: float = 0.1, qos: int = 0, fmt: str = "binary", offset_s: float = 0.0) -> None:
        from tools.wearable_sim import MqttPlan, mqtt_messages

        msgs = []
        for i, d in enumerate(devices):
            shift = int(round((i * offset_s) * fs)) % len(x) if offset_s else 0
            msgs.extend(mqtt_messages(np.roll(x, -shift), fs, d, MqttPlan(fmt=fmt, chunk_s=chunk_s)))
        msgs.sort(key=lambda m: m.start_sample + m.n)
        self.msgs = msgs
        self.host, self.port, self.fs, self.qos = host, port, fs, qos
        self.stop = threading.Event()
        self.sent = 0
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from tools.wearable_sim import publish_mqtt

        self.sent = publish_mqtt(self.host, self.port, self.msgs, self.fs, speed=1.0, qos=self.qos,
                                 stop=self.stop, client_id=f"wearables-{os.getpid()}-{id(self):x}")

    def start(self) -> Wearables:
        self._t.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self._t.join(15)
