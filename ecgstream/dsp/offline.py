"""The offline form of the streaming pipeline: all beats of a whole record.

Training and the benchmarks use it; it is :class:`BeatPipeline` run over the
record as one chunk, never a second implementation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..core.types import Beat, SampleChunk
from .beats import BeatPipeline
from .config import DspConfig
from .detector import DetectorConfig
from .status import coerce_samples

__all__ = ["extract_beats"]


def extract_beats(
    samples: np.ndarray,
    fs_hz: float,
    cfg: DspConfig | None = None,
    device: str = "offline",
    detector: DetectorConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    progress_chunk_s: float = 60.0,
) -> list[Beat]:
    """Cut all beats of a whole record: the streaming pipeline in one chunk.

    Parameters
    ----------
    samples : array_like
        1-D signal (mV or ADC units).
    fs_hz : float
        Its sampling rate in Hz.
    cfg : DspConfig, optional
        Processing settings.
    progress : callable, optional
        Called as ``progress(samples_done, samples_total)`` after every
        ``progress_chunk_s`` seconds of signal: the record is then pushed in
        pieces of that length, which gives the same beats (the pipeline's
        output does not depend on chunking).

    Returns
    -------
    list of Beat
        Every beat, including flagged ones (see ``Beat.flags``); beats near
        the ends are padded and flagged ``edge``.

    Examples
    --------
    >>> import numpy as np
    >>> from ecgstream.dsp import extract_beats
    >>> extract_beats(np.zeros(2500), 500.0)
    []
    """
    pipe = BeatPipeline(device, fs_hz, cfg, detector)
    x = coerce_samples(samples)
    if progress is None:
        beats = pipe.push(SampleChunk(device, float(fs_hz), 0, x))
    else:
        beats = []
        step = max(1, round(progress_chunk_s * fs_hz))
        for a in range(0, x.size, step):
            beats.extend(pipe.push(SampleChunk(device, float(fs_hz), a, x[a:a + step])))
            progress(min(a + step, x.size), x.size)
    beats.extend(pipe.flush())
    return beats
