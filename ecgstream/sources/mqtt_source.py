"""Wearables publishing ECG chunks to an MQTT broker.

``mqtt://host:port/ecgstream/+/ecg`` (``mqtts://`` for TLS; port defaults to
1883, 8883 with TLS). One subscription serves many devices: the device id is
the topic level where the filter has its ``+``. A filter without ``+``
names one device: the ``device=`` parameter, else the level before the last
(``ecgstream/strap1/ecg`` is ``strap1``). ``#`` and more than one ``+`` are
refused. Parameters: ``qos`` (0 or 1, default 1), ``keepalive`` (seconds,
default 30), ``client_id``, ``device``. Credentials and TLS come as keyword
arguments from the daemon's configuration, never in the URI.

Payloads (see also ``docs/mqtt.md``)
------------------------------------
JSON (UTF-8, starts with ``{``)::

    {"fs": 500, "seq": 17, "samples": [0.12, 0.15, null, ...], "leads_off": false}

* ``fs``: sampling rate in Hz (number, 1..20000), required.
* ``seq``: message sequence number, integer 0..2**32-1, required; +1 per
  message, 0 after the device boots, wraps from 2**32-1 to 0.
* ``samples``: 1..:data:`MAX_SAMPLES` numbers (mV) or ``null`` for an
  unreadable sample.
* ``leads_off``: optional boolean; true means the electrodes are off for the
  whole chunk (its samples are ignored).
* Other keys are ignored (room for e.g. ``"battery"``).

Compact binary (little-endian, starts with the magic ``b"EC"``)::

    offset size type     field
    0      2    bytes    magic b"EC"
    2      1    uint8    version = 1
    3      1    uint8    flags: bit 0 leads off, bit 1 samples are int16
                         (else float32); other bits must be 0
    4      2    uint16   fs in Hz (1..20000)
    6      2    uint16   count of samples (1..MAX_SAMPLES)
    8      4    uint32   seq
    12     4    float32  scale: sample = stored value * scale (finite, non-zero)
    16     ...  samples: count x float32 or count x int16

  Header 16 bytes; the payload must be exactly ``16 + count * (4 or 2)``
  bytes. An unreadable sample is float32 NaN or int16 -32768; an infinite
  float32 is an error. ``struct`` format of the header: ``"<2sBBHHIf"``.
  :func:`encode_binary` and :func:`encode_json` write these forms.

Per device
----------
The sample index is the running count of samples. ``seq == last + 1``
continues the stream; a jump (``seq > last + 1``) marks a gap, counts the
lost messages, and advances the index by lost messages x the chunk's length
(assuming equal chunks), so the index stays close to the device's clock. A
``seq <= last`` is a duplicate or arrived out of order: counted and dropped.
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

import json
import logging
import math
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..mqtt import Credentials, LinkOptions, MqttConnection, TlsOptions
from ..types import SampleChunk
from .base import Sink, SourceError, SourceStats, SourceURI
from .serial_source import RateMeter

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

#: ``struct`` layout of the binary header (16 bytes).
BINARY_HEADER = struct.Struct("<2sBBHHIf")
BINARY_MAGIC = b"EC"
BINARY_VERSION = 1
FLAG_LEADS_OFF = 0x01
FLAG_INT16 = 0x02
INT16_NAN = -32768
#: Most samples in one payload.
MAX_SAMPLES = 20000
#: Largest payload accepted, bytes.
MAX_PAYLOAD_BYTES = 256 * 1024
#: Largest magnitude of a sample value (mV or counts).
MAX_ABS_VALUE = 1e9
SEQ_MOD = 2**32


class PayloadError(ValueError):
    """A payload is not a valid ECG chunk; the message says why (and where)."""


@dataclass(frozen=True, slots=True)
class DecodedChunk:
    """One decoded payload.

    Attributes
    ----------
    fs_hz : float
        Declared sampling rate in Hz.
    seq : int
        Message sequence number.
    samples : numpy.ndarray
        float64 samples; NaN for unreadable ones.
    leads_off : bool
        The device reports the electrodes off for the whole chunk.
    """

    fs_hz: float
    seq: int
    samples: np.ndarray
    leads_off: bool = False


def _check_fs(fs: object) -> float:
    if isinstance(fs, bool) or not isinstance(fs, int | float):
        raise PayloadError("'fs' must be a number (Hz)")
    f = float(fs)
    if not (math.isfinite(f) and 1.0 <= f <= 20000.0):
        raise PayloadError(f"'fs' {f!r} outside 1..20000 Hz")
    return f


def _check_seq(seq: object) -> int:
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise PayloadError("'seq' must be an integer")
    if not 0 <= seq < SEQ_MOD:
        raise PayloadError(f"'seq' {seq} outside 0..{SEQ_MOD - 1}")
    return seq


def _reject_constant(name: str) -> float:
    raise PayloadError(f"{name} is not a valid sample (use null for an unreadable sample)")


def _decode_json(data: bytes) -> DecodedChunk:
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except PayloadError:
        raise
    except UnicodeDecodeError as exc:
        raise PayloadError(f"JSON payload is not UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"bad JSON at byte {exc.pos}: {exc.msg}") from None
    except (RecursionError, ValueError, OverflowError) as exc:  # nesting, huge integers
        raise PayloadError(f"bad JSON: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise PayloadError("JSON payload must be an object")
    missing = [k for k in ("fs", "seq", "samples") if k not in obj]
    if missing:
        raise PayloadError(f"JSON payload lacks {', '.join(missing)}")
    fs = _check_fs(obj["fs"])
    seq = _check_seq(obj["seq"])
    raw = obj["samples"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_SAMPLES:
        raise PayloadError(f"'samples' must be a list of 1..{MAX_SAMPLES} numbers")
    x = np.empty(len(raw), dtype=np.float64)
    for i, v in enumerate(raw):
        if v is None:
            x[i] = np.nan
        elif isinstance(v, bool) or not isinstance(v, int | float):
            raise PayloadError(f"samples[{i}] is not a number or null")
        else:
            try:
                f = float(v)
            except OverflowError:
                raise PayloadError(f"samples[{i}] out of range") from None
            if not abs(f) <= MAX_ABS_VALUE:
                raise PayloadError(f"samples[{i}] out of range")
            x[i] = f
    off = obj.get("leads_off", False)
    if not isinstance(off, bool):
        raise PayloadError("'leads_off' must be true or false")
    return DecodedChunk(fs, seq, x, off)


def _decode_binary(data: bytes) -> DecodedChunk:
    if len(data) < BINARY_HEADER.size:
        raise PayloadError(f"binary payload of {len(data)} bytes is shorter than its "
                           f"{BINARY_HEADER.size}-byte header")
    magic, version, flags, fs, count, seq, scale = BINARY_HEADER.unpack_from(data)
    if version != BINARY_VERSION:
        raise PayloadError(f"binary payload version {version} (byte 2); this reads {BINARY_VERSION}")
    if flags & ~(FLAG_LEADS_OFF | FLAG_INT16):
        raise PayloadError(f"unknown flag bits 0x{flags:02x} (byte 3)")
    fsf = _check_fs(fs)
    if not 1 <= count <= MAX_SAMPLES:
        raise PayloadError(f"sample count {count} (bytes 6-7) outside 1..{MAX_SAMPLES}")
    if not (math.isfinite(scale) and scale != 0.0):
        raise PayloadError("scale (bytes 12-15) must be finite and non-zero")
    width = 2 if flags & FLAG_INT16 else 4
    want = BINARY_HEADER.size + count * width
    if len(data) != want:
        raise PayloadError(f"binary payload of {len(data)} bytes; header says {want}")
    if width == 2:
        raw16 = np.frombuffer(data, dtype="<i2", count=count, offset=BINARY_HEADER.size)
        x = raw16.astype(np.float64) * float(scale)
        x[raw16 == INT16_NAN] = np.nan
    else:
        raw32 = np.frombuffer(data, dtype="<f4", count=count, offset=BINARY_HEADER.size)
        if np.isinf(raw32).any():
            k = int(np.flatnonzero(np.isinf(raw32))[0])
            raise PayloadError(f"sample {k} (byte {BINARY_HEADER.size + 4 * k}) is infinite")
        with np.errstate(invalid="ignore"):  # a signalling NaN warned; it is an unreadable sample too
            x = raw32.astype(np.float64) * float(scale)
    with np.errstate(invalid="ignore"):
        big = np.abs(x) > MAX_ABS_VALUE
    if big.any():
        raise PayloadError(f"sample {int(np.flatnonzero(big)[0])} out of range")
    return DecodedChunk(fsf, int(seq), x, bool(flags & FLAG_LEADS_OFF))


def decode_payload(data: bytes) -> DecodedChunk:
    """Decode a JSON or binary ECG payload (see the module docs).

    Parameters
    ----------
    data : bytes
        The MQTT message payload.

    Returns
    -------
    DecodedChunk

    Raises
    ------
    PayloadError
        Anything wrong with the payload; no other exception for any bytes.
    """
    data = bytes(data)
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {len(data)} bytes (largest {MAX_PAYLOAD_BYTES})")
    if data[:2] == BINARY_MAGIC:
        return _decode_binary(data)
    if data.lstrip()[:1] == b"{":
        return _decode_json(data)
    raise PayloadError("payload is neither JSON (starts with '{') nor binary (starts with 'EC')")


def encode_json(samples: np.ndarray, fs_hz: float, seq: int, leads_off: bool = False,
                decimals: int = 4) -> bytes:
    """Encode a chunk as a JSON payload (NaN becomes ``null``).

    Parameters
    ----------
    samples : array of float
        Samples in mV (or counts).
    fs_hz : float
        Rate in Hz.
    seq : int
        Sequence number.
    leads_off : bool
    decimals : int
        Decimals kept per sample.
    """
    vals = [None if not math.isfinite(v) else round(float(v), decimals) for v in samples]
    obj: dict[str, Any] = {"fs": fs_hz if fs_hz != int(fs_hz) else int(fs_hz),
                           "seq": int(seq), "samples": vals}
    if leads_off:
        obj["leads_off"] = True
    return json.dumps(obj, separators=(",", ":")).encode()


def encode_binary(samples: np.ndarray, fs_hz: int, seq: int, leads_off: bool = False,
                  int16_scale: float | None = None) -> bytes:
    """Encode a chunk in the compact binary form.

    Parameters
    ----------
    samples : array of float
        Samples; NaN for unreadable ones.
    fs_hz : int
        Rate in Hz (an integer in this form).
    seq : int
        Sequence number (taken modulo 2**32).
    leads_off : bool
    int16_scale : float, optional
        Store int16 ``round(sample / int16_scale)`` (e.g. 0.001 for µV
        resolution of mV samples); default float32.
    """
    x = np.asarray(samples, dtype=np.float64)
    flags = FLAG_LEADS_OFF if leads_off else 0
    if int16_scale is None:
        body = x.astype("<f4").tobytes()
        scale = 1.0
    else:
        flags |= FLAG_INT16
        q = np.where(np.isfinite(x), np.round(np.nan_to_num(x) / int16_scale), INT16_NAN)
        ints = np.clip(q, -32767, 32767).astype("<i2")
        ints[~np.isfinite(x)] = INT16_NAN
        body = ints.tobytes()
        scale = float(int16_scale)
    head = BINARY_HEADER.pack(BINARY_MAGIC, BINARY_VERSION, flags, int(fs_hz), x.size,
                              int(seq) % SEQ_MOD, scale)
    return head + body


@dataclass
class MqttSourceStats(SourceStats):
    """:class:`SourceStats` plus MQTT counters.

    Attributes
    ----------
    duplicates : int
        Messages dropped because their ``seq`` was not newer than the last.
    lost_messages : int
        Messages missing according to ``seq`` jumps.
    reboots : int
        ``seq`` restarts at 0 (device reboots).
    devices : set of str
        Devices seen.
    """

    duplicates: int = 0
    lost_messages: int = 0
    reboots: int = 0
    devices: set[str] = field(default_factory=set)


@dataclass
class _Device:
    fs_hz: float
    last_seq: int
    next_index: int
    gap_next: bool = False
    received: int = 0
    meter: RateMeter = field(default_factory=RateMeter)


def _topic_parts(filt: str, uri: str, device: str | None) -> tuple[int | None, str | None]:
    levels = filt.split("/")
    if not filt or "#" in filt or any("+" in lv and lv != "+" for lv in levels):
        raise SourceError(f"source {uri!r}: topic filter {filt!r} must be like ecgstream/+/ecg "
                          "('#' is not allowed)")
    plus = [i for i, lv in enumerate(levels) if lv == "+"]
    if len(plus) > 1:
        raise SourceError(f"source {uri!r}: topic filter {filt!r} has more than one '+'; "
                          "the device id is the level of the one '+'")
    if plus:
        if device:
            raise SourceError(f"source {uri!r}: device= cannot be used with a '+' filter")
        return plus[0], None
    return None, device or (levels[-2] if len(levels) >= 2 else levels[0])


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
        Backoff between reconnection attempts, seconds (:class:`ecgstream.backoff.Backoff`).
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

    def handle(self, topic: str, payload: bytes, now: float) -> SampleChunk | None:
        """Apply the per-device rules to one message; return the chunk to emit, if any.

        Called by the message callback; also usable without a broker.
        """
        dev = self.device_of(topic)
        st = self._stats
        if dev is None:
            st.garbled += 1
            log.warning("MQTT: message on unexpected topic %r dropped", topic)
            return None
        try:
            d = decode_payload(payload)
        except PayloadError as exc:
            st.garbled += 1
            if st.garbled == 1 or st.garbled % 1000 == 0:
                log.warning("MQTT device %s: corrupt payload (%s); %d so far", dev, exc, st.garbled)
            return None
        state = self._devices.get(dev)
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
            elif d.seq > state.last_seq + 1:
                lost = d.seq - state.last_seq - 1
                st.lost_messages += lost
                state.next_index += lost * n
                gap = True
                log.info("MQTT device %s: %d message(s) lost (seq %d -> %d)", dev, lost,
                         state.last_seq, d.seq)
            else:
                st.duplicates += 1
                log.debug("MQTT device %s: seq %d after %d dropped (duplicate or late)", dev,
                          d.seq, state.last_seq)
                return None
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
        state.meter.add(now, state.received)
        st.declared_fs_hz[dev] = d.fs_hz
        rate = state.meter.rate_hz
        if rate is not None:
            st.measured_fs_hz[dev] = rate
        st.chunks += 1
        st.samples += n
        return chunk

    # -- the connection's hooks (paho's network thread / the manager thread) ------------
    def _configure(self, client: Any, gen: int) -> None:
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message

    def _on_up(self, client: Any, first: bool) -> None:
        if not first:
            self._stats.reconnects += 1
            for state in self._devices.values():
                state.gap_next = True
            log.info("MQTT %s:%d: resubscribing to %s", self.host, self.port, self.topic)
        client.subscribe(self.topic, qos=self.qos)

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
            chunk = self.handle(msg.topic, msg.payload, self._clock())
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
