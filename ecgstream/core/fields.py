"""Typed, checked settings: the field types and the section decorator of every config model.

A section (:func:`section`) is a frozen standard-library dataclass whose
fields are declared with their type and limits: ``Annotated[Int, within(1,
256)]``, each limit carrying the sentence the user reads, and a
``description`` (:func:`Field`) from which ``docs/config.md`` is generated.
Values are converted by msgspec in strict mode (``msgspec.convert(value,
type, strict=True)``): a bool never counts as a number, ``"1883"`` is not an
integer, an integer is accepted where a float is asked for (and becomes a
float); floats must be finite; unknown keys are refused. A value that
already has its field's type is what strict conversion would return, so it
is taken as it is: msgspec is imported by the first value that needs
converting or is wrong, and a file or flags whose values all have their
types (``examples/ecgstream.toml``, ``ecgstream run --source ...``) are
validated without it. So the TOML loader
(:mod:`ecgstream.config`) has no type rules of its own: it turns the
problems of :func:`validator` into keys and lines.

Each field is converted on its own, not the table at once, because msgspec
stops at the first error and ``check-config`` lists every problem of every
key. Checks that involve several fields are a section's ``_cross`` method,
returning ``(key, message)`` pairs; they run once every field is valid.
Construction in code (``DecisionConfig(window_beats=12)``,
``dataclasses.replace``) validates the same way in ``__post_init__`` and
raises :class:`SettingsError`, a ``ValueError`` naming each key; only the
file checks (``exists``) and the resolution of relative paths need the
loader's context.

Why msgspec and not pydantic (which this was, 1832d44..9021ab3): start-up on
the edge. Every daemon imports the settings, so it imported pydantic: in
``-X importtime`` on a gateway-sized machine (2 shared cores, numpy and the
standard library already loaded), ``pydantic.dataclasses`` costs ~110 ms
and ~14 MB of peak RSS, msgspec ~12-25 ms (with the ``decimal``, ``uuid`` and
``typing_extensions`` it imports) and ~4 MB; ``ecgstream run`` with a
live source started 1.37x slower than before pydantic
(``bench/bench_startup.py``, docs/benchmarks/startup.md has the figures
with msgspec). Why dataclasses and not ``msgspec.Struct``: the stages and
the tests use these settings as the frozen dataclasses they were
(``dataclasses.replace``, ``dataclasses.fields``, equality, ``repr``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import types
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

__all__ = [
    "ID_RE", "Bool", "Check", "Field", "Float", "Int", "Path", "SettingsError", "Text", "check",
    "defaults", "describe", "env_name", "ident", "lenient", "one_of", "section", "validator", "within",
]

#: Ids of subjects, devices and credentials: they appear in topics and file names.
ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Kinds of :class:`Problem`: a key the section does not have, a value of the wrong type,
#: a value that breaks a limit (or a cross-field check).
UNKNOWN, TYPE, VALUE = "unknown", "type", "value"


class Check:
    """A limit of a field: ``run(value)`` returns the value (maybe normalised) or raises ValueError.

    ``run(value, context, name)`` when ``with_context``: the loader's context
    (``config_dir``, ``cmdline``), None for a section built in code.
    """

    __slots__ = ("run", "with_context")

    def __init__(self, run: Callable[..., Any], with_context: bool = False) -> None:
        self.run = run
        self.with_context = with_context


def check(ok: Callable[[Any], bool], message: str, show: bool = True) -> Check:
    """A limit: ``ok(value)`` must hold, else ``"<message>, got <value>"``."""

    def run(v: Any) -> Any:
        if not ok(v):
            raise ValueError(f"{message}, got {v!r}" if show else message)
        return v

    return Check(run)


def within(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False,
           unit: str = "") -> Check:
    """A range: ``lo..hi``, or ``(lo, hi]`` style when an end is open; ``unit`` follows it."""
    if lo_open or hi_open:
        span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    else:
        span = f"{lo:g}..{hi:g}"
    return check(lambda v: ((v > lo) if lo_open else (v >= lo)) and ((v < hi) if hi_open else (v <= hi)),
                 f"must be within {span}{unit}")


def one_of(*choices: str, fold_case: bool = False, quote: bool = True) -> Check:
    """One of ``choices`` (upper-cased first with ``fold_case``)."""
    shown = " or ".join(f'"{c}"' for c in choices) if quote else ", ".join(choices)

    def run(v: str) -> str:
        w = v.upper() if fold_case else v
        if w not in choices:
            raise ValueError(f"must be {'one of ' if not quote else ''}{shown}, got {v!r}")
        return w

    return Check(run)


def ident(what: str) -> Check:
    """An id (:data:`ID_RE`) or empty."""

    def run(v: str) -> str:
        if v and not ID_RE.fullmatch(v):
            raise ValueError(f"invalid {what} {v!r}: use 1-64 characters of letters, digits, "
                             "'_', '.' and '-', not starting with '.' or '-'")
        return v

    return Check(run)


def env_name() -> Check:
    """An environment variable name or empty."""

    def run(v: str) -> str:
        if v and not ENV_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not an environment variable name")
        return v

    return Check(run)


def _no_nul(v: str) -> str:
    if "\0" in v:
        raise ValueError("must not contain NUL characters")
    return v


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError(f"must be a finite number, got {v!r}")
    return v


def _path_check(exists: bool) -> Check:
    """Resolve a path against the loader's context (``config_dir``, ``cmdline``); check it exists."""

    def run(v: str, ctx: Mapping[str, Any] | None, name: str) -> str:
        if not v or ctx is None:
            return v  # built in code: the value is the caller's, as given
        v = os.path.expanduser(v)
        base = ctx.get("config_dir")
        if base is not None and name not in ctx.get("cmdline", ()):
            v = os.path.join(base, v)
        if exists and not os.path.isfile(v):
            raise ValueError(f"no such file: {v}")
        return v

    return Check(run, with_context=True)


Int = int
Float = Annotated[float, Check(_finite)]
Bool = bool
Text = Annotated[str, Check(_no_nul)]


def Path(exists: bool = False) -> Any:  # noqa: N802 - reads as a type in the models
    """A file or directory path: relative to the config file's folder (flags: the working directory)."""
    return Annotated[str, Check(_no_nul), _path_check(exists)]


def Field(default: Any, *, description: str = "", repr: bool = True) -> Any:  # noqa: N802, A002
    """A field's default and its ``description`` (the line of ``docs/config.md``)."""
    return dataclasses.field(default=default, repr=repr, metadata={"description": description})


# -- validation ---------------------------------------------------------------------------
class SettingsError(ValueError):
    """A section built in code with invalid values; :attr:`problems` is ``[(key, message)]``."""

    def __init__(self, cls: type, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__(f"{cls.__name__}: " + "; ".join(f"{k}: {m}" for k, m in problems))


class _WrongType(ValueError):
    """A value of another type than its field's (msgspec's message)."""


class Problem:
    """One problem of a table: its key, :data:`UNKNOWN`, :data:`TYPE` or :data:`VALUE`, the message."""

    __slots__ = ("key", "kind", "message")

    def __init__(self, key: str, kind: str, message: str) -> None:
        self.key, self.kind, self.message = key, kind, message

    def __repr__(self) -> str:
        return f"Problem({self.key!r}, {self.kind!r}, {self.message!r})"


def _split(tp: Any) -> tuple[Any, tuple[Check, ...]]:
    """``(type for msgspec, checks)`` of an annotation: ``Annotated[float, a, b] | None`` gives
    ``(float | None, (a, b))`` (the checks apply to a value that is not None)."""
    checks: tuple[Check, ...] = ()
    if get_origin(tp) in (Union, types.UnionType):
        arms = []
        for a in get_args(tp):
            t, c = _split(a)
            arms.append(t)
            checks += c
        return functools.reduce(lambda x, y: x | y, arms), checks
    if get_origin(tp) is Annotated:
        base, *meta = get_args(tp)
        return base, tuple(m for m in meta if isinstance(m, Check))
    return tp, checks


class Validator:
    """The fields of section ``cls``, each converted and checked on its own (module docs)."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.annotations = {f.name: f.type for f in dataclasses.fields(cls)}
        self.fields = {name: _split(tp) for name, tp in self.annotations.items()}
        #: field -> the types a value already has when msgspec would return it unchanged
        self.as_is = {name: frozenset(get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,))
                      for name, (tp, _) in self.fields.items()}
        self.cross = getattr(cls, "_cross", None)

    def _field(self, name: str, v: Any, ctx: Mapping[str, Any] | None) -> Any:
        tp, checks = self.fields[name]
        if type(v) not in self.as_is[name]:  # else strict conversion is the identity
            import msgspec  # imported by the first value that needs converting (or is wrong)

            try:
                v = msgspec.convert(v, tp, strict=True)
            except msgspec.ValidationError as exc:
                raise _WrongType(str(exc)) from None
        if v is not None:
            for c in checks:
                v = c.run(v, ctx, name) if c.with_context else c.run(v)
        return v

    def problems(self, obj: Any, values: Mapping[str, Any], ctx: Mapping[str, Any] | None) -> list[Problem]:
        """Convert and check ``values`` into the fields of ``obj`` (set in place); what is wrong."""
        out = [Problem(str(k), UNKNOWN, "unknown key") for k in values if k not in self.fields]
        for name, v in values.items():
            if name not in self.fields:
                continue
            try:
                object.__setattr__(obj, name, self._field(name, v, ctx))
            except _WrongType as exc:
                out.append(Problem(name, TYPE, str(exc)))
            except ValueError as exc:
                out.append(Problem(name, VALUE, str(exc)))
        if not out and self.cross is not None:
            out += [Problem(k, VALUE, m) for k, m in self.cross(obj)]
        return out

    def validate(self, raw: Mapping[str, Any], context: Mapping[str, Any] | None = None) -> tuple[Any, list[Problem]]:
        """A section from table ``raw`` (absent keys at their defaults, which are not
        validated); ``(section, [])``, or ``(None, problems)``."""
        obj = defaults(self.cls)
        problems = self.problems(obj, raw, context)
        return (None, problems) if problems else (obj, [])


@functools.cache
def validator(cls: type) -> Validator:
    """The :class:`Validator` of section ``cls``, made on first use."""
    return Validator(cls)


T = TypeVar("T")


def section(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen dataclass whose construction converts and checks every field."""

    def __post_init__(self: Any) -> None:  # noqa: N807
        v = validator(type(self))
        problems = v.problems(self, {n: getattr(self, n) for n in v.fields}, None)
        if problems:
            raise SettingsError(type(self), [(p.key, p.message) for p in problems])

    cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
    return dataclasses.dataclass(frozen=True)(cls)


def defaults(cls: type[T]) -> T:
    """The section ``cls`` with every field at its default, equal to ``cls()``, without checking it.

    Defaults satisfy their limits and the section's ``_cross()``
    (``tests/test_config.py`` checks ``defaults(cls) == cls()`` for every
    section), so a section the file and the flags leave empty needs no
    validation; this is what the loader returns for it.
    """
    obj = object.__new__(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        object.__setattr__(obj, f.name, default)
    return obj


def describe(cls: type) -> dict[str, tuple[Any, Any, str]]:
    """Field name -> (annotation, default, description) of a section, in order."""
    return {f.name: (f.type, f.default, f.metadata.get("description", "")) for f in dataclasses.fields(cls)}


_WORDS = {"true": True, "yes": True, "on": True, "t": True, "y": True, "1": True,
          "false": False, "no": False, "off": False, "f": False, "n": False, "0": False}


def lenient(tp: Any, s: str) -> Any:
    """A command-line string as the (non-None) type ``tp`` of a field, as a shell user means it
    (``"2.5"``, ``"1885"``, ``"no"``); raises ValueError."""
    if tp is bool:
        if s.lower() in _WORDS:
            return _WORDS[s.lower()]
        raise ValueError(s)
    import msgspec

    try:
        return msgspec.convert(s, tp, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(s) from exc
