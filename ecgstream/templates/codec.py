"""The template file format: one encrypted, authenticated file per subject.

File format (version 2; version 1, one centroid and no cohort, is still read)
-------------------------------------------------------------------------------
All integers big-endian::

    magic        8 bytes   b"ECGTMPL\\x00"
    version      2 bytes   format version (2; 1 is still read)
    subject_len  1 byte    then the subject, UTF-8 (ASCII by validation)
    model_len    2 bytes   then the model id, UTF-8
    nonce       12 bytes   random per write
    ciphertext   rest      AES-256-GCM of a JSON payload, 16-byte tag at the end

The payload is a JSON object (keys sorted, no NaN): ``subject``,
``model_id``, ``dtype`` (``"<f4"``), ``dim``, ``centroid`` (base64 of
``dim`` little-endian float32), ``centroids`` (base64 of ``sittings x dim``
float32; absent in version 1), ``n_beats``, ``created_utc``, ``quality``,
``source`` and ``cohort_id`` (None in version 1).

Everything before the nonce (magic, version, subject, model id) is the
associated data of AES-GCM: it is readable without the key (so a listing
can name the file's subject and model), but any change to it, a file
renamed to another subject, a truncated or edited file, or a file written
with another key fails authentication and raises :class:`TemplateError`.

A file larger than :data:`MAX_FILE_BYTES` is refused before it is parsed.
:func:`encode` makes a file's bytes, :func:`decode` checks and reads them;
where files live and how they are written is :mod:`ecgstream.templates.store`.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .model import Template, TemplateError

__all__ = ["FORMAT_VERSION", "MAGIC", "MAX_FILE_BYTES", "NONCE_BYTES", "READABLE_VERSIONS", "decode", "encode"]

MAGIC = b"ECGTMPL\x00"
FORMAT_VERSION = 2
#: Versions this code reads (1: a single centroid, no cohort id).
READABLE_VERSIONS = (1, 2)
NONCE_BYTES = 12
#: Largest template file read (a 1024-dim centroid is ~6 KiB of JSON).
MAX_FILE_BYTES = 1 << 20
_FIXED = struct.Struct(">8sH")


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


def encode(t: Template, aead: AESGCM, nonce: bytes) -> bytes:
    """The bytes of ``t``'s file, encrypted with ``aead`` under ``nonce`` (:data:`NONCE_BYTES`)."""
    header = _header(t.subject, t.model_id)
    return header + nonce + aead.encrypt(nonce, _payload(t), header)


def decode(blob: bytes, path: Path, aead: AESGCM, stem: str) -> Template:
    """Check and read a file's bytes; ``stem`` is the subject its file name gives.

    Raises
    ------
    TemplateError
        Too large, bad magic or version, malformed header, a subject other
        than the file name's, failed authentication (tampered, truncated,
        another key), or malformed content.
    """
    if len(blob) > MAX_FILE_BYTES:
        raise TemplateError(f"file is larger than {MAX_FILE_BYTES} bytes; not a template", path)
    subject, model_id, pos = _parse_header(blob, path)
    if subject != stem:
        raise TemplateError(
            f"file name says subject {stem!r} but the file holds {subject!r} (renamed or swapped?)", path
        )
    header, nonce, ct = blob[:pos], blob[pos : pos + NONCE_BYTES], blob[pos + NONCE_BYTES :]
    try:
        raw = aead.decrypt(nonce, ct, header)
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
