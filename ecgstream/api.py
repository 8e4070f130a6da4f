"""Public Python API: beats, embeddings, scores, and verification of two recordings.

Everything here runs locally on the shipped int8 model (LiteRT, no
TensorFlow) through the daemon's own stages (:class:`~ecgstream.pipeline.Embedder`,
:class:`~ecgstream.pipeline.Matcher`), so every score is the daemon's.

Examples
--------
>>> from ecgstream.api import verify_records
>>> r = verify_records("data/ecgid-excerpt/Person_01/rec_1",
...                    "data/ecgid-excerpt/Person_01/rec_2")  # doctest: +SKIP
>>> r.decision, round(r.score, 3), round(r.probability, 3)  # doctest: +SKIP
('accept', 0.9, 0.99)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from .core.types import Beat
from .dsp import DspConfig, extract_beats
from .pipeline import Embedder, Matcher
from .pipeline.scores import fuse, make_template, quality_weights
from .sources.records import read_record

if TYPE_CHECKING:  # pragma: no cover
    from edge import EmbeddingModel

__all__ = [
    "MIN_ENROL_BEATS",
    "MIN_PROBE_BEATS",
    "VerifyResult",
    "beats_from_record",
    "default_model",
    "embed_beats",
    "score_beats",
    "verify_records",
]

#: Good beats needed in the first (enrolment) recording of :func:`verify_records`.
MIN_ENROL_BEATS = 5
#: Good beats needed in the second (probe) recording.
MIN_PROBE_BEATS = 3


@lru_cache(maxsize=1)
def default_model() -> EmbeddingModel:
    """The shipped model (``edge/model.tflite``), loaded once per process."""
    from .core.litert_log import open_embedding_model

    return open_embedding_model()


def beats_from_record(
    path: str | os.PathLike[str],
    channel: int | str = 0,
    cfg: DspConfig | None = None,
    good_only: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> list[Beat]:
    """Cut a WFDB record into beats with the daemon's streaming DSP.

    Parameters
    ----------
    path : path-like
        Record path without extension, e.g. ``data/ecgid-excerpt/Person_01/rec_1``.
    channel : int or str
        Channel index or name (ECG-ID: 0 is the raw lead I, which the model
        was trained on).
    cfg : DspConfig, optional
        DSP settings; default ``DspConfig()`` (the shipped model's, see
        ``EmbeddingModel.dsp_config()``).
    good_only : bool
        Return only beats without quality flags (the only ones ever matched).
    progress : callable, optional
        ``progress(samples_done, samples_total)`` every minute of signal
        (:func:`ecgstream.dsp.offline.extract_beats`); the beats are the same.

    Returns
    -------
    list of Beat
        In stream order; ``Beat.window`` holds ``cfg.window_len`` samples at
        ``cfg.fs_hz`` (mV, conditioned, not normalised).

    Raises
    ------
    ecgstream.sources.records.DataError
        Missing record or channel.
    """
    x, fs, _ = read_record(path, channel)
    beats = extract_beats(x, fs, cfg or DspConfig(), progress=progress)
    return [b for b in beats if b.good] if good_only else beats


def embed_beats(beats: list[Beat] | np.ndarray, model: EmbeddingModel | None = None) -> np.ndarray:
    """Unit embeddings of beats.

    Parameters
    ----------
    beats : list of Beat, or ndarray (n, window_len)
        Beats (their ``window``) or raw windows in mV; the model normalises.
    model : EmbeddingModel, optional
        Default: the shipped model.

    Returns
    -------
    ndarray (n, embedding_dim) float32, unit rows.

    Raises
    ------
    ValueError
        Windows of the wrong length, NaN or infinite samples.
    """
    m = model or default_model()
    if isinstance(beats, np.ndarray):
        windows = beats
    else:
        beats = list(beats)
        if not beats:
            return np.zeros((0, m.embedding_dim), dtype=np.float32)
        windows = np.stack([np.asarray(b.window) for b in beats])
    return Embedder(m).push_windows(windows)


def score_beats(embeddings: np.ndarray, template: np.ndarray, model: EmbeddingModel | None = None) -> np.ndarray:
    """The daemon's beat score of each embedding against a template.

    ``template`` is one centroid (:func:`ecgstream.pipeline.scores.make_template`
    of enrolment embeddings) or ``(sittings, dim)`` centroids of one subject.
    Scores are normalised as the model card says (raw cosine in [-1, 1], or
    cohort z-norm), so their mean is the fused score the card's thresholds
    are for; returns shape ``(n,)``.
    """
    m = model or default_model()
    return Matcher(["template"], [np.atleast_2d(template)], norm=m.score_norm, cohort=m.cohort).push(embeddings)[:, 0]


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify_records`.

    Attributes
    ----------
    score : float
        Fused score: mean cosine of B's good-beat embeddings with the
        template (unit centroid) of A's good-beat embeddings.
    probability : float
        The card's logistic map of ``score``: probability that A and B are
        the same person *under equal prior odds*, calibrated on 10-beat
        fused scores of held-out persons. Not a probability for any other
        prior; with more than 10 probe beats it is conservative.
    decision : str
        ``"accept"`` when ``score >= threshold``, else ``"reject"``.
    beats_a, beats_b : int
        Good beats used from A (enrolment) and B (probe).
    threshold : float
        The card's fused threshold at ``operating_point`` for the largest
        calibrated beat count not above ``beats_b``.
    threshold_beats : int
        That beat count.
    operating_point : str
        ``"eer"`` or ``"far_0.001"``.
    model_id : str
    """

    score: float
    probability: float
    decision: str
    beats_a: int
    beats_b: int
    threshold: float
    threshold_beats: int
    operating_point: str
    model_id: str

    @property
    def accepted(self) -> bool:
        return self.decision == "accept"

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def _thresholds(card: Any, op: str) -> dict[int, float]:
    th = card["thresholds"]
    try:
        by = {1: float(th["single"][op])}
        by[int(th["fused"]["beats"])] = float(th["fused"][op])
        for k, v in (th.get("fused_by_beats") or {}).items():
            by[int(k)] = float(v[op])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"the model card has no thresholds for operating point {op!r}") from None
    return by


def _beats_of_both(path_a: Any, path_b: Any, channel: int | str, cfg: DspConfig,
                   progress: Callable[[float, float], None] | None) -> tuple[list[Beat], list[Beat]]:
    """The good beats of A and of B, reporting ``progress`` over both records' seconds."""
    if progress is None:
        return beats_from_record(path_a, channel, cfg), beats_from_record(path_b, channel, cfg)
    (xa, fa, _), (xb, fb, _) = read_record(path_a, channel), read_record(path_b, channel)
    total = xa.size / fa + xb.size / fb
    out = []
    done = 0.0
    for x, fs in ((xa, fa), (xb, fb)):
        beats = extract_beats(x, fs, cfg, progress=lambda n, _t, fs=fs, d=done: progress(d + n / fs, total))
        out.append([b for b in beats if b.good])
        done += x.size / fs
    return out[0], out[1]


def verify_records(
    path_a: str | os.PathLike[str],
    path_b: str | os.PathLike[str],
    model: EmbeddingModel | None = None,
    channel: int | str = 0,
    operating_point: str = "eer",
    progress: Callable[[float, float], None] | None = None,
) -> VerifyResult:
    """Are two ECG recordings of the same person? ("two inputs in, probability out").

    A is enrolled (template from its good beats), B is the probe: the score
    is the mean of B's good-beat scores against A's template, the daemon's
    fused score over B's beats.

    Parameters
    ----------
    path_a, path_b : path-like
        WFDB record paths without extension.
    model : EmbeddingModel, optional
        Default: the shipped model.
    channel : int or str
        Channel of both records (default 0).
    operating_point : {"eer", "far_0.001"}
        Which card threshold decides: equal error rate (default) or a false
        accept rate of 0.1 % on held-out persons.
    progress : callable, optional
        ``progress(seconds_done, seconds_total)`` as the DSP goes through the
        two records (seconds of signal of A and B together; a minute a call).

    Raises
    ------
    ecgstream.sources.records.DataError
        A record or channel cannot be read.
    ValueError
        Too few good beats (A needs ``MIN_ENROL_BEATS``, B
        ``MIN_PROBE_BEATS``), or an unknown operating point.
    """
    if operating_point not in ("eer", "far_0.001"):
        raise ValueError(f"operating_point must be 'eer' or 'far_0.001', got {operating_point!r}")
    m = model or default_model()
    cfg = m.dsp_config()
    beats_a, beats_b = _beats_of_both(path_a, path_b, channel, cfg, progress)
    if len(beats_a) < MIN_ENROL_BEATS:
        raise ValueError(f"record {path_a} has {len(beats_a)} good beats; need at least {MIN_ENROL_BEATS} to enrol")
    if len(beats_b) < MIN_PROBE_BEATS:
        raise ValueError(f"record {path_b} has {len(beats_b)} good beats; need at least {MIN_PROBE_BEATS} to probe")
    ea = embed_beats(beats_a, m)
    template = make_template(ea, quality_weights(ea))
    score = fuse(score_beats(embed_beats(beats_b, m), template, m))
    by = _thresholds(m.card, operating_point)
    k = max(c for c in by if c <= len(beats_b))
    thr = by[k]
    prob_card = m.card.get("probability") or {}
    if prob_card.get("kind") != "logistic":
        raise ValueError("the model card has no logistic 'probability' block")
    z = float(prob_card["a"]) * score + float(prob_card["b"])
    probability = float(1.0 / (1.0 + np.exp(-z)))
    return VerifyResult(
        score=float(score),
        probability=probability,
        decision="accept" if score >= thr else "reject",
        beats_a=len(beats_a),
        beats_b=len(beats_b),
        threshold=float(thr),
        threshold_beats=int(k),
        operating_point=operating_point,
        model_id=m.model_id,
    )
