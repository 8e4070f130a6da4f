"""What the daemon sees in a signal, beat by beat: the data behind ``ecgstream plot`` (no matplotlib).

:func:`trace_run` takes one device's chunks through the daemon's stages in
the daemon's order (:meth:`ecgstream.daemon.loop.Daemon._process`): its
:class:`~ecgstream.dsp.BeatPipeline`, then per beat the
:class:`~ecgstream.pipeline.LivenessTracker`, and for a matchable beat the
:class:`~ecgstream.pipeline.Embedder`, :class:`~ecgstream.pipeline.Matcher`
(with online adaptation) and :class:`~ecgstream.pipeline.Decider`; leads off
resets them as the daemon does; the decider's staleness runs on stream time
(as the daemon's does for a replay as fast as possible). It keeps what the
daemon throws away: every beat, its score, the fused score and threshold,
the states over stream time. No publisher, trust hooks or host clock: the
attempt limits and the declared-rate check of liveness (a host-time notion)
are not part of it.

:func:`trace_enrol` runs the real :func:`~ecgstream.templates.enroll.enrol`
and keeps each beat it saw, kept or refused, and why.

:func:`conditioned` is the conditioned signal the beats were cut from (the
same :class:`~ecgstream.dsp.conditioner.Conditioner`, run over the whole
capture), on the source's time axis.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.types import Beat, SampleChunk

__all__ = ["EnrolTrace", "RunTrace", "capture", "conditioned", "trace_enrol", "trace_run"]


def capture(source: Any, seconds: float | None) -> Iterator[SampleChunk]:
    """The chunks of ``source``'s first device: a record's all (or its first ``seconds``), a live source's first ``seconds``."""
    from ..sources import FiniteSource

    first: str | None = None
    if isinstance(source, FiniteSource):
        for c in source.chunks():
            first = first or c.device
            if c.device != first:
                continue
            yield c
            if seconds is not None and (c.start_sample + c.samples.size) / c.fs_hz >= seconds:
                return
        return
    if seconds is None:
        raise ValueError("a live source needs --seconds (how long to capture)")
    q: queue.Queue[SampleChunk | None] = queue.Queue()
    stop = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            source.run(q.put, stop)
        except BaseException as exc:  # handed to the caller
            errors.append(exc)
        finally:
            q.put(None)

    t = threading.Thread(target=work, name="plot-capture", daemon=True)
    t.start()
    try:
        while True:
            c = q.get()
            if c is None:
                break
            first = first or c.device
            if c.device != first:
                continue
            yield c
            if (c.start_sample + c.samples.size) / c.fs_hz >= seconds:
                break
    finally:
        stop.set()
        t.join(2.0)
    if errors:
        raise errors[0]


def conditioned(chunks: list[SampleChunk], cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(t_s, y)``: the conditioned signal of ``chunks`` (one device), on the source's time axis.

    Unreadable samples are held at the last value (as the pipeline bridges
    them); a gap is closed up, so times after a gap are approximate.
    """
    from ..dsp.conditioner import Conditioner

    if not chunks:
        return np.zeros(0), np.zeros(0)
    fs = chunks[0].fs_hz
    x = np.concatenate([np.asarray(c.samples, dtype=np.float64) for c in chunks])
    bad = ~np.isfinite(x)
    if bad.any():
        idx = np.where(~bad, np.arange(x.size), 0)
        np.maximum.accumulate(idx, out=idx)
        x = x[idx]
        x[~np.isfinite(x)] = 0.0
    cond = Conditioner(fs, cfg)
    y = cond.push(x)
    t0 = chunks[0].start_sample / fs
    return t0 + np.arange(y.size) / cfg.fs_hz - cond.delay_s, y


@dataclass
class BeatRow:
    """One beat as the daemon saw it."""

    beat: Beat
    matched: bool
    score: float | None = None  # the beat's own score against the subject
    fused: float | None = None  # the decider's fused score after it
    threshold: float | None = None  # the card's threshold for that many beats
    beats_used: int = 0
    state: str = "unknown"
    live: bool = False
    adapted: bool = False


@dataclass
class RunTrace:
    """Everything :func:`trace_run` kept (times are stream seconds of the source)."""

    subject: str
    operating_point: str
    fs_hz: float
    chunks: list[SampleChunk]
    rows: list[BeatRow]
    auth: list[tuple[float, str, float | None, float | None, str]]  # t, state, fused, threshold, reason
    live: list[tuple[float, bool, bool, tuple[str, ...]]]  # t, live, leads_on, reasons
    single_threshold: float
    end_s: float
    model_id: str
    flags: dict[str, int] = field(default_factory=dict)


def trace_run(chunks: Iterator[SampleChunk], model: Any, template: Any, cfg: Any) -> RunTrace:
    """Take ``chunks`` (one device) through the daemon's stages against ``template`` (see module docs).

    ``cfg`` is a loaded :class:`~ecgstream.config.Config` (its ``[decision]``,
    ``[liveness]`` and ``[adaptation]``).
    """
    from ..dsp import BeatPipeline
    from ..pipeline import Decider, Embedder, LivenessTracker, Matcher, Thresholds

    card = model.card
    norm = str(card.get("score", {}).get("norm", "none"))
    dc = cfg.decision
    thr = Thresholds.from_card(card.thresholds, dc.operating_point, dc.threshold)
    embed = Embedder(model)
    pipe = liveness = matcher = decider = None
    kept: list[SampleChunk] = []
    rows: list[BeatRow] = []
    auth: list[tuple[float, str, float | None, float | None, str]] = []
    live_t: list[tuple[float, bool, bool, tuple[str, ...]]] = []
    leads_off = True
    t_end = 0.0

    def note(t: float, d: Any) -> None:
        if not auth or d.changed or auth[-1][1] != d.state:
            auth.append((t, d.state, d.score, d.threshold, d.reason))

    for c in chunks:
        if pipe is None:
            pipe = BeatPipeline(c.device, c.fs_hz, model.dsp_config())
            liveness = LivenessTracker(c.fs_hz, cfg.liveness, None)
            matcher = Matcher([template.subject], [template.centroids], norm=norm, cohort=model.cohort,
                              adaptation=cfg.adaptation, policy=cfg.adaptation.policy(),
                              window_beats=dc.window_beats)
            decider = Decider([template.subject], thr, dc)
            auth.append((c.start_sample / c.fs_hz, "unknown", None, None, "start"))
        kept.append(c)
        beats = pipe.push(c)
        off = pipe.status.leads_off
        t_end = pipe.status.next_sample / c.fs_hz
        liveness.push_samples(int(np.size(c.samples)), t_end, c.gap_before)
        for b in beats:
            lv = liveness.push(b, off)
            live_t.append((b.r_time_s, lv.live, lv.leads_on, lv.reasons))
            row = BeatRow(b, matched=b.good or bool(dc.match_warmup_beats and b.flags == frozenset({"warmup"})),
                          live=lv.live)
            if row.matched:
                e = embed.push([b])[0]
                s = matcher.push(e)[0]
                d = decider.push(b.r_time_s, s, lv.failed)
                row.adapted = bool(matcher.adapt(b, e, d, lv))
                row.score = float(np.max(s))
                row.fused, row.threshold, row.beats_used = d.score, d.threshold, d.beats_used
                note(b.r_time_s, d)
            row.state = decider.state
            rows.append(row)
        if off and not leads_off:
            liveness.reset("leads off")
            matcher.reset("leads off")
            note(t_end, decider.reset("leads off"))
            live_t.append((t_end, False, False, ("leads off",)))
        leads_off = off
        note(t_end, decider.tick(t_end, liveness.state(off).failed))
    if pipe is None:
        raise ValueError("the source gave no samples")
    for b in pipe.flush():  # padded, flagged 'edge': never matched, shown as the daemon counts them
        rows.append(BeatRow(b, matched=False, state=decider.state))
    flags: dict[str, int] = {}
    for r in rows:
        for f in r.beat.flags:
            flags[f] = flags.get(f, 0) + 1
    return RunTrace(template.subject, dc.operating_point, kept[0].fs_hz, kept, rows, auth, live_t,
                    thr.for_beats(1)[0], t_end, model.model_id, flags)


@dataclass
class EnrolTrace:
    """What :func:`trace_enrol` kept: the chunks, every beat, the result or why it failed."""

    chunks: list[SampleChunk]
    beats: list[Beat]
    result: Any  # EnrolResult, or None when enrolment failed
    error: str | None
    scores: np.ndarray  # each kept beat's cosine with the sitting's centroid
    weights: np.ndarray  # each kept beat's weight in that centroid
    seconds: float
    min_beats: int


def trace_enrol(source: Any, model: Any, seconds: float, min_beats: int) -> EnrolTrace:
    """Run the real :func:`~ecgstream.templates.enroll.enrol` on ``source``, keeping every beat and chunk."""
    from ..pipeline import Embedder
    from ..pipeline.scores import beat_scores, make_template, quality_weights
    from ..templates.enroll import EnrolError, enrol

    chunks: list[SampleChunk] = []
    beats: list[Beat] = []

    class Keeping:  # the source, with every chunk it delivers kept for the picture
        uri = getattr(source, "uri", "")
        stats = getattr(source, "stats", None)

        def run(self, sink: Any, stop: threading.Event) -> None:
            def keep(c: SampleChunk) -> None:
                if not chunks or c.device == chunks[0].device:
                    chunks.append(c)
                sink(c)

            source.run(keep, stop)

    error = None
    res = None
    try:
        res = enrol(Keeping(), model, seconds=seconds, min_beats=min_beats, on_beat=beats.append,
                    no_samples_s=10.0)
    except EnrolError as exc:
        error = str(exc)
    good = [b.window for b in beats if b.good]
    scores = weights = np.zeros(0)
    if good:
        emb = Embedder(model).push_windows(np.stack(good))
        weights = quality_weights(emb)
        scores = beat_scores(emb, make_template(emb, weights)).ravel()
    t = chunks[-1].end_sample / chunks[-1].fs_hz if chunks else 0.0
    return EnrolTrace(chunks, beats, res, error, scores, np.asarray(weights, dtype=float).ravel(), t, min_beats)
