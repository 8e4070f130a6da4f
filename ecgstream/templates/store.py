"""The template store: a directory of encrypted templates, one file per subject.

``<store>/<subject>.tmpl`` holds that subject's template in the format of
:mod:`ecgstream.templates.codec`. Files are written atomically (a temporary
file in the store directory, ``fsync``, :func:`os.replace`, ``fsync`` of the
directory) with mode 0600; a store directory created by
:class:`TemplateStore` gets mode 0700.

Hostile stores (issue 11, part 4). Template files are opened with
``O_NOFOLLOW``: a symbolic link is refused, as is a file that is not a
regular file, has any group or other permission bit, or belongs to another
user (root's files are accepted); the store directory itself must not be a
symbolic link, must have no group or other permission bits and must belong
to this user (or root); :mod:`.files` holds these checks and the atomic
write. Each refusal is a :class:`TemplateError` that says what to fix; a
scan skips (and counts in :attr:`ScanReport.broken`) the files it refuses,
and refuses a bad directory outright.

Concurrent writers of one subject (two ``enroll`` runs). Every write holds
an exclusive ``fcntl.flock`` on ``.<subject>.lock`` in the store for the
check and the rename, and compares the subject's file with what this store
object last saw of it: :meth:`TemplateStore.__contains__` finding no file,
or :meth:`TemplateStore.load` reading one. If the file changed since (another
run enrolled or re-enrolled the subject meanwhile), :meth:`save` refuses
with a :class:`TemplateError` and writes nothing, unless ``replace=True``
(``--force``). A subject this object has not looked at is replaced as before.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import codec, files
from .files import ABSENT as _ABSENT
from .keys import KEY_BYTES, fsync_dir
from .model import Template, TemplateError, TemplateKeyError, cohort_mismatch, validate_subject

__all__ = ["SUFFIX", "ScanReport", "TemplateInfo", "TemplateStore"]

log = logging.getLogger(__name__)

SUFFIX = ".tmpl"


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
        #: subject -> SHA-256 of the file last read or written, or _ABSENT (module docs)
        self._seen: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"TemplateStore({str(self.directory)!r})"

    def path_for(self, subject: str) -> Path:
        """File that holds ``subject``'s template (validates the id)."""
        return self.directory / f"{validate_subject(subject)}{SUFFIX}"

    def __contains__(self, subject: object) -> bool:
        """Whether a file (even a damaged one, or a link) exists for ``subject``.

        Finding none is remembered: a later :meth:`save` of ``subject``
        refuses to replace a file another writer made meanwhile.
        """
        try:
            path = self.path_for(subject)  # type: ignore[arg-type]
        except TemplateError:
            return False
        try:
            os.lstat(path)
        except FileNotFoundError:
            self._seen[subject] = _ABSENT  # type: ignore[index]
            return False
        except OSError:
            return False
        return True

    # -- the hostile-store checks (ecgstream.templates.files) ------------------
    def check_directory(self) -> bool:
        """Check the store directory (module docs); False when it does not exist.

        Raises
        ------
        TemplateError
            A symbolic link, not a directory, group/other permissions, or
            another owner.
        """
        return files.check_store_dir(self.directory)

    # -- writing --------------------------------------------------------------
    def _ensure_dir(self) -> None:
        if not self.check_directory():
            try:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise TemplateError(f"cannot create the template store: {exc.strerror}", self.directory) from None
            os.chmod(self.directory, 0o700)
            log.info("created template store %s (mode 0700)", self.directory)

    def save(self, t: Template, replace: bool | None = None) -> Path:
        """Write ``t`` atomically, replacing the subject's previous template.

        Parameters
        ----------
        t : Template
        replace : bool or None
            True: replace whatever is there (``--force``). False: refuse if
            the subject has a file. None: refuse if the file changed since
            this store last saw it (module docs), else replace.

        Returns
        -------
        Path
            The file written.

        Raises
        ------
        TemplateError
            The store cannot be written, or another writer changed the
            subject's file meanwhile; the previous file, if any, is intact.
        """
        if not isinstance(t, Template):
            raise TypeError(f"expected a Template, got {type(t).__name__}")
        path = self.path_for(t.subject)
        self._ensure_dir()
        blob = codec.encode(t, self._aead, os.urandom(codec.NONCE_BYTES))
        with files.subject_lock(self.directory, t.subject):
            now = files.file_digest(path, codec.MAX_FILE_BYTES + 1)
            expect = self._seen.get(t.subject) if replace is None else (_ABSENT if replace is False else None)
            if expect is not None and now != expect:
                raise TemplateError(
                    f"the template of {t.subject!r} was "
                    + ("written" if expect == _ABSENT else "changed")
                    + " by another enrolment while this one ran; nothing saved (enrol again, with --force "
                    "to replace it)", path)
            files.atomic_write(self.directory, path, t.subject, blob)
        self._seen[t.subject] = hashlib.sha256(blob).digest()
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
        fsync_dir(self.directory)
        log.info("removed template of %s", subject)

    # -- reading --------------------------------------------------------------
    def _read(self, path: Path, expect_subject: str | None = None) -> Template:
        self.check_directory()
        try:
            with os.fdopen(files.open_checked(path), "rb") as f:
                blob = f.read(codec.MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            subj = expect_subject or path.stem
            raise TemplateError(f"no template for subject {subj!r}", path) from None
        except OSError as exc:
            raise TemplateError(f"cannot read template: {exc.strerror}", path) from None
        stem = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name
        t = codec.decode(blob, path, self._aead, stem)
        self._seen[stem] = hashlib.sha256(blob).digest()
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
        if not self.check_directory():
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
