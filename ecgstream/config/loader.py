"""Load a TOML file and command-line overrides into a validated :class:`~.schema.Config`.

All validation is the schema's (:mod:`.schema`, :mod:`ecgstream.core.settings`);
this module only reads the file, merges the flags, fills the defaults that
depend on the environment (the store under ``$STATE_DIRECTORY``, port 8883
with TLS), and turns the problems of :func:`ecgstream.core.fields.validator` into
:class:`ConfigProblem`\\ s, each
with its dotted key, the line it is on and, for an unknown key, a guess at
the key that was meant. Every problem of every section is collected into
one :class:`ConfigError`.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from ..core.fields import ID_RE, TYPE, UNKNOWN, Problem, Validator, defaults, lenient, validator
from .problems import ConfigError, ConfigProblem, LineIndex
from .schema import SECRET_KEYS, SECTIONS, Config, DeviceConfig, MqttConfig

__all__ = ["build_config", "default_store", "load_config", "type_name"]

log = logging.getLogger("ecgstream.config")

_CMDLINE = "command line"
_KNOWN = [*SECTIONS, "devices"]


def default_store(environ: Mapping[str, str] | None = None) -> str:
    """Default template store: ``$STATE_DIRECTORY/templates`` under systemd, else /var/lib."""
    env = os.environ if environ is None else environ
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    return str(Path(state) / "templates") if state else "/var/lib/ecgstream/templates"


# -- types, as the user reads them ------------------------------------------------------
def _base(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def type_name(tp: Any, doc: bool = False) -> str:
    """``"an integer"``, ``"a number or none"`` (``doc``: ``"int"``, ``"float or None"``)."""
    tp = _base(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join(("None" if doc else "none") if a is type(None) else type_name(a, doc)
                           for a in get_args(tp))
    if doc:
        return getattr(tp, "__name__", str(tp))
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _scalar(tp: Any) -> Any:
    """The non-None type of a field (``float`` for ``float | None``)."""
    tp = _base(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return next(_base(a) for a in get_args(tp) if a is not type(None))
    return tp


def _describe(v: object) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(v), type(v).__name__)
    r = repr(v)
    return f"{kind} ({r if len(r) <= 40 else r[:37] + '...'})"


@functools.cache
def _adapter(cls: type) -> Validator:
    """The validator of section ``cls``; made for the sections the file or the flags fill."""
    return validator(cls)


def _annotations(cls: type) -> dict[str, Any]:
    return _adapter(cls).annotations


# -- problems --------------------------------------------------------------------------
class _Ctx:
    """Collects problems with their lines and origins."""

    def __init__(self, path: str | None, text: str, config_dir: Path | None) -> None:
        self.path = path
        self.index = LineIndex(text)
        self.config_dir = config_dir
        self.from_cmdline: set[tuple[str, ...]] = set()
        self.problems: list[ConfigProblem] = []

    def add(self, path: tuple[str, ...], message: str) -> None:
        if path in self.from_cmdline:
            self.problems.append(ConfigProblem(".".join(path), message, None, _CMDLINE))
        else:
            self.problems.append(ConfigProblem(".".join(path), message, self.index.find(path), self.path))


def _message(cls: type, p: Problem, raw: Mapping[str, Any]) -> str:
    """What the user reads for problem ``p`` of section ``cls``."""
    fields = _annotations(cls)
    if p.kind == UNKNOWN:
        import difflib  # only for a key that is wrong

        close = difflib.get_close_matches(p.key, list(fields), n=1)
        return (f"unknown key; did you mean {close[0]!r}?" if close
                else f"unknown key; known keys: {', '.join(fields)}")
    if p.kind == TYPE:
        return f"expected {type_name(fields[p.key])}, got {_describe(raw[p.key])}"
    return p.message


def _from_cmdline(cls: type, raw: dict[str, Any], path: tuple[str, ...], ctx: _Ctx) -> None:
    """Flags arrive as strings: convert them to the field's type (leniently, as a shell user means)."""
    fields = _annotations(cls)
    for k in list(raw):
        v = raw[k]
        if (*path, k) not in ctx.from_cmdline or not isinstance(v, str) or k not in fields:
            continue
        tp = _scalar(fields[k])
        if tp is str:
            continue
        try:
            raw[k] = lenient(tp, v.strip())
        except ValueError:
            ctx.add((*path, k), f"expected {type_name(fields[k])}, got {v!r}")
            del raw[k]


def _not_text(v: Any) -> bool:
    """Whether ``v`` holds a string that is not Unicode text (a lone surrogate, from code, not TOML)."""
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(v, dict):
        return any(_not_text(k) or _not_text(x) for k, x in v.items())
    if isinstance(v, list | tuple):
        return any(_not_text(x) for x in v)
    return False


def _build_section(cls: type, raw: dict[str, Any], path: tuple[str, ...], ctx: _Ctx) -> Any:
    """Validate table ``raw`` at key ``path`` into ``cls``; None on problems."""
    n_before = len(ctx.problems)
    raw = dict(raw)
    for k in [k for k, v in raw.items() if _not_text(k) or _not_text(v)]:
        ctx.add((*path, str(k).encode("utf-8", "backslashreplace").decode()),
                "is not valid Unicode text")
        del raw[k]
    _from_cmdline(cls, raw, path, ctx)
    cmdline = {p[-1] for p in ctx.from_cmdline if p[:-1] == path}
    context = {"config_dir": str(ctx.config_dir) if ctx.config_dir else None, "cmdline": cmdline}
    obj, problems = _adapter(cls).validate(raw, context)
    for p in problems:
        ctx.add((*path, p.key), _message(cls, p, raw))
    return obj if len(ctx.problems) == n_before else None


def _apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any], ctx: _Ctx) -> None:
    for dotted, value in overrides.items():
        parts = tuple(str(dotted).split("."))
        want = 3 if parts[0] == "devices" else 2
        if parts[0] not in _KNOWN:
            ctx.problems.append(ConfigProblem(str(dotted), f"unknown section {parts[0]!r}; known: "
                                              f"{', '.join(_KNOWN)}", None, _CMDLINE))
            continue
        if len(parts) != want or not all(parts):
            form = "devices.<id>.<key>" if want == 3 else "<section>.<key>"
            ctx.problems.append(ConfigProblem(str(dotted), f"override keys look like {form}", None, _CMDLINE))
            continue
        table = data
        for p in parts[:-1]:
            nxt = table.get(p)
            if not isinstance(nxt, dict):
                nxt = table[p] = {}
            table = nxt
        table[parts[-1]] = value
        ctx.from_cmdline.add(parts)


def _devices(raw_dev: Any, ctx: _Ctx) -> dict[str, DeviceConfig]:
    devices: dict[str, DeviceConfig] = {}
    if not isinstance(raw_dev, dict):
        ctx.add(("devices",), f"must be tables [devices.<device_id>], got {_describe(raw_dev)}")
        return devices
    for dev, table in raw_dev.items():
        kp = ("devices", str(dev))
        if not isinstance(dev, str) or not ID_RE.fullmatch(dev):
            ctx.add(kp, f"invalid device id {dev!r}: use 1-64 characters of letters, digits, "
                    "'_', '.' and '-', not starting with '.' or '-'")
        elif not isinstance(table, dict):
            ctx.add(kp, f"must be a table [devices.{dev}], got {_describe(table)}")
        elif (d := _build_section(DeviceConfig, table, kp, ctx)) is not None:
            devices[dev] = d
    return devices


def _warnings(m: MqttConfig, where: str) -> list[str]:
    """Settings that work but should not be."""
    w: list[str] = []
    if m.password:
        w.append(f"{where}: mqtt.password is inline; prefer password_file, password_env "
                 "or password_credential")
    if m.tls_insecure:
        w.append(f"{where}: mqtt.tls_insecure = true: the broker's host name is not checked")
    if m.host and m.tls and m.port == 1883:
        w.append(f"{where}: mqtt.tls = true with port 1883 (the plain-text port?)")
    if m.host and not m.tls and m.port == 8883:
        w.append(f"{where}: mqtt.port 8883 without tls = true (the TLS port?)")
    given = [k for k in SECRET_KEYS if getattr(m, k)]
    if given and not m.username:
        w.append(f"{where}: mqtt.{given[0]} is set but username is empty: no credentials are sent")
    if m.host and not m.tls and m.username:
        w.append(f"{where}: mqtt credentials are sent in clear text (tls = false)")
    return w


def build_config(
    data: Mapping[str, Any],
    *,
    path: str | None = None,
    text: str = "",
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate parsed TOML ``data`` (plus ``overrides``) into a :class:`Config`.

    Parameters
    ----------
    data : mapping
        What :func:`tomllib.loads` returned.
    path : str or None
        The file, for messages and for resolving relative paths.
    text : str
        The file's text, to find the lines of keys.
    overrides : mapping of str to object, optional
        Dotted key (``"daemon.source"``, ``"devices.strap1.subject"``) to
        value, from command-line flags; they replace the file's values and
        are validated the same way (strings are converted to the field's
        type).
    environ : mapping, optional
        Environment for defaults (``STATE_DIRECTORY``); default os.environ.

    Raises
    ------
    ConfigError
        With every problem found.
    """
    ctx = _Ctx(path, text, Path(path).resolve().parent if path else None)
    if not isinstance(data, Mapping):
        raise ConfigError([ConfigProblem("", "the config must be a table", None, path)])
    merged: dict[str, Any] = copy.deepcopy(dict(data))
    _apply_overrides(merged, overrides or {}, ctx)

    for k in merged:
        if k not in _KNOWN:
            import difflib  # only for a section that is wrong

            close = difflib.get_close_matches(str(k), _KNOWN, n=1)
            hint = f"; did you mean [{close[0]}]?" if close else f"; known: {', '.join(_KNOWN)}"
            ctx.add((str(k),), f"unknown section{hint}")

    tables: dict[str, dict[str, Any] | None] = {}
    for name in SECTIONS:
        raw = merged.get(name, {})
        if not isinstance(raw, dict):
            ctx.add((name,), f"must be a table ([{name}]), got {_describe(raw)}")
            raw = None
        tables[name] = raw
    if (d := tables["daemon"]) is not None and "store" not in d:
        d["store"] = default_store(environ)
    if (mq := tables["mqtt"]) and "port" not in mq:  # an empty [mqtt] keeps the default, 1883
        mq["port"] = 8883 if mq.get("tls") is True else 1883

    # A section that neither the file nor the flags fill is its defaults: its
    # validator is not built (the start-up cost of the declarative config).
    built = {name: _build_section(cls, tables[name], (name,), ctx) if tables[name] else defaults(cls)
             for name, cls in SECTIONS.items() if tables[name] is not None}
    devices = _devices(merged.get("devices", {}), ctx)

    if ctx.problems:
        # file order, then the command line
        ordered = sorted(ctx.problems, key=lambda p: (p.origin == _CMDLINE, p.line or 0))
        raise ConfigError(ordered)
    return Config(**built, devices=devices, path=path,
                  warnings=tuple(_warnings(built["mqtt"], path or "config")))


_LINE_PREFIX = "at line "


def load_config(
    path: str | os.PathLike[str] | None,
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load, validate and merge a TOML config file and command-line overrides.

    Parameters
    ----------
    path : str or PathLike or None
        The TOML file; None: defaults plus ``overrides``.
    overrides : mapping of str to object, optional
        Dotted keys to values (see :func:`build_config`).
    environ : mapping, optional
        Environment for defaults; default os.environ.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        The file cannot be read or parsed, or any value is invalid; every
        problem is listed with its key and line. Exit with
        :data:`~ecgstream.core.exitcodes.EXIT_CONFIG` on it.
    """
    text = ""
    data: dict[str, Any] = {}
    spath = None if path is None else os.fspath(path)
    if spath is not None:
        import tomllib  # a run from flags alone reads no TOML

        try:
            with open(spath, "rb") as f:
                raw = f.read(4 << 20)
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError([ConfigProblem("", f"cannot read the config file: {reason}", None, spath)]) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            msg = str(exc)
            line = None
            if _LINE_PREFIX in msg:
                digits = msg.split(_LINE_PREFIX, 1)[1].split()[0].rstrip(",)")
                line = int(digits) if digits.isdigit() else None
            raise ConfigError([ConfigProblem("", f"not valid TOML: {exc}", line, spath)]) from None
    cfg = build_config(data, path=spath, text=text, overrides=overrides, environ=environ)
    for w in cfg.warnings:
        log.warning("%s", w)
    return cfg
