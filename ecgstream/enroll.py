"""Enrolment: from a source's beats to a template.

Quality-gated beats are collected until ``min_beats`` good beats are in and
at least ``seconds`` of signal were seen (or the source ends); their
embeddings' unit centroid is the template (:func:`ecgstream.matching.make_template`).
Only the centroid and a few statistics are kept: no raw ECG, no per-beat
embeddings (they would let a thief rebuild or replay more than a template).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from .dsp import BeatPipeline
from .matching import beat_scores, make_template
from .sources.base import Source
from .types import SampleChunk

__all__ = ["EnrolError", "EnrolResult", "enrol"]


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


def enrol(
    source: Source,
    embedder: Any,
    seconds: float = 30.0,
    min_beats: int = 20,
    max_seconds: float = 120.0,
    progress: Callable[[int, int, float], None] | None = None,
    stop: threading.Event | None = None,
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

    Raises
    ------
    EnrolError
        Too few good beats before the source ended or ``max_seconds``.
    """
    stop = stop or threading.Event()
    cfg = embedder.dsp_config()
    windows: list[np.ndarray] = []
    seen = 0
    state: dict[str, Any] = {"pipe": None, "device": None, "t": 0.0}

    def sink(chunk: SampleChunk) -> None:
        nonlocal seen
        if state["device"] is None:
            state["device"] = chunk.device
            state["pipe"] = BeatPipeline(chunk.device, chunk.fs_hz, cfg)
        if chunk.device != state["device"] or stop.is_set():
            return
        pipe: BeatPipeline = state["pipe"]
        for b in pipe.push(chunk):
            seen += 1
            if b.good:
                windows.append(b.window)
        state["t"] = pipe.status.next_sample / chunk.fs_hz
        if progress:
            progress(len(windows), min_beats, state["t"])
        if (len(windows) >= min_beats and state["t"] >= seconds) or state["t"] >= max_seconds:
            stop.set()

    source.run(sink, stop)
    if len(windows) < min_beats:
        raise EnrolError(
            f"only {len(windows)} good beats in {state['t']:.1f} s of signal "
            f"(need {min_beats}); check the electrodes and keep still"
        )
    emb = embedder.embed(np.stack(windows))
    centroid = make_template(emb)
    s = beat_scores(emb, centroid).ravel()
    quality = {
        "score_mean": float(s.mean()),
        "score_p10": float(np.percentile(s, 10)),
        "score_min": float(s.min()),
    }
    return EnrolResult(centroid, len(windows), seen, float(state["t"]), quality)


def utc_now() -> str:
    """Current time as ISO 8601 UTC (seconds)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()
