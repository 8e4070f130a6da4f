"""The fail-closed reader of the daemon's states: the reference a consumer copies.

A door controller, a lock or a script should not re-implement the rules of
``docs/mqtt_output.md`` ("Consumers fail closed"); it asks this module one
question, :meth:`AuthReader.authenticated`, and gets ``True`` only when
**all** of these hold at the moment of asking:

1. the device's ``<prefix>/<device>/availability`` is ``online``;
2. when ``daemon_id`` is given (multi-device mode), the daemon's
   ``<prefix>/daemon/<daemon_id>/availability`` is ``online`` too;
3. the latest ``auth`` message parses as a JSON object with
   ``state == "authenticated"``, and (when ``subject`` is given) that
   subject;
4. its ``valid_until`` is later than the reader's clock plus ``skew_s``,
   and it does not claim more than ``max_valid_for_s`` of validity beyond
   its own ``time`` (a state that promises hours is not believed); its
   ``time`` is not ahead of the reader's clock by more than ``skew_s``
   (plus one second of rounding), and its ``valid_until`` is not further
   than ``max_valid_for_s`` from the reader's clock (a state stamped in the
   future cannot stretch the cap: issue 16);
4a. its ``liveness`` is ``"live"``: liveness was positively established
   when the daemon decided (issue 16, live before accepted; a state
   without the field, from a daemon that predates it, is refused);
5. its ``model_id`` is the expected one, when ``model_id`` is given (a
   daemon restarted on another model must be re-approved);
6. when the state names its serving daemon (``"served_by": ID``, a daemon
   of a group, docs/fleet.md), that daemon's
   ``<prefix>/daemon/<ID>/availability`` is ``online`` (its last will says
   ``offline`` the moment it dies, before any new owner has spoken);
7. the reader is connected to the broker now (on a lost connection it forgets
   every state; the broker resends the retained ones on reconnection).

Anything missing, unparsable or of another type is *not authenticated*.
The rules are the pure function :func:`evaluate`, so they are tested
without a broker and with an injected clock; :class:`AuthReader` only keeps
the latest messages per device, updated by paho's network thread.

Examples
--------
>>> from ecgstream.reader import DeviceView, evaluate
>>> v = DeviceView(availability="online",
...                auth={"state": "authenticated", "time": 100.0, "valid_until": 105.0,
...                      "model_id": "m", "subject": "alice", "liveness": "live"})
>>> evaluate(v, now=101.0).authenticated
True
>>> evaluate(v, now=105.0).reason
'state expired (valid_until passed)'
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .mqtt import Credentials, LinkOptions, MqttConnection, TlsOptions
from .mqtt.client import subscriber_callbacks

__all__ = ["AuthReader", "DeviceView", "Verdict", "evaluate", "is_authenticated"]

log = logging.getLogger(__name__)

#: Seconds a state's ``time`` may be ahead of the reader's clock beyond ``skew_s`` (the daemon
#: rounds times to the millisecond; a second covers that and scheduling).
FUTURE_SLACK_S = 1.0

#: Largest payload the reader parses (an auth state is a few hundred bytes).
MAX_STATE_BYTES = 16 * 1024


@dataclass(frozen=True)
class DeviceView:
    """What the reader last heard about one device (None: nothing, or unparsable)."""

    availability: str | None = None
    auth: dict[str, Any] | None = None


@dataclass(frozen=True)
class Verdict:
    """The answer for one device at one moment, with the reason in words."""

    device: str
    authenticated: bool
    reason: str
    subject: str | None = None
    valid_until: float | None = None


def _number(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def evaluate(view: DeviceView | None, now: float, *, device: str = "", model_id: str | None = None,
             subject: str | None = None, daemon_online: bool | None = None, connected: bool = True,
             skew_s: float = 0.0, max_valid_for_s: float = 60.0,
             daemons: dict[str, str] | None = None) -> Verdict:
    """Apply the fail-closed rules (module docs) to what is known about a device.

    Parameters
    ----------
    view : DeviceView or None
        The latest availability and auth payload (None: never heard of).
    now : float
        The consumer's clock, Unix seconds.
    model_id, subject : str, optional
        Required model id / subject; None accepts any (non-empty model id).
    daemon_online : bool or None
        The daemon's own availability in multi-device mode; None: not checked.
    connected : bool
        Whether the reader is connected to the broker.
    skew_s : float
        Seconds by which ``valid_until`` must be ahead of ``now`` (clock skew
        between daemon and consumer; >= 0).
    max_valid_for_s : float
        Most seconds a state may claim beyond its ``time``.
    daemons : dict of str to str, optional
        The daemons' availability words by id, for states with ``served_by``
        (a state that names a daemon not known ``online`` here is refused).
    """
    def no(reason: str) -> Verdict:
        return Verdict(device, False, reason)

    if not connected:
        return no("reader not connected to the broker")
    if daemon_online is False:
        return no("daemon offline")
    if view is None:
        return no("nothing heard from this device")
    if view.availability != "online":
        return no("device offline" if view.availability == "offline" else "device availability unknown")
    a = view.auth
    if not isinstance(a, dict):
        return no("no readable auth state")
    if a.get("state") != "authenticated":
        return no(f"state is {a.get('state')!r}" if isinstance(a.get("state"), str) else "no state")
    vu, t = _number(a.get("valid_until")), _number(a.get("time"))
    if vu is None or t is None:
        return no("auth state lacks a numeric time / valid_until")
    if vu - t > max_valid_for_s:
        return no(f"auth state claims {vu - t:.0f} s of validity (most {max_valid_for_s:.0f} s)")
    skew = max(0.0, skew_s)
    if t > now + skew + FUTURE_SLACK_S:
        return no(f"auth state is stamped {t - now:.1f} s in the future (clock skew allowed {skew:.1f} s)")
    if vu - now > max_valid_for_s:
        return no(f"auth state is valid for {vu - now:.0f} s from now (most {max_valid_for_s:.0f} s)")
    if not now + skew < vu:
        return no("state expired (valid_until passed)")
    live = a.get("liveness")
    if live != "live":
        return no(f"liveness not established ({live!r})" if isinstance(live, str) else "auth state lacks liveness")
    mid = a.get("model_id")
    if not isinstance(mid, str) or not mid:
        return no("auth state lacks a model id")
    if model_id is not None and mid != model_id:
        return no(f"model {mid!r} is not the expected {model_id!r}")
    if "served_by" in a:
        by = a["served_by"]
        if not isinstance(by, str) or (daemons or {}).get(by) != "online":
            return no(f"serving daemon {by!r} is not online" if isinstance(by, str) else "bad served_by")
    subj = a.get("subject")
    if subject is not None and subj != subject:
        return no(f"subject {subj!r} is not the expected {subject!r}")
    return Verdict(device, True, "authenticated", subj if isinstance(subj, str) else None, vu)


def _parse_auth(payload: bytes) -> dict[str, Any] | None:
    if len(payload) > MAX_STATE_BYTES:
        return None
    try:
        obj = json.loads(bytes(payload).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


@dataclass
class _State:
    views: dict[str, DeviceView] = field(default_factory=dict)
    daemon: str | None = None
    daemons: dict[str, str] = field(default_factory=dict)  # every daemon's availability (groups)


class AuthReader:
    """Subscribe to the daemon's states and answer "authenticated now?" (module docs).

    Parameters
    ----------
    host, port : str, int
        The broker.
    device : str, optional
        Watch one device; None: every device under ``prefix`` (up to
        ``max_devices``).
    prefix : str
        Topic prefix of the daemon (default ``ecgstream``).
    model_id, subject : str, optional
        Required model id / subject (see :func:`evaluate`).
    daemon_id : str, optional
        The daemon's MQTT client id in multi-device mode: its
        ``<prefix>/daemon/<daemon_id>/availability`` must be ``online``.
    username, password : str, optional
        Broker credentials (a consumer account needs only read access).
    tls : TlsOptions, optional
    protocol : {"5", "3.1.1"}
    skew_s, max_valid_for_s : float
        See :func:`evaluate`.
    clock : callable
        Unix time in seconds (injectable for tests).
    max_devices : int
        Bound on the devices remembered when watching all (more are ignored).

    Examples
    --------
    A door controller's loop (a sketch)::

        with AuthReader("broker.local", 1883, device="chest1", model_id=MODEL) as r:
            while True:
                door.set_unlocked(r.authenticated())
                time.sleep(0.2)
    """

    def __init__(self, host: str, port: int = 1883, *, device: str | None = None,
                 prefix: str = "ecgstream", model_id: str | None = None, subject: str | None = None,
                 daemon_id: str | None = None, username: str | None = None, password: str | None = None,
                 tls: TlsOptions | None = None, protocol: str = "5", skew_s: float = 0.0,
                 max_valid_for_s: float = 60.0, clock: Callable[[], float] = time.time,
                 client_id: str | None = None, max_devices: int = 10_000,
                 retry_min_s: float = 0.5, retry_max_s: float = 10.0, keepalive: int = 10) -> None:
        for name, v in (("device", device), ("daemon_id", daemon_id)):
            if v is not None and (not v or any(c in v for c in "/+#")):
                raise ValueError(f"{name} {v!r} is not one topic level")
        self.device = device
        self.prefix = prefix
        self.model_id = model_id
        self.subject = subject
        self.daemon_id = daemon_id
        self.skew_s = float(skew_s)
        self.max_valid_for_s = float(max_valid_for_s)
        self.clock = clock
        self.max_devices = int(max_devices)
        self._lock = threading.Lock()
        self._state = _State()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        host_name = socket.gethostname().split(".")[0] or "host"
        self._conn = MqttConnection(
            host, port, client_id=client_id or f"ecgstream-reader-{host_name}-{os.getpid()}-{id(self):x}",
            options=LinkOptions(protocol=protocol, keepalive=keepalive,
                                credentials=Credentials.of(username, password), tls=tls,
                                retry_min_s=retry_min_s, retry_max_s=retry_max_s, connect_timeout_s=5.0),
            log=log, configure=self._configure, on_up=self._on_up, on_lost=self._on_lost,
            name="ecgstream-reader")

    # -- topics --------------------------------------------------------------------------
    def _filters(self) -> list[str]:
        d = self.device or "+"
        f = [f"{self.prefix}/{d}/availability", f"{self.prefix}/{d}/auth"]
        f.append(f"{self.prefix}/daemon/+/availability")  # the daemon a state's served_by names
        return f

    def on_message(self, topic: str, payload: bytes) -> None:
        """Record one message (paho's network thread; also usable without a broker)."""
        levels = topic.split("/")
        pre = self.prefix.split("/")
        if levels[:len(pre)] != pre or len(levels) != len(pre) + 2:
            if len(levels) == len(pre) + 3 and levels[len(pre)] == "daemon" and levels[-1] == "availability":
                word = bytes(payload[:16]).decode("utf-8", "replace")
                with self._lock:
                    if levels[len(pre) + 1] == self.daemon_id:
                        self._state.daemon = word
                    if len(self._state.daemons) < self.max_devices or levels[len(pre) + 1] in self._state.daemons:
                        self._state.daemons[levels[len(pre) + 1]] = word
            return
        dev, kind = levels[len(pre)], levels[len(pre) + 1]
        if self.device is not None and dev != self.device:
            return
        with self._lock:
            views = self._state.views
            v = views.get(dev)
            if v is None:
                if len(views) >= self.max_devices:
                    return
                v = DeviceView()
            if kind == "availability":
                v = replace(v, availability=bytes(payload[:16]).decode("utf-8", "replace"))
            elif kind == "auth":
                v = replace(v, auth=_parse_auth(payload) if payload else None)
            else:
                return
            views[dev] = v

    # -- answers -------------------------------------------------------------------------
    def verdict(self, device: str | None = None) -> Verdict:
        """The full answer (with the reason) for ``device`` (default: the watched one)."""
        dev = device or self.device
        if dev is None:
            raise ValueError("which device? (the reader watches every device)")
        with self._lock:
            view = self._state.views.get(dev)
            daemon = self._state.daemon
            daemons = dict(self._state.daemons) if view is not None and view.auth and "served_by" in view.auth \
                else None
        return evaluate(view, self.clock(), device=dev, model_id=self.model_id, subject=self.subject,
                        daemon_online=None if not self.daemon_id else daemon == "online",
                        connected=self._connected.is_set(), skew_s=self.skew_s,
                        max_valid_for_s=self.max_valid_for_s, daemons=daemons)

    def authenticated(self, device: str | None = None) -> bool:
        """True only when ``device`` is authenticated now by every rule (module docs)."""
        return self.verdict(device).authenticated

    def devices(self) -> list[str]:
        """Devices heard of so far."""
        with self._lock:
            return sorted(self._state.views)

    # -- connection ----------------------------------------------------------------------
    def _configure(self, client: Any, gen: int) -> None:
        def subscribed() -> None:
            self._connected.set()
            self._subscribed.set()

        subscriber_callbacks(client, self.on_message, subscribed, "reader", log)

    def _on_up(self, client: Any, first: bool) -> None:
        client.subscribe([(f, 1) for f in self._filters()])

    def _on_lost(self) -> None:
        self._connected.clear()
        with self._lock:  # fail closed: the retained states come again on reconnection
            self._state = _State()

    def start(self, wait_s: float = 5.0) -> AuthReader:
        """Connect and subscribe; wait up to ``wait_s`` for the subscription (no error if not)."""
        self._conn.start()
        self._subscribed.wait(wait_s)
        return self

    @property
    def connected(self) -> bool:
        """Connected and subscribed now."""
        return self._connected.is_set()

    def close(self) -> None:
        """Disconnect and stop the connection thread."""
        self._conn.request_stop()
        self._conn.disconnect()
        self._conn.join(5.0)
        self._on_lost()

    def __enter__(self) -> AuthReader:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_authenticated(host: str, port: int, device: str, wait_s: float = 1.0, **kw: Any) -> bool:
    """One-shot check: connect, wait ``wait_s`` for the retained states, answer, disconnect.

    Keyword arguments are those of :class:`AuthReader`.
    """
    with AuthReader(host, port, device=device, **kw) as r:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not r.authenticated():
            time.sleep(0.05)
        return r.authenticated()
