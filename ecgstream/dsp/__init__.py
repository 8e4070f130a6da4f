"""Streaming DSP: causal conditioning, online R-peak detection, beat windows."""

from .beats import BeatPipeline, StreamStatus
from .conditioner import Conditioner
from .config import DspConfig
from .detector import DetectorConfig, RPeakDetector
from .offline import extract_beats
from .resample import StreamingResampler

__all__ = [
    "BeatPipeline",
    "Conditioner",
    "DetectorConfig",
    "DspConfig",
    "RPeakDetector",
    "StreamStatus",
    "StreamingResampler",
    "extract_beats",
]
