"""What the MQTT source keeps per device and how a topic names a device.

The counters (:class:`MqttSourceStats`), the per-device stream state
(``seq``, sample index, rate meter) and the topic-filter rules; the source
itself (subscription, connection, the per-device ``seq`` rules) is
:mod:`.mqtt_source`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .base import RateMeter, SourceError, SourceStats

__all__ = ["MqttSourceStats"]

#: A device id (as ``[devices.<id>]`` of the config): letters, digits, ``_ . -``, 1-64.
_DEVICE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


@dataclass
class MqttSourceStats(SourceStats):
    """:class:`SourceStats` plus MQTT counters.

    Attributes
    ----------
    duplicates : int
        Messages dropped because their ``seq`` was not newer than the last.
    lost_messages : int
        Messages missing according to ``seq`` jumps.
    reboots : int
        ``seq`` restarts at 0 (device reboots).
    devices : set of str
        Devices seen.
    """

    duplicates: int = 0
    lost_messages: int = 0
    reboots: int = 0
    devices: set[str] = field(default_factory=set)
    unauthenticated: int = 0  # chunks refused by the message verifier (ecgstream.trust.msgauth)
    devices_refused: int = 0  # chunks of new devices beyond max_devices
    bad_device_ids: int = 0  # topics whose device level is not a valid device id
    retained: int = 0  # retained messages ignored (issue 16: ECG is never retained)
    resyncs: int = 0  # seq far behind or far ahead of the last: a gap and a new position
    rate_limited: int = 0  # messages dropped undecoded: over the device's rate (issue 16)
    devices_expired: int = 0  # unconfigured, unkeyed devices forgotten after device_expiry_s


@dataclass
class _Device:
    fs_hz: float
    last_seq: int
    next_index: int
    gap_next: bool = False
    received: int = 0
    meter: RateMeter = field(default_factory=RateMeter)
    bytes_per_sample: float = 4.0  # of its last chunk: estimates a message's samples before decoding
    tokens: float | None = None  # rate limit (samples), None until the first check
    tokens_t: float = 0.0
    last_t: float = 0.0  # host time of its last accepted chunk (expiry)


def _topic_parts(filt: str, uri: str, device: str | None) -> tuple[int | None, str | None]:
    levels = filt.split("/")
    if not filt or "#" in filt or any("+" in lv and lv != "+" for lv in levels):
        raise SourceError(f"source {uri!r}: topic filter {filt!r} must be like ecgstream/+/ecg "
                          "('#' is not allowed)")
    plus = [i for i, lv in enumerate(levels) if lv == "+"]
    if len(plus) > 1:
        raise SourceError(f"source {uri!r}: topic filter {filt!r} has more than one '+'; "
                          "the device id is the level of the one '+'")
    if plus:
        if device:
            raise SourceError(f"source {uri!r}: device= cannot be used with a '+' filter")
        return plus[0], None
    return None, device or (levels[-2] if len(levels) >= 2 else levels[0])
