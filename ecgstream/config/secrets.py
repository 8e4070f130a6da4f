"""Secrets of the configuration (the MQTT password), read only when connecting.

A secret is never needed in the file: give ``password_file``,
``password_env`` or ``password_credential`` (a systemd credential under
``$CREDENTIALS_DIRECTORY``). An inline ``password`` works but the loader
warns. Nothing here logs a secret, and no ``repr`` of a config shows one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .problems import ConfigError, ConfigProblem

__all__ = ["resolve_secret"]

log = logging.getLogger("ecgstream.config")


_SECTION_NAMES = {"MqttConfig": "mqtt", "TemplatesConfig": "templates"}


def resolve_secret(
    section: Any,
    name: str = "password",
    *,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """Read a secret configured as ``<name>``, ``<name>_file``, ``<name>_env`` or ``<name>_credential``.

    Parameters
    ----------
    section : section model
        A config section, e.g. ``cfg.mqtt``.
    name : str
        The secret's key in the section.
    environ : mapping, optional
        Environment (``CREDENTIALS_DIRECTORY``, the variable); default os.environ.

    Returns
    -------
    str or None
        The secret, or None when none is configured or the configured
        file, credential or variable is empty (a broker without a
        password: the systemd units always load the ``mqtt-password``
        credential, empty when there is no password).

    Raises
    ------
    ConfigError
        The configured source is missing or unreadable; the problem
        names the key (never the secret).
    """
    env = os.environ if environ is None else environ
    sec = _SECTION_NAMES.get(type(section).__name__, type(section).__name__.lower())
    inline = getattr(section, name, "")
    if inline:
        return inline

    def fail(key: str, msg: str) -> ConfigError:
        return ConfigError([ConfigProblem(f"{sec}.{key}", msg)])

    def read(p: Path, key: str, what: str) -> str | None:
        try:
            value = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise fail(key, f"{what} {p} does not exist") from None
        except PermissionError:
            raise fail(key, f"{what} {p} is not readable by this user") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(key, f"cannot read {what} {p}: {getattr(exc, 'strerror', None) or exc}") from None
        value = value.removesuffix("\n").removesuffix("\r")
        if not value:
            log.info("%s.%s: %s %s is empty: no %s", sec, key, what, p, name)
            return None
        return value

    f = getattr(section, f"{name}_file", "")
    if f:
        return read(Path(f), f"{name}_file", "file")
    var = getattr(section, f"{name}_env", "")
    if var:
        value = env.get(var)
        if value is None:
            raise fail(f"{name}_env", f"environment variable {var} is not set")
        if not value:
            log.info("%s.%s_env: environment variable %s is empty: no %s", sec, name, var, name)
            return None
        return value
    cred = getattr(section, f"{name}_credential", "")
    if cred:
        d = env.get("CREDENTIALS_DIRECTORY")
        if not d:
            raise fail(f"{name}_credential", f"credential {cred!r} needs $CREDENTIALS_DIRECTORY "
                       f"(run under systemd with LoadCredential={cred}:PATH)")
        return read(Path(d) / cred, f"{name}_credential", f"credential {cred!r} at")
    return None
