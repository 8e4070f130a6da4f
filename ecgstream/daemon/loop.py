"""The daemon: sources in, authentication and liveness states out.

Threads: one per source (blocking reads), the publisher's network thread,
and the one processing thread that owns all pipeline state (this module's
:meth:`Daemon.run`). Sources hand chunks to the fair intake
(:mod:`ecgstream.daemon.intake`): per-device queues served round-robin,
bounded in samples, with a chunk-length cap and a rate limit tied to each
device's declared rate; when memory is short the device with the most
samples waiting loses its oldest chunk (the pipeline sees the jump in
sample index and marks a gap), so a slow consumer never blocks a network
thread and a flooding device never starves the others.

The data flow of :meth:`Daemon._process` is the README's diagram: per
device a :class:`~ecgstream.dsp.BeatPipeline` (chunks -> beats; the devices
of a round advanced together by :class:`~ecgstream.dsp.fleet.FleetDsp`,
bitwise as one by one), then the
stages of :mod:`ecgstream.pipeline`: one
:class:`~ecgstream.pipeline.Embedder` for all devices (good beats that
arrive together are embedded in one batch), and per device a
:class:`~ecgstream.pipeline.Matcher` (its own copy of the templates, which
online adaptation may move within bounds), a
:class:`~ecgstream.pipeline.Decider` and a
:class:`~ecgstream.pipeline.LivenessTracker`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.settings import AdaptationConfig, DecisionConfig, LivenessConfig
from ..core.types import Beat, SampleChunk
from ..dsp import BeatPipeline, DspConfig
from ..dsp.fleet import FleetDsp
from ..pipeline import (
    UNKNOWN,
    Decider,
    Embedder,
    LivenessState,
    LivenessTracker,
    Matcher,
    Thresholds,
)
from ..sources.base import Source
from ..trust.hooks import Trust
from .intake import DROPPED, FairIntake, IntakeLimits
from .output import DaemonOutput
from .state import DaemonStats, DeviceState

log = logging.getLogger("ecgstream.daemon")  # the name its log lines have always carried

__all__ = ["Daemon", "DaemonStats"]

_WARMUP_ONLY = frozenset({"warmup"})


class Daemon:
    """Continuous authentication over one or more sources.

    Parameters
    ----------
    sources : list of Source
        Where chunks come from.
    embedder : object
        ``edge.EmbeddingModel`` (``embed(windows)``, ``model_id``, ``card``).
    templates : dict of str to Template
        Enrolled templates made with ``embedder``'s model, by subject.
    publisher : object
        ``ecgstream.publish`` publisher.
    bindings : dict of str to str
        Device id -> bound subject (verification).
    default_subject : str or None
        Subject bound to every device without a binding (``--subject``).
    identify : bool
        Identify among all templates for devices without a subject.
    decision_cfg, liveness_cfg : settings
    speed : float or None
        Replay speed of the sources (1 = live); None/0 = as fast as possible
        (the rate check of liveness is then off, staleness uses stream time).
    queue_max_chunks : int
        Bound of the chunk queue.
    publish_interval_s : float
        States are republished at least this often (host seconds), so their
        ``valid_until`` keeps moving while the evidence holds.
    exit_when_sources_end : bool
        Stop once every source has ended and the queue is drained (replay).
    expected_fs : dict of str to float
        Configured rate per device; chunks declaring another rate are
        refused (counted as bad chunks, logged).
    """

    def __init__(
        self,
        sources: list[Source],
        embedder: Any,
        templates: dict[str, Any],
        publisher: Any,
        bindings: dict[str, str] | None = None,
        default_subject: str | None = None,
        identify: bool = True,
        decision_cfg: DecisionConfig | None = None,
        liveness_cfg: LivenessConfig | None = None,
        adaptation_cfg: AdaptationConfig | None = None,
        speed: float | None = 1.0,
        queue_max_chunks: int = 10_000,
        publish_interval_s: float = 1.0,
        exit_when_sources_end: bool = True,
        expected_fs: dict[str, float] | None = None,
        notifier: Any = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        trust: Trust | None = None,
    ) -> None:
        self.sources = sources
        self.embedder = embedder
        self.embed = Embedder(embedder)
        self.dsp = FleetDsp()  # the DSP of all devices of a round, batched
        self.templates = templates
        self.bindings = dict(bindings or {})
        self.default_subject = default_subject
        self.identify = identify
        self.decision_cfg = decision_cfg or DecisionConfig()
        self.liveness_cfg = liveness_cfg or LivenessConfig()
        self.speed = speed if speed else None
        self.rate_speed = self.speed
        self.dsp_cfg: DspConfig = embedder.dsp_config()
        card = embedder.card
        thr = card.thresholds if hasattr(card, "thresholds") else card["thresholds"]
        self.thresholds = Thresholds.from_card(
            thr, self.decision_cfg.operating_point, self.decision_cfg.threshold
        )
        self.model_id = embedder.model_id
        # Scores are normalised as the model card says, against the cohort the
        # model ships; templates made against another cohort are refused here
        # too (the store refuses them on load), so no caller can mix them.
        self.score_norm = str(card.get("score", {}).get("norm", "none")) if hasattr(card, "get") else "none"
        self.cohort = getattr(embedder, "cohort", None)
        if self.score_norm != "none" and self.cohort is None:
            raise ValueError(f"model card asks for {self.score_norm!r} scores but the embedder has no cohort")
        cid = self.cohort.id if self.cohort is not None else None
        for t in templates.values():
            if cid is not None and getattr(t, "cohort_id", None) != cid:
                from ..templates import cohort_mismatch

                raise ValueError(cohort_mismatch(t, cid))
        self.adaptation_cfg = adaptation_cfg or AdaptationConfig()
        self._adapt_policy = self.adaptation_cfg.policy()
        # Fair, bounded intake (issue 16): per-device queues served round-robin, bounded in
        # samples, a chunk-length cap and a rate limit tied to each device's declared rate.
        in_cfg = trust.input if trust is not None else None
        self.queue = FairIntake(IntakeLimits.of(in_cfg, queue_max_chunks, self.speed), clock=clock)
        self._flood_logged: dict[str, float] = {}
        self.exit_when_sources_end = exit_when_sources_end
        self.expected_fs = dict(expected_fs or {})
        self.max_round_chunks = 64
        self.notifier = notifier
        self.clock = clock
        self.wall = wall
        self.stats = DaemonStats()
        self.devices: dict[str, DeviceState] = {}
        self.source_errors: list[str] = []
        self._threads: list[threading.Thread] = []
        self._q_lock = threading.Lock()
        for dev, subj in self.bindings.items():
            if subj not in templates:
                raise KeyError(f"subject {subj!r} bound to device {dev!r} has no template; enrol first")
        if default_subject is not None and default_subject not in templates:
            raise KeyError(f"subject {default_subject!r} has no template; enrol first")
        self.trust = trust if trust is not None else Trust()  # ecgstream/trust/hooks.py: input, attempt limits
        self.trust.attach(self)
        self.output = DaemonOutput(publisher, self.stats, self.trust, self.decision_cfg, publish_interval_s,
                                   self.model_id, clock, wall)
        self.fleet: Any = None  # ecgstream/fleet/group.py: a daemon of a group (admit, tick)
        self.metrics: Any = None  # ecgstream/daemon/metrics.py: per-device counts for /metrics ([metrics])

    @property
    def publisher(self) -> Any:
        """The publisher the daemon's output sends to (a group daemon wraps it after construction)."""
        return self.output.publisher

    @publisher.setter
    def publisher(self, publisher: Any) -> None:
        self.output.publisher = publisher

    # -- templates ---------------------------------------------------------
    def subjects_for(self, device: str) -> tuple[list[str], Matcher | None]:
        """Subjects scored for ``device`` and the device's own matcher.

        Each device gets its own :class:`~ecgstream.pipeline.Matcher`: online
        adaptation moves that device's copy of its wearer's template, never
        the store's nor another device's.
        """
        subj = self.bindings.get(device, self.default_subject)
        names = [subj] if subj else (sorted(self.templates) if self.identify else [])
        if not names:
            return [], None
        return names, Matcher(names, [self.templates[s].centroids for s in names], norm=self.score_norm,
                              cohort=self.cohort, adaptation=self.adaptation_cfg, policy=self._adapt_policy,
                              window_beats=self.decision_cfg.window_beats)

    # -- source side (source threads) ---------------------------------------
    def _sink(self, chunk: SampleChunk) -> None:
        q = self.queue
        q.put(chunk)
        st, ist = self.stats, q.stats
        if ist.dropped_chunks != st.chunks_dropped:
            st.chunks_dropped, st.samples_dropped = ist.dropped_chunks, ist.dropped_samples
            if st.chunks_dropped in (1, 10, 100) or st.chunks_dropped % 1000 == 0:
                log.warning("processing falls behind: %d chunks dropped so far", st.chunks_dropped)
        st.chunks_refused = ist.refused_long + ist.refused_rate

    def _run_source(self, src: Source, stop: threading.Event) -> None:
        try:
            src.run(self._sink, stop)
        except Exception as exc:  # reported by run(), never swallowed
            log.error("source %s failed: %s", src.uri, exc)
            self.source_errors.append(f"{src.uri}: {exc}")

    # -- processing thread ---------------------------------------------------
    def run(self, stop: threading.Event) -> int:
        """Process until ``stop`` is set (or all sources end); return an exit code."""
        self.publisher.start()
        for src in self.sources:
            t = threading.Thread(target=self._run_source, args=(src, stop), name=f"source:{src.uri}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.notifier:
            self.notifier.ready()
            self.notifier.status("running")
        last_tick = self.clock()
        try:
            while not stop.is_set():
                batch = self._drain(timeout=0.1)
                if batch:
                    self._process(batch)
                now = self.clock()
                if now - last_tick >= 0.2:
                    self._tick(now)
                    last_tick = now
                if self.notifier:
                    self.notifier.watchdog()
                ended = not any(t.is_alive() for t in self._threads)
                if ended and self.source_errors and self.queue.empty():
                    log.error("every source has stopped with an error: exiting")
                    break
                if not batch and self.exit_when_sources_end and ended and self.queue.empty():
                    self._finish_streams()
                    break
        finally:
            self._shutdown()
        failure = getattr(self.publisher, "failure", None)
        why = failure() if callable(failure) else None
        if why:  # nothing reached a consumer: not a success, whatever the sources did
            log.error("%s", why)
            return 1
        return 1 if self.source_errors else 0

    def _drain(self, timeout: float) -> list[SampleChunk]:
        # Bounded rounds: a beat's decision waits for the round it is in,
        # so a round must stay short (decision latency), yet long enough to
        # embed beats of many devices in one call. One chunk per device in turn.
        return self.queue.drain(timeout, self.max_round_chunks)

    def _floods(self, now: float) -> None:
        """Devices whose chunks the intake refused or dropped since the last tick: they lose, and say so."""
        for device, (n, k, why) in self.queue.take_floods().items():
            last = self._flood_logged.get(device)
            if last is None or now - last >= 60.0:
                self._flood_logged[device] = now
                log.warning("device %s: %d chunk(s) (%d samples) refused or dropped by the intake: %s",
                            device[:80], n, k, why)
                if len(self._flood_logged) > 10_000:
                    self._flood_logged.clear()
            dev = self.devices.get(device)
            if dev is None:
                continue
            if dev.decider is not None and not why.startswith(DROPPED):
                self.output.publish_auth(dev, dev.decider.reset(f"input refused: {why}"), force=True)
            # (the publish guard refuses any key naming samples: the count of chunks says enough)
            self.output.event(dev, "input", {"refused_chunks": n}, why)

    def _new_device(self, device: str, fs_hz: float) -> DeviceState:
        pipeline = BeatPipeline(device, fs_hz, self.dsp_cfg)
        liveness = LivenessTracker(fs_hz, self.liveness_cfg, self.rate_speed)
        subjects, matcher = self.subjects_for(device)
        decider = Decider(subjects, self.thresholds, self.decision_cfg) if subjects else None
        return DeviceState(device, fs_hz, pipeline=pipeline, liveness=liveness, subjects=subjects,
                           matcher=matcher, decider=decider, now=self.clock())

    def _device(self, chunk: SampleChunk) -> DeviceState:
        want = self.expected_fs.get(chunk.device)
        if want is not None and chunk.fs_hz != want:
            raise ValueError(f"declares {chunk.fs_hz} Hz but devices.{chunk.device}.fs is {want} Hz")
        dev = self.devices.get(chunk.device)
        if dev is None or dev.fs != chunk.fs_hz:
            if dev is not None:
                log.warning("device %s changed rate %.1f -> %.1f Hz: restarting its pipeline",
                            chunk.device, dev.fs, chunk.fs_hz)
            dev = self._new_device(chunk.device, chunk.fs_hz)
            self.devices[chunk.device] = dev
            self.publisher.availability(chunk.device, True)
        return dev

    def _process(self, batch: list[SampleChunk]) -> None:
        """One round: chunks -> beats -> embeddings -> scores -> decisions, liveness -> publisher.

        Every chunk is pushed through its device's DSP first, remembering
        what happened in stream order (beats, then the contact state after
        the chunk); the good beats of the whole round are embedded in one
        call; then each device's steps are replayed in order through its
        liveness, matcher and decider.
        """
        st = self.stats
        devs: list[DeviceState] = []
        items: list[tuple[BeatPipeline, SampleChunk]] = []
        for chunk in batch:
            dev = self._admit(chunk)
            if dev is not None:
                devs.append(dev)
                items.append((dev.pipeline, chunk))
        # The DSP of every device of the round in shared passes (ecgstream/dsp/fleet.py):
        # the same beats as one push per chunk.
        rnd = self.dsp.push_round(items)
        steps: list[tuple[DeviceState, list[Beat], float, bool]] = []
        for dev, (_, chunk), beats, err, off in zip(devs, items, rnd.beats, rnd.errors, rnd.leads_off, strict=True):
            if err is not None:
                self._refused(chunk, err)
                continue
            self._arrived(dev, chunk)
            steps.append((dev, beats, chunk.arrival_s, off))
        good = [b for dev, beats, _, _ in steps if dev.matcher is not None for b in beats if self._matchable(b)]
        emb = self.embed.push(good)
        st.beats_embedded += len(good)
        gi = 0
        for dev, beats, arrival, off in steps:
            st.beats += len(beats)
            if self.metrics is not None:
                self.metrics.chunk(dev.device, len(beats))
            for b in beats:
                live = dev.liveness.push(b, off)
                # Liveness first: a consumer never sees an authenticated state before the live one.
                self.output.publish_liveness(dev, live)
                if dev.matcher is not None and dev.decider is not None and emb is not None and self._matchable(b):
                    e = emb[gi]
                    gi += 1
                    self._decide(dev, b, e, live, arrival)
            self._contact(dev, off)

    def _admit(self, chunk: SampleChunk) -> DeviceState | None:
        """The chunk's device, or None if the chunk is refused before its DSP."""
        if not self.trust.admit(self, chunk):  # ecgstream/trust/hooks.py: the device limit
            return None
        if self.fleet is not None and not self.fleet.admit(chunk.device):  # another daemon's now
            return None
        try:
            return self._device(chunk)
        except ValueError as exc:
            self._refused(chunk, exc)
            return None

    def _refused(self, chunk: SampleChunk, exc: Exception) -> None:
        self.stats.bad_chunks += 1
        if self.metrics is not None:
            self.metrics.refused(chunk.device)
        log.warning("device %s: chunk at sample %d rejected: %s", chunk.device, chunk.start_sample, exc)

    def _arrived(self, dev: DeviceState, chunk: SampleChunk) -> None:
        """A chunk went through its device's DSP: counters, and its arrival for liveness."""
        st = self.stats
        if st.first_chunk_s is None:
            st.first_chunk_s = self.clock()
        st.chunks += 1
        st.samples += int(np.size(chunk.samples))
        # Silence is judged by arrival, not by processing: under load a
        # queued chunk must not make its device look silent.
        dev.last_chunk_host = chunk.arrival_s or self.clock()
        dev.silent = False
        dev.stream_t = dev.pipeline.status.next_sample / dev.fs
        dev.liveness.push_samples(int(np.size(chunk.samples)), chunk.arrival_s or dev.last_chunk_host,
                                  chunk.gap_before)

    def _decide(self, dev: DeviceState, b: Beat, e: np.ndarray, live: LivenessState, arrival: float) -> None:
        """One matchable beat: match, decide, adapt, publish."""
        st = self.stats
        assert dev.matcher is not None and dev.decider is not None
        st.beats_good += 1
        dev.live_condition = live.condition
        d = dev.decider.push(b.r_time_s, dev.matcher.push(e)[0], live.failed, live.pending)
        # A locked-out device (attempt limits) publishes no `authenticated`, so it adapts nothing either.
        if not self.trust.attempts.locked(dev.device, self.clock()) and dev.matcher.adapt(b, e, d, live):
            st.adaptations += 1
        if dev.device not in st.first_decision_s and d.state != UNKNOWN:
            st.first_decision_s[dev.device] = b.r_time_s
        if self.output.publish_auth(dev, d, force=d.changed):
            lat = self.clock() - arrival if arrival else 0.0
            st.decision_latency_s.append(lat)
            if self.metrics is not None:
                self.metrics.latency(lat)

    def _matchable(self, b: Beat) -> bool:
        return b.good or (self.decision_cfg.match_warmup_beats and b.flags == _WARMUP_ONLY)

    def _contact(self, dev: DeviceState, off: bool) -> None:
        if off and not dev.leads_off:
            dev.liveness.reset("leads off")
            if dev.matcher is not None:
                dev.matcher.reset("leads off")
            dev.live_condition = "leads_off"
            if dev.decider is not None:
                self.output.publish_auth(dev, dev.decider.reset("leads off"), force=True)
            self.output.publish_liveness(dev, dev.liveness.state(True), force=True)
        dev.leads_off = off

    def _tick(self, now: float) -> None:
        self._floods(now)
        self._expire(now)
        self.trust.tick(self)
        if self.fleet is not None:
            self.fleet.tick(self)
        for dev in self.devices.values():
            live = dev.liveness.state(dev.pipeline.status.leads_off or dev.silent)
            # Silence is a host-time notion of a paced stream. A replay as fast as
            # possible (speed None) has none: there, a chunk waiting in the queue
            # behind other devices' work is not a silent device (the decider's
            # staleness still runs on stream time).
            silent_for = now - dev.last_chunk_host if self.speed is not None else 0.0
            if not dev.silent and silent_for > self.decision_cfg.stale_s:
                dev.silent = True
                log.warning("device %s: no samples for %.1f s", dev.device, silent_for)
                if dev.decider is not None:
                    self.output.publish_auth(dev, dev.decider.reset(f"no samples for {silent_for:.0f} s"), force=True)
                live = dev.liveness.state(True)
                dev.live_condition = live.condition
                self.output.publish_liveness(dev, live, force=True)
                continue
            dev.live_condition = live.condition
            self.output.publish_liveness(dev, live)
            if dev.decider is not None and not dev.silent:
                d = dev.decider.tick(dev.stream_t, live.failed, live.pending)
                self.output.publish_auth(dev, d, force=d.changed)

    def _expire(self, now: float) -> None:
        """Forget devices of no configuration and no key, silent for ``[input] device_expiry_s`` (issue 16)."""
        ttl = getattr(self.trust.input, "device_expiry_s", 0.0)
        if not ttl or self.speed is None or now - getattr(self, "_last_expiry", -1e18) < 1.0:
            return
        self._last_expiry = now
        gone = [d for d, dev in self.devices.items()
                if now - dev.last_chunk_host > ttl and d not in self.trust.reserved]
        for d in gone:
            self.drop_device(d, f"no samples for {ttl:.0f} s: device forgotten")
            self.trust.forget(d)
            self.publisher.availability(d, False)
        if gone:
            log.info("%d silent device(s) forgotten (device_expiry_s %.0f s)", len(gone), ttl)

    def drop_device(self, device: str, reason: str) -> None:
        """Stop serving a device (another daemon of the group takes it): ``unknown``, then forget it."""
        dev = self.devices.pop(device, None)
        if dev is not None and dev.decider is not None:
            self.output.publish_auth(dev, dev.decider.reset(reason), force=True)

    def _finish_streams(self) -> None:
        """All sources ended: decide on the beats still in the pipelines."""
        pending = []
        for dev in self.devices.values():
            for b in dev.pipeline.flush():
                pending.append(b)
        # Flushed beats are padded (flagged "edge") and never matched.
        self.stats.beats += len(pending)

    def _shutdown(self) -> None:
        """Clean stop: every state to unknown, availability offline."""
        for dev in self.devices.values():
            if dev.decider is not None:
                self.output.publish_auth(dev, dev.decider.reset("daemon stopped"), force=True)
        try:
            self.publisher.close()
        except Exception as exc:  # a failing broker must not hide the exit code
            log.error("publisher close failed: %s", exc)
        if self.notifier:
            self.notifier.stopping()
