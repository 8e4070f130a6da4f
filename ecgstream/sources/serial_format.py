"""The line formats of serial wearables: one line in, one parsed sample out.

Pure, no I/O. :class:`~.serial_lines.SerialDecoder` cuts the bytes of a port
into lines, parses each with :func:`parse_line` and makes the chunks;
:class:`~.serial_source.SerialSource` owns the port and feeds it.

Line formats (one sample period per line, ``\\n`` or ``\\r\\n``)
----------------------------------------------------------------
``ascii``
    One number per line: ``512``. This is what the SparkFun AD8232 sketch
    prints (``Serial.println(analogRead(A0))``). Decimals (``-0.125``) are
    accepted too.
``csv``
    ``t_ms,value``: the device's millisecond clock and the value
    (``123456,512``). A jump in ``t_ms`` beyond 1.5 sample periods that
    the lines received do not explain marks a gap, and the sample index
    skips the samples that never came; ``t_ms`` going backwards (device
    reset) marks a gap.

Lead-off markers: a line that is, after stripping white space and ignoring
case, spaces, ``-`` and ``_``, one of :data:`LEAD_OFF_WORDS` (``!``, ``LO``,
``leads off``, ``lead off``, ``leadoff``, ``LEADS_OFF``, ...). In ``csv`` the
marker may follow a time stamp (``123456,!``). The SparkFun sketch prints
``!`` in place of a sample while the LO+/LO- pins are high, so each marker
stands for one sample: it becomes one NaN in a chunk with
``leads_off=True``.

Blank lines are ignored. Every other line that does not parse (not a
number, more than :data:`MAX_LINE_BYTES` bytes, not UTF-8, out of range) is
counted in ``stats.garbled`` and becomes one NaN sample, so the sample clock
stays honest and :class:`~ecgstream.dsp.beats.BeatPipeline` bridges it
(short runs) or starts a new segment (long runs). The first fragment after
opening the port is discarded (the device may have been mid-line).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ESTIMATE_LINES",
    "LEAD_OFF_WORDS",
    "MAX_LINE_BYTES",
    "USUAL_RATES_HZ",
    "LineError",
    "ParsedLine",
    "estimate_fs",
    "parse_line",
]

#: Longest accepted line in bytes, without the line end.
MAX_LINE_BYTES = 64
#: Lead-off markers, after lower-casing and removing spaces, ``-`` and ``_``.
LEAD_OFF_WORDS = frozenset({"!", "lo", "leadsoff", "leadoff", "lo!", "off"})
#: Device timestamps used to estimate the rate of a ``csv`` stream without ``fs=``.
ESTIMATE_LINES = 64
#: Rates an estimate snaps to when within 2 %.
USUAL_RATES_HZ = (100, 125, 128, 200, 250, 256, 300, 360, 400, 500, 512, 1000, 1024, 2000)

_NUMBER = re.compile(rb"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_TIME = re.compile(rb"\d{1,12}(?:\.\d*)?")
_OFF_STRIP = str.maketrans("", "", " \t-_")


class LineError(ValueError):
    """A line could not be parsed; the message says why."""


@dataclass(frozen=True, slots=True)
class ParsedLine:
    """One parsed line.

    Attributes
    ----------
    value : float
        The sample value (before scaling); NaN for a lead-off marker.
    leads_off : bool
        True for a lead-off marker.
    t_ms : float or None
        Device time stamp in milliseconds (``csv``), else None.
    """

    value: float
    leads_off: bool = False
    t_ms: float | None = None


def _is_off(text: bytes) -> bool:
    try:
        word = text.decode("ascii").strip().lower().translate(_OFF_STRIP)
    except UnicodeDecodeError:
        return False
    return word in LEAD_OFF_WORDS


def parse_line(line: bytes, fmt: str = "ascii", vmin: float = -8388608.0,
               vmax: float = 16777215.0) -> ParsedLine | None:
    """Parse one line from a wearable.

    Parameters
    ----------
    line : bytes
        The line, with or without its ``\\n`` / ``\\r\\n``.
    fmt : {"ascii", "csv"}
        Line format (see the module docs).
    vmin, vmax : float
        Range of valid values (ADC counts, before scaling).

    Returns
    -------
    ParsedLine or None
        None for a blank line (not a sample).

    Raises
    ------
    LineError
        The line is too long, not UTF-8, not in the format, or out of range.
        Nothing else is raised for any input.
    ValueError
        ``fmt`` is not ``ascii`` or ``csv`` (a programming error).
    """
    if fmt not in ("ascii", "csv"):
        raise ValueError(f"format must be 'ascii' or 'csv', not {fmt!r}")
    body = line[:-1] if line.endswith(b"\n") else line
    if body.endswith(b"\r"):
        body = body[:-1]
    if len(body) > MAX_LINE_BYTES:
        raise LineError(f"line of {len(body)} bytes (longest accepted {MAX_LINE_BYTES})")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(f"not UTF-8 at byte {exc.start}") from None
    body = body.strip()
    if not body:
        return None
    t_ms: float | None = None
    if fmt == "csv":
        if _is_off(body):
            return ParsedLine(math.nan, True, None)
        parts = body.split(b",")
        if len(parts) != 2:
            raise LineError(f"expected 't_ms,value', got {len(parts)} field(s)")
        t_raw, body = parts[0].strip(), parts[1].strip()
        if not _TIME.fullmatch(t_raw):
            raise LineError("time stamp is not a non-negative number of milliseconds")
        t_ms = float(t_raw)
    if _is_off(body):
        return ParsedLine(math.nan, True, t_ms)
    if not _NUMBER.fullmatch(body):
        raise LineError("not a number")
    value = float(body)
    if not vmin <= value <= vmax:
        raise LineError(f"value outside {vmin:g}..{vmax:g}")  # the value itself is not logged
    return ParsedLine(value, False, t_ms)


def estimate_fs(t_ms: list[float] | np.ndarray) -> float:
    """Estimate a sampling rate from consecutive device time stamps.

    Parameters
    ----------
    t_ms : sequence of float
        Time stamps in milliseconds, one per sample, in order.

    Returns
    -------
    float
        Rate in Hz: a value of :data:`USUAL_RATES_HZ` when within 2 %, else
        rounded to 0.1 Hz.

    Raises
    ------
    ValueError
        Fewer than two stamps, or they do not increase.
    """
    t = np.asarray(t_ms, dtype=np.float64)
    if t.size < 2 or not t[-1] > t[0]:
        raise ValueError("need at least two increasing time stamps")
    fs = (t.size - 1) * 1000.0 / (t[-1] - t[0])
    for usual in USUAL_RATES_HZ:
        if abs(fs - usual) <= 0.02 * usual:
            return float(usual)
    return round(fs, 1)
