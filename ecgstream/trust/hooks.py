"""The daemon's trust boundary: message authentication, device limits, attempt limits.

One object, :class:`Trust`, that the daemon calls at three points (the
hooks in :mod:`ecgstream.daemon.loop` are one line each):

* ``attach(daemon)`` at construction: sources that can refuse chunks
  (:class:`~ecgstream.sources.mqtt_source.MqttSource`) report each refusal
  to :meth:`Trust.untrusted` (paho's network thread; a bounded deque);
* ``decision(output, dev, d)`` before every auth publish (the daemon's
  :class:`~ecgstream.daemon.output.DaemonOutput`): the attempt
  limiter (:mod:`ecgstream.trust.attempts`) may hold the state at ``unknown``
  and emits the ``lockout`` event;
* ``tick(daemon)`` on the processing thread's tick: every device whose
  chunks were refused since the last tick goes ``unknown`` and gets one
  ``input`` event that says why and how many;
* ``admit(daemon, chunk)`` before each chunk's DSP: the daemon's own device
  table is bounded by the same ``[input] max_devices`` as each MQTT source
  (defence in depth: however many sources feed it). Reserved devices (of
  ``[devices.<id>]``, with a key, or the one device of a serial or replay
  source) are always admitted; chunks of further new devices are refused
  and counted in ``stats["devices_refused"]``.

:meth:`Trust.configure_source` (called by ``build_daemon``) gives an MQTT
source its :class:`~ecgstream.trust.msgauth.MessageVerifier` and device limit
from ``[input]``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from ..core.settings import AttemptsConfig, InputConfig
from .attempts import AttemptLimiter

__all__ = ["Trust"]

log = logging.getLogger("ecgstream.trust")  # the name its log lines have always carried


class Trust:
    """Hooks of the daemon's trust boundary (module docs).

    Attributes
    ----------
    stats : dict
        ``untrusted_chunks`` (refusals reported by sources), ``alerts_dropped``
        (refusals beyond the deque's bound, still counted by the source),
        ``lockouts`` and ``held`` (authenticated decisions held at unknown).
    """

    def __init__(self, attempts: AttemptsConfig | None = None, input_cfg: InputConfig | None = None,
                 max_alerts: int = 10_000) -> None:
        self.attempts = AttemptLimiter(attempts)
        self.input = input_cfg or InputConfig()
        self._alerts: deque[tuple[str, str]] = deque(maxlen=max_alerts)
        self._lock = threading.Lock()
        self.stats = {"untrusted_chunks": 0, "alerts_dropped": 0, "devices_refused": 0}
        self.reserved: set[str] = set()  # always admitted (configured, keyed, single-device sources)
        self._admitted: set[str] = set()  # other devices the daemon keeps a pipeline for

    # -- wiring ---------------------------------------------------------------------
    def configure_source(self, source: Any, keys: dict[str, bytes], known: set[str],
                         vanished: set[str] | frozenset[str] = frozenset()) -> None:
        """Give an MQTT source its verifier and device limit (``[input]``).

        ``vanished``: devices whose key is gone (refused, issue 16). Signed
        chunks made before now (the daemon's start) are refused.
        """
        self.reserved |= set(known) | set(keys)
        if not hasattr(source, "verifier"):
            return  # serial, WFDB, synthetic: no messages to verify (msgauth is not imported)
        import time

        from .msgauth import MessageVerifier

        cfg = self.input
        if vanished:
            log.error("device(s) %s had a message key that is gone (key file missing): their chunks are "
                      "refused; `ecgstream device-key remove DEVICE` if that was intended",
                      ", ".join(sorted(vanished)))
        if cfg.message_auth != "off":
            source.verifier = MessageVerifier(keys, cfg.message_auth, cfg.mac_window_s,
                                              not_before_s=time.time(), vanished=frozenset(vanished)).check
        source.reserved_devices = frozenset(known) | frozenset(keys)
        source.device_expiry_s = getattr(cfg, "device_expiry_s", 0.0) or None
        if getattr(cfg, "rate_limit", 0):  # a wearable is live: its rate is its declared one
            source.rate_limit, source.burst_s = cfg.rate_limit, cfg.burst_s
        source.max_devices = 0 if cfg.only_known_devices else cfg.max_devices

    def attach(self, daemon: Any) -> None:
        for src in daemon.sources:
            if hasattr(src, "on_untrusted"):
                src.on_untrusted = self.untrusted
            if not hasattr(src, "verifier") and isinstance(getattr(src, "device", None), str):
                self.reserved.add(src.device)  # a serial or replay source: one device, chosen by the operator

    def admit(self, daemon: Any, chunk: Any) -> bool:
        """Whether the daemon may process ``chunk`` (its device is known, reserved or under the limit)."""
        dev = chunk.device
        if dev in daemon.devices or dev in self.reserved or dev in self._admitted:
            return True
        limit = 0 if self.input.only_known_devices else self.input.max_devices
        if len(self._admitted) < limit:
            self._admitted.add(dev)
            return True
        n = self.stats["devices_refused"] = self.stats["devices_refused"] + 1
        if n == 1 or n % 10000 == 0:
            log.warning("daemon: %d devices already (the limit, [input] max_devices): chunks of new device "
                        "%s refused; %d so far", len(self._admitted), dev[:80], n)
        return False

    def forget(self, device: str) -> None:
        """The daemon forgot ``device`` (expired): it no longer counts against ``max_devices``."""
        self._admitted.discard(device)

    def untrusted(self, device: str, reason: str) -> None:
        """A source refused a chunk of ``device`` (any thread)."""
        with self._lock:
            self.stats["untrusted_chunks"] += 1
            if len(self._alerts) == self._alerts.maxlen:
                self.stats["alerts_dropped"] += 1
            self._alerts.append((device, reason))

    # -- the processing thread --------------------------------------------------------
    def decision(self, output: Any, dev: Any, d: Any) -> Any:
        out, ev = self.attempts.apply(dev.device, d, output.clock())
        if ev is not None:
            after = {"locked": ev.started, "until": None if ev.until is None else
                     round(output.wall() + (ev.until - output.clock()), 3), "failures": ev.failures}
            if ev.started:
                log.warning("device %s: %s", dev.device, ev.reason)
            output.event(dev, "lockout", after, ev.reason)
        return out

    def tick(self, daemon: Any) -> None:
        with self._lock:
            alerts = list(self._alerts)
            self._alerts.clear()
        if not alerts:
            return
        per: dict[str, tuple[int, str]] = {}
        for device, reason in alerts:
            n, _ = per.get(device, (0, ""))
            per[device] = (n + 1, reason)
        for device, (n, reason) in per.items():
            dev = daemon.devices.get(device)
            if dev is None:
                continue  # never streamed: nothing to withdraw; the source counted it
            if dev.decider is not None:
                daemon.output.publish_auth(dev, dev.decider.reset(f"untrusted input: {reason}"), force=True)
            daemon.output.event(dev, "input", {"refused_chunks": n}, reason)

    @property
    def counters(self) -> dict[str, int]:
        return {**self.stats, "lockouts": self.attempts.lockouts, "held": self.attempts.held}
