"""JSON lines on stdout: the daemon's output when no broker is configured."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import Any, TextIO

from .checks import check_device, check_payload, encode
from .protocol import PublisherStats

__all__ = ["StdoutPublisher"]

log = logging.getLogger(__name__)


class StdoutPublisher:
    """JSON lines on a text stream, one object per message, flushed per line.

    Each line has ``"kind"`` (``auth``, ``liveness``, ``event``,
    ``availability``), ``"device"``, and the fields of the MQTT payload;
    availability lines carry ``"state": "online" | "offline"``.

    A closed pipe (``ecgstream run | head``) stops the output quietly: later
    messages are counted in ``stats.dropped``, nothing is raised.

    Parameters
    ----------
    stream : text stream, optional
        Default ``sys.stdout``.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream: TextIO = stream if stream is not None else sys.stdout
        self.stats = PublisherStats()
        self._announced: dict[str, bool] = {}
        self._broken = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Nothing to connect."""

    def _write(self, kind: str, device: str, payload: dict[str, Any]) -> None:
        check_device(device)
        check_payload(payload)
        line = encode({"kind": kind, "device": device, **payload}) + "\n"
        with self._lock:
            if self._broken:
                self.stats.dropped += 1
                return
            try:
                self.stream.write(line)
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError) as exc:
                # ValueError: write to a closed file; other OSErrors (EPIPE, EIO) likewise end the output.
                self._broken = True
                self.stats.dropped += 1
                log.info("stdout output stopped (%s); further states are dropped", exc.__class__.__name__)
                self._silence()
                return
            self.stats.published += 1

    def _silence(self) -> None:
        """Point a broken stdout at /dev/null so the interpreter's exit flush stays quiet."""
        if self.stream not in (sys.stdout, sys.__stdout__):
            return
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, self.stream.fileno())
            os.close(fd)

    def availability(self, device: str, online: bool) -> None:
        """Write an availability line."""
        self._announced[device] = bool(online)
        self._write("availability", device, {"state": "online" if online else "offline"})

    def auth(self, device: str, payload: dict, valid_until: float) -> None:
        """Write an auth line."""
        self._write("auth", device, payload)

    def liveness(self, device: str, payload: dict, valid_until: float) -> None:
        """Write a liveness line."""
        self._write("liveness", device, payload)

    def event(self, device: str, payload: dict) -> None:
        """Write an event line."""
        self._write("event", device, payload)

    def close(self) -> None:
        """Write ``offline`` for every device announced ``online``."""
        for device, online in list(self._announced.items()):
            if online:
                self.availability(device, False)
