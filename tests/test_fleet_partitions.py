"""Partitions and ownership of a daemon group, without a broker (ecgstream/fleet/)."""

from __future__ import annotations

import itertools
import json

import pytest

from ecgstream.fleet.member import FleetMember
from ecgstream.fleet.natsconf import mapping, nats_config
from ecgstream.fleet.partitions import assignment, fnv1a32, moves, owner_of, partition_of
from ecgstream.mqtt import LinkOptions
from ecgstream.reader import DeviceView, evaluate
from ecgstream.sources import open_source
from ecgstream.sources.base import SourceError
from ecgstream.sources.mqtt_payload import encode_json

MEMBERS = [f"ecgstream-gw{i}" for i in range(6)]


def test_fnv1a32_known_vectors():
    # FNV-1a 32-bit reference values (the test vectors of the FNV reference code)
    assert fnv1a32(b"") == 0x811C9DC5
    assert fnv1a32(b"a") == 0xE40C292C
    assert fnv1a32(b"foobar") == 0xBF9CF968


def test_partition_of_range_and_errors():
    assert {partition_of(f"dev{i}", 8) for i in range(200)} == set(range(8))
    for bad in (0, -1, 1025, 2.0, True, "8"):
        with pytest.raises(ValueError, match="partitions must be"):
            partition_of("a", bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
def test_every_partition_owned_exactly_once_and_order_free(n):
    ms = MEMBERS[:n]
    a = assignment(ms, 64)
    owned = [p for parts in a.values() for p in parts]
    assert sorted(owned) == list(range(64))
    for perm in itertools.islice(itertools.permutations(ms), 6):
        assert assignment(perm, 64) == a
    assert all(owner_of(p, ms) == m for m, parts in a.items() for p in parts)
    if n > 1:  # spread: nobody gets nothing or nearly everything with 64 partitions
        assert all(4 <= len(parts) <= 64 - 4 * (n - 1) for parts in a.values()), a


def test_leave_moves_only_the_leavers_partitions():
    before = assignment(MEMBERS[:4], 64)
    for gone in MEMBERS[:4]:
        rest = [m for m in MEMBERS[:4] if m != gone]
        after = assignment(rest, 64)
        for m in rest:
            assert before[m] <= after[m], (gone, m)  # a survivor keeps everything it had
        assert moves(MEMBERS[:4], rest, 64) == len(before[gone])


def test_join_takes_only_for_itself():
    before = assignment(MEMBERS[:3], 64)
    after = assignment(MEMBERS[:4], 64)
    for m in MEMBERS[:3]:
        assert after[m] <= before[m]  # nothing moves between old members
    assert moves(MEMBERS[:3], MEMBERS[:4], 64) == len(after[MEMBERS[3]]) > 0


def test_no_members_no_owner():
    assert owner_of(3, []) is None
    assert assignment([], 4) == {}


def test_nats_config_text_and_errors():
    src, dst = mapping(8)
    assert (src, dst) == ("ecgstream.*.ecg", "ecgstream.p.{{partition(8,1)}}.{{wildcard(1)}}.ecg")
    text = nats_config(8, store_dir="/var/lib/nats", mqtt_port=1884, port=4223)
    assert 'mqtt { listen: "127.0.0.1:1884" }' in text and "jetstream" in text and "server_name" in text
    assert f'"{src}": "{dst}"' in text
    assert mapping(4, "site/a")[0] == "site.a.*.ecg"
    with pytest.raises(ValueError, match="prefix"):
        mapping(4, "a.b")
    with pytest.raises(ValueError, match="store_dir"):
        nats_config(4, store_dir="")
    with pytest.raises(ValueError, match="routes need cluster_listen"):
        nats_config(4, store_dir="/x", routes=["nats-route://b:6222"])
    with pytest.raises(ValueError, match="TCP port"):
        nats_config(4, store_dir="/x", mqtt_port=0)
    assert "routes: [\"nats-route://b:6222\"]" in nats_config(4, store_dir="/x", cluster_listen="0.0.0.0:6222",
                                                              routes=["nats-route://b:6222"])


def test_source_uri_checks():
    src = open_source("mqtt://h:1883/ecgstream/+/ecg?partitions=8&group=lab")
    assert type(src).__name__ == "PartitionedMqttSource"
    assert src.filter_of(3) == "ecgstream/p/3/+/ecg" and src.group == "lab"
    assert type(open_source("mqtt://h:1883/ecgstream/+/ecg")).__name__ == "MqttSource"
    for uri, msg in [("mqtt://h/ecgstream/+/ecg?partitions=x", "partitions"),
                     ("mqtt://h/ecgstream/+/ecg?partitions=0", "partitions"),
                     ("mqtt://h/ecgstream/s1/ecg?partitions=4", "with '\\+'"),
                     ("mqtt://h/ecgstream/+/ecg?partitions=4&lease=1&heartbeat=2", "heartbeat < lease"),
                     ("mqtt://h/ecgstream/+/ecg?partitions=4&color=red", "color")]:
        with pytest.raises(SourceError, match=msg):
            open_source(uri)


def _chunk(seq: int) -> bytes:
    return encode_json([0.1] * 50, 500, seq, False)


def test_source_serves_owned_partitions_only():
    src = open_source("mqtt://h:1883/ecgstream/+/ecg?partitions=4")
    dev = "strap7"
    k = partition_of(dev, 4)
    assert src.handle(f"ecgstream/p/{k}/{dev}/ecg", _chunk(0), 0.0) is not None
    other = (k + 1) % 4
    assert src.handle(f"ecgstream/p/{other}/{dev}/ecg", _chunk(1), 0.0) is None  # misrouted
    assert src.misrouted == 1
    src.set_partitions({p for p in range(4) if p != k})
    assert src.handle(f"ecgstream/p/{k}/{dev}/ecg", _chunk(2), 0.0) is None
    assert src.not_owned == 1
    src.set_partitions(set(range(4)))  # back: a new stream (its old seq state was forgotten)
    c = src.handle(f"ecgstream/p/{k}/{dev}/ecg", _chunk(9), 0.0)
    assert c is not None and c.start_sample == 0 and not c.gap_before
    with pytest.raises(ValueError, match="out of"):
        src.set_partitions({4})
    assert src.handle("ecgstream/strap7/ecg", _chunk(10), 0.0) is None  # unmapped topic: garbled
    assert src.stats.garbled == 1


class _Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


def test_member_live_set_wills_and_lease():
    clock = _Clock()
    m = FleetMember("h", 1, LinkOptions(protocol="3.1.1"), prefix="ecgstream", group="g", member_id="a",
                    partitions=4, clock=clock, lease_s=3.0)
    m._connected.set()
    base = "ecgstream/fleet/g/member"

    def rec(mid: str, state: str = "online", **kw) -> bytes:
        return json.dumps({"id": mid, "state": state, "partitions": 4, **kw}).encode()

    m.on_record(f"{base}/b", rec("b", devices=["x", "y"]))
    m.on_record(f"{base}/c", rec("c"))
    m.on_record(f"{base}/d", rec("e"))  # names another member: ignored
    m.on_record(f"{base}/f", b"not json")
    assert m.live() == {"a", "b", "c"}
    m.on_record(f"{base}/b", rec("b", "offline", reason="connection lost"))  # b's will
    assert m.live() == {"a", "c"}
    assert m._peers["b"].record["devices"] == ["x", "y"]  # the will keeps b's last device list
    clock.t += 3.5  # c silent past its lease
    assert m.live() == {"a"}
    m.on_record(f"{base}/c", rec("c"))
    assert m.live() == {"a", "c"}
    m.on_record(f"{base}/c", b"")  # deleted record
    assert m.live() == {"a"}
    with pytest.raises(ValueError, match="heartbeat_s"):
        FleetMember("h", 1, LinkOptions(), prefix="e", group="g", member_id="a", partitions=4,
                    heartbeat_s=3, lease_s=3)


def test_reader_refuses_a_state_whose_serving_daemon_is_not_online():
    auth = {"state": "authenticated", "time": 100.0, "valid_until": 105.0, "model_id": "m",
            "served_by": "gw1", "liveness": "live"}
    v = DeviceView(availability="online", auth=auth)
    assert evaluate(v, 101.0, daemons={"gw1": "online"}).authenticated
    assert evaluate(v, 101.0, daemons={"gw1": "offline"}).reason == "serving daemon 'gw1' is not online"
    assert not evaluate(v, 101.0).authenticated  # never heard of gw1: fail closed
    assert not evaluate(DeviceView("online", {**auth, "served_by": 3}), 101.0, daemons={"3": "online"}).authenticated
    plain = {k: v for k, v in auth.items() if k != "served_by"}
    assert evaluate(DeviceView("online", plain), 101.0).authenticated  # single daemon: as before


def test_nats_config_command(tmp_path, capsys):
    from ecgstream.cli.main import main

    out = tmp_path / "nats.conf"
    assert main(["nats-config", "--partitions", "4", "--store-dir", str(tmp_path / "js"), "--mqtt-port", "1999",
                 "-o", str(out)]) == 0
    text = out.read_text()
    assert "partition(4,1)" in text and '"127.0.0.1:1999"' in text and str(tmp_path / "js") in text
    assert main(["nats-config", "--partitions", "0", "--store-dir", "/x"]) == 2
    assert "partitions must be an integer" in capsys.readouterr().err
