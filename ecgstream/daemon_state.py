"""What the daemon keeps: its counters and, per device, the pipeline and its stages."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .dsp import BeatPipeline
from .pipeline import Decider, LivenessState, LivenessTracker

if TYPE_CHECKING:
    from .daemon import Daemon

__all__ = ["DaemonStats", "DeviceState"]


@dataclass
class DaemonStats:
    """Counters of one daemon run (for logs, benchmarks and tests)."""

    chunks: int = 0
    samples: int = 0
    chunks_dropped: int = 0
    samples_dropped: int = 0
    beats: int = 0
    beats_good: int = 0
    beats_embedded: int = 0
    bad_chunks: int = 0
    auth_published: int = 0
    liveness_published: int = 0
    events_published: int = 0
    first_chunk_s: float | None = None  # monotonic time the first chunk was processed
    adaptations: int = 0  # beats folded into a device's template copy
    decision_latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    first_decision_s: dict[str, float] = field(default_factory=dict)  # device -> stream s of first decision


class DeviceState:
    """All per-device state, owned by the processing thread."""

    def __init__(self, device: str, fs_hz: float, daemon: Daemon) -> None:
        self.device = device
        self.fs = fs_hz
        self.pipeline = BeatPipeline(device, fs_hz, daemon.dsp_cfg)
        self.liveness = LivenessTracker(fs_hz, daemon.liveness_cfg, daemon.rate_speed)
        self.subjects, self.matcher = daemon.subjects_for(device)
        self.decider = (
            Decider(self.subjects, daemon.thresholds, daemon.decision_cfg) if self.subjects else None
        )
        self.auth_seq = 0
        self.last_auth_pub = -1e18
        self.last_live_pub = -1e18
        self.last_chunk_host = daemon.clock()
        self.leads_off = True
        self.live_key: tuple | None = None
        self.last_live: LivenessState | None = None
        self.stream_t = 0.0
        self.silent = False
        self.last_event_after: dict[str, dict] = {}  # what -> the 'after' of its last event
