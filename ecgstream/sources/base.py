"""The interface every source implements, and source URIs.

A source owns one blocking input (a file, a serial port, an MQTT
subscription) and runs in its own thread: :meth:`Source.run` reads until
``stop`` is set and hands every :class:`~ecgstream.types.SampleChunk` to
``sink``. The sink must not block for long (the daemon's sink puts into a
bounded queue that drops the oldest chunk and marks a gap when full).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from ..types import SampleChunk

__all__ = ["Sink", "Source", "SourceError", "SourceStats", "SourceURI", "parse_speed"]

Sink = Callable[[SampleChunk], None]


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
