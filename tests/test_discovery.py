"""Home Assistant MQTT discovery: the config payloads (pure), the config section, and the
publisher and daemon against a real Mosquitto (marker ``broker``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_broker import OPEN_PUBLISHERS, Broker, Observer, collect, wait_for
from helpers_realparts import enrol_with_cli

from ecgstream import __version__
from ecgstream.config import ConfigError, build_config
from ecgstream.publish import (
    AUTH_STATES,
    MqttPublisher,
    PayloadError,
    auth_payload,
    check_payload,
    liveness_payload,
)
from ecgstream.publish.discovery import (
    Discovery,
    DiscoveryRegistry,
    config_topics,
    entity_configs,
    expire_after,
    object_id,
    unique_id,
)
from ecgstream.publish.topics import Topics
from ecgstream.sources.records import excerpt_dir

HA_CLASS = re.compile(r"[A-Za-z0-9_-]+")  # HA's rule for the ids in a discovery topic
HA_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # and ours for a device's part of them
EX = excerpt_dir()
EXE = [sys.executable, "-m", "ecgstream"]


def _multi(client_id="gw-1"):
    return Topics("ecgstream", client_id)


def _single(device="chest1", client_id="gw-1"):
    t = Topics("ecgstream", client_id)
    t.set_will_devices([device])
    return t


def _configs(disc=None, topics=None, device="chest1"):
    return dict(entity_configs(disc or Discovery(), topics or _multi(), device))


# -- the payloads ---------------------------------------------------------------------------
def test_auth_sensor_has_what_home_assistant_needs():
    cfgs = _configs(Discovery(expire_after_s=5))
    auth = cfgs["homeassistant/sensor/ecgstream_gw-1_chest1_auth/config"]
    assert auth["name"] == "Authentication"
    assert auth["unique_id"] == "ecgstream_gw-1_chest1_auth"
    assert auth["state_topic"] == "ecgstream/chest1/auth"
    assert "value_json.liveness == 'live'" in auth["val_tpl"]  # value_template, abbreviated (see module doc)
    assert auth["json_attributes_topic"] == "ecgstream/chest1/auth"
    for key in ("subject", "score", "valid_until"):
        assert f"'{key}': value_json.{key}" in auth["json_attr_tpl"]
    assert auth["json_attr_tpl"].endswith("| tojson }}")
    assert auth["expire_after"] == 5 and auth["qos"] == 1
    assert "device_class" not in auth  # a text sensor: "unknown" is one of its states
    assert auth["device"] == {"identifiers": ["ecgstream_gw-1_chest1"], "name": "ECG chest1",
                              "manufacturer": "ecgstream", "model": "ECG continuous authentication",
                              "sw_version": __version__}
    assert auth["origin"] == {"name": "ecgstream", "sw_version": __version__}


def test_liveness_binary_sensor_has_what_home_assistant_needs():
    cfgs = _configs()
    live = cfgs["homeassistant/binary_sensor/ecgstream_gw-1_chest1_liveness/config"]
    assert live["name"] == "Liveness" and live["device_class"] == "occupancy"
    assert live["state_topic"] == live["json_attributes_topic"] == "ecgstream/chest1/liveness"
    assert live["val_tpl"] == "{{ 'ON' if value_json.live else 'OFF' }}"
    assert (live["payload_on"], live["payload_off"]) == ("ON", "OFF")
    auth = cfgs["homeassistant/sensor/ecgstream_gw-1_chest1_auth/config"]
    assert live["device"] == auth["device"]  # one HA device, two entities
    assert live["unique_id"] != auth["unique_id"]


def test_multi_device_availability_needs_device_and_daemon():
    for payload in _configs(topics=_multi()).values():
        assert payload["availability"] == [
            {"topic": "ecgstream/chest1/availability", "payload_available": "online",
             "payload_not_available": "offline"},
            {"topic": "ecgstream/daemon/gw-1/availability", "payload_available": "online",
             "payload_not_available": "offline"},
        ]
        assert payload["availability_mode"] == "all"


def test_single_device_availability_is_the_device_topic_only():
    for payload in _configs(topics=_single()).values():
        assert [a["topic"] for a in payload["availability"]] == ["ecgstream/chest1/availability"]


def _render_state(tpl: str, payload: dict) -> str:
    """The auth sensor's value template, evaluated (its expression is Python as well as Jinja)."""
    from types import SimpleNamespace

    expr = tpl.strip()
    assert expr.startswith("{{") and expr.endswith("}}")
    return eval(expr[2:-2], {}, {"value_json": SimpleNamespace(**{"liveness": None, **payload})})  # noqa: S307


@pytest.mark.parametrize("state,liveness,shown", [
    ("authenticated", "live", "authenticated"),
    ("authenticated", "establishing", "unknown"),
    ("authenticated", "failed", "unknown"),
    ("authenticated", None, "unknown"),  # a state without the field (an older daemon, a forgery)
    ("rejected", "establishing", "rejected"),
    ("unknown", "leads_off", "unknown"),
])
def test_auth_sensor_requires_liveness_for_authenticated(state, liveness, shown):
    """Issue 16, item 1: HA shows ``authenticated`` only when the same payload says ``liveness: live``."""
    auth = next(c for c in _configs().values() if c["name"] == "Authentication")
    payload = {"state": state} if liveness is None else {"state": state, "liveness": liveness}
    assert _render_state(auth["val_tpl"], payload) == shown


def test_templates_read_only_fields_the_payloads_have():
    """A renamed payload field breaks the HA templates: caught here, not in someone's dashboard."""
    auth = auth_payload("authenticated", "alice", 0.9, 0.8, 12, 1000.0, 1005.0, 1, "m", "ok", liveness="live")
    live = liveness_payload(True, True, 70.0, 0.9, 1000.0, 1005.0, [], 250.0, 250.0)
    cfgs = list(_configs().values())
    for cfg, payload in ((cfgs[0], auth), (cfgs[1], live)):
        used = set(re.findall(r"value_json\.(\w+)", cfg["val_tpl"] + cfg["json_attr_tpl"]))
        assert used and used <= set(payload), used - set(payload)


def test_payloads_pass_the_publish_guard_which_refuses_the_long_key_names():
    for payload in _configs().values():
        check_payload(payload)
        json.dumps(payload, allow_nan=False)
    # why the two template keys are abbreviated: the guard refuses any key with "template"
    with pytest.raises(PayloadError, match="template"):
        check_payload({"value_template": "{{ value_json.state }}"})


def test_unique_ids_stable_and_distinct():
    d, t = Discovery(), _multi("gw-1")
    assert unique_id(d, t, "chest1", "auth") == unique_id(Discovery(), _multi("gw-1"), "chest1", "auth")
    ids = {unique_id(d, t, dev, kind) for dev in ("a", "b") for kind in ("auth", "liveness")}
    assert len(ids) == 4
    assert unique_id(d, _multi("gw-2"), "a", "auth") != unique_id(d, t, "a", "auth")
    # a configured node id replaces the client id (entities survive a host rename)
    assert unique_id(Discovery(node_id="home"), _multi("other"), "a", "auth") == "ecgstream_home_a_auth"
    with pytest.raises(ValueError, match="kind"):
        unique_id(d, t, "a", "events")


def test_default_node_id_follows_the_client_id(monkeypatch):
    monkeypatch.setattr("socket.gethostname", lambda: "pi4.lan")
    assert unique_id(Discovery(), Topics("ecgstream"), "a", "auth") == "ecgstream_ecgstream-pi4_a_auth"
    t = Topics("ecgstream")
    t.set_will_devices(["a"])
    assert unique_id(Discovery(), t, "a", "auth") == "ecgstream_ecgstream-pi4-a_a_auth"


@pytest.mark.parametrize("device", ["chest.1", "brust 1", "α-strap", "x" * 65, "a:b", "x" * 300])
def test_odd_device_ids_are_mapped_to_home_assistant_ids(device):
    oid = object_id(device)
    assert HA_ID.fullmatch(oid), oid
    assert object_id(device) == oid  # stable
    cfgs = _configs(device=device)
    for topic, payload in cfgs.items():
        assert HA_CLASS.fullmatch(topic.split("/")[2]), topic
        assert payload["state_topic"].startswith(f"ecgstream/{device}/")  # the real topic, unchanged
        assert payload["device"]["name"] == f"ECG {device}"


def test_mapped_ids_do_not_collide():
    assert object_id("chest1") == "chest1" and object_id("a-b_C9") == "a-b_C9"
    assert object_id("chest.1") == "chest_1_d8631221"  # the example in docs/mqtt_output.md
    assert object_id("a.b") != object_id("a_b") != object_id("a b")
    assert object_id("x" * 70 + "1") != object_id("x" * 70 + "2")


@pytest.mark.parametrize("bad", ["", "a/b", "+", "x#", "nul\0"])
def test_device_ids_that_are_not_a_topic_level_are_refused(bad):
    with pytest.raises(PayloadError, match="not a valid MQTT topic level"):
        entity_configs(Discovery(), _multi(), bad)


@pytest.mark.parametrize("kw, match", [
    ({"discovery_prefix": ""}, "discovery_prefix"),
    ({"discovery_prefix": "home/#"}, "discovery_prefix"),
    ({"discovery_prefix": "/ha"}, "discovery_prefix"),
    ({"node_id": "gw.1"}, "node_id"),
    ({"node_id": "x" * 65}, "node_id"),
    ({"expire_after_s": 0}, "expire_after_s"),
    ({"expire_after_s": 2.5}, "expire_after_s"),
    ({"expire_after_s": True}, "expire_after_s"),
])
def test_bad_discovery_settings_are_refused_clearly(kw, match):
    with pytest.raises(ValueError, match=match):
        Discovery(**kw)


def test_expire_after_is_valid_for_rounded_up():
    assert [expire_after(v) for v in (5.0, 2.5, 0.2, 60)] == [5, 3, 1, 60]
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="valid_for_s"):
            expire_after(bad)


def test_registry_sends_once_resends_all_and_removes_only_when_asked():
    reg = DiscoveryRegistry(Discovery(), _multi())
    first = reg.announce("a")
    assert [t for t, _ in first] == config_topics(Discovery(), _multi(), "a")
    assert all(json.loads(text)["unique_id"] for _, text in first)
    assert reg.announce("a") == []  # announced again (e.g. back online): nothing new
    reg.announce("b")
    assert len(reg.messages()) == 4  # a reconnect: every device's configs again
    reg.remove(["a"])
    msgs = reg.messages()
    assert msgs[:2] == [(t, "") for t in sorted(config_topics(Discovery(), _multi(), "a"))]
    assert len(msgs) == 4 and "a" not in reg and "b" in reg
    assert reg.messages() == msgs[2:]  # a removal is sent once
    reg.remove(["b"])
    assert reg.announce("b")  # a device seen again after removal is discovered again
    assert all(text for _, text in reg.messages())  # and its pending removal is dropped


# -- the config section -----------------------------------------------------------------------
def test_config_off_by_default_and_from_its_section():
    assert Discovery.from_config(build_config({})) is None
    cfg = build_config({"homeassistant": {"enabled": True, "node_id": "home", "discovery_prefix": "ha",
                                          "remove_on_stop": True},
                        "decision": {"valid_for_s": 7.5}})
    assert Discovery.from_config(cfg) == Discovery(discovery_prefix="ha", node_id="home", expire_after_s=8,
                                                   remove_on_stop=True)


def test_config_problems_name_the_key():
    with pytest.raises(ConfigError) as e:
        build_config({"homeassistant": {"enabled": "yes", "node_id": "gw.1", "discovery_prefix": "a/+",
                                        "prefix": "x"}})
    text = str(e.value)
    for key in ("homeassistant.enabled", "homeassistant.node_id", "homeassistant.discovery_prefix",
                "homeassistant.prefix"):
        assert key in text, text


# -- against a real broker ----------------------------------------------------------------------
@pytest.fixture
def broker(tmp_path):
    with Broker(tmp_path / "broker") as b:
        yield b


def _pub(broker, **kw):
    pub = MqttPublisher(broker.host, broker.port, retry_min_s=0.1, connect_timeout_s=3.0, **kw)
    OPEN_PUBLISHERS.append(pub)
    return pub


@pytest.mark.broker
def test_publisher_off_by_default_sends_nothing_to_home_assistant(broker):
    pub = _pub(broker, client_id="gw-off")
    pub.start()
    with Observer(broker, "homeassistant/#") as obs:
        pub.availability("dev1", True)
        assert wait_for(lambda: pub.stats.published == 2)  # daemon online, device online
        time.sleep(0.3)
        assert obs.messages == []


@pytest.mark.broker
def test_publisher_discovery_retained_resent_on_reconnect_removed_when_asked(broker):
    disc = Discovery(expire_after_s=5)
    pub = _pub(broker, client_id="gw-1", discovery=disc)
    pub.start()
    pub.availability("dev1", True)
    topics = config_topics(disc, pub.topics, "dev1")
    with Observer(broker, "homeassistant/#") as first:  # the broker has them (live or retained) ...
        for t in topics:
            assert first.wait(t) is not None
    with Observer(broker, "homeassistant/#") as obs:  # ... so a late subscriber (HA restarting) gets them retained
        for t in topics:
            m = obs.wait(t)
            assert m is not None and m.retain and m.qos == 1
            assert json.loads(m.text)["availability"][0]["topic"] == "ecgstream/dev1/availability"
    pub.availability("dev1", True)  # announced again: no second copy
    broker.kill()  # no persistence: the broker forgets every retained message
    assert wait_for(lambda: not pub.connected)
    broker.start()
    assert wait_for(lambda: pub.connected, 10)
    with Observer(broker, "homeassistant/#") as obs:
        assert all(obs.wait(t) is not None for t in topics)  # republished after the reconnect
    pub.remove_discovery(["dev1"])
    assert wait_for(lambda: not collect(broker, "homeassistant/#", seconds=0.3), 5)  # retained cleared
    pub.close()


@pytest.mark.broker
def test_publisher_close_keeps_entities_unless_remove_on_stop(broker):
    for remove, left in ((False, 2), (True, 0)):
        pub = _pub(broker, client_id=f"gw-{remove}", discovery=Discovery(remove_on_stop=remove))
        pub.start()
        pub.availability(f"dev-{remove}", True)
        assert wait_for(lambda p=pub: p.stats.published == 4)  # 2 configs, daemon and device online
        pub.close()
        msgs = [m for m in collect(broker, "homeassistant/#", seconds=0.4) if f"dev-{remove}" in m.topic]
        assert len(msgs) == left


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return enrol_with_cli(tmp_path_factory.mktemp("store"), EX / "Person_01" / "rec_1")


@pytest.mark.broker
@pytest.mark.parametrize("enabled", [True, False], ids=["enabled", "default-off"])
def test_daemon_serves_a_device_to_home_assistant(tmp_path: Path, store, enabled):
    """`ecgstream run --config` with a broker: the device appears on homeassistant/# only when enabled,
    and the topics the configs name carry states their templates can read."""
    with Broker(tmp_path / "b") as b:
        conf = tmp_path / "ecgstream.toml"
        conf.write_text(f'[mqtt]\nhost = "{b.host}"\nport = {b.port}\nclient_id = "ha-test"\n'
                        + ('[homeassistant]\nenabled = true\n' if enabled else ""))
        dev = "Person_01-rec_2"
        p = subprocess.Popen(
            [*EXE, "run", "--config", str(conf), "--source", f"wfdb:{EX / 'Person_01' / 'rec_2'}?loop=1",
             "--speed", "4", "--subject", "p01", "--store", str(store[0]), "--key-file", str(store[1])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            with Observer(b, "homeassistant/#") as ha, Observer(b, f"ecgstream/{dev}/#") as st:
                assert wait_for(lambda: st.on(f"ecgstream/{dev}/auth"), timeout_s=40, step_s=0.2), \
                    p.stderr.read() if p.poll() is not None else "no auth state"
                time.sleep(0.5)
                if not enabled:
                    assert ha.messages == []
                    return
                cfgs = {m.topic: json.loads(m.text) for m in ha.messages}
                assert set(cfgs) == {f"homeassistant/sensor/ecgstream_ha-test_{dev}_auth/config",
                                     f"homeassistant/binary_sensor/ecgstream_ha-test_{dev}_liveness/config"}
                late = collect(b, "homeassistant/#", seconds=0.3)  # HA (re)starting later: retained
                assert {m.topic for m in late} == set(cfgs) and all(m.retain for m in late)
                for cfg in cfgs.values():  # what HA would subscribe to is what the daemon publishes
                    assert st.wait(cfg["state_topic"]) is not None
                    # one replayed record is one known device: single-device mode, its
                    # availability is the last will and the only availability topic
                    assert [a["topic"] for a in cfg["availability"]] == [f"ecgstream/{dev}/availability"]
                    assert st.wait(f"ecgstream/{dev}/availability").text == "online"
                state = json.loads(st.wait(f"ecgstream/{dev}/auth").text)["state"]  # {{ value_json.state }}
                assert state in AUTH_STATES
        finally:
            p.terminate()
            p.communicate(timeout=30)
        assert p.returncode == 0
