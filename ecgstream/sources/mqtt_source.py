"""Wearables publishing ECG chunks to an MQTT broker.

``mqtt://host:port/ecgstream/+/ecg`` (``mqtts://`` for TLS; port defaults to
1883, 8883 with TLS). One subscription serves many devices: the device id is
the topic level where the filter has its ``+``. A filter without ``+``
names one device: the ``device=`` parameter, else the level before the last
(``ecgstream/strap1/ecg`` is ``strap1``). ``#`` and more than one ``+`` are
refused. Parameters: ``qos`` (0 or 1, default 1), ``keepalive`` (seconds,
default 30), ``client_id``, ``device``. Credentials and TLS come as keyword
arguments from the daemon's configuration, never in the URI.

Payloads: :mod:`ecgstream.sources.mqtt_payload` (JSON or compact binary;
``docs/mqtt.md``).

Per device
----------
The sample index is the running count of samples. ``seq == last + 1``
continues the stream; a jump (``seq > last + 1``) marks a gap, counts the
lost messages, and advances the index by lost messages x the chunk's length
(assuming equal chunks), so the index stays close to the device's clock. A
``seq`` up to ``REORDER_WINDOW`` behind the last is a duplicate or arrived
out of order: counted and dropped.

A jump is a gap, never ownership (issue 16): a ``seq`` further behind the
last than ``REORDER_WINDOW`` is a resynchronisation, not a duplicate: the
stream continues from it after a gap (counted in ``stats.resyncs``, logged).
So a message with a made-up ``seq`` (2^32-2, or the last + 10^6) on a device
in use costs the device a gap and cannot silence its own stream; two
streams on one topic make each other's gaps (the device goes ``unknown``,
never ``authenticated`` on a mix) and are warned about. A forward jump of
more than ``MAX_LOST_MESSAGES`` is a resynchronisation too: counted as such,
not as lost messages, and the sample index does not move by it.

Retained messages on an ``ecg`` topic are ignored (counted in
``stats.retained``): a chunk is live data, and a retained one is a
leftover or a plant that would be delivered to every new subscription (a
restarted daemon) forever.
``seq == 0`` after ``last > 0`` is a device reboot: a new stream, marked as
a gap. A change of ``fs`` marks a gap and the new rate is declared. After a
reconnect to the broker every device's next chunk is marked as a gap.
Corrupt payloads are counted in ``stats.garbled`` and dropped.

The connection (client, TLS, credentials, reconnect with backoff, paho
logging) is :class:`ecgstream.mqtt.MqttConnection`, shared with the
publisher; this module keeps the subscription and the per-device rules.

Threading: paho's network thread calls the message callback, which decodes
and calls ``sink`` (which must not block); per-device state is touched only
there.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from ..core.types import SampleChunk
from ..mqtt import Credentials, LinkOptions, MqttConnection, TlsOptions
from .base import Sink, SourceError, SourceStats, SourceURI
from .mqtt_devices import _DEVICE_ID, MqttSourceStats, _Device, _topic_parts
from .mqtt_payload import (
    BINARY_HEADER,
    MAX_PAYLOAD_BYTES,
    MAX_SAMPLES,
    SEQ_MOD,
    DecodedChunk,
    PayloadError,
    decode_payload,
    encode_binary,
    encode_json,
)

__all__ = [
    "BINARY_HEADER",
    "MAX_PAYLOAD_BYTES",
    "MAX_SAMPLES",
    "DecodedChunk",
    "MqttSource",
    "MqttSourceStats",
    "PayloadError",
    "decode_payload",
    "encode_binary",
    "encode_json",
]

log = logging.getLogger(__name__)

#: How far behind the last ``seq`` a chunk may be and still count as a duplicate or late one.
REORDER_WINDOW = 64
#: The largest forward jump of ``seq`` read as lost messages; more is a resynchronisation.
MAX_LOST_MESSAGES = 10_000

class MqttSource:
    """ECG chunks from many wearables on one MQTT subscription.

    Parameters
    ----------
    uri : str
        ``mqtt://host:port/TOPIC/FILTER`` or ``mqtts://...`` (module docs).
    username, password : str, optional
        Broker credentials (the password is never logged).
    tls : TlsOptions or dict, optional
        :class:`ecgstream.mqtt.TlsOptions`, or a dict of its fields
        (``ca_file``, ``cert_file``, ``key_file``, ``insecure``); given, or
        with ``mqtts://``, the connection uses TLS.
    protocol : {"5", "3.1.1"}
        MQTT version.
    client_id : str, optional
        Default ``ecgstream-in-<host>-<pid>``.
    clock : callable
        Monotonic clock in seconds (arrival times, rate).
    retry_min_s, retry_max_s : float
        Backoff between reconnection attempts, seconds (:class:`ecgstream.core.backoff.Backoff`).
    connect_timeout_s : float
        Longest wait for the first CONNACK and SUBACK at start-up, seconds.

    Attributes
    ----------
    stats : MqttSourceStats
        Typed as :class:`SourceStats` for the protocol; it is an
        :class:`MqttSourceStats` (``duplicates``, ``lost_messages``, ...).
    connected : threading.Event
        Set while connected and subscribed.
    """

    ALLOWED = {"qos", "keepalive", "client_id", "device"}

    def __init__(self, uri: str, username: str | None = None, password: str | None = None,
                 tls: dict[str, Any] | None = None, protocol: str = "5",
                 client_id: str | None = None, clock: Callable[[], float] = time.monotonic,
                 retry_min_s: float = 1.0, retry_max_s: float = 30.0,
                 connect_timeout_s: float = 10.0) -> None:
        u = SourceURI.parse(uri)
        if u.scheme not in ("mqtt", "mqtts"):
            raise SourceError(f"not an mqtt:// source: {uri!r}")
        u.check_keys(self.ALLOWED)
        try:
            tls_options = TlsOptions.of(tls)
        except ValueError as exc:
            raise SourceError(str(exc)) from None
        if "#" in uri:
            raise SourceError(f"source {uri!r}: '#' is not allowed; use a filter like "
                              "ecgstream/+/ecg")
        self.uri = uri
        self.tls: TlsOptions | None = tls_options if tls_options is not None else (
            TlsOptions() if u.scheme == "mqtts" else None)
        try:
            from urllib.parse import urlsplit

            parts = urlsplit(uri)
            self.host = parts.hostname or ""
            self.port = parts.port or (8883 if self.tls is not None else 1883)
        except ValueError as exc:
            raise SourceError(f"source {uri!r}: {exc}") from None
        if not self.host:
            raise SourceError(f"source {uri!r}: no broker host; use mqtt://HOST:PORT/ecgstream/+/ecg")
        if parts.username or parts.password:
            raise SourceError(f"source {u.scheme}://{self.host}:{self.port}: put credentials in the "
                              "configuration, not in the URI")
        self.topic = u.path.lstrip("/")
        self._plus, self._device = _topic_parts(self.topic, uri, u.params.get("device"))
        self.qos = int(u.take("qos", int, 1))  # type: ignore[call-overload]
        if self.qos not in (0, 1):
            raise SourceError(f"source {uri!r}: qos must be 0 or 1")
        self.keepalive = int(u.take("keepalive", int, 30))  # type: ignore[call-overload]
        if not 5 <= self.keepalive <= 3600:
            raise SourceError(f"source {uri!r}: keepalive must be 5..3600 seconds")
        host = socket.gethostname().split(".")[0] or "host"
        self.client_id = client_id or u.params.get("client_id") or f"ecgstream-in-{host}-{os.getpid()}"
        #: How to talk to the broker (the shared transport's one options type).
        try:
            self.link = LinkOptions(protocol=protocol, keepalive=self.keepalive,
                                    credentials=Credentials.of(username, password), tls=self.tls,
                                    retry_min_s=retry_min_s, retry_max_s=retry_max_s,
                                    connect_timeout_s=connect_timeout_s)
        except ValueError as exc:
            raise SourceError(f"source {uri!r}: {exc}") from None
        self._clock = clock
        # One object, two views: the Source protocol's type, and the MQTT counters.
        self._stats = MqttSourceStats()
        self.stats: SourceStats = self._stats
        self._devices: dict[str, _Device] = {}
        self._sink: Sink | None = None
        self._suback: dict[str, Any] = {}
        self._first = threading.Event()  # the first SUBACK came
        self.connected = threading.Event()  # set while connected and subscribed
        self.subscribed_count = 0  # SUBACKs received (tests wait on resubscription)
        #: Trust hooks (``ecgstream.trust.hooks``): the message verifier, called with
        #: (device, decoded chunk) and returning None or a reason; what to tell
        #: when a chunk is refused, ``on_untrusted(device, reason)``; the most
        #: devices kept (None: no limit) and those always admitted.
        self.verifier: Any = None
        self.on_untrusted: Callable[[str, str], None] | None = None
        self.max_devices: int | None = None
        self.reserved_devices: frozenset[str] = frozenset()
        #: Per-device rate limit before decoding (``[input] rate_limit``, ``burst_s``; None: off).
        self.rate_limit: float | None = None
        self.burst_s = 10.0
        #: Forget unconfigured, unkeyed devices silent this long (``[input] device_expiry_s``; None: never).
        self.device_expiry_s: float | None = None
        self._last_expiry = -1e18

    # -- the per-device rules (network thread) -------------------------------------------
    def device_of(self, topic: str) -> str | None:
        """The device id a topic names, or None when it does not match the filter."""
        if self._plus is None:
            return self._device if topic == self.topic else None
        levels = topic.split("/")
        want = self.topic.split("/")
        if len(levels) != len(want):
            return None
        for a, b in zip(levels, want, strict=True):
            if b != "+" and a != b:
                return None
        dev = levels[self._plus]
        return dev or None

    def handle(self, topic: str, payload: bytes, now: float, retain: bool = False) -> SampleChunk | None:
        """Apply the per-device rules to one message; return the chunk to emit, if any.

        Called by the message callback; also usable without a broker.
        ``retain``: the broker delivered it as a retained message (ignored).
        """
        dev = self.device_of(topic)
        st = self._stats
        if retain:
            st.retained += 1
            if st.retained == 1 or st.retained % 1000 == 0:
                log.warning("MQTT: retained message on %r ignored (ECG chunks are never retained; "
                            "clear it with an empty retained publish); %d so far", topic[:120], st.retained)
            return None
        if dev is None:
            st.garbled += 1
            log.warning("MQTT: message on unexpected topic %r dropped", topic)
            return None
        state = self._devices.get(dev)
        if state is None and not self._admit(dev, now):
            return None
        if state is not None and self.rate_limit and not self._within_rate(dev, state, len(payload), now):
            return None
        try:
            d = decode_payload(payload)
        except PayloadError as exc:
            st.garbled += 1
            if st.garbled == 1 or st.garbled % 1000 == 0:
                log.warning("MQTT device %s: corrupt payload (%s); %d so far", dev, exc, st.garbled)
            return None
        if self.verifier is not None:
            why = self.verifier(dev, d)
            if why is not None:
                st.unauthenticated += 1
                if st.unauthenticated == 1 or st.unauthenticated % 1000 == 0:
                    log.warning("MQTT device %s: chunk refused: %s; %d so far", dev, why, st.unauthenticated)
                if self.on_untrusted is not None:
                    self.on_untrusted(dev, why)
                return None
        gap = False
        n = int(d.samples.size)
        if state is None:
            state = _Device(d.fs_hz, d.seq, 0)
            self._devices[dev] = state
            st.devices.add(dev)
            log.info("MQTT: new device %s at %.1f Hz", dev, d.fs_hz)
        else:
            expected = (state.last_seq + 1) % SEQ_MOD
            if d.seq == expected:
                pass
            elif d.seq == 0 and state.last_seq > 0:
                st.reboots += 1
                gap = True
                log.info("MQTT device %s: seq restarted at 0 (reboot?): new stream", dev)
            elif state.last_seq + 1 < d.seq <= state.last_seq + 1 + MAX_LOST_MESSAGES:
                lost = d.seq - state.last_seq - 1
                st.lost_messages += lost
                state.next_index += lost * n
                gap = True
                log.info("MQTT device %s: %d message(s) lost (seq %d -> %d)", dev, lost,
                         state.last_seq, d.seq)
            elif state.last_seq - REORDER_WINDOW <= d.seq <= state.last_seq:
                st.duplicates += 1
                log.debug("MQTT device %s: seq %d after %d dropped (duplicate or late)", dev,
                          d.seq, state.last_seq)
                return None
            else:  # far behind, or far ahead: a gap and a new position, never a reason to drop the stream
                st.resyncs += 1
                gap = True
                if st.resyncs == 1 or st.resyncs % 100 == 0:
                    log.warning("MQTT device %s: seq %d after %d: resynchronised (a gap); two publishers on "
                                "one device topic, or a forged seq? %d so far", dev, d.seq, state.last_seq,
                                st.resyncs)
            if d.fs_hz != state.fs_hz:
                log.info("MQTT device %s: rate changed %.1f -> %.1f Hz", dev, state.fs_hz, d.fs_hz)
                state.fs_hz = d.fs_hz
                state.meter.reset()
                gap = True
            state.last_seq = d.seq
        if state.gap_next:
            gap = True
            state.gap_next = False
        if gap:
            st.gaps += 1
            state.meter.reset()
        chunk = SampleChunk(dev, d.fs_hz, state.next_index, d.samples, arrival_s=now,
                            gap_before=gap, leads_off=d.leads_off)
        state.next_index += n
        state.received += n
        state.last_t = now
        state.bytes_per_sample = max(1.0, len(payload) / max(1, n))
        state.meter.add(now, state.received)
        st.declared_fs_hz[dev] = d.fs_hz
        rate = state.meter.rate_hz
        if rate is not None:
            st.measured_fs_hz[dev] = rate
        st.chunks += 1
        st.samples += n
        return chunk

    def _within_rate(self, dev: str, state: _Device, nbytes: int, now: float) -> bool:
        """Whether a message of ``nbytes`` fits the device's rate, judged *before* decoding it.

        A flood costs the network thread little: its samples are estimated
        from the payload's size (bytes per sample of the device's last
        chunk), against a token bucket filled at ``rate_limit`` x its
        declared rate, ``burst_s`` deep; the message is dropped undecoded
        when the bucket is short, counted in ``stats.rate_limited`` and told
        to the trust hooks (the device goes ``unknown``, an ``input`` event
        says why). The daemon's intake checks the decoded samples again.
        """
        est = nbytes / state.bytes_per_sample
        rate = state.fs_hz * float(self.rate_limit or 0.0)
        depth = max(state.fs_hz * self.burst_s, est)
        if state.tokens is None:
            state.tokens, state.tokens_t = depth, now
        else:
            state.tokens = min(depth, state.tokens + max(0.0, now - state.tokens_t) * rate)
            state.tokens_t = now
        if state.tokens >= est:
            state.tokens -= est
            return True
        st = self._stats
        st.rate_limited += 1
        if st.rate_limited == 1 or st.rate_limited % 10000 == 0:
            log.warning("MQTT device %s: messages faster than %g x its declared %g Hz dropped undecoded; "
                        "%d so far", dev, self.rate_limit, state.fs_hz, st.rate_limited)
        if self.on_untrusted is not None and st.rate_limited % 100 == 1:  # told, not once per message
            self.on_untrusted(dev, f"flooding: samples faster than {self.rate_limit:g} x its declared "
                                   f"{state.fs_hz:g} Hz")
        return False

    def _expire(self, now: float) -> None:
        """Forget devices neither configured nor keyed that sent nothing for ``device_expiry_s``."""
        ttl = self.device_expiry_s
        if not ttl or now - self._last_expiry < min(ttl, 10.0):
            return
        self._last_expiry = now
        gone = [d for d, s in self._devices.items() if now - s.last_t > ttl and d not in self.reserved_devices]
        for d in gone:
            del self._devices[d]
            self._stats.devices.discard(d)
            self._stats.declared_fs_hz.pop(d, None)
            self._stats.measured_fs_hz.pop(d, None)
        self._stats.devices_expired += len(gone)

    def _admit(self, dev: str, now: float = 0.0) -> bool:
        """Whether a device not seen before may start a stream (id valid, under the limit)."""
        st = self._stats
        self._expire(now)
        if not _DEVICE_ID.fullmatch(dev):
            st.bad_device_ids += 1
            if st.bad_device_ids == 1 or st.bad_device_ids % 1000 == 0:
                log.warning("MQTT: topic device level %r is not a device id; %d such messages dropped",
                            dev[:80], st.bad_device_ids)
            return False
        if self.max_devices is not None and len(self._devices) >= self.max_devices \
                and dev not in self.reserved_devices:
            st.devices_refused += 1
            if st.devices_refused == 1 or st.devices_refused % 10000 == 0:
                log.warning("MQTT: %d devices already (the limit): chunks of new device %s refused; "
                            "%d so far", len(self._devices), dev, st.devices_refused)
            return False
        return True

    # -- the connection's hooks (paho's network thread / the manager thread) ------------
    def _configure(self, client: Any, gen: int) -> None:
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message

    def _on_up(self, client: Any, first: bool) -> None:
        if not first:
            self._reconnected()
            log.info("MQTT %s:%d: resubscribing to %s", self.host, self.port, self.topic)
        client.subscribe(self.topic, qos=self.qos)

    def _reconnected(self) -> None:
        """A new connection after a lost one: counted, and every device's next chunk marks a gap."""
        self._stats.reconnects += 1
        for state in self._devices.values():
            state.gap_next = True

    def _on_lost(self) -> None:
        self.connected.clear()

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, rcs: Any, props: Any = None) -> None:
        bad = [str(r) for r in rcs if r.is_failure]
        if bad:
            self._suback = {"rc": f"subscription to {self.topic} refused: {', '.join(bad)}"}
            log.error("MQTT %s:%d: subscription to %s refused: %s", self.host, self.port,
                      self.topic, ", ".join(bad))
        else:
            self._suback = {"ok": True}
            self.subscribed_count += 1
            self.connected.set()
        self._first.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            chunk = self.handle(msg.topic, msg.payload, self._clock(), bool(getattr(msg, "retain", False)))
            if chunk is not None and self._sink is not None:
                self._sink(chunk)
        except Exception:  # never let a bug kill paho's network thread
            log.exception("MQTT: message on %s could not be handled", msg.topic)

    # -- lifecycle ------------------------------------------------------------------------
    def run(self, sink: Sink, stop: threading.Event) -> None:
        """Subscribe and deliver chunks to ``sink`` until ``stop`` is set.

        Raises
        ------
        SourceError
            The broker cannot be reached, refuses the connection (bad
            credentials, not authorised) or the subscription, or does not
            answer within ``connect_timeout_s``; the message names host, port
            and the reason.
        """
        where = f"MQTT broker {self.host}:{self.port}"
        self._sink = sink
        self._first.clear()
        self._suback = {}
        timeout_s = self.link.connect_timeout_s
        try:
            if self.tls is not None:
                self.tls.context()  # unreadable TLS files are a SourceError now, not a retry loop
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise SourceError(f"MQTT {self.host}:{self.port}: TLS files: {exc}") from None
        conn = MqttConnection(
            self.host, self.port, client_id=self.client_id, options=self.link,
            exit_on_first_failure=True, log=log,
            configure=self._configure, on_up=self._on_up, on_lost=self._on_lost,
            name="ecgstream-mqtt-in")
        conn.start()
        try:
            if not conn.wait_first(timeout_s + 1.0) and not stop.is_set():
                raise SourceError(f"{where}: no answer within {timeout_s:.0f} s")
            if not conn.ever_connected and not stop.is_set():
                raise SourceError(f"{where}: {conn.last_error}")
            if not self._first.wait(timeout_s) and not stop.is_set():
                raise SourceError(f"{where}: no SUBACK within {timeout_s:.0f} s")
            if "rc" in self._suback:
                raise SourceError(f"{where}: {self._suback['rc']}")
            log.info("MQTT: subscribed to %s on %s:%d", self.topic, self.host, self.port)
            stop.wait()
        finally:
            conn.request_stop()
            conn.disconnect()
            conn.join(timeout_s + 2.0)
            self.connected.clear()
