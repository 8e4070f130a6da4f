"""MQTT publisher against a Mosquitto with TLS, passwords and an ACL (marker ``broker``).

The broker, its CA and server certificate are created by the test
(``helpers_broker.make_tls_broker``); needs ``apt-get install -y mosquitto``
(``mosquitto`` and ``mosquitto_passwd``).
"""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
from helpers_broker import OPEN_PUBLISHERS, Observer, make_ca, make_tls_broker, wait_for

from ecgstream.publish import MqttPublisher, PublishError, TlsOptions, auth_payload

pytestmark = pytest.mark.broker

USERS = {"ecgstream": "s3cret-pub", "observer": "s3cret-obs"}
ACL = """\
user ecgstream
topic readwrite ecgstream/#

user observer
topic read #
"""


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    b = make_tls_broker(tmp_path_factory.mktemp("tlsbroker"), USERS, ACL)
    b.start()
    yield b
    b.stop()


def _observer(b, topic="#"):
    return Observer(b, topic, username="observer", password=USERS["observer"], tls_ca=b.ca_file)


_OPEN = OPEN_PUBLISHERS  # closed after each test by conftest's close_publishers


_DEFAULT_TLS = TlsOptions()  # stands for "TLS with the broker's CA"


def _pub(b, password=USERS["ecgstream"], ca=None, host="localhost", tls=_DEFAULT_TLS, **kw):
    kw.setdefault("connect_timeout_s", 3.0)
    kw.setdefault("retry_min_s", 0.1)
    pub = MqttPublisher(host, b.port, username="ecgstream", password=password,
                        tls=TlsOptions(ca_file=ca or b.ca_file) if tls is _DEFAULT_TLS else tls, **kw)
    _OPEN.append(pub)
    return pub


def _auth(seq=1):
    t = time.time()
    return auth_payload("authenticated", "alice", 0.9, 0.8, 10, t, t + 30, seq, "m", liveness="live"), t + 30


def test_tls_with_credentials_delivers(tls_broker):
    pub = _pub(tls_broker, will_devices=["dev1"], client_id="sec-1")
    pub.start()
    assert pub.connected
    a, vu = _auth()
    pub.availability("dev1", True)
    pub.auth("dev1", a, vu)
    assert wait_for(lambda: pub.stats.published == 2), pub.stats
    with _observer(tls_broker, "ecgstream/dev1/#") as obs:
        assert json.loads(obs.wait("ecgstream/dev1/auth").text) == a
        assert obs.wait("ecgstream/dev1/availability").text == "online"
    pub.close()


def test_acl_blocks_topics_outside_ecgstream(tls_broker, caplog):
    caplog.set_level(logging.WARNING, logger="ecgstream.publish")
    allowed = _pub(tls_broker, will_devices=["dev2"], client_id="sec-ok")
    other = _pub(tls_broker, prefix="other", will_devices=["dev2"], client_id="sec-other")
    allowed.start()
    other.start()
    assert other.connected  # the credentials are fine: only the topic is not
    with _observer(tls_broker, "#") as obs:
        a, vu = _auth()
        other.auth("dev2", a, vu)
        allowed.auth("dev2", a, vu)  # positive control, published after the refused one
        assert obs.wait("ecgstream/dev2/auth") is not None
        time.sleep(0.3)
        assert obs.on("other/dev2/auth") == []
    # MQTT v5: the broker says so in its PUBACK, and the publisher logs and counts it
    assert wait_for(lambda: other.stats.dropped == 1), other.stats
    assert any("refused the publish to other/dev2/auth" in r.getMessage() for r in caplog.records)
    allowed.close()
    other.close()


def test_wrong_password_exit_raises_clear_error(tls_broker, caplog):
    pub = _pub(tls_broker, password="wrong", on_connect_failure="exit")
    with pytest.raises(PublishError) as err:
        pub.start()
    msg = str(err.value).lower()
    assert "not authorized" in msg or "bad user name or password" in msg, msg
    assert "wrong" not in msg  # the password is never part of a message
    assert all("wrong" not in r.getMessage() for r in caplog.records)


def test_wrong_password_retry_keeps_trying(tls_broker, caplog):
    caplog.set_level(logging.ERROR, logger="ecgstream.publish")
    pub = _pub(tls_broker, password="wrong", on_connect_failure="retry", retry_max_s=0.2)
    pub.start()  # does not raise
    assert not pub.connected
    assert wait_for(lambda: sum("retrying" in r.getMessage() for r in caplog.records) >= 3, 5)
    assert any("check the MQTT username and password" in r.getMessage() for r in caplog.records)
    assert any(t.name == "ecgstream-mqtt" and t.is_alive() for t in threading.enumerate())
    a, vu = _auth()
    pub.auth("dev1", a, vu)  # queued, not raised
    assert pub.stats.queued == 1
    pub.close()
    assert wait_for(lambda: not any(t.name == "ecgstream-mqtt" for t in threading.enumerate()), 3)


def test_untrusted_ca_is_a_clear_tls_error(tls_broker, tmp_path):
    other_ca, _, _ = make_ca(tmp_path, "some other CA")
    pub = _pub(tls_broker, ca=str(other_ca), on_connect_failure="exit")
    with pytest.raises(PublishError, match="certificate verify failed|certificate verification failed") as err:
        pub.start()
    msg = str(err.value)
    assert "self-signed certificate in certificate chain" in msg or "unable to get local issuer" in msg, msg
    assert "ca_file" in msg  # says what to check


def test_plaintext_to_tls_listener_fails(tls_broker):
    pub = _pub(tls_broker, host="127.0.0.1", tls=None, on_connect_failure="exit", connect_timeout_s=2.0)
    with pytest.raises(PublishError, match="closed the connection|Connection reset"):
        pub.start()


def test_insecure_flag_warns_loudly(tls_broker, caplog):
    caplog.set_level(logging.WARNING, logger="ecgstream.publish")
    pub = _pub(tls_broker, host="127.0.0.1", tls=TlsOptions(ca_file=tls_broker.ca_file, insecure=True))
    pub.start()
    assert pub.connected
    assert any("does NOT verify" in r.getMessage() for r in caplog.records)
    pub.close()
