"""A daemon group behind a real nats-server: mapping, join, SIGKILL takeover, per-device availability.

Real parts only: ``nats-server`` (started on free ports with JetStream, its
MQTT listener and the mapping ``ecgstream nats-config`` writes), real
``python -m ecgstream run`` processes with an encrypted store enrolled
through the CLI, simulated wearables publishing MQTT 3.1.1 at real time
(``tools/wearable_sim.py``), an observer and the fail-closed reader
(:class:`ecgstream.reader.AuthReader`). Skipped only when nats-server is
not installed (``apt-get install -y nats-server``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ecgstream.fleet.partitions import assignment, partition_of
from ecgstream.reader import AuthReader
from tools.fleet_lab import (
    NATS_SERVER,
    GroupDaemon,
    NatsServer,
    Observer,
    Wearables,
    genuine_signal,
    stale_authenticated,
    wait_for,
)

pytestmark = pytest.mark.skipif(NATS_SERVER is None, reason="nats-server not installed "
                                "(apt-get install -y nats-server)")

EX = Path(__file__).resolve().parents[1] / "data" / "ecgid-excerpt"
P = 8


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from helpers_realparts import enrol_with_cli

    return enrol_with_cli(tmp_path_factory.mktemp("store"), EX / "Person_01" / "rec_2")


def test_nats_server_maps_devices_to_our_partitions(tmp_path):
    """nats-server's ``partition(P,1)`` is ``partition_of`` for QoS 0 and 1 publishes; nothing on the old topic."""
    import paho.mqtt.client as mqtt

    devices = [f"strap-{i}" for i in range(30)] + ["A", "x_y", "Ünï"]
    with NatsServer(tmp_path / "nats", P) as n:
        obs = Observer(n.host, n.mqtt_port, topics=("ecgstream/p/+/+/ecg", "ecgstream/+/ecg"), skip_ecg=False)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="mapper", protocol=mqtt.MQTTv311)
        c.connect(n.host, n.mqtt_port, 30)
        c.loop_start()
        try:
            for qos in (0, 1):
                for d in devices:
                    c.publish(f"ecgstream/{d}/ecg", f"{qos}".encode(), qos=qos).wait_for_publish(5)
            assert wait_for(lambda: len(obs.snapshot()) >= 2 * len(devices), 10)
            time.sleep(0.3)
        finally:
            c.disconnect()
            c.loop_stop()
            obs.close()
        got = obs.snapshot()
    assert len(got) == 2 * len(devices)
    for m in got:
        lv = m.topic.split("/")
        assert lv[1] == "p", m.topic  # nothing arrives on ecgstream/<device>/ecg any more
        assert int(lv[2]) == partition_of(lv[3], P), m.topic
    assert {(m.topic.split("/")[3], m.payload) for m in got} == {(d, q) for d in devices for q in (b"0", b"1")}


def _devices_for(members: list[str], per_member: int) -> list[str]:
    a = assignment(members, P)
    out: list[str] = []
    for m in members:
        out += [d for d in (f"dev{i}" for i in range(500)) if partition_of(d, P) in a[m]][:per_member]
    return out


def _auths(obs: Observer, since: float = 0.0) -> list[tuple[float, str, dict]]:
    out = []
    for m in obs.snapshot():
        lv = m.topic.split("/")
        if m.t >= since and len(lv) == 3 and lv[2] == "auth" and isinstance(m.json(), dict):
            out.append((m.t, lv[1], m.json()))
    return out


def _decided_by(obs: Observer, dev: str, member: str, since: float = 0.0) -> float | None:
    for t, d, a in _auths(obs, since):
        if d == dev and a.get("served_by") == member and a.get("state") in ("authenticated", "rejected"):
            return t
    return None


def test_group_join_then_sigkill_takeover(tmp_path, store):
    """Two daemons share the devices; a third joins and takes its share; SIGKILL of one mid-authentication:
    its devices go ``offline``/``unknown`` at once, another daemon decides them again within 10 s, the
    fail-closed reader never calls them authenticated on the dead daemon's word, and no subscriber
    receives a stale ``authenticated``."""
    three = ["d0", "d1", "d2"]
    devices = _devices_for(three, 2)
    owner3 = {d: m for m, parts in assignment(three, P).items() for d in devices if partition_of(d, P) in parts}
    x, fs = genuine_signal([EX / "Person_01" / "rec_4", EX / "Person_01" / "rec_3"])
    samples: list[tuple[float, str, bool]] = []
    with NatsServer(tmp_path / "nats", P) as n:
        obs = Observer(n.host, n.mqtt_port)
        reader = AuthReader(n.host, n.mqtt_port, protocol="3.1.1", client_id="fail-closed-reader").start()
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                for d in devices:
                    samples.append((time.time(), d, reader.authenticated(d)))
                stop.wait(0.1)

        poller = threading.Thread(target=poll, daemon=True)
        ds = {m: GroupDaemon(tmp_path, n, m, store) for m in three}
        wear = None
        try:
            poller.start()
            ds["d0"].start()
            ds["d1"].start()
            assert wait_for(lambda: sum(m.topic.startswith("ecgstream/fleet/lab/member/") and b'"online"' in m.payload
                                        for m in obs.snapshot()) >= 4, 60), ds["d0"].log()[-3000:]
            wear = Wearables(n.host, n.mqtt_port, devices, x, fs).start()
            two = assignment(["d0", "d1"], P)
            owner2 = {d: m for m, parts in two.items() for d in devices if partition_of(d, P) in parts}
            assert wait_for(lambda: all(_decided_by(obs, d, owner2[d]) for d in devices), 30), \
                (_auths(obs)[-12:], ds["d0"].log()[-2000:])

            # a third daemon joins and takes its share
            t_join = time.time()
            ds["d2"].start()
            moved = [d for d in devices if owner3[d] == "d2"]
            assert moved
            assert wait_for(lambda: all(_decided_by(obs, d, "d2", t_join) for d in moved), 30), \
                (_auths(obs, t_join)[-12:], ds["d2"].log()[-2000:])
            for d in moved:  # the old owner handed it over with an explicit unknown
                assert any(a.get("served_by") == owner2[d] and a["state"] == "unknown"
                           and "moved to daemon d2" in (a.get("reason") or "") for _, dd, a in _auths(obs, t_join)
                           if dd == d), d

            # SIGKILL one daemon while its devices are authenticated
            victim = next(m for m in ("d0", "d1") if any(owner3[d] == m for d in devices))
            theirs = [d for d in devices if owner3[d] == victim]
            assert wait_for(lambda: all(reader.authenticated(d) for d in theirs), 15)
            t_kill = ds[victim].kill()
            survivors = [m for m in three if m != victim]
            owner_after = {d: m for m, parts in assignment(survivors, P).items() for d in theirs
                           if partition_of(d, P) in parts}
            assert wait_for(lambda: all(_decided_by(obs, d, owner_after[d], t_kill) for d in theirs), 10.0), \
                (_auths(obs, t_kill)[-12:], ds[owner_after[theirs[0]]].log()[-3000:])
            took = {d: _decided_by(obs, d, owner_after[d], t_kill) - t_kill for d in theirs}
            assert max(took.values()) <= 10.0, took
            time.sleep(1.0)
        finally:
            stop.set()
            if wear is not None:
                wear.close()
            for d in ds.values():
                if d.alive():
                    d.stop()
            reader.close()
            obs.close()
    msgs = obs.snapshot()
    assert stale_authenticated(msgs) == []
    # per device: the dead daemon's will, then offline + unknown for each of its devices at once
    t_off = min(m.t for m in msgs if m.topic == f"ecgstream/daemon/{victim}/availability" and m.payload == b"offline")
    assert t_off - t_kill < 5.0
    for d in theirs:
        assert any(m.t >= t_kill and m.payload == b"offline" for m in msgs if m.topic == f"ecgstream/{d}/availability"), d
        assert any(a["state"] == "unknown" and f"daemon {victim} gone" in (a.get("reason") or "")
                   for _, dd, a in _auths(obs, t_kill) if dd == d), d
        # the fail-closed reader: not authenticated from the will until the new owner decides
        until = _decided_by(obs, d, owner_after[d], t_kill)
        # Both ends 0.3 s inside: the reader and the observer are two subscribers, and under load
        # the reader may get the new owner's decision a little before the observer stamps it.
        window = [ok for t, dd, ok in samples if dd == d and t_off + 0.3 <= t < until - 0.3]
        assert window and not any(window), (d, window)
