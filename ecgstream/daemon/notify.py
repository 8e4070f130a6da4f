"""The systemd notify protocol (``sd_notify``) with the standard library only.

Under ``Type=notify`` systemd passes a datagram socket in ``$NOTIFY_SOCKET``
(a path, or an abstract socket written ``@name``). The daemon tells it that
it is ready, what it is doing, that it is alive (watchdog) and that it is
stopping. Outside systemd every call is a no-op.

The daemon calls :meth:`SystemdNotifier.watchdog` from its processing loop
(never from a timer thread), so a stuck loop stops the pings and systemd
restarts the service after ``WatchdogSec=``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["SystemdNotifier"]

log = logging.getLogger("ecgstream.notify")  # the name its log lines have always carried


class SystemdNotifier:
    """Send ``sd_notify`` messages to systemd.

    Parameters
    ----------
    environ : mapping, optional
        Environment to read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and
        ``WATCHDOG_PID`` from (default ``os.environ``, read once here).
    clock : callable, optional
        Monotonic seconds, for the watchdog's rate limit.

    Notes
    -----
    Send failures never raise: the first is logged as a WARNING, later ones
    at DEBUG level. :meth:`watchdog` sends at most once per
    ``watchdog_interval_s() / 4`` (once per second when systemd set no
    watchdog), however often it is called.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, clock=time.monotonic) -> None:
        env = os.environ if environ is None else environ
        self.clock = clock
        raw = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None
        if not raw:
            self.address = None
        elif raw.startswith("@"):
            self.address = b"\0" + raw[1:].encode()
        elif raw.startswith("/"):
            self.address = raw
        else:
            log.warning("NOTIFY_SOCKET %r is neither a path nor an abstract socket: not notifying", raw)
            self.address = None
        self._interval_s = self._watchdog_from(env)
        self._sock: socket.socket | None = None
        self._warned = False
        self._last_ping: float | None = None

    @staticmethod
    def _watchdog_from(env: Mapping[str, str]) -> float | None:
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if not usec:
            return None
        try:
            us = int(usec)
            if pid and int(pid) != os.getpid():
                return None  # meant for another process
        except ValueError:
            log.warning("WATCHDOG_USEC=%r / WATCHDOG_PID=%r are not integers: watchdog ignored", usec, pid)
            return None
        return us / 2e6 if us > 0 else None

    @property
    def enabled(self) -> bool:
        """Whether systemd gave a notification socket."""
        return self.address is not None

    def notify(self, message: str) -> bool:
        """Send one raw notify message (``KEY=VALUE`` lines); return whether it was sent."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), self.address)
            return True
        except OSError as exc:
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, "systemd notify (%s) failed: %s", message.split("=", 1)[0], exc)
            return False

    def ready(self) -> bool:
        """``READY=1``: start-up finished (systemd considers the service started)."""
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        """``STATUS=...``: one line shown by ``systemctl status``."""
        return self.notify("STATUS=" + " ".join(str(text).splitlines()))

    def watchdog(self, force: bool = False) -> bool:
        """``WATCHDOG=1``: the processing loop is alive (rate-limited; see Notes)."""
        if self.address is None:
            return False
        now = self.clock()
        every = self._interval_s / 4 if self._interval_s else 1.0
        if not force and self._last_ping is not None and now - self._last_ping < every:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """``STOPPING=1``: a clean stop has begun."""
        return self.notify("STOPPING=1")

    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half of ``WatchdogSec=`` in seconds, ``None`` without a watchdog."""
        return self._interval_s

    def close(self) -> None:
        """Close the socket (a later call opens it again)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
