"""Fair, bounded intake: the chunks between the sources and the processing thread (issue 16, item 2).

The sources' threads :meth:`FairIntake.put` chunks; the processing thread
:meth:`FairIntake.drain`\\ s a round. What it guarantees:

* **memory bounded in samples**, not only in chunks: at most
  ``max_samples`` samples (and ``max_chunks`` chunks) wait in all, and at
  most ``device_backlog_s`` seconds of a device's own samples;
* **a cap on chunk length**: a chunk longer than ``max_chunk_s`` seconds of
  its declared rate is refused (a wearable sends tenths of a second);
* **a per-device rate limit tied to the declared rate**: a token bucket per
  device, filled at ``rate_factor`` x the declared rate x the replay speed
  (samples per second of host time), ``burst_s`` seconds deep; a chunk that
  finds the bucket short is refused. A paced device never comes near it;
  a reconnect's backlog of up to ``burst_s`` seconds passes;
* **round-robin service**: a round takes one chunk from each device with
  chunks waiting, in turn, so a device with a deep queue cannot make the
  others wait behind it;
* **the flooding device loses, and says so**: when memory is short the
  device holding the most samples loses its oldest chunk, never a
  neighbour; every refusal is counted per device, and
  :meth:`take_floods` hands the processing thread what happened since its
  last tick (the daemon logs it, sends an ``input`` event and publishes the
  device ``unknown``).

A refused or dropped chunk leaves a jump in its device's sample index,
which the DSP reads as a gap (nothing is joined across it).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.types import SampleChunk

__all__ = ["DROPPED", "FairIntake", "IntakeLimits", "IntakeStats"]

#: Prefix of a flood reason where a queued chunk was dropped for room (not refused at the door).
DROPPED = "dropped: "


@dataclass(frozen=True)
class IntakeLimits:
    """The intake's bounds (``[input]`` of the config gives them; docs/config.md)."""

    max_chunks: int = 10_000
    max_samples: int = 2_000_000
    max_chunk_s: float = 10.0
    device_backlog_s: float = 30.0
    rate_factor: float | None = 1.5  # None: no rate limit (a replay as fast as possible)
    burst_s: float = 10.0

    @classmethod
    def of(cls, input_cfg, max_chunks: int, speed: float | None) -> IntakeLimits:
        """The limits of an ``[input]`` section, the daemon's chunk bound and its replay speed."""
        rate = getattr(input_cfg, "rate_limit", 1.5)
        return cls(max_chunks=max_chunks, max_samples=getattr(input_cfg, "max_queued_samples", 2_000_000),
                   max_chunk_s=getattr(input_cfg, "max_chunk_s", 10.0),
                   # a replay as fast as possible is one trusted local stream ahead of its
                   # processing: only the shared bound applies to it
                   device_backlog_s=float("inf") if speed is None else getattr(input_cfg, "device_backlog_s", 30.0),
                   rate_factor=None if speed is None or not rate else rate * speed,
                   burst_s=getattr(input_cfg, "burst_s", 10.0))


@dataclass
class IntakeStats:
    """Counters of the intake (read by the daemon's stats and tests)."""

    put: int = 0
    dropped_chunks: int = 0  # taken out for memory (the heaviest device's oldest)
    dropped_samples: int = 0
    refused_long: int = 0  # chunks over max_chunk_s
    refused_rate: int = 0  # chunks over the device's rate
    refused_samples: int = 0
    peak_samples: int = 0
    by_device: dict[str, int] = field(default_factory=dict)  # device -> chunks refused or dropped (all time)


class FairIntake:
    """Per-device queues served round-robin, bounded in samples (module docs).

    Parameters
    ----------
    limits : IntakeLimits
    clock : callable
        Monotonic seconds; a chunk's ``arrival_s`` is used when it has one.
    """

    def __init__(self, limits: IntakeLimits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or IntakeLimits()
        self.clock = clock
        self._cv = threading.Condition(threading.Lock())
        self._queues: dict[str, deque[SampleChunk]] = {}  # insertion order is the round-robin order
        self._dev_samples: dict[str, int] = {}
        self._samples = 0
        self._chunks = 0
        self._buckets: dict[str, list[float]] = {}  # device -> [tokens, last host time]
        self._floods: dict[str, list] = {}  # device -> [chunks, samples, reason] since the last take
        self.stats = IntakeStats()

    # -- the sources' side ------------------------------------------------------------------
    def put(self, chunk: SampleChunk) -> bool:
        """Queue ``chunk`` (any thread); False when it was refused."""
        n = int(chunk.samples.size)
        fs = float(chunk.fs_hz)
        lim = self.limits
        now = chunk.arrival_s or self.clock()
        dev = chunk.device
        with self._cv:
            st = self.stats
            st.put += 1
            if n > lim.max_chunk_s * fs:
                st.refused_long += 1
                self._refused(dev, n, f"chunk of {n / fs:.1f} s (most {lim.max_chunk_s:g} s)")
                return False
            if lim.rate_factor is not None and not self._take_tokens(dev, n, fs, now):
                st.refused_rate += 1
                self._refused(dev, n, f"samples faster than {lim.rate_factor:g} x its declared "
                                      f"{fs:g} Hz")
                return False
            if n > lim.max_samples:
                self._refused(dev, n, "chunk larger than the whole intake")
                return False
            q = self._queues.get(dev)
            cap_dev = max(lim.device_backlog_s * fs, n)
            while q and self._dev_samples[dev] + n > cap_dev:  # its own backlog: its own oldest goes
                self._drop_oldest(dev, "backlog")
                q = self._queues.get(dev)
            while self._chunks and (self._samples + n > lim.max_samples or self._chunks >= lim.max_chunks):
                heavy = max(self._dev_samples, key=self._dev_samples.__getitem__)  # the heaviest loses
                self._drop_oldest(heavy, "memory")
            q = self._queues.setdefault(dev, deque())
            self._dev_samples.setdefault(dev, 0)
            q.append(chunk)
            self._dev_samples[dev] += n
            self._samples += n
            self._chunks += 1
            st.peak_samples = max(st.peak_samples, self._samples)
            self._cv.notify()
            return True

    def _take_tokens(self, dev: str, n: int, fs: float, now: float) -> bool:
        lim = self.limits
        rate = fs * float(lim.rate_factor or 0.0)
        depth = max(fs * lim.burst_s, n)
        b = self._buckets.get(dev)
        if b is None:
            if len(self._buckets) >= 100_000:  # made-up ids: forget the idle ones (they start full again)
                self._buckets = {d: v for d, v in self._buckets.items() if now - v[1] < 60.0}
            b = self._buckets[dev] = [depth, now]
        else:
            b[0] = min(depth, b[0] + max(0.0, now - b[1]) * rate)
            b[1] = now
        if b[0] < n:
            return False
        b[0] -= n
        return True

    def _refused(self, dev: str, n: int, reason: str) -> None:
        st = self.stats
        st.refused_samples += n
        st.by_device[dev] = st.by_device.get(dev, 0) + 1
        if len(st.by_device) > 10_000:
            st.by_device.clear()
        f = self._floods.get(dev)
        if f is None:
            if len(self._floods) >= 10_000:
                return
            f = self._floods[dev] = [0, 0, reason]
        f[0] += 1
        f[1] += n
        f[2] = reason

    def _drop_oldest(self, dev: str, why: str) -> None:
        q = self._queues[dev]
        old = q.popleft()
        k = int(old.samples.size)
        self._dev_samples[dev] -= k
        self._samples -= k
        self._chunks -= 1
        self.stats.dropped_chunks += 1
        self.stats.dropped_samples += k
        if not q:
            del self._queues[dev]
            del self._dev_samples[dev]
        self._refused(dev, 0, f"{DROPPED}queue full: the device with most samples waiting loses its oldest"
                      if why == "memory" else f"{DROPPED}backlog beyond {self.limits.device_backlog_s:g} s of "
                      "its own samples")

    # -- the processing thread ----------------------------------------------------------------
    def drain(self, timeout: float, max_chunks: int) -> list[SampleChunk]:
        """Up to ``max_chunks`` chunks, one per device in turn; waits up to ``timeout`` for the first."""
        with self._cv:
            if not self._chunks:
                self._cv.wait(timeout)
            out: list[SampleChunk] = []
            while self._chunks and len(out) < max_chunks:
                for dev in list(self._queues):
                    q = self._queues.pop(dev)  # re-inserted at the end: the next round starts after it
                    c = q.popleft()
                    k = int(c.samples.size)
                    self._dev_samples[dev] -= k
                    self._samples -= k
                    self._chunks -= 1
                    out.append(c)
                    if q:
                        self._queues[dev] = q
                    else:
                        del self._dev_samples[dev]
                    if len(out) >= max_chunks:
                        break
            return out

    def take_floods(self) -> dict[str, tuple[int, int, str]]:
        """Devices whose chunks were refused or dropped since the last call: chunks, samples, why."""
        with self._cv:
            f, self._floods = self._floods, {}
        return {d: (v[0], v[1], v[2]) for d, v in f.items()}

    def qsize(self) -> int:
        """Chunks waiting (``queue.Queue``'s name, for callers that watch the backlog)."""
        return self._chunks

    def empty(self) -> bool:
        return self._chunks == 0

    @property
    def samples(self) -> int:
        """Samples waiting."""
        return self._samples
