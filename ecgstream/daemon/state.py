"""What the daemon keeps: its counters and, per device, the pipeline and its stages."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..dsp import BeatPipeline
from ..pipeline import Decider, LivenessState, LivenessTracker, Matcher

__all__ = ["DaemonStats", "DeviceState"]


@dataclass
class DaemonStats:
    """Counters of one daemon run (for logs, benchmarks and tests)."""

    chunks: int = 0
    samples: int = 0
    chunks_dropped: int = 0
    samples_dropped: int = 0
    chunks_refused: int = 0  # by the intake: over the chunk-length cap or the device's rate (issue 16)
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
    """All per-device state, owned by the processing thread.

    The daemon builds the stages (:meth:`~ecgstream.daemon.loop.Daemon._device`);
    this holds them with the device's publish times and contact state.
    """

    def __init__(self, device: str, fs_hz: float, *, pipeline: BeatPipeline, liveness: LivenessTracker,
                 subjects: list[str], matcher: Matcher | None, decider: Decider | None,
                 now: float) -> None:
        self.device = device
        self.fs = fs_hz
        self.pipeline = pipeline
        self.liveness = liveness
        self.subjects, self.matcher = subjects, matcher
        self.decider = decider
        self.auth_seq = 0
        self.last_auth_pub = -1e18
        self.last_live_pub = -1e18
        self.last_chunk_host = now
        self.leads_off = True
        self.live_key: tuple | None = None
        self.last_live: LivenessState | None = None
        #: The liveness condition the last decision saw (LivenessState.condition); the auth
        #: payload's ``liveness`` field, and no ``authenticated`` leaves unless it is "live".
        self.live_condition = "establishing"
        self.stream_t = 0.0
        self.silent = False
        self.last_event_after: dict[str, dict] = {}  # what -> the 'after' of its last event
