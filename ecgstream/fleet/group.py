"""A daemon as a member of a group: ownership, hand-over, takeover, ``served_by``.

:class:`FleetController` ties the three parts of a group daemon together
(``PartitionedMqttSource.join_fleet`` builds it; ``wiring.build_daemon``
calls that):

- :class:`~ecgstream.fleet.member.FleetMember` says who is alive; on every
  change the controller computes this daemon's partitions
  (:func:`~ecgstream.fleet.partitions.assignment`) and hands them to the
  source (subscribe the new, unsubscribe the old);
- **hand-over** (a partition moves away, e.g. a daemon joined): the
  processing thread (:meth:`tick`) drops the pipelines of that partition's
  devices, publishing ``unknown`` for each ("partition moved"), and the
  publisher forgets them (it must neither republish their states on a
  reconnect nor mark them ``offline`` when this daemon stops); chunks still
  queued for them are refused (:meth:`admit`). The new owner starts them
  fresh: ``unknown`` until its own decision. No evidence moves with a device
  (no beats, no adapted template, no attempt counts): a stream restarts;
- **takeover** (a member died: its will, or its lease ran out): for each
  device in the dead member's last record whose partition is now ours, and
  *before* subscribing that partition, the controller publishes the
  device's ``availability`` = ``offline`` and a retained ``auth`` =
  ``unknown`` ("daemon X gone"): the dead daemon's retained
  ``authenticated`` is overwritten at once, whether or not the device is
  still streaming. When its chunks arrive the daemon announces it ``online``
  again and decides from scratch;
- every ``auth`` and ``liveness`` payload carries ``"served_by": <id>``,
  the daemon whose ``<prefix>/daemon/<id>/availability`` (its daemon-level
  last will) vouches for it: :mod:`ecgstream.reader` refuses a state whose
  serving daemon is not ``online`` (docs/mqtt_output.md, "Groups").
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..sources.base import SourceError
from .member import FleetMember
from .partitions import assignment, owner_of, partition_of

__all__ = ["FleetController", "FleetPublisher"]

log = logging.getLogger(__name__)


class FleetPublisher:
    """The daemon's publisher with ``served_by`` added to its states; leaves the group on close."""

    def __init__(self, inner: Any, controller: FleetController) -> None:
        self.inner = inner
        self.controller = controller

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def auth(self, device: str, payload: dict, valid_until: float) -> None:
        self.inner.auth(device, {**payload, "served_by": self.controller.id}, valid_until)

    def liveness(self, device: str, payload: dict, valid_until: float) -> None:
        self.inner.liveness(device, {**payload, "served_by": self.controller.id}, valid_until)

    def close(self) -> None:
        """Final states and ``offline`` first (acknowledged), then leave: the new owners come after."""
        try:
            self.inner.close()
        finally:
            self.controller.stop()


class FleetController:
    """One daemon's part in a group (module docs)."""

    def __init__(self, daemon: Any, source: Any) -> None:
        pub = daemon.publisher
        topic = getattr(pub, "daemon_topic", None)
        if topic is None:
            why = "set [daemon] stdout = false" if hasattr(pub, "publishers") else "set [mqtt] host"
            raise SourceError("a group daemon (partitions=) publishes its states through the broker in "
                              f"multi-device mode: {why}")
        if getattr(pub, "link", None) is not None and pub.link.protocol != "3.1.1":
            log.warning("fleet: [mqtt] protocol is %r; nats-server 2.9 speaks MQTT 3.1.1 only",
                        pub.link.protocol)
        self.daemon = daemon
        self.source = source
        self.id: str = topic.split("/")[-2]
        self.partitions: int = source.partitions
        self._owned: frozenset[int] = frozenset()
        self._parts: dict[str, int] = {}
        self._live: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self.takeovers = 0  # devices of dead members whose states this daemon overwrote
        self.handovers = 0  # devices dropped because their partition moved away
        self.member = FleetMember(source.host, source.port, source.link, prefix=source.prefix,
                                  group=source.group, member_id=self.id, partitions=self.partitions,
                                  heartbeat_s=source.heartbeat_s, lease_s=source.lease_s,
                                  devices=lambda: list(daemon.devices), on_change=self._on_change)
        daemon.publisher = FleetPublisher(pub, self)
        daemon.fleet = self
        source.set_partitions(frozenset())  # nothing until the first live set

    @property
    def owned(self) -> frozenset[int]:
        return self._owned

    def partition(self, device: str) -> int:
        k = self._parts.get(device)
        if k is None:
            k = self._parts[device] = partition_of(device, self.partitions)
            if len(self._parts) > 100_000:
                self._parts.clear()
        return k

    # -- the group's changes (the member's thread) ------------------------------------------------
    def _on_change(self, live: frozenset[str], dead: list[dict[str, Any]]) -> None:
        mine = assignment(live, self.partitions).get(self.id, frozenset())
        for rec in dead:
            self._take_over(rec, mine)
        with self._lock:
            self._owned = mine
            self._live = live
        self.source.set_partitions(mine)

    def _take_over(self, rec: dict[str, Any], mine: frozenset[int]) -> None:
        """Overwrite the states of a dead member's devices whose partition is now ours."""
        from ..publish.payloads import auth_payload

        who = str(rec.get("id"))
        devices = rec.get("devices")
        if not isinstance(devices, list):
            return
        pub = self.daemon.publisher
        valid_for = self.daemon.decision_cfg.valid_for_s
        for dev in devices:
            if not isinstance(dev, str) or self.partition(dev) not in mine or dev in self.daemon.devices:
                continue
            try:
                t = self.daemon.wall()
                pub.availability(dev, False)
                pub.auth(dev, auth_payload(state="unknown", subject=None, score=None, threshold=None,
                                           beats_used=0, time_s=t, valid_until=t + valid_for, seq=0,
                                           model_id=self.daemon.model_id,
                                           reason=f"daemon {who} gone; taken over by {self.id}"), t + valid_for)
            except ValueError as exc:  # a device id the publisher refuses: nothing to overwrite
                log.warning("fleet: device %r of %s not taken over: %s", dev[:80], who, exc)
                continue
            self.takeovers += 1
        log.info("fleet: member %s gone (%s); %d of its %d devices are now served here", who,
                 rec.get("reason") or "lease expired", sum(1 for d in devices if isinstance(d, str)
                                                           and self.partition(d) in mine), len(devices))

    # -- the daemon's hooks (the processing thread) -----------------------------------------------
    def admit(self, device: str) -> bool:
        """Whether this daemon serves ``device`` now (its partition is ours)."""
        return self.partition(device) in self._owned

    def tick(self, daemon: Any) -> None:
        """Hand over the devices whose partition moved away."""
        for dev in [d for d in daemon.devices if not self.admit(d)]:
            k = self.partition(dev)
            to = owner_of(k, self._live) or "nobody"
            daemon.drop_device(dev, f"partition {k} moved to daemon {to}")
            forget = getattr(daemon.publisher.inner, "forget", None)
            if forget is not None:
                forget(dev)
            self.handovers += 1

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Join (the source's thread, before it subscribes): the first live set sets the partitions."""
        self.member.start()

    def stop(self) -> None:
        self.member.leave()
