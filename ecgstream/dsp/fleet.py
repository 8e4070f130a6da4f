"""Batched DSP for a fleet: the chunks of many devices advanced in one pass.

Why: a daemon serving hundreds of wearables spends most of its time on the
overhead of small NumPy calls, about 40 per device per 0.1 s chunk (the
resampler's taps, two filter calls, the detector's feature), not on the
arithmetic (docs/benchmarks/daemon.md). :class:`FleetDsp` stacks the chunks
of the devices of one round that can share a pass into 2-D arrays and runs
the sample-rate stages once for all of them:

- :meth:`StreamingResampler.push_many` (one gather, the taps summed once),
- :meth:`Conditioner.push_many` (one SciPy ``sosfilt`` kernel call),
- :meth:`RPeakDetector.feature_many` (one band-pass call, derivative,
  power and moving-window integration over all rows),

then hands each device its rows for the parts that are per beat
(candidates, classification, refinement, beat windows): those run only
where a device has something to decide.

Equality: every stage's batched form is beside its single-stream form and
does the same element-wise arithmetic in the same order, so a device's state
and beats are bitwise the same whichever devices share its pass and however
its stream was cut (property test ``tests/test_dsp_fleet.py`` against
:class:`BeatPipeline` alone).

Which chunks share a pass: a *plain* chunk (:meth:`BeatPipeline.plain`:
contiguous, no gap or lead-off mark, no dropout in progress, a primed
conditioner, all samples finite) of pipelines of one design (DSP and
detector settings, input rate) with the same chunk length and the same
resampler plan. Everything else (first chunks, gaps, NaN, lead-off, a device
that is alone in its group) goes through :meth:`BeatPipeline.push`, which
gives the same beats, only slower. Ragged fleets (several rates or chunk
lengths) form one group per kind. A device with two chunks in one round has
the second advanced in a second wave, after the first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.types import Beat, SampleChunk
from .beats import BeatPipeline
from .conditioner import Conditioner
from .detector import RPeakDetector

__all__ = ["FleetDsp", "FleetRound", "FleetStats"]


@dataclass
class FleetStats:
    """How the chunks went: in a batch of devices, or one by one."""

    batched: int = 0  # chunks advanced in a shared pass
    single: int = 0  # chunks through BeatPipeline.push
    passes: int = 0  # shared passes (groups of >= min_group chunks)


@dataclass
class FleetRound:
    """What one :meth:`FleetDsp.push_round` did, per item in the order given."""

    beats: list[list[Beat]]  # the beats the chunk completed
    errors: list[Exception | None]  # TypeError / ValueError of a refused chunk (its beats: [])
    leads_off: list[bool]  # the stream's contact state right after the chunk


class FleetDsp:
    """Advance many :class:`BeatPipeline` at once; the beats are theirs.

    Parameters
    ----------
    min_group : int
        Smallest group worth a shared pass (a group of one costs more as a
        batch than alone).
    """

    def __init__(self, min_group: int = 2) -> None:
        if min_group < 1:
            raise ValueError("min_group must be >= 1")
        self.min_group = min_group
        self.stats = FleetStats()

    def push(self, items: list[tuple[BeatPipeline, SampleChunk]]) -> list[list[Beat]]:
        """Push each chunk into its pipeline; return the beats of each item, in order.

        Equivalent to ``[p.push(c) for p, c in items]`` (same beats, same
        pipeline state), including its exceptions: the first chunk that
        :meth:`BeatPipeline.push` refuses (``TypeError`` / ``ValueError``)
        is raised, after every other item was processed. :meth:`push_round`
        reports each item's error instead.
        """
        r = self.push_round(items)
        for e in r.errors:
            if e is not None:
                raise e
        return r.beats

    def push_round(self, items: list[tuple[BeatPipeline, SampleChunk]]) -> FleetRound:
        """Push each chunk into its pipeline; per item its beats, error and contact state."""
        out = FleetRound([[] for _ in items], [None] * len(items), [False] * len(items))
        todo = list(range(len(items)))
        while todo:
            seen: set[int] = set()
            wave: list[int] = []
            later: list[int] = []
            for i in todo:
                key = id(items[i][0])
                if key in seen:
                    later.append(i)  # the device's next chunk: after this one
                else:
                    seen.add(key)
                    wave.append(i)
            self._wave(items, wave, out)
            todo = later
        return out

    # -- one wave: at most one chunk per device ------------------------------
    def _single(self, p: BeatPipeline, c: SampleChunk, i: int, out: FleetRound) -> None:
        self.stats.single += 1
        try:
            out.beats[i] = p.push(c)
        except (TypeError, ValueError) as exc:
            out.errors[i] = exc
        out.leads_off[i] = p.status.leads_off

    def _wave(self, items: list[tuple[BeatPipeline, SampleChunk]], wave: list[int], out: FleetRound) -> None:
        groups: dict[tuple, list[tuple[int, np.ndarray]]] = {}
        for i in wave:
            p, c = items[i]
            try:
                x = p.plain(c)
            except TypeError:
                x = None  # push() raises it again, with its message
            if x is None:
                self._single(p, c, i, out)
                continue
            phase, count = p.conditioner.resampler.plan(x.size)
            groups.setdefault((p.design_key, x.size, phase, count), []).append((i, x))
        for (_, _, _, count), members in groups.items():
            if len(members) < self.min_group or count == 0:
                for i, _ in members:
                    self._single(*items[i], i, out)
                continue
            x = np.stack([m[1] for m in members])
            finite = np.isfinite(x).all(axis=1)
            if not finite.all():
                for k in np.flatnonzero(~finite):
                    i = members[k][0]
                    self._single(*items[i], i, out)
                members = [m for m, f in zip(members, finite.tolist(), strict=True) if f]
                if len(members) < self.min_group:
                    for i, _ in members:
                        self._single(*items[i], i, out)
                    continue
                x = x[finite]
            self._batch(items, members, x, out)

    def _batch(self, items: list, members: list[tuple[int, np.ndarray]], x: np.ndarray, out: FleetRound) -> None:
        st = self.stats
        st.passes += 1
        st.batched += len(members)
        pipes = [items[i][0] for i, _ in members]
        n = x.shape[1]
        # Last change of value in each row (for the flat-line test), at once.
        if n > 1:
            changed = x[:, 1:] != x[:, :-1]
            last = np.where(changed.any(axis=1), (n - 2) - np.argmax(changed[:, ::-1], axis=1), -1).tolist()
        else:
            last = [-1] * len(members)
        for k, ((i, row), p) in enumerate(zip(members, pipes, strict=True)):
            start = int(items[i][1].start_sample)
            p.status.samples_in += n
            p._take(row, start, False, last[k])
        y = Conditioner.push_many([p.conditioner for p in pipes], x)
        dets = [p.detector for p in pipes]
        mwi, slope = RPeakDetector.feature_many(dets, y)
        qrs = RPeakDetector.advance_many(dets, mwi, slope)
        for k, ((i, _), p) in enumerate(zip(members, pipes, strict=True)):
            out.beats[i] = p._conditioned(y[k], qrs=qrs[k])
            p.status.next_sample += n
            out.leads_off[i] = p.status.leads_off
