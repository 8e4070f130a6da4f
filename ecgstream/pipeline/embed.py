"""The embedder stage: beats in, unit embeddings out (one batch a call).

A thin stage around the int8 LiteRT model (``edge.EmbeddingModel``): the
model normalises each window and maps it to a unit-length embedding. It is
stateless, so beats of many devices are embedded together (the daemon's one
call per round) and the offline API embeds a whole record the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.types import Beat

__all__ = ["Embedder"]


class Embedder:
    """Beats -> unit embeddings, through one embedding model.

    Parameters
    ----------
    model : edge.EmbeddingModel
        Anything with ``embed(windows) -> (n, dim)``, ``model_id``, ``card``
        and ``dsp_config()``.

    Examples
    --------
    >>> from edge import EmbeddingModel  # doctest: +SKIP
    >>> Embedder(EmbeddingModel()).push(beats).shape  # doctest: +SKIP
    (12, 32)
    """

    def __init__(self, model: Any) -> None:
        self.model = model

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def push(self, beats: Sequence[Beat]) -> np.ndarray | None:
        """Embeddings ``(n, dim)`` of ``beats`` in order; None for no beats."""
        if not beats:
            return None
        return self.push_windows(np.stack([b.window for b in beats]))

    def push_windows(self, windows: np.ndarray) -> np.ndarray:
        """Embeddings of raw windows ``(n, window_len)`` (mV; the model normalises)."""
        return self.model.embed(windows)

    def reset(self, reason: str = "") -> None:
        """Nothing to forget: the embedder holds no stream state."""
