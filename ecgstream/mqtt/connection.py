"""The one reconnect strategy: a manager thread and a fresh paho client per connection.

:class:`MqttConnection` connects, waits for the CONNACK (bounded), calls the
user's ``on_up`` hook (the publisher republishes its states, the source
subscribes), waits for the connection to drop, calls ``on_down``, and tries
again after a :class:`~ecgstream.core.backoff.Backoff` wait. Each attempt uses a
fresh client with its own ``loop_start()`` network thread, and a generation
number that the user's callbacks compare so that a late callback of an old
client changes nothing.

Why not paho's built-in reconnect: it resends the in-flight messages of the
lost session before anything else (stale states first), it has its own
backoff, and it gives no single place for the reasons of a failure (wrong
password, TLS verification, a TLS port without TLS). Here every failed
attempt leaves one sentence in :attr:`MqttConnection.last_error`.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any

from .client import new_client
from .options import LinkOptions, warn_insecure

__all__ = ["MqttConnection"]


class MqttConnection:
    """Keeps one MQTT connection up, with backoff between attempts.

    Parameters
    ----------
    host, port : str, int
        The broker.
    client_id : str
    options : LinkOptions
        Protocol, keep-alive, credentials, TLS, backoff and attempt timeout.
    will : (topic, payload), optional
        Last will of every connection (retained, QoS 1).
    exit_on_first_failure : bool
        Give up when the very first attempt fails (the user reports
        :attr:`last_error`); otherwise keep trying, logging an ERROR each time.
    log : logging.Logger
        Where connection events are logged (the user's logger).
    configure : callable, optional
        ``configure(client, generation)``: attach the user's callbacks
        (``on_message``, ``on_publish``, ``on_subscribe``) to a fresh client.
    on_up : callable, optional
        ``on_up(client, first)`` in the manager thread after a CONNACK;
        ``first`` is True for the first successful connection.
    on_lost : callable, optional
        ``on_lost()`` in paho's network thread as soon as the current
        connection drops (must be quick).
    on_down : callable, optional
        ``on_down(client, stopping)`` in the manager thread after a drop.
    name : str
        Name of the manager thread.
    """

    def __init__(self, host: str, port: int, *, client_id: str, options: LinkOptions,
                 will: tuple[str, str] | None = None, exit_on_first_failure: bool = False,
                 log: logging.Logger | None = None,
                 configure: Callable[[Any, int], None] | None = None,
                 on_up: Callable[[Any, bool], None] | None = None,
                 on_lost: Callable[[], None] | None = None,
                 on_down: Callable[[Any, bool], None] | None = None,
                 name: str = "ecgstream-mqtt") -> None:
        self.host = host
        self.port = int(port)
        self.client_id = client_id
        self.options = options
        self.will = will
        self.backoff = options.backoff()
        self.exit_on_first_failure = exit_on_first_failure
        self.log = log or logging.getLogger(__name__)
        self._configure = configure
        self._on_up = on_up
        self._on_lost = on_lost
        self._on_down = on_down
        self.name = name
        self.generation = 0
        self.client: Any = None
        self.last_error: str | None = None
        self.ever_connected = False
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._first_attempt = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        """Start the manager thread (once); log the insecure-setting warnings."""
        if self._thread is not None:
            return
        warn_insecure(self.log, self.host, self.port, self.options.tls, self.options.credentials)
        self._thread = threading.Thread(target=self._manage, name=self.name, daemon=True)
        self._thread.start()

    def wait_first(self, timeout_s: float) -> bool:
        """Wait for the first attempt's result; True when it came within ``timeout_s``."""
        return self._first_attempt.wait(timeout_s)

    @property
    def stopping(self) -> bool:
        """Whether :meth:`request_stop` was called."""
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Ask the manager to stop after the current connection (no waiting)."""
        self._stop.set()

    def join(self, timeout_s: float) -> None:
        """Stop: end the wait on the current connection and join the manager (bounded)."""
        self._stop.set()
        self._lost.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def disconnect(self) -> None:
        """Disconnect the current client cleanly (no last will), if any."""
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.disconnect()

    # -- one attempt ----------------------------------------------------------------
    def _new_client(self, gen: int) -> tuple[Any, threading.Event, dict[str, Any]]:
        o = self.options
        c = new_client(self.client_id, o.protocol, credentials=o.credentials, tls=o.tls,
                       will=self.will, connect_timeout_s=o.connect_timeout_s, log=self.log)
        result: dict[str, Any] = {}
        done = threading.Event()

        def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
            result["rc"] = rc
            done.set()

        def on_disconnect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
            if gen == self.generation and self._on_lost is not None:
                self._on_lost()
            if not done.is_set():
                result["closed"] = True
                done.set()
            self._lost.set()

        c.on_connect = on_connect
        c.on_disconnect = on_disconnect
        if self._configure is not None:
            self._configure(c, gen)
        return c, done, result

    def _attempt(self) -> Any:
        """One connection attempt; the connected client, or None (reason in ``last_error``)."""
        self.generation += 1
        try:
            client, done, result = self._new_client(self.generation)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.last_error = f"TLS setup failed: {exc}"
            return None
        try:
            client.connect(self.host, self.port, self.options.keepalive)
        except ssl.SSLCertVerificationError as exc:
            self.last_error = (f"TLS certificate verification failed: {exc.verify_message or exc} "
                               "(is the tls ca_file the CA that signed the broker's certificate, "
                               "and does the certificate name the host connected to?)")
            return None
        except ssl.SSLError as exc:
            self.last_error = f"TLS handshake failed: {exc}"
            return None
        except (OSError, ValueError) as exc:
            self.last_error = f"cannot connect: {exc}"
            return None
        self._lost.clear()
        client.loop_start()
        timeout_s = self.options.connect_timeout_s
        if not done.wait(timeout_s) or self._stop.is_set():
            self.last_error = self.last_error if done.is_set() else \
                f"no CONNACK within {timeout_s:.0f} s"
            _drop(client)
            return None
        rc = result.get("rc")
        if rc is None:
            self.last_error = ("the broker closed the connection before accepting it "
                               "(a TLS port without tls settings?)")
            _drop(client)
            return None
        if getattr(rc, "is_failure", True):
            text = str(rc)
            hint = ""
            if text.lower() in ("not authorized", "bad user name or password"):
                hint = " (check the MQTT username and password)"
            self.last_error = f"connection refused: {text}{hint}"
            _drop(client)
            return None
        self.client = client
        if self._on_up is not None:
            self._on_up(client, not self.ever_connected)
        self.last_error = None
        return client

    def _manage(self) -> None:
        first = True
        where = f"{self.host}:{self.port}"
        while not self._stop.is_set():
            client = self._attempt()
            if client is not None:
                if self.ever_connected:
                    self.log.info("MQTT reconnected to %s", where)
                else:
                    self.log.info("MQTT connected to %s as %s", where, self.client_id)
                self.ever_connected = True
                self._first_attempt.set()
                first = False
                self.backoff.reset()
                self._lost.wait()
                stopping = self._stop.is_set()
                if self._on_down is not None:
                    self._on_down(client, stopping)
                _drop(client)
                if stopping:
                    return
                self.log.warning("MQTT connection to %s lost; reconnecting", where)
                continue
            if first:
                self._first_attempt.set()
                first = False
                if self.exit_on_first_failure:
                    self.log.error("MQTT broker %s: %s", where, self.last_error)
                    return
            delay = self.backoff.next()
            self.log.error("MQTT broker %s: %s; retrying in %.1f s", where, self.last_error, delay)
            if self._stop.wait(delay):
                return


def _drop(client: Any) -> None:
    """Disconnect (if connected) and stop a client's network thread, quietly."""
    if client is None:
        return
    with contextlib.suppress(Exception):
        if client.is_connected():
            client.disconnect()
    with contextlib.suppress(Exception):
        client.loop_stop()
