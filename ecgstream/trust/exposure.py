"""Loud warnings when the MQTT input is an open door (issue 16, item 4).

``ecgstream run`` logs each of these at WARNING when it starts, and
``ecgstream check-config`` prints them (the config is still valid: exit 0;
an operator who wants the quick start keeps it). Pure: the config in,
sentences out. What each means and how to close it: docs/security.md.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any

__all__ = ["input_warnings", "log_input_warnings"]

log = logging.getLogger("ecgstream.trust")

_LOOPBACK = {"localhost", "ip6-localhost"}


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _keyed_devices(cfg: Any) -> int:
    """How many device key files there are (names only; nothing is decrypted)."""
    d = Path(cfg.daemon.store).parent / "device-keys"
    try:
        return sum(1 for p in d.iterdir() if p.name.endswith(".dkey") and not p.name.startswith("."))
    except OSError:
        return 0


def input_warnings(cfg: Any) -> list[str]:
    """What makes this config's ECG input open to others, one sentence each (empty: nothing found)."""
    from urllib.parse import urlsplit

    uri = cfg.daemon.source or ""
    if not uri.startswith(("mqtt:", "mqtts:")):
        return []
    out = []
    host = urlsplit(uri).hostname or ""
    m = cfg.mqtt
    if not m.username:
        out.append("MQTT input is UNAUTHENTICATED: the daemon connects without a user name, so the broker "
                   "most likely lets anyone read raw ECG and publish chunks for any device (an injected "
                   "recording can be authenticated); give every wearable and the daemon its own account "
                   "and an ACL (docs/security.md, section 1)")
    if not (uri.startswith("mqtts:") or m.tls) and not _loopback(host):
        out.append(f"MQTT input from {host} is not encrypted (no TLS): raw ECG and passwords cross the "
                   "network in clear (use mqtts:// or [mqtt] tls = true)")
    mode = cfg.input.message_auth
    if mode == "off":
        out.append("[input] message_auth = \"off\": chunks are not signed; whoever may publish on a device's "
                   "topic speaks for it (docs/security.md, section 2)")
    elif mode == "keyed" and _keyed_devices(cfg) == 0:
        out.append("[input] message_auth = \"keyed\" but no device has a message key: every chunk is "
                   "accepted unsigned (`ecgstream device-key add DEVICE`, or message_auth = \"required\")")
    return out


def log_input_warnings(cfg: Any) -> list[str]:
    """Log :func:`input_warnings` at WARNING (``ecgstream run``); return them."""
    warnings = input_warnings(cfg)
    for w in warnings:
        log.warning("INSECURE INPUT: %s", w)
    return warnings
