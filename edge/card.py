"""The model card (``model.json``) that ships beside the ``.tflite`` model.

The card says what the model expects (rate, window, normalisation), what it
returns (embedding size, quantization), where to decide (thresholds
calibrated on persons unseen in training, on LiteRT with XNNPACK), how it was
made (data, split, training command and commit) and how well it does
(metrics). :class:`ModelCard` validates the keys the runtime and the daemon
rely on and refuses cards of a newer format.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["CARD_FORMAT_VERSION", "ModelCard", "ModelError", "sha256_file"]

#: Newest card format this runtime understands.
#: 2 added the optional ``score`` block (score normalisation and the impostor
#: cohort file); a version-1 card means raw cosine scores and no cohort.
CARD_FORMAT_VERSION = 2


class ModelError(Exception):
    """The model or its card is missing, inconsistent or not supported."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _need(d: Mapping[str, Any], dotted: str, where: str) -> Any:
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            raise ModelError(f"model card {where} lacks '{dotted}'")
        cur = cur[part]
    return cur


class ModelCard(Mapping[str, Any]):
    """A validated model card; reads like the JSON dict it was loaded from.

    Parameters
    ----------
    data : mapping
        The card's JSON object.
    path : path-like, optional
        Where it was read from (for messages).

    Raises
    ------
    ModelError
        Not a card, a newer ``format_version``, or required keys missing.
    """

    REQUIRED = (
        "format_version",
        "model_id",
        "model_file",
        "sha256",
        "dsp",
        "input.fs_hz",
        "input.window_len",
        "input.window_before_s",
        "input.window_after_s",
        "input.normalisation",
        "embedding.dim",
        "embedding.quantization",
        "thresholds.single.eer",
        "thresholds.fused.beats",
        "thresholds.fused.eer",
    )

    def __init__(self, data: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> None:
        where = str(path) if path is not None else "(in memory)"
        if not isinstance(data, Mapping):
            raise ModelError(f"model card {where} is not a JSON object")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ModelError(f"model card {where} has no integer 'format_version'")
        if version > CARD_FORMAT_VERSION:
            raise ModelError(
                f"model card {where} has format_version {version}; this runtime reads "
                f"up to {CARD_FORMAT_VERSION}: upgrade ecgstream to use this model"
            )
        if version < 1:
            raise ModelError(f"model card {where} has invalid format_version {version}")
        for key in self.REQUIRED:
            _need(data, key, where)
        # "far_0.001" contains a dot, so it is checked here rather than in REQUIRED.
        for block in ("single", "fused"):
            if not isinstance(data["thresholds"][block], Mapping) or "far_0.001" not in data["thresholds"][block]:
                raise ModelError(f"model card {where} lacks 'thresholds.{block}.far_0.001'")
        score = data.get("score")
        if score is not None:
            if not isinstance(score, Mapping) or score.get("norm") not in ("none", "znorm"):
                raise ModelError(f"model card {where}: 'score.norm' must be 'none' or 'znorm'")
            if score["norm"] != "none":
                co = score.get("cohort")
                if not isinstance(co, Mapping) or not all(isinstance(co.get(k), str) for k in ("file", "sha256", "id")):
                    raise ModelError(f"model card {where}: score normalisation {score['norm']!r} needs "
                                     "'score.cohort' with 'file', 'sha256' and 'id'")
        self._data = dict(data)
        self.path = Path(path) if path is not None else None

    # -- Mapping -------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    # -- loading ---------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelCard:
        """Read and validate a card file.

        Raises
        ------
        ModelError
            Missing file, invalid JSON, or an invalid card.
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ModelError(f"model card {p} not found (it ships beside the .tflite)") from None
        except OSError as exc:
            raise ModelError(f"cannot read model card {p}: {exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"model card {p} is not valid JSON: {exc}") from None
        return cls(data, p)

    # -- typed views -------------------------------------------------------------
    @property
    def format_version(self) -> int:
        return int(self._data["format_version"])

    @property
    def model_id(self) -> str:
        return str(self._data["model_id"])

    @property
    def sha256(self) -> str:
        return str(self._data["sha256"]).lower()

    @property
    def fs_hz(self) -> float:
        return float(self._data["input"]["fs_hz"])

    @property
    def window_len(self) -> int:
        return int(self._data["input"]["window_len"])

    @property
    def embedding_dim(self) -> int:
        return int(self._data["embedding"]["dim"])

    @property
    def normalisation(self) -> dict[str, Any]:
        return dict(self._data["input"]["normalisation"])

    @property
    def quantization(self) -> dict[str, Any]:
        return dict(self._data["embedding"]["quantization"])

    @property
    def thresholds(self) -> dict[str, Any]:
        return dict(self._data["thresholds"])

    @property
    def score(self) -> dict[str, Any]:
        """The score block: ``norm`` (``none``/``znorm``) and, if normalised, ``cohort``."""
        return dict(self._data.get("score") or {"norm": "none"})

    @property
    def dsp(self) -> dict[str, Any]:
        return dict(self._data["dsp"])

    def to_json(self) -> str:
        """The card as pretty JSON text."""
        return json.dumps(self._data, indent=2, sort_keys=False) + "\n"
