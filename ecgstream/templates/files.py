"""The template store's guards on the file system (issue 11, part 4).

What :class:`~.store.TemplateStore` does to a file or the store directory
before trusting it, and how it writes one:

- :func:`check_store_dir`: the store must be a real directory (not a
  symbolic link), without group or other permission bits, owned by this
  user (or root);
- :func:`open_checked`: a template file is opened with ``O_NOFOLLOW`` and
  must be a regular file with the same owner and mode rules;
- :func:`subject_lock`: the exclusive ``flock`` of ``.<subject>.lock`` that
  every write of a subject holds;
- :func:`file_digest`: the SHA-256 of the file at a path now (what a write
  compares with what the store last saw);
- :func:`atomic_write`: a temporary file in the store, mode 0600, ``fsync``,
  :func:`os.replace`, ``fsync`` of the directory.

Each refusal is a :class:`~.model.TemplateError` that says what to fix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .keys import fsync_dir
from .model import TemplateError

__all__ = ["ABSENT", "LOCK_SUFFIX", "atomic_write", "check_store_dir", "file_digest", "open_checked",
           "subject_lock"]

LOCK_SUFFIX = ".lock"
#: The digest :func:`file_digest` gives for a path with no file.
ABSENT = b""


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):o}"


def _owner_ok(st: os.stat_result) -> bool:
    return st.st_uid in (os.geteuid(), 0)


def check_owner_and_mode(st: os.stat_result, what: str, mode: str, path: Path) -> None:
    """Refuse ``path`` (a store file or the store) owned by another user or open to group/other."""
    if not _owner_ok(st):
        raise TemplateError(f"{what} belongs to uid {st.st_uid}, not to this user "
                            f"(uid {os.geteuid()}): refused (chown it)", path)
    if st.st_mode & 0o077:
        raise TemplateError(f"{what} has group/other permissions (mode {_mode(st)}): "
                            f"refused (chmod {mode} {path})", path)


def check_store_dir(d: Path) -> bool:
    """Check the store directory ``d`` (module docs); False when it does not exist.

    Raises
    ------
    TemplateError
        A symbolic link, not a directory, group/other permissions, or
        another owner.
    """
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise TemplateError(f"cannot examine the template store: {exc.strerror}", d) from None
    if stat.S_ISLNK(st.st_mode):
        raise TemplateError("the template store is a symbolic link: refused (point the store at the "
                            "real directory)", d)
    if not stat.S_ISDIR(st.st_mode):
        raise TemplateError("the template store is not a directory", d)
    check_owner_and_mode(st, "the template store", "700", d)
    return True


def open_checked(path: Path) -> int:
    """An fd of ``path`` opened with O_NOFOLLOW and checked (module docs)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TemplateError("template file is a symbolic link: refused", path) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TemplateError("template file is not a regular file: refused", path)
        check_owner_and_mode(st, "template file", "600", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def file_digest(path: Path, limit: int) -> bytes:
    """SHA-256 of the first ``limit`` bytes of the file now at ``path``
    (:data:`ABSENT` when none; a link or other oddity hashes its name)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return ABSENT
    except OSError:
        return hashlib.sha256(b"unreadable:" + os.fsencode(path)).digest()
    with os.fdopen(fd, "rb") as f:
        return hashlib.sha256(f.read(limit)).digest()


@contextlib.contextmanager
def subject_lock(directory: Path, subject: str) -> Iterator[None]:
    """Hold the exclusive flock of ``subject`` (``.<subject>.lock`` in ``directory``)."""
    lock = directory / f".{subject}{LOCK_SUFFIX}"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        raise TemplateError(f"cannot open the enrolment lock: {exc.strerror}", lock) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def atomic_write(directory: Path, path: Path, subject: str, blob: bytes) -> None:
    """Replace ``path`` (in ``directory``) by ``blob`` atomically, mode 0600 (module docs)."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{subject}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(directory)
    except OSError as exc:
        raise TemplateError(f"cannot write template: {exc.strerror or exc}", path) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
