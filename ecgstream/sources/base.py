"""The interface every source implements, and source URIs.

The source contract
-------------------
A source owns one blocking input (a file, a serial port, an MQTT
subscription) and runs in its own thread: :meth:`Source.run` reads until
``stop`` is set and hands every :class:`~ecgstream.core.types.SampleChunk` to
``sink``. The sink must not block for long (the daemon's sink puts into a
bounded queue that drops the oldest chunk and marks a gap when full).

A source whose input ends (a WFDB record, a generated signal) is a
:class:`FiniteSource`: besides ``run`` it offers :meth:`FiniteSource.chunks`,
a generator that yields one pass of chunks, unpaced and lazily (a tool such
as ``ecgstream beats`` holds one chunk at a time, never a list of them).
Both ``run`` and ``chunks`` come from the one generator a finite source
writes, ``_iter(stop, pace, once)``, so the two forms cannot differ. The CLI
asks ``isinstance(src, FiniteSource)``; nothing probes for methods.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from ..core.types import SampleChunk

__all__ = ["RATE_WINDOW_S", "FiniteSource", "RateMeter", "Sink", "Source", "SourceError", "SourceStats", "SourceURI", "parse_speed"]

Sink = Callable[[SampleChunk], None]

#: Seconds of history behind ``measured_fs_hz``.
RATE_WINDOW_S = 10.0


class SourceError(Exception):
    """A source cannot be opened or used; the message says which and why."""


@dataclass
class SourceStats:
    """Counters every source keeps (read by metrics and liveness).

    Attributes
    ----------
    chunks, samples : int
        Chunks and samples delivered.
    garbled : int
        Lines or payloads that could not be parsed and were skipped.
    gaps : int
        Gaps marked (lost messages, resyncs, reconnects).
    reconnects : int
        Successful reopenings after a loss of the input.
    declared_fs_hz : dict[str, float]
        Declared sampling rate per device.
    measured_fs_hz : dict[str, float]
        Rate estimated from arrival times or device timestamps per device.
    """

    chunks: int = 0
    samples: int = 0
    garbled: int = 0
    gaps: int = 0
    reconnects: int = 0
    declared_fs_hz: dict[str, float] = field(default_factory=dict)
    measured_fs_hz: dict[str, float] = field(default_factory=dict)


class Source(Protocol):
    """What the daemon needs of a source."""

    uri: str
    stats: SourceStats

    def run(self, sink: Sink, stop: threading.Event) -> None:
        """Read until ``stop`` is set or the input ends; call ``sink`` per chunk.

        Raises
        ------
        SourceError
            When the input cannot be opened at all (a wrong path, no such
            record or channel, a broker that refuses the credentials).
            Transient losses (unplug, broker restart) are retried internally
            with backoff and reported as gaps instead.
        """
        ...


class RateMeter:
    """Samples per second over a sliding window of (time, samples) marks.

    Parameters
    ----------
    window_s : float
        History kept, in seconds of the clock that is fed in.
    min_span_s : float
        Shortest history that gives an estimate.
    """

    def __init__(self, window_s: float = RATE_WINDOW_S, min_span_s: float = 1.0) -> None:
        self.window_s = window_s
        self.min_span_s = min_span_s
        self._marks: deque[tuple[float, int]] = deque()

    def add(self, t_s: float, total_samples: int) -> None:
        """Record that ``total_samples`` had arrived by time ``t_s`` (seconds)."""
        self._marks.append((t_s, total_samples))
        while len(self._marks) > 2 and t_s - self._marks[1][0] >= self.window_s:
            self._marks.popleft()

    def reset(self) -> None:
        """Forget the history (after a gap or a reconnect)."""
        self._marks.clear()

    @property
    def rate_hz(self) -> float | None:
        """The estimate in Hz, or None while the history is too short."""
        if len(self._marks) < 2:
            return None
        (t0, n0), (t1, n1) = self._marks[0], self._marks[-1]
        if t1 - t0 < self.min_span_s:
            return None
        return (n1 - n0) / (t1 - t0)




class FiniteSource:
    """Base of the sources that end: one generator gives both ``run`` and ``chunks``.

    A subclass sets ``uri``, ``stats``, ``fs_hz``, ``speed`` (0 = as fast as
    possible), ``_clock`` and ``_sleep``, and writes :meth:`_iter`.
    """

    uri: str
    stats: SourceStats
    fs_hz: float
    speed: float
    loop: bool = False
    _clock: Callable[[], float] = time.monotonic
    _sleep: Callable[[float], None] = time.sleep

    def _iter(self, stop: threading.Event, pace: Callable[[int], None],
              once: bool) -> Iterator[SampleChunk]:
        """Yield the chunks; call ``pace(end_sample)`` before making each (it may sleep)."""
        raise NotImplementedError

    def chunks(self) -> Iterator[SampleChunk]:
        """One pass of chunks, unpaced, yielded lazily (for tools and tests)."""
        return self._iter(threading.Event(), _no_pace, True)

    def run(self, sink: Sink, stop: threading.Event) -> None:
        """Deliver into ``sink`` until the input ends (or ``stop``), paced by ``speed``."""
        for chunk in self._iter(stop, self._pacer(), not self.loop):
            sink(chunk)

    def _pacer(self) -> Callable[[int], None]:
        """``pace(end_sample)``: wait until the stream time of ``end_sample`` at ``speed``."""
        if not self.speed > 0:
            return _no_pace
        t0 = self._clock()
        rate = self.fs_hz * self.speed

        def pace(end_sample: int) -> None:
            wait = t0 + end_sample / rate - self._clock()
            if wait > 0:
                self._sleep(wait)

        return pace


def _no_pace(end_sample: int) -> None:
    return None


@dataclass(frozen=True)
class SourceURI:
    """A parsed source URI: ``scheme:path?key=value&...``.

    Examples: ``wfdb:data/ecgid-excerpt/Person_01/rec_1?channel=0&speed=1``,
    ``serial:/dev/ttyUSB0?baud=115200&fs=250&format=ascii``,
    ``mqtt://host:1883/ecgstream/+/ecg``, ``synthetic:?fs=500&hr=70``.
    """

    scheme: str
    netloc: str
    path: str
    params: dict[str, str]
    raw: str

    @classmethod
    def parse(cls, uri: str) -> SourceURI:
        if ":" not in uri:
            raise SourceError(
                f"source {uri!r} has no scheme; use wfdb:PATH, serial:DEVICE, "
                "mqtt://HOST:PORT/TOPIC or synthetic:"
            )
        try:
            parts = urlsplit(uri)
            query = parse_qs(parts.query, keep_blank_values=True)
        except ValueError as exc:  # e.g. "Invalid IPv6 URL" for an unbalanced '['
            raise SourceError(f"source {uri!r}: {exc}") from None
        if parts.fragment and parts.scheme.lower() not in {"mqtt", "mqtts"}:
            raise SourceError(
                f"source {uri!r}: '#' starts a URI fragment and would be cut off; "
                "write it as %23"
            )
        params: dict[str, str] = {}
        for k, v in query.items():
            if len(v) != 1:
                raise SourceError(f"source {uri!r}: parameter {k!r} given {len(v)} times")
            params[k] = v[0]
        path = parts.path
        return cls(parts.scheme.lower(), parts.netloc, path, params, uri)

    def take(self, key: str, conv: Callable[[str], object], default: object = None) -> object:
        """Return parameter ``key`` converted by ``conv``, or ``default``."""
        if key not in self.params:
            return default
        try:
            return conv(self.params[key])
        except (TypeError, ValueError) as exc:
            raise SourceError(f"source {self.raw!r}: bad value for {key!r}: {exc}") from None

    def check_keys(self, allowed: set[str]) -> None:
        """Raise SourceError naming any parameter not in ``allowed``."""
        extra = sorted(set(self.params) - allowed)
        if extra:
            raise SourceError(
                f"source {self.raw!r}: unknown parameter(s) {', '.join(extra)}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )


def parse_speed(v: str) -> float:
    """Parse a replay ``speed=`` parameter: a positive factor, or ``0``/``max``
    (as fast as possible, returned as 0.0)."""
    if v in {"max", "0", "inf"}:
        return 0.0
    s = float(v)
    if not s > 0:
        raise ValueError("speed must be positive, or 0/max for as fast as possible")
    return s
