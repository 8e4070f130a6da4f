"""The ECG payloads wearables publish over MQTT: one place for both wire forms.

See also ``docs/mqtt.md``.

JSON (UTF-8, starts with ``{``)::

    {"fs": 500, "seq": 17, "samples": [0.12, 0.15, null, ...], "leads_off": false}

* ``fs``: sampling rate in Hz (number, 1..20000), required.
* ``seq``: message sequence number, integer 0..2**32-1, required; +1 per
  message, 0 after the device boots, wraps from 2**32-1 to 0.
* ``samples``: 1..:data:`MAX_SAMPLES` numbers (mV) or ``null`` for an
  unreadable sample.
* ``leads_off``: optional boolean; true means the electrodes are off for the
  whole chunk (its samples are ignored).
* Other keys are ignored (room for e.g. ``"battery"``).

Compact binary (little-endian, starts with the magic ``b"EC"``)::

    offset size type     field
    0      2    bytes    magic b"EC"
    2      1    uint8    version = 1
    3      1    uint8    flags: bit 0 leads off, bit 1 samples are int16
                         (else float32); other bits must be 0
    4      2    uint16   fs in Hz (1..20000)
    6      2    uint16   count of samples (1..MAX_SAMPLES)
    8      4    uint32   seq
    12     4    float32  scale: sample = stored value * scale (finite, non-zero)
    16     ...  samples: count x float32 or count x int16

  Header 16 bytes; the payload must be exactly ``16 + count * (4 or 2)``
  bytes. An unreadable sample is float32 NaN or int16 -32768; an infinite
  float32 is an error. ``struct`` format of the header: ``"<2sBBHHIf"``.
  :func:`encode_binary` and :func:`encode_json` write these forms.

Signed chunks (optional; ``docs/security.md``). A wearable holding a
per-device key (``ecgstream device-key add``) adds its Unix time in
milliseconds and an HMAC-SHA256 over :func:`mac_message`:

* JSON: keys ``"t_ms"`` (integer) and ``"mac"`` (64 lowercase hex digits).
  The MAC covers ``b"J" + struct.pack("<IQdBI", seq, t_ms, fs, leads_off,
  count)`` followed by the samples as float64 little-endian (an unreadable
  sample as the quiet NaN ``0x7ff8000000000000``): the values the JSON
  numbers denote, so the sender MACs exactly the numbers it writes.
* Binary: flag bit 2 (0x04) set; after the samples an 8-byte uint64
  ``t_ms`` and the 32-byte MAC. The MAC covers ``b"B"`` followed by every
  byte of the payload before the MAC.

:func:`mac_message` prefixes the domain ``b"ecgstream-mac-v1\\0"``, the
length of the device id (one byte) and the device id (UTF-8), so a chunk
signed for one device is never valid for another.


Pure functions, no I/O: :func:`decode_payload` for the source, and
:func:`encode_json` / :func:`encode_binary` for simulators and tests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import struct
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BINARY_HEADER",
    "MAX_PAYLOAD_BYTES",
    "MAX_SAMPLES",
    "SEQ_MOD",
    "DecodedChunk",
    "PayloadError",
    "decode_payload",
    "encode_binary",
    "encode_json",
    "compute_mac",
    "mac_message",
]

#: ``struct`` layout of the binary header (16 bytes).
BINARY_HEADER = struct.Struct("<2sBBHHIf")
BINARY_MAGIC = b"EC"
BINARY_VERSION = 1
FLAG_LEADS_OFF = 0x01
FLAG_INT16 = 0x02
INT16_NAN = -32768
#: Most samples in one payload.
MAX_SAMPLES = 20000
#: Largest payload accepted, bytes.
MAX_PAYLOAD_BYTES = 256 * 1024
#: Largest magnitude of a sample value (mV or counts).
MAX_ABS_VALUE = 1e9
SEQ_MOD = 2**32
FLAG_MAC = 0x04
MAC_BYTES = 32
MAC_DOMAIN = b"ecgstream-mac-v1\0"
_JSON_MAC_HEAD = struct.Struct("<IQdBI")
_CANON_NAN = np.frombuffer(b"\x00\x00\x00\x00\x00\x00\xf8\x7f", dtype="<f8")[0]


@dataclass(frozen=True, slots=True)
class DecodedChunk:
    """One decoded payload.

    Attributes
    ----------
    fs_hz : float
        Declared sampling rate in Hz.
    seq : int
        Message sequence number.
    samples : numpy.ndarray
        float64 samples; NaN for unreadable ones.
    leads_off : bool
        The device reports the electrodes off for the whole chunk.
    t_ms : int or None
        The sender's Unix time in milliseconds (signed chunks only).
    mac : bytes or None
        The HMAC-SHA256 the chunk carries (signed chunks only).
    signed : bytes or None
        What the MAC covers, less the device prefix (:func:`mac_message`).
    """

    fs_hz: float
    seq: int
    samples: np.ndarray
    leads_off: bool = False
    t_ms: int | None = None
    mac: bytes | None = None
    signed: bytes | None = None


class PayloadError(ValueError):
    """A payload is not a valid ECG chunk; the message says why (and where)."""


def _check_fs(fs: object) -> float:
    if isinstance(fs, bool) or not isinstance(fs, int | float):
        raise PayloadError("'fs' must be a number (Hz)")
    f = float(fs)
    if not (math.isfinite(f) and 1.0 <= f <= 20000.0):
        raise PayloadError(f"'fs' {f!r} outside 1..20000 Hz")
    return f


def _check_seq(seq: object) -> int:
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise PayloadError("'seq' must be an integer")
    if not 0 <= seq < SEQ_MOD:
        raise PayloadError(f"'seq' {seq} outside 0..{SEQ_MOD - 1}")
    return seq


def _reject_constant(name: str) -> float:
    raise PayloadError(f"{name} is not a valid sample (use null for an unreadable sample)")


def _decode_json(data: bytes) -> DecodedChunk:
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except PayloadError:
        raise
    except UnicodeDecodeError as exc:
        raise PayloadError(f"JSON payload is not UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"bad JSON at byte {exc.pos}: {exc.msg}") from None
    except (RecursionError, ValueError, OverflowError) as exc:  # nesting, huge integers
        raise PayloadError(f"bad JSON: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise PayloadError("JSON payload must be an object")
    missing = [k for k in ("fs", "seq", "samples") if k not in obj]
    if missing:
        raise PayloadError(f"JSON payload lacks {', '.join(missing)}")
    fs = _check_fs(obj["fs"])
    seq = _check_seq(obj["seq"])
    raw = obj["samples"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_SAMPLES:
        raise PayloadError(f"'samples' must be a list of 1..{MAX_SAMPLES} numbers")
    x = np.empty(len(raw), dtype=np.float64)
    for i, v in enumerate(raw):
        if v is None:
            x[i] = np.nan
        elif isinstance(v, bool) or not isinstance(v, int | float):
            raise PayloadError(f"samples[{i}] is not a number or null")
        else:
            try:
                f = float(v)
            except OverflowError:
                raise PayloadError(f"samples[{i}] out of range") from None
            if not abs(f) <= MAX_ABS_VALUE:
                raise PayloadError(f"samples[{i}] out of range")
            x[i] = f
    off = obj.get("leads_off", False)
    if not isinstance(off, bool):
        raise PayloadError("'leads_off' must be true or false")
    if "mac" not in obj and "t_ms" not in obj:
        return DecodedChunk(fs, seq, x, off)
    t_ms, mac = obj.get("t_ms"), obj.get("mac")
    if isinstance(t_ms, bool) or not isinstance(t_ms, int) or not 0 <= t_ms < 2**63:
        raise PayloadError("'t_ms' must be an integer (Unix time in milliseconds)")
    if not isinstance(mac, str) or len(mac) != 2 * MAC_BYTES:
        raise PayloadError(f"'mac' must be {2 * MAC_BYTES} hex digits")
    try:
        mac_b = bytes.fromhex(mac)
    except ValueError:
        raise PayloadError("'mac' is not hex") from None
    return DecodedChunk(fs, seq, x, off, t_ms, mac_b, json_signed_part(seq, t_ms, fs, off, x))


def _canonical(x: np.ndarray) -> bytes:
    y = np.asarray(x, dtype="<f8").copy()
    y[np.isnan(y)] = _CANON_NAN
    return y.tobytes()


def json_signed_part(seq: int, t_ms: int, fs_hz: float, leads_off: bool, samples: np.ndarray) -> bytes:
    """What the MAC of a JSON chunk covers, less the device prefix (module docs)."""
    return b"J" + _JSON_MAC_HEAD.pack(seq, t_ms, float(fs_hz), int(bool(leads_off)), int(np.size(samples))) \
        + _canonical(samples)


def mac_message(device: str, signed: bytes) -> bytes:
    """The bytes an HMAC of ``device``'s chunk is computed over (module docs)."""
    d = device.encode("utf-8")
    if not 1 <= len(d) <= 255:
        raise ValueError("device id must be 1..255 bytes")
    return MAC_DOMAIN + bytes([len(d)]) + d + signed


def compute_mac(key: bytes, device: str, signed: bytes) -> bytes:
    """HMAC-SHA256 of a chunk (:func:`mac_message`) with the device's key."""
    return hmac.new(key, mac_message(device, signed), hashlib.sha256).digest()


def _decode_binary(data: bytes) -> DecodedChunk:
    if len(data) < BINARY_HEADER.size:
        raise PayloadError(f"binary payload of {len(data)} bytes is shorter than its "
                           f"{BINARY_HEADER.size}-byte header")
    magic, version, flags, fs, count, seq, scale = BINARY_HEADER.unpack_from(data)
    if version != BINARY_VERSION:
        raise PayloadError(f"binary payload version {version} (byte 2); this reads {BINARY_VERSION}")
    if flags & ~(FLAG_LEADS_OFF | FLAG_INT16 | FLAG_MAC):
        raise PayloadError(f"unknown flag bits 0x{flags:02x} (byte 3)")
    fsf = _check_fs(fs)
    if not 1 <= count <= MAX_SAMPLES:
        raise PayloadError(f"sample count {count} (bytes 6-7) outside 1..{MAX_SAMPLES}")
    if not (math.isfinite(scale) and scale != 0.0):
        raise PayloadError("scale (bytes 12-15) must be finite and non-zero")
    width = 2 if flags & FLAG_INT16 else 4
    trailer = 8 + MAC_BYTES if flags & FLAG_MAC else 0
    want = BINARY_HEADER.size + count * width + trailer
    if len(data) != want:
        raise PayloadError(f"binary payload of {len(data)} bytes; header says {want}")
    if width == 2:
        raw16 = np.frombuffer(data, dtype="<i2", count=count, offset=BINARY_HEADER.size)
        x = raw16.astype(np.float64) * float(scale)
        x[raw16 == INT16_NAN] = np.nan
    else:
        raw32 = np.frombuffer(data, dtype="<f4", count=count, offset=BINARY_HEADER.size)
        if np.isinf(raw32).any():
            k = int(np.flatnonzero(np.isinf(raw32))[0])
            raise PayloadError(f"sample {k} (byte {BINARY_HEADER.size + 4 * k}) is infinite")
        with np.errstate(invalid="ignore"):  # a signalling NaN warned; it is an unreadable sample too
            x = raw32.astype(np.float64) * float(scale)
    with np.errstate(invalid="ignore"):
        big = np.abs(x) > MAX_ABS_VALUE
    if big.any():
        raise PayloadError(f"sample {int(np.flatnonzero(big)[0])} out of range")
    if not trailer:
        return DecodedChunk(fsf, int(seq), x, bool(flags & FLAG_LEADS_OFF))
    end = want - MAC_BYTES
    (t_ms,) = struct.unpack_from("<Q", data, end - 8)
    if t_ms >= 2**63:
        raise PayloadError(f"t_ms (bytes {end - 8}-{end - 1}) out of range")
    return DecodedChunk(fsf, int(seq), x, bool(flags & FLAG_LEADS_OFF), int(t_ms), data[end:],
                        b"B" + data[:end])


def decode_payload(data: bytes) -> DecodedChunk:
    """Decode a JSON or binary ECG payload (see the module docs).

    Parameters
    ----------
    data : bytes
        The MQTT message payload.

    Returns
    -------
    DecodedChunk

    Raises
    ------
    PayloadError
        Anything wrong with the payload; no other exception for any bytes.
    """
    data = bytes(data)
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {len(data)} bytes (largest {MAX_PAYLOAD_BYTES})")
    if data[:2] == BINARY_MAGIC:
        return _decode_binary(data)
    if data.lstrip()[:1] == b"{":
        return _decode_json(data)
    raise PayloadError("payload is neither JSON (starts with '{') nor binary (starts with 'EC')")


def encode_json(samples: np.ndarray, fs_hz: float, seq: int, leads_off: bool = False,
                decimals: int = 4, key: bytes | None = None, device: str | None = None,
                t_ms: int | None = None) -> bytes:
    """Encode a chunk as a JSON payload (NaN becomes ``null``).

    Parameters
    ----------
    samples : array of float
        Samples in mV (or counts).
    fs_hz : float
        Rate in Hz.
    seq : int
        Sequence number.
    leads_off : bool
    decimals : int
        Decimals kept per sample.
    key, device : bytes, str, optional
        Sign the chunk with ``device``'s key (adds ``t_ms`` and ``mac``).
    t_ms : int, optional
        Sender time of a signed chunk (Unix ms); default now.
    """
    vals = [None if not math.isfinite(v) else round(float(v), decimals) for v in samples]
    fs_out = fs_hz if fs_hz != int(fs_hz) else int(fs_hz)
    obj: dict[str, Any] = {"fs": fs_out, "seq": int(seq), "samples": vals}
    if leads_off:
        obj["leads_off"] = True
    if key is not None:
        if device is None:
            raise ValueError("signing needs the device id")
        t = int(time.time() * 1000) if t_ms is None else int(t_ms)
        x = np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
        obj["t_ms"] = t
        obj["mac"] = compute_mac(key, device, json_signed_part(int(seq), t, float(fs_out), leads_off, x)).hex()
    return json.dumps(obj, separators=(",", ":")).encode()


def encode_binary(samples: np.ndarray, fs_hz: int, seq: int, leads_off: bool = False,
                  int16_scale: float | None = None, key: bytes | None = None,
                  device: str | None = None, t_ms: int | None = None) -> bytes:
    """Encode a chunk in the compact binary form.

    Parameters
    ----------
    samples : array of float
        Samples; NaN for unreadable ones.
    fs_hz : int
        Rate in Hz (an integer in this form).
    seq : int
        Sequence number (taken modulo 2**32).
    leads_off : bool
    int16_scale : float, optional
        Store int16 ``round(sample / int16_scale)`` (e.g. 0.001 for µV
        resolution of mV samples); default float32.
    key, device, t_ms
        Sign the chunk, as :func:`encode_json`.
    """
    x = np.asarray(samples, dtype=np.float64)
    flags = FLAG_LEADS_OFF if leads_off else 0
    if int16_scale is None:
        body = x.astype("<f4").tobytes()
        scale = 1.0
    else:
        flags |= FLAG_INT16
        q = np.where(np.isfinite(x), np.round(np.nan_to_num(x) / int16_scale), INT16_NAN)
        ints = np.clip(q, -32767, 32767).astype("<i2")
        ints[~np.isfinite(x)] = INT16_NAN
        body = ints.tobytes()
        scale = float(int16_scale)
    if key is not None:
        flags |= FLAG_MAC
    head = BINARY_HEADER.pack(BINARY_MAGIC, BINARY_VERSION, flags, int(fs_hz), x.size,
                              int(seq) % SEQ_MOD, scale)
    if key is None:
        return head + body
    if device is None:
        raise ValueError("signing needs the device id")
    t = int(time.time() * 1000) if t_ms is None else int(t_ms)
    part = head + body + struct.pack("<Q", t)
    return part + compute_mac(key, device, b"B" + part)
