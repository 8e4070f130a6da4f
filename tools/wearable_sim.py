#!/usr/bin/env python3
"""A wearable simulator: replays ECG to a serial line or an MQTT broker.

It plays a WFDB record (through :func:`ecgstream.sources.records.read_record`) or a
synthetic ECG (:func:`ecgstream.sources.synthetic.synth_ecg`) the way a
wearable would send it, with faults on request, for tests, demos and
benchmarks. Importable (``from tools.wearable_sim import ...``) and a script::

    # a pseudo-terminal pair: the daemon reads /tmp/ecg-dev, we write /tmp/ecg-sim
    socat pty,raw,echo=0,link=/tmp/ecg-dev pty,raw,echo=0,link=/tmp/ecg-sim &
    python tools/wearable_sim.py serial /tmp/ecg-sim --synthetic --fs 250 \\
        --leads-off 5:2 --garble-every 200 --speed 1
    ecgstream run --source 'serial:/tmp/ecg-dev?fs=250'

    python tools/wearable_sim.py mqtt --host 127.0.0.1 --port 1883 --device strap1 \\
        --record data/ecgid-excerpt/Person_01/rec_1 --format binary --drop 10,11 --speed 1

Serial: samples become ADC counts as an AD8232 (gain 1100, output centred at
half the reference) on a 10- or 12-bit ADC produces them, one line per
sample period: ``ascii`` (``512``) or ``csv`` (``t_ms,512``). Lead-off
periods print ``!`` per sample period (the SparkFun sketch's convention).

MQTT: chunks to ``<prefix>/<device>/ecg`` as JSON or the compact binary form
of :mod:`ecgstream.sources.mqtt_source`, with dropped messages (seq jumps),
duplicates, swapped neighbours, corrupt payloads, reboots (seq back to 0)
and a wrong declared rate on request.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make ``ecgstream`` importable from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecgstream.sources.mqtt_payload import encode_binary, encode_json  # noqa: E402
from ecgstream.sources.synthetic import synth_ecg  # noqa: E402

__all__ = [
    "GARBAGE_LINES",
    "MqttPlan",
    "SerialLine",
    "SerialPlan",
    "SimMessage",
    "adc_counts",
    "load_signal",
    "mqtt_messages",
    "publish_mqtt",
    "serial_lines",
    "write_lines",
]

log = logging.getLogger("wearable_sim")

#: What a garbled line looks like, in turn: a typo, noise bytes, two lines run
#: together without their line end (too long), a word, out of range.
GARBAGE_LINES = (b"5x2", b"\xff\xfe\x80\x81", b"51" * 40, b"hello", b"99999999999")


# -- signals -------------------------------------------------------------------------------
def load_signal(record: str | os.PathLike[str] | None = None, channel: int | str = 0,
                seconds: float | None = None, fs: float = 250.0, hr_bpm: float = 70.0,
                seed: int = 1, noise_mv: float = 0.02) -> tuple[np.ndarray, float]:
    """The ECG to play, in mV, and its rate in Hz.

    Parameters
    ----------
    record : path, optional
        WFDB record (without extension); default a synthetic ECG.
    channel : int or str
        Channel of the record.
    seconds : float, optional
        Keep the first ``seconds`` (a record) or synthesise that long
        (default 30 s).
    fs, hr_bpm, seed, noise_mv
        Synthetic ECG settings (Hz, beats per minute, seed, mV).
    """
    if record is not None:
        from ecgstream.sources.records import read_record

        x, rate, _ = read_record(record, channel)
        if seconds is not None:
            x = x[: round(seconds * rate)]
        return np.asarray(x, dtype=np.float64), float(rate)
    secs = 30.0 if seconds is None else seconds
    return synth_ecg(secs, fs, hr_bpm, seed=seed, noise_mv=noise_mv), float(fs)


def adc_counts(x_mv: np.ndarray, bits: int = 10, gain: float = 1100.0,
               vref_v: float = 3.3) -> np.ndarray:
    """ECG in mV to the integer counts of an AD8232 on an ADC.

    Parameters
    ----------
    x_mv : array
        ECG in mV (NaN becomes mid-scale).
    bits : int
        ADC resolution (10 on an Arduino Uno, 12 on an ESP32).
    gain : float
        Analogue gain, V/V (the AD8232 reference design: 1100).
    vref_v : float
        ADC reference in volts; the AD8232 output rests at half of it.

    Returns
    -------
    numpy.ndarray
        int64 counts in ``0 .. 2**bits - 1`` (clipped, as a real ADC does).
    """
    full = 2**bits - 1
    volts = vref_v / 2 + np.nan_to_num(np.asarray(x_mv, dtype=np.float64)) * 1e-3 * gain
    return np.clip(np.round(volts / vref_v * full), 0, full).astype(np.int64)


# -- serial ----------------------------------------------------------------------------------
@dataclass
class SerialPlan:
    """What the simulated wearable prints, faults included.

    Attributes
    ----------
    fmt : {"ascii", "csv"}
    leads_off : list of (start_s, duration_s)
        Periods printing ``!`` per sample period.
    garble_at : list of int
        Sample indices whose line is replaced by garbage (one line each).
    garble_every : int
        Also garble every n-th sample's line (0 = never).
    drop : list of (sample index, count)
        Samples never sent (lost bytes: for ``csv`` the time stamps show it).
    t0_ms : int
        Device clock at the first sample (``csv``).
    off_marker : bytes
        The lead-off line (``!``; ``LO`` and ``leads off`` are understood too).
    """

    fmt: str = "ascii"
    leads_off: list[tuple[float, float]] = field(default_factory=list)
    garble_at: list[int] = field(default_factory=list)
    garble_every: int = 0
    drop: list[tuple[int, int]] = field(default_factory=list)
    t0_ms: int = 0
    off_marker: bytes = b"!"


@dataclass(frozen=True, slots=True)
class SerialLine:
    """One line the simulator sends.

    Attributes
    ----------
    index : int
        Sample index the line stands for.
    data : bytes
        The line, ``\\n`` included.
    kind : {"sample", "off", "garbled"}
    value : int
        The ADC count of a sample line (else -1).
    """

    index: int
    data: bytes
    kind: str
    value: int = -1


def serial_lines(counts: Sequence[int] | np.ndarray, fs_hz: float,
                 plan: SerialPlan | None = None) -> list[SerialLine]:
    """The lines a wearable prints for ``counts`` (see :class:`SerialPlan`).

    Dropped samples have no line; every other sample index has exactly one.
    """
    plan = plan or SerialPlan()
    if plan.fmt not in ("ascii", "csv"):
        raise ValueError(f"format must be ascii or csv, not {plan.fmt!r}")
    n = len(counts)
    t = np.arange(n) / fs_hz
    off = np.zeros(n, dtype=bool)
    for start, dur in plan.leads_off:
        off |= (t >= start) & (t < start + dur)
    dropped = np.zeros(n, dtype=bool)
    for i, k in plan.drop:
        dropped[i:i + k] = True
    garbled = np.zeros(n, dtype=bool)
    garbled[[i for i in plan.garble_at if 0 <= i < n]] = True
    if plan.garble_every > 0:
        garbled[plan.garble_every - 1::plan.garble_every] = True
    out: list[SerialLine] = []
    g = 0
    for i in range(n):
        if dropped[i]:
            continue
        stamp = b"%d," % (plan.t0_ms + math.floor(i * 1000.0 / fs_hz)) if plan.fmt == "csv" else b""
        if garbled[i] and not off[i]:
            junk = GARBAGE_LINES[g % len(GARBAGE_LINES)]
            g += 1
            out.append(SerialLine(i, stamp + junk + b"\n", "garbled"))
        elif off[i]:
            out.append(SerialLine(i, stamp + plan.off_marker + b"\n", "off"))
        else:
            v = int(counts[i])
            out.append(SerialLine(i, stamp + b"%d\n" % v, "sample", v))
    return out


def write_lines(target: str | os.PathLike[str] | int, lines: Iterable[SerialLine],
                fs_hz: float, speed: float = 1.0, stop: threading.Event | None = None,
                lead_in: bytes = b"\n", clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> int:
    """Write lines to a serial port, pty path or file descriptor, paced.

    Parameters
    ----------
    target : path or int
        A device path (opened write-only, no controlling tty) or an open fd
        (left open).
    lines : iterable of SerialLine
    fs_hz : float
        Sample rate the lines are paced at (by their ``index``).
    speed : float
        1 = real time, 4 = four times faster, 0 = as fast as possible.
    stop : threading.Event, optional
        Stop early when set.
    lead_in : bytes
        Sent first (the source drops the first fragment after it opens).

    Returns
    -------
    int
        Lines written. ``OSError`` from the device propagates (the link
        went away).
    """
    own = not isinstance(target, int)
    fd = os.open(os.fspath(target), os.O_WRONLY | os.O_NOCTTY) if own else int(target)  # type: ignore[arg-type]
    written = 0
    try:
        if lead_in:
            os.write(fd, lead_in)
        t0 = clock()
        batch: list[bytes] = []
        for ln in lines:
            if stop is not None and stop.is_set():
                break
            if speed > 0:
                due = t0 + ln.index / (fs_hz * speed)
                wait = due - clock()
                if wait > 0.005:
                    if batch:
                        _write_all(fd, b"".join(batch))
                        batch.clear()
                    sleep(wait)
            batch.append(ln.data)
            written += 1
            if len(batch) >= 256:
                _write_all(fd, b"".join(batch))
                batch.clear()
        if batch:
            _write_all(fd, b"".join(batch))
    finally:
        if own:
            os.close(fd)
    return written


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# -- MQTT ------------------------------------------------------------------------------------
@dataclass
class MqttPlan:
    """How the simulated wearable publishes, faults included.

    Attributes
    ----------
    fmt : {"json", "binary", "int16"}
        JSON, binary float32, or binary int16 (1 µV steps).
    chunk_s : float
        Seconds of signal per message.
    drop : list of int
        Message numbers (0-based, in signal order) never sent: seq jumps.
    duplicate : list of int
        Messages sent twice in a row.
    swap : list of int
        Message k is sent after message k + 1 (out of order).
    corrupt : list of int
        Messages whose payload is replaced by corrupt bytes (not decodable).
    reboot_at : list of int
        Sequence numbers restart at 0 from this message on (device reboot).
    declared_fs : float, optional
        Rate written into the payloads (a wrong one on purpose); default the
        true rate.
    leads_off : list of (start_s, duration_s)
        Chunks overlapping these periods are sent with ``leads_off`` set
        and NaN samples.
    """

    fmt: str = "json"
    chunk_s: float = 0.1
    drop: list[int] = field(default_factory=list)
    duplicate: list[int] = field(default_factory=list)
    swap: list[int] = field(default_factory=list)
    corrupt: list[int] = field(default_factory=list)
    reboot_at: list[int] = field(default_factory=list)
    declared_fs: float | None = None
    leads_off: list[tuple[float, float]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One message to publish.

    Attributes
    ----------
    topic : str
    payload : bytes
    number : int
        Message number in signal order (0-based).
    seq : int
        Sequence number written in it.
    start_sample : int
        Index of its first sample in the signal.
    n : int
        Samples in it.
    kind : {"data", "duplicate", "corrupt"}
    """

    topic: str
    payload: bytes
    number: int
    seq: int
    start_sample: int
    n: int
    kind: str = "data"


_CORRUPT = (b'{"fs":500,"seq":', b"EC\x01\x00\xf4\x01", b"\x00\x01garbage", b'{"fs":"x","seq":1,"samples":[1]}')


def mqtt_messages(x_mv: np.ndarray, fs_hz: float, device: str, plan: MqttPlan | None = None,
                  prefix: str = "ecgstream", key: bytes | None = None,
                  t0_ms: int | None = None) -> list[SimMessage]:
    """The messages a wearable publishes for ``x_mv``, in sending order.

    With ``key`` (the device's message key, ``ecgstream device-key add``)
    every chunk is signed; its time is ``t0_ms`` (default now) plus the
    stream time of its last sample, which is its sending time when played
    at real time.
    """
    plan = plan or MqttPlan()
    t0 = int(time.time() * 1000) if t0_ms is None else int(t0_ms)
    if plan.fmt not in ("json", "binary", "int16"):
        raise ValueError(f"format must be json, binary or int16, not {plan.fmt!r}")
    topic = f"{prefix}/{device}/ecg"
    n = max(1, round(plan.chunk_s * fs_hz))
    declared = plan.declared_fs if plan.declared_fs is not None else fs_hz
    msgs: list[SimMessage] = []
    seq = 0
    for number, start in enumerate(range(0, len(x_mv), n)):
        if number in plan.reboot_at:
            seq = 0
        part = np.asarray(x_mv[start:start + n], dtype=np.float64)
        t0, t1 = start / fs_hz, (start + part.size) / fs_hz
        off = any(t0 < s + d and s < t1 for s, d in plan.leads_off)
        if off:
            part = np.full(part.size, np.nan)
        if number in plan.corrupt:
            payload = _CORRUPT[len([m for m in msgs if m.kind == "corrupt"]) % len(_CORRUPT)]
            kind = "corrupt"
        elif plan.fmt == "json":
            payload, kind = encode_json(part, declared, seq, off, key=key, device=device,
                                        t_ms=t0 + round(t1 * 1000)), "data"
        else:
            payload = encode_binary(part, round(declared), seq, off,
                                    int16_scale=0.001 if plan.fmt == "int16" else None,
                                    key=key, device=device, t_ms=t0 + round(t1 * 1000))
            kind = "data"
        msg = SimMessage(topic, payload, number, seq, start, part.size, kind)
        seq += 1
        if number in plan.drop:
            continue
        msgs.append(msg)
        if number in plan.duplicate:
            msgs.append(SimMessage(topic, payload, number, msg.seq, start, part.size, "duplicate"))
    for k in plan.swap:
        i = next((j for j, m in enumerate(msgs) if m.number == k), None)
        if i is not None and i + 1 < len(msgs):
            msgs[i], msgs[i + 1] = msgs[i + 1], msgs[i]
    return msgs


def publish_mqtt(host: str, port: int, messages: Sequence[SimMessage], fs_hz: float,
                 speed: float = 1.0, qos: int = 1, stop: threading.Event | None = None,
                 username: str | None = None, password: str | None = None,
                 client_id: str | None = None, timeout_s: float = 10.0) -> int:
    """Publish messages to a broker, paced by their sample positions.

    Parameters
    ----------
    host, port
        Broker address.
    messages : sequence of SimMessage
        From :func:`mqtt_messages` (several devices may be merged; they are
        paced by ``start_sample / fs_hz``).
    fs_hz : float
        True rate of the signal (pacing).
    speed : float
        1 = real time, 0 = as fast as possible.
    qos : int
        Publish QoS (0 or 1); with 1 the call returns after all are acked.

    Returns
    -------
    int
        Messages published.
    """
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"wearable-sim-{os.getpid()}")
    if username:
        c.username_pw_set(username, password)
    c.connect(host, port, 30)
    c.loop_start()
    infos = []
    try:
        t0 = time.monotonic()
        for m in messages:
            if stop is not None and stop.is_set():
                break
            if speed > 0:
                wait = t0 + (m.start_sample + m.n) / (fs_hz * speed) - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            infos.append(c.publish(m.topic, m.payload, qos=qos))
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(max(0.01, deadline - time.monotonic()))
    finally:
        c.disconnect()
        c.loop_stop()
    return len(infos)


# -- command line ------------------------------------------------------------------------------
def _spans(text: str) -> list[tuple[float, float]]:
    out = []
    for part in filter(None, text.split(",")):
        start, _, dur = part.partition(":")
        out.append((float(start), float(dur or 2.0)))
    return out


def _ints(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p.strip()]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(prog="wearable_sim.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--record", help="WFDB record path (default: synthetic ECG)")
    common.add_argument("--channel", default="0")
    common.add_argument("--seconds", type=float, help="length to play (s)")
    common.add_argument("--fs", type=float, default=250.0, help="synthetic rate (Hz)")
    common.add_argument("--hr", type=float, default=70.0, help="synthetic heart rate (bpm)")
    common.add_argument("--seed", type=int, default=1)
    common.add_argument("--speed", type=float, default=1.0, help="1 real time, 0 as fast as possible")
    common.add_argument("--leads-off", default="", help="START:DUR,... seconds")
    s = sub.add_parser("serial", parents=[common], help="write lines to a serial port or pty")
    s.add_argument("port", nargs="?", help="device or pty path to write to")
    s.add_argument("--format", choices=("ascii", "csv"), default="ascii")
    s.add_argument("--bits", type=int, default=10, help="ADC resolution")
    s.add_argument("--garble-every", type=int, default=0)
    s.add_argument("--drop", default="", help="INDEX:COUNT,... samples never sent")
    s.add_argument("--pty", action="store_true",
                   help="create a pty pair, print the path to read from, write to it")
    m = sub.add_parser("mqtt", parents=[common], help="publish chunks to a broker")
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, default=1883)
    m.add_argument("--device", default="sim1")
    m.add_argument("--prefix", default="ecgstream")
    m.add_argument("--format", choices=("json", "binary", "int16"), default="json")
    m.add_argument("--chunk-s", type=float, default=0.1)
    m.add_argument("--drop", default="", help="message numbers never sent (seq jumps)")
    m.add_argument("--duplicate", default="", help="message numbers sent twice")
    m.add_argument("--swap", default="", help="message numbers sent after their successor")
    m.add_argument("--corrupt", default="", help="message numbers sent corrupt")
    m.add_argument("--declare-fs", type=float, help="rate to declare (a wrong one on purpose)")
    m.add_argument("--qos", type=int, default=1, choices=(0, 1))
    m.add_argument("--key-file", help="sign every chunk with this device key (64 hex digits; "
                   "`ecgstream device-key add DEVICE --out FILE`)")
    m.add_argument("--username", help="broker user name (the wearable's own account)")
    m.add_argument("--password-env", help="environment variable holding the broker password")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    channel: int | str = int(args.channel) if args.channel.isdigit() else args.channel
    x, fs = load_signal(args.record, channel, args.seconds, args.fs, args.hr, args.seed)
    if args.cmd == "serial":
        drops = [(int(a), int(b or 1)) for a, _, b in (p.partition(":") for p in args.drop.split(",") if p)]
        plan = SerialPlan(args.format, _spans(args.leads_off), garble_every=args.garble_every,
                          drop=drops)
        lines = serial_lines(adc_counts(x, args.bits), fs, plan)
        if args.port is None and not args.pty:
            ap.error("serial: give PORT or --pty")
        target: str | int = args.port
        if args.pty:
            master, slave = os.openpty()
            print(os.ttyname(slave), flush=True)
            target = master
        try:
            n = write_lines(target, lines, fs, args.speed)
        except OSError as exc:
            print(f"wearable_sim: {args.port}: {exc}", file=sys.stderr)
            return 1
        log.info("%d lines written to %s", n, args.port)
        return 0
    mplan = MqttPlan(args.format, args.chunk_s, _ints(args.drop), _ints(args.duplicate),
                     _ints(args.swap), _ints(args.corrupt), declared_fs=args.declare_fs,
                     leads_off=_spans(args.leads_off))
    key = None
    if args.key_file:
        with open(args.key_file) as f:
            key = bytes.fromhex(f.read().strip())
    msgs = mqtt_messages(x, fs, args.device, mplan, args.prefix, key=key)
    try:
        n = publish_mqtt(args.host, args.port, msgs, fs, args.speed, args.qos, username=args.username,
                         password=os.environ.get(args.password_env or "", None) if args.password_env else None)
    except OSError as exc:
        print(f"wearable_sim: broker {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    log.info("%d messages published to %s:%d", n, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
