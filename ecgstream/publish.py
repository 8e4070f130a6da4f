"""Publishers of the daemon's authentication, liveness and availability states.

The daemon calls a publisher from its single processing thread; no method
here blocks that thread on the network (``start`` and ``close`` wait, each
for a bounded time). Two implementations share one small interface,
:class:`Publisher`:

- :class:`StdoutPublisher` writes one JSON object per line (the daemon's
  output when no broker is configured);
- :class:`MqttPublisher` publishes to an MQTT broker with paho-mqtt 2.x,
  following the topic conventions of ``docs/mqtt_output.md``.

Payloads are built by the pure functions :func:`auth_payload` and
:func:`liveness_payload`. Every payload passes :func:`check_payload`, which
refuses anything that looks like raw ECG, an embedding or a template: the
daemon never publishes those.

Times in payloads are Unix time in seconds (float, millisecond resolution).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TextIO, runtime_checkable

__all__ = [
    "AUTH_STATES",
    "MqttPublisher",
    "PayloadError",
    "PublishError",
    "Publisher",
    "PublisherStats",
    "StdoutPublisher",
    "TlsOptions",
    "auth_payload",
    "check_payload",
    "liveness_payload",
]

log = logging.getLogger(__name__)
_paho_log = logging.getLogger(__name__ + ".paho")

AUTH_STATES = ("authenticated", "rejected", "unknown")
#: Substrings of payload keys that are refused anywhere in a payload (raw
#: samples, beat windows, embeddings, templates must never leave the daemon).
FORBIDDEN_KEY_PARTS = ("sample", "embedding", "template", "window", "centroid", "ecg")
#: A list of more than this many numbers is refused as well (it looks like a signal).
MAX_NUMERIC_LIST = 16


class PublishError(RuntimeError):
    """The publisher cannot do its job (e.g. the broker refused the connection)."""


class PayloadError(ValueError):
    """A payload or device id that must not be published."""


# -- payload builders (pure) ------------------------------------------------------
def _num(x: float | None, ndigits: int) -> float | None:
    """Round a number for JSON; ``None``, NaN and infinities become ``None``."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    return round(x, ndigits)


def auth_payload(
    state: str,
    subject: str | None,
    score: float | None,
    threshold: float | None,
    beats_used: int,
    time_s: float,
    valid_until: float,
    seq: int,
    model_id: str,
    reason: str | None = None,
) -> dict[str, Any]:
    """Build the payload of ``<prefix>/<device>/auth``.

    Parameters
    ----------
    state : {"authenticated", "rejected", "unknown"}
        The rolling decision.
    subject : str or None
        Enrolled subject the decision is about (``None`` when unknown).
    score : float or None
        Fused similarity score over the beats used (cosine, -1..1).
    threshold : float or None
        Fused threshold the score was compared with (from the model card).
    beats_used : int
        Number of good beats fused into ``score``.
    time_s : float
        Time of the decision, Unix seconds.
    valid_until : float
        Unix seconds after which the state must be treated as not
        authenticated (consumers fail closed).
    seq : int
        Per-device sequence number of auth states (increases by one each
        publish of the daemon; restarts at 1 when the daemon restarts).
    model_id : str
        Id of the embedding model (from its model card).
    reason : str, optional
        Why the state is what it is (human readable).

    Returns
    -------
    dict
        ``state, subject, score, threshold, beats_used, time, valid_until,
        seq, model_id, reason``.

    Raises
    ------
    ValueError
        Unknown state, or ``valid_until`` before ``time_s``.
    """
    if state not in AUTH_STATES:
        raise ValueError(f"auth state must be one of {AUTH_STATES}, not {state!r}")
    if not valid_until >= time_s:
        raise ValueError(f"valid_until {valid_until!r} is before time {time_s!r}")
    return {
        "state": state,
        "subject": subject,
        "score": _num(score, 4),
        "threshold": _num(threshold, 4),
        "beats_used": int(beats_used),
        "time": _num(time_s, 3),
        "valid_until": _num(valid_until, 3),
        "seq": int(seq),
        "model_id": model_id,
        "reason": reason,
    }


def liveness_payload(
    live: bool,
    leads_on: bool,
    heart_rate_bpm: float | None,
    signal_quality: float | None,
    time_s: float,
    valid_until: float,
    reasons: Iterable[str],
    rate_declared_hz: float | None,
    rate_measured_hz: float | None,
) -> dict[str, Any]:
    """Build the payload of ``<prefix>/<device>/liveness``.

    Parameters
    ----------
    live : bool
        All liveness checks pass right now.
    leads_on : bool
        The electrodes are in contact.
    heart_rate_bpm : float or None
        Recent heart rate, beats per minute.
    signal_quality : float or None
        Recent signal-quality index, 0..1.
    time_s, valid_until : float
        Unix seconds, as in :func:`auth_payload`.
    reasons : iterable of str
        Checks that fail (empty when ``live``).
    rate_declared_hz, rate_measured_hz : float or None
        Sampling rate the source declares and the rate samples really arrive at.

    Returns
    -------
    dict
        ``live, leads_on, heart_rate_bpm, signal_quality, time, valid_until,
        reasons, rate_declared_hz, rate_measured_hz``.
    """
    if not valid_until >= time_s:
        raise ValueError(f"valid_until {valid_until!r} is before time {time_s!r}")
    return {
        "live": bool(live),
        "leads_on": bool(leads_on),
        "heart_rate_bpm": _num(heart_rate_bpm, 1),
        "signal_quality": _num(signal_quality, 3),
        "time": _num(time_s, 3),
        "valid_until": _num(valid_until, 3),
        "reasons": [str(r) for r in reasons],
        "rate_declared_hz": _num(rate_declared_hz, 2),
        "rate_measured_hz": _num(rate_measured_hz, 2),
    }


def stale_replacement(kind: str, payload: dict[str, Any], valid_until: float,
                      now: float) -> tuple[dict[str, Any], float]:
    """The fail-closed stand-in for a state whose ``valid_until`` has passed.

    A state is never published after its ``valid_until``: an expired auth
    state becomes ``unknown`` and an expired liveness state becomes
    ``live: false``, both marked ``"stale": true``, stamped ``now`` and valid
    for as long as the original was.

    Parameters
    ----------
    kind : {"auth", "liveness"}
    payload : dict
        The expired payload.
    valid_until, now : float
        Unix seconds.

    Returns
    -------
    (dict, float)
        The replacement payload and its ``valid_until``.
    """
    span = max(1.0, float(valid_until) - float(payload.get("time") or valid_until))
    new_until = now + span
    p = dict(payload)
    p.update(time=_num(now, 3), valid_until=_num(new_until, 3), stale=True)
    why = "state expired before it could be published"
    if kind == "auth":
        p.update(state="unknown", score=None, beats_used=0, reason=why)
    else:
        p.update(live=False, reasons=[why])
    return p, new_until


def check_payload(payload: Any, _path: str = "") -> None:
    """Refuse payloads that could carry raw ECG, embeddings or templates.

    Parameters
    ----------
    payload : dict
        A payload, checked recursively.

    Raises
    ------
    PayloadError
        A key containing one of :data:`FORBIDDEN_KEY_PARTS` (any case, at any
        depth), a list of more than :data:`MAX_NUMERIC_LIST` numbers, or a
        value that is not plain JSON (e.g. a numpy array).
    """
    if isinstance(payload, dict):
        for k, v in payload.items():
            if not isinstance(k, str):
                raise PayloadError(f"payload key {_path}{k!r} is not a string")
            low = k.lower()
            for part in FORBIDDEN_KEY_PARTS:
                if part in low:
                    raise PayloadError(
                        f"payload key {_path}{k!r} refused: the daemon never publishes raw ECG, "
                        "beat windows, embeddings or templates")
            check_payload(v, f"{_path}{k}.")
    elif isinstance(payload, (list, tuple)):
        nums = sum(1 for v in payload if isinstance(v, (int, float)) and not isinstance(v, bool))
        if nums > MAX_NUMERIC_LIST:
            raise PayloadError(f"payload value {_path.rstrip('.') or '<root>'} is a list of {nums} numbers: "
                               "refused (looks like a signal)")
        for v in payload:
            check_payload(v, _path)
    elif payload is None or isinstance(payload, (str, bool, int, float)):
        return
    else:
        raise PayloadError(f"payload value {_path.rstrip('.') or '<root>'} of type "
                           f"{type(payload).__name__} refused: only plain JSON values are published")


def check_device(device: str) -> None:
    """Refuse a device id that is not one MQTT topic level.

    Raises
    ------
    PayloadError
        Empty, or containing ``/``, ``+``, ``#`` or a NUL character.
    """
    if not isinstance(device, str) or not device or any(c in device for c in "/+#\0"):
        raise PayloadError(f"device id {device!r} is not a valid MQTT topic level "
                           "(non-empty, without '/', '+', '#')")


def _encode(payload: dict[str, Any]) -> str:
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise PayloadError(f"payload is not valid JSON: {exc}") from exc


# -- the interface --------------------------------------------------------------------
@dataclass
class PublisherStats:
    """Counters of a publisher.

    Attributes
    ----------
    published : int
        Messages delivered (MQTT: acknowledged by the broker at QoS 1;
        stdout: lines written).
    dropped : int
        Messages lost: events pushed out of a full queue, lines not written
        to a closed pipe.
    reconnects : int
        Connections re-established after a loss.
    queued : int
        States and events waiting for a connection right now.
    """

    published: int = 0
    dropped: int = 0
    reconnects: int = 0
    queued: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return asdict(self)


@runtime_checkable
class Publisher(Protocol):
    """What the daemon needs from a publisher (called from one thread)."""

    stats: PublisherStats

    def start(self) -> None:
        """Connect (bounded wait); raise :class:`PublishError` if that must stop the daemon."""

    def availability(self, device: str, online: bool) -> None:
        """Announce a device ``online`` or ``offline``."""

    def auth(self, device: str, payload: dict, valid_until: float) -> None:
        """Publish a device's auth state, valid until ``valid_until`` (Unix seconds)."""

    def liveness(self, device: str, payload: dict, valid_until: float) -> None:
        """Publish a device's liveness state, valid until ``valid_until`` (Unix seconds)."""

    def event(self, device: str, payload: dict) -> None:
        """Publish a change event of a device."""

    def close(self) -> None:
        """Publish ``offline`` for every announced device, wait for it (bounded) and stop."""


# -- stdout ---------------------------------------------------------------------------
class StdoutPublisher:
    """JSON lines on a text stream, one object per message, flushed per line.

    Each line has ``"kind"`` (``auth``, ``liveness``, ``event``,
    ``availability``), ``"device"``, and the fields of the MQTT payload;
    availability lines carry ``"state": "online" | "offline"``.

    A closed pipe (``ecgstream run | head``) stops the output quietly: later
    messages are counted in ``stats.dropped``, nothing is raised.

    Parameters
    ----------
    stream : text stream, optional
        Default ``sys.stdout``.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream: TextIO = stream if stream is not None else sys.stdout
        self.stats = PublisherStats()
        self._announced: dict[str, bool] = {}
        self._broken = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Nothing to connect."""

    def _write(self, kind: str, device: str, payload: dict[str, Any]) -> None:
        check_device(device)
        check_payload(payload)
        line = _encode({"kind": kind, "device": device, **payload}) + "\n"
        with self._lock:
            if self._broken:
                self.stats.dropped += 1
                return
            try:
                self.stream.write(line)
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError) as exc:
                # ValueError: write to a closed file; other OSErrors (EPIPE, EIO) likewise end the output.
                self._broken = True
                self.stats.dropped += 1
                log.info("stdout output stopped (%s); further states are dropped", exc.__class__.__name__)
                self._silence()
                return
            self.stats.published += 1

    def _silence(self) -> None:
        """Point a broken stdout at /dev/null so the interpreter's exit flush stays quiet."""
        if self.stream not in (sys.stdout, sys.__stdout__):
            return
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, self.stream.fileno())
            os.close(fd)

    def availability(self, device: str, online: bool) -> None:
        """Write an availability line."""
        self._announced[device] = bool(online)
        self._write("availability", device, {"state": "online" if online else "offline"})

    def auth(self, device: str, payload: dict, valid_until: float) -> None:
        """Write an auth line."""
        self._write("auth", device, payload)

    def liveness(self, device: str, payload: dict, valid_until: float) -> None:
        """Write a liveness line."""
        self._write("liveness", device, payload)

    def event(self, device: str, payload: dict) -> None:
        """Write an event line."""
        self._write("event", device, payload)

    def close(self) -> None:
        """Write ``offline`` for every device announced ``online``."""
        for device, online in list(self._announced.items()):
            if online:
                self.availability(device, False)


# -- MQTT -------------------------------------------------------------------------
@dataclass(frozen=True)
class TlsOptions:
    """TLS settings of an MQTT connection.

    Attributes
    ----------
    ca_file : str or None
        PEM file of the CA(s) that sign the broker's certificate; ``None``
        uses the system's trust store.
    cert_file, key_file : str or None
        Client certificate and key (PEM) for brokers that require one.
    insecure : bool
        Do not check that the broker's certificate names the host
        connected to (like ``mosquitto_pub --insecure``). The certificate
        chain is still verified. Logged as a WARNING on every start.
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False

    def context(self) -> ssl.SSLContext:
        """Build the client's SSL context (raises ``OSError``/``ssl.SSLError`` on unreadable files)."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.insecure:
            ctx.check_hostname = False
        return ctx


class MqttPublisher:
    """Publishes the daemon's states to an MQTT broker (paho-mqtt 2.x).

    Topics (``<prefix>/<device>/...``): ``auth`` and ``liveness`` retained,
    ``events`` not retained, ``availability`` retained ``online``/``offline``;
    all QoS 1. See ``docs/mqtt_output.md`` for payloads and the consumer's
    rules.

    A connection manager thread connects, re-connects with exponential
    backoff and, after every (re)connect, republishes ``online`` and the
    latest auth and liveness state of every device (an expired state is
    replaced by its fail-closed stand-in, :func:`stale_replacement`), then the
    queued events. Each connection uses a fresh paho client with its own
    ``loop_start()`` network thread, so no message of a lost connection is
    resent after the fresh states.

    While disconnected nothing is silently lost: the latest state per device
    and kind is kept, and events wait in a FIFO of ``events_max`` entries
    (when full the oldest is dropped, counted in ``stats.dropped`` and logged
    as a WARNING).

    Last will: one per connection. With ``will_devices=[device]`` (a daemon
    serving one known device) it is that device's ``availability`` =
    ``offline``. Otherwise (multi-device mode) it is
    ``<prefix>/daemon/<client_id>/availability`` = ``offline``, where the
    daemon also publishes its own ``online``; consumers must check that topic
    too, since the devices' own availability topics cannot all be covered by
    the one will.

    Parameters
    ----------
    host : str
        Broker host name or address.
    port : int
        Broker port (1883; 8883 for TLS by convention).
    prefix : str
        Topic prefix.
    client_id : str, optional
        MQTT client id. Default ``ecgstream-<hostname>-<device>`` with one
        will device, else ``ecgstream-<hostname>``. Two daemons on one broker
        need different ids.
    protocol : {"5", "3.1.1"}
        MQTT version. Version 5 sets a message expiry on auth and liveness
        messages, so retained states vanish from the broker at
        ``valid_until``; with 3.1.1 consumers must check ``valid_until``.
    keepalive : int
        Keep-alive interval, seconds.
    username, password : str, optional
        Credentials (the password is never logged).
    tls : TlsOptions, optional
        Connect with TLS.
    on_connect_failure : {"retry", "exit"}
        What a failed first connection does: ``exit`` raises
        :class:`PublishError` from :meth:`start`; ``retry`` logs an ERROR and
        keeps trying with backoff. Losses after a successful start are always
        retried.
    retry_max_s : float
        Longest wait between connection attempts, seconds.
    clock : callable
        Unix time in seconds (for staleness and message expiry).
    will_devices : list of str, optional
        The single device this daemon serves (see "Last will").
    events_max : int
        Capacity of the event queue used while disconnected.
    connect_timeout_s : float
        Bound on :meth:`start`'s wait for the first connection, and on one
        connection attempt.
    close_timeout_s : float
        Bound on :meth:`close`'s wait for acknowledgements.
    retry_min_s : float
        First wait between connection attempts, seconds (doubles up to
        ``retry_max_s``).
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
    ) -> None:
        if protocol not in ("5", "3.1.1"):
            raise ValueError(f"protocol must be '5' or '3.1.1', not {protocol!r}")
        if on_connect_failure not in ("retry", "exit"):
            raise ValueError(f"on_connect_failure must be 'retry' or 'exit', not {on_connect_failure!r}")
        if not prefix or any(c in prefix for c in "+#\0") or prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"prefix {prefix!r} is not a valid topic prefix")
        if retry_max_s <= 0 or retry_min_s <= 0 or events_max < 1:
            raise ValueError("retry_min_s, retry_max_s and events_max must be positive")
        self.host = host
        self.port = int(port)
        self.prefix = prefix
        self.protocol = protocol
        self.keepalive = int(keepalive)
        self.username = username
        self._password = password
        self.tls = tls
        self.on_connect_failure = on_connect_failure
        self.retry_min_s = float(retry_min_s)
        self.retry_max_s = float(retry_max_s)
        self.clock = clock
        self.connect_timeout_s = float(connect_timeout_s)
        self.close_timeout_s = float(close_timeout_s)
        self._client_id_arg = client_id
        self.will_devices: list[str] = []
        self.stats = PublisherStats()
        self.last_error: str | None = None

        # _lock guards the states and the client; it may be held while calling into paho.
        # _ack_lock guards the in-flight table; paho's callbacks take only this one (paho
        # holds its own message mutex while calling on_publish, so they must never wait
        # for _lock).
        self._lock = threading.RLock()
        self._ack_lock = threading.Lock()
        self._acked = threading.Condition(self._ack_lock)
        self._early_acks: dict[int, bool] = {}  # mid -> refused, acks seen before the mid was recorded
        self._client: Any = None
        self._connected = False
        self._generation = 0
        self._announced: dict[str, bool] = {}
        self._latest: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._dirty_avail: set[str] = set()
        self._events: deque[tuple[str, dict[str, Any]]] = deque()
        self._events_max = int(events_max)
        # mid -> (kind, device, event payload, topic) of messages not yet acknowledged
        self._inflight: dict[int, tuple[str, str | None, dict[str, Any] | None, str]] = {}
        self._stop = threading.Event()
        self._first_attempt = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None
        self._ever_connected = False
        if will_devices:
            self.set_will_devices(will_devices)

    # -- configuration --------------------------------------------------------------
    def set_will_devices(self, devices: list[str]) -> None:
        """Serve exactly one known device: its availability becomes the last will.

        Call before :meth:`start`.

        Raises
        ------
        ValueError
            More than one device (a connection carries one will), or called
            after :meth:`start`.
        """
        if self._thread is not None:
            raise ValueError("set_will_devices() must be called before start()")
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

    @property
    def connected(self) -> bool:
        """Whether a connection to the broker is up now."""
        return self._connected

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        """Start connecting; wait (at most ``connect_timeout_s``) for the first result.

        Raises
        ------
        PublishError
            With ``on_connect_failure="exit"``, when the first connection
            fails (refused, wrong credentials, TLS verification) or does not
            complete in time. The message says why.
        """
        if self._thread is not None:
            return
        if self.tls is not None and self.tls.insecure:
            log.warning("MQTT TLS to %s:%d does NOT verify the broker's host name (tls insecure): "
                        "anyone with a certificate from the same CA can impersonate the broker",
                        self.host, self.port)
        if self.tls is None and self._password:
            log.warning("MQTT password sent to %s:%d without TLS", self.host, self.port)
        self._thread = threading.Thread(target=self._manage, name="ecgstream-mqtt", daemon=True)
        self._thread.start()
        self._first_attempt.wait(self.connect_timeout_s + 1.0)
        if self.on_connect_failure == "exit" and not self._connected:
            why = self.last_error or f"no answer within {self.connect_timeout_s:.0f} s"
            self._stop.set()
            self._thread.join(self.connect_timeout_s + 2.0)
            raise PublishError(f"MQTT broker {self.host}:{self.port}: {why}")

    def close(self) -> None:
        """Publish ``offline`` for announced devices, wait for acks (bounded), disconnect."""
        deadline = time.monotonic() + self.close_timeout_s
        with self._lock:
            for device, online in self._announced.items():
                if online:
                    self._announced[device] = False
                    if self._connected:
                        self._send_avail(device)
            connected = self._connected
            if connected and self.daemon_topic is not None:
                self._send(self.daemon_topic, "offline", retain=True, kind="daemon")
            if not connected and self._thread is not None:
                log.warning("MQTT close while disconnected from %s:%d: 'offline' not published "
                            "(the last will on %s covers it)", self.host, self.port, self.will_topic)
            self._stop.set()
            client = self._client
        if connected:
            with self._ack_lock:
                while self._inflight and (left := deadline - time.monotonic()) > 0:
                    self._acked.wait(left)
                if self._inflight:
                    log.warning("MQTT close: %d message(s) not acknowledged within %.1f s",
                                len(self._inflight), self.close_timeout_s)
        if client is not None and connected:
            with contextlib.suppress(Exception):
                client.disconnect()
        self._lost.set()
        if self._thread is not None:
            self._thread.join(max(1.0, deadline - time.monotonic() + 2.0))

    # -- the daemon's calls -------------------------------------------------------------
    def availability(self, device: str, online: bool) -> None:
        """Announce a device; sent now, or on the next connection."""
        check_device(device)
        with self._lock:
            self._announced[device] = bool(online)
            if self._connected:
                self._send_avail(device)
            else:
                self._dirty_avail.add(device)
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
        _encode(payload)
        with self._lock:
            if self._connected:
                self._send(self.topic(device, "events"), _encode(payload), retain=False,
                           kind="event", device=device, payload=payload)
            else:
                self._queue_event(device, payload)
            self._update_queued()

    # -- internals (hold self._lock) ----------------------------------------------------
    def _state(self, kind: str, device: str, payload: dict, valid_until: float) -> None:
        check_device(device)
        check_payload(payload)
        _encode(payload)
        with self._lock:
            self._latest[(device, kind)] = (dict(payload), float(valid_until))
            if self._connected:
                self._send_state(device, kind)
            else:
                self._dirty.add((device, kind))
            self._update_queued()

    def _queue_event(self, device: str, payload: dict[str, Any], front: bool = False) -> None:
        if len(self._events) >= self._events_max:
            if front:
                self._count_dropped(1, "event queue full")
                return
            self._events.popleft()
            self._count_dropped(1, "event queue full")
        if front:
            self._events.appendleft((device, payload))
        else:
            self._events.append((device, payload))

    def _count_dropped(self, n: int, why: str) -> None:
        before = self.stats.dropped
        self.stats.dropped += n
        if before == 0 or before // 100 != self.stats.dropped // 100:
            log.warning("MQTT: %s while disconnected from %s:%d: oldest events dropped (%d so far)",
                        why, self.host, self.port, self.stats.dropped)

    def _update_queued(self) -> None:
        self.stats.queued = len(self._dirty) + len(self._dirty_avail) + len(self._events)

    def _send_avail(self, device: str) -> None:
        word = "online" if self._announced[device] else "offline"
        self._send(self.topic(device, "availability"), word, retain=True, kind="availability")

    def _send_state(self, device: str, kind: str) -> None:
        payload, valid_until = self._latest[(device, kind)]
        now = self.clock()
        if valid_until <= now:
            payload, valid_until = stale_replacement(kind, payload, valid_until, now)
            self._latest[(device, kind)] = (payload, valid_until)
        props = None
        if self.protocol == "5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = max(1, math.floor(valid_until - now))  # never outlives it
            props.ContentType = "application/json"
        self._send(self.topic(device, kind), _encode(payload), retain=True, kind=kind, props=props)

    def _send(self, topic: str, text: str, retain: bool, kind: str, props: Any = None,
              device: str | None = None, payload: dict[str, Any] | None = None) -> None:
        client = self._client
        info = client.publish(topic, text, qos=1, retain=retain, properties=props)
        if info.rc == 0:
            # Only events are kept for requeueing; states are republished from _latest.
            with self._ack_lock:
                if info.mid in self._early_acks:
                    if self._early_acks.pop(info.mid):
                        self.stats.dropped += 1
                        log.warning("MQTT broker refused the publish to %s", topic)
                    else:
                        self.stats.published += 1
                else:
                    self._inflight[info.mid] = (kind, device, payload if kind == "event" else None, topic)
            return
        log.warning("MQTT publish to %s failed (rc %d): connection lost", topic, info.rc)
        if kind == "event" and device is not None and payload is not None:
            self._queue_event(device, payload)

    def _flush(self) -> None:
        """After a (re)connect: online, the latest states, then queued events."""
        if self.daemon_topic is not None:
            self._send(self.daemon_topic, "online", retain=True, kind="daemon")
        for device in self._announced:
            self._send_avail(device)
        for device, kind in list(self._latest):
            self._send_state(device, kind)
        self._dirty.clear()
        self._dirty_avail.clear()
        while self._events and self._connected:
            device, payload = self._events.popleft()
            self._send(self.topic(device, "events"), _encode(payload), retain=False,
                       kind="event", device=device, payload=payload)
        self._update_queued()

    # -- connection manager thread ----------------------------------------------------
    def _new_client(self, gen: int) -> tuple[Any, threading.Event, dict[str, Any]]:
        import paho.mqtt.client as mqtt

        proto = mqtt.MQTTv5 if self.protocol == "5" else mqtt.MQTTv311
        kw: dict[str, Any] = {"callback_api_version": mqtt.CallbackAPIVersion.VERSION2,
                              "client_id": self.client_id, "protocol": proto,
                              "reconnect_on_failure": False}
        if proto == mqtt.MQTTv311:
            kw["clean_session"] = True
        c = mqtt.Client(**kw)
        # paho's own messages at DEBUG only: it reports a normal disconnect as an error,
        # and every failure that matters is logged here with its reason.
        c.on_log = lambda _c, _u, _level, buf: _paho_log.debug("%s", buf)
        c.connect_timeout = self.connect_timeout_s
        if self.username is not None:
            c.username_pw_set(self.username, self._password)
        if self.tls is not None:
            c.tls_set_context(self.tls.context())
        c.will_set(self.will_topic, "offline", qos=1, retain=True)
        result: dict[str, Any] = {}
        done = threading.Event()

        def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
            result["rc"] = rc
            done.set()

        def on_disconnect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
            if gen == self._generation:
                self._connected = False  # a plain store; the manager thread tidies up under _lock
            if not done.is_set():
                result["closed"] = True
                done.set()
            self._lost.set()

        def on_publish(client: Any, userdata: Any, mid: int, rc: Any, props: Any = None) -> None:
            with self._ack_lock:
                if gen != self._generation:
                    return
                entry = self._inflight.pop(mid, None)
                refused = bool(getattr(rc, "is_failure", False))
                if entry is None:
                    self._early_acks[mid] = refused
                elif refused:
                    self.stats.dropped += 1
                    log.warning("MQTT broker refused the publish to %s: %s", entry[3], rc)
                else:
                    self.stats.published += 1
                self._acked.notify_all()

        c.on_connect = on_connect
        c.on_disconnect = on_disconnect
        c.on_publish = on_publish
        return c, done, result

    def _attempt(self) -> bool:
        """One connection attempt; True when connected (and flushed)."""
        with self._lock:
            self._generation += 1
            gen = self._generation
        try:
            client, done, result = self._new_client(gen)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.last_error = f"TLS setup failed: {exc}"
            return False
        try:
            client.connect(self.host, self.port, self.keepalive)
        except ssl.SSLCertVerificationError as exc:
            self.last_error = (f"TLS certificate verification failed: {exc.verify_message or exc} "
                               "(is the tls ca_file the CA that signed the broker's certificate, "
                               "and does the certificate name the host connected to?)")
            return False
        except ssl.SSLError as exc:
            self.last_error = f"TLS handshake failed: {exc}"
            return False
        except (OSError, ValueError) as exc:
            self.last_error = f"cannot connect: {exc}"
            return False
        self._lost.clear()
        client.loop_start()
        if not done.wait(self.connect_timeout_s) or self._stop.is_set():
            self.last_error = self.last_error if done.is_set() else \
                f"no CONNACK within {self.connect_timeout_s:.0f} s"
            self._drop(client)
            return False
        rc = result.get("rc")
        if rc is None:
            self.last_error = ("the broker closed the connection before accepting it "
                               "(a TLS port without tls settings?)")
            self._drop(client)
            return False
        if getattr(rc, "is_failure", True):
            text = str(rc)
            hint = ""
            if text.lower() in ("not authorized", "bad user name or password"):
                hint = " (check the MQTT username and password)"
            self.last_error = f"connection refused: {text}{hint}"
            self._drop(client)
            return False
        with self._lock:
            self._client = client
            self._connected = True
            with self._ack_lock:
                self._inflight.clear()
                self._early_acks.clear()
            self._flush()
        self.last_error = None
        return True

    def _drop(self, client: Any) -> None:
        if client is None:
            return
        with contextlib.suppress(Exception):
            if client.is_connected():
                client.disconnect()
        with contextlib.suppress(Exception):
            client.loop_stop()

    def _manage(self) -> None:
        delay = self.retry_min_s
        first = True
        while not self._stop.is_set():
            ok = self._attempt()
            if ok:
                if self._ever_connected:
                    self.stats.reconnects += 1
                    log.info("MQTT reconnected to %s:%d", self.host, self.port)
                else:
                    log.info("MQTT connected to %s:%d as %s", self.host, self.port, self.client_id)
                self._ever_connected = True
                self._first_attempt.set()
                first = False
                delay = self.retry_min_s
                self._lost.wait()
                with self._lock:
                    self._connected = False
                    client = self._client
                    if not self._stop.is_set():
                        self._requeue_inflight()
                if self._stop.is_set():
                    self._drop(client)
                    return
                log.warning("MQTT connection to %s:%d lost; reconnecting", self.host, self.port)
                self._drop(client)
                continue
            if first:
                self._first_attempt.set()
                first = False
                if self.on_connect_failure == "exit":
                    log.error("MQTT broker %s:%d: %s", self.host, self.port, self.last_error)
                    return
            log.error("MQTT broker %s:%d: %s; retrying in %.1f s",
                      self.host, self.port, self.last_error, delay)
            if self._stop.wait(delay):
                return
            delay = min(self.retry_max_s, delay * 2)

    def _requeue_inflight(self) -> None:
        """Events not acknowledged on a lost connection go back to the queue's front."""
        with self._ack_lock:
            events = [(d, p) for k, d, p, _ in self._inflight.values() if k == "event" and d and p]
            self._inflight.clear()
            self._early_acks.clear()
            self._acked.notify_all()
        for device, payload in reversed(events):
            self._queue_event(device, payload, front=True)
        self._dirty.update(self._latest)
        self._dirty_avail.update(self._announced)
        self._update_queued()


class TeePublisher:
    """Forwards every call to several publishers (MQTT and stdout at once).

    ``start`` and ``close`` run on all of them; the first exception of a
    ``start`` propagates (the daemon must not run half-published).
    """

    def __init__(self, *publishers: Publisher) -> None:
        if not publishers:
            raise ValueError("TeePublisher needs at least one publisher")
        self.publishers = publishers
        self.stats = publishers[0].stats  # type: ignore[attr-defined]

    def start(self) -> None:
        for p in self.publishers:
            p.start()

    def availability(self, device: str, online: bool) -> None:
        for p in self.publishers:
            p.availability(device, online)

    def auth(self, device: str, payload: dict, valid_until: float) -> None:
        for p in self.publishers:
            p.auth(device, payload, valid_until)

    def liveness(self, device: str, payload: dict, valid_until: float) -> None:
        for p in self.publishers:
            p.liveness(device, payload, valid_until)

    def event(self, device: str, payload: dict) -> None:
        for p in self.publishers:
            p.event(device, payload)

    def close(self) -> None:
        errors = []
        for p in self.publishers:
            try:
                p.close()
            except Exception as exc:  # close the others all the same
                errors.append(exc)
        if errors:
            raise errors[0]
