"""Free ports and polling waits, for the tests' brokers and the fleet lab alike.

One copy: ``tests/helpers_broker.py`` (Mosquitto) and ``tools/fleet_lab.py``
(nats-server, daemons, wearables; also used by ``bench/bench_fleet.py``,
which cannot import from ``tests/``) both take them from here.
"""

from __future__ import annotations

import socket
import time
from typing import Any

__all__ = ["free_port", "wait_for", "wait_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout_s: float = 5.0, host: str = "127.0.0.1") -> bool:
    """Wait until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def wait_for(cond: Any, timeout_s: float = 5.0, step_s: float = 0.02) -> bool:
    """Poll ``cond()`` until it is true or ``timeout_s`` passes; return its last truth."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step_s)
    return bool(cond())
