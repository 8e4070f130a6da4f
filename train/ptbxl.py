"""PTB-XL beats: many identities, several ECGs per patient, eight leads of each beat.

``../shared/data/ptb-xl-1.0.3-records100-subset`` holds 21,799 ten-second
ECGs of 18,869 patients at 100 Hz (leads I and II for all, V1..V6 for the
5,041 ECGs of the 2,111 patients with two or more; ``ptbxl_identity.csv``
gives the patient of every ECG).

Beats are found on **lead I** by ``ecgstream.dsp``'s own streaming pipeline
(the daemon's DSP, resampling 100 -> 250 Hz), exactly as the daemon would cut
a lead-I wearable; only good beats are kept. Each kept beat is then cut from
every other lead of the record **at the same R position** from that lead's
conditioned signal (a fresh :class:`~ecgstream.dsp.conditioner.Conditioner`
over the whole record, which is what the pipeline's own conditioner does with
a record pushed as one chunk). The conditioner is linear (resampler,
band-pass, and a start state proportional to the first sample), so
``a * window(I) + b * window(II)`` *is* the window the daemon would cut from
the frontal lead ``a * I + b * II``: lead mixing in training is exact, not an
approximation (tested in tests/test_train_ptbxl.py).

The cut set is cached under ``runs/cache`` keyed by the DSP settings and
code, like :mod:`train.data`; cutting all 21,799 ECGs takes a few minutes on
two cores.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ecgstream.core.types import SampleChunk
from ecgstream.dsp import DspConfig
from ecgstream.dsp.beats import BeatPipeline
from ecgstream.dsp.conditioner import Conditioner
from ecgstream.sources.records import DataError, data_root

from .data import dsp_source_digest

log = logging.getLogger(__name__)

PTBXL_DIRNAME = "ptb-xl-1.0.3-records100-subset"
#: Lead order of :attr:`PtbxlBeats.leads` (a chest lead missing in a record is NaN).
LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
_CACHE_VERSION = 1


def ptbxl_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The PTB-XL subset folder (raises :class:`DataError` if it is not there)."""
    d = data_root(root) / PTBXL_DIRNAME
    if not (d / "ptbxl_identity.csv").is_file():
        raise DataError(f"no PTB-XL subset at {d} (expected {PTBXL_DIRNAME}/ptbxl_identity.csv; "
                        "see ../shared/data/README.md)")
    return d


@dataclass(frozen=True)
class PtbxlRecord:
    ecg_id: int
    patient: int
    age: int
    sex: int
    date: str
    path: Path


def ptbxl_records(root: str | os.PathLike[str] | None = None) -> list[PtbxlRecord]:
    """Every ECG of the subset with its patient, in ``ecg_id`` order."""
    d = ptbxl_dir(root)
    out = []
    with open(d / "ptbxl_identity.csv", newline="") as f:
        for row in csv.DictReader(f):
            out.append(PtbxlRecord(int(row["ecg_id"]), int(row["patient_id"]),
                                   int(float(row["age"] or -1)), int(float(row["sex"] or -1)),
                                   row["recording_date"], d / row["record"]))
    return sorted(out, key=lambda r: r.ecg_id)


class _RecordingPipeline(BeatPipeline):
    """A :class:`BeatPipeline` that also remembers each beat's R index at the processing rate."""

    def __init__(self, *a, **kw) -> None:
        self.r_proc: list[int] = []
        super().__init__(*a, **kw)

    def _make_beat(self, r: int, end: int, n_total: int):  # noqa: D102
        self.r_proc.append(int(r))
        return super()._make_beat(r, end, n_total)


def read_leads(path: Path) -> tuple[np.ndarray, float, list[str]]:
    """All signals of one PTB-XL record in mV: (n_sig, n), fs, names."""
    import wfdb

    rec = wfdb.rdrecord(str(path))
    return rec.p_signal.T.astype(np.float64), float(rec.fs), list(rec.sig_name)


def cut_record(path: Path, cfg: DspConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Good beats of one record: windows (n, 8, L) float32 (NaN rows for absent leads), r_sample, quality."""
    x, fs, names = read_leads(path)
    i0 = names.index("I")
    pipe = _RecordingPipeline("ptbxl", fs, cfg)
    sig = np.ascontiguousarray(x[i0])
    if not np.isfinite(sig).all():
        sig = np.where(np.isfinite(sig), sig, np.nan)
    beats = pipe.push(SampleChunk("ptbxl", fs, 0, sig))
    beats.extend(pipe.flush())
    keep = [(b, r) for b, r in zip(beats, pipe.r_proc, strict=True) if b.good]
    L = cfg.window_len
    out = np.full((len(keep), len(LEADS), L), np.nan, np.float32)
    if not keep:
        return out, np.zeros(0, np.int64), np.zeros(0, np.float32)
    for j, lead in enumerate(LEADS):
        if lead == "I":
            out[:, j] = np.stack([b.window for b, _ in keep])
            continue
        if lead not in names or not np.isfinite(x[names.index(lead)]).all():
            continue
        y = Conditioner(fs, cfg).push(np.ascontiguousarray(x[names.index(lead)]))
        for i, (_, r) in enumerate(keep):
            lo = r - cfg.n_before
            if lo >= 0 and lo + L <= y.size:
                out[i, j] = y[lo:lo + L]
    return out, np.array([b.r_sample for b, _ in keep], np.int64), np.array([b.quality for b, _ in keep], np.float32)


@dataclass
class PtbxlBeats:
    """Good lead-I beats of PTB-XL with the same beats' other leads.

    Attributes
    ----------
    leads : ndarray (n, 8, window_len) float32
        Windows of I, II, V1..V6 (:data:`LEADS`) at each beat's R; a chest
        lead the record does not keep is NaN.
    patient, ecg_id, r_sample : ndarray (n,) int
    visit : ndarray (n,) int
        Rank of the ECG among its patient's ECGs in ``ecg_id`` order (0 = first).
    n_ecgs : ndarray (n,) int
        How many ECGs the patient has in the subset.
    """

    leads: np.ndarray
    patient: np.ndarray
    ecg_id: np.ndarray
    r_sample: np.ndarray
    visit: np.ndarray
    n_ecgs: np.ndarray

    def __len__(self) -> int:
        return int(self.patient.size)

    def subset(self, mask: np.ndarray) -> PtbxlBeats:
        return PtbxlBeats(*(getattr(self, f)[mask] for f in
                            ("leads", "patient", "ecg_id", "r_sample", "visit", "n_ecgs")))

    @property
    def has_chest(self) -> np.ndarray:
        return np.isfinite(self.leads[:, 2, 0])


def _cut_many(args: tuple[list[str], dict]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    paths, cfgd = args
    cfg = DspConfig(**cfgd)
    return [cut_record(Path(p), cfg) for p in paths]


def build_ptbxl(cfg: DspConfig, data: str | None = None, cache_dir: str | Path | None = None,
                limit: int | None = None, workers: int = 2) -> PtbxlBeats:
    """Cut (or load from the cache) the PTB-XL beat set.

    ``limit``: only the first ``limit`` ECGs in ``ecg_id`` order (tests).
    """
    recs = ptbxl_records(data)
    if limit is not None:
        recs = recs[:limit]
    key = json.dumps({"v": _CACHE_VERSION, "dsp": asdict(cfg), "code": dsp_source_digest(),
                      "n": len(recs), "last": recs[-1].ecg_id if recs else 0}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"ptbxl-{digest}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        z = np.load(cache)
        log.info("PTB-XL beats from cache %s", cache)
        return PtbxlBeats(z["leads"], z["patient"], z["ecg_id"], z["r_sample"], z["visit"], z["n_ecgs"])
    chunks = [[str(r.path) for r in recs[i:i + 200]] for i in range(0, len(recs), 200)]
    cfgd = asdict(cfg)
    res: list = []
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(workers) as ex:
            for i, part in enumerate(ex.map(_cut_many, [(c, cfgd) for c in chunks])):
                res.extend(part)
                if i % 10 == 0:
                    log.info("PTB-XL: %d/%d ECGs cut", len(res), len(recs))
    else:
        res = _cut_many(([str(r.path) for r in recs], cfgd))
    per_patient: dict[int, list[int]] = {}
    for r in recs:
        per_patient.setdefault(r.patient, []).append(r.ecg_id)
    visit_of = {e: i for ids in per_patient.values() for i, e in enumerate(sorted(ids))}
    L = [w for w, _, _ in res]
    n = [len(w) for w in L]
    bs = PtbxlBeats(
        leads=np.concatenate(L).astype(np.float32),
        patient=np.repeat([r.patient for r in recs], n).astype(np.int64),
        ecg_id=np.repeat([r.ecg_id for r in recs], n).astype(np.int64),
        r_sample=np.concatenate([rs for _, rs, _ in res]).astype(np.int64),
        visit=np.repeat([visit_of[r.ecg_id] for r in recs], n).astype(np.int64),
        n_ecgs=np.repeat([len(per_patient[r.patient]) for r in recs], n).astype(np.int64),
    )
    log.info("PTB-XL: %d good beats from %d ECGs (%d with none) of %d patients", len(bs), len(recs),
             sum(1 for k in n if k == 0), len(per_patient))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, leads=bs.leads, patient=bs.patient, ecg_id=bs.ecg_id, r_sample=bs.r_sample,
                 visit=bs.visit, n_ecgs=bs.n_ecgs)
        tmp.replace(cache)
    return bs


def patient_folds(bs: PtbxlBeats, folds: int = 5, seed: int = 1) -> list[np.ndarray]:
    """Patient-disjoint folds of the multi-ECG patients (the cross-ECG protocol's persons).

    Single-ECG patients are never held out: they have no second ECG to probe
    with, so they only ever train.
    """
    multi = np.unique(bs.patient[bs.n_ecgs >= 2])
    rng = np.random.default_rng(seed)
    return [np.sort(f) for f in np.array_split(rng.permutation(multi), folds)]


def frontal_lead(leads: np.ndarray, angle_deg: np.ndarray | float) -> np.ndarray:
    """The frontal lead at ``angle_deg`` from lead I (Einthoven: lead II at +60 deg).

    ``leads[..., 0, :]`` is I, ``leads[..., 1, :]`` II. With the heart vector
    (Ex, Ey) in the frontal plane, I = Ex and II = Ex/2 + Ey*sqrt(3)/2, so the
    lead at angle t is cos(t)*I + sin(t)*(2*II - I)/sqrt(3). Angle 0 is I,
    60 is II, -30 is aVL, 90 is aVF.
    """
    t = np.deg2rad(np.asarray(angle_deg, dtype=np.float64))
    c, s = np.cos(t), np.sin(t)
    while c.ndim < leads.ndim - 1:
        c, s = c[..., None], s[..., None]
    i, ii = leads[..., 0, :], leads[..., 1, :]
    return (c * i + s * (2 * ii - i) / np.sqrt(3.0)).astype(np.float32)
