"""Thin LiteRT runtime for the int8 beat-embedding model.

Never imports TensorFlow: only ``ai_edge_litert`` and numpy. The model takes
z-scored beat windows (int8) and returns L2-normalised embeddings (int8);
inputs are quantized and outputs dequantized with the scale and zero point
the interpreter reports for its own tensors, and the card's copy of those
parameters is checked against them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from .card import ModelCard, ModelError, sha256_file
from .preprocess import check_windows, normalisation_from_card, normalise_beats

__all__ = ["EmbeddingModel", "LiteRTEmbedder", "default_card_path", "default_model_path"]

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent


def default_model_path() -> Path:
    """Path of the shipped model, ``edge/model.tflite``."""
    return _HERE / "model.tflite"


def default_card_path() -> Path:
    """Path of the shipped model card, ``edge/model.json``."""
    return _HERE / "model.json"


def _quant_params(detail: dict[str, Any]) -> tuple[float, int]:
    qp = detail.get("quantization_parameters") or {}
    scales = np.asarray(qp.get("scales", []))
    zps = np.asarray(qp.get("zero_points", []))
    if scales.size == 1 and zps.size == 1:
        return float(scales[0]), int(zps[0])
    scale, zp = detail.get("quantization", (0.0, 0))
    return float(scale), int(zp)


class LiteRTEmbedder:
    """Run an int8 (or float) embedding ``.tflite`` on LiteRT, without a card.

    Used by :class:`EmbeddingModel` and by training's evaluation of
    cross-validation models, so that every reported figure is measured on the
    runtime that ships.

    Parameters
    ----------
    model_path : path-like
        The ``.tflite`` file.
    eps_mv : float
        Normalisation floor (see :func:`edge.preprocess.normalise_beats`).
    num_threads : int
        Interpreter threads (XNNPACK is applied by LiteRT by default).
    max_batch : int
        Largest batch one ``invoke`` processes; longer inputs are split.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        eps_mv: float = 0.01,
        num_threads: int = 1,
        max_batch: int = 64,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter  # no TensorFlow

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelError(f"model file {self.model_path} not found")
        if int(num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        if int(max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.eps_mv = float(eps_mv)
        self.num_threads = int(num_threads)
        self.max_batch = int(max_batch)
        self._Interpreter = Interpreter
        self._content = self.model_path.read_bytes()
        self._lock = threading.Lock()
        self._interps: OrderedDict[int, Any] = OrderedDict()
        try:
            interp = self._make(1)
        except ModelError:
            raise
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError on bad files
            raise ModelError(f"LiteRT cannot load {self.model_path}: {exc}") from None
        ins, outs = interp.get_input_details(), interp.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ModelError(
                f"{self.model_path}: expected one input and one output, got {len(ins)} and {len(outs)}"
            )
        ishape, oshape = ins[0]["shape"], outs[0]["shape"]
        if len(ishape) != 2 or len(oshape) != 2:
            raise ModelError(f"{self.model_path}: expected (batch, n) tensors, got {ishape} -> {oshape}")
        self.window_len = int(ishape[1])
        self.embedding_dim = int(oshape[1])
        self.input_dtype = np.dtype(ins[0]["dtype"])
        self.output_dtype = np.dtype(outs[0]["dtype"])
        self.input_scale, self.input_zero_point = _quant_params(ins[0])
        self.output_scale, self.output_zero_point = _quant_params(outs[0])
        for what, dt, sc in (("input", self.input_dtype, self.input_scale),
                             ("output", self.output_dtype, self.output_scale)):
            if dt.kind in "iu" and not sc > 0:
                raise ModelError(f"{self.model_path}: integer {what} tensor has no quantization scale")
        self._interps[1] = (interp, int(ins[0]["index"]), int(outs[0]["index"]))

    def _make(self, batch: int) -> Any:
        interp = self._Interpreter(model_content=self._content, num_threads=self.num_threads)
        ind = interp.get_input_details()[0]
        if int(ind["shape"][0]) != batch:
            interp.resize_tensor_input(ind["index"], [batch, int(ind["shape"][1])], strict=False)
        interp.allocate_tensors()
        return interp

    def _interp(self, batch: int) -> tuple[Any, int, int]:
        it = self._interps.get(batch)
        if it is None:
            interp = self._make(batch)
            it = (interp, int(interp.get_input_details()[0]["index"]),
                  int(interp.get_output_details()[0]["index"]))
            self._interps[batch] = it
            while len(self._interps) > 6:  # keep a few batch sizes allocated
                self._interps.popitem(last=False)
        else:
            self._interps.move_to_end(batch)
        return it

    def quantization(self) -> dict[str, Any]:
        """Input and output quantization as read from the interpreter."""
        return {
            "input": {"dtype": self.input_dtype.name, "scale": self.input_scale,
                      "zero_point": self.input_zero_point},
            "output": {"dtype": self.output_dtype.name, "scale": self.output_scale,
                       "zero_point": self.output_zero_point},
        }

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        if self.input_dtype.kind == "f":
            return x.astype(self.input_dtype)
        info = np.iinfo(self.input_dtype)
        q = np.round(x / self.input_scale) + self.input_zero_point
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def _dequantize(self, q: np.ndarray) -> np.ndarray:
        if self.output_dtype.kind == "f":
            return q.astype(np.float32)
        return ((q.astype(np.float32) - self.output_zero_point) * self.output_scale).astype(np.float32)

    def embed_normalised(self, x: np.ndarray) -> np.ndarray:
        """Embed already normalised windows (float, (n, window_len)); unit rows."""
        n = x.shape[0]
        out = np.empty((n, self.embedding_dim), dtype=np.float32)
        with self._lock:
            for a in range(0, n, self.max_batch):
                part = x[a: a + self.max_batch]
                it, ind, outd = self._interp(part.shape[0])
                it.set_tensor(ind, self._quantize(part))
                it.invoke()
                out[a: a + part.shape[0]] = self._dequantize(it.get_tensor(outd))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        if np.any(norms <= 0) or not np.all(np.isfinite(norms)):
            raise ModelError("the model returned a zero or non-finite embedding")
        return (out / norms).astype(np.float32)

    def embed(self, windows: object) -> np.ndarray:
        """Embed raw beat windows: validate, normalise, run, unit-normalise.

        Parameters
        ----------
        windows : array_like, shape (n, window_len)
            ``Beat.window`` rows (mV, conditioned, not normalised).

        Returns
        -------
        ndarray, shape (n, embedding_dim), float32
            Unit-length embeddings.

        Raises
        ------
        ValueError
            Wrong shape or length, non-numeric, NaN or infinite samples.
        """
        w = check_windows(windows, self.window_len)
        if w.shape[0] == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return self.embed_normalised(normalise_beats(w, self.eps_mv))


class EmbeddingModel:
    """The shipped embedding model, checked against its model card.

    Parameters
    ----------
    model_path : path-like, optional
        ``.tflite`` file; default :func:`default_model_path`.
    card_path : path-like, optional
        Card; default: the ``.json`` beside ``model_path``.
    num_threads : int
        LiteRT interpreter threads.

    Attributes
    ----------
    card : ModelCard
    model_id : str
        ``ecgstream-embed-<first 12 hex of the model's sha256>``.
    window_len : int
        Samples per beat window at ``fs_hz``.
    fs_hz : float
        Model input rate in Hz.
    embedding_dim : int

    Raises
    ------
    ModelError
        Missing files, a hash that differs from the card, a card of a newer
        format, shapes or quantization that disagree with the card.

    Examples
    --------
    >>> from edge import EmbeddingModel
    >>> m = EmbeddingModel()
    >>> m.embed(beat_windows).shape  # doctest: +SKIP
    (n, 64)
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        card_path: str | os.PathLike[str] | None = None,
        num_threads: int = 1,
    ) -> None:
        mp = Path(model_path) if model_path is not None else default_model_path()
        cp = Path(card_path) if card_path is not None else mp.with_suffix(".json")
        if not mp.is_file():
            raise ModelError(f"model file {mp} not found")
        card = ModelCard.load(cp)
        digest = sha256_file(mp)
        if digest != card.sha256:
            raise ModelError(
                f"model {mp} has sha256 {digest[:12]}..., its card {cp} says {card.sha256[:12]}...: "
                "the model and card do not belong together (reinstall both from one training run)"
            )
        expected_id = f"ecgstream-embed-{digest[:12]}"
        if card.model_id != expected_id:
            raise ModelError(f"card {cp} model_id {card.model_id!r} != {expected_id!r}")
        try:
            norm = normalisation_from_card(card.normalisation)
        except ValueError as exc:
            raise ModelError(f"card {cp}: {exc}") from None
        self._rt = LiteRTEmbedder(mp, eps_mv=norm["eps_mv"], num_threads=num_threads)
        rt = self._rt
        if rt.window_len != card.window_len or rt.embedding_dim != card.embedding_dim:
            raise ModelError(
                f"model {mp} maps {rt.window_len} samples to {rt.embedding_dim} values, its card says "
                f"{card.window_len} -> {card.embedding_dim}"
            )
        self._check_quantization(card, cp)
        self._check_dsp(card, cp)
        self.score_norm, self.cohort = self._load_cohort(card, cp)
        self.card = card
        self.model_path = mp
        self.card_path = cp
        self.model_id = card.model_id
        self.window_len = rt.window_len
        self.fs_hz = card.fs_hz
        self.embedding_dim = rt.embedding_dim
        self.num_threads = rt.num_threads
        log.debug("loaded %s (%s, %d threads)", self.model_id, mp, rt.num_threads)

    @staticmethod
    def _load_cohort(card: ModelCard, cp: Path) -> tuple[str, Any]:
        """The card's score normalisation and its impostor cohort (checked), or ("none", None)."""
        from ecgstream.pipeline.scores import Cohort, CohortError

        score = card.score
        if score["norm"] == "none":
            return "none", None
        co = score["cohort"]
        path = cp.parent / co["file"]
        if not path.is_file():
            raise ModelError(f"cohort file {path} named by card {cp} not found (it ships beside the model)")
        digest = sha256_file(path)
        if digest != str(co["sha256"]).lower():
            raise ModelError(f"cohort {path} has sha256 {digest[:12]}..., card {cp} says "
                             f"{str(co['sha256'])[:12]}...: reinstall model, card and cohort from one run")
        try:
            cohort = Cohort.load(path, model_id=card.model_id, cohort_id=co["id"])
        except CohortError as exc:
            raise ModelError(str(exc)) from None
        if cohort.dim != card.embedding_dim:
            raise ModelError(f"cohort {path} has dimension {cohort.dim}, the model {card.embedding_dim}")
        return str(score["norm"]), cohort

    @property
    def cohort_id(self) -> str | None:
        """Id of the shipped impostor cohort (None when scores are not normalised)."""
        return self.cohort.id if self.cohort is not None else None

    def scorer(self, centroids: Any) -> Any:
        """An :class:`ecgstream.pipeline.scores.Scorer` for per-subject centroids, normalised as the card says."""
        from ecgstream.pipeline.scores import Scorer

        return Scorer(centroids, norm=self.score_norm, cohort=self.cohort)

    def _check_quantization(self, card: ModelCard, cp: Path) -> None:
        got = self._rt.quantization()
        want = card.quantization
        for side in ("input", "output"):
            w = want.get(side)
            if not isinstance(w, dict):
                raise ModelError(f"card {cp} lacks embedding.quantization.{side}")
            g = got[side]
            same = (
                str(w.get("dtype")) == g["dtype"]
                and int(w.get("zero_point", -999)) == g["zero_point"]
                and np.isclose(float(w.get("scale", -1.0)), g["scale"], rtol=1e-6, atol=0.0)
            )
            if not same:
                raise ModelError(f"card {cp} {side} quantization {w} differs from the model's {g}")

    def _check_dsp(self, card: ModelCard, cp: Path) -> None:
        cfg = self.dsp_config_of(card, cp)
        if cfg.window_len != card.window_len or abs(cfg.fs_hz - card.fs_hz) > 1e-9:
            raise ModelError(
                f"card {cp}: dsp block gives {cfg.window_len} samples at {cfg.fs_hz} Hz, "
                f"input block {card.window_len} at {card.fs_hz} Hz"
            )

    @staticmethod
    def dsp_config_of(card: ModelCard, cp: Path | None = None) -> Any:
        from ecgstream.dsp import DspConfig

        try:
            return DspConfig(**card.dsp)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"card {cp or ''}: its dsp block is not a valid DspConfig: {exc}") from None

    def dsp_config(self) -> Any:
        """The :class:`ecgstream.dsp.DspConfig` the model was trained with."""
        return self.dsp_config_of(self.card, self.card_path)

    def embed(self, windows: object) -> np.ndarray:
        """Embed raw beat windows (see :meth:`LiteRTEmbedder.embed`).

        Parameters
        ----------
        windows : array_like, shape (n, window_len)
            ``Beat.window`` rows: mV, conditioned by the DSP, not normalised
            (the model's normalisation is applied here).

        Returns
        -------
        ndarray, shape (n, embedding_dim), float32 unit rows.

        Raises
        ------
        ValueError
            Wrong length or shape, non-numeric, NaN or infinite samples.
        """
        return self._rt.embed(windows)

    def __repr__(self) -> str:
        return f"EmbeddingModel({self.model_id!r}, {self.window_len} samples @ {self.fs_hz:g} Hz -> {self.embedding_dim})"
