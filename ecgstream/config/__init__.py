"""The daemon's configuration: a TOML file plus command-line overrides.

- :mod:`.schema`: the sections as typed models (:mod:`ecgstream.core.fields`):
  strict types, limits and their messages, unknown keys refused, one
  ``description`` per key (``docs/config.md`` is generated from them by
  ``tools/gen_config_doc.py``);
- :mod:`.loader`: :func:`load_config` reads the file, merges the flags and
  collects **all** problems into one :class:`ConfigError`, each with its
  dotted key and, for keys from the file, its line, so
  ``ecgstream check-config FILE`` lists every problem at once;
- :mod:`.problems`: :class:`ConfigProblem`, :class:`ConfigError`, the line
  index of a TOML text;
- :mod:`.secrets`: :func:`resolve_secret`, the password from a file, the
  environment or a systemd credential.

A program that cannot load its config exits with :data:`EXIT_CONFIG` (78,
``EX_CONFIG``), which systemd's ``RestartPreventExitStatus=`` keeps from
restarting in a loop. Relative paths in the file are relative to the file's
directory; relative paths given on the command line are relative to the
working directory.
"""

from __future__ import annotations

from ..core.exitcodes import EXIT_CONFIG
from ..core.fields import describe
from .loader import build_config, default_store, load_config, type_name
from .problems import ConfigError, ConfigProblem
from .schema import SECTIONS, Config, DaemonConfig, DeviceConfig, MqttConfig, TemplatesConfig
from .secrets import resolve_secret

__all__ = [
    "EXIT_CONFIG",
    "SECTIONS",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "DaemonConfig",
    "DeviceConfig",
    "MqttConfig",
    "TemplatesConfig",
    "build_config",
    "default_store",
    "field_docs",
    "load_config",
    "resolve_secret",
]


def field_docs(cls: type) -> dict[str, tuple[str, str]]:
    """Field name -> (type as the docs write it, description), from the schema of section ``cls``."""
    return {name: (type_name(ann, doc=True), desc) for name, (ann, _, desc) in describe(cls).items()}
