"""Finding and reading the ECG databases (ECG-ID, MIT-BIH Arrhythmia).

The data directory is taken from, in order: the ``root`` argument, the
``ECGSTREAM_DATA`` environment variable, ``../shared/data`` (relative to the
working directory, then to the repository) when it exists. It may hold the
databases as PhysioNet ships them (``ecg-id-database-1.0.0/``,
``mit-bih-arrhythmia-database-1.0.0/``), or be the folder of one database as
``wfdb.dl_database('ecgiddb', DIR)`` writes it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DataError",
    "EcgIdRecord",
    "SEED_HELDOUT",
    "data_root",
    "download",
    "ecgid_dir",
    "ecgid_records",
    "excerpt_dir",
    "mitdb_dir",
    "mitdb_records",
    "read_record",
]

#: Persons the seed article held out for validation (ECG-ID person numbers).
SEED_HELDOUT = (1, 6, 13, 15, 21, 25, 29, 38, 41, 44, 52, 62, 68, 74, 80, 89)

_REPO = Path(__file__).resolve().parents[1]
_ECGID_NAMES = ("ecg-id-database-1.0.0", "ecgiddb")
_MITDB_NAMES = ("mit-bih-arrhythmia-database-1.0.0", "mitdb")


class DataError(Exception):
    """A database, record or channel could not be found or read."""


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the directory that holds the databases (see module docs)."""
    if root is not None:
        p = Path(root)
        if not p.is_dir():
            raise DataError(f"data directory {p} does not exist")
        return p
    env = os.environ.get("ECGSTREAM_DATA")
    if env:
        p = Path(env)
        if not p.is_dir():
            raise DataError(f"ECGSTREAM_DATA={env} is not a directory")
        return p
    for cand in (Path.cwd() / ".." / "shared" / "data", _REPO / ".." / "shared" / "data"):
        if cand.is_dir():
            return cand.resolve()
    raise DataError(
        "no ECG data directory: set ECGSTREAM_DATA (or pass a directory), or download "
        "with `python -m ecgstream.sources.records download ecgiddb DIR`"
    )


def _db_dir(root: Path, names: tuple[str, ...], marker: str) -> Path:
    if (root / marker).exists():
        return root
    for n in names:
        if (root / n / marker).exists():
            return root / n
    raise DataError(f"no {names[0]} under {root} (looked for {marker})")


def ecgid_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """Directory of the ECG-ID database (holds ``Person_NN/`` folders)."""
    r = data_root(root)
    try:
        return _db_dir(r, _ECGID_NAMES, "Person_01")
    except DataError:
        # A partial copy such as the shipped excerpt.
        for base in (r, *(r / n for n in _ECGID_NAMES)):
            if base.is_dir() and any(base.glob("Person_*/rec_*.hea")):
                return base
        raise


def mitdb_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """Directory of the MIT-BIH Arrhythmia database (holds ``100.hea``...)."""
    return _db_dir(data_root(root), _MITDB_NAMES, "100.hea")


def excerpt_dir(name: str = "ecgid-excerpt") -> Path:
    """The small excerpt shipped in the repository's ``data/`` folder."""
    for base in (_REPO / "data", Path.cwd() / "data"):
        if (base / name).is_dir():
            return base / name
    raise DataError(f"shipped excerpt data/{name} not found (run from a checkout)")


@dataclass(frozen=True)
class EcgIdRecord:
    """One ECG-ID record: ``person`` number, ``record`` number, path, date."""

    person: int
    record: int
    path: Path  # without extension
    date: str  # as in the header, dd.mm.yyyy ("" if missing)

    @property
    def name(self) -> str:
        return f"Person_{self.person:02d}/rec_{self.record}"


def ecgid_records(root: str | os.PathLike[str] | None = None) -> list[EcgIdRecord]:
    """All ECG-ID records under ``root`` (or the excerpt path itself), sorted."""
    base = Path(root) if root is not None and Path(root).is_dir() and any(
        Path(root).glob("Person_*")
    ) else ecgid_dir(root)
    out = []
    for hea in base.glob("Person_*/rec_*.hea"):
        m = re.fullmatch(r"Person_(\d+)", hea.parent.name)
        n = re.fullmatch(r"rec_(\d+)\.hea", hea.name)
        if not (m and n):
            continue
        date = ""
        for line in hea.read_text(errors="replace").splitlines():
            if line.startswith("#") and "ECG date:" in line:
                date = line.split("ECG date:", 1)[1].strip()
        out.append(EcgIdRecord(int(m.group(1)), int(n.group(1)), hea.with_suffix(""), date))
    if not out:
        raise DataError(f"no ECG-ID records (Person_*/rec_*.hea) under {base}")
    return sorted(out, key=lambda r: (r.person, r.record))


def mitdb_records(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Paths (without extension) of the 48 MIT-BIH records, sorted."""
    d = mitdb_dir(root)
    recs = sorted(p.with_suffix("") for p in d.glob("[0-9][0-9][0-9].hea"))
    if not recs:
        raise DataError(f"no MIT-BIH records in {d}")
    return recs


def read_record(
    path: str | os.PathLike[str], channel: int | str = 0
) -> tuple[np.ndarray, float, dict[str, object]]:
    """Read one channel of a WFDB record in physical units (mV).

    Parameters
    ----------
    path : path-like
        Record path without extension (``.../Person_01/rec_1``).
    channel : int or str
        Channel index or signal name (``"ECG I"``); ECG-ID's channel 0 is
        the raw lead I, channel 1 PhysioNet's offline-filtered copy.

    Returns
    -------
    samples : ndarray (float64, mV)
    fs_hz : float
    info : dict
        ``sig_name``, ``units``, ``n_sig``, ``comments``, ``channel``.

    Raises
    ------
    DataError
        No such record, no such channel, or an unreadable header or signal.
    """
    import wfdb  # local: keeps `import ecgstream` light

    p = Path(path)
    p = p.with_suffix("") if p.suffix in {".hea", ".dat"} else p
    if not p.with_suffix(".hea").is_file():
        raise DataError(f"no WFDB record {p} (missing {p.with_suffix('.hea')})")
    try:
        header = wfdb.rdheader(str(p))
    except Exception as exc:  # wfdb raises many kinds on a bad header
        raise DataError(f"cannot read header {p}.hea: {exc}") from None
    names = list(header.sig_name or [])
    if isinstance(channel, str) and not channel.isdigit():
        if channel not in names:
            raise DataError(f"record {p} has no channel {channel!r}; it has {names}")
        ch = names.index(channel)
    else:
        ch = int(channel)
        if not 0 <= ch < header.n_sig:
            raise DataError(f"record {p} has no channel {ch}; it has {header.n_sig} ({names})")
    if not header.fs or header.fs <= 0:
        raise DataError(f"record {p}: header gives no sampling rate")
    try:
        rec = wfdb.rdrecord(str(p), channels=[ch])
    except Exception as exc:
        raise DataError(f"cannot read signal of {p}: {exc}") from None
    x = np.asarray(rec.p_signal[:, 0], dtype=np.float64)
    info = {
        "sig_name": rec.sig_name[0],
        "units": rec.units[0],
        "n_sig": header.n_sig,
        "comments": list(header.comments or []),
        "channel": ch,
    }
    return x, float(rec.fs), info


def download(db: str, dest: str | os.PathLike[str]) -> Path:
    """Download a PhysioNet database with ``wfdb.dl_database`` (needs internet).

    ``db`` is ``ecgiddb`` or ``mitdb``.
    """
    import wfdb

    if db not in {"ecgiddb", "mitdb"}:
        raise DataError(f"unknown database {db!r}; use ecgiddb or mitdb")
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    wfdb.dl_database(db, str(out))
    return out


if __name__ == "__main__":  # pragma: no cover - thin CLI
    import sys

    if len(sys.argv) == 4 and sys.argv[1] == "download":
        print(download(sys.argv[2], sys.argv[3]))
    else:
        print("usage: python -m ecgstream.sources.records download {ecgiddb|mitdb} DIR", file=sys.stderr)
        sys.exit(2)
