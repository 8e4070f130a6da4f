"""Issue 11 figure: how long a reader consumer keeps seeing ``authenticated`` after the daemon dies or hangs.

    python bench/bench_reader_lag.py [--trials 3] [--valid-for 5]

Starts its own Mosquitto, enrols Person_01 rec_1 through the CLI, runs
``ecgstream run`` on Person_01 rec_2 (looped, 4x) with ``[decision]
valid_for_s``, follows it with :class:`ecgstream.reader.AuthReader` (polled
every 10 ms), and once authenticated sends SIGKILL or SIGSTOP; prints the
time until the reader answers False, beside the time left on the last
``valid_until`` at the signal (the bound).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers_broker import Broker, wait_for  # noqa: E402
from helpers_realparts import enrol_with_cli  # noqa: E402

from ecgstream.reader import AuthReader  # noqa: E402
from ecgstream.sources.records import excerpt_dir  # noqa: E402

EX = excerpt_dir()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--valid-for", type=float, default=5.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as wd:
        wd = Path(wd)
        store = enrol_with_cli(wd, EX / "Person_01" / "rec_1")
        cfg = wd / "d.toml"
        cfg.write_text(f'[decision]\nvalid_for_s = {a.valid_for}\noperating_point = "eer"\n')
        bad = 0
        for sig in (signal.SIGKILL, signal.SIGSTOP):
            for k in range(a.trials):
                with Broker(wd / f"b{sig}{k}") as b:
                    p = subprocess.Popen(
                        [sys.executable, "-m", "ecgstream", "run", "--config", str(cfg), "--source",
                         f"wfdb:{EX / 'Person_01' / 'rec_2'}?loop=1", "--speed", "4", "--subject", "p01",
                         "--store", str(store[0]), "--key-file", str(store[1]), "--mqtt-host", b.host,
                         "--mqtt-port", str(b.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    try:
                        with AuthReader(b.host, b.port, device="Person_01-rec_2") as r:
                            if not wait_for(r.authenticated, 90, 0.05):
                                print(f"{sig.name} trial {k}: never authenticated")
                                bad += 1
                                continue
                            time.sleep(1.0)
                            left = r.verdict().valid_until - time.time()
                            t0 = time.monotonic()
                            p.send_signal(sig)
                            wait_for(lambda: not r.authenticated(), 30, 0.01)
                            lag = time.monotonic() - t0
                            print(f"{sig.name:8s} trial {k}: reader stopped seeing authenticated after "
                                  f"{lag:6.3f} s (valid_until was {left:5.3f} s ahead; {r.verdict().reason})")
                            bad += lag > left + 0.05
                    finally:
                        p.send_signal(signal.SIGCONT)
                        p.kill()
                        p.wait(30)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
