"""Publishers of the daemon's authentication, liveness and availability states.

The daemon calls a publisher from its single processing thread; no method
blocks that thread on the network (``start`` and ``close`` wait, each for a
bounded time). The package is cut at its seams, one module each:

- :mod:`.payloads`: the pure builders :func:`auth_payload`,
  :func:`liveness_payload` and the fail-closed :func:`stale_replacement`;
- :mod:`.checks`: :func:`check_payload` and :func:`check_device`, which
  every message passes (the daemon never publishes raw ECG, embeddings or
  templates);
- :mod:`.protocol`: the :class:`Publisher` interface, :class:`PublisherStats`,
  :class:`TeePublisher`;
- :mod:`.stdout`: :class:`StdoutPublisher`, JSON lines (the output when no
  broker is configured);
- :mod:`.mqtt`: :class:`MqttPublisher`, over the shared transport
  :mod:`ecgstream.mqtt`; its topic names and last-will rules
  (``docs/mqtt_output.md``) are :mod:`.topics`, its bookkeeping of latest
  states, queued events and unacknowledged messages :mod:`.delivery`;
- :mod:`.discovery`: the Home Assistant MQTT discovery configs (optional,
  ``[homeassistant]``).

Times in payloads are Unix time in seconds (float, millisecond resolution).
"""

from __future__ import annotations

from typing import Any

from .checks import FORBIDDEN_KEY_PARTS, MAX_NUMERIC_LIST, PayloadError, check_device, check_payload
from .payloads import AUTH_STATES, auth_payload, liveness_payload, stale_replacement
from .protocol import Publisher, PublishError, PublisherStats, TeePublisher
from .stdout import StdoutPublisher

__all__ = [
    "AUTH_STATES",
    "FORBIDDEN_KEY_PARTS",
    "MAX_NUMERIC_LIST",
    "MqttPublisher",
    "PayloadError",
    "PublishError",
    "Publisher",
    "PublisherStats",
    "StdoutPublisher",
    "TeePublisher",
    "TlsOptions",
    "auth_payload",
    "check_device",
    "check_payload",
    "liveness_payload",
    "stale_replacement",
]


def __getattr__(name: str) -> Any:
    """:class:`MqttPublisher` and ``TlsOptions`` load on first use: a daemon without a broker never imports them."""
    if name == "MqttPublisher":
        from .mqtt import MqttPublisher

        return MqttPublisher
    if name == "TlsOptions":
        from ..mqtt.options import TlsOptions

        return TlsOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
