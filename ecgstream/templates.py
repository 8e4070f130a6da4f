"""Encrypted, authenticated store of enrolled templates.

One file per subject, ``<store>/<subject>.tmpl``, holds that subject's
:class:`Template`: one unit-length centroid per enrolment sitting
(:func:`ecgstream.matching.make_template`; ``enroll --append`` adds a
sitting), their overall centroid, the id of the model that made them, the id
of the impostor cohort the model ships (scores are normalised against it),
and a few enrolment statistics.

What is stored, and what is not
-------------------------------
No raw ECG and no per-beat embeddings are ever written. A centroid is
enough to authenticate; a set of beats or per-beat embeddings would give a
thief more to work with (rebuilding plausible beats, training an attack
model against one person, or linking the person across systems), and ECG
is health data that the daemon has no reason to keep. The ``source`` field
is descriptive only and must not carry credentials (the CLI strips URI
query strings before storing it).

File format (version 2; version 1, one centroid and no cohort, is still read)
-------------------------------------------------------------------------------
All integers big-endian::

    magic        8 bytes   b"ECGTMPL\\x00"
    version      2 bytes   format version (1)
    subject_len  1 byte    then the subject, UTF-8 (ASCII by validation)
    model_len    2 bytes   then the model id, UTF-8
    nonce       12 bytes   random per write
    ciphertext   rest      AES-256-GCM of a JSON payload, 16-byte tag at the end

Everything before the nonce (magic, version, subject, model id) is the
associated data of AES-GCM: it is readable without the key (so a listing
can name the file's subject and model), but any change to it, a file
renamed to another subject, a truncated or edited file, or a file written
with another key fails authentication and raises :class:`TemplateError`.

Files are written atomically (a temporary file in the store directory,
``fsync``, :func:`os.replace`, ``fsync`` of the directory) with mode 0600;
a store directory created by :class:`TemplateStore` gets mode 0700.

Keys
----
The 32-byte AES key comes from :func:`load_key`: a systemd credential
(``$CREDENTIALS_DIRECTORY/template-key``), an environment variable
(``ECGSTREAM_TEMPLATE_KEY``), or a key file, in that order.
:func:`create_key_file` makes a new key (``ecgstream keygen``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import math
import os
import re
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "DEFAULT_KEY_CREDENTIAL",
    "DEFAULT_KEY_ENV",
    "FORMAT_VERSION",
    "KEY_BYTES",
    "MAGIC",
    "ScanReport",
    "Template",
    "TemplateError",
    "TemplateInfo",
    "TemplateKeyError",
    "TemplateKeyMissing",
    "TemplateStore",
    "create_key_file",
    "load_key",
    "parse_key",
    "validate_subject",
]

log = logging.getLogger(__name__)

MAGIC = b"ECGTMPL\x00"
FORMAT_VERSION = 2
#: Versions this code reads (1: a single centroid, no cohort id).
READABLE_VERSIONS = (1, 2)
#: Most sittings a template keeps (``enroll --append`` drops the oldest beyond it).
MAX_SITTINGS = 8
KEY_BYTES = 32
NONCE_BYTES = 12
SUFFIX = ".tmpl"
DEFAULT_KEY_CREDENTIAL = "template-key"
DEFAULT_KEY_ENV = "ECGSTREAM_TEMPLATE_KEY"
#: Largest template file read (a 1024-dim centroid is ~6 KiB of JSON).
MAX_FILE_BYTES = 1 << 20
_SUBJECT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_FIXED = struct.Struct(">8sH")


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
        (:class:`ecgstream.matching.Cohort`); None for version-1 files.
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


class TemplateInfo(NamedTuple):
    """One row of :meth:`TemplateStore.list`."""

    subject: str
    model_id: str
    created_utc: str
    n_beats: int


@dataclass
class ScanReport:
    """What the last :meth:`TemplateStore.list` or ``load_all`` skipped.

    Attributes
    ----------
    broken : list of TemplateError
        Files that could not be read (tampered, truncated, foreign key or
        format); each error names the file and the reason.
    other_model : list of (str, str)
        ``(subject, model_id)`` of templates made with another model
        (``load_all`` only).
    """

    broken: list[TemplateError] = field(default_factory=list)
    other_model: list[tuple[str, str]] = field(default_factory=list)

    @property
    def errors(self) -> int:
        """Number of templates skipped for any reason."""
        return len(self.broken) + len(self.other_model)


# -- encoding -----------------------------------------------------------------------
def _header(subject: str, model_id: str) -> bytes:
    s = subject.encode("utf-8")
    m = model_id.encode("utf-8")
    return _FIXED.pack(MAGIC, FORMAT_VERSION) + struct.pack(">B", len(s)) + s + struct.pack(">H", len(m)) + m


def _payload(t: Template) -> bytes:
    doc = {
        "subject": t.subject,
        "model_id": t.model_id,
        "dtype": "<f4",
        "dim": t.dim,
        "centroid": base64.b64encode(t.centroid.astype("<f4").tobytes()).decode("ascii"),
        "n_beats": t.n_beats,
        "created_utc": t.created_utc,
        "quality": t.quality,
        "source": t.source,
        "centroids": base64.b64encode(t.centroids.astype("<f4").tobytes()).decode("ascii"),
        "cohort_id": t.cohort_id,
    }
    return json.dumps(doc, sort_keys=True, allow_nan=False).encode("utf-8")


def _parse_header(blob: bytes, path: Path) -> tuple[str, str, int]:
    """Return (subject, model_id, header length) or raise TemplateError."""
    if len(blob) < _FIXED.size or blob[:8] != MAGIC:
        raise TemplateError("not an ecgstream template file (bad magic)", path)
    _, version = _FIXED.unpack_from(blob)
    if version > FORMAT_VERSION:
        raise TemplateError(
            f"template format version {version} is newer than this ecgstream supports "
            f"(up to {FORMAT_VERSION}); upgrade ecgstream or re-enrol",
            path,
        )
    if version not in READABLE_VERSIONS:
        raise TemplateError(f"unsupported template format version {version}", path)
    try:
        pos = _FIXED.size
        (ns,) = struct.unpack_from(">B", blob, pos)
        pos += 1
        subject = blob[pos : pos + ns].decode("utf-8")
        if len(subject.encode()) != ns:
            raise ValueError
        pos += ns
        (nm,) = struct.unpack_from(">H", blob, pos)
        pos += 2
        model_id = blob[pos : pos + nm].decode("utf-8")
        if len(model_id.encode()) != nm:
            raise ValueError
        pos += nm
    except (struct.error, UnicodeDecodeError, ValueError):
        raise TemplateError("truncated or malformed header", path) from None
    if len(blob) < pos + NONCE_BYTES + 16:
        raise TemplateError("truncated file (no room for nonce and tag)", path)
    return subject, model_id, pos


def _decode_payload(raw: bytes, path: Path) -> Template:
    try:
        doc = json.loads(raw.decode("utf-8"))
        if not isinstance(doc, dict):
            raise ValueError("payload is not an object")
        if doc.get("dtype") != "<f4":
            raise ValueError(f"unknown centroid dtype {doc.get('dtype')!r}")
        c = np.frombuffer(base64.b64decode(doc["centroid"], validate=True), dtype="<f4")
        if c.size != doc["dim"]:
            raise ValueError(f"centroid has {c.size} values, header says {doc['dim']}")
        cs = None
        if doc.get("centroids") is not None:
            cs = np.frombuffer(base64.b64decode(doc["centroids"], validate=True), dtype="<f4")
            if cs.size % c.size or cs.size == 0:
                raise ValueError(f"centroids hold {cs.size} values, not a multiple of {c.size}")
            cs = cs.reshape(-1, c.size).astype(np.float32)
        return Template(
            subject=doc["subject"],
            model_id=doc["model_id"],
            centroid=c.astype(np.float32),
            n_beats=doc["n_beats"],
            created_utc=doc["created_utc"],
            quality=doc.get("quality", {}),
            source=doc.get("source", ""),
            centroids=cs,
            cohort_id=doc.get("cohort_id"),
        )
    except TemplateError as exc:
        raise TemplateError(f"invalid template content: {exc.reason}", path) from None
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise TemplateError(f"invalid template content: {exc}", path) from None


# -- the store ----------------------------------------------------------------------
class TemplateStore:
    """Directory of encrypted templates, one file per subject.

    Parameters
    ----------
    directory : str or Path
        Store directory. Created (mode 0700) by the first :meth:`save`;
        reading from a directory that does not exist finds no templates.
    key : bytes
        32-byte AES-256-GCM key (see :func:`load_key`).

    Attributes
    ----------
    last_report : ScanReport
        What the last :meth:`list` or :meth:`load_all` skipped.
    """

    def __init__(self, directory: str | os.PathLike[str], key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
            raise TemplateKeyError(f"template key must be exactly {KEY_BYTES} bytes")
        self.directory = Path(directory)
        self._aead = AESGCM(bytes(key))
        self.last_report = ScanReport()

    def __repr__(self) -> str:
        return f"TemplateStore({str(self.directory)!r})"

    def path_for(self, subject: str) -> Path:
        """File that holds ``subject``'s template (validates the id)."""
        return self.directory / f"{validate_subject(subject)}{SUFFIX}"

    def __contains__(self, subject: object) -> bool:
        try:
            return self.path_for(subject).is_file()  # type: ignore[arg-type]
        except TemplateError:
            return False

    # -- writing --------------------------------------------------------------
    def _ensure_dir(self) -> None:
        if not self.directory.is_dir():
            try:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise TemplateError(f"cannot create the template store: {exc.strerror}", self.directory) from None
            os.chmod(self.directory, 0o700)
            log.info("created template store %s (mode 0700)", self.directory)

    def save(self, t: Template) -> Path:
        """Write ``t`` atomically, replacing the subject's previous template.

        Returns
        -------
        Path
            The file written.

        Raises
        ------
        TemplateError
            The store cannot be written; the previous file, if any, is intact.
        """
        if not isinstance(t, Template):
            raise TypeError(f"expected a Template, got {type(t).__name__}")
        path = self.path_for(t.subject)
        self._ensure_dir()
        header = _header(t.subject, t.model_id)
        nonce = os.urandom(NONCE_BYTES)
        blob = header + nonce + self._aead.encrypt(nonce, _payload(t), header)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{t.subject}.", suffix=".tmp", dir=self.directory)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
            _fsync_dir(self.directory)
        except OSError as exc:
            raise TemplateError(f"cannot write template: {exc.strerror or exc}", path) from None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        log.info("saved template of %s (model %s, %d beats) to %s", t.subject, t.model_id, t.n_beats, path)
        return path

    def remove(self, subject: str) -> None:
        """Delete ``subject``'s template.

        Raises
        ------
        TemplateError
            No template for ``subject``, or it cannot be deleted.
        """
        path = self.path_for(subject)
        try:
            path.unlink()
        except FileNotFoundError:
            raise TemplateError(f"no template for subject {subject!r}", path) from None
        except OSError as exc:
            raise TemplateError(f"cannot remove template: {exc.strerror}", path) from None
        _fsync_dir(self.directory)
        log.info("removed template of %s", subject)

    # -- reading --------------------------------------------------------------
    def _read(self, path: Path, expect_subject: str | None = None) -> Template:
        try:
            with open(path, "rb") as f:
                blob = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            subj = expect_subject or path.stem
            raise TemplateError(f"no template for subject {subj!r}", path) from None
        except OSError as exc:
            raise TemplateError(f"cannot read template: {exc.strerror}", path) from None
        if len(blob) > MAX_FILE_BYTES:
            raise TemplateError(f"file is larger than {MAX_FILE_BYTES} bytes; not a template", path)
        subject, model_id, pos = _parse_header(blob, path)
        stem = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name
        if subject != stem:
            raise TemplateError(
                f"file name says subject {stem!r} but the file holds {subject!r} (renamed or swapped?)", path
            )
        header, nonce, ct = blob[:pos], blob[pos : pos + NONCE_BYTES], blob[pos + NONCE_BYTES :]
        try:
            raw = self._aead.decrypt(nonce, ct, header)
        except InvalidTag:
            raise TemplateError(
                "authentication failed: the file was modified or truncated, or it was "
                "written with another template key",
                path,
            ) from None
        t = _decode_payload(raw, path)
        if t.subject != subject or t.model_id != model_id:
            raise TemplateError("header and content disagree on subject or model", path)
        return t

    def load(self, subject: str, model_id: str | None = None, cohort_id: str | None = None) -> Template:
        """Read and check ``subject``'s template.

        Parameters
        ----------
        subject : str
        model_id : str or None
            When given, the id of the model the daemon runs; a template made
            with another model is refused.
        cohort_id : str or None
            When given, the id of the cohort the model ships; a template made
            against another cohort (or none) is refused.

        Raises
        ------
        TemplateError
            Missing, unreadable, tampered or foreign file, or a model or
            cohort mismatch.
        """
        path = self.path_for(subject)
        t = self._read(path, subject)
        if model_id is not None and t.model_id != model_id:
            raise TemplateError(
                f"the template of {subject!r} was made with model {t.model_id!r} but the "
                f"daemon runs model {model_id!r}; re-enrol {subject!r} "
                f"(ecgstream enroll --subject {subject} --force ...)",
                path,
            )
        if cohort_id is not None and t.cohort_id != cohort_id:
            raise TemplateError(cohort_mismatch(t, cohort_id), path)
        return t

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            log.warning("template store %s does not exist (no templates)", self.directory)
            return []
        return sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))

    def _scan(self) -> list[Template]:
        self.last_report = ScanReport()
        out: list[Template] = []
        for p in self._files():
            try:
                out.append(self._read(p))
            except TemplateError as exc:
                log.warning("skipping unreadable template: %s", exc)
                self.last_report.broken.append(exc)
        return out

    def list(self) -> list[TemplateInfo]:
        """Rows ``(subject, model_id, created_utc, n_beats)`` of readable templates.

        Every file is decrypted and authenticated; unreadable ones are
        skipped with a warning and listed in :attr:`last_report`.
        """
        return [TemplateInfo(t.subject, t.model_id, t.created_utc, t.n_beats) for t in self._scan()]

    def load_all(self, model_id: str, strict: bool = False, cohort_id: str | None = None) -> dict[str, Template]:
        """Templates made with ``model_id``, by subject (identification mode).

        Parameters
        ----------
        model_id : str
            Model the daemon runs.
        strict : bool
            Raise on the first unreadable file instead of skipping it.

        Notes
        -----
        Templates of another model and (unless ``strict``) unreadable files
        are skipped with a warning and counted in :attr:`last_report`. A
        skipped subject can never be authenticated, so skipping fails
        closed for that subject without taking the others down.
        """
        if strict:
            self.last_report = ScanReport()
            templates = [self._read(p) for p in self._files()]
        else:
            templates = self._scan()
        out: dict[str, Template] = {}
        for t in templates:
            if t.model_id != model_id:
                log.warning(
                    "skipping template of %s: made with model %s, the daemon runs %s; re-enrol",
                    t.subject, t.model_id, model_id,
                )
                self.last_report.other_model.append((t.subject, t.model_id))
                continue
            if cohort_id is not None and t.cohort_id != cohort_id:
                log.warning("skipping template: %s", cohort_mismatch(t, cohort_id))
                self.last_report.other_model.append((t.subject, f"{t.model_id} / {t.cohort_id}"))
                continue
            out[t.subject] = t
        if self.last_report.errors:
            log.warning("loaded %d templates, skipped %d", len(out), self.last_report.errors)
        return out


def cohort_mismatch(t: Template, cohort_id: str) -> str:
    """The message for a template made against another cohort version."""
    made = f"cohort {t.cohort_id!r}" if t.cohort_id else "no cohort (a version-1 template)"
    return (
        f"the template of {t.subject!r} was made against {made} but the model ships cohort "
        f"{cohort_id!r}: its scores would be normalised against the wrong impostors; re-enrol "
        f"{t.subject!r} (ecgstream enroll --subject {t.subject} --force ...)"
    )


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


# -- keys ---------------------------------------------------------------------------
def parse_key(data: bytes | str, where: str) -> bytes:
    """Decode a 32-byte key given raw, as 64 hex digits, or as base64.

    Parameters
    ----------
    data : bytes or str
        Raw bytes (a file of exactly 32 bytes is taken as the key itself),
        or text: 64 hex digits, or base64 (standard or URL-safe) of 32 bytes.
        Surrounding whitespace is ignored.
    where : str
        Where the key came from, for the error message (never the key).

    Raises
    ------
    TemplateKeyError
        The data is not a 32-byte key in any accepted encoding.
    """
    if isinstance(data, bytes | bytearray):
        if len(data) == KEY_BYTES:
            return bytes(data)
        try:
            text = bytes(data).decode("ascii")
        except UnicodeDecodeError:
            raise TemplateKeyError(
                f"template key from {where} is {len(data)} bytes of binary data; "
                f"need exactly {KEY_BYTES} raw bytes, 64 hex digits or base64 of {KEY_BYTES} bytes"
            ) from None
    else:
        text = data
    text = text.strip()
    if re.fullmatch(r"[0-9A-Fa-f]{64}", text):
        return bytes.fromhex(text)
    b64 = text.replace("-", "+").replace("_", "/")
    b64 += "=" * (-len(b64) % 4)
    try:
        key = base64.b64decode(b64.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        key = b""
    if len(key) == KEY_BYTES:
        return key
    raise TemplateKeyError(
        f"template key from {where} is not {KEY_BYTES} bytes: need {KEY_BYTES} raw bytes, "
        f"64 hex digits or base64 of {KEY_BYTES} bytes (got {len(text)} characters; "
        "make one with `ecgstream keygen PATH`)"
    )


def _read_key_file(path: Path, where: str) -> bytes:
    try:
        st = path.stat()
        if not path.is_file():
            raise TemplateKeyError(f"template key {where} is not a regular file")
        if st.st_size > 4096:
            raise TemplateKeyError(f"template key {where} is {st.st_size} bytes; not a key")
        data = path.read_bytes()
    except FileNotFoundError:
        raise TemplateKeyError(
            f"template key {where} does not exist (make one with `ecgstream keygen {path}`)"
        ) from None
    except PermissionError:
        raise TemplateKeyError(f"template key {where} is not readable by this user") from None
    except OSError as exc:
        raise TemplateKeyError(f"cannot read template key {where}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        log.warning("template key %s is readable by group or others (mode %o); chmod 600 it",
                    path, st.st_mode & 0o777)
    return parse_key(data, where)


def load_key(
    key_file: str | os.PathLike[str] | None = None,
    key_env: str | None = None,
    credential: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> bytes:
    """Find the template key.

    Sources are tried in this order; the first one present is used (and
    must hold a valid key: a bad key is an error, never a reason to try the
    next source):

    1. systemd credential ``$CREDENTIALS_DIRECTORY/<credential>``
       (default name ``template-key``; ``LoadCredential=`` or
       ``LoadCredentialEncrypted=`` in the unit);
    2. environment variable ``key_env`` (default ``ECGSTREAM_TEMPLATE_KEY``),
       64 hex digits or base64 of 32 bytes;
    3. the key file ``key_file``: 32 raw bytes, 64 hex digits or base64.

    Parameters
    ----------
    key_file : str or PathLike or None
        Key file from the config or the command line; it must exist when given.
    key_env : str or None
        Environment variable name (None: ``ECGSTREAM_TEMPLATE_KEY``).
    credential : str or None
        Credential name (None: ``template-key``).
    environ : mapping, optional
        Environment to read (default :data:`os.environ`), for tests.

    Returns
    -------
    bytes
        The 32-byte key.

    Raises
    ------
    TemplateKeyMissing
        No source holds a key; the message says what was tried and how to
        make a key.
    TemplateKeyError
        A source holds something that is not a 32-byte key, or a configured
        key file cannot be read.
    """
    env = os.environ if environ is None else environ
    cred_name = credential or DEFAULT_KEY_CREDENTIAL
    env_name = key_env or DEFAULT_KEY_ENV
    if "/" in cred_name or cred_name in {".", ".."}:
        raise TemplateKeyError(f"credential name {cred_name!r} must be a plain file name")
    tried: list[str] = []
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        p = Path(cred_dir) / cred_name
        if p.exists():
            log.debug("template key from systemd credential %s", cred_name)
            return _read_key_file(p, f"systemd credential {cred_name!r} ({p})")
        tried.append(f"systemd credential {cred_name!r} (not in $CREDENTIALS_DIRECTORY)")
    else:
        tried.append(f"systemd credential {cred_name!r} ($CREDENTIALS_DIRECTORY not set)")
    value = env.get(env_name)
    if value is not None:
        log.debug("template key from environment variable %s", env_name)
        return parse_key(value, f"environment variable {env_name}")
    tried.append(f"environment variable {env_name} (not set)")
    if key_file:
        log.debug("template key from file %s", key_file)
        return _read_key_file(Path(key_file), f"file {os.fspath(key_file)}")
    tried.append("key file (none configured: [templates] key_file or --key-file)")
    raise TemplateKeyMissing(
        "no template key configured; tried " + "; ".join(tried)
        + ". Make one with `ecgstream keygen /etc/ecgstream/template-key` and point "
        "[templates] key_file (or --key-file) at it, or load it as the systemd credential "
        f"{cred_name!r}, or set {env_name}"
    )


def create_key_file(path: str | os.PathLike[str]) -> Path:
    """Write a new random 32-byte key as 64 hex digits, mode 0600.

    Missing parent directories are created with mode 0700.

    Raises
    ------
    FileExistsError
        ``path`` exists already (a key is never overwritten: templates
        encrypted with it would be lost).
    OSError
        The file cannot be written.
    """
    p = Path(path)
    if not p.parent.exists():
        p.parent.mkdir(mode=0o700, parents=True)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise FileExistsError(
            exc.errno, f"{p} exists already; refusing to overwrite a template key "
            "(templates encrypted with it would become unreadable)"
        ) from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (os.urandom(KEY_BYTES).hex() + "\n").encode("ascii"))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        p.unlink(missing_ok=True)
        raise
    os.close(fd)
    _fsync_dir(p.parent)
    log.info("wrote a new template key to %s (mode 0600)", p)
    return p
