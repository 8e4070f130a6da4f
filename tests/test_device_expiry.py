"""Issue 16, item 7 (first half): device entries of unknown devices expire.

A flood of made-up device ids used to leave every entry behind forever (in
the MQTT source and in the daemon: memory, and a tick's work per device);
now a device neither configured nor keyed that has sent nothing for
``[input] device_expiry_s`` is forgotten, and a new device can take its
place under ``max_devices``.
"""

from __future__ import annotations

import numpy as np

from ecgstream.core.settings import InputConfig
from ecgstream.core.types import SampleChunk
from ecgstream.sources.mqtt_payload import encode_json
from ecgstream.sources.mqtt_source import MqttSource


def test_the_mqtt_source_forgets_silent_unknown_devices_and_admits_new_ones():
    src = MqttSource("mqtt://127.0.0.1:1883/ecgstream/+/ecg")
    src.max_devices, src.device_expiry_s = 100, 60.0
    src.reserved_devices = frozenset({"strap1"})
    chunk = encode_json(np.zeros(25), 250.0, 0)
    assert src.handle("ecgstream/strap1/ecg", chunk, 0.0) is not None
    for i in range(99):
        assert src.handle(f"ecgstream/fake{i}/ecg", chunk, 1.0) is not None
    assert src.handle("ecgstream/late/ecg", chunk, 2.0) is None  # full
    assert src.handle("ecgstream/late/ecg", chunk, 100.0) is not None  # 99 fakes expired, strap1 kept
    assert src.stats.devices_expired == 99 and "strap1" in src._devices and len(src._devices) == 2


def test_the_daemon_forgets_silent_unknown_devices():
    from ecgstream.daemon.loop import Daemon
    from ecgstream.publish import StdoutPublisher
    from ecgstream.trust.hooks import Trust
    from edge import EmbeddingModel

    now = [1000.0]
    clock = lambda: now[0]  # noqa: E731
    import io

    buf = io.StringIO()
    trust = Trust(input_cfg=InputConfig(device_expiry_s=30.0))
    trust.reserved.add("kept")
    d = Daemon([], EmbeddingModel(), {}, StdoutPublisher(buf), identify=False, speed=1.0, clock=clock,
               wall=clock, trust=trust)
    for i in range(50):
        d._process([SampleChunk(f"fake{i}", 250.0, 0, np.zeros(25), arrival_s=now[0])])
    d._process([SampleChunk("kept", 250.0, 0, np.zeros(25), arrival_s=now[0])])
    assert len(d.devices) == 51
    now[0] += 10
    d._tick(now[0])
    assert len(d.devices) == 51
    now[0] += 30
    d._tick(now[0])
    assert list(d.devices) == ["kept"]
    assert '"online": false' in buf.getvalue() or "offline" in buf.getvalue()
