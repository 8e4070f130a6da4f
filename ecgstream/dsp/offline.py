"""The offline form of the streaming pipeline: all beats of a whole record.

Training and the benchmarks use it; it is :class:`BeatPipeline` run over the
record as one chunk, never a second implementation.
"""

from __future__ import annotations

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
    beats = pipe.push(SampleChunk(device, float(fs_hz), 0, x))
    beats.extend(pipe.flush())
    return beats
