"""The MQTT source of a group daemon: whole partitions, subscribed and dropped while running.

``mqtt://nats:1883/ecgstream/+/ecg?partitions=8&group=lab`` is the topic the
wearables publish to, plus the group's partition count: nats-server's
mapping (:mod:`ecgstream.fleet.natsconf`) delivers ``<prefix>/<device>/ecg``
as ``<prefix>/p/<k>/<device>/ecg``, and this source subscribes
``<prefix>/p/<k>/+/ecg`` for exactly the partitions k its daemon owns
(:mod:`ecgstream.fleet.partitions`), changing them at run time when the
group changes. Every rule of :class:`~ecgstream.sources.mqtt_source.MqttSource`
(``seq``, gaps, limits, message authentication) applies unchanged; this
class only chooses the subscriptions and refuses what is not its own:

- a message of a partition it does not own (one still in flight after an
  unsubscribe) is dropped, and the device's stream state is forgotten, so a
  partition that comes back later starts its devices as new streams;
- a message whose partition level disagrees with ``fnv1a32(device) % P``
  (a wearable publishing to ``<prefix>/p/...`` directly, or a nats-server
  configured with another partition count) is dropped and logged: the
  daemon would otherwise serve a device another daemon serves too.

Extra URI parameters: ``partitions`` (1..1024, required), ``group`` (one
topic level, default ``default``), ``heartbeat`` and ``lease`` (seconds,
default 1 and 3; see :mod:`ecgstream.fleet.member`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..core.types import SampleChunk
from ..sources.base import SourceError, SourceURI
from ..sources.mqtt_source import MqttSource
from .partitions import check_partitions, partition_of

__all__ = ["PartitionedMqttSource"]

log = logging.getLogger(__name__)


class PartitionedMqttSource(MqttSource):
    """An :class:`MqttSource` over the partitions its daemon owns (module docs)."""

    ALLOWED = MqttSource.ALLOWED | {"partitions", "group", "heartbeat", "lease"}

    def __init__(self, uri: str, **kwargs: Any) -> None:
        super().__init__(uri, **kwargs)
        u = SourceURI.parse(uri)
        try:
            self.partitions = check_partitions(int(u.params.get("partitions", "")))
            self.heartbeat_s = float(u.params.get("heartbeat", "1"))
            self.lease_s = float(u.params.get("lease", "3"))
        except ValueError as exc:
            raise SourceError(f"source {uri!r}: {exc} (partitions: an integer 1..1024; heartbeat, "
                              "lease: seconds)") from None
        if not 0 < self.heartbeat_s < self.lease_s <= 60:
            raise SourceError(f"source {uri!r}: need 0 < heartbeat < lease <= 60 seconds")
        self.group = u.params.get("group", "default")
        if not self.group or any(c in self.group for c in "/+#\0"):
            raise SourceError(f"source {uri!r}: group {self.group!r} is not one topic level")
        if self._plus is None:
            raise SourceError(f"source {uri!r}: a group daemon serves many devices: use a filter "
                              "with '+', like ecgstream/+/ecg")
        levels = self.topic.split("/")
        self.prefix = "/".join(levels[:self._plus])
        self._before = levels[:self._plus] + ["p"]
        self._after = levels[self._plus + 1:]
        self._owned: frozenset[int] = frozenset(range(self.partitions))
        self._forget: set[str] = set()
        self._client: Any = None
        self._sub_lock = threading.Lock()
        self.not_owned = 0  # messages of partitions not (or no longer) owned
        self.misrouted = 0  # messages whose partition level is not the device's partition
        #: The group controller (ecgstream.fleet.group), set by join_fleet().
        self.controller: Any = None

    # -- topics -------------------------------------------------------------------------------
    def filter_of(self, partition: int) -> str:
        """The subscription of one partition: ``<prefix>/p/<k>/+/ecg``."""
        return "/".join([*self._before, str(partition), "+", *self._after])

    @property
    def owned(self) -> frozenset[int]:
        """The partitions subscribed (or to be subscribed on connection) now."""
        return self._owned

    def _split(self, topic: str) -> tuple[int, str] | None:
        levels = topic.split("/")
        nb = len(self._before)
        if len(levels) != nb + 2 + len(self._after) or levels[:nb] != self._before \
                or levels[nb + 2:] != self._after or not levels[nb].isdigit() or not levels[nb + 1]:
            return None
        return int(levels[nb]), levels[nb + 1]

    def device_of(self, topic: str) -> str | None:
        """The device of a partitioned topic, or None when it is not one."""
        kd = self._split(topic)
        return kd[1] if kd is not None else None

    def handle(self, topic: str, payload: bytes, now: float, retain: bool = False) -> SampleChunk | None:
        """Drop what is not this daemon's, then the per-device rules of :class:`MqttSource`."""
        if self._forget:
            with self._sub_lock:
                forget, self._forget = self._forget, set()
            for dev in forget:
                self._devices.pop(dev, None)
        kd = self._split(topic)
        if kd is not None:
            k, dev = kd
            if k not in self._owned:
                self.not_owned += 1
                self._devices.pop(dev, None)
                return None
            if "." in dev or partition_of(dev, self.partitions) != k:
                self.misrouted += 1
                if self.misrouted == 1 or self.misrouted % 1000 == 0:
                    log.error("fleet: device %r arrived on partition %d but maps to %s with %d partitions "
                              "(published to the partition topic directly, a '.' in the id, or nats-server "
                              "mapped with another count?); %d such messages dropped", dev[:80], k,
                              "no partition" if "." in dev else partition_of(dev, self.partitions),
                              self.partitions, self.misrouted)
                return None
        return super().handle(topic, payload, now, retain)

    # -- subscriptions ------------------------------------------------------------------------------
    def set_partitions(self, owned: frozenset[int] | set[int]) -> None:
        """Own exactly ``owned`` from now: subscribe the new ones, unsubscribe the others."""
        owned = frozenset(owned)
        if any(not 0 <= k < self.partitions for k in owned):
            raise ValueError(f"partitions out of 0..{self.partitions - 1}: {sorted(owned)}")
        with self._sub_lock:
            old, self._owned = self._owned, owned
            added, removed = sorted(owned - old), sorted(old - owned)
            self._forget |= {d for d in list(self._devices) if partition_of(d, self.partitions) in removed}
            client = self._client
            if client is None:
                return  # _on_up subscribes the owned set
            # (a client of a lost connection refuses these; the next _on_up subscribes the owned set)
            if removed:
                client.unsubscribe([self.filter_of(k) for k in removed])
            if added:
                client.subscribe([(self.filter_of(k), self.qos) for k in added])
        if added or removed:
            log.info("fleet: partitions %s (+%s -%s)", sorted(owned), added, removed)

    def _on_up(self, client: Any, first: bool) -> None:
        with self._sub_lock:
            self._client = client
            owned = sorted(self._owned)
            if not first:
                self._reconnected()
            if owned:
                client.subscribe([(self.filter_of(k), self.qos) for k in owned])
                return
        # no partition of this group is ours (more daemons than partitions): up, nothing to hear
        self._suback = {"ok": True}
        self.connected.set()
        self._first.set()

    def join_fleet(self, daemon: Any) -> Any:
        """Make ``daemon`` a member of this source's group (:class:`ecgstream.fleet.group.FleetController`)."""
        from .group import FleetController

        self.controller = FleetController(daemon, self)
        return self.controller

    def run(self, sink: Any, stop: threading.Event) -> None:
        """Join the group (first live set, hence the first partitions), then subscribe and deliver."""
        if self.controller is not None:
            self.controller.start()
        super().run(sink, stop)
