"""The per-stream counters and contact state, and the one input check of samples."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["StreamStatus", "coerce_samples"]


def coerce_samples(samples: object) -> np.ndarray:
    """Return ``samples`` as a 1-D float64 array or raise TypeError.

    Integers and floats of any width are accepted; strings, objects,
    booleans, complex numbers and arrays of more than one dimension are not.
    """
    arr = np.asarray(samples)
    if arr.dtype.kind not in "iuf":
        raise TypeError(
            f"samples must be a 1-D array of integers or floats, got dtype {arr.dtype}"
        )
    if arr.ndim != 1:
        raise TypeError(f"samples must be 1-D, got shape {arr.shape}")
    return arr.astype(np.float64, copy=False)


@dataclass
class StreamStatus:
    """Counters and contact state of one stream (for liveness and metrics).

    Attributes
    ----------
    leads_off : bool
        True while unreadable samples run longer than ``hold_max_s``, the
        source reported leads off, or the signal is flat.
    flat : bool
        True while the raw signal has not changed for ``flat_s``.
    samples_in, samples_invalid, samples_duplicate : int
        Samples received, unreadable (NaN/inf/lead-off), and dropped because
        they repeated sample indices already processed.
    segments : int
        Segments started (1 + gaps and long dropouts).
    beats, beats_good : int
        Beats emitted, and those without quality flags.
    flutter_suppressed : int
        Detections not emitted because they lay in sustained sinusoidal
        (flutter-like) activity; see ``BeatPipeline._flutter``.
    next_sample : int
        Source index expected next.
    """

    leads_off: bool = True
    flat: bool = False
    samples_in: int = 0
    samples_invalid: int = 0
    samples_duplicate: int = 0
    segments: int = 0
    beats: int = 0
    beats_good: int = 0
    flutter_suppressed: int = 0
    next_sample: int = -1
    flags: dict[str, int] = field(default_factory=dict)
