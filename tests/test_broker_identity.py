"""Issue 16, item 5 (and row 6, 8): the documented broker identity set-up, on a real Mosquitto.

The broker config is read from docs/security.md, section 1b (between the
``broker-identity`` markers), with the TLS lines dropped and paths and
ports replaced: what the docs say is what is tested.

* client-id take-over: a consumer account connecting as the daemon's
  publisher id (``ecgstream-gw``) or input id, 26 times, disconnects
  nothing (on the public listener its id is its user name);
* a consumer account cannot connect to the daemons' listener;
* ``max_packet_size``: a 50 MB packet from a wearable is refused by the broker
  (its connection closed), the daemon sees nothing of it, and the next
  legitimate chunk flows;
* two daemon accounts connect side by side, each with two connections.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_broker import (
    MOSQUITTO,
    free_port,
    make_password_file,
    require_mosquitto,
    wait_for,
    wait_port,
)

from ecgstream.sources.mqtt_payload import encode_json

pytestmark = pytest.mark.broker
DOC = Path(__file__).resolve().parents[1] / "docs" / "security.md"
USERS = {"strap1": "pw1", "svc@door": "pw-door"}
DAEMONS = {"svc@daemon1": "pw-d1", "svc@daemon2": "pw-d2"}
ACL = """\
user svc@door
topic read ecgstream/+/auth
topic read ecgstream/+/liveness
topic read ecgstream/+/availability
topic read ecgstream/+/events
topic read ecgstream/daemon/+/availability

pattern write ecgstream/%u/ecg
"""


def documented_config() -> str:
    text = DOC.read_text()
    m = re.search(r"<!-- broker-identity-begin -->\s*```\n(.*?)```\s*<!-- broker-identity-end -->", text, re.S)
    assert m, "docs/security.md lost its broker-identity block"
    return m.group(1)


def daemons_acl() -> str:
    text = DOC.read_text()
    m = re.search(r"the `svc@daemon` rights of section 1:\n\n```\n(.*?)```", text, re.S)
    assert m, "docs/security.md lost the daemons' ACL"
    return m.group(1)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    require_mosquitto(passwd=True)
    import getpass
    import os
    import subprocess

    wd = tmp_path_factory.mktemp("identity")
    pub_port, dmn_port = free_port(), free_port()
    make_password_file(wd / "users.passwd", USERS)
    make_password_file(wd / "daemons.passwd", DAEMONS)
    (wd / "users.acl").write_text(ACL)
    (wd / "daemons.acl").write_text(daemons_acl())
    conf = documented_config()
    conf = "\n".join(ln for ln in conf.splitlines() if not ln.startswith(("cafile", "certfile", "keyfile")))
    conf = (conf.replace("listener 8883", f"listener {pub_port} 127.0.0.1")
                .replace("listener 8884", f"listener {dmn_port} 127.0.0.1")
                .replace("/etc/mosquitto/ecgstream.passwd", str(wd / "users.passwd"))
                .replace("/etc/mosquitto/ecgstream.acl", str(wd / "users.acl"))
                .replace("/etc/mosquitto/ecgstream-daemons.passwd", str(wd / "daemons.passwd"))
                .replace("/etc/mosquitto/ecgstream-daemons.acl", str(wd / "daemons.acl")))
    head = [f"log_dest file {wd / 'mosquitto.log'}", "log_type all", "persistence false"]
    if os.geteuid() == 0:
        head.insert(0, f"user {getpass.getuser()}")
    (wd / "mosquitto.conf").write_text("\n".join(head) + "\n" + conf)
    proc = subprocess.Popen([MOSQUITTO, "-c", str(wd / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        assert wait_port(pub_port, 5) and wait_port(dmn_port, 5), proc.stderr.read() if proc.poll() else ""
        yield {"public": pub_port, "daemons": dmn_port, "log": wd / "mosquitto.log"}
    finally:
        proc.terminate()
        proc.wait(5)


class Client:
    """A paho client that records its connects, disconnects and messages."""

    def __init__(self, port: int, user: str, pw: str, client_id: str, subscribe: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.rc: list = []
        self.disconnects = 0
        self.messages: list = []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.c.username_pw_set(user, pw)
        self.c.on_connect = lambda c, u, f, rc, p=None: (self.rc.append(rc),
                                                         subscribe and not rc.is_failure and c.subscribe(subscribe, 1))
        self.c.on_disconnect = lambda *a: setattr(self, "disconnects", self.disconnects + 1)
        self.c.on_message = lambda c, u, m: self.messages.append(m)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    @property
    def ok(self) -> bool:
        return bool(self.rc) and not self.rc[-1].is_failure

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_no_account_takes_over_a_daemons_client_id(broker):
    out = Client(broker["daemons"], "svc@daemon1", "pw-d1", "ecgstream-gw")
    inp = Client(broker["daemons"], "svc@daemon1", "pw-d1", "ecgstream-in-host-123", subscribe="ecgstream/+/ecg")
    other = Client(broker["daemons"], "svc@daemon2", "pw-d2", "ecgstream-gw2")  # a second daemon, side by side
    try:
        assert wait_for(lambda: out.ok and inp.ok and other.ok, 5), (out.rc, inp.rc, other.rc)
        attackers = []
        for i in range(26):
            cid = "ecgstream-gw" if i % 2 == 0 else "ecgstream-in-host-123"
            attackers.append(Client(broker["public"], "svc@door", "pw-door", cid))
            time.sleep(0.05)
        assert wait_for(lambda: all(a.rc for a in attackers), 5)
        time.sleep(0.5)
        assert out.disconnects == 0 and inp.disconnects == 0 and other.disconnects == 0
        for a in attackers:
            a.close()
        # the consumer account cannot reach the daemons' listener at all
        door = Client(broker["daemons"], "svc@door", "pw-door", "ecgstream-gw")
        assert wait_for(lambda: door.rc, 5) and door.rc[-1].is_failure
        door.close()
        assert out.disconnects == 0
    finally:
        for c in (out, inp, other):
            c.close()


def test_a_50_mb_packet_is_refused_by_the_broker_and_the_next_chunk_flows(broker):
    daemon = Client(broker["daemons"], "svc@daemon1", "pw-d1", "ecgstream-in-x", subscribe="ecgstream/+/ecg")
    strap = Client(broker["public"], "strap1", "pw1", "whatever")
    try:
        assert wait_for(lambda: daemon.ok and strap.ok, 5)
        time.sleep(0.3)
        strap.c.publish("ecgstream/strap1/ecg", b"x" * (50 * 1024 * 1024), qos=0)
        assert wait_for(lambda: strap.disconnects >= 1, 20), "the broker kept a 50 MB packet's connection"
        assert not daemon.messages
        good = encode_json(np.zeros(25), 250.0, 0)
        strap2 = Client(broker["public"], "strap1", "pw1", "again")
        assert wait_for(lambda: strap2.ok, 5)
        strap2.c.publish("ecgstream/strap1/ecg", good, qos=1).wait_for_publish(5)
        assert wait_for(lambda: len(daemon.messages) == 1, 5)
        assert daemon.messages[0].payload == good
        strap2.close()
    finally:
        daemon.close()
        strap.close()
