"""Replay of a WFDB record as a live stream.

``wfdb:PATH[?channel=N&speed=X&loop=1&chunk_s=S&device=ID]``

* ``channel``: index or signal name; default 0, which for ECG-ID is the raw
  lead I (the daemon must not depend on PhysioNet's offline-filtered copy).
* ``speed``: 1 paces at real time, 2 twice as fast, ``0`` or ``max`` as fast
  as possible (default ``max`` for ``beats``, the daemon passes its own).
* ``loop``: replay the record again and again; each restart is marked as a
  gap (the signal jumps), while the sample index keeps counting.
* ``chunk_s``: seconds of signal per chunk (default 0.1).
* ``device``: device id (default: the record's name, e.g. ``Person_01-rec_1``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..core.types import SampleChunk
from .base import FiniteSource, SourceError, SourceStats, SourceURI, parse_speed
from .records import DataError, read_record

__all__ = ["WfdbReplaySource"]


class WfdbReplaySource(FiniteSource):
    """Replays one channel of a WFDB record in chunks.

    Parameters
    ----------
    uri : str
        ``wfdb:...`` as described in the module docs.
    speed : float, optional
        Overrides the URI's ``speed`` (0 = as fast as possible).
    clock, sleep : callables, optional
        Monotonic clock and sleep, injectable for tests.
    """

    ALLOWED = {"channel", "speed", "loop", "chunk_s", "device"}

    def __init__(
        self,
        uri: str,
        speed: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        u = SourceURI.parse(uri)
        if u.scheme != "wfdb":
            raise SourceError(f"not a wfdb: source: {uri!r}")
        u.check_keys(self.ALLOWED)
        self.uri = uri
        path = (u.netloc + u.path) if u.netloc else u.path
        if not path:
            raise SourceError(f"source {uri!r}: no record path; use wfdb:PATH/TO/RECORD")
        self.path = Path(path)
        self.channel = u.params.get("channel", "0")
        self.speed = speed if speed is not None else float(u.take("speed", parse_speed, 0.0))  # type: ignore[arg-type]
        self.loop = bool(u.take("loop", lambda v: v.lower() in {"1", "true", "yes"}, False))
        self.chunk_s = float(u.take("chunk_s", float, 0.1))  # type: ignore[arg-type]
        if not 0 < self.chunk_s <= 10:
            raise SourceError(f"source {uri!r}: chunk_s must be in (0, 10] seconds")
        default_dev = f"{self.path.parent.name}-{self.path.name}" if self.path.parent.name else self.path.name
        self.device = u.params.get("device", default_dev)
        try:
            self.samples, self.fs_hz, self.info = read_record(self.path, self.channel)
        except DataError as exc:
            raise SourceError(str(exc)) from None
        if self.samples.size == 0:
            raise SourceError(f"record {self.path} holds no samples")
        self.stats = SourceStats()
        self.stats.declared_fs_hz[self.device] = self.fs_hz
        self._clock = clock
        self._sleep = sleep

    def _iter(self, stop: threading.Event, pace: Callable[[int], None],
              once: bool) -> Iterator[SampleChunk]:
        n = max(1, round(self.chunk_s * self.fs_hz))
        x = self.samples
        index = 0  # stream sample index (keeps counting across loops)
        first_pass = True
        while not stop.is_set():
            for pos in range(0, x.size, n):
                if stop.is_set():
                    return
                part = x[pos:pos + n]
                pace(index + part.size)
                gap = pos == 0 and not first_pass
                if gap:
                    self.stats.gaps += 1
                yield SampleChunk(self.device, self.fs_hz, index, np.array(part, dtype=np.float64),
                                  arrival_s=self._clock(), gap_before=gap)
                self.stats.chunks += 1
                self.stats.samples += part.size
                index += part.size
            first_pass = False
            if once:
                return
