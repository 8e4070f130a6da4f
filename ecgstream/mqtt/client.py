"""The paho client factory and the paho logging policy.

Logging policy: paho's own messages go to ``<user's logger>.paho`` at DEBUG
only. paho reports a normal disconnect as an error and repeats what the
caller already knows; every failure that matters is logged once by
:class:`~ecgstream.mqtt.connection.MqttConnection` with its reason.

paho's own reconnect is switched off (``reconnect_on_failure=False``): the
connection manager makes a fresh client per connection, so no message of a
lost connection is resent after the fresh states, and both users share one
backoff.
"""

from __future__ import annotations

import logging
from typing import Any

from .options import Credentials, TlsOptions, check_protocol

__all__ = ["expiring_json", "new_client", "subscriber_callbacks"]


def new_client(client_id: str, protocol: str = "5", *, credentials: Credentials | None = None,
               tls: TlsOptions | None = None, will: tuple[str, str] | None = None,
               connect_timeout_s: float = 10.0, log: logging.Logger | None = None) -> Any:
    """A configured, unconnected ``paho.mqtt.client.Client``.

    Parameters
    ----------
    client_id : str
        MQTT client id.
    protocol : {"5", "3.1.1"}
        MQTT version (3.1.1 with a clean session).
    credentials : Credentials, optional
    tls : TlsOptions, optional
        Connect with TLS; the SSL context is built here (``OSError`` /
        ``ssl.SSLError`` on unreadable files).
    will : (topic, payload), optional
        Last will, retained at QoS 1.
    connect_timeout_s : float
        paho's connect timeout, seconds.
    log : logging.Logger, optional
        The user's logger; paho's messages go to its ``.paho`` child at DEBUG.
    """
    import paho.mqtt.client as mqtt

    proto = mqtt.MQTTv5 if check_protocol(protocol) == "5" else mqtt.MQTTv311
    kw: dict[str, Any] = {"callback_api_version": mqtt.CallbackAPIVersion.VERSION2,
                          "client_id": client_id, "protocol": proto, "reconnect_on_failure": False}
    if proto == mqtt.MQTTv311:
        kw["clean_session"] = True
    c = mqtt.Client(**kw)
    paho_log = logging.getLogger((log.name if log else "ecgstream.mqtt") + ".paho")
    c.on_log = lambda _c, _u, _level, buf: paho_log.debug("%s", buf)
    c.connect_timeout = connect_timeout_s
    if credentials is not None:
        c.username_pw_set(credentials.username, credentials.password)
    if tls is not None:
        c.tls_set_context(tls.context())
    if will is not None:
        c.will_set(will[0], will[1], qos=1, retain=True)
    return c


def expiring_json(seconds: int) -> Any:
    """MQTT 5 publish properties of a JSON message that the broker drops after ``seconds`` (at least 1)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = max(1, int(seconds))
    props.ContentType = "application/json"
    return props


def subscriber_callbacks(client: Any, handle: Any, on_subscribed: Any, what: str, log: Any) -> None:
    """Install the message and SUBACK callbacks every subscriber here needs.

    ``handle(topic, payload)`` runs for each message; an exception is logged
    (never raised into paho's network thread, which it would kill).
    ``on_subscribed()`` runs when the broker grants the subscription; a refused
    one is logged as an ACL problem. ``what`` names the user in the logs.
    """

    def on_message(c: Any, u: Any, msg: Any) -> None:
        try:
            handle(msg.topic, msg.payload)
        except Exception:  # never kill paho's network thread
            log.exception("%s: message on %s could not be handled", what, msg.topic)

    def on_subscribe(c: Any, u: Any, mid: Any, rcs: Any, props: Any = None) -> None:
        if any(getattr(r, "is_failure", False) for r in rcs):
            log.error("%s: subscription refused by the broker (check the ACL)", what)
            return
        on_subscribed()

    client.on_message = on_message
    client.on_subscribe = on_subscribe
