"""What may leave the daemon: checks every payload and device id passes before publishing.

The daemon never publishes raw ECG, beat windows, embeddings or templates;
:func:`check_payload` refuses anything that looks like one, whatever the
publisher (stdout or MQTT).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["FORBIDDEN_KEY_PARTS", "MAX_NUMERIC_LIST", "PayloadError", "check_device",
           "check_payload", "encode"]

#: Substrings of payload keys that are refused anywhere in a payload (raw
#: samples, beat windows, embeddings, templates must never leave the daemon).
FORBIDDEN_KEY_PARTS = ("sample", "embedding", "template", "window", "centroid", "ecg")
#: A list of more than this many numbers is refused as well (it looks like a signal).
MAX_NUMERIC_LIST = 16


class PayloadError(ValueError):
    """A payload or device id that must not be published."""



def check_payload(payload: Any, _path: str = "") -> None:
    """Refuse payloads that could carry raw ECG, embeddings or templates.

    Parameters
    ----------
    payload : dict
        A payload, checked recursively.

    Raises
    ------
    PayloadError
        A key containing one of :data:`FORBIDDEN_KEY_PARTS` (any case, at any
        depth), a list of more than :data:`MAX_NUMERIC_LIST` numbers, or a
        value that is not plain JSON (e.g. a numpy array).
    """
    if isinstance(payload, dict):
        for k, v in payload.items():
            if not isinstance(k, str):
                raise PayloadError(f"payload key {_path}{k!r} is not a string")
            low = k.lower()
            for part in FORBIDDEN_KEY_PARTS:
                if part in low:
                    raise PayloadError(
                        f"payload key {_path}{k!r} refused: the daemon never publishes raw ECG, "
                        "beat windows, embeddings or templates")
            check_payload(v, f"{_path}{k}.")
    elif isinstance(payload, (list, tuple)):
        nums = sum(1 for v in payload if isinstance(v, (int, float)) and not isinstance(v, bool))
        if nums > MAX_NUMERIC_LIST:
            raise PayloadError(f"payload value {_path.rstrip('.') or '<root>'} is a list of {nums} numbers: "
                               "refused (looks like a signal)")
        for v in payload:
            check_payload(v, _path)
    elif payload is None or isinstance(payload, (str, bool, int, float)):
        return
    else:
        raise PayloadError(f"payload value {_path.rstrip('.') or '<root>'} of type "
                           f"{type(payload).__name__} refused: only plain JSON values are published")


def check_device(device: str) -> None:
    """Refuse a device id that is not one MQTT topic level.

    Raises
    ------
    PayloadError
        Empty, or containing ``/``, ``+``, ``#`` or a NUL character.
    """
    if not isinstance(device, str) or not device or any(c in device for c in "/+#\0"):
        raise PayloadError(f"device id {device!r} is not a valid MQTT topic level "
                           "(non-empty, without '/', '+', '#')")


def encode(payload: dict[str, Any]) -> str:
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise PayloadError(f"payload is not valid JSON: {exc}") from exc
