"""Issue 18, "a new user's first hour": each row of its table, as the user hit it.

Every test here failed before its fix; the row number is in its name.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_realparts import PtyPair, enrol_with_cli

from ecgstream.sources.records import excerpt_dir, read_record

EX = excerpt_dir()
EXE = [sys.executable, "-m", "ecgstream"]
REC2 = EX / "Person_01" / "rec_2"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real encrypted store with p01 enrolled from Person_01 rec_1: (store_dir, key_file)."""
    return enrol_with_cli(tmp_path_factory.mktemp("store"), EX / "Person_01" / "rec_1")


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=timeout)


# -- row 2: wfdb:...?speed= is honoured by run -------------------------------------------
@pytest.mark.parametrize(("uri_speed", "flag", "source_speed", "daemon_speed"), [
    ("?speed=4", None, 4.0, 4.0),
    ("?speed=max", None, 0.0, None),
    ("?speed=4", 2.0, 4.0, 4.0),  # the URI is the more specific setting
    ("", 2.0, 2.0, 2.0),  # no speed= in the URI: [daemon] speed / --speed
    ("", None, 1.0, 1.0),
])
def test_row2_wfdb_uri_speed_reaches_the_daemon(store, uri_speed, flag, source_speed, daemon_speed):
    from ecgstream.cli.wiring import build_daemon
    from ecgstream.config import load_config

    o = {"daemon.source": f"wfdb:{REC2}{uri_speed}", "daemon.store": str(store[0]),
         "templates.key_file": str(store[1])}
    if flag is not None:
        o["daemon.speed"] = flag
    d = build_daemon(load_config(None, o))
    assert d.sources[0].speed == source_speed
    assert d.speed == daemon_speed


@pytest.mark.slow
def test_row2_run_at_speed_max_is_fast(store):
    t0 = time.monotonic()
    r = _cli("run", "--source", f"wfdb:{REC2}?speed=max", "--store", str(store[0]),
             "--key-file", str(store[1]), "--subject", "p01")
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert took < 15, took  # the 20 s record, as fast as possible (was: 21 s, paced at 1x)


# -- row 3: a bad subject id is refused before any signal is captured ---------------------
@pytest.mark.parametrize("subject", ["alice smith", "a/b", "..", ""])
def test_row3_bad_subject_refused_at_once(store, subject):
    t0 = time.monotonic()
    r = _cli("enroll", "--subject", subject, "--source", "synthetic:?fs=500&seconds=30&speed=1",
             "--store", str(store[0]), "--key-file", str(store[1]), timeout=25)
    assert time.monotonic() - t0 < 10  # no 20 s of signal first
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "invalid subject id" in r.stderr


def test_row3_run_refuses_a_bad_subject_as_a_config_error(store):
    r = _cli("run", "--source", f"wfdb:{REC2}?speed=max", "--subject", "alice smith",
             "--store", str(store[0]), "--key-file", str(store[1]))
    assert r.returncode == 78 and "invalid subject id" in r.stderr and "Traceback" not in r.stderr


# -- row 4: enrolment that hears nothing ends; Ctrl-C says so; progress in a pipe ---------
@pytest.mark.pty
def test_row4_enrol_gives_up_when_no_samples_arrive(store, tmp_path):
    with PtyPair() as pty:
        t0 = time.monotonic()
        r = _cli("enroll", "--subject", "quiet", "--source", f"serial:{pty.path}?fs=250",
                 "--store", str(store[0]), "--key-file", str(store[1]), "--no-samples-s", "2",
                 timeout=30)
        took = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    assert "no samples from the source for 2 s" in r.stderr, r.stderr
    assert took < 20
    assert "Traceback" not in r.stderr


def test_row4_enrol_no_samples_in_the_api():
    """enrol() itself: a source that sends one chunk and then nothing."""
    import threading

    from ecgstream.core.types import SampleChunk
    from ecgstream.templates.enroll import EnrolError, enrol

    class Stalls:
        uri = "memory:stalls"

        def run(self, sink, stop):
            sink(SampleChunk("d", 500.0, 0, np.zeros(50)))
            stop.wait()  # a wearable that went quiet: never returns by itself

    t0 = time.monotonic()
    with pytest.raises(EnrolError, match="no samples"):
        enrol(Stalls(), _Model(), no_samples_s=0.5)
    assert time.monotonic() - t0 < 5
    assert threading.active_count() < 50


class _Model:
    """Just enough of ``edge.EmbeddingModel`` for enrolment to start."""

    def dsp_config(self):
        from ecgstream.dsp import DspConfig

        return DspConfig()


@pytest.mark.slow
def test_row4_enrol_ctrl_c_and_progress_in_a_pipe(store):
    p = subprocess.Popen([*EXE, "enroll", "--subject", "slow", "--source",
                          "synthetic:?fs=500&seconds=60&speed=1", "--store", str(store[0]),
                          "--key-file", str(store[1]), "--seconds", "50"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(9)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 130, err
    assert "interrupted; nothing saved for 'slow'" in err
    assert "enrolling slow:" in err  # progress lines although stderr is a pipe
    assert "Traceback" not in err


# -- row 5: a daemon that could never authenticate anyone does not start -------------------
@pytest.fixture(scope="module")
def wrong_key(tmp_path_factory):
    key = tmp_path_factory.mktemp("k") / "other.key"
    assert _cli("keygen", str(key)).returncode == 0
    return key


def test_row5_wrong_key_identify_mode_exits_78(store, wrong_key):
    r = _cli("run", "--source", f"wfdb:{REC2}?speed=max", "--store", str(store[0]),
             "--key-file", str(wrong_key))
    assert r.returncode == 78, (r.returncode, r.stderr)
    assert "cannot be read" in r.stderr and "wrong template key" in r.stderr
    assert '"kind": "auth"' not in r.stdout


def test_row5_wrong_key_with_subject_names_the_real_reason(store, wrong_key):
    r = _cli("run", "--source", f"wfdb:{REC2}?speed=max", "--store", str(store[0]),
             "--key-file", str(wrong_key), "--subject", "p01")
    assert r.returncode == 78
    assert "enrol first" not in r.stderr and "wrong template key" in r.stderr, r.stderr


def test_row5_empty_store_identify_mode_exits_78(tmp_path, store):
    r = _cli("run", "--source", f"wfdb:{REC2}?speed=max", "--store", str(tmp_path / "empty"),
             "--key-file", str(store[1]))
    assert r.returncode == 78 and "no templates in" in r.stderr, r.stderr


# -- row 6: a garbled serial line a second does not stop every decision --------------------
def _decode(x: np.ndarray, fs: float, garble_every: int, caplog=None):
    from ecgstream.dsp import BeatPipeline
    from ecgstream.sources.base import SourceStats
    from ecgstream.sources.serial_lines import SerialDecoder

    lines = [f"{int(v * 1000)}\n".encode() for v in x]
    if garble_every:
        for i in range(garble_every // 2, len(lines), garble_every):
            lines[i] = b"12\x0734zz\n"
    st = SourceStats()
    dec = SerialDecoder("d", "ascii", fs, 0.1, st)
    pipe = BeatPipeline("d", fs)
    beats = []
    for i, ln in enumerate([b"first fragment\n", *lines]):
        for c in dec.feed(ln, i / fs):
            beats += pipe.push(c)
    for c in dec.flush():
        beats += pipe.push(c)
    return beats, st


def test_row6_one_garbled_line_a_second_keeps_most_beats_good():
    x, fs, _ = read_record(REC2, "0")  # 500 Hz
    clean, _ = _decode(x, fs, 0)
    beats, st = _decode(x, fs, int(fs))  # one garbled line a second
    assert st.garbled == len(range(int(fs) // 2, x.size, int(fs)))
    good = sum(b.good for b in beats)
    assert good >= 0.7 * sum(b.good for b in clean), (good, [sorted(b.flags) for b in beats])


def test_row6_a_bridged_sample_in_the_qrs_still_flags_the_beat():
    from ecgstream.dsp import extract_beats

    x, fs, _ = read_record(REC2, "0")
    clean = extract_beats(x, fs)
    y = x.copy()
    r = clean[8].r_sample
    y[r + 5] = np.nan  # 10 ms after R: inside the QRS
    y[clean[12].r_sample + int(0.3 * fs)] = np.nan  # on the T wave: one held sample is harmless
    beats = {b.r_sample: b for b in extract_beats(y, fs)}
    assert "invalid" in beats[r].flags
    assert "invalid" not in beats[clean[12].r_sample].flags


def test_row6_garbled_lines_are_logged_while_they_go_on(caplog):
    from ecgstream.sources.base import SourceStats
    from ecgstream.sources.serial_lines import GARBLED_LOG_S, SerialDecoder

    dec = SerialDecoder("d", "ascii", 250.0, 0.1, SourceStats())
    caplog.set_level(logging.WARNING, logger="ecgstream.sources.serial_source")
    dec.feed(b"x\n", 0.0)
    for s in range(120):  # two minutes, one garbled line a second among good ones
        dec.feed(b"100\n" * 249 + b"zz\n", float(s))
    msgs = [r.getMessage() for r in caplog.records if "garbled line" in r.getMessage()]
    assert 120 / GARBLED_LOG_S - 2 <= len(msgs) <= 120 / GARBLED_LOG_S + 4, msgs
    assert "120 so far" in msgs[-1] or "so far" in msgs[-1]


# -- row 7: check-config makes the checks run makes ----------------------------------------
def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "ecgstream.toml"
    p.write_text(text)
    return p


def test_row7_check_config_refuses_a_serial_uri_without_fs(tmp_path, store):
    conf = _write(tmp_path, f'[daemon]\nstore = "{store[0]}"\nsource = "serial:/dev/ttyUSB9"\n\n'
                            f'[templates]\nkey_file = "{store[1]}"\n')
    r = _cli("check-config", str(conf))
    assert r.returncode == 78, r.stdout
    assert f"{conf}:3: daemon.source:" in r.stderr and "fs=" in r.stderr, r.stderr
    r = _cli("run", "--config", str(conf))
    assert r.returncode == 78 and "fs=" in r.stderr


def test_row7_group_source_with_stdout_names_the_key_at_fault(tmp_path, store):
    conf = _write(tmp_path, f'[daemon]\nstore = "{store[0]}"\nstdout = true\n'
                            'source = "mqtt://127.0.0.1:1/ecgstream/+/ecg?partitions=4&group=lab"\n\n'
                            f'[templates]\nkey_file = "{store[1]}"\n\n[mqtt]\nhost = "127.0.0.1"\nport = 1\n')
    for cmd in (["check-config", str(conf)], ["run", "--config", str(conf)]):
        r = _cli(*cmd)
        assert r.returncode == 78, (cmd, r.stdout, r.stderr)
        assert "daemon.stdout" in r.stderr and "stdout = false" in r.stderr, r.stderr
        assert "set [mqtt] host" not in r.stderr


def test_row7_check_config_still_passes_a_good_file(tmp_path, store):
    conf = _write(tmp_path, f'[daemon]\nstore = "{store[0]}"\nsource = "serial:/dev/ttyUSB9?fs=250"\n')
    r = _cli("check-config", str(conf))
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr


# -- row 8: a broker that was never reached is a failed run ----------------------------------
def test_row8_broker_down_at_start_exits_non_zero(store):
    from tools.netwait import free_port

    port = free_port()  # nothing listens there
    r = _cli("run", "--source", f"wfdb:{REC2}?speed=max", "--store", str(store[0]),
             "--key-file", str(store[1]), "--subject", "p01", "--mqtt-host", "127.0.0.1",
             "--mqtt-port", str(port), timeout=90)
    assert r.returncode == 1, r.stderr[-2000:]
    assert f"MQTT broker 127.0.0.1:{port} was never reached" in r.stderr
    assert "covers it" not in r.stderr  # no will was ever registered


# -- row 10: a replay can leave no retained traces; no LiteRT chatter on stderr --------------
@pytest.mark.broker
@pytest.mark.slow
def test_row10_replay_with_no_retain_leaves_nothing_on_the_broker(store, tmp_path):
    from helpers_broker import Broker, collect

    conf = _write(tmp_path, "[homeassistant]\nenabled = true\n")
    with Broker(tmp_path / "mq") as broker:
        base = ["run", "--config", str(conf), "--store", str(store[0]), "--key-file", str(store[1]),
                "--subject", "p01", "--mqtt-host", broker.host, "--mqtt-port", str(broker.port)]
        r = _cli(*base, "--source", f"wfdb:{REC2}?speed=max&device=kept", timeout=90)
        assert r.returncode == 0, r.stderr[-2000:]
        # Read at once: the auth state is retained only until its MQTT 5 expiry (valid_until).
        kept = [m.topic for m in collect(broker, "#", seconds=3.0) if m.retain and m.payload]
        r = _cli(*base, "--source", f"wfdb:{REC2}?speed=max&device=gone", "--no-retain", timeout=90)
        assert r.returncode == 0, r.stderr[-2000:]
        left = [m.topic for m in collect(broker, "#", seconds=3.0) if m.retain and m.payload]
    assert "ecgstream/kept/availability" in left  # the default keeps `offline`, as before
    assert "ecgstream/kept/auth" in kept and any("kept" in t and "homeassistant" in t for t in left), kept
    assert not [t for t in left if "gone" in t], left


def test_row10_no_litert_info_line_on_stderr():
    r = _cli("verify", str(EX / "Person_01" / "rec_1"), str(REC2))
    assert r.returncode in (0, 1), r.stderr
    assert "XNNPACK" not in r.stderr and "INFO: Created" not in r.stderr, r.stderr


def test_row1_demo_decides_at_the_daemons_default_point_and_passes():
    """The demo shows what `run` does: the daemon's default operating point, genuine accepted, impostor not."""
    from ecgstream.core.settings import DecisionConfig

    r = _cli("demo", "--speed", "0", timeout=300)
    assert f"operating point: {DecisionConfig().operating_point} " in r.stdout, r.stdout
    assert r.returncode == 0 and "demo OK" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
