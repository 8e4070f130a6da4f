"""Enrolled templates: the model, its encrypted file format, the store, the key.

One file per subject, ``<store>/<subject>.tmpl``, holds that subject's
:class:`Template`: one unit-length centroid per enrolment sitting
(:func:`ecgstream.pipeline.scores.make_template`; ``enroll --append`` adds a
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

The modules
-----------
:mod:`~ecgstream.templates.model`
    :class:`Template` (validated on construction) and the errors.
:mod:`~ecgstream.templates.codec`
    The file format (its layout is documented there, and only there).
:mod:`~ecgstream.templates.store`
    :class:`TemplateStore`: one file per subject, atomic writes, scans.
:mod:`~ecgstream.templates.keys`
    :func:`load_key` (systemd credential, environment, key file) and
    :func:`create_key_file`.
"""

from .codec import _FIXED, FORMAT_VERSION, MAGIC, MAX_FILE_BYTES, NONCE_BYTES, READABLE_VERSIONS
from .keys import (
    DEFAULT_KEY_CREDENTIAL,
    DEFAULT_KEY_ENV,
    KEY_BYTES,
    create_key_file,
    load_key,
    parse_key,
)
from .model import (
    MAX_SITTINGS,
    Template,
    TemplateError,
    TemplateKeyError,
    TemplateKeyMissing,
    cohort_mismatch,
    validate_subject,
)
from .store import SUFFIX, ScanReport, TemplateInfo, TemplateStore

__all__ = [
    "DEFAULT_KEY_CREDENTIAL",
    "DEFAULT_KEY_ENV",
    "FORMAT_VERSION",
    "KEY_BYTES",
    "MAGIC",
    "MAX_FILE_BYTES",
    "MAX_SITTINGS",
    "NONCE_BYTES",
    "READABLE_VERSIONS",
    "SUFFIX",
    "ScanReport",
    "Template",
    "TemplateError",
    "TemplateInfo",
    "TemplateKeyError",
    "TemplateKeyMissing",
    "TemplateStore",
    "_FIXED",
    "cohort_mismatch",
    "create_key_file",
    "load_key",
    "parse_key",
    "validate_subject",
]
