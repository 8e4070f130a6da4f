"""Membership of a daemon group: who is alive, from retained records, wills and heartbeats.

Each daemon of a group keeps one MQTT connection of its own (beside the
source's and the publisher's) for the group:

- it publishes its **member record** ``<prefix>/fleet/<group>/member/<id>``,
  retained, QoS 1: ``{"id", "state": "online", "time", "seq", "lease_s",
  "partitions", "devices": [...]}``, again every ``heartbeat_s`` (1 s), with
  the devices it serves now;
- the connection's **last will** is the same topic with ``"state":
  "offline"``: when a daemon is SIGKILLed the kernel closes its sockets, the
  broker sends the will at once (measured: well under a second with
  nats-server 2.9), and every other member drops it from the live set;
- it subscribes ``<prefix>/fleet/<group>/member/+`` and keeps, per peer, the
  last record and the **local monotonic time** it was heard (never the
  peer's clock). A peer not heard for ``lease_s`` (3 s) is dead too: that
  covers a daemon that hangs (SIGSTOP, a stuck host) with its TCP connection
  still open, which no will reports until the broker's keep-alive (1.5 x
  keepalive) runs out;
- a clean leave publishes the offline record and then an empty retained
  payload (which deletes the record). A will record of a dead member is
  deleted by the smallest live member once it has handled the death, so
  retained records do not pile up.

The live set (this daemon always included while connected) goes to
``on_change(live, dead_records)`` whenever it changes, in this module's own
thread, with the last records of the members that left (their ``devices``
tell the new owners whose states to overwrite).

Why not NATS' own primitives (JetStream KV with TTL, or core request/reply):
the daemons speak MQTT only, so the same group works through any MQTT broker
that maps the partitions, and a consumer can see the membership with
``mosquitto_sub -t 'ecgstream/fleet/#'``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..mqtt import LinkOptions, MqttConnection
from ..mqtt.client import subscriber_callbacks

__all__ = ["FleetMember", "Peer"]

log = logging.getLogger(__name__)

#: Largest member record read (a record lists a daemon's devices).
MAX_RECORD_BYTES = 1024 * 1024


@dataclass
class Peer:
    """What this daemon knows of one member."""

    id: str
    record: dict[str, Any]
    heard_s: float  # local monotonic time of the last record

    @property
    def online(self) -> bool:
        return self.record.get("state") == "online"


class FleetMember:
    """This daemon's membership in a group (module docs).

    Parameters
    ----------
    host, port : str, int
        The broker (the nats-server MQTT listener).
    link : LinkOptions
        The MQTT options of the daemon's source (protocol, TLS, credentials).
    prefix, group : str
        Topics ``<prefix>/fleet/<group>/member/<id>``.
    member_id : str
        This daemon's id: its publisher's client id, so that
        ``<prefix>/daemon/<member_id>/availability`` is its daemon-level will.
    partitions : int
        The group's partition count (peers announcing another are logged).
    heartbeat_s, lease_s : float
        Record period; a peer silent for ``lease_s`` is dead.
    devices : callable
        The devices this daemon serves now (listed in its record).
    on_change : callable
        ``on_change(live: frozenset[str], dead: list[dict])``.
    """

    def __init__(self, host: str, port: int, link: LinkOptions, *, prefix: str, group: str,
                 member_id: str, partitions: int, heartbeat_s: float = 1.0, lease_s: float = 3.0,
                 devices: Callable[[], list[str]] = list,
                 on_change: Callable[[frozenset[str], list[dict[str, Any]]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        if not 0 < heartbeat_s < lease_s:
            raise ValueError(f"heartbeat_s ({heartbeat_s}) must be positive and below lease_s ({lease_s})")
        for name, v in (("group", group), ("member id", member_id)):
            if not v or any(c in v for c in "/+#\0"):
                raise ValueError(f"{name} {v!r} is not one topic level")
        self.id = member_id
        self.partitions = partitions
        self.heartbeat_s = float(heartbeat_s)
        self.lease_s = float(lease_s)
        self.base = f"{prefix}/fleet/{group}/member"
        self.topic = f"{self.base}/{member_id}"
        self._devices = devices
        self._on_change = on_change
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._peers: dict[str, Peer] = {}
        self._live: frozenset[str] = frozenset()
        self._seq = 0
        self._client: Any = None
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_p: set[str] = set()
        self.settled = threading.Event()  # the first live set was handed over
        will = json.dumps({"id": member_id, "state": "offline", "reason": "connection lost"})
        self._conn = MqttConnection(host, port, client_id=f"{member_id}-fleet", options=link, will=(self.topic, will),
                                    log=log, configure=self._configure, on_up=self._on_up,
                                    on_lost=self._connected.clear, name="ecgstream-fleet")

    # -- what the others see -------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        """This daemon's record now."""
        self._seq += 1
        return {"id": self.id, "state": "online", "time": round(self._wall(), 3), "seq": self._seq,
                "lease_s": self.lease_s, "partitions": self.partitions, "devices": sorted(self._devices())}

    def _announce(self) -> None:
        c = self._client
        if c is not None and self._connected.is_set():
            c.publish(self.topic, json.dumps(self.record()), qos=1, retain=True)

    # -- connection hooks ---------------------------------------------------------------------
    def _configure(self, client: Any, gen: int) -> None:
        subscriber_callbacks(client, self.on_record, self._subscribed.set, f"fleet records {self.base}/+", log)

    def _on_up(self, client: Any, first: bool) -> None:
        self._client = client
        self._connected.set()
        self._announce()
        client.subscribe(f"{self.base}/+", qos=1)

    # -- records in (network thread) ------------------------------------------------------------
    def on_record(self, topic: str, payload: bytes) -> None:
        """Take one member record (also usable without a broker)."""
        if not topic.startswith(self.base + "/"):
            return
        mid = topic[len(self.base) + 1:]
        if not payload:  # a deleted record
            with self._lock:
                self._peers.pop(mid, None)
            return
        if len(payload) > MAX_RECORD_BYTES:
            log.warning("fleet: record of %s too large (%d bytes): ignored", mid, len(payload))
            return
        try:
            rec = json.loads(bytes(payload).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            log.warning("fleet: record of %s is not JSON: ignored", mid)
            return
        if not isinstance(rec, dict) or rec.get("id") != mid:
            log.warning("fleet: record on %s does not name that member: ignored", topic)
            return
        p = rec.get("partitions")
        if rec.get("state") == "online" and p != self.partitions and mid not in self._warned_p:
            self._warned_p.add(mid)
            log.error("fleet: member %s uses %r partitions, this daemon %d: the group must agree "
                      "(and match nats-config --partitions)", mid, p, self.partitions)
        with self._lock:
            old = self._peers.get(mid)
            if old is not None and rec.get("state") == "offline" and "devices" not in rec:
                rec = {**old.record, "state": "offline", "reason": rec.get("reason")}
            self._peers[mid] = Peer(mid, rec, self._clock())

    # -- the live set (own thread) ------------------------------------------------------------------
    def live(self) -> frozenset[str]:
        """The members alive now by this daemon's view."""
        now = self._clock()
        with self._lock:
            alive = {p.id for p in self._peers.values()
                     if p.online and now - p.heard_s <= self.lease_s and p.id != self.id}
        if self._connected.is_set():
            alive.add(self.id)
        return frozenset(alive)

    def _evaluate(self) -> None:
        live = self.live()
        if live == self._live and self.settled.is_set():
            return
        gone = self._live - live
        with self._lock:
            dead = [dict(self._peers[m].record) for m in gone if m in self._peers]
        self._live = live
        if gone or live:
            log.info("fleet: live members %s%s", sorted(live), f" (gone: {sorted(gone)})" if gone else "")
        if self._on_change is not None:
            self._on_change(live, dead)
        self.settled.set()
        if live and min(live) == self.id:
            self._tidy(gone)

    def _tidy(self, gone: frozenset[str]) -> None:
        """Delete the retained will records of members that died (the smallest live member does it)."""
        c = self._client
        for m in gone:
            with self._lock:
                p = self._peers.get(m)
            if c is not None and p is not None and not p.online:
                c.publish(f"{self.base}/{m}", b"", qos=1, retain=True)

    def _run(self, settle_s: float) -> None:
        self._subscribed.wait(settle_s * 4)
        self._stop.wait(settle_s)  # the retained records of the others arrive meanwhile
        next_beat = self._clock() + self.heartbeat_s
        while not self._stop.is_set():
            try:
                self._evaluate()
            except Exception:  # the group thread must outlive a bug in a callback
                log.exception("fleet: membership update failed")
            now = self._clock()
            if now >= next_beat:
                self._announce()
                next_beat = now + self.heartbeat_s
            self._stop.wait(0.1)

    def start(self, settle_s: float = 0.5, wait_s: float = 10.0) -> None:
        """Connect, announce, wait ``settle_s`` for the others' records, hand over the first live set."""
        self._conn.start()
        self._thread = threading.Thread(target=self._run, args=(settle_s,), name="ecgstream-fleet-live",
                                        daemon=True)
        self._thread.start()
        if not self.settled.wait(wait_s):
            log.warning("fleet: no membership after %.0f s (broker %s:%d: %s)", wait_s, self._conn.host,
                        self._conn.port, self._conn.last_error)

    def leave(self) -> None:
        """Clean leave: offline record, then delete it; disconnect."""
        self._stop.set()
        c = self._client
        if c is not None and self._connected.is_set():
            try:
                off = c.publish(self.topic, json.dumps({"id": self.id, "state": "offline", "reason": "left"}),
                                qos=1, retain=True)
                gone = c.publish(self.topic, b"", qos=1, retain=True)
                off.wait_for_publish(2.0)
                gone.wait_for_publish(2.0)
            except (RuntimeError, ValueError) as exc:
                log.warning("fleet: leave not acknowledged: %s", exc)
        self._conn.request_stop()
        self._conn.disconnect()
        self._conn.join(3.0)
        if self._thread is not None:
            self._thread.join(2.0)
