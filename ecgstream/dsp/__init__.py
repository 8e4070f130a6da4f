"""Streaming DSP: causal conditioning, online R-peak detection, beat windows."""

from .beats import BeatPipeline, StreamStatus, extract_beats
from .conditioner import Conditioner
from .config import DspConfig
from .detector import DetectorConfig, RPeakDetector
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
