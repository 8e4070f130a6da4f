"""Fuzzing the edges of ecgstream (issue 5, item 5): >= 1e6 inputs in total.

Run::

    python bench/fuzz.py [--scale 1.0] [--workers 1] [--out docs/benchmarks/fuzz.json]
                         [--md docs/benchmarks/fuzz.md]

Targets, and what counts as what:

=============== ============================================== ===========================
target          call                                           documented rejection
=============== ============================================== ===========================
serial_line     ``serial_format.parse_line(line, fmt)``        ``LineError``
                (ascii and csv)
serial_stream   ``SerialDecoder.feed`` on a random byte stream  none (garbled lines are
                cut at random points, then ``flush``            counted, never raised)
mqtt_payload    ``mqtt_source.decode_payload(data)``           ``PayloadError``
mqtt_stream     ``MqttSource.handle`` on random topics,         none (counted, dropped)
                payloads and sequence numbers
config_struct   ``config.build_config(random structure,        ``ConfigError``
                random overrides)``
config_toml     ``config.load_config(file of random TOML)``    ``ConfigError``
wfdb_header     ``data.read_record`` on a mutated header (and  ``DataError``
                sometimes a truncated signal file)
=============== ============================================== ===========================

Inputs are a mix of random bytes and mutations of valid inputs (bit flips,
byte insertions and deletions, truncation, splices of two valid inputs,
duplicated regions, "interesting" tokens such as ``nan``, ``1e999``,
``-0``, huge integers, NUL bytes and non-UTF-8 bytes). Every accepted input
is checked against the function's contract (an accepted payload has 1..
MAX_SAMPLES float64 samples, none infinite, a rate in 1..20000 Hz; an
accepted line's value is within the range; an accepted config is a
``Config``; a record gives a 1-D array and a positive rate), so "accepted
but wrong" is found too.

* **crash**: any other exception (or a broken contract); the first few
  tracebacks are saved with the input (``repr``).
* **hang**: an input that runs past its per-input timeout (``SIGALRM`` via
  ``setitimer``; 1 s, 5 s for WFDB).

WFDB header handling goes through the real ``wfdb`` reader and costs about a
millisecond or more per input, so it gets fewer inputs than the others (the
counts per target are in the report). Each worker caps its address space
(``RLIMIT_AS``, 4 GiB) so that a header claiming a huge signal cannot take
the machine's memory; a ``MemoryError`` would count as a crash.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import machine_info  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Inputs per target at --scale 1 (sum >= 1e6).
COUNTS = {
    "serial_line": 450_000,
    "serial_stream": 40_000,
    "mqtt_payload": 400_000,
    "mqtt_stream": 40_000,
    "config_struct": 40_000,
    "config_toml": 50_000,
    "wfdb_header": 15_000,
    "signed_payload": 150_000,
    "reader_eval": 150_000,
    "attempts": 100_000,
}
TIMEOUT_S = {"wfdb_header": 5.0}
BATCH = 5_000
MAX_TRACEBACKS = 5

INTERESTING = [b"nan", b"NaN", b"inf", b"-inf", b"1e999", b"-0", b"0x10", b"1_000", b"9" * 40,
               b"-9223372036854775809", b"\x00", b"\xff", b"\xc3\x28", b"\r", b"\n", b",", b" ",
               b"!", b"LO", b"null", b"true", b"[]", b"{}", b'"', b"'", b"\\", b"1e-400",
               b"4294967296", b"-1", b"20001", b"0.0", b"\xef\xbb\xbf"]


class Hang(Exception):
    """An input ran past its timeout."""


def _alarm(signum: int, frame: Any) -> None:
    raise Hang()


# -- mutations ----------------------------------------------------------------------------------
def mutate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    """One to four random mutations of ``data``."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        if op == 0 and b:  # bit flip
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # random byte
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2:  # insert bytes
            i = rng.randrange(len(b) + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and b:  # delete a run
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 16)]
        elif op == 4 and b:  # truncate
            del b[rng.randrange(len(b)):]
        elif op == 5:  # splice with another valid input
            o = rng.choice(seeds)
            i, j = rng.randrange(len(b) + 1), rng.randrange(len(o) + 1)
            b = b[:i] + bytearray(o[j:])
        elif op == 6 and b:  # duplicate a region
            i = rng.randrange(len(b))
            j = min(len(b), i + rng.randint(1, 32))
            b[j:j] = b[i:j] * rng.randint(1, 4)
        elif op == 7:  # interesting token
            i = rng.randrange(len(b) + 1)
            tok = rng.choice(INTERESTING)
            if b and rng.random() < 0.5:  # replace a digit run
                j = i
                while j < len(b) and chr(b[j]).isdigit():
                    j += 1
                b[i:j] = tok
            else:
                b[i:i] = tok
        elif b:  # swap two bytes
            i, j = rng.randrange(len(b)), rng.randrange(len(b))
            b[i], b[j] = b[j], b[i]
    return bytes(b)


def random_bytes(rng: random.Random, max_len: int) -> bytes:
    n = min(max_len, int(rng.expovariate(1 / 24)))
    if rng.random() < 0.3:  # printable-ish
        alphabet = b"0123456789+-.eE,!LOo \t\r\nnaif{}[]\":"
        return bytes(rng.choice(alphabet) for _ in range(n))
    return rng.randbytes(n)


def gen(rng: random.Random, seeds: list[bytes], max_len: int = 256) -> bytes:
    r = rng.random()
    if r < 0.25:
        return random_bytes(rng, max_len)
    if r < 0.3:
        return rng.choice(seeds)
    return mutate(rng, rng.choice(seeds), seeds)


# -- targets ---------------------------------------------------------------------------------------
class Target:
    """A fuzz target: ``make(rng)`` builds an input, ``run(input)`` is the call."""

    name = ""
    rejects: tuple[type[BaseException], ...] = ()

    def setup(self, workdir: Path) -> None:
        pass

    def make(self, rng: random.Random) -> Any:
        raise NotImplementedError

    def run(self, inp: Any) -> None:
        raise NotImplementedError


class SerialLine(Target):
    name = "serial_line"

    def setup(self, workdir: Path) -> None:
        from ecgstream.sources.serial_format import LineError, parse_line

        self.parse = parse_line
        self.rejects = (LineError,)
        self.seeds = [b"512\n", b"-0.125\r\n", b"!\n", b"leads off\n", b"LO\n", b"  7 ", b"1023",
                      b"+.5", b"16777215", b"-8388608", b"123456,512\n", b"123,!\n", b"0,0\r\n",
                      b"99999.5,-12.25\n", b"lead_off", b"LEADS-OFF\r\n"]

    def make(self, rng: random.Random) -> Any:
        return gen(rng, self.seeds, 96), rng.choice(("ascii", "csv"))

    def run(self, inp: Any) -> None:
        line, fmt = inp
        p = self.parse(line, fmt)
        if p is None:
            return
        if p.leads_off:
            assert math.isnan(p.value), p
        else:
            assert -8388608.0 <= p.value <= 16777215.0, p
        if fmt == "csv":
            assert p.t_ms is None or (math.isfinite(p.t_ms) and p.t_ms >= 0), p
        else:
            assert p.t_ms is None


class SerialStream(Target):
    """A random byte stream (valid lines mixed with noise), cut at random points."""

    name = "serial_stream"

    def setup(self, workdir: Path) -> None:
        import numpy as np

        from ecgstream.sources.base import SourceStats
        from ecgstream.sources.serial_lines import SerialDecoder

        self.np = np
        self.Decoder, self.Stats = SerialDecoder, SourceStats
        self.lines = [b"512\n", b"513\r\n", b"!\n", b"1000,512\n", b"1002,513\n", b"x\n", b"\n",
                      b"1" * 80 + b"\n", b"\xff\xfe\n", b"1004,!\n"]

    def make(self, rng: random.Random) -> Any:
        parts = []
        for _ in range(rng.randint(1, 60)):
            parts.append(rng.choice(self.lines) if rng.random() < 0.7 else random_bytes(rng, 100))
        data = b"".join(parts)
        if rng.random() < 0.3:
            data = mutate(rng, data, self.lines)
        cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randint(0, 6)))
        fmt = rng.choice(("ascii", "csv"))
        fs = rng.choice((250.0, 500.0, None)) if fmt == "csv" else rng.choice((250.0, 500.0))
        return data, cuts, fmt, fs

    def run(self, inp: Any) -> None:
        data, cuts, fmt, fs = inp
        st = self.Stats()
        dec = self.Decoder("d", fmt, fs, 0.1, st)
        out = []
        t = 0.0
        prev = 0
        for c in [*cuts, len(data)]:
            out += dec.feed(data[prev:c], t)
            prev = c
            t += 0.01
        out += dec.flush()
        nxt = None
        for ch in out:
            assert ch.samples.ndim == 1 and ch.samples.size >= 1
            assert not self.np.isinf(ch.samples).any()
            if nxt is not None:
                assert ch.start_sample >= nxt, (ch.start_sample, nxt)
            nxt = ch.end_sample


class MqttPayload(Target):
    name = "mqtt_payload"

    def setup(self, workdir: Path) -> None:
        import numpy as np

        from ecgstream.sources import mqtt_payload as m

        self.np = np
        self.m = m
        self.rejects = (m.PayloadError,)
        rng = np.random.default_rng(1)
        seeds = []
        for n in (1, 3, 10, 50):
            x = rng.normal(0, 1, n)
            x[0] = np.nan if n > 2 else x[0]
            seeds += [m.encode_json(x, 500, 7), m.encode_json(x, 250.5, 0, leads_off=True),
                      m.encode_binary(x, 500, 2**32 - 1), m.encode_binary(x, 360, 3, int16_scale=0.001),
                      m.encode_binary(x, 1000, 9, leads_off=True)]
        seeds += [b'{"fs":500,"seq":1,"samples":[1,null,2.5e-3],"battery":3}',
                  b' {"fs": 1, "seq": 0, "samples": [0]}']
        self.seeds = seeds

    def make(self, rng: random.Random) -> Any:
        return gen(rng, self.seeds, 512)

    def run(self, inp: Any) -> None:
        d = self.m.decode_payload(inp)
        x = d.samples
        assert x.dtype == self.np.float64 and x.ndim == 1 and 1 <= x.size <= self.m.MAX_SAMPLES
        assert not self.np.isinf(x).any()
        assert self.np.all(self.np.isnan(x) | (self.np.abs(x) <= self.m.MAX_ABS_VALUE))
        assert 1.0 <= d.fs_hz <= 20000.0 and 0 <= d.seq < 2**32 and isinstance(d.leads_off, bool)


class MqttStream(Target):
    """Many messages through one MqttSource's per-device rules."""

    name = "mqtt_stream"

    def setup(self, workdir: Path) -> None:
        from ecgstream.sources import mqtt_source as m

        self.m = m
        self.pay = MqttPayload()
        self.pay.setup(workdir)

    def make(self, rng: random.Random) -> Any:
        msgs = []
        for _ in range(rng.randint(1, 30)):
            topic = rng.choice(["ecgstream/a/ecg", "ecgstream/b/ecg", "ecgstream//ecg", "ecgstream/a/b/ecg",
                                "x/a/ecg", "ecgstream/a/ecg/", "ecgstream/\u00e9/ecg"])
            r = rng.random()
            if r < 0.6:
                x = [rng.uniform(-2, 2) for _ in range(rng.randint(1, 20))]
                seq = rng.choice([len(msgs), len(msgs) + 1, 0, rng.randrange(2**32), 2**32 - 1, len(msgs) - 1])
                seq = max(0, seq) % 2**32
                fs = rng.choice([500, 250, 1000])
                payload = (self.m.encode_json(x, fs, seq) if rng.random() < 0.5
                           else self.m.encode_binary(x, fs, seq))
            else:
                payload = self.pay.make(rng)
            msgs.append((topic, payload))
        return msgs

    def run(self, inp: Any) -> None:
        src = self.m.MqttSource("mqtt://127.0.0.1:1/ecgstream/+/ecg")
        last_end: dict[str, int] = {}
        for i, (topic, payload) in enumerate(inp):
            ch = src.handle(topic, payload, float(i) * 0.1)
            if ch is None:
                continue
            prev = last_end.get(ch.device)
            assert prev is None or ch.start_sample >= prev or ch.gap_before, (prev, ch.start_sample)
            last_end[ch.device] = ch.end_sample


def _config_values(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth < 2 and r < 0.15:
        return {_config_key(rng): _config_values(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if depth < 2 and r < 0.22:
        return [_config_values(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return rng.choice([
        None, True, False, 0, 1, -1, 2**70, -(2**63), 0.5, -0.0, math.nan, math.inf, 1e308, 250, 500.0,
        "", "x", "wfdb:x", "mqtt://h:1/a/+/b", "serial:/dev/ttyUSB0?fs=250", "INFO", "debug", "far_0.001",
        "eer", "3.1.1", "5", "exit", "retry", "\x00", "\ud800", "a" * 300, "1883", "true", "nan",
        rng.randbytes(4).decode("latin-1"), rng.uniform(-1e6, 1e6), rng.randint(-10**6, 10**6),
    ])


_FIELDS: list[str] = []


def _config_key(rng: random.Random) -> str:
    return rng.choice(_FIELDS) if _FIELDS and rng.random() < 0.8 else rng.choice(
        ["", "x", "a.b", "[x]", "é", "devices", "strap1", "-bad", ".x", "a" * 70])


class ConfigStruct(Target):
    name = "config_struct"

    def setup(self, workdir: Path) -> None:
        from ecgstream import config as c

        self.c = c
        self.rejects = (c.ConfigError,)
        for cls in [*c.SECTIONS.values(), c.DeviceConfig]:
            _FIELDS.extend(cls.__dataclass_fields__)
        _FIELDS.extend(c.SECTIONS)
        self.sections = [*c.SECTIONS, "devices"]

    def make(self, rng: random.Random) -> Any:
        data: dict[str, Any] = {}
        for _ in range(rng.randint(0, 4)):
            sec = rng.choice(self.sections) if rng.random() < 0.85 else _config_key(rng)
            if sec == "devices" and rng.random() < 0.8:
                data[sec] = {rng.choice(["strap1", "a", "-x", "", "d" * 70]):
                             {_config_key(rng): _config_values(rng) for _ in range(rng.randint(0, 3))}}
            elif rng.random() < 0.9:
                data[sec] = {_config_key(rng): _config_values(rng) for _ in range(rng.randint(0, 5))}
            else:
                data[sec] = _config_values(rng)
        overrides = {}
        if rng.random() < 0.3:
            key = rng.choice(["daemon.speed", "mqtt.port", "devices.a.fs", "daemon.source", "x", "daemon.",
                              "devices.a.b.c", "mqtt.tls", "decision.threshold", "liveness.min_hr_bpm"])
            overrides[key] = _config_values(rng)
        return data, overrides

    def run(self, inp: Any) -> None:
        data, overrides = inp
        try:
            cfg = self.c.build_config(data, overrides=overrides, environ={})
        except self.c.ConfigError as exc:
            assert exc.problems and all(isinstance(p, self.c.ConfigProblem) for p in exc.problems)
            str(exc)
            raise
        assert isinstance(cfg, self.c.Config)


class ConfigToml(Target):
    name = "config_toml"

    def setup(self, workdir: Path) -> None:
        from ecgstream import config as c

        self.c = c
        self.rejects = (c.ConfigError,)
        self.path = workdir / "fuzz.toml"
        example = (ROOT / "examples" / "ecgstream.toml").read_bytes()
        self.seeds = [example, *[ln + b"\n" for ln in example.splitlines() if ln.strip()],
                      b"[daemon]\nsource = 'wfdb:x'\nspeed = 2\n", b"[mqtt]\nhost = 'h'\nport = 1883\ntls = true\n",
                      b"[devices.strap1]\nsubject = 'alice'\nfs = 250\n", b"[decision]\nthreshold = 0.7\n",
                      b"[liveness]\nmin_hr_bpm = 30\nmax_hr_bpm = 220\n", b"a.b.c = 1\n", b"x = \"\"\"\n"]

    def make(self, rng: random.Random) -> Any:
        if rng.random() < 0.5:  # splice lines of the seeds, then mutate
            lines = [ln for s in self.seeds for ln in s.splitlines(keepends=True)]
            text = b"".join(rng.choice(lines) for _ in range(rng.randint(1, 15)))
            return mutate(rng, text, self.seeds) if rng.random() < 0.5 else text
        return gen(rng, self.seeds, 2048)

    def run(self, inp: Any) -> None:
        self.path.write_bytes(inp)
        try:
            cfg = self.c.load_config(str(self.path), {}, environ={})
        except self.c.ConfigError as exc:
            assert exc.problems
            str(exc)
            raise
        assert isinstance(cfg, self.c.Config)


class WfdbHeader(Target):
    name = "wfdb_header"

    def setup(self, workdir: Path) -> None:
        import logging

        from ecgstream.sources import records as d

        logging.getLogger("wfdb").setLevel(logging.CRITICAL)
        self.d = d
        self.rejects = (d.DataError,)
        self.dir = workdir / "wfdb"
        self.dir.mkdir(exist_ok=True)
        src = [ROOT / "data" / "ecgid-excerpt" / "Person_01" / "rec_1", ROOT / "data" / "mitdb-excerpt" / "100"]
        self.seeds = []
        self.dats = {}
        for p in src:
            self.seeds.append((p.name, p.with_suffix(".hea").read_bytes()))
            dat = p.with_suffix(".dat").read_bytes()
            self.dats[p.name] = dat
            (self.dir / f"{p.name}.dat").write_bytes(dat)
        self.all_seeds = [h for _, h in self.seeds]

    def make(self, rng: random.Random) -> Any:
        name, hea = rng.choice(self.seeds)
        hea = random_bytes(rng, 300) if rng.random() < 0.1 else mutate(rng, hea, self.all_seeds)
        dat_cut = rng.randrange(len(self.dats[name]) + 1) if rng.random() < 0.1 else None
        return name, hea, dat_cut, rng.choice([0, 1, "ECG I", "MLII", "x"])

    def run(self, inp: Any) -> None:
        name, hea, dat_cut, ch = inp
        dat = self.dir / f"{name}.dat"
        full = self.dats[name]
        if dat_cut is not None:
            dat.write_bytes(full[:dat_cut])
        try:
            (self.dir / f"{name}.hea").write_bytes(hea)
            x, fs, _ = self.d.read_record(self.dir / name, ch)
            assert x.ndim == 1 and fs > 0
        finally:
            if dat_cut is not None:
                dat.write_bytes(full)


_T0_MS = 1_796_000_000_000  # the fuzz verifier's fixed host clock (Unix ms)


class SignedPayload(Target):
    """Signed JSON/binary chunks (genuine, mutated, forged, replayed) through the verifier.

    Each input is a sequence of payloads for a few devices, decoded and checked
    by one fresh :class:`MessageVerifier` (mode ``keyed`` or ``required``) on a
    fixed clock. Contract: an accepted chunk of a keyed device carries exactly
    the signed content of a chunk its key really signed (a mutation may change
    only what the MAC does not cover, e.g. JSON white space), and the accepted
    ``(t_ms, seq)`` of each device strictly increase (no replay).
    """

    name = "signed_payload"

    def setup(self, workdir: Path) -> None:
        import numpy as np

        from ecgstream.sources import mqtt_payload as m
        from ecgstream.trust import msgauth

        self.np, self.m, self.msgauth = np, m, msgauth
        self.rejects = (m.PayloadError,)
        self.keys = {"strap1": bytes(range(32)), "strap2": bytes(range(1, 33))}
        self.devices = ["strap1", "strap2", "open3"]
        rng = np.random.default_rng(2)
        self.genuine: dict[str, set[bytes]] = {d: set() for d in self.keys}
        self.pool: list[tuple[str, bytes]] = []
        for dev, key in self.keys.items():
            for i in range(40):
                n = int(rng.integers(1, 60))
                x = rng.normal(0, 1, n)
                if i % 7 == 0:
                    x[0] = np.nan
                t = _T0_MS + int(rng.integers(-40_000, 40_000))
                off = i % 11 == 0
                for p in (m.encode_json(x, 500, i, leads_off=off, key=key, device=dev, t_ms=t),
                          m.encode_binary(x, 250, i, leads_off=off, key=key, device=dev, t_ms=t),
                          m.encode_binary(x, 360, i, int16_scale=0.001, key=key, device=dev, t_ms=t)):
                    self.genuine[dev].add(m.decode_payload(p).signed)
                    self.pool.append((dev, p))
        # signed with the wrong key, and unsigned
        for i in range(20):
            x = rng.normal(0, 1, 10)
            self.pool.append(("strap1", m.encode_json(x, 500, i, key=self.keys["strap2"], device="strap1",
                                                       t_ms=_T0_MS)))
            self.pool.append(("strap2", m.encode_binary(x, 500, i)))
            self.pool.append(("open3", m.encode_json(x, 500, i)))
        self.seeds = [p for _, p in self.pool]

    def make(self, rng: random.Random) -> Any:
        msgs = []
        for _ in range(rng.randint(1, 12)):
            dev, p = rng.choice(self.pool)
            if rng.random() < 0.15:
                dev = rng.choice(self.devices)  # a chunk presented under another device's topic
            r = rng.random()
            if r < 0.55:
                p = mutate(rng, p, self.seeds)
            elif r < 0.6:
                p = random_bytes(rng, 400)
            msgs.append((dev, p))
        return msgs, rng.choice(("keyed", "required"))

    def run(self, inp: Any) -> None:
        msgs, mode = inp
        v = self.msgauth.MessageVerifier(self.keys, mode, 30.0, wall=lambda: _T0_MS / 1000)
        last: dict[str, tuple[int, int]] = {}
        n_ok = 0
        for dev, p in msgs:
            try:
                d = self.m.decode_payload(p)
            except self.m.PayloadError:
                continue
            why = v.check(dev, d)
            if why is not None:
                assert isinstance(why, str) and why
                continue
            n_ok += 1
            if dev in self.keys:
                assert d.signed in self.genuine[dev], "accepted a chunk its key never signed"
                assert abs(d.t_ms - _T0_MS) <= 30_000
                assert last.get(dev) is None or (d.t_ms, d.seq) > last[dev], "replay accepted"
                last[dev] = (d.t_ms, d.seq)
            else:
                assert mode == "keyed", "unkeyed device accepted in required mode"
        assert sum(v.rejected.values()) <= len(msgs)


class ReaderEval(Target):
    """The reader: random state payloads and availability through ``on_message`` and ``evaluate``.

    Contract: ``authenticated`` is True only when every fail-closed rule holds
    (online, state ``authenticated``, finite ``time``/``valid_until``,
    ``valid_until`` ahead of the clock by the skew, no more than the allowed
    validity claimed, a non-empty model id equal to the expected one).
    """

    name = "reader_eval"

    def setup(self, workdir: Path) -> None:
        from ecgstream import reader

        self.r = reader
        now = 1_796_000_000.0
        self.now = now
        good = {"state": "authenticated", "subject": "alice", "score": 0.9, "threshold": 0.5,
                "beats_used": 8, "time": now - 1, "valid_until": now + 4, "seq": 3, "model_id": "m1"}
        self.seeds = [json.dumps(good).encode(),
                      json.dumps({**good, "state": "rejected"}).encode(),
                      json.dumps({**good, "valid_until": now - 1}).encode(),
                      json.dumps({**good, "valid_until": now + 1e6}).encode(),
                      json.dumps({**good, "model_id": ""}).encode(),
                      json.dumps({**good, "time": "x"}).encode(),
                      b"[1]", b"null", b"{}", b"", b"online", b"offline"]

    def make(self, rng: random.Random) -> Any:
        msgs = []
        for _ in range(rng.randint(1, 8)):
            dev = rng.choice(["d1", "d2", "", "d1/x", "+"])
            kind = rng.choice(["auth", "availability", "auth", "events", "daemon"])
            topic = ("ecgstream/daemon/dm/availability" if kind == "daemon"
                     else rng.choice([f"ecgstream/{dev}/{kind}", f"ecgstream/{dev}/{kind}", f"x/{dev}/{kind}"]))
            if kind in ("availability", "daemon"):
                p = rng.choice([b"online", b"offline", b"", b"online\x00", b"ONLINE", rng.randbytes(20)])
            else:
                p = gen(rng, self.seeds, 400)
            msgs.append((topic, p))
        return (msgs, rng.choice(["d1", "d2", None]), rng.choice([None, "m1", "m2"]),
                rng.choice([None, "dm"]), rng.choice([0.0, 0.5, -3.0, 1e9, math.nan]),
                self.now + rng.choice([0.0, -10.0, 3.9, 5.0, 1e7, math.nan, math.inf]),
                rng.choice([True, True, False]))

    def run(self, inp: Any) -> None:
        msgs, device, model_id, daemon_id, skew, now, connected = inp
        rd = self.r.AuthReader("127.0.0.1", 1, device=device, model_id=model_id, daemon_id=daemon_id,
                               skew_s=skew if math.isfinite(skew) else 0.0, clock=lambda: now, max_devices=4)
        for topic, p in msgs:
            rd.on_message(topic, p)
        assert len(rd.devices()) <= 4
        for dev in ("d1", "d2"):
            if connected:
                rd._connected.set()
            verdict = rd.verdict(dev)
            assert isinstance(verdict.reason, str) and verdict.reason
            if not verdict.authenticated:
                continue
            view = rd._state.views.get(dev)
            a = view.auth
            assert connected and view.availability == "online" and a["state"] == "authenticated"
            assert daemon_id is None or rd._state.daemon == "online"
            vu, t = float(a["valid_until"]), float(a["time"])
            assert math.isfinite(vu) and math.isfinite(t) and vu - t <= 60.0
            assert now + max(0.0, rd.skew_s) < vu
            assert isinstance(a["model_id"], str) and a["model_id"]
            assert model_id is None or a["model_id"] == model_id
        # the pure function on one random payload as well
        a = self.r._parse_auth(msgs[0][1])
        v = self.r.evaluate(self.r.DeviceView("online", a), now, model_id=model_id, skew_s=skew)
        if v.authenticated:
            assert a is not None and a.get("state") == "authenticated"


class Attempts(Target):
    """The attempt limiter on random decision sequences and (not always monotonic) times.

    Contract: the output state is one of the three; while a device is locked
    no ``authenticated`` is published; ``max_failures`` turns to ``rejected``
    within the window with no success between them lock the device.
    """

    name = "attempts"

    def setup(self, workdir: Path) -> None:
        from ecgstream.core.settings import AttemptsConfig
        from ecgstream.pipeline.decide import AUTHENTICATED, REJECTED, UNKNOWN, AuthDecision
        from ecgstream.trust.attempts import AttemptLimiter

        self.L, self.D, self.C = AttemptLimiter, AuthDecision, AttemptsConfig
        self.states = (AUTHENTICATED, REJECTED, UNKNOWN)
        self.AUTH = AUTHENTICATED

    def make(self, rng: random.Random) -> Any:
        cfg = (rng.choice([True, True, False]), rng.randint(1, 8), rng.choice([1.0, 10.0, 300.0]),
               rng.choice([0.5, 5.0, 300.0]))
        t = 0.0
        steps = []
        for _ in range(rng.randint(1, 80)):
            t += rng.choice([0.0, 0.1, 1.0, 5.0, 100.0, -1.0]) if rng.random() < 0.9 else rng.uniform(-50, 500)
            steps.append((rng.choice(["a", "b"]), rng.choice(self.states), t))
        return cfg, steps

    def run(self, inp: Any) -> None:
        (enabled, maxf, window, lock), steps = inp
        lim = self.L(self.C(enabled=enabled, max_failures=maxf, window_s=window, lockout_s=lock))
        for dev, state, now in steps:
            d = self.D(state, "alice" if state == self.AUTH else None, 0.5, 0.4, 5, "r", True)
            was_locked = lim.locked(dev, now)
            out, ev = lim.apply(dev, d, now)
            assert out.state in self.states
            if not enabled:
                assert out.state == state
                continue
            if lim.locked(dev, now):
                assert out.state != self.AUTH, "authenticated published while locked"
            if out.state == self.AUTH:
                assert state == self.AUTH and not was_locked or ev is not None and not ev.started
            if ev is not None:
                assert isinstance(ev.reason, str) and ev.reason


TARGETS: dict[str, Callable[[], Target]] = {
    t.name: t for t in (SerialLine, SerialStream, MqttPayload, MqttStream, ConfigStruct, ConfigToml,
                        WfdbHeader, SignedPayload, ReaderEval, Attempts)
}


# -- the loop --------------------------------------------------------------------------------------------
def run_batch(args: tuple[str, int, int]) -> dict:
    """Run ``count`` inputs of one target from ``seed``; return the counts."""
    name, seed, count = args
    import logging

    logging.disable(logging.CRITICAL)  # the sources log garbled input; not what is measured here
    limit = 4 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _alarm)
    timeout = TIMEOUT_S.get(name, 1.0)
    workdir = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    res = {"target": name, "inputs": 0, "accepted": 0, "rejected": 0, "crashes": 0, "hangs": 0,
           "tracebacks": [], "hang_inputs": [], "seconds": 0.0}
    try:
        t = TARGETS[name]()
        t.setup(workdir)
        rng = random.Random(seed)
        t0 = time.perf_counter()
        for _ in range(count):
            inp = t.make(rng)
            res["inputs"] += 1
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                t.run(inp)
                signal.setitimer(signal.ITIMER_REAL, 0)
                res["accepted"] += 1
            except Hang:
                res["hangs"] += 1
                if len(res["hang_inputs"]) < MAX_TRACEBACKS:
                    res["hang_inputs"].append(repr(inp)[:2000])
            except t.rejects:
                signal.setitimer(signal.ITIMER_REAL, 0)
                res["rejected"] += 1
            except Exception:  # a crash: any other exception, or a broken contract
                signal.setitimer(signal.ITIMER_REAL, 0)
                res["crashes"] += 1
                if len(res["tracebacks"]) < MAX_TRACEBACKS:
                    res["tracebacks"].append({"input": repr(inp)[:2000], "traceback": traceback.format_exc()})
        res["seconds"] = time.perf_counter() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        shutil.rmtree(workdir, ignore_errors=True)
    return res


MD_BEGIN = "<!-- results: written by bench/fuzz.py --md; do not edit by hand -->"
MD_END = "<!-- end of results -->"


def results_md(out: dict) -> str:
    """The results section of docs/benchmarks/fuzz.md for one run."""
    m = out["machine"]
    lines = [MD_BEGIN, "", "```", out["command"], "```", "",
             f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, Python {m.get('python', '?')}; "
             f"{out['workers']} worker(s), seed {out['seed']}, **{out['wall_s']:.0f} s** of wall time.", "",
             "| target | inputs | accepted | rejected (documented error) | crashes | hangs | µs/input |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, a in out["targets"].items():
        lines.append(f"| {name} | {a['inputs']:,} | {a['accepted']:,} | {a['rejected']:,} | {a['crashes']} | "
                     f"{a['hangs']} | {a['per_input_us']:,.0f} |")
    t = out["totals"]
    lines.append(f"| **total** | **{t['inputs']:,}** | {t['accepted']:,} | {t['rejected']:,} | "
                 f"**{t['crashes']}** | **{t['hangs']}** | |")
    for name, a in out["targets"].items():
        for tb in a["tracebacks"]:
            lines += ["", f"Crash in {name}, input `{tb['input'][:200]}`:", "", "```", tb["traceback"].rstrip(), "```"]
        for h in a["hang_inputs"]:
            lines += ["", f"Hang in {name}, input `{h[:200]}`"]
    return "\n".join([*lines, "", MD_END])


def write_md(path: Path, out: dict) -> None:
    """Replace the results section of ``path`` (or append one) with this run's."""
    text = path.read_text() if path.exists() else "# Fuzzing\n\n"
    sec = results_md(out)
    if MD_BEGIN in text and MD_END in text:
        a, rest = text.split(MD_BEGIN, 1)
        text = a + sec + rest.split(MD_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + sec + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every target's input count")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--targets", default=",".join(COUNTS), help="comma-separated subset")
    ap.add_argument("--seed", type=int, default=20261129)
    ap.add_argument("--out", help="JSON result path")
    ap.add_argument("--md", help="Markdown report whose results section is replaced "
                    "(e.g. docs/benchmarks/fuzz.md)")
    args = ap.parse_args(argv)
    names = [n for n in args.targets.split(",") if n]
    jobs = []
    for k, name in enumerate(names):
        total = max(1, round(COUNTS[name] * args.scale))
        for b, start in enumerate(range(0, total, BATCH)):
            jobs.append((name, args.seed + 1000 * k + b, min(BATCH, total - start)))
    info = machine_info()
    t0 = time.monotonic()
    if args.workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(args.workers, maxtasksperchild=4) as pool:
            results = pool.map(run_batch, jobs, chunksize=1)
    else:
        results = [run_batch(j) for j in jobs]
    wall = time.monotonic() - t0
    per: dict[str, dict] = {}
    for r in results:
        agg = per.setdefault(r["target"], {"inputs": 0, "accepted": 0, "rejected": 0, "crashes": 0,
                                            "hangs": 0, "cpu_seconds": 0.0, "tracebacks": [],
                                            "hang_inputs": []})
        for k in ("inputs", "accepted", "rejected", "crashes", "hangs"):
            agg[k] += r[k]
        agg["cpu_seconds"] += r["seconds"]
        agg["tracebacks"] = (agg["tracebacks"] + r["tracebacks"])[:MAX_TRACEBACKS]
        agg["hang_inputs"] = (agg["hang_inputs"] + r["hang_inputs"])[:MAX_TRACEBACKS]
    for agg in per.values():
        agg["cpu_seconds"] = round(agg["cpu_seconds"], 1)
        agg["per_input_us"] = round(agg["cpu_seconds"] / max(1, agg["inputs"]) * 1e6, 1)
    totals = {k: sum(a[k] for a in per.values()) for k in ("inputs", "accepted", "rejected", "crashes", "hangs")}
    cmd = "python bench/fuzz.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = {"command": cmd, "machine": info, "wall_s": round(wall, 1), "workers": args.workers,
           "seed": args.seed, "totals": totals, "targets": per}
    text = json.dumps(out, indent=1)
    print(json.dumps({"wall_s": out["wall_s"], "totals": totals,
                      "targets": {k: {kk: v[kk] for kk in ("inputs", "rejected", "crashes", "hangs")}
                                  for k, v in per.items()}}, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    if args.md:
        write_md(Path(args.md), out)
    return 1 if totals["crashes"] or totals["hangs"] else 0


if __name__ == "__main__":
    sys.exit(main())
