"""Typed, checked settings: the field types and the section decorator of every config model.

The daemon's settings are pydantic v2 dataclasses (:func:`section`): strict
types (a bool never counts as a number, ``"1883"`` is not an integer, an
integer is accepted where a float is asked for), finite floats, unknown keys
refused (``extra="forbid"``). Limits are declared beside each field
(``Annotated[int, within(1, 256)]``), and every limit carries the sentence
the user reads, so the TOML loader (:mod:`ecgstream.config`) needs no
validation code of its own: it maps pydantic's errors to keys and lines.

Why pydantic *dataclasses* and not ``BaseModel``: the stages (``decision``,
``liveness``) and the tests use these settings as the frozen dataclasses they
were (``dataclasses.replace``, ``dataclasses.fields``, keyword construction,
equality); a pydantic dataclass is all of that and validated. Construction in
code validates the same way (a :class:`pydantic.ValidationError`, which is a
``ValueError``); only the file checks (``exists``) and the resolution of
relative paths need the loader's context.

Checks that involve several fields are a section's ``_cross`` method,
returning ``(key, message)`` pairs; :func:`section` turns them into one
validation error that names each key, so the loader reports each problem at
its own line.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, ConfigDict, Strict, ValidationInfo
from pydantic.dataclasses import dataclass as _pydantic_dataclass
from pydantic_core import PydanticCustomError

__all__ = [
    "ID_RE", "Bool", "Float", "Int", "Path", "Text", "check", "env_name", "ident", "one_of",
    "defaults", "section", "within",
]

#: Ids of subjects, devices and credentials: they appear in topics and file names.
ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Type of a cross-field problem (the loader expands ``ctx["problems"]``).
CROSS = "cross_field"


def _no_nul(v: str) -> str:
    if "\0" in v:
        raise ValueError("must not contain NUL characters")
    return v


def check(ok: Callable[[Any], bool], message: str, show: bool = True) -> AfterValidator:
    """A limit: ``ok(value)`` must hold, else ``"<message>, got <value>"``."""

    def run(v: Any) -> Any:
        if not ok(v):
            raise ValueError(f"{message}, got {v!r}" if show else message)
        return v

    return AfterValidator(run)


def within(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False,
           unit: str = "") -> AfterValidator:
    """A range: ``lo..hi``, or ``(lo, hi]`` style when an end is open; ``unit`` follows it."""
    if lo_open or hi_open:
        span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    else:
        span = f"{lo:g}..{hi:g}"
    return check(lambda v: ((v > lo) if lo_open else (v >= lo)) and ((v < hi) if hi_open else (v <= hi)),
                 f"must be within {span}{unit}")


def one_of(*choices: str, fold_case: bool = False, quote: bool = True) -> AfterValidator:
    """One of ``choices`` (upper-cased first with ``fold_case``)."""
    shown = " or ".join(f'"{c}"' for c in choices) if quote else ", ".join(choices)

    def run(v: str) -> str:
        w = v.upper() if fold_case else v
        if w not in choices:
            raise ValueError(f"must be {'one of ' if not quote else ''}{shown}, got {v!r}")
        return w

    return AfterValidator(run)


def ident(what: str) -> AfterValidator:
    """An id (:data:`ID_RE`) or empty."""

    def run(v: str) -> str:
        if v and not ID_RE.fullmatch(v):
            raise ValueError(f"invalid {what} {v!r}: use 1-64 characters of letters, digits, "
                             "'_', '.' and '-', not starting with '.' or '-'")
        return v

    return AfterValidator(run)


def env_name() -> AfterValidator:
    """An environment variable name or empty."""

    def run(v: str) -> str:
        if v and not ENV_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not an environment variable name")
        return v

    return AfterValidator(run)


class _PathCheck:
    """Resolve a path against the loader's context (``config_dir``, ``cmdline``); check it exists."""

    def __init__(self, exists: bool) -> None:
        self.exists = exists

    def __call__(self, v: str, info: ValidationInfo) -> str:
        ctx = info.context
        if not v or not isinstance(ctx, dict):
            return v  # built in code: the value is the caller's, as given
        v = os.path.expanduser(v)
        base = ctx.get("config_dir")
        if base is not None and info.field_name not in ctx.get("cmdline", ()):
            v = os.path.join(base, v)
        if self.exists and not os.path.isfile(v):
            raise ValueError(f"no such file: {v}")
        return v


Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
Text = Annotated[str, Strict(), AfterValidator(_no_nul)]


def Path(exists: bool = False) -> Any:  # noqa: N802 - reads as a type in the models
    """A file or directory path: relative to the config file's folder (flags: the working directory)."""
    return Annotated[str, Strict(), AfterValidator(_no_nul), AfterValidator(_PathCheck(exists))]


def finite(x: float) -> bool:
    return math.isfinite(x)


#: ``defer_build``: a section's validator is made when it first validates something, so
#: importing the settings (the daemon does) costs no schema building, and a run builds only
#: the sections its file and flags fill; the others are :func:`defaults`.
_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=False, defer_build=True)
T = TypeVar("T")


def section(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen, strict pydantic dataclass; its ``_cross()`` checks run after the fields."""
    cross = getattr(cls, "_cross", None)
    if cross is not None:
        def __post_init__(self: Any) -> None:  # noqa: N807
            problems = cross(self)
            if problems:
                raise PydanticCustomError(CROSS, "{summary}", {
                    "summary": "; ".join(f"{k}: {m}" for k, m in problems),
                    "problems": tuple(problems)})

        cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
    return _pydantic_dataclass(frozen=True, config=_CONFIG)(cls)  # type: ignore[return-value]


def defaults(cls: type[T]) -> T:
    """The section ``cls`` with every field at its default, equal to ``cls()``, without building its validator.

    Defaults are not validated (``validate_default=False``) and satisfy the
    section's ``_cross()`` (``tests/test_config.py`` checks ``defaults(cls) == cls()``
    for every section), so a section the file and the flags leave empty needs
    no validation; this is what the loader returns for it.
    """
    obj = object.__new__(cls)
    for name, info in cls.__pydantic_fields__.items():  # type: ignore[attr-defined]
        object.__setattr__(obj, name, info.get_default(call_default_factory=True))
    return obj


def describe(cls: type) -> dict[str, tuple[Any, Any, str]]:
    """Field name -> (annotation, default, description) of a section, in order."""
    out = {}
    for f in dataclasses.fields(cls):
        info = cls.__pydantic_fields__[f.name]  # type: ignore[attr-defined]
        out[f.name] = (info.annotation, info.default, info.description or "")
    return out
