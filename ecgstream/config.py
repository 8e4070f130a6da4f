"""The daemon's configuration: a TOML file plus command-line overrides.

Every section is a frozen dataclass whose numpydoc ``Attributes`` section
documents each key (``docs/config.md`` is generated from them by
``tools/gen_config_doc.py``). Loading is strict and fails closed:

* unknown sections and unknown keys are errors at every level (a typo is
  never a silently ignored setting);
* values are checked against the field's type (``int``, ``float``, ``str``,
  ``bool``; an integer is accepted where a float is expected, a bool never
  counts as a number) and then against the field's limits;
* **all** problems are collected into one :class:`ConfigError`, each with
  its dotted key and, for keys from the file, the line it is on, so
  ``ecgstream check-config FILE`` lists every problem at once;
* a program that cannot load its config exits with :data:`EXIT_CONFIG`
  (78, ``EX_CONFIG``), which systemd's ``RestartPreventExitStatus=`` keeps
  from restarting in a loop.

Relative paths in the file are relative to the file's directory; relative
paths given on the command line are relative to the working directory.

Secrets (the MQTT password) are never needed in the file: give
``password_file``, ``password_env`` or ``password_credential`` (a systemd
credential under ``$CREDENTIALS_DIRECTORY``) and call
:func:`resolve_secret` when connecting. An inline ``password`` works but
logs a warning. No ``repr`` of a config shows a password, and nothing here
logs one.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
import math
import os
import re
import tomllib
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from .exitcodes import EXIT_CONFIG
from .settings import DecisionConfig, LivenessConfig

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

log = logging.getLogger(__name__)

SOURCE_SCHEMES = ("wfdb", "serial", "mqtt", "mqtts", "synthetic")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CMDLINE = "command line"


# -- problems -----------------------------------------------------------------------
@dataclass(frozen=True)
class ConfigProblem:
    """One problem with the configuration.

    Attributes
    ----------
    key : str
        Dotted key (``"mqtt.port"``), a section (``"mqtt"``) or ``""`` for
        the file as a whole.
    message : str
        What is wrong and what is expected.
    line : int or None
        1-based line in the file, when known.
    origin : str or None
        The config file, ``"command line"`` for overrides, or None.
    """

    key: str
    message: str
    line: int | None = None
    origin: str | None = None

    def __str__(self) -> str:
        where = self.origin or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        parts = [p for p in (where, self.key) if p]
        return ": ".join([*parts, self.message])


class ConfigError(Exception):
    """The configuration is invalid; :attr:`problems` lists every problem.

    Parameters
    ----------
    problems : iterable of ConfigProblem or str
        Plain strings become problems without a key.
    """

    def __init__(self, problems: Iterable[ConfigProblem | str]) -> None:
        self.problems: list[ConfigProblem] = [
            p if isinstance(p, ConfigProblem) else ConfigProblem("", str(p)) for p in problems
        ]
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)

    @property
    def keys(self) -> list[str]:
        """Dotted keys of the problems, in order."""
        return [p.key for p in self.problems]


class _Invalid(ValueError):
    """Raised by a section's ``__post_init__``: ``(field, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{k}: {m}" for k, m in problems))


class _Section:
    """Validation shared by the sections defined here."""

    def _check(self) -> list[tuple[str, str]]:
        return []

    def __post_init__(self) -> None:
        problems = self._check()
        if problems:
            raise _Invalid(problems)


def _finite(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def default_store(environ: Mapping[str, str] | None = None) -> str:
    """Default template store: ``$STATE_DIRECTORY/templates`` under systemd, else /var/lib."""
    env = os.environ if environ is None else environ
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    return str(Path(state) / "templates") if state else "/var/lib/ecgstream/templates"


# -- sections -----------------------------------------------------------------------
@dataclass(frozen=True)
class DaemonConfig(_Section):
    """What the daemon reads, where its templates are, and how it runs.

    Attributes
    ----------
    source : str
        Source URI: ``serial:/dev/ttyUSB0?baud=115200&fs=250``,
        ``mqtt://host:1883/ecgstream/+/ecg``, ``wfdb:PATH`` or
        ``synthetic:``. Empty: none (``ecgstream run`` then needs
        ``--source``).
    store : str
        Template store directory. Default ``$STATE_DIRECTORY/templates``
        when systemd sets ``StateDirectory=``, else
        ``/var/lib/ecgstream/templates``.
    model : str
        Embedding model ``.tflite`` (its ``model.json`` card beside it).
        Empty: the model shipped with ecgstream. Must exist when given.
    model_threads : int
        CPU threads of the model interpreter (1..256).
    speed : float
        Replay speed of ``wfdb:`` sources: 1 = real time, 4 = four times
        faster, 0 = as fast as possible. Ignored by live sources.
    log_level : str
        ``DEBUG``, ``INFO``, ``WARNING``, ``ERROR`` or ``CRITICAL``
        (case-insensitive).
    queue_max_chunks : int
        Bound of the queue of sample chunks between the sources and the
        pipeline; when full the oldest chunk is dropped, counted and a gap
        marked (1..10000000).
    identify : bool
        For devices without a bound subject, identify the wearer among all
        enrolled subjects. False: such devices stay ``unknown``.
    publish_interval_s : float
        States are republished at least this often (seconds), so their
        ``valid_until`` keeps moving while the evidence holds (0 < x <= 3600).
    stdout : bool
        Also write the states as JSON lines to stdout when a broker is
        configured (without a broker they always go to stdout).
    """

    source: str = ""
    store: str = field(default="/var/lib/ecgstream/templates", metadata={"path": True})
    model: str = field(default="", metadata={"path": True, "exists": True})
    model_threads: int = 1
    speed: float = 1.0
    log_level: str = "INFO"
    queue_max_chunks: int = 10_000
    identify: bool = True
    publish_interval_s: float = 1.0
    stdout: bool = False

    def _check(self) -> list[tuple[str, str]]:
        p: list[tuple[str, str]] = []
        if self.source:
            scheme = self.source.split(":", 1)[0].lower() if ":" in self.source else ""
            if scheme not in SOURCE_SCHEMES:
                p.append(("source", f"{self.source!r} is not a source URI; use wfdb:PATH, "
                          "serial:DEVICE, mqtt://HOST:PORT/TOPIC or synthetic:"))
        if not self.store:
            p.append(("store", "must not be empty"))
        if not 1 <= self.model_threads <= 256:
            p.append(("model_threads", f"must be within 1..256, got {self.model_threads}"))
        if not (_finite(self.speed) and 0 <= self.speed <= 1e6):
            p.append(("speed", f"must be >= 0 (0 = as fast as possible), got {self.speed}"))
        if not isinstance(self.log_level, str) or self.log_level.upper() not in LOG_LEVELS:
            p.append(("log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"))
        else:
            object.__setattr__(self, "log_level", self.log_level.upper())
        if not 1 <= self.queue_max_chunks <= 10_000_000:
            p.append(("queue_max_chunks", f"must be within 1..10000000, got {self.queue_max_chunks}"))
        if not (_finite(self.publish_interval_s) and 0 < self.publish_interval_s <= 3600):
            p.append(("publish_interval_s", f"must be within (0, 3600] seconds, got {self.publish_interval_s}"))
        return p


@dataclass(frozen=True)
class DeviceConfig(_Section):
    """One wearable, by its device id (``[devices.<device_id>]``).

    Device ids are 1-64 characters of letters, digits, ``_``, ``.`` and
    ``-`` (they appear in MQTT topics), not starting with ``.`` or ``-``.

    Attributes
    ----------
    subject : str
        Subject bound to this device: the daemon verifies the wearer
        against this subject's template only. Empty: no binding (identify,
        or ``--subject``).
    fs : float or None
        Expected sampling rate of the device (Hz, within the DSP's input
        range 100..1000). Omit to accept the rate the device declares.
    """

    subject: str = ""
    fs: float | None = None

    def _check(self) -> list[tuple[str, str]]:
        p: list[tuple[str, str]] = []
        if self.subject and not _ID_RE.fullmatch(self.subject):
            p.append(("subject", f"invalid subject id {self.subject!r}: use 1-64 characters of "
                      "letters, digits, '_', '.' and '-', not starting with '.' or '-'"))
        if self.fs is not None and not (_finite(self.fs) and 100 <= self.fs <= 1000):
            p.append(("fs", f"must be within 100..1000 Hz, got {self.fs}"))
        return p


@dataclass(frozen=True)
class MqttConfig(_Section):
    """The MQTT broker the states are published to (and ``mqtt://`` sources read from).

    Attributes
    ----------
    host : str
        Broker host name or address. Empty: no broker; states go to stdout
        as JSON lines.
    port : int
        Broker port. Default 1883, or 8883 when ``tls = true``.
    prefix : str
        Topic prefix: topics are ``<prefix>/<device>/auth`` etc. No ``+``,
        ``#``, leading or trailing ``/``.
    client_id : str
        MQTT client id. Empty: ``ecgstream-<hostname>`` (plus the device id
        with one device). Two daemons on one broker need different ids.
    protocol : str
        ``"5"`` (MQTT 5, states carry a message expiry) or ``"3.1.1"``.
        A string: write ``protocol = "5"``.
    keepalive : int
        Keep-alive interval in seconds (5..65535).
    username : str
        User name. Empty: connect without credentials.
    password : str
        The password, inline. Works, but logs a warning: prefer
        ``password_file``, ``password_env`` or ``password_credential``.
        Never shown by ``repr`` or logged.
    password_file : str
        File holding the password (one trailing newline is ignored; an
        empty file means no password). Keep it mode 0600. Must exist when
        given.
    password_env : str
        Environment variable holding the password.
    password_credential : str
        Name of a systemd credential holding the password
        (``LoadCredential=NAME:PATH`` in the unit; read from
        ``$CREDENTIALS_DIRECTORY/NAME``).
    tls : bool
        Connect over TLS.
    ca_file : str
        PEM file of the CA(s) that sign the broker's certificate. Empty: the
        system's trust store. Needs ``tls = true``.
    cert_file : str
        Client certificate (PEM), for brokers that require one. Needs
        ``tls = true``.
    key_file : str
        Key of the client certificate (PEM); empty when ``cert_file`` holds
        it. Needs ``cert_file``.
    tls_insecure : bool
        Do not check that the broker's certificate names the host (the
        chain is still verified). For tests only; logged as a warning on
        every start. Needs ``tls = true``.
    on_connect_failure : str
        ``"retry"``: keep retrying with backoff (states are not published
        meanwhile, and consumers fail closed); ``"exit"``: exit non-zero if
        the first connection fails.
    retry_max_s : float
        Longest wait between reconnection attempts (seconds, > 0).
    """

    _section: ClassVar[str] = "mqtt"

    host: str = ""
    port: int = 1883
    prefix: str = "ecgstream"
    client_id: str = ""
    protocol: str = "5"
    keepalive: int = 30
    username: str = ""
    password: str = field(default="", repr=False, metadata={"secret": True})
    password_file: str = field(default="", metadata={"path": True, "exists": True})
    password_env: str = ""
    password_credential: str = ""
    tls: bool = False
    ca_file: str = field(default="", metadata={"path": True, "exists": True})
    cert_file: str = field(default="", metadata={"path": True, "exists": True})
    key_file: str = field(default="", metadata={"path": True, "exists": True})
    tls_insecure: bool = False
    on_connect_failure: str = "retry"
    retry_max_s: float = 60.0

    def _check(self) -> list[tuple[str, str]]:
        p: list[tuple[str, str]] = []
        if self.host and (len(self.host) > 253 or not re.fullmatch(r"[A-Za-z0-9_.:\[\]-]+", self.host)):
            p.append(("host", f"{self.host!r} is not a host name or address "
                      "(give the host only, no scheme, port or path)"))
        if not 1 <= self.port <= 65535:
            p.append(("port", f"must be within 1..65535, got {self.port}"))
        if (not self.prefix or len(self.prefix) > 128 or any(c in self.prefix for c in "+#\0")
                or self.prefix.startswith("/") or self.prefix.endswith("/") or "//" in self.prefix):
            p.append(("prefix", f"{self.prefix!r} is not a topic prefix: non-empty, no '+', '#', "
                      "no leading, trailing or double '/'"))
        if len(self.client_id) > 128 or not self.client_id.isprintable():
            p.append(("client_id", "must be printable and at most 128 characters"))
        if self.protocol not in ("5", "3.1.1"):
            p.append(("protocol", f"must be \"5\" or \"3.1.1\", got {self.protocol!r}"))
        if not 5 <= self.keepalive <= 65535:
            p.append(("keepalive", f"must be within 5..65535 seconds, got {self.keepalive}"))
        given = [k for k in ("password", "password_file", "password_env", "password_credential")
                 if getattr(self, k)]
        for k in given[1:]:
            p.append((k, f"give the password one way only (also set: {given[0]})"))
        if self.password_env and not _ENV_RE.fullmatch(self.password_env):
            p.append(("password_env", f"{self.password_env!r} is not an environment variable name"))
        if self.password_credential and not _ID_RE.fullmatch(self.password_credential):
            p.append(("password_credential", f"{self.password_credential!r} is not a credential name "
                      "(a plain file name)"))
        if not self.tls:
            for k in ("ca_file", "cert_file", "key_file", "tls_insecure"):
                if getattr(self, k):
                    p.append((k, "has no effect without tls = true"))
        elif self.key_file and not self.cert_file:
            p.append(("key_file", "needs cert_file"))
        if self.on_connect_failure not in ("retry", "exit"):
            p.append(("on_connect_failure", f"must be \"retry\" or \"exit\", got {self.on_connect_failure!r}"))
        if not (_finite(self.retry_max_s) and 0 < self.retry_max_s <= 86400):
            p.append(("retry_max_s", f"must be within (0, 86400] seconds, got {self.retry_max_s}"))
        return p


@dataclass(frozen=True)
class TemplatesConfig(_Section):
    """Where the key that encrypts the template store comes from.

    The first source that is present is used, in this order: the systemd
    credential, the environment variable, the key file (see
    :func:`ecgstream.templates.load_key`). Make a key with
    ``ecgstream keygen PATH``.

    Attributes
    ----------
    key_file : str
        Key file: 32 raw bytes, 64 hex digits or base64 of 32 bytes, mode
        0600. Empty: none.
    key_env : str
        Environment variable holding the key (hex or base64). Empty: the
        default ``ECGSTREAM_TEMPLATE_KEY``.
    key_credential : str
        systemd credential holding the key. Empty: the default
        ``template-key``.
    """

    key_file: str = field(default="", metadata={"path": True})
    key_env: str = ""
    key_credential: str = ""

    def _check(self) -> list[tuple[str, str]]:
        p: list[tuple[str, str]] = []
        if self.key_env and not _ENV_RE.fullmatch(self.key_env):
            p.append(("key_env", f"{self.key_env!r} is not an environment variable name"))
        if self.key_credential and not _ID_RE.fullmatch(self.key_credential):
            p.append(("key_credential", f"{self.key_credential!r} is not a credential name (a plain file name)"))
        return p


#: Sections made of one dataclass each (``[devices.<id>]`` is handled apart).
SECTIONS: dict[str, type] = {
    "daemon": DaemonConfig,
    "mqtt": MqttConfig,
    "templates": TemplatesConfig,
    "decision": DecisionConfig,
    "liveness": LivenessConfig,
}


@dataclass(frozen=True)
class Config:
    """The whole, validated configuration.

    Attributes
    ----------
    daemon, mqtt, templates, decision, liveness : section dataclasses
    devices : dict of str to DeviceConfig
        Per-device settings by device id.
    path : str or None
        The file it was loaded from.
    warnings : tuple of str
        Things that work but should not be (logged at load time).
    """

    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    devices: Mapping[str, DeviceConfig] = field(default_factory=dict)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    templates: TemplatesConfig = field(default_factory=TemplatesConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    path: str | None = None
    warnings: tuple[str, ...] = ()


# -- documentation ------------------------------------------------------------------
def field_docs(cls: type) -> dict[str, tuple[str, str]]:
    """Parse the numpydoc ``Attributes`` section of a dataclass.

    Returns
    -------
    dict of str to (str, str)
        Field name -> (type as documented, description). Entries such as
        ``a, b : float`` document several fields at once.
    """
    doc = (cls.__doc__ or "").expandtabs()
    lines = doc.splitlines()
    out: dict[str, tuple[str, str]] = {}
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == "Attributes")
    except StopIteration:
        return out
    body = lines[start + 2:]
    base = None
    names: list[str] = []
    typ = ""
    desc: list[str] = []

    def flush() -> None:
        for n in names:
            out[n] = (typ, " ".join(desc).strip())

    for ln in body:
        if not ln.strip():
            continue
        indent = len(ln) - len(ln.lstrip())
        if base is None:
            base = indent
        if indent < base:
            break
        if indent == base:
            if set(ln.strip()) == {"-"}:  # next section's underline
                break
            flush()
            head, _, typ = ln.strip().partition(" : ")
            names = [n.strip() for n in head.split(",")]
            typ = typ.strip()
            desc = []
        else:
            desc.append(ln.strip())
    flush()
    # A following section title would have been read as an entry: drop it.
    return {k: (t, " ".join(d.split())) for k, (t, d) in out.items() if k.isidentifier()}


# -- line numbers -------------------------------------------------------------------
_KEYPART = r"\s*(?:([A-Za-z0-9_-]+)|\"((?:[^\"\\]|\\.)*)\"|'([^']*)')\s*"
_DOTTED = re.compile(rf"(?:{_KEYPART}\.)*{_KEYPART}")


def _split_key(s: str) -> tuple[str, ...] | None:
    parts = []
    pos = 0
    one = re.compile(_KEYPART)
    while True:
        m = one.match(s, pos)
        if not m or m.end() == pos:
            return None
        parts.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
        if pos == len(s):
            return tuple(parts)
        if s[pos] != ".":
            return None
        pos += 1


class _LineIndex:
    """Where each table and key of a TOML text is (good enough, not a parser)."""

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        in_ml = False
        for no, raw in enumerate(text.splitlines(), start=1):
            ln = raw.strip()
            n_ml = ln.count('"""') + ln.count("'''")
            if in_ml:
                if n_ml % 2:
                    in_ml = False
                continue
            if not ln or ln.startswith("#"):
                continue
            m = re.match(r"\[\[(.*?)\]\]|\[(.*?)\]", ln)
            if m and not re.match(r"\[[^\]]*\]\s*=", ln):
                key = _split_key(m.group(1) if m.group(1) is not None else m.group(2))
                if key is not None:
                    table = key
                    self.lines.setdefault(table, no)
                continue
            m = re.match(rf"({_DOTTED.pattern})=", ln)
            if m:
                key = _split_key(m.group(1))
                if key is not None:
                    self.lines.setdefault(table + key, no)
            if n_ml % 2:
                in_ml = True

    def find(self, path: tuple[str, ...]) -> int | None:
        """Line of ``path``, else of its nearest enclosing table or key."""
        for n in range(len(path), 0, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return None


# -- loading ------------------------------------------------------------------------
class _Ctx:
    """Collects problems with their lines and origins."""

    def __init__(self, path: str | None, text: str, config_dir: Path | None) -> None:
        self.path = path
        self.index = _LineIndex(text)
        self.config_dir = config_dir
        self.from_cmdline: set[tuple[str, ...]] = set()
        self.problems: list[ConfigProblem] = []

    def add(self, path: tuple[str, ...], message: str) -> None:
        if path in self.from_cmdline:
            self.problems.append(ConfigProblem(".".join(path), message, None, _CMDLINE))
        else:
            self.problems.append(ConfigProblem(".".join(path), message, self.index.find(path), self.path))


def _type_name(tp: Any) -> str:
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join("none" if a is type(None) else _type_name(a) for a in get_args(tp))
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _describe(v: object) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(v), type(v).__name__)
    r = repr(v)
    return f"{kind} ({r if len(r) <= 40 else r[:37] + '...'})"


def _convert(value: object, tp: Any, from_cmdline: bool) -> tuple[bool, object, str]:
    """Check ``value`` against annotation ``tp``; returns (ok, value, message)."""
    if get_origin(tp) in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return True, None, ""
        for a in args:
            if a is type(None):
                continue
            ok, v, _ = _convert(value, a, from_cmdline)
            if ok:
                return True, v, ""
        return False, value, f"expected {_type_name(tp)}, got {_describe(value)}"
    if from_cmdline and isinstance(value, str) and tp is not str:
        s = value.strip()
        try:
            if tp is bool:
                low = s.lower()
                if low not in {"true", "false", "yes", "no", "on", "off", "1", "0"}:
                    raise ValueError
                value = low in {"true", "yes", "on", "1"}
            elif tp is int:
                value = int(s)
            elif tp is float:
                value = float(s)
        except ValueError:
            return False, value, f"expected {_type_name(tp)}, got {value!r}"
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            if not math.isfinite(value):  # type: ignore[arg-type]
                return False, value, f"must be a finite number, got {value!r}"
            value = float(value)  # type: ignore[arg-type]
    elif tp is str:
        ok = isinstance(value, str)
        if ok and "\0" in value:  # type: ignore[operator]
            return False, value, "must not contain NUL characters"
    else:  # pragma: no cover - every field is one of the above
        ok = isinstance(value, tp)
    if not ok:
        return False, value, f"expected {_type_name(tp)}, got {_describe(value)}"
    return True, value, ""


def _build_section(cls: type, raw: Mapping[str, Any], path: tuple[str, ...], ctx: _Ctx) -> Any:
    """Build dataclass ``cls`` from table ``raw`` at key ``path``; None on problems."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    n_before = len(ctx.problems)
    for k, v in raw.items():
        kp = (*path, str(k))
        if not isinstance(k, str) or k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields)}"
            ctx.add(kp, f"unknown key{hint}")
            continue
        ok, val, msg = _convert(v, hints[k], kp in ctx.from_cmdline)
        if not ok:
            ctx.add(kp, msg)
            continue
        meta = fields[k].metadata
        if meta.get("path") and isinstance(val, str) and val:
            val = os.path.expanduser(val)
            if ctx.config_dir is not None and kp not in ctx.from_cmdline:
                val = str(ctx.config_dir / val)
            if meta.get("exists") and not os.path.isfile(val):
                ctx.add(kp, f"no such file: {val}")
                continue
        kwargs[k] = val
    had_problems = len(ctx.problems) > n_before
    if had_problems and not issubclass(cls, _Section):
        return None  # a one-message check could blame a default: report the rest first
    try:
        obj = cls(**kwargs)
    except _Invalid as exc:
        for name, msg in exc.problems:
            # after type errors, report only what concerns keys that were accepted
            if not had_problems or name in kwargs:
                ctx.add((*path, name), msg)
        return None
    except (ValueError, TypeError) as exc:  # the settings dataclasses: one message
        msg = str(exc)
        named = [k for k in raw if isinstance(k, str) and re.search(rf"\b{re.escape(k)}\b", msg)]
        ctx.add((*path, named[0]) if named else path, msg)
        return None
    return None if had_problems else obj


def _apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any], ctx: _Ctx) -> None:
    for dotted, value in overrides.items():
        parts = tuple(str(dotted).split("."))
        want = 3 if parts[0] == "devices" else 2
        if parts[0] not in SECTIONS and parts[0] != "devices":
            ctx.problems.append(ConfigProblem(str(dotted), f"unknown section {parts[0]!r}; known: "
                                              f"{', '.join([*SECTIONS, 'devices'])}", None, _CMDLINE))
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
        if k not in SECTIONS and k != "devices":
            close = difflib.get_close_matches(str(k), [*SECTIONS, "devices"], n=1)
            hint = f"; did you mean [{close[0]}]?" if close else f"; known: {', '.join([*SECTIONS, 'devices'])}"
            ctx.add((str(k),), f"unknown section{hint}")

    tables: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        raw = merged.get(name, {})
        if not isinstance(raw, dict):
            ctx.add((name,), f"must be a table ([{name}]), got {_describe(raw)}")
            raw = None
        tables[name] = raw  # type: ignore[assignment]
    if tables["daemon"] is not None and "store" not in tables["daemon"]:
        tables["daemon"]["store"] = default_store(environ)
    mq = tables["mqtt"]
    if mq is not None and "port" not in mq:
        mq["port"] = 8883 if mq.get("tls") is True else 1883

    built: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        if tables[name] is not None:
            built[name] = _build_section(cls, tables[name], (name,), ctx)

    devices: dict[str, DeviceConfig] = {}
    raw_dev = merged.get("devices", {})
    if not isinstance(raw_dev, dict):
        ctx.add(("devices",), f"must be tables [devices.<device_id>], got {_describe(raw_dev)}")
    else:
        for dev, table in raw_dev.items():
            kp = ("devices", str(dev))
            if not isinstance(dev, str) or not _ID_RE.fullmatch(dev):
                ctx.add(kp, f"invalid device id {dev!r}: use 1-64 characters of letters, digits, "
                        "'_', '.' and '-', not starting with '.' or '-'")
                continue
            if not isinstance(table, dict):
                ctx.add(kp, f"must be a table [devices.{dev}], got {_describe(table)}")
                continue
            d = _build_section(DeviceConfig, table, kp, ctx)
            if d is not None:
                devices[dev] = d

    if ctx.problems:
        # file order, then the command line
        ordered = sorted(ctx.problems, key=lambda p: (p.origin == _CMDLINE, p.line or 0))
        raise ConfigError(ordered)

    warnings: list[str] = []
    m: MqttConfig = built["mqtt"]
    where = path or "config"
    if m.password:
        warnings.append(f"{where}: mqtt.password is inline; prefer password_file, password_env "
                        "or password_credential")
    if m.tls_insecure:
        warnings.append(f"{where}: mqtt.tls_insecure = true: the broker's host name is not checked")
    if m.host and m.tls and m.port == 1883:
        warnings.append(f"{where}: mqtt.tls = true with port 1883 (the plain-text port?)")
    if m.host and not m.tls and m.port == 8883:
        warnings.append(f"{where}: mqtt.port 8883 without tls = true (the TLS port?)")
    given = [k for k in ("password", "password_file", "password_env", "password_credential") if getattr(m, k)]
    if given and not m.username:
        warnings.append(f"{where}: mqtt.{given[0]} is set but username is empty: no credentials are sent")
    if m.host and not m.tls and m.username:
        warnings.append(f"{where}: mqtt credentials are sent in clear text (tls = false)")
    return Config(daemon=built["daemon"], devices=devices, mqtt=m, templates=built["templates"],
                  decision=built["decision"], liveness=built["liveness"], path=path,
                  warnings=tuple(warnings))


_LINE_RE = re.compile(r"at line (\d+)")


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
        :data:`EXIT_CONFIG` on it.
    """
    text = ""
    data: dict[str, Any] = {}
    spath = None if path is None else os.fspath(path)
    if spath is not None:
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
            m = _LINE_RE.search(str(exc))
            raise ConfigError([ConfigProblem("", f"not valid TOML: {exc}", int(m.group(1)) if m else None,
                                             spath)]) from None
    cfg = build_config(data, path=spath, text=text, overrides=overrides, environ=environ)
    for w in cfg.warnings:
        log.warning("%s", w)
    return cfg


# -- secrets ------------------------------------------------------------------------
def resolve_secret(
    section: Any,
    name: str = "password",
    *,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """Read a secret configured as ``<name>``, ``<name>_file``, ``<name>_env`` or ``<name>_credential``.

    Parameters
    ----------
    section : dataclass
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
    sec = getattr(section, "_section", type(section).__name__.lower())
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
