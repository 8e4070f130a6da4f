"""The one MQTT transport of ecgstream (paho-mqtt 2.x).

Both MQTT users, the ECG input (:class:`ecgstream.sources.mqtt_source.MqttSource`)
and the state output (:class:`ecgstream.publish.MqttPublisher`), connect
through this package, so that they cannot differ in how they talk to a broker:

- :mod:`.options`: :class:`LinkOptions` (protocol, keep-alive, credentials,
  TLS, backoff, timeout: one value per connection), :class:`TlsOptions` (one
  TLS type for both) and :class:`Credentials` (the password is never shown);
- :mod:`.client`: :func:`new_client`, the paho client factory (MQTT 5 or
  3.1.1, credentials, TLS, last will) and the paho logging policy;
- :mod:`.connection`: :class:`MqttConnection`, the one reconnect strategy: a
  manager thread, a fresh paho client per connection, and
  :class:`~ecgstream.core.backoff.Backoff` between attempts.

The users keep only what is theirs: the publisher its retained states, queue
and acknowledgements; the source its subscription and per-device rules.
Nothing here imports paho until a connection is made (start-up stays fast for
commands that never touch a broker).
"""

from __future__ import annotations

from ..core.backoff import Backoff
from .connection import MqttConnection
from .options import PROTOCOLS, Credentials, LinkOptions, TlsOptions, check_protocol

__all__ = ["PROTOCOLS", "Backoff", "Credentials", "LinkOptions", "MqttConnection", "TlsOptions", "check_protocol"]
