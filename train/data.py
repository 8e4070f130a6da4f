"""The beat set: every good beat of ECG-ID (and optionally MIT-BIH).

Beats are cut by ``ecgstream.dsp.extract_beats``, the daemon's own streaming
pipeline, from the raw channel the daemon sees (ECG-ID channel 0, raw lead I;
MIT-BIH channel 0). Only good beats (``Beat.good``) are kept, as only those
are ever matched. The set is cached in the run folder's parent, keyed by the
DSP settings and the source records.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ecgstream.dsp import DspConfig, extract_beats
from ecgstream.sources.records import ecgid_records, mitdb_records, read_record

log = logging.getLogger(__name__)

#: MIT-BIH persons get ids from here on (ECG-ID persons are 1..90).
MITDB_PERSON_BASE = 1000
#: MIT-BIH records 201 and 202 are the same person.
_MITDB_SAME = {202: 201}
_CACHE_VERSION = 2


def dsp_source_digest() -> str:
    """sha256 over the source files of ``ecgstream.dsp`` (beats change when they do)."""
    import ecgstream.dsp as dsp_pkg

    h = hashlib.sha256()
    for f in sorted(Path(dsp_pkg.__file__).parent.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def dsp_fingerprint(cfg: DspConfig, root: str | Path | None = None) -> str:
    """sha256 of what ``ecgstream.dsp`` makes of the committed ECG-ID excerpt.

    Covers every beat of every excerpt record: R position, quality flags and
    the window rounded to 0.001 mV. It changes when the DSP cuts different
    beats (a new filter, detector or window), not when its code is merely
    refactored, so the model card can say whether the daemon's DSP still
    produces the beats the model was trained on.
    """
    from ecgstream.sources.records import excerpt_dir

    h = hashlib.sha256()
    for r in ecgid_records(root if root is not None else excerpt_dir()):
        x, fs, _ = read_record(r.path, 0)
        h.update(r.name.encode())
        for b in extract_beats(x, fs, cfg):
            h.update(f"{b.r_sample}:{','.join(sorted(b.flags))};".encode())
            h.update(np.round(b.window.astype(np.float64), 3).astype("<f8").tobytes())
    return h.hexdigest()


@dataclass
class BeatSet:
    """Beat windows with their labels (all arrays have one row per beat).

    Attributes
    ----------
    windows : ndarray (n, window_len) float32
        ``Beat.window``: mV, conditioned, not normalised.
    person : ndarray (n,) int
        ECG-ID person number, or ``MITDB_PERSON_BASE + record`` for MIT-BIH.
    record : ndarray (n,) int
        ECG-ID record number (MIT-BIH: the record number).
    day : ndarray (n,) int
        Index of the record's date among the person's dates (0 = first day).
    r_sample : ndarray (n,) int
        R position in the source's samples (beats keep stream order).
    """

    windows: np.ndarray
    person: np.ndarray
    record: np.ndarray
    day: np.ndarray
    r_sample: np.ndarray

    def __len__(self) -> int:
        return int(self.person.size)

    def subset(self, mask: np.ndarray) -> BeatSet:
        return BeatSet(*(getattr(self, f)[mask] for f in ("windows", "person", "record", "day", "r_sample")))

    @property
    def is_ecgid(self) -> np.ndarray:
        return self.person < MITDB_PERSON_BASE


def _date_key(d: str) -> tuple[int, int, int]:
    try:
        dd, mm, yy = (int(x) for x in d.split("."))
        return (yy, mm, dd)
    except ValueError:
        return (9999, 99, 99)


def _cut(path: Path, cfg: DspConfig) -> tuple[np.ndarray, np.ndarray]:
    x, fs, _ = read_record(path, 0)
    beats = [b for b in extract_beats(x, fs, cfg) if b.good]
    if not beats:
        return np.zeros((0, cfg.window_len), np.float32), np.zeros(0, np.int64)
    return np.stack([b.window for b in beats]).astype(np.float32), np.array([b.r_sample for b in beats])


def build_beatset(
    cfg: DspConfig,
    mitdb: bool = True,
    data_root: str | None = None,
    cache_dir: str | Path | None = None,
    ecgid_root: str | Path | None = None,
) -> BeatSet:
    """Cut the beat set (or load it from the cache).

    Parameters
    ----------
    cfg : DspConfig
        The daemon's DSP settings (stored in the model card).
    mitdb : bool
        Also cut all 48 MIT-BIH records (channel 0) as extra identities.
    data_root : str, optional
        Data directory (see :func:`ecgstream.sources.records.data_root`).
    cache_dir : path-like, optional
        Where to keep the cut set between runs (None: no cache).
    ecgid_root : path-like, optional
        An ECG-ID folder to use instead (e.g. the shipped excerpt, for tests).
    """
    recs = ecgid_records(ecgid_root if ecgid_root is not None else data_root)
    mrecs = mitdb_records(data_root) if mitdb else []
    key = json.dumps(
        {"v": _CACHE_VERSION, "dsp": asdict(cfg), "code": dsp_source_digest(), "ecgid": [str(r.path) for r in recs],
         "mitdb": [str(p) for p in mrecs]}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"beats-{digest}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        z = np.load(cache)
        log.info("beat set from cache %s", cache)
        return BeatSet(z["windows"], z["person"], z["record"], z["day"], z["r_sample"])
    ws, ps, rs, ds, rss = [], [], [], [], []
    dates: dict[int, list[tuple[int, int, int]]] = {}
    for r in recs:
        dates.setdefault(r.person, []).append(_date_key(r.date))
    for r in recs:
        w, rsamp = _cut(r.path, cfg)
        days = sorted(set(dates[r.person]))
        ws.append(w)
        ps.append(np.full(len(w), r.person))
        rs.append(np.full(len(w), r.record))
        ds.append(np.full(len(w), days.index(_date_key(r.date))))
        rss.append(rsamp)
    log.info("ECG-ID: %d good beats from %d records", sum(len(w) for w in ws), len(recs))
    for i, p in enumerate(mrecs):
        num = int(p.name)
        w, rsamp = _cut(p, cfg)
        ws.append(w)
        ps.append(np.full(len(w), MITDB_PERSON_BASE + _MITDB_SAME.get(num, num)))
        rs.append(np.full(len(w), num))
        ds.append(np.zeros(len(w), np.int64))
        rss.append(rsamp)
        log.info("MIT-BIH %s: %d good beats (%d/%d)", p.name, len(w), i + 1, len(mrecs))
    bs = BeatSet(
        np.concatenate(ws).astype(np.float32),
        np.concatenate(ps).astype(np.int64),
        np.concatenate(rs).astype(np.int64),
        np.concatenate(ds).astype(np.int64),
        np.concatenate(rss).astype(np.int64),
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, windows=bs.windows, person=bs.person, record=bs.record,
                            day=bs.day, r_sample=bs.r_sample)
        tmp.replace(cache)
    return bs


def person_dates(data_root: str | None = None) -> dict[int, list[str]]:
    """Distinct recording dates of each ECG-ID person, in time order."""
    out: dict[int, set[str]] = {}
    for r in ecgid_records(data_root):
        out.setdefault(r.person, set()).add(r.date)
    return {p: sorted(d, key=_date_key) for p, d in out.items()}
