"""Home Assistant MQTT discovery: the retained config messages that make each device an HA device.

Pure functions and one settings type; :class:`~ecgstream.publish.mqtt.MqttPublisher`
sends what :func:`entity_configs` returns (when a device is first announced
and after every reconnect) and :func:`config_topics` with empty payloads
(only when asked). Off unless ``[homeassistant] enabled = true``.

Per device, two entities on one HA device:

- ``sensor`` *Authentication*: state ``authenticated`` / ``rejected`` /
  ``unknown`` from ``<prefix>/<device>/auth`` (``authenticated`` only when
  the payload's ``liveness`` is ``live``), attributes ``subject``,
  ``score``, ``valid_until`` and ``reason``;
- ``binary_sensor`` *Liveness* (``device_class: occupancy``, "on means
  occupied, off means clear": a live wearer on the electrodes or not) from
  ``<prefix>/<device>/liveness``, attributes ``leads_on``,
  ``heart_rate_bpm``, ``signal_quality`` and ``reasons``.

What this follows, from Home Assistant's MQTT documentation
(``home-assistant.io/integrations/mqtt/``, section "MQTT Discovery", and the
``sensor.mqtt`` / ``binary_sensor.mqtt`` pages):

- topic ``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config``;
  the ids "must only consist of characters from the character class
  ``[a-zA-Z0-9_-]``", and "best practice for entities with a ``unique_id``
  is to set ``<object_id>`` to ``unique_id`` and omit the ``<node_id>``":
  so the topic is ``<discovery_prefix>/<component>/<unique_id>/config``,
  and a device id with other characters is mapped by :func:`object_id`;
- configs are retained ("without this, the sensor will not be available
  after Home Assistant restarts"), so the daemon need not listen to HA's
  birth message (``homeassistant/status``); "a configuration update with an
  empty payload will cause a previously discovered device to be deleted";
- ``availability`` is a list of topics with ``payload_available`` /
  ``payload_not_available``, and ``availability_mode: all`` means
  "``payload_available`` must be received on all configured availability
  topics before the entity is marked as online": the device's availability
  and, in multi-device mode, the daemon's (the one last will covers only
  the daemon; ``docs/mqtt_output.md`` "Last will");
- ``expire_after`` (seconds): after it without a new message the state is
  ``unavailable``. It is the daemon's ``valid_for_s`` rounded up, so HA stops
  showing a state exactly when the state stops meaning anything;
- ``device`` (``identifiers``, ``name``, ``manufacturer``, ``model``,
  ``sw_version``) ties both entities to one device in HA's registry, and
  ``origin`` names the software that sent the config (HA logs it; added to
  HA by home-assistant/core PR #98782);
- unknown keys are ignored by HA, and abbreviated key names are accepted
  (the list in the same section): ``val_tpl`` for ``value_template`` and
  ``json_attr_tpl`` for ``json_attributes_template``. The abbreviations are
  used for these two only, because every published payload passes
  :func:`~ecgstream.publish.checks.check_payload`, which refuses any key
  containing ``template`` (the daemon never publishes biometric templates);
  the guard stays as strict as it is.

Why no ``device_class: enum`` on the auth sensor: one of its states is the
word ``unknown``, which HA also uses for "no state"; a plain text sensor
shows it the same way without HA validating it against a list of options.
Why ``unique_id`` includes the node id (default: the MQTT client id): two
daemons serving a device id of the same name are two HA devices, as their
availability differs.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

from .. import __version__
from .checks import check_device, check_payload, encode
from .topics import Topics, check_prefix

__all__ = ["COMPONENTS", "Discovery", "DiscoveryRegistry", "config_topics", "entity_configs", "object_id", "unique_id"]

#: HA's character class for the ids in a discovery topic.
_ID_OK = re.compile(r"[A-Za-z0-9_-]+")
_NOT_OK = re.compile(r"[^A-Za-z0-9_-]")
#: Ids longer than this are cut and made unique by a hash.
_ID_MAX = 64
#: The two entities of a device: kind (the ecgstream topic) -> HA component.
COMPONENTS = {"auth": "sensor", "liveness": "binary_sensor"}

_AUTH_ATTRS = ("{{ {'subject': value_json.subject, 'score': value_json.score, "
               "'valid_until': value_json.valid_until, 'reason': value_json.reason, "
               "'liveness': value_json.liveness} | tojson }}")
_LIVE_ATTRS = ("{{ {'leads_on': value_json.leads_on, 'heart_rate_bpm': value_json.heart_rate_bpm, "
               "'signal_quality': value_json.signal_quality, 'reasons': value_json.reasons} | tojson }}")


@dataclass(frozen=True)
class Discovery:
    """Home Assistant discovery settings of a publisher (``[homeassistant]``).

    Parameters
    ----------
    discovery_prefix : str
        HA's discovery prefix (its MQTT integration's setting; default
        ``homeassistant``).
    node_id : str
        This daemon's id in the entities' ``unique_id``: ``[A-Za-z0-9_-]``,
        at most 64. Empty: derived from the MQTT client id (stable as long as
        the host name and client id are). Set it to keep the HA entities when
        either changes.
    expire_after_s : int
        HA's ``expire_after`` (whole seconds, >= 1).
    remove_on_stop : bool
        Delete the entities (empty retained configs) on a clean stop, if the
        broker is connected then. Default off: HA users expect entities to
        stay across daemon restarts (they show ``unavailable`` meanwhile,
        through the availability topics).

    Raises
    ------
    ValueError
        A bad prefix, node id or ``expire_after_s``.
    """

    discovery_prefix: str = "homeassistant"
    node_id: str = ""
    expire_after_s: int = 5
    remove_on_stop: bool = False

    def __post_init__(self) -> None:
        try:
            check_prefix(self.discovery_prefix)
        except ValueError:
            raise ValueError(f"discovery_prefix {self.discovery_prefix!r} is not a valid topic "
                             "prefix (non-empty, no '+', '#', no leading or trailing '/')") from None
        if self.node_id and not (len(self.node_id) <= _ID_MAX and _ID_OK.fullmatch(self.node_id)):
            raise ValueError(f"node_id {self.node_id!r} must be 1-{_ID_MAX} characters of "
                             "[A-Za-z0-9_-] (Home Assistant's rule for discovery ids)")
        if isinstance(self.expire_after_s, bool) or not isinstance(self.expire_after_s, int) \
                or self.expire_after_s < 1:
            raise ValueError(f"expire_after_s must be a whole number of seconds >= 1, "
                             f"got {self.expire_after_s!r}")

    @classmethod
    def from_config(cls, cfg: Any) -> Discovery | None:
        """The settings of ``[homeassistant]``, or None unless ``enabled``; ``expire_after`` from ``[decision]``."""
        ha = cfg.homeassistant
        if not ha.enabled:
            return None
        return cls(discovery_prefix=ha.discovery_prefix, node_id=ha.node_id,
                   expire_after_s=expire_after(cfg.decision.valid_for_s),
                   remove_on_stop=ha.remove_on_stop)


def expire_after(valid_for_s: float) -> int:
    """HA's ``expire_after`` for states valid ``valid_for_s`` seconds: rounded up, at least 1."""
    if not (isinstance(valid_for_s, (int, float)) and math.isfinite(valid_for_s) and valid_for_s > 0):
        raise ValueError(f"valid_for_s must be a positive number of seconds, got {valid_for_s!r}")
    return max(1, math.ceil(valid_for_s))


def object_id(text: str) -> str:
    """``text`` as a discovery id (``[A-Za-z0-9_-]``, at most 64): as it is when it fits.

    Otherwise each other character becomes ``_``, the result is cut to 55
    characters and ``_`` plus 8 hex digits of the SHA-256 of ``text`` are
    appended, so different ids stay different (``a.b`` and ``a_b``, ``x``
    and ``x`` cut from two long ids) and the same id always maps the same.

    Raises
    ------
    PayloadError
        ``text`` is not a device id (:func:`check_device`).
    """
    check_device(text)
    if len(text) <= _ID_MAX and _ID_OK.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    return f"{_NOT_OK.sub('_', text)[:_ID_MAX - 9]}_{digest}"


def node_of(disc: Discovery, topics: Topics) -> str:
    """The node id in use: the configured one, else the client id as a discovery id."""
    if disc.node_id:
        return disc.node_id
    return object_id("".join("_" if c in "/+#\0" else c for c in topics.client_id))


def unique_id(disc: Discovery, topics: Topics, device: str, kind: str) -> str:
    """``ecgstream_<node>_<device>_<kind>``: the same for this daemon and device on every start."""
    if kind not in COMPONENTS:
        raise ValueError(f"kind must be one of {', '.join(COMPONENTS)}, not {kind!r}")
    return f"ecgstream_{node_of(disc, topics)}_{object_id(device)}_{kind}"


def config_topics(disc: Discovery, topics: Topics, device: str) -> list[str]:
    """The discovery config topics of a device (auth sensor, liveness binary sensor)."""
    return [f"{disc.discovery_prefix}/{comp}/{unique_id(disc, topics, device, kind)}/config"
            for kind, comp in COMPONENTS.items()]


def _availability(topics: Topics, device: str) -> list[dict[str, str]]:
    avail = [topics.topic(device, "availability")]
    if topics.daemon_topic is not None:
        avail.append(topics.daemon_topic)
    return [{"topic": t, "payload_available": "online", "payload_not_available": "offline"}
            for t in avail]


#: The auth sensor's state: ``authenticated`` only with ``liveness: live`` in the same payload
#: (issue 16, live before accepted); an authenticated state without it shows ``unknown``.
_AUTH_STATE = ("{{ value_json.state if value_json.state != 'authenticated' "
               "or value_json.liveness == 'live' else 'unknown' }}")


def entity_configs(disc: Discovery, topics: Topics, device: str) -> list[tuple[str, dict[str, Any]]]:
    """The retained discovery messages of a device: ``[(topic, payload), ...]``, auth then liveness.

    Each payload has passed :func:`check_payload`.

    Raises
    ------
    PayloadError
        ``device`` is not one topic level.
    """
    check_device(device)
    node = node_of(disc, topics)
    common = {
        "availability": _availability(topics, device),
        "availability_mode": "all",
        "expire_after": disc.expire_after_s,
        "qos": 1,
        "device": {"identifiers": [f"ecgstream_{node}_{object_id(device)}"], "name": f"ECG {device}",
                   "manufacturer": "ecgstream", "model": "ECG continuous authentication",
                   "sw_version": __version__},
        "origin": {"name": "ecgstream", "sw_version": __version__},
    }
    auth_t, live_t = topics.topic(device, "auth"), topics.topic(device, "liveness")
    auth = {"name": "Authentication", "unique_id": unique_id(disc, topics, device, "auth"),
            "icon": "mdi:heart-pulse", "state_topic": auth_t, "val_tpl": _AUTH_STATE,
            "json_attributes_topic": auth_t, "json_attr_tpl": _AUTH_ATTRS, **common}
    live = {"name": "Liveness", "unique_id": unique_id(disc, topics, device, "liveness"),
            "device_class": "occupancy", "state_topic": live_t,
            "val_tpl": "{{ 'ON' if value_json.live else 'OFF' }}", "payload_on": "ON",
            "payload_off": "OFF", "json_attributes_topic": live_t, "json_attr_tpl": _LIVE_ATTRS,
            **common}
    out = list(zip(config_topics(disc, topics, device), (auth, live), strict=True))
    for _, payload in out:
        check_payload(payload)
    return out


class DiscoveryRegistry:
    """Which discovery messages a publisher owes the broker: no network, the publisher sends them.

    A device's configs are made once, when it is first announced
    (:meth:`announce`); :meth:`messages` gives every known device's again
    after a reconnect, with the pending removals (empty retained payloads)
    first. The publisher holds its lock around every call.
    """

    def __init__(self, disc: Discovery, topics: Topics) -> None:
        self.disc = disc
        self.topics = topics
        self._configs: dict[str, list[tuple[str, str]]] = {}
        self._removals: set[str] = set()

    def __contains__(self, device: str) -> bool:
        return device in self._configs

    def announce(self, device: str) -> list[tuple[str, str]]:
        """A device's ``(topic, text)`` configs the first time it is announced; ``[]`` after."""
        if device in self._configs:
            return []
        msgs = [(t, encode(p)) for t, p in entity_configs(self.disc, self.topics, device)]
        self._configs[device] = msgs
        self._removals.difference_update(t for t, _ in msgs)
        return msgs

    def remove(self, devices: list[str] | None = None) -> None:
        """Forget devices (default: every known one); their removals are owed until taken."""
        for device in list(self._configs) if devices is None else devices:
            self._configs.pop(device, None)
            self._removals.update(config_topics(self.disc, self.topics, device))

    def take_removals(self) -> list[tuple[str, str]]:
        """The removals owed, ``(topic, "")`` each, now handed to the publisher."""
        out = [(t, "") for t in sorted(self._removals)]
        self._removals.clear()
        return out

    def messages(self) -> list[tuple[str, str]]:
        """After a (re)connect: pending removals, then every known device's configs."""
        return self.take_removals() + [m for msgs in self._configs.values() for m in msgs]
