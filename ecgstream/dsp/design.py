"""Filter designs, from a shipped table when possible, else from SciPy.

Why a table: ``import scipy.signal`` costs about 85 MB of resident memory and
0.5-2 s of start-up on a gateway (SciPy 1.17 pulls in ``scipy.stats`` and
``scipy.interpolate`` with it), while the daemon needs only a handful of
fixed designs (the 250 Hz band-passes and the resampler's low-pass for the
usual input rates) and one C loop (``sosfilt``). The designs are computed
with SciPy by ``tools/gen_dsp_designs.py`` and stored in ``_designs.json``
(float64 values round-trip exactly through JSON), so the daemon runs on the
very same coefficients training used, without importing ``scipy.signal``.
A design not in the table (another rate, a non-default band) is computed
with SciPy at run time, exactly as the generator does. A test checks that
the table still equals what SciPy computes.

The ``sosfilt`` C loop is SciPy's own (``scipy/signal/_sosfilt``), loaded
from its extension file without running ``scipy/signal/__init__``; if that
is not possible the public ``scipy.signal.sosfilt`` is used.
"""

from __future__ import annotations

import glob
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["butter_sos", "lowpass_fir", "notch_sos", "sos_group_delay", "sos_zi_unit", "sosfilt_kernel"]

_TABLE_PATH = Path(__file__).with_name("_designs.json")


_used: dict[str, Any] = {}  # the entries this process looked up


def _table_get(key: str) -> Any:
    # The parsed table is ~5 MB of Python floats: keep only what is used.
    if key not in _used:
        try:
            _used[key] = json.loads(_TABLE_PATH.read_text()).get(key)
        except (OSError, ValueError):
            _used[key] = None
    return _used[key]


#: Designs computed with SciPy in this process (what the generator stores).
computed: dict[str, Any] = {}
#: Set by the generator and the table test: ignore the table, compute all.
use_table = True


def _lookup(key: str, compute: Callable[[], Any]) -> np.ndarray:
    value = _table_get(key) if use_table else None
    if value is None:
        value = compute()
        computed[key] = value
    return np.array(value, dtype=np.float64)


def _signal() -> Any:
    from scipy import signal  # only for designs missing from the table

    return signal


def butter_sos(order: int, wn: float | tuple[float, float], btype: str, fs: float) -> np.ndarray:
    """``scipy.signal.butter(order, wn, btype, fs=fs, output="sos")``."""
    wn_key = tuple(float(w) for w in wn) if isinstance(wn, tuple | list) else float(wn)
    key = f"butter|{order}|{wn_key!r}|{btype}|{float(fs)!r}"
    return _lookup(key, lambda: _signal().butter(order, wn, btype=btype, fs=fs, output="sos").tolist())


def notch_sos(f0: float, q: float, fs: float) -> np.ndarray:
    """``tf2sos(*iirnotch(f0, q, fs=fs))``."""
    key = f"notch|{float(f0)!r}|{float(q)!r}|{float(fs)!r}"

    def compute() -> Any:
        s = _signal()
        b, a = s.iirnotch(f0, q, fs=fs)
        return s.tf2sos(b, a).tolist()

    return _lookup(key, compute)


def _sos_key(sos: np.ndarray) -> str:
    return "|".join(repr(float(v)) for v in np.asarray(sos, dtype=np.float64).ravel())


def sos_zi_unit(sos: np.ndarray) -> np.ndarray:
    """``scipy.signal.sosfilt_zi(sos)``: steady state for a unit step."""
    key = "zi|" + _sos_key(sos)
    return _lookup(key, lambda: _signal().sosfilt_zi(sos).tolist())


def sos_group_delay(sos: np.ndarray, f_hz: float, fs: float) -> float:
    """Group delay in samples of a cascade of sections at ``f_hz``."""
    key = f"gd|{float(f_hz)!r}|{float(fs)!r}|" + _sos_key(sos)

    def compute() -> Any:
        s = _signal()
        b, a = s.sos2tf(sos)
        return [float(s.group_delay((b, a), w=[f_hz], fs=fs)[1][0])]

    return float(_lookup(key, compute)[0])


def lowpass_fir(n_taps: int, cutoff: float, beta: float) -> np.ndarray:
    """``scipy.signal.firwin(n_taps, cutoff, window=("kaiser", beta))``."""
    key = f"firwin|{n_taps}|{float(cutoff)!r}|{float(beta)!r}"
    return _lookup(key, lambda: _signal().firwin(n_taps, cutoff, window=("kaiser", beta)).tolist())


@lru_cache(maxsize=1)
def sosfilt_kernel() -> Callable[..., None] | None:
    """SciPy's ``_sosfilt(sos, x, zi)`` C loop (in place), or None."""
    name = "scipy.signal._sosfilt"
    mod = sys.modules.get(name)
    if mod is None:
        try:
            spec = importlib.util.find_spec("scipy")  # imports only scipy/__init__
            base = os.path.join(os.path.dirname(spec.origin or ""), "signal")  # type: ignore[union-attr]
            found = sorted(glob.glob(os.path.join(base, "_sosfilt.*")))
            found = [f for f in found if f.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))]
            loader = importlib.machinery.ExtensionFileLoader(name, found[0])
            spec2 = importlib.util.spec_from_file_location(name, found[0], loader=loader)
            mod = importlib.util.module_from_spec(spec2)  # type: ignore[arg-type]
            loader.exec_module(mod)
            sys.modules[name] = mod
        except Exception:  # any layout change: the public import below
            try:
                from scipy.signal import _sosfilt as mod  # type: ignore[no-redef]
            except ImportError:  # pragma: no cover
                return None
    return getattr(mod, "_sosfilt", None)
