"""Issue 11 figures: spoofed chunks accepted, and memory under a flood of device ids.

    python bench/bench_trust.py spoof [--n 10000]     # needs mosquitto and mosquitto_passwd
    python bench/bench_trust.py flood [--ids 100000] [--limit 1000]

``spoof`` starts its own Mosquitto with the ACL of docs/security.md and an
:class:`~ecgstream.sources.mqtt_source.MqttSource` (the daemon's account,
message_auth "keyed", strap1 holding a key) and sends, for device strap1:
``n`` chunks from the wrong account (strap2 publishing to strap1's topic,
correctly signed with strap1's key), ``n`` chunks with a wrong HMAC, and
``n`` replays of chunks already accepted; then ``n`` genuine chunks as the
control. It prints how many of each reached the sink.

``flood`` feeds the same source (no broker: :meth:`MqttSource.handle`, the
code of the message callback) chunks of ``ids`` distinct device ids with a
limit of ``limit`` devices, while a legitimate device keeps streaming, and
prints the RSS before and after and what the legitimate device got.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ecgstream.sources.mqtt_payload import encode_binary, encode_json  # noqa: E402
from ecgstream.sources.mqtt_source import MqttSource  # noqa: E402
from ecgstream.trust.msgauth import MessageVerifier  # noqa: E402


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def spoof(n: int) -> int:
    import tempfile
    import threading

    import paho.mqtt.client as mqtt
    from helpers_broker import Broker, make_password_file
    from test_broker_acl import ACL, USERS

    key, wrong = bytes(range(32)), bytes(32)
    x = np.sin(np.arange(50) / 5.0)
    with tempfile.TemporaryDirectory() as wd:
        wd = Path(wd)
        pw = make_password_file(wd / "passwd", USERS)
        (wd / "acl").write_text(ACL)
        with Broker(wd, extra_config=f"password_file {pw}\nacl_file {wd / 'acl'}", allow_anonymous=False) as b:
            src = MqttSource(f"mqtt://{b.host}:{b.port}/ecgstream/+/ecg?qos=1", username="svc@daemon",
                             password=USERS["svc@daemon"])
            src.verifier = MessageVerifier({"strap1": key}, "keyed", 30.0).check
            got: list = []
            stop = threading.Event()
            t = threading.Thread(target=src.run, args=(got.append, stop), daemon=True)
            t.start()
            assert src.connected.wait(10)

            def client(user):
                c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{user}")
                c.username_pw_set(user, USERS[user])
                c.connect(b.host, b.port, 30)
                c.loop_start()
                return c

            def send(c, payloads):
                # in batches, so that the broker's queue towards the daemon (1000 QoS 1 messages by
                # default) never overflows: every chunk tried reaches the daemon's source
                for k in range(0, len(payloads), 200):
                    infos = [c.publish("ecgstream/strap1/ecg", p, qos=1) for p in payloads[k:k + 200]]
                    for i in infos:
                        i.wait_for_publish(30)
                    time.sleep(0.05)

            def settle(k0):
                last, t_end = -1, time.monotonic() + 30
                while time.monotonic() < t_end:
                    k = len(got) + src.stats.unauthenticated + src.stats.duplicates
                    if k == last:
                        break
                    last = k
                    time.sleep(0.5)
                return len(got) - k0

            t0 = int(time.time() * 1000)
            s1, s2 = client("strap1"), client("strap2")
            results = {}
            # wrong account: strap2 may not publish to strap1's topic (even with a valid MAC)
            send(s2, [encode_json(x, 500, i, key=key, device="strap1", t_ms=t0 + i) for i in range(n)])
            results["wrong account"] = settle(0)
            base = len(got)
            send(s1, [encode_binary(x, 500, i, key=wrong, device="strap1", t_ms=t0 + i) for i in range(n)])
            results["wrong HMAC"] = settle(base)
            genuine = [encode_json(x, 500, i, key=key, device="strap1", t_ms=t0 + i) for i in range(n)]
            base = len(got)
            send(s1, genuine)
            results["genuine (control)"] = settle(base)
            base = len(got)
            send(s1, genuine)  # the same chunks again, from the right account
            results["replayed seq"] = settle(base)
            stop.set()
            for c in (s1, s2):
                c.disconnect()
                c.loop_stop()
            t.join(10)
    for k, v in results.items():
        print(f"{k:20s} sent {n:6d}  accepted {v:6d}")
    print(f"reached the source: {src.stats.chunks + src.stats.unauthenticated + src.stats.duplicates}")
    print(f"verifier refusals: {dict(src.verifier.__self__.rejected)}; source duplicates "
          f"{src.stats.duplicates}")
    spoofed = results["wrong account"] + results["wrong HMAC"] + results["replayed seq"]
    print(f"spoofed chunks accepted: {spoofed} of {3 * n}")
    return 0 if spoofed == 0 and results["genuine (control)"] == n else 1


def flood(ids: int, limit: int) -> int:
    src = MqttSource("mqtt://127.0.0.1:1/ecgstream/+/ecg")
    src.max_devices = limit
    src.reserved_devices = frozenset({"legit"})
    x = np.sin(np.arange(50) / 5.0)
    payload = encode_binary(x, 500, 0)
    legit_seq, legit_ok = 0, 0
    # the legitimate device's first chunk arrives after the flood has filled the limit
    r0 = _rss_mb()
    t = time.perf_counter()
    for i in range(ids):
        src.handle(f"ecgstream/fake{i:07d}/ecg", payload, time.monotonic())
        if i % 100 == 0 and i > ids // 2:
            legit_ok += src.handle("ecgstream/legit/ecg", encode_binary(x, 500, legit_seq), time.monotonic()) is not None
            legit_seq += 1
    dt = time.perf_counter() - t
    r1 = _rss_mb()
    st = src.stats
    print(f"{ids} distinct device ids at limit {limit}: {len(st.devices)} kept, {st.devices_refused} chunks "
          f"refused; RSS {r0:.1f} -> {r1:.1f} MiB (+{r1 - r0:.1f}); {ids / dt:.0f} messages/s")
    print(f"legitimate device (reserved, first seen after the limit was full): {legit_ok} of {legit_seq} "
          "chunks accepted")
    return 0 if legit_ok == legit_seq and len(st.devices) <= limit + 1 else 1


def flood_daemon(ids: int, limit: int) -> int:
    """The same flood through a real Daemon: its device table is bounded by ``[input] max_devices``."""
    import threading

    from ecgstream.core.settings import InputConfig
    from ecgstream.core.types import SampleChunk
    from ecgstream.daemon.loop import Daemon
    from ecgstream.sources.base import SourceStats
    from ecgstream.trust.hooks import Trust
    from edge import EmbeddingModel

    class _Null:
        def start(self): pass
        def availability(self, *a): pass
        def auth(self, *a): pass
        def liveness(self, *a): pass
        def event(self, *a): pass
        def close(self): pass

    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.05, 50)
    legit_n = 0

    class _Flood:
        uri = "flood:"
        stats = SourceStats()

        def run(self, sink, stop):
            nonlocal legit_n
            for i in range(ids):
                sink(SampleChunk(f"fake{i:07d}", 500.0, 0, x, arrival_s=time.monotonic()))
                if i % 100 == 0:
                    sink(SampleChunk("legit", 500.0, 50 * legit_n, x, arrival_s=time.monotonic()))
                    legit_n += 1

    model = EmbeddingModel()
    trust = Trust(input_cfg=InputConfig(max_devices=limit))
    trust.reserved.add("legit")
    d = Daemon([_Flood()], model, {}, _Null(), identify=False, speed=None, queue_max_chunks=10 ** 7, trust=trust)
    r0 = _rss_mb()
    t = time.perf_counter()
    assert d.run(threading.Event()) == 0
    dt = time.perf_counter() - t
    r1 = _rss_mb()
    legit = d.devices["legit"].pipeline.status.next_sample if "legit" in d.devices else 0
    print(f"daemon: {ids} distinct device ids at limit {limit}: {len(d.devices)} pipelines, "
          f"{trust.stats['devices_refused']} chunks refused; RSS {r0:.1f} -> {r1:.1f} MiB (+{r1 - r0:.1f}); "
          f"{ids / dt:.0f} chunks/s")
    print(f"legitimate device (reserved): {legit // 50} of {legit_n} chunks processed")
    return 0 if legit // 50 == legit_n and len(d.devices) <= limit + 1 else 1


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("spoof")
    s.add_argument("--n", type=int, default=10_000)
    f = sub.add_parser("flood")
    f.add_argument("--ids", type=int, default=100_000)
    f.add_argument("--limit", type=int, default=1000)
    f.add_argument("--daemon", action="store_true", help="through a real Daemon instead of the MQTT source")
    a = ap.parse_args()
    if a.cmd == "spoof":
        return spoof(a.n)
    return flood_daemon(a.ids, a.limit) if a.daemon else flood(a.ids, a.limit)


if __name__ == "__main__":
    sys.exit(main())
