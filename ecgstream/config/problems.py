"""Configuration problems, and where in a TOML text each key is."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ConfigError", "ConfigProblem", "LineIndex"]


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


# tomllib keeps no positions, so the lines of keys are found in the text.
_KEYPART = r"\s*(?:([A-Za-z0-9_-]+)|\"((?:[^\"\\]|\\.)*)\"|'([^']*)')\s*"
_DOTTED = re.compile(rf"(?:{_KEYPART}\.)*{_KEYPART}")
_ONE = re.compile(_KEYPART)


def _split_key(s: str) -> tuple[str, ...] | None:
    parts = []
    pos = 0
    while True:
        m = _ONE.match(s, pos)
        if not m or m.end() == pos:
            return None
        parts.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
        if pos == len(s):
            return tuple(parts)
        if s[pos] != ".":
            return None
        pos += 1


class LineIndex:
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
