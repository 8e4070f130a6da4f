"""``/metrics`` (issue 18): Prometheus text format from a running daemon, off by default.

Scraped over HTTP, as Prometheus would: the real ``ecgstream run`` in a
subprocess, and an in-process daemon with more devices than device labels.
"""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from helpers_realparts import enrol_with_cli

from ecgstream.sources.records import excerpt_dir

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

EX = excerpt_dir()
EXE = [sys.executable, "-m", "ecgstream"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return enrol_with_cli(tmp_path_factory.mktemp("store"), EX / "Person_01" / "rec_1")


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of one scrape, parsed by prometheus_client's parser."""
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _wait_for_url(proc: subprocess.Popen, deadline_s: float = 60) -> str:
    t0 = time.monotonic()
    seen = []
    while time.monotonic() - t0 < deadline_s:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        m = re.search(r"metrics at (http://\S+/metrics)", line)
        if m:
            return m.group(1)
    proc.kill()
    raise AssertionError("no metrics URL logged:\n" + "".join(seen))


def test_run_serves_metrics_on_loopback_and_they_move(store):
    """The real daemon, scraped twice over HTTP while it replays a record at 4x real time."""
    proc = subprocess.Popen([*EXE, "run", "--source", f"wfdb:{EX / 'Person_01' / 'rec_2'}?speed=4",
                             "--subject", "p01", "--store", str(store[0]), "--key-file", str(store[1]),
                             "--operating-point", "eer", "--metrics", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = _wait_for_url(proc)
        assert url.startswith("http://127.0.0.1:"), url  # loopback by default
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
        time.sleep(1.0)
        first = scrape(url)
        time.sleep(2.5)
        second = scrape(url)
    finally:
        proc.terminate()
        proc.wait(30)
    dev = (("device", "Person_01-rec_2"),)
    assert first[("ecgstream_streams", ())] == 1
    assert 0 < first[("ecgstream_chunks_total", ())] < second[("ecgstream_chunks_total", ())]
    assert second[("ecgstream_beats_total", ())] > 0
    assert second[("ecgstream_device_chunks_total", dev)] == second[("ecgstream_chunks_total", ())]
    assert second[("ecgstream_chunks_dropped_total", ())] == 0
    n = second[("ecgstream_decision_latency_seconds_count", ())]
    assert n > 0 and second[("ecgstream_decision_latency_seconds_bucket", (("le", "+Inf"),))] == n
    decided = sum(second[("ecgstream_auth_states_total", (("state", s),))]
                  for s in ("unknown", "authenticated", "rejected"))
    assert decided == second[("ecgstream_published_total", (("kind", "auth"),))] > 0
    assert second[("ecgstream_device_labels_overflow_devices", ())] == 0
    assert ("process_resident_memory_bytes", ()) in second


def test_metrics_are_off_by_default(store):
    from ecgstream.cli.wiring import build_daemon
    from ecgstream.config import load_config

    cfg = load_config(None, {"daemon.source": f"wfdb:{EX / 'Person_01' / 'rec_2'}",
                             "daemon.store": str(store[0]), "templates.key_file": str(store[1])})
    assert not cfg.metrics.enabled and cfg.metrics.host == "127.0.0.1"
    d = build_daemon(cfg)
    assert d.metrics is None and d.output.metrics is None


def test_bad_flag_and_busy_port_are_config_errors(store):
    args = ["run", "--source", f"wfdb:{EX / 'Person_01' / 'rec_2'}?speed=max", "--subject", "p01",
            "--store", str(store[0]), "--key-file", str(store[1])]
    r = subprocess.run([*EXE, *args, "--metrics", "70000"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 78 and "metrics.port" in r.stderr, r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = subprocess.run([*EXE, *args, "--metrics", f"127.0.0.1:{busy}"], capture_output=True, text=True,
                           timeout=60)
    assert r.returncode == 78 and "metrics.enabled" in r.stderr and str(busy) in r.stderr, r.stderr


def test_device_labels_are_bounded(store):
    """Five devices, two labels: the first two seen keep theirs, the other three share "~other"."""
    from ecgstream.config.metrics import MetricsConfig
    from ecgstream.daemon.loop import Daemon
    from ecgstream.daemon.metrics import OTHER, serve_metrics
    from ecgstream.publish import StdoutPublisher
    from ecgstream.sources import open_source
    from edge import EmbeddingModel

    sources = [open_source(f"synthetic:?fs=500&seconds=8&device=d{i}&seed={i}") for i in range(5)]
    d = Daemon(sources, EmbeddingModel(), {}, StdoutPublisher(io.StringIO()), identify=False, speed=None)
    server = serve_metrics(d, MetricsConfig(enabled=True, port=0, max_device_labels=2))
    try:
        assert d.run(threading.Event()) == 0
        m = scrape(server.url)
    finally:
        server.close()
    labels = {dict(k[1])["device"] for k in m if k[0] == "ecgstream_device_chunks_total"}
    assert len(labels) == 3 and OTHER in labels
    assert m[("ecgstream_device_labels_overflow_devices", ())] == 3
    per_device = sum(v for k, v in m.items() if k[0] == "ecgstream_device_chunks_total")
    assert per_device == m[("ecgstream_chunks_total", ())] == d.stats.chunks > 0
    assert m[("ecgstream_streams", ())] == 5


def test_metrics_doc_lists_every_metric():
    from ecgstream.daemon.metrics import METRICS

    doc = (ROOT / "docs" / "metrics.md").read_text()
    listed = set(re.findall(r"^\| `(ecgstream_[a-z_]+)", doc, re.M))
    want = {n + ("_total" if t == "counter" else "") for n, (t, _, _) in METRICS.items()}
    assert listed == want
