"""The template key: where the 32-byte AES key comes from, and making one.

:func:`load_key` tries a systemd credential
(``$CREDENTIALS_DIRECTORY/template-key``), an environment variable
(``ECGSTREAM_TEMPLATE_KEY``), then a key file, in that order.
:func:`create_key_file` makes a new key (``ecgstream keygen``).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from .model import TemplateKeyError, TemplateKeyMissing

__all__ = ["DEFAULT_KEY_CREDENTIAL", "DEFAULT_KEY_ENV", "KEY_BYTES", "create_key_file", "fsync_dir",
           "load_key", "parse_key"]

log = logging.getLogger(__name__)

KEY_BYTES = 32
DEFAULT_KEY_CREDENTIAL = "template-key"
DEFAULT_KEY_ENV = "ECGSTREAM_TEMPLATE_KEY"


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
    fsync_dir(p.parent)
    log.info("wrote a new template key to %s (mode 0600)", p)
    return p


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries durable (after a rename or a new file); best effort."""
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
