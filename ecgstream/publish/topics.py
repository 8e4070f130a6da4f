"""The publisher's topic names and last-will rules (``docs/mqtt_output.md``), apart from the connection.

What is here is pure naming: which topic a device's ``auth``, ``liveness``,
``events`` and ``availability`` go to, the daemon's own availability topic
in multi-device mode, the default client id, and which topic carries the
connection's one last will. :class:`~ecgstream.publish.mqtt.MqttPublisher`
owns a :class:`Topics` and adds the network; the Home Assistant discovery
configs (:mod:`.discovery`) name the same topics, so both read them here.
"""

from __future__ import annotations

import socket

from .checks import check_device

__all__ = ["Topics", "check_prefix"]


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a usable topic prefix.

    Raises
    ------
    ValueError
        Empty, containing ``+``, ``#`` or NUL, or starting or ending with ``/``.
    """
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "+#\0") \
            or prefix.startswith("/") or prefix.endswith("/"):
        raise ValueError(f"prefix {prefix!r} is not a valid topic prefix")
    return prefix


class Topics:
    """Topic names of one publisher: ``<prefix>/<device>/<kind>`` and the daemon's own.

    Last will: a connection carries exactly one. With one will device (a
    daemon serving one known device) it is that device's ``availability`` =
    ``offline``. Otherwise (multi-device mode) it is
    ``<prefix>/daemon/<client_id>/availability`` = ``offline``, where the
    daemon also publishes its own ``online``; consumers must check that topic
    too, since the devices' own availability topics cannot all be covered by
    the one will.

    Parameters
    ----------
    prefix : str
        Topic prefix (:func:`check_prefix`).
    client_id : str, optional
        The MQTT client id; default ``ecgstream-<hostname>-<device>`` with one
        will device, else ``ecgstream-<hostname>``.
    """

    def __init__(self, prefix: str = "ecgstream", client_id: str | None = None) -> None:
        self.prefix = check_prefix(prefix)
        self._client_id_arg = client_id
        self.will_devices: list[str] = []

    def set_will_devices(self, devices: list[str]) -> None:
        """Serve exactly one known device: its availability becomes the last will.

        Raises
        ------
        ValueError
            More than one device (a connection carries one will).
        PayloadError
            A device id that is not one topic level.
        """
        devices = list(devices)
        if len(devices) > 1:
            raise ValueError("a connection carries one last will: give at most one will device; "
                             "several devices use the daemon availability topic")
        for d in devices:
            check_device(d)
        self.will_devices = devices

    @property
    def client_id(self) -> str:
        """The MQTT client id in use."""
        if self._client_id_arg:
            return self._client_id_arg
        host = socket.gethostname().split(".")[0] or "host"
        return f"ecgstream-{host}-{self.will_devices[0]}" if self.will_devices else f"ecgstream-{host}"

    @property
    def daemon_topic(self) -> str | None:
        """``<prefix>/daemon/<client_id>/availability`` in multi-device mode, else ``None``."""
        if self.will_devices:
            return None
        level = "".join("_" if c in "/+#\0" else c for c in self.client_id)
        return f"{self.prefix}/daemon/{level}/availability"

    def topic(self, device: str, kind: str) -> str:
        """Topic of ``kind`` (``auth``, ``liveness``, ``events``, ``availability``) of a device."""
        return f"{self.prefix}/{device}/{kind}"

    @property
    def will_topic(self) -> str:
        """Topic of the last will."""
        if self.will_devices:
            return self.topic(self.will_devices[0], "availability")
        assert self.daemon_topic is not None
        return self.daemon_topic
