"""What the MQTT publisher still owes the broker: latest states, queued events, unacknowledged messages.

Three pieces of bookkeeping of :class:`~ecgstream.publish.mqtt.MqttPublisher`,
apart from its topics and connection, and free of paho and sockets:

- :class:`LatestStates`: the latest auth and liveness state per device,
  which every (re)connect republishes (retained kinds need no queue: only
  the latest matters), and which of them wait for a connection;
- :class:`EventQueue`: the events that wait for a connection, a FIFO of
  bounded length (when full the oldest is dropped, counted and logged);
- :class:`Inflight`: the QoS 1 messages sent on the current connection and
  not yet acknowledged, by message id. paho's network thread acknowledges
  them while it holds its own message mutex, so the table has a lock of its
  own and never waits for the publisher's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from .payloads import stale_replacement
from .protocol import PublisherStats

__all__ = ["EventQueue", "Inflight", "LatestStates"]

log = logging.getLogger("ecgstream.publish")

Event = tuple[str, dict[str, Any]]  # (device, payload)


class LatestStates:
    """The latest state per ``(device, kind)`` and its ``valid_until``; ``pending``: those not yet sent.

    :meth:`take` never hands out a state whose ``valid_until`` has passed: it
    replaces it by its fail-closed stand-in (:func:`stale_replacement`,
    stamped ``now``), so a stale ``authenticated`` is never published.
    """

    def __init__(self) -> None:
        self._latest: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}
        #: Keys whose latest state waits for a connection.
        self.pending: set[tuple[str, str]] = set()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._latest))

    def put(self, device: str, kind: str, payload: dict[str, Any], valid_until: float) -> None:
        self._latest[(device, kind)] = (dict(payload), float(valid_until))

    def forget(self, device: str) -> None:
        """Drop a device's states (another daemon serves it now): never resent from here."""
        for kind in ("auth", "liveness"):
            self._latest.pop((device, kind), None)
            self.pending.discard((device, kind))

    def take(self, device: str, kind: str, now: float) -> tuple[dict[str, Any], float]:
        """The state to send now: the latest, or its stand-in once expired."""
        payload, valid_until = self._latest[(device, kind)]
        if valid_until <= now:
            payload, valid_until = stale_replacement(kind, payload, valid_until, now)
            self._latest[(device, kind)] = (payload, valid_until)
        return payload, valid_until


class EventQueue:
    """Events waiting for a connection, oldest first; at most ``maxlen`` of them.

    Parameters
    ----------
    maxlen : int
        Capacity; when full, a new event drops the oldest one.
    stats : PublisherStats
        ``stats.dropped`` counts the events dropped.
    host, port : str, int
        The broker, for the warning logged on drops (once, then every 100).
    """

    def __init__(self, maxlen: int, stats: PublisherStats, host: str, port: int) -> None:
        if maxlen < 1:
            raise ValueError("events_max must be positive")
        self.maxlen = int(maxlen)
        self.stats = stats
        self.host, self.port = host, port
        self._q: deque[Event] = deque()

    def __len__(self) -> int:
        return len(self._q)

    def __iter__(self) -> Iterator[Event]:
        return iter(self._q)

    def put(self, device: str, payload: dict[str, Any], front: bool = False) -> None:
        """Queue an event (``front``: one sent but lost with its connection, which goes first).

        A full queue drops its oldest event, or with ``front`` the event given.
        """
        if len(self._q) >= self.maxlen:
            self._count_dropped(1, "event queue full")
            if front:
                return
            self._q.popleft()
        if front:
            self._q.appendleft((device, payload))
        else:
            self._q.append((device, payload))

    def popleft(self) -> Event:
        """The oldest event, taken from the queue."""
        return self._q.popleft()

    def _count_dropped(self, n: int, why: str) -> None:
        before = self.stats.dropped
        self.stats.dropped += n
        if before == 0 or before // 100 != self.stats.dropped // 100:
            log.warning("MQTT: %s while disconnected from %s:%d: oldest events dropped (%d so far)",
                        why, self.host, self.port, self.stats.dropped)


class Inflight:
    """QoS 1 messages not yet acknowledged, by paho message id, on the current connection.

    Parameters
    ----------
    stats : PublisherStats
        An acknowledgement counts in ``stats.published``, a refusal in
        ``stats.dropped``.
    generation : callable
        The current connection's generation; acknowledgements of clients of
        another generation are ignored (message ids are per client).
    """

    def __init__(self, stats: PublisherStats, generation: Callable[[], int]) -> None:
        self.stats = stats
        self._generation = generation
        self._lock = threading.Lock()
        self._acked = threading.Condition(self._lock)
        # mid -> (kind, device, event payload, topic); events are kept to queue them again
        self._table: dict[int, tuple[str, str | None, dict[str, Any] | None, str]] = {}
        self._early: dict[int, bool] = {}  # mid -> refused, acks seen before the mid was recorded

    def __len__(self) -> int:
        return len(self._table)

    def record(self, mid: int, kind: str, topic: str, device: str | None = None,
               payload: dict[str, Any] | None = None) -> None:
        """A message ``mid`` was handed to paho (only an event keeps its ``device`` and ``payload``)."""
        with self._lock:
            if mid in self._early:
                self._count(self._early.pop(mid), topic, None)
            else:
                self._table[mid] = (kind, device, payload if kind == "event" else None, topic)

    def ack(self, gen: int, mid: int, rc: Any) -> None:
        """paho's ``on_publish`` of a client of generation ``gen``: ``mid`` was acknowledged (or refused)."""
        with self._lock:
            if gen != self._generation():
                return
            entry = self._table.pop(mid, None)
            refused = bool(getattr(rc, "is_failure", False))
            if entry is None:
                self._early[mid] = refused
            else:
                self._count(refused, entry[3], rc)
            self._acked.notify_all()

    def _count(self, refused: bool, topic: str, rc: Any) -> None:
        if refused:
            self.stats.dropped += 1
            if rc is None:
                log.warning("MQTT broker refused the publish to %s", topic)
            else:
                log.warning("MQTT broker refused the publish to %s: %s", topic, rc)
        else:
            self.stats.published += 1

    def clear(self) -> None:
        """A fresh connection: nothing of the last one is waited for."""
        with self._lock:
            self._table.clear()
            self._early.clear()

    def wait(self, deadline: float) -> int:
        """Wait until every message is acknowledged or ``deadline`` (monotonic) passes; how many are left."""
        with self._lock:
            while self._table and (left := deadline - time.monotonic()) > 0:
                self._acked.wait(left)
            return len(self._table)

    def take_events(self) -> list[Event]:
        """A lost connection: empty the table; the events it held, oldest first."""
        with self._lock:
            events = [(d, p) for k, d, p, _ in self._table.values() if k == "event" and d and p]
            self._table.clear()
            self._early.clear()
            self._acked.notify_all()
        return events
