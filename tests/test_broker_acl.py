"""The broker's side of authenticated input (issue 11, part 1), with a real Mosquitto (marker ``broker``).

The password file and ACL are those of docs/security.md: each wearable has
its own account named as its device id and may publish only to
``ecgstream/<its id>/ecg`` (``pattern write ecgstream/%u/ecg``); the daemon
reads ``ecg`` and writes states; consumers read states only. Service
accounts carry an ``@`` in their names, which no device id has, so the
pattern never gives them an ``ecg`` topic the daemon would accept.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers_broker import Broker, Observer, make_password_file

from ecgstream.sources.mqtt_payload import encode_json
from ecgstream.sources.mqtt_source import MqttSource

pytestmark = pytest.mark.broker

USERS = {"strap1": "pw-strap1", "strap2": "pw-strap2", "svc@daemon": "pw-daemon", "svc@door": "pw-door"}
ACL = """\
# docs/security.md
user svc@daemon
topic read ecgstream/+/ecg
topic write ecgstream/+/auth
topic write ecgstream/+/liveness
topic write ecgstream/+/availability
topic write ecgstream/+/events
topic write ecgstream/daemon/+/availability

user svc@door
topic read ecgstream/+/auth
topic read ecgstream/+/liveness
topic read ecgstream/+/availability
topic read ecgstream/+/events
topic read ecgstream/daemon/+/availability

pattern write ecgstream/%u/ecg
"""


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory):
    wd = tmp_path_factory.mktemp("aclbroker")
    pw = make_password_file(wd / "passwd", USERS)
    (wd / "acl").write_text(ACL)
    b = Broker(wd, extra_config=f"password_file {pw}\nacl_file {wd / 'acl'}", allow_anonymous=False)
    b.start()
    yield b
    b.stop()


def _client(b, user):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{time.monotonic_ns()}",
                    protocol=mqtt.MQTTv5)
    c.username_pw_set(user, USERS[user])
    c.connect(b.host, b.port, 30)
    c.loop_start()
    return c


def _pub(b, user, topic, payload, qos=1):
    c = _client(b, user)
    try:
        info = c.publish(topic, payload, qos=qos)
        info.wait_for_publish(5)
        return info
    finally:
        c.disconnect()
        c.loop_stop()


def test_wearable_publishes_only_its_own_ecg(acl_broker):
    b = acl_broker
    with Observer(b, "ecgstream/+/ecg", username="svc@daemon", password=USERS["svc@daemon"]) as daemon:
        x = np.zeros(10)
        _pub(b, "strap1", "ecgstream/strap2/ecg", encode_json(x, 500, 1))  # speaking for another device
        _pub(b, "strap1", "ecgstream/strap1/auth", b'{"state":"authenticated"}')  # forging a state
        _pub(b, "svc@door", "ecgstream/strap1/ecg", encode_json(x, 500, 1))  # a consumer feeding ECG
        _pub(b, "svc@door", "ecgstream/svc@door/ecg", encode_json(x, 500, 1))  # via the pattern
        _pub(b, "strap1", "ecgstream/strap1/ecg", encode_json(x, 500, 1))  # positive control, last
        assert daemon.wait("ecgstream/strap1/ecg") is not None
        time.sleep(0.3)
        # only the wearable's own topic, and the pattern's topic of the service account, whose
        # level is not a device id: the daemon's source refuses it (counted)
        assert [m.topic for m in daemon.messages] == ["ecgstream/svc@door/ecg", "ecgstream/strap1/ecg"]
        src = MqttSource("mqtt://127.0.0.1:1/ecgstream/+/ecg")
        assert src.handle("ecgstream/svc@door/ecg", encode_json(x, 500, 1), 0.0) is None
        assert src.stats.bad_device_ids == 1


def test_consumer_cannot_publish_states_and_daemon_cannot_feed_ecg(acl_broker):
    b = acl_broker
    with Observer(b, "ecgstream/#", username="svc@door", password=USERS["svc@door"]) as door:
        info = _pub(b, "svc@door", "ecgstream/strap1/auth", b'{"state":"authenticated"}')
        _pub(b, "svc@door", "ecgstream/strap1/availability", b"online")
        _pub(b, "svc@daemon", "ecgstream/strap1/ecg", encode_json(np.zeros(3), 500, 1))
        _pub(b, "svc@daemon", "ecgstream/strap1/auth", b'{"state":"unknown"}')  # control
        assert door.wait("ecgstream/strap1/auth") is not None
        time.sleep(0.3)
        assert [m.payload for m in door.on("ecgstream/strap1/auth")] == [b'{"state":"unknown"}']
        assert door.on("ecgstream/strap1/availability") == [] and door.on("ecgstream/strap1/ecg") == []
        assert info.rc == 0  # MQTT v5: mosquitto 2.0 acknowledges but drops (it logs the denial)
    with Observer(b, "ecgstream/+/ecg", username="svc@door", password=USERS["svc@door"]) as spy:
        _pub(b, "strap1", "ecgstream/strap1/ecg", encode_json(np.zeros(3), 500, 2))
        time.sleep(0.3)
        assert spy.messages == []  # a consumer cannot read raw ECG
