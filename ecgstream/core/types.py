"""Plain data types passed between the pipeline stages.

Every stage of the streaming pipeline talks in these few frozen dataclasses.
The sample index of a device's stream is the master clock: wall time is
derived from it and the declared sampling rate, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class SampleChunk:
    """A run of consecutive samples from one device.

    Attributes
    ----------
    device : str
        Device id (one per wearable).
    fs_hz : float
        Declared sampling rate of ``samples`` in Hz.
    start_sample : int
        Index of ``samples[0]`` in the device's stream (the master clock).
    samples : numpy.ndarray
        1-D float64 array of samples in the source's unit (mV where known).
        NaN marks a sample that could not be read (lead off, garbled line).
    arrival_s : float
        Host monotonic time at arrival, in seconds.
    gap_before : bool
        True when samples were lost or skipped before this chunk; nothing
        downstream joins beats across a gap.
    leads_off : bool
        True when the source reports that the electrodes are off for the
        whole chunk (an explicit lead-off marker from the wearable).
    """

    device: str
    fs_hz: float
    start_sample: int
    samples: np.ndarray
    arrival_s: float = 0.0
    gap_before: bool = False
    leads_off: bool = False

    @property
    def end_sample(self) -> int:
        """Index one past the last sample of this chunk."""
        return self.start_sample + int(self.samples.shape[0])


@dataclass(frozen=True, slots=True)
class Beat:
    """One heartbeat cut from a stream.

    Attributes
    ----------
    device : str
        Device id.
    r_sample : int
        R-peak position as a sample index in the *source's* sampling rate.
    r_time_s : float
        ``r_sample / fs_source_hz``: seconds since the start of the stream.
    window : numpy.ndarray
        float32 array of fixed length (``window_before + window_after``
        samples at the processing rate), conditioned but not normalised.
    rr_s : float
        Interval from the previous R peak in seconds; NaN for the first beat
        after the start or after a gap.
    quality : float
        Signal-quality index in [0, 1]; see ``ecgstream.dsp.quality``.
    flags : frozenset[str]
        Reasons the beat is of poor quality (``"clipped"``, ``"rr"``,
        ``"morphology"``, ``"amplitude"``); empty when good.
    ready_sample : int
        Source sample index at which the beat became available (the last
        sample it needed); ``ready_sample - r_sample`` is the extraction delay.
    """

    device: str
    r_sample: int
    r_time_s: float
    window: np.ndarray
    rr_s: float
    quality: float
    flags: frozenset[str] = field(default_factory=frozenset)
    ready_sample: int = 0

    @property
    def good(self) -> bool:
        """True when the beat may be matched (no quality flags)."""
        return not self.flags
