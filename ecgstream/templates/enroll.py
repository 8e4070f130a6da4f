"""Enrolment: from a source's beats to a template.

Quality-gated beats are collected until ``min_beats`` good beats are in and
at least ``seconds`` of signal were seen (a live source), or until a
recording ends (a finite source: all of its signal, up to ``max_seconds``);
their
embeddings' quality-weighted unit centroid is the sitting's centroid
(:func:`ecgstream.pipeline.scores.make_template` with
:func:`~ecgstream.pipeline.scores.quality_weights`). Only centroids and a few
statistics are kept: no raw ECG, no per-beat embeddings (they would let a
thief rebuild or replay more than a template).

How many beats are enough
-------------------------
``MIN_BEATS`` (6) comes from data (``python -m train.evaluate --ptbxl``,
docs/model/scale.md, "enrolment length"): with the shipped model, templates
from the first 3, 4, 5, 6, 8 or 10 good beats of one record give the same
error within 0.3 points (PTB-XL cross-ECG EER 7.45-7.79 %, ECG-ID 10-beat EER
5.18-5.48 %): the beats of one sitting are alike, so more of them buy little.
6 keeps one odd beat to a sixth of the centroid (quality weighting shrinks it
further) and lets a 10-s clinical ECG enrol (the floor of 10 turned away 8 of
12 PTB-XL patients, whose 10-s ECGs have 6-9 good beats). A live enrolment
still collects ``seconds`` of signal once the floor is reached, and keeps
going up to ``max_seconds`` until it is; a recording is used whole.

Several sittings
----------------
:func:`append_sitting` adds a sitting to an existing template (``enroll
--append``): the template then holds one centroid per sitting and a probe is
scored against the sitting it resembles most. A new sitting is accepted only
if its beats already match the existing template at the model card's EER
threshold: appending is for the same person on another day, never a way to
add a second person to a template.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ..core.types import Beat, SampleChunk
from ..dsp import BeatPipeline
from ..pipeline import Embedder, Matcher
from ..pipeline.scores import beat_scores, make_template, quality_weights
from ..sources.base import FiniteSource, Source

__all__ = ["MIN_BEATS", "EnrolError", "EnrolResult", "append_sitting", "enrol"]

#: Good beats a sitting needs by default (see the module docstring).
MIN_BEATS = 6


class EnrolError(Exception):
    """Enrolment could not gather enough good beats."""


@dataclass(frozen=True)
class EnrolResult:
    """A new template and how it was made."""

    centroid: np.ndarray
    n_beats: int
    n_beats_seen: int
    seconds: float
    quality: dict[str, float]
    cohort_id: str | None = None
    #: Fused score (mean normalised beat score) of this sitting's beats against
    #: ``against``'s template when one was given (:func:`append_sitting` uses it).
    match_score: float | None = None

    def template(self, subject: str, model_id: str, source: str = "", created_utc: str | None = None) -> Any:
        """This sitting as a new one-sitting :class:`~ecgstream.templates.Template`."""
        from . import Template

        return Template(subject=subject, model_id=model_id, centroid=self.centroid, n_beats=self.n_beats,
                        created_utc=created_utc or utc_now(), quality=self.quality, source=source,
                        cohort_id=self.cohort_id)


def enrol(
    source: Source,
    embedder: Any,
    seconds: float = 30.0,
    min_beats: int = MIN_BEATS,
    max_seconds: float = 120.0,
    progress: Callable[[int, int, float], None] | None = None,
    stop: threading.Event | None = None,
    against: Any = None,
    no_samples_s: float | None = 10.0,
    clock: Callable[[], float] = time.monotonic,
    on_beat: Callable[[Beat], None] | None = None,
) -> EnrolResult:
    """Collect good beats from ``source`` and build a template.

    Parameters
    ----------
    source : Source
        Any source; enrolment reads its first device only.
    embedder : edge.EmbeddingModel
    seconds : float
        Signal to collect (stream seconds) once ``min_beats`` are in.
    min_beats : int
        Good beats needed.
    max_seconds : float
        Give up after this much signal without ``min_beats`` good beats.
    progress : callable, optional
        Called as ``progress(good_beats, min_beats, stream_seconds)``.
    against : Template, optional
        An existing template to score the new beats against (for
        :func:`append_sitting`); the result's ``match_score``.
    no_samples_s : float or None
        Give up when no samples have arrived for this many host (wall-clock)
        seconds, from the start or since the last chunk: a wearable that
        stops sending must not keep enrolment waiting forever. None: wait.
    clock : callable
        Monotonic host clock in seconds (injectable for tests).
    on_beat : callable, optional
        Called with every beat of the enrolled device, kept (``beat.good``)
        or refused (its ``flags`` say why), as it is cut: ``ecgstream plot
        enroll`` draws them. Nothing of them is kept here.

    Raises
    ------
    EnrolError
        Too few good beats before the source ended or ``max_seconds``, or no
        samples for ``no_samples_s``.
    SourceError
        The source failed (a port that cannot be opened), re-raised here.
    """
    stop = stop or threading.Event()
    cfg = embedder.dsp_config()
    # A recording (a finite source) is enrolled from all of its signal, up to
    # max_seconds: stopping at `seconds` would throw away beats a short or
    # noisy record needs (a 10-s PTB-XL ECG has 6-12 good beats in all).
    finite = isinstance(source, FiniteSource)
    windows: list[np.ndarray] = []
    seen = 0
    state: dict[str, Any] = {"pipe": None, "device": None, "t": 0.0, "last": clock()}

    def sink(chunk: SampleChunk) -> None:
        nonlocal seen
        state["last"] = clock()
        if state["device"] is None:
            state["device"] = chunk.device
            state["pipe"] = BeatPipeline(chunk.device, chunk.fs_hz, cfg)
        if chunk.device != state["device"] or stop.is_set():
            return
        pipe: BeatPipeline = state["pipe"]
        for b in pipe.push(chunk):
            seen += 1
            if on_beat is not None:
                on_beat(b)
            if b.good:
                windows.append(b.window)
        state["t"] = pipe.status.next_sample / chunk.fs_hz
        if progress:
            progress(len(windows), min_beats, state["t"])
        if (len(windows) >= min_beats and state["t"] >= seconds and not finite) or state["t"] >= max_seconds:
            stop.set()

    silent = _run_watched(source, sink, stop, state, no_samples_s, clock)
    if finite and state["pipe"] is not None and not stop.is_set():
        # The record ended: its last beats (up to the detector's delay) are complete too.
        tail = state["pipe"].flush()
        if on_beat is not None:
            for b in tail:
                on_beat(b)
        windows.extend(b.window for b in tail if b.good)
    if silent is not None:
        raise EnrolError(
            f"no samples from the source for {silent:.0f} s ({len(windows)} good beats in "
            f"{state['t']:.1f} s of signal before that); check that the wearable is on, sending, "
            "and on this port"
        )
    if len(windows) < min_beats:
        raise EnrolError(
            f"only {len(windows)} good beats in {state['t']:.1f} s of signal "
            f"(need {min_beats}); check the electrodes and keep still"
        )
    emb = Embedder(embedder).push_windows(np.stack(windows))
    centroid = make_template(emb, quality_weights(emb))
    s = beat_scores(emb, centroid).ravel()
    cohort = getattr(embedder, "cohort", None)
    match = None
    if against is not None:
        norm = str(embedder.card.get("score", {}).get("norm", "none"))
        match = float(Matcher([against.subject], [against.centroids], norm=norm, cohort=cohort).push(emb).mean())
    quality = {
        "score_mean": float(s.mean()),
        "score_p10": float(np.percentile(s, 10)),
        "score_min": float(s.min()),
    }
    return EnrolResult(centroid, len(windows), seen, float(state["t"]), quality,
                       cohort.id if cohort is not None else None, match)


def _run_watched(source: Source, sink: Callable[[SampleChunk], None], stop: threading.Event,
                 state: dict[str, Any], no_samples_s: float | None,
                 clock: Callable[[], float]) -> float | None:
    """Run ``source`` in a worker thread until it ends or ``stop``; watch for silence.

    Returns the seconds without samples when that ended the run, else None.
    The caller's thread only waits, so Ctrl-C (KeyboardInterrupt) reaches it
    at once; the source is then stopped before the exception goes on.
    """
    errors: list[BaseException] = []

    def work() -> None:
        try:
            source.run(sink, stop)
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    worker = threading.Thread(target=work, name="enrol-source", daemon=True)
    worker.start()
    silent: float | None = None
    try:
        while worker.is_alive():
            worker.join(0.1)
            quiet = clock() - state["last"]
            if no_samples_s is not None and quiet > no_samples_s and not stop.is_set():
                silent = quiet
                stop.set()
    finally:
        stop.set()
        worker.join(2.0)
    if errors:
        raise errors[0]
    return silent


def append_sitting(template: Any, res: EnrolResult, threshold: float, created_utc: str) -> Any:
    """A new :class:`~ecgstream.templates.Template` with ``res`` as one more sitting.

    Parameters
    ----------
    template : Template
        The subject's current template (same model and cohort as ``res``).
    res : EnrolResult
        The new sitting, enrolled with ``against=template``.
    threshold : float
        The model card's fused EER threshold: the new sitting's beats must
        score at least this against the current template.
    created_utc : str
        Time of this sitting (becomes the template's ``created_utc``).

    Raises
    ------
    EnrolError
        The new beats do not match the template, or model/cohort differ.
    """
    from . import MAX_SITTINGS, Template

    if res.match_score is None:
        raise EnrolError("the new sitting was not scored against the existing template")
    if res.cohort_id != template.cohort_id:
        raise EnrolError(f"the existing template was made against {template.cohort_id!r}, the model ships "
                         f"{res.cohort_id!r}: re-enrol with --force instead of --append")
    if res.match_score < threshold:
        raise EnrolError(
            f"the new beats score {res.match_score:.3f} against {template.subject!r}'s template, below the "
            f"model card's EER threshold {threshold:.3f}: not the same person, or a poor contact; a sitting "
            "is only appended when it already matches (use --force to replace the template instead)"
        )
    cs = np.concatenate([np.asarray(template.centroids), res.centroid[None, :]])[-MAX_SITTINGS:]
    q = dict(template.quality)
    q.update({"last_sitting_match": res.match_score, **{f"last_{k}": v for k, v in res.quality.items()}})
    return Template(
        subject=template.subject, model_id=template.model_id, centroid=make_template(cs),
        n_beats=template.n_beats + res.n_beats, created_utc=created_utc, quality=q,
        source=template.source, centroids=cs, cohort_id=template.cohort_id,
    )


def utc_now() -> str:
    """Current time as ISO 8601 UTC (seconds)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()
