"""The template: what enrolment keeps of a subject, and the errors of templates.

A :class:`Template` holds one unit-length centroid per enrolment sitting
(:func:`ecgstream.pipeline.scores.make_template`; ``enroll --append`` adds a
sitting), their overall centroid, the id of the model that made them, the id
of the impostor cohort the model ships (scores are normalised against it),
and a few enrolment statistics. It is validated on construction; how it is
written to disk is :mod:`ecgstream.templates.codec`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

__all__ = [
    "MAX_SITTINGS",
    "Template",
    "TemplateError",
    "TemplateKeyError",
    "TemplateKeyMissing",
    "cohort_mismatch",
    "validate_subject",
]

#: Most sittings a template keeps (``enroll --append`` drops the oldest beyond it).
MAX_SITTINGS = 8
_SUBJECT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


# -- errors -------------------------------------------------------------------------
class TemplateError(Exception):
    """A template cannot be read, written or used.

    Attributes
    ----------
    path : str or None
        The file concerned, if any.
    reason : str
        What is wrong, in words.
    """

    def __init__(self, reason: str, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class TemplateKeyError(TemplateError):
    """A template key was found but is unusable (wrong length, bad encoding)."""


class TemplateKeyMissing(TemplateKeyError, KeyError):
    """No template key is configured anywhere.

    Also a :class:`KeyError`, so callers that treat a missing key as a
    configuration error can catch it as one.
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return self.reason


# -- the template -------------------------------------------------------------------
def validate_subject(subject: object) -> str:
    """Return ``subject`` if it is a valid subject id, else raise TemplateError.

    A subject id is 1-64 characters of ``A-Z a-z 0-9 _ . -`` that does not
    start with ``.`` or ``-`` (no hidden files, no ``..``, nothing an option
    parser would take for a flag). It names the file, so nothing else is
    allowed.
    """
    if not isinstance(subject, str) or not _SUBJECT_RE.fullmatch(subject):
        raise TemplateError(
            f"invalid subject id {subject!r}: use 1-64 characters of letters, digits, "
            "'_', '.' and '-', not starting with '.' or '-'"
        )
    return subject


def _check_quality(quality: object) -> dict[str, Any]:
    if not isinstance(quality, Mapping):
        raise TemplateError(f"quality must be a dict, got {type(quality).__name__}")
    out: dict[str, Any] = {}
    for k, v in quality.items():
        if not isinstance(k, str):
            raise TemplateError(f"quality keys must be strings, got {k!r}")
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            raise TemplateError(f"quality[{k!r}] must be finite, got {v!r}")
        if not (v is None or isinstance(v, bool | int | float | str)):
            raise TemplateError(
                f"quality[{k!r}] must be a number, string, bool or None, got {type(v).__name__}"
            )
        out[k] = v
    return out


@dataclass(frozen=True, eq=False)
class Template:
    """A subject's enrolled template.

    Attributes
    ----------
    subject : str
        Subject id (see :func:`validate_subject`).
    model_id : str
        Id of the embedding model that made ``centroid``; a template is only
        comparable with embeddings of the same model.
    centroid : ndarray, shape (dim,)
        Unit-length centroid of the enrolment embeddings, float32,
        read-only.
    n_beats : int
        Good enrolment beats the centroid was made from.
    created_utc : str
        ISO 8601 time of enrolment (UTC).
    quality : dict
        Enrolment statistics (str -> number, string, bool or None), e.g. the
        mean and spread of the enrolment beats' scores against the centroid.
    source : str
        Where the enrolment signal came from; descriptive only, no secrets.
    centroids : ndarray, shape (k, dim)
        One unit centroid per enrolment sitting (default: ``centroid``
        alone), at most :data:`MAX_SITTINGS`.
    cohort_id : str or None
        Id of the impostor cohort the template was made against
        (:class:`ecgstream.pipeline.scores.Cohort`); None for version-1 files.
    """

    subject: str
    model_id: str
    centroid: np.ndarray
    n_beats: int
    created_utc: str
    quality: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    centroids: np.ndarray | None = None
    cohort_id: str | None = None

    def __post_init__(self) -> None:
        validate_subject(self.subject)
        if not isinstance(self.model_id, str) or not 0 < len(self.model_id) <= 256:
            raise TemplateError(f"model_id must be a non-empty string of at most 256 characters, got {self.model_id!r}")
        if not self.model_id.isprintable():
            raise TemplateError("model_id must be printable")
        c = np.array(self.centroid, dtype=np.float32, copy=True)
        if c.ndim != 1 or c.size == 0:
            raise TemplateError(f"centroid must be a non-empty 1-D vector, got shape {c.shape}")
        if not np.all(np.isfinite(c)):
            raise TemplateError("centroid must be finite")
        norm = float(np.linalg.norm(c.astype(np.float64)))
        if abs(norm - 1.0) > 1e-3:
            raise TemplateError(f"centroid must have unit length, got norm {norm:.6f}")
        c.setflags(write=False)
        object.__setattr__(self, "centroid", c)
        cs = np.array(c[None, :] if self.centroids is None else self.centroids, dtype=np.float32, copy=True)
        if cs.ndim != 2 or cs.shape[0] == 0 or cs.shape[1] != c.size:
            raise TemplateError(f"centroids must have shape (k, {c.size}), got {cs.shape}")
        if cs.shape[0] > MAX_SITTINGS:
            raise TemplateError(f"at most {MAX_SITTINGS} sittings, got {cs.shape[0]}")
        if not np.all(np.isfinite(cs)) or np.any(np.abs(np.linalg.norm(cs.astype(np.float64), axis=1) - 1) > 1e-3):
            raise TemplateError("centroids must be finite unit vectors")
        cs.setflags(write=False)
        object.__setattr__(self, "centroids", cs)
        if self.cohort_id is not None and (not isinstance(self.cohort_id, str)
                                           or not 0 < len(self.cohort_id) <= 64 or not self.cohort_id.isprintable()):
            raise TemplateError(f"cohort_id must be a short printable string or None, got {self.cohort_id!r}")
        if isinstance(self.n_beats, bool) or not isinstance(self.n_beats, int | np.integer) or self.n_beats < 1:
            raise TemplateError(f"n_beats must be a positive integer, got {self.n_beats!r}")
        object.__setattr__(self, "n_beats", int(self.n_beats))
        if not isinstance(self.created_utc, str):
            raise TemplateError(f"created_utc must be an ISO 8601 string, got {self.created_utc!r}")
        try:
            datetime.fromisoformat(self.created_utc)
        except ValueError:
            raise TemplateError(f"created_utc {self.created_utc!r} is not ISO 8601") from None
        object.__setattr__(self, "quality", _check_quality(self.quality))
        if not isinstance(self.source, str) or len(self.source) > 1024:
            raise TemplateError("source must be a string of at most 1024 characters")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Template):
            return NotImplemented
        return (
            (self.subject, self.model_id, self.n_beats, self.created_utc, self.quality, self.source,
             self.cohort_id)
            == (other.subject, other.model_id, other.n_beats, other.created_utc, other.quality, other.source,
                other.cohort_id)
            and np.array_equal(self.centroid, other.centroid)
            and np.array_equal(self.centroids, other.centroids)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:  # never print the centroid
        return (
            f"Template(subject={self.subject!r}, model_id={self.model_id!r}, "
            f"dim={self.centroid.size}, sittings={self.sittings}, n_beats={self.n_beats}, "
            f"created_utc={self.created_utc!r})"
        )

    @property
    def dim(self) -> int:
        """Embedding size."""
        return int(self.centroid.size)

    @property
    def sittings(self) -> int:
        """Number of enrolment sittings (rows of ``centroids``)."""
        return int(self.centroids.shape[0])


def cohort_mismatch(t: Template, cohort_id: str) -> str:
    """The message for a template made against another cohort version."""
    made = f"cohort {t.cohort_id!r}" if t.cohort_id else "no cohort (a version-1 template)"
    return (
        f"the template of {t.subject!r} was made against {made} but the model ships cohort "
        f"{cohort_id!r}: its scores would be normalised against the wrong impostors; re-enrol "
        f"{t.subject!r} (ecgstream enroll --subject {t.subject} --force ...)"
    )
