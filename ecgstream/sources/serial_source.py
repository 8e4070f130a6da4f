"""A wearable on a serial line (an AD8232 on an Arduino or ESP32, a USB dongle).

``serial:/dev/ttyUSB0?baud=115200&fs=250&format=ascii&device=ID&chunk_s=0.1``

* ``baud``: line speed (default 115200).
* ``fs``: declared sampling rate in Hz. Required for ``ascii`` (its lines
  carry no time). Optional for ``csv``: without it the rate is estimated
  from the first :data:`ESTIMATE_LINES` device timestamps and rounded to a
  usual rate when within 2 % of one (see :func:`estimate_fs`).
* ``format``: ``ascii`` (default) or ``csv``.
* ``device``: device id (default: the port's file name, e.g. ``ttyUSB0``).
* ``chunk_s``: longest span of signal per chunk in seconds (default 0.1);
  a chunk is also sent when no line has come for a read timeout.
* ``scale``, ``offset``: ``sample = (value - offset) * scale``, e.g.
  ``offset=512&scale=0.0029`` for mV from a 10-bit AD8232 (default 0 and 1:
  samples in ADC counts; the DSP does not depend on the unit).
* ``vmin``, ``vmax``: the range of valid values before scaling (default
  -8388608..16777215, i.e. any 24-bit ADC); a value outside is garbled.


The line formats, lead-off markers, garbled lines and rate measurement are
in :mod:`ecgstream.sources.serial_lines`.

Unplugging (the port vanishes, a read fails) is retried with exponential
backoff (``retry_min_s`` doubling to ``retry_max_s``, :class:`ecgstream.core.backoff.Backoff`,
the one the MQTT connections use); the first chunk after
the port is back has ``gap_before=True`` and its sample index skips the
samples the host clock says were missed. A port that cannot be opened when
:meth:`SerialSource.run` starts raises :class:`SourceError` with the path
and the reason; the daemon decides whether to retry or exit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..core.backoff import Backoff
from .base import Sink, SourceError, SourceStats, SourceURI
from .serial_lines import SerialDecoder

__all__ = ["SerialSource"]

log = logging.getLogger(__name__)


def _path_of(u: SourceURI) -> str:
    path = (u.netloc + u.path) if u.netloc else u.path
    if not path:
        raise SourceError(f"source {u.raw!r}: no port; use serial:/dev/ttyUSB0")
    return path


class SerialSource:
    """A wearable on a serial port (see the module docs for the URI).

    Parameters
    ----------
    uri : str
        ``serial:PATH?...``.
    retry_min_s, retry_max_s : float
        First and longest wait between attempts to reopen a lost port, in
        seconds (the wait doubles from one to the other).
    read_timeout_s : float
        Read timeout in seconds; ``stop`` is honoured within about this.
    clock : callable
        Monotonic clock in seconds (arrival times, missed samples).
    sleep : callable, optional
        ``sleep(seconds)`` between reopen attempts; default waits on ``stop``.
    """

    ALLOWED = {"baud", "fs", "format", "device", "chunk_s", "scale", "offset", "vmin", "vmax"}

    def __init__(self, uri: str, retry_min_s: float = 0.5, retry_max_s: float = 10.0,
                 read_timeout_s: float = 0.1, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None) -> None:
        u = SourceURI.parse(uri)
        if u.scheme != "serial":
            raise SourceError(f"not a serial: source: {uri!r}")
        u.check_keys(self.ALLOWED)
        self.uri = uri
        self.path = _path_of(u)
        self.baud = int(u.take("baud", int, 115200))  # type: ignore[call-overload]
        self.format = u.params.get("format", "ascii").lower()
        if self.format not in ("ascii", "csv"):
            raise SourceError(f"source {uri!r}: format must be ascii or csv, not {self.format!r}")
        fs = u.take("fs", float, None)
        if fs is None and self.format == "ascii":
            raise SourceError(f"source {uri!r}: ascii lines carry no time; declare the rate "
                              "with fs=HZ (e.g. fs=250)")
        if fs is not None and not (math.isfinite(fs) and 1 <= fs <= 20000):  # type: ignore[operator,arg-type]
            raise SourceError(f"source {uri!r}: fs must be in 1..20000 Hz")
        chunk_s = float(u.take("chunk_s", float, 0.1))  # type: ignore[arg-type]
        if not 0 < chunk_s <= 10:
            raise SourceError(f"source {uri!r}: chunk_s must be in (0, 10] seconds")
        scale = float(u.take("scale", float, 1.0))  # type: ignore[arg-type]
        offset = float(u.take("offset", float, 0.0))  # type: ignore[arg-type]
        vmin = float(u.take("vmin", float, -8388608.0))  # type: ignore[arg-type]
        vmax = float(u.take("vmax", float, 16777215.0))  # type: ignore[arg-type]
        if not (math.isfinite(scale) and scale != 0 and math.isfinite(offset) and vmin < vmax):
            raise SourceError(f"source {uri!r}: scale must be finite and non-zero, offset "
                              "finite, vmin < vmax")
        if not (self.baud > 0 and 0 < retry_min_s <= retry_max_s and read_timeout_s > 0):
            raise SourceError(f"source {uri!r}: baud, retry and timeout must be positive")
        self.device = u.params.get("device") or Path(self.path).name or "serial"
        self.stats = SourceStats()
        self.decoder = SerialDecoder(self.device, self.format, fs, chunk_s,  # type: ignore[arg-type]
                                     self.stats, scale, offset, vmin, vmax)
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.read_timeout_s = read_timeout_s
        self._clock = clock
        self._sleep = sleep
        self.connected = threading.Event()  # set while the port is open (tests wait on it)

    @property
    def measured_host_fs_hz(self) -> float | None:
        """Rate from host arrival times in Hz (both formats), or None so far."""
        return self.decoder.measured_host_fs_hz

    def _open(self):  # -> serial.Serial
        import serial

        return serial.Serial(self.path, self.baud, timeout=self.read_timeout_s)

    def run(self, sink: Sink, stop: threading.Event) -> None:
        """Read until ``stop`` is set; reopen a lost port with backoff.

        Raises
        ------
        SourceError
            The port cannot be opened at start-up (path and reason).
        """
        import serial

        try:
            port = self._open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise SourceError(f"serial port {self.path}: cannot open: {exc}") from None
        log.info("serial %s: opened %s at %d baud", self.device, self.path, self.baud)
        dec = self.decoder
        try:
            while not stop.is_set():
                self.connected.set()
                try:
                    self._read_loop(port, sink, stop)
                except (serial.SerialException, OSError) as exc:
                    for c in dec.flush():
                        sink(c)
                    self.connected.clear()
                    with contextlib.suppress(Exception):
                        port.close()
                    log.warning("serial %s: port %s lost (%s); reopening with backoff",
                                self.device, self.path, exc)
                    port = self._reopen(stop)
                    if port is None:
                        return
                    self.stats.reconnects += 1
                    dec.reopened(self._clock())
                    log.info("serial %s: port %s reopened", self.device, self.path)
            for c in dec.flush():
                sink(c)
        finally:
            self.connected.clear()
            with contextlib.suppress(Exception):
                port.close()

    def _read_loop(self, port, sink: Sink, stop: threading.Event) -> None:
        dec = self.decoder
        while not stop.is_set():
            data = port.read(max(1, min(port.in_waiting, 65536)))
            now = self._clock()
            chunks = dec.feed(data, now) if data else dec.poll(now)
            for c in chunks:
                sink(c)

    def _reopen(self, stop: threading.Event):  # -> serial.Serial | None
        import serial

        backoff = Backoff(self.retry_min_s, self.retry_max_s)
        attempts = 0
        while not stop.is_set():
            delay = backoff.next()
            if self._sleep is not None:
                self._sleep(delay)
            elif stop.wait(delay):
                return None
            if stop.is_set():
                return None
            attempts += 1
            try:
                return self._open()
            except (serial.SerialException, OSError, ValueError) as exc:
                log.debug("serial %s: reopen attempt %d failed: %s", self.device, attempts, exc)
        return None
