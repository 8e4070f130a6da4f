"""The MQTT publisher: retained states, queued events, republish on every reconnect.

The connection itself (client factory, TLS, credentials, backoff, reconnect,
paho logging) is :class:`ecgstream.mqtt.MqttConnection`, shared with the MQTT
source. What is here is the publisher's own: the latest state per device
and kind, and when to (re)publish what. The topic names and last will rules
of ``docs/mqtt_output.md`` are :mod:`.topics`; the Home Assistant discovery
configs, :mod:`.discovery`; what it still owes the broker (the event queue
while disconnected, the in-flight table of QoS 1 messages), :mod:`.delivery`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from ..mqtt import Credentials, LinkOptions, MqttConnection, TlsOptions
from ..mqtt.client import expiring_json
from .checks import check_device, check_payload, encode
from .delivery import EventQueue, Inflight, LatestStates
from .discovery import Discovery, DiscoveryRegistry
from .protocol import PublishError, PublisherStats
from .topics import Topics

__all__ = ["MqttPublisher"]

# The publisher's messages keep the logger name operators know.
log = logging.getLogger("ecgstream.publish")


class MqttPublisher:
    """Publishes the daemon's states to an MQTT broker (paho-mqtt 2.x).

    Topics (:mod:`.topics`, payloads and consumer rules in ``docs/mqtt_output.md``):
    ``auth``, ``liveness``, ``availability`` retained, ``events`` not; all QoS 1.

    A connection manager thread connects, re-connects with exponential
    backoff and, after every (re)connect, republishes ``online`` and the
    latest auth and liveness state of every device (an expired state is
    replaced by its fail-closed stand-in, :func:`stale_replacement`), then the
    queued events. Each connection uses a fresh paho client with its own
    ``loop_start()`` network thread, so no message of a lost connection is
    resent after the fresh states.

    While disconnected nothing is silently lost: the latest states are kept
    and events wait in a FIFO of ``events_max`` (:mod:`.delivery`).

    Last will: one per connection, the rules of :class:`~.topics.Topics`
    (a device's ``availability`` with one will device, else the daemon's).

    Home Assistant discovery (``discovery``, off by default): the retained
    configs of :mod:`.discovery`, sent when a device is first announced and
    after every reconnect; removed only by :meth:`remove_discovery` (or
    ``remove_on_stop``), as HA users expect entities to outlive a restart.

    Parameters
    ----------
    host, port : str, int
        The broker (port 1883; 8883 for TLS by convention).
    prefix : str
        Topic prefix.
    client_id : str, optional
        MQTT client id; default ``ecgstream-<hostname>-<device>`` with one
        will device, else ``ecgstream-<hostname>``. Two daemons on one broker
        need different ids.
    protocol, keepalive, tls, retry_min_s, retry_max_s, connect_timeout_s
        The connection's :class:`~ecgstream.mqtt.LinkOptions`. Version ``"5"``
        sets a message expiry on auth and liveness, so retained states vanish
        from the broker at ``valid_until``; with ``"3.1.1"`` consumers must
        check ``valid_until``. ``connect_timeout_s`` also bounds :meth:`start`.
    username, password : str, optional
        Credentials (the password is never logged).
    on_connect_failure : {"retry", "exit"}
        A failed first connection: ``exit`` raises :class:`PublishError` from
        :meth:`start`; ``retry`` logs an ERROR and keeps trying with backoff.
        Losses after a successful start are always retried.
    clock : callable
        Unix time in seconds (for staleness and message expiry).
    will_devices : list of str, optional
        The single device this daemon serves (see "Last will").
    events_max : int
        Capacity of the event queue used while disconnected.
    close_timeout_s : float
        Bound on :meth:`close`'s wait for acknowledgements.
    discovery : Discovery, optional
        Publish Home Assistant discovery configs (:mod:`.discovery`).
    """

    def __init__(
        self,
        host: str,
        port: int = 1883,
        prefix: str = "ecgstream",
        client_id: str | None = None,
        protocol: str = "5",
        keepalive: int = 30,
        username: str | None = None,
        password: str | None = None,
        tls: TlsOptions | None = None,
        on_connect_failure: str = "retry",
        retry_max_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        will_devices: list[str] | None = None,
        events_max: int = 1000,
        connect_timeout_s: float = 10.0,
        close_timeout_s: float = 5.0,
        retry_min_s: float = 1.0,
        discovery: Discovery | None = None,
        clear_on_stop: bool = False,
    ) -> None:
        if on_connect_failure not in ("retry", "exit"):
            raise ValueError(f"on_connect_failure must be 'retry' or 'exit', not {on_connect_failure!r}")
        #: Topic names and the last-will rules.
        self.topics = Topics(prefix, client_id)
        self.host = host
        self.port = int(port)
        self.prefix = prefix
        #: Everything else of the connection, as the transport takes it.
        self.link = LinkOptions(protocol=protocol, keepalive=int(keepalive),
                                credentials=Credentials.of(username, password), tls=tls,
                                retry_min_s=float(retry_min_s), retry_max_s=float(retry_max_s),
                                connect_timeout_s=float(connect_timeout_s))
        self.on_connect_failure = on_connect_failure
        self.clock = clock
        self.close_timeout_s = float(close_timeout_s)
        self.discovery = discovery
        #: On a clean stop, delete this run's retained topics (availability, auth,
        #: liveness, HA configs) instead of leaving ``offline`` behind: for replays.
        self.clear_on_stop = bool(clear_on_stop)
        self.stats = PublisherStats()

        # _lock guards the states, the event queue and the client; it may be held while
        # calling into paho. The in-flight table has its own lock, the only one paho's
        # callbacks take (paho holds its own message mutex while calling on_publish, so
        # they must never wait for _lock).
        self._lock = threading.RLock()
        self._client: Any = None
        self._connected = False
        self._ever_connected = False  # a will is registered only once a connection is up
        self._conn: MqttConnection | None = None
        self._announced: dict[str, bool] = {}
        self._states = LatestStates()
        self._dirty_avail: set[str] = set()
        self._ha = DiscoveryRegistry(discovery, self.topics) if discovery is not None else None
        self._events = EventQueue(events_max, self.stats, host, self.port)
        self._inflight = Inflight(self.stats, lambda: self._generation)
        if will_devices:
            self.set_will_devices(will_devices)

    # -- configuration --------------------------------------------------------------
    def set_will_devices(self, devices: list[str]) -> None:
        """Serve exactly one known device, whose availability becomes the last will; before :meth:`start`.

        Raises ``ValueError`` for more than one device (a connection carries
        one will) or after :meth:`start`.
        """
        if self._conn is not None:
            raise ValueError("set_will_devices() must be called before start()")
        self.topics.set_will_devices(devices)

    # The names are the Topics' (kept here for the publisher's callers).
    will_devices = property(lambda self: self.topics.will_devices, doc="The one device served, or empty.")
    client_id = property(lambda self: self.topics.client_id, doc="The MQTT client id in use.")
    daemon_topic = property(lambda self: self.topics.daemon_topic, doc="The daemon's availability topic, or None.")
    will_topic = property(lambda self: self.topics.will_topic, doc="Topic of the last will.")

    def topic(self, device: str, kind: str) -> str:
        """Topic of ``kind`` (``auth``, ``liveness``, ``events``, ``availability``) of a device."""
        return self.topics.topic(device, kind)

    @property
    def connected(self) -> bool:
        """Whether a connection to the broker is up now."""
        return self._connected

    # -- lifecycle ------------------------------------------------------------------
    @property
    def _generation(self) -> int:
        return self._conn.generation if self._conn is not None else 0

    def start(self) -> None:
        """Start connecting; wait (at most ``connect_timeout_s``) for the first result.

        Raises
        ------
        PublishError
            With ``on_connect_failure="exit"``, when the first connection
            fails (refused, wrong credentials, TLS verification) or does not
            complete in time. The message says why.
        """
        if self._conn is not None:
            return
        timeout_s = self.link.connect_timeout_s
        self._conn = conn = MqttConnection(
            self.host, self.port, client_id=self.client_id, options=self.link,
            will=(self.will_topic, "offline"), exit_on_first_failure=self.on_connect_failure == "exit", log=log,
            configure=self._configure, on_up=self._on_up, on_lost=self._on_lost,
            on_down=self._on_down)
        conn.start()
        conn.wait_first(timeout_s + 1.0)
        if self.on_connect_failure == "exit" and not self._connected:
            why = conn.last_error or f"no answer within {timeout_s:.0f} s"
            conn.join(timeout_s + 2.0)
            raise PublishError(f"MQTT broker {self.host}:{self.port}: {why}")

    def failure(self) -> str | None:
        """Why this run's states never reached anyone (the broker never answered), else None.

        The daemon exits non-zero on it: a run that published nothing did not succeed.
        """
        if self._conn is None or self._ever_connected:
            return None
        return (f"MQTT broker {self.host}:{self.port} was never reached "
                f"({self.last_error or 'no answer'}): nothing was published")

    @property
    def last_error(self) -> str | None:
        """Why the last connection attempt failed (None after a success)."""
        return self._conn.last_error if self._conn is not None else None

    def close(self) -> None:
        """Publish ``offline`` for announced devices, wait for acks (bounded), disconnect."""
        deadline = time.monotonic() + self.close_timeout_s
        with self._lock:
            if self.discovery is not None and (self.discovery.remove_on_stop or self.clear_on_stop) \
                    and self._connected:
                self.remove_discovery()
            for device, online in self._announced.items():
                if self.clear_on_stop:
                    self._announced[device] = False
                    if self._connected:  # an empty retained message deletes the retained one
                        for kind in ("auth", "liveness", "availability"):
                            self._send(self.topic(device, kind), "", retain=True, kind="clear")
                    continue
                if online:
                    self._announced[device] = False
                    if self._connected:
                        self._send_avail(device)
            connected = self._connected
            if connected and self.daemon_topic is not None:
                self._send(self.daemon_topic, "offline", retain=True, kind="daemon")
            if not connected and self._conn is not None:
                if self._ever_connected:
                    log.warning("MQTT close while disconnected from %s:%d: 'offline' not published "
                                "(the last will on %s covers it)", self.host, self.port, self.will_topic)
                else:
                    log.error("MQTT broker %s:%d was never reached (%s): nothing was published, and no "
                              "last will was registered", self.host, self.port,
                              self.last_error or "no answer")
            if self._conn is not None:
                self._conn.request_stop()
            client = self._client
        if connected and (left := self._inflight.wait(deadline)):
            log.warning("MQTT close: %d message(s) not acknowledged within %.1f s",
                        left, self.close_timeout_s)
        if client is not None and connected and self._conn is not None:
            self._conn.disconnect()
        if self._conn is not None:
            self._conn.join(max(1.0, deadline - time.monotonic() + 2.0))

    # -- the daemon's calls -------------------------------------------------------------
    def availability(self, device: str, online: bool) -> None:
        """Announce a device; sent now, or on the next connection."""
        check_device(device)
        with self._lock:
            self._announced[device] = bool(online)
            # HA discovery: on a device's first appearance (and every reconnect, in _flush)
            configs = self._ha.announce(device) if self._ha is not None else []
            if self._connected:
                self._send_retained(configs)
                self._send_avail(device)
            else:
                self._dirty_avail.add(device)
            self._update_queued()

    def forget(self, device: str) -> None:
        """Stop announcing a device another daemon serves now: no republish, no ``offline`` at close."""
        with self._lock:
            self._announced.pop(device, None)
            self._dirty_avail.discard(device)
            self._states.forget(device)
            self._update_queued()

    def auth(self, device: str, payload: dict, valid_until: float) -> None:
        """Publish a device's auth state (retained, QoS 1, v5 expiry at ``valid_until``)."""
        self._state("auth", device, payload, valid_until)

    def liveness(self, device: str, payload: dict, valid_until: float) -> None:
        """Publish a device's liveness state (retained, QoS 1, v5 expiry at ``valid_until``)."""
        self._state("liveness", device, payload, valid_until)

    def event(self, device: str, payload: dict) -> None:
        """Publish a change event (not retained, QoS 1); queued while disconnected."""
        check_device(device)
        check_payload(payload)
        encode(payload)
        with self._lock:
            if self._connected:
                self._send(self.topic(device, "events"), encode(payload), retain=False,
                           kind="event", device=device, payload=payload)
            else:
                self._events.put(device, payload)
            self._update_queued()

    def remove_discovery(self, devices: list[str] | None = None) -> None:
        """Delete devices' HA entities (default: all known): empty retained configs, now or on connecting.

        A device announced again later is discovered again. No-op without ``discovery``.
        """
        if self._ha is None:
            return
        with self._lock:
            self._ha.remove(devices)
            if self._connected:
                self._send_retained(self._ha.take_removals())

    # -- internals (hold self._lock) ----------------------------------------------------
    def _state(self, kind: str, device: str, payload: dict, valid_until: float) -> None:
        check_device(device)
        check_payload(payload)
        encode(payload)
        with self._lock:
            self._states.put(device, kind, payload, valid_until)
            if self._connected:
                self._send_state(device, kind)
            else:
                self._states.pending.add((device, kind))
            self._update_queued()

    def _update_queued(self) -> None:
        self.stats.queued = len(self._states.pending) + len(self._dirty_avail) + len(self._events)

    def _send_avail(self, device: str) -> None:
        word = "online" if self._announced[device] else "offline"
        self._send(self.topic(device, "availability"), word, retain=True, kind="availability")

    def _send_retained(self, msgs: list[tuple[str, str]]) -> None:
        for topic, text in msgs:
            self._send(topic, text, retain=True, kind="discovery")

    def _send_state(self, device: str, kind: str) -> None:
        now = self.clock()
        payload, valid_until = self._states.take(device, kind, now)
        # v5: the retained state never outlives its valid_until on the broker
        props = expiring_json(math.floor(valid_until - now)) if self.link.protocol == "5" else None
        self._send(self.topic(device, kind), encode(payload), retain=True, kind=kind, props=props)

    def _send(self, topic: str, text: str, retain: bool, kind: str, props: Any = None,
              device: str | None = None, payload: dict[str, Any] | None = None) -> None:
        client = self._client
        info = client.publish(topic, text, qos=1, retain=retain, properties=props)
        if info.rc == 0:
            # Only events are kept for requeueing; states are republished from _latest.
            self._inflight.record(info.mid, kind, topic, device, payload)
            return
        log.warning("MQTT publish to %s failed (rc %d): connection lost", topic, info.rc)
        if kind == "event" and device is not None and payload is not None:
            self._events.put(device, payload)

    def _flush(self) -> None:
        """After a (re)connect: HA discovery, online, the latest states, then queued events."""
        if self._ha is not None:
            self._send_retained(self._ha.messages())
        if self.daemon_topic is not None:
            self._send(self.daemon_topic, "online", retain=True, kind="daemon")
        for device in self._announced:
            self._send_avail(device)
        for device, kind in self._states:
            self._send_state(device, kind)
        self._states.pending.clear()
        self._dirty_avail.clear()
        while self._events and self._connected:
            device, payload = self._events.popleft()
            self._send(self.topic(device, "events"), encode(payload), retain=False,
                       kind="event", device=device, payload=payload)
        self._update_queued()

    # -- the connection's hooks ---------------------------------------------------------
    def _configure(self, c: Any, gen: int) -> None:
        """Attach the acknowledgement callback to a fresh client of generation ``gen``."""

        def on_publish(client: Any, userdata: Any, mid: int, rc: Any, props: Any = None) -> None:
            self._inflight.ack(gen, mid, rc)

        c.on_publish = on_publish

    def _on_up(self, client: Any, first: bool) -> None:
        """Connected: republish online, the latest states and the queued events."""
        with self._lock:
            self._client = client
            self._connected = True
            self._ever_connected = True
            self._inflight.clear()
            self._flush()
        if not first:
            self.stats.reconnects += 1

    def _on_lost(self) -> None:
        self._connected = False  # a plain store from paho's thread; _on_down tidies up under _lock

    def _on_down(self, client: Any, stopping: bool) -> None:
        with self._lock:
            self._connected = False
            if not stopping:
                self._requeue_inflight()

    def _requeue_inflight(self) -> None:
        """Events not acknowledged on a lost connection go back to the queue's front."""
        for device, payload in reversed(self._inflight.take_events()):
            self._events.put(device, payload, front=True)
        self._states.pending.update(self._states)
        self._dirty_avail.update(self._announced)
        self._update_queued()


