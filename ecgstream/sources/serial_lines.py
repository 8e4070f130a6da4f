"""The decoder of serial wearables: bytes and host times in, chunks out.

Pure, no I/O: :class:`SerialDecoder` is fed bytes and times and returns
:class:`~ecgstream.core.types.SampleChunk`\\ s; :class:`~.serial_source.SerialSource`
owns the port and feeds it. The line formats (``ascii``, ``csv``, lead-off
markers, what counts as garbled) are :mod:`.serial_format`.

The rate is reported per device in ``stats.declared_fs_hz`` (what the
chunks carry) and ``stats.measured_fs_hz``: for ``csv`` from the device's
time stamps (samples per device second over continuous stretches, so the
device's own clock rate, losses excluded), for ``ascii`` from host arrival
times (samples received per host second, losses included), over the last
:data:`RATE_WINDOW_S` seconds. A ``csv`` stream whose every step is a jump
(a wrong ``fs=``) falls back to the arrival rate. ``measured_host_fs_hz``
holds the arrival-time estimate for both formats. A measured rate more than
5 % from the declared one is logged once as a WARNING.

"""

from __future__ import annotations

import logging
import math

import numpy as np

from ..core.types import SampleChunk
from .base import RateMeter, SourceStats
from .serial_format import (
    ESTIMATE_LINES,
    MAX_LINE_BYTES,
    LineError,
    ParsedLine,
    estimate_fs,
    parse_line,
)

__all__ = ["SerialDecoder"]

log = logging.getLogger("ecgstream.sources.serial_source")

#: Garbled lines are logged at most once per this many host seconds (with their count).
GARBLED_LOG_S = 10.0


class SerialDecoder:
    """Bytes from a serial line in, :class:`SampleChunk` out (no I/O).

    :class:`SerialSource` feeds it what it reads; tests can feed it bytes
    directly.

    Parameters
    ----------
    device : str
        Device id.
    fmt : {"ascii", "csv"}
    fs_hz : float or None
        Declared rate in Hz; None (``csv`` only) estimates it.
    chunk_s : float
        Longest chunk in seconds of signal.
    stats : SourceStats
        Counters to update.
    scale, offset : float
        ``sample = (value - offset) * scale``.
    vmin, vmax : float
        Valid range of values before scaling.
    """

    def __init__(self, device: str, fmt: str, fs_hz: float | None, chunk_s: float,
                 stats: SourceStats, scale: float = 1.0, offset: float = 0.0,
                 vmin: float = -8388608.0, vmax: float = 16777215.0) -> None:
        if fmt not in ("ascii", "csv"):
            raise ValueError(f"format must be 'ascii' or 'csv', not {fmt!r}")
        if fs_hz is None and fmt != "csv":
            raise ValueError("ascii lines carry no time: the rate must be declared")
        self.device = device
        self.fmt = fmt
        self.fs_hz = fs_hz
        self.chunk_s = chunk_s
        self.stats = stats
        self.scale = scale
        self.offset = offset
        self.vmin = vmin
        self.vmax = vmax
        self.host_meter = RateMeter()
        self.device_meter = RateMeter()
        self.measured_host_fs_hz: float | None = None
        self.lead_off_lines = 0
        self.skipped_samples = 0  # never received (csv time jumps, unplugged time)
        self._buf = bytearray()
        self._discarding = False  # inside an overlong line
        self._sync = True  # discard the first fragment after open
        self._index = 0  # stream index of the next sample
        self._pending: list[float] = []
        self._pending_off = False
        self._pending_start = 0
        self._pending_t0 = 0.0  # host time of the first pending sample
        self._pending_gap = False
        self._last_arrival = 0.0
        self._gap_next = False
        self._t_ref: tuple[float, int] | None = None  # (t_ms, index) of the last stamped sample
        self._dev_t_s = 0.0  # device time spanned by continuous stamped samples, s
        self._dev_n = 0  # samples in that time
        self._received = 0  # samples received (for the host rate)
        self._estimating: list[tuple[ParsedLine | None, float]] = []
        self._warned_rate = False
        self._garbled_logged_at: float | None = None  # host time of the last garbled-line warning
        self._garbled_logged_n = 0
        if fs_hz is not None:
            stats.declared_fs_hz[device] = float(fs_hz)

    # -- input ----------------------------------------------------------------
    def reopened(self, now: float) -> None:
        """The port was opened again: discard the first fragment, mark a gap.

        The sample index skips the samples that the host clock says were
        missed since the last sample arrived.
        """
        self._buf.clear()
        self._discarding = False
        self._sync = True
        self._gap_next = True
        self._t_ref = None
        self.host_meter.reset()
        if self.fs_hz is not None and self._received:
            missed = max(0, round((now - self._last_arrival) * self.fs_hz) - 1)
            self._index += missed
            self.skipped_samples += missed

    def feed(self, data: bytes, now: float) -> list[SampleChunk]:
        """Take bytes read at host time ``now`` (s); return the chunks completed."""
        out: list[SampleChunk] = []
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > MAX_LINE_BYTES + 1 and not self._discarding:
                    if self._sync:
                        self._sync = False
                    else:
                        self._bad_line(now, out, f"line longer than {MAX_LINE_BYTES} bytes")
                    self._discarding = True
                if self._discarding:
                    self._buf.clear()
                break
            line = bytes(self._buf[:nl])
            del self._buf[:nl + 1]
            if self._discarding:
                self._discarding = False
                continue
            if self._sync:
                self._sync = False
                continue
            self._line(line, now, out)
        return out

    def poll(self, now: float) -> list[SampleChunk]:
        """Emit pending samples older than ``chunk_s`` (call on a read timeout)."""
        out: list[SampleChunk] = []
        if self._pending and now - self._pending_t0 >= self.chunk_s:
            self._flush(out)
        return out

    def flush(self) -> list[SampleChunk]:
        """Emit whatever is pending."""
        out: list[SampleChunk] = []
        self._flush(out)
        return out

    # -- lines ----------------------------------------------------------------
    def _bad_line(self, now: float, out: list[SampleChunk], why: str) -> None:
        self.stats.garbled += 1
        # The first one at once, then one line per GARBLED_LOG_S of host time while
        # they go on (and at 10, 100, 1000, ...): a noisy cable stays visible in the
        # log, never floods it.
        n = self.stats.garbled
        if (self._garbled_logged_at is None or now - self._garbled_logged_at >= GARBLED_LOG_S
                or (n >= 10 and str(n).rstrip("0") == "1")):
            since = self.stats.garbled - self._garbled_logged_n
            log.warning("serial %s: garbled line (%s); %d so far, %d since the last report",
                        self.device, why, self.stats.garbled, since)
            self._garbled_logged_at = now
            self._garbled_logged_n = self.stats.garbled
        self._sample(math.nan, False, None, now, out)

    def _line(self, line: bytes, now: float, out: list[SampleChunk]) -> None:
        try:
            p = parse_line(line, self.fmt, self.vmin, self.vmax)
        except LineError as exc:
            self._bad_line(now, out, str(exc))
            return
        if p is None:
            return
        if p.leads_off:
            self.lead_off_lines += 1
        self._sample(p.value, p.leads_off, p.t_ms, now, out)

    def _sample(self, value: float, off: bool, t_ms: float | None, now: float,
                out: list[SampleChunk]) -> None:
        if self.fs_hz is None:
            self._estimate(value, off, t_ms, now, out)
            return
        fs = self.fs_hz
        if t_ms is not None:
            if self._t_ref is not None:
                t_prev, i_prev = self._t_ref
                dt = t_ms - t_prev
                period = 1000.0 / fs
                unexplained = dt - (self._index - i_prev) * period
                if dt < 0:
                    log.info("serial %s: device clock went back %.0f ms (reset?): gap",
                             self.device, -dt)
                    self._mark_gap(out)
                elif unexplained > 0.5 * period:
                    skip = min(round(unexplained / period), round(60 * fs))
                    self._mark_gap(out)
                    self._index += skip
                    self.skipped_samples += skip
                else:
                    # Continuous: the device's clock advanced dt for these samples.
                    self._dev_t_s += dt / 1000.0
                    self._dev_n += self._index - i_prev
                    self.device_meter.add(self._dev_t_s, self._dev_n)
                    rate = self.device_meter.rate_hz
                    if rate is not None:
                        self.stats.measured_fs_hz[self.device] = rate
            self._t_ref = (t_ms, self._index)
        if self._pending and (off != self._pending_off or len(self._pending) >= self._max_n()):
            self._flush(out)
        if not self._pending:
            self._pending_start = self._index
            self._pending_off = off
            self._pending_t0 = now
            self._pending_gap = self._gap_next
            self._gap_next = False
        self._pending.append(math.nan if off or math.isnan(value)
                             else (value - self.offset) * self.scale)
        self._index += 1
        self._received += 1
        self._last_arrival = now
        if len(self._pending) >= self._max_n():
            self._flush(out)

    def _max_n(self) -> int:
        assert self.fs_hz is not None
        return max(1, round(self.chunk_s * self.fs_hz))

    def _mark_gap(self, out: list[SampleChunk]) -> None:
        self._flush(out)
        self._gap_next = True

    def _estimate(self, value: float, off: bool, t_ms: float | None, now: float,
                  out: list[SampleChunk]) -> None:
        self._estimating.append((ParsedLine(value, off, t_ms), now))
        stamps = [p.t_ms for p, _ in self._estimating if p is not None and p.t_ms is not None]
        if len(stamps) < ESTIMATE_LINES:
            return
        try:
            fs = estimate_fs(stamps)
        except ValueError:
            # Time stamps do not increase: keep the newest half and try again later.
            self._estimating = self._estimating[len(self._estimating) // 2:]
            return
        self.fs_hz = fs
        self.stats.declared_fs_hz[self.device] = fs
        log.info("serial %s: rate estimated from device time stamps: %.1f Hz", self.device, fs)
        held, self._estimating = self._estimating, []
        for p, t in held:
            assert p is not None
            self._sample(p.value, p.leads_off, p.t_ms, t, out)

    def _flush(self, out: list[SampleChunk]) -> None:
        if not self._pending:
            return
        assert self.fs_hz is not None
        x = np.array(self._pending, dtype=np.float64)
        chunk = SampleChunk(self.device, self.fs_hz, self._pending_start, x,
                            arrival_s=self._last_arrival, gap_before=self._pending_gap,
                            leads_off=self._pending_off)
        self._pending = []
        st = self.stats
        st.chunks += 1
        st.samples += x.size
        if chunk.gap_before:
            st.gaps += 1
        self.host_meter.add(self._last_arrival, self._received)
        host = self.host_meter.rate_hz
        if host is not None:
            self.measured_host_fs_hz = host
            if self.fmt == "ascii" or self.device_meter.rate_hz is None:
                st.measured_fs_hz[self.device] = host
        measured = st.measured_fs_hz.get(self.device)
        if (measured is not None and not self._warned_rate
                and abs(measured - self.fs_hz) > 0.05 * self.fs_hz):
            self._warned_rate = True
            log.warning("serial %s: measured rate %.1f Hz differs from the declared %.1f Hz",
                        self.device, measured, self.fs_hz)
        out.append(chunk)
