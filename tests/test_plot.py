"""``ecgstream plot run|enroll`` (issue 18): PNGs of what the daemon sees, and the data behind them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers_realparts import enrol_with_cli

from ecgstream.sources.records import excerpt_dir

pytest.importorskip("matplotlib")

EX = excerpt_dir()
EXE = [sys.executable, "-m", "ecgstream"]
PNG = b"\x89PNG\r\n\x1a\n"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=180)


def _png_size(path) -> tuple[int, int]:
    b = path.read_bytes()
    assert b[:8] == PNG
    return int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")


def test_plot_run_genuine_from_a_record(tmp_path):
    out = tmp_path / "run.png"
    r = _cli("plot", "run", "--source", f"wfdb:{EX / 'Person_01' / 'rec_2'}",
             "--enrol-from", f"wfdb:{EX / 'Person_01' / 'rec_1'}", "--operating-point", "eer", "-o", str(out),
             "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["wrote"] == str(out) and s["matched"] > 5 and s["last_state"] == "authenticated"
    w, h = _png_size(out)
    assert w > 600 and h > 500


def test_plot_run_against_the_store_and_an_impostor(tmp_path):
    store, key = enrol_with_cli(tmp_path, EX / "Person_01" / "rec_1")
    out = tmp_path / "impostor.png"
    r = _cli("plot", "run", "--source", f"wfdb:{EX / 'Person_06' / 'rec_1'}", "--subject", "p01",
             "--store", str(store), "--key-file", str(key), "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["last_state"] == "rejected" and s["beats_while_authenticated"] == 0
    _png_size(out)


def test_trace_run_decides_as_the_daemon(tmp_path):
    """The plot's trace and a real Daemon replay of the same record end in the same state."""
    import io
    import threading

    from ecgstream.cli.plot_trace import capture, trace_run
    from ecgstream.config import load_config
    from ecgstream.daemon.loop import Daemon
    from ecgstream.publish import StdoutPublisher
    from ecgstream.sources import open_source
    from ecgstream.templates.enroll import enrol
    from edge import EmbeddingModel

    model = EmbeddingModel()
    cfg = load_config(None, {"decision.operating_point": "eer"})
    t = enrol(open_source(f"wfdb:{EX / 'Person_01' / 'rec_1'}"), model, seconds=20.0).template("p01", model.model_id)
    for rec, want in (("Person_01/rec_2", "authenticated"), ("Person_06/rec_1", "rejected")):
        tr = trace_run(capture(open_source(f"wfdb:{EX / rec}"), None), model, t, cfg)
        out = io.StringIO()
        d = Daemon([open_source(f"wfdb:{EX / rec}?speed=max")], model, {"p01": t}, StdoutPublisher(out),
                   default_subject="p01", decision_cfg=cfg.decision, speed=None)
        d.run(threading.Event())
        states = [json.loads(line) for line in out.getvalue().splitlines()]
        decided = [s["state"] for s in states if s.get("kind") == "auth" and s["state"] != "unknown"]
        seen = [a[1] for a in tr.auth if a[1] != "unknown"]
        assert decided and seen and decided[-1] == seen[-1] == want, (rec, decided, seen)
        assert sum(r.matched for r in tr.rows) == d.stats.beats_good


def test_plot_enroll_report_and_a_failed_enrolment(tmp_path):
    out = tmp_path / "enrol.png"
    r = _cli("plot", "enroll", "--source", f"wfdb:{EX / 'Person_01' / 'rec_1'}", "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["ok"] and s["kept"] >= 10 and s["kept"] + s["refused"] == s["beats"]
    _png_size(out)
    # too few beats for enrolment: the report is still drawn, the exit says enrolment would fail
    bad = tmp_path / "fail.png"
    r = _cli("plot", "enroll", "--source", f"wfdb:{EX / 'Person_01' / 'rec_1'}", "--min-beats", "200",
             "-o", str(bad), "--json")
    assert r.returncode == 1 and "enrolment would fail" in r.stderr
    assert not json.loads(r.stdout)["ok"]
    _png_size(bad)


def test_plot_refuses_other_file_types(tmp_path):
    r = _cli("plot", "enroll", "--source", f"wfdb:{EX / 'Person_01' / 'rec_1'}", "-o", str(tmp_path / "x.svg"))
    assert r.returncode == 2 and ".png" in r.stderr
