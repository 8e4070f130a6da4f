"""Prometheus metrics of the running daemon: ``/metrics`` over HTTP (``[metrics]``, off by default).

Two halves:

* :class:`DaemonMetrics` counts what only the processing thread sees as it
  happens (per-device chunks, beats and refusals, auth states published by
  state, the decision-latency histogram). The daemon calls it at four points
  (``daemon.metrics``, ``daemon.output.metrics``; None when metrics are off,
  so an ordinary run pays one ``is None`` test per chunk). It needs no
  third-party package.
* :func:`serve_metrics` starts ``prometheus_client``'s HTTP server on
  ``[metrics] host:port`` with a collector that reads those counters, the
  run's :class:`~ecgstream.daemon.state.DaemonStats`, the trust hooks' and the
  sources' counters *at scrape time*: nothing else is kept up to date on the
  hot path. ``prometheus_client`` is imported only here (the ``metrics``
  extra).

Every metric, its type and labels are in :data:`METRICS` (and
``docs/metrics.md``, which a test keeps equal to it).

Device labels are bounded: the first ``max_device_labels`` devices seen get
their own ``device`` label, kept for the life of the process (a device that
leaves keeps its series, so counters never go back); every further device
is counted under ``device="~other"`` (no device id can contain ``~``), and
``ecgstream_device_labels_overflow_devices`` says how many devices that is.

Threads: the counters are written by the processing thread and read by the
HTTP server's; plain ``int`` updates and C-level copies under the GIL, and a
lock around the histogram so that its buckets, count and sum agree.
"""

from __future__ import annotations

import bisect
import ipaddress
import logging
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["BUCKETS_S", "METRICS", "OTHER", "DaemonMetrics", "MetricsServer", "serve_metrics"]

log = logging.getLogger("ecgstream.metrics")

#: The label of every device beyond ``max_device_labels``.
OTHER = "~other"
#: Upper bounds of the decision-latency histogram (seconds; +Inf is added).
BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_STATES = ("unknown", "authenticated", "rejected")
_CHUNKS, _BEATS, _REFUSED = 0, 1, 2  # per-device counters; the auth states follow
_MAX_FOLDED = 100_000  # distinct devices remembered under OTHER (the gauge stops there)

#: name -> (type, labels, help). The exposition adds ``_total`` to counters.
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "ecgstream_streams": ("gauge", (), "Devices the daemon keeps a pipeline for now"),
    "ecgstream_streams_silent": ("gauge", (), "Of them, devices that sent nothing for [decision] stale_s"),
    "ecgstream_devices_by_auth_state": ("gauge", ("state",), "Devices by their current auth state"),
    "ecgstream_devices_live": ("gauge", (), "Devices whose last liveness state was live"),
    "ecgstream_chunks": ("counter", (), "Sample chunks processed"),
    "ecgstream_samples": ("counter", (), "Samples processed"),
    "ecgstream_chunks_dropped": ("counter", (), "Chunks dropped by the full queue (processing fell behind)"),
    "ecgstream_chunks_refused": ("counter", ("reason",),
                                 "Chunks refused: rate (not the device's rate, bad samples), device_limit "
                                 "([input] max_devices), untrusted (message authentication, by the source)"),
    "ecgstream_queue_chunks": ("gauge", (), "Chunks waiting in the queue"),
    "ecgstream_queue_capacity_chunks": ("gauge", (), "Bound of the queue ([daemon] queue_max_chunks)"),
    "ecgstream_beats": ("counter", (), "Beats cut by the DSP (good and flagged)"),
    "ecgstream_beats_matched": ("counter", (), "Beats matched against templates (good beats)"),
    "ecgstream_beats_embedded": ("counter", (), "Beats embedded by the model"),
    "ecgstream_adaptations": ("counter", (), "Beats folded into a device's template copy"),
    "ecgstream_auth_states": ("counter", ("state",), "Auth states published, by state"),
    "ecgstream_decision_latency_seconds": ("histogram", (),
                                           "Arrival of the chunk that completed a beat to the publish "
                                           "of the auth state that beat updated"),
    "ecgstream_published": ("counter", ("kind",), "Messages handed to the publisher: auth, liveness, event"),
    "ecgstream_source_garbled": ("counter", (), "Lines or payloads the sources could not parse"),
    "ecgstream_source_gaps": ("counter", (), "Gaps the sources marked (lost messages, resyncs)"),
    "ecgstream_source_reconnects": ("counter", (), "Reopenings of a lost input"),
    "ecgstream_device_chunks": ("counter", ("device",), "Chunks processed, per device (bounded labels)"),
    "ecgstream_device_beats": ("counter", ("device",), "Beats cut, per device (bounded labels)"),
    "ecgstream_device_chunks_refused": ("counter", ("device",), "Chunks refused at the DSP, per device"),
    "ecgstream_device_auth_states": ("counter", ("device", "state"), "Auth states published, per device"),
    "ecgstream_device_labels_overflow_devices": ("gauge", (),
                                                 f"Devices counted under device=\"{OTHER}\" (beyond "
                                                 "[metrics] max_device_labels)"),
}


class DaemonMetrics:
    """What the processing thread counts for ``/metrics`` (see the module docs).

    Parameters
    ----------
    max_device_labels : int
        Devices with their own label; the others share :data:`OTHER`.
    """

    def __init__(self, max_device_labels: int = 100) -> None:
        self.max_device_labels = int(max_device_labels)
        self._rows: dict[str, list[int]] = {}  # label -> chunks, beats, refused, *auth by state
        self._label: dict[str, str] = {}  # device -> its label (only devices that have their own)
        self._folded: set[str] = set()  # devices counted under OTHER (at most _MAX_FOLDED remembered)
        self.auth_states = dict.fromkeys(_STATES, 0)
        self._lock = threading.Lock()
        self._buckets = [0] * (len(BUCKETS_S) + 1)  # per bucket (not cumulative); last is +Inf
        self._lat_sum = 0.0
        self._lat_n = 0

    def attach(self, daemon: Any) -> DaemonMetrics:
        """Hook into ``daemon`` (its processing thread calls :meth:`chunk`, :meth:`refused`, ...)."""
        self.daemon = daemon
        daemon.metrics = self
        daemon.output.metrics = self
        return self

    # -- the processing thread ---------------------------------------------------------
    def _row(self, device: str) -> list[int]:
        label = self._label.get(device)
        if label is None:
            if len(self._label) < self.max_device_labels:
                label = self._label[device] = device
            else:
                label = OTHER
                if len(self._folded) < _MAX_FOLDED:
                    self._folded.add(device)
        row = self._rows.get(label)
        if row is None:
            row = self._rows[label] = [0] * (3 + len(_STATES))
        return row

    def chunk(self, device: str, beats: int) -> None:
        """A chunk of ``device`` went through its DSP and completed ``beats`` beats."""
        row = self._row(device)
        row[_CHUNKS] += 1
        row[_BEATS] += beats

    def refused(self, device: str) -> None:
        """A chunk of ``device`` was refused at its DSP (rate, samples)."""
        self._row(device)[_REFUSED] += 1

    def auth(self, device: str, state: str) -> None:
        """An auth state of ``device`` was published."""
        if state in self.auth_states:
            self.auth_states[state] += 1
            self._row(device)[3 + _STATES.index(state)] += 1

    def latency(self, seconds: float) -> None:
        """One decision's latency (chunk arrival to publish)."""
        i = bisect.bisect_left(BUCKETS_S, seconds)
        with self._lock:
            self._buckets[i] += 1
            self._lat_sum += seconds
            self._lat_n += 1

    # -- the HTTP thread ---------------------------------------------------------------
    def histogram(self) -> tuple[list[tuple[str, int]], float, int]:
        """Cumulative ``(le, count)`` buckets, the sum and the count, consistent with each other."""
        with self._lock:
            per, total, n = list(self._buckets), self._lat_sum, self._lat_n
        out, acc = [], 0
        for b, c in zip([*map(repr, BUCKETS_S), "+Inf"], per, strict=True):
            acc += c
            out.append((b, acc))
        return out, total, n

    def rows(self) -> list[tuple[str, list[int]]]:
        """Per-device counters by label (a copy)."""
        return [(k, list(v)) for k, v in list(self._rows.items())]

    @property
    def folded_devices(self) -> int:
        return len(self._folded)


def collect(m: DaemonMetrics, daemon: Any) -> list[tuple[str, str, str, list[tuple[dict[str, str], Any]]]]:
    """Every metric as ``(name, type, help, [(labels, value), ...])``, read now.

    A histogram's value is ``(buckets, sum)`` (:meth:`DaemonMetrics.histogram`).
    Kept free of ``prometheus_client`` so the tests and the benchmark can read it too.
    """
    st = daemon.stats
    trust = getattr(daemon, "trust", None)
    tstats = dict(getattr(trust, "stats", {}) or {})
    devs = list(daemon.devices.values())
    by_state = dict.fromkeys(_STATES, 0)
    live = silent = 0
    for dev in devs:
        if dev.decider is not None and dev.decider.state in by_state:
            by_state[dev.decider.state] += 1
        ll = dev.last_live
        live += bool(ll is not None and ll.live and not dev.silent)
        silent += bool(dev.silent)
    src = [getattr(s, "stats", None) for s in daemon.sources]
    src = [s for s in src if s is not None]
    rows = m.rows()
    buckets, lsum, _ = m.histogram()
    values: dict[str, list[tuple[dict[str, str], Any]]] = {
        "ecgstream_streams": [({}, len(devs))],
        "ecgstream_streams_silent": [({}, silent)],
        "ecgstream_devices_by_auth_state": [({"state": s}, n) for s, n in by_state.items()],
        "ecgstream_devices_live": [({}, live)],
        "ecgstream_chunks": [({}, st.chunks)],
        "ecgstream_samples": [({}, st.samples)],
        "ecgstream_chunks_dropped": [({}, st.chunks_dropped)],
        "ecgstream_chunks_refused": [({"reason": "rate"}, st.bad_chunks),
                                     ({"reason": "device_limit"}, tstats.get("devices_refused", 0)),
                                     ({"reason": "untrusted"}, tstats.get("untrusted_chunks", 0))],
        "ecgstream_queue_chunks": [({}, daemon.queue.qsize())],
        "ecgstream_queue_capacity_chunks": [({}, daemon.queue.limits.max_chunks)],
        "ecgstream_beats": [({}, st.beats)],
        "ecgstream_beats_matched": [({}, st.beats_good)],
        "ecgstream_beats_embedded": [({}, st.beats_embedded)],
        "ecgstream_adaptations": [({}, st.adaptations)],
        "ecgstream_auth_states": [({"state": s}, n) for s, n in dict(m.auth_states).items()],
        "ecgstream_decision_latency_seconds": [({}, (buckets, lsum))],
        "ecgstream_published": [({"kind": "auth"}, st.auth_published),
                                ({"kind": "liveness"}, st.liveness_published),
                                ({"kind": "event"}, st.events_published)],
        "ecgstream_source_garbled": [({}, sum(s.garbled for s in src))],
        "ecgstream_source_gaps": [({}, sum(s.gaps for s in src))],
        "ecgstream_source_reconnects": [({}, sum(s.reconnects for s in src))],
        "ecgstream_device_chunks": [({"device": k}, r[_CHUNKS]) for k, r in rows],
        "ecgstream_device_beats": [({"device": k}, r[_BEATS]) for k, r in rows],
        "ecgstream_device_chunks_refused": [({"device": k}, r[_REFUSED]) for k, r in rows],
        "ecgstream_device_auth_states": [({"device": k, "state": s}, r[3 + i])
                                         for k, r in rows for i, s in enumerate(_STATES)],
        "ecgstream_device_labels_overflow_devices": [({}, m.folded_devices)],
    }
    return [(name, typ, hlp, values[name]) for name, (typ, _, hlp) in METRICS.items()]


class _Collector:
    """A ``prometheus_client`` collector over :func:`collect`."""

    def __init__(self, metrics: DaemonMetrics, daemon: Any) -> None:
        self.metrics, self.daemon = metrics, daemon

    def describe(self) -> list:
        return []  # collected at scrape time only (the registry must not call collect() to describe)

    def collect(self):  # noqa: ANN201 - an iterator of metric families
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        kinds = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}
        for name, typ, hlp, samples in collect(self.metrics, self.daemon):
            labels = list(METRICS[name][1])
            if typ == "histogram":
                h = HistogramMetricFamily(name, hlp, labels=labels)
                for lv, (buckets, total) in samples:
                    h.add_metric([lv[k] for k in labels], buckets, total)
                yield h
                continue
            fam = kinds[typ](name, hlp, labels=labels)
            for lv, v in samples:
                fam.add_metric([lv[k] for k in labels], v)
            yield fam


@dataclass
class MetricsServer:
    """A running ``/metrics`` server: where it listens, and how to stop it."""

    host: str
    port: int
    server: Any
    thread: Any

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5.0)


def is_loopback(host: str) -> bool:
    """Whether ``host`` listens on the loopback interface only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_metrics(daemon: Any, cfg: Any) -> MetricsServer:
    """Count for ``daemon`` and serve ``/metrics`` on ``cfg.host:cfg.port`` (a ``[metrics]`` section).

    Raises
    ------
    ImportError
        ``prometheus_client`` is not installed (the ``metrics`` extra).
    OSError
        The address cannot be bound (port in use, no such interface).
    """
    try:
        from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
    except ImportError as exc:
        raise ImportError("[metrics] enabled needs the prometheus_client package: "
                          "pip install 'ecgstream[metrics]'") from exc
    m = DaemonMetrics(cfg.max_device_labels).attach(daemon)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(m, daemon))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
    server, thread = start_http_server(cfg.port, addr=cfg.host, registry=registry)
    out = MetricsServer(cfg.host, int(server.server_port), server, thread)
    if is_loopback(cfg.host):
        log.info("metrics at %s", out.url)
    else:
        log.warning("metrics at %s: readable by anyone who can reach this address (device ids, states; "
                    "no authentication)", out.url)
    return out
