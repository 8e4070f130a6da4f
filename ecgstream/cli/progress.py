"""Progress bars of long offline work (``beats``, ``verify``): tqdm on stderr.

Shown when stderr is a terminal; silent in a pipe, a log or a test unless
``--progress`` asks for it (then tqdm writes its lines into the pipe as it
would on a terminal). stdout is never touched: ``beats`` writes its CSV
there.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress", "add_flag", "progress_bar"]


def add_flag(parser: Any) -> None:
    """``--progress``: show the bar even when stderr is not a terminal."""
    parser.add_argument("--progress", action="store_true", default=None,
                        help="show a progress bar on stderr even when it is not a terminal "
                        "(shown on a terminal anyway)")


def progress_bar(asked: bool | None, total: float | None, desc: str, unit: str = "s") -> Any:
    """A tqdm bar on stderr; disabled unless ``asked`` or stderr is a terminal.

    ``total`` in ``unit`` (seconds of signal, by default), None when unknown. Counts
    may be fractional (seconds); they are shown rounded.
    """
    from tqdm import tqdm

    shown = bool(asked) or sys.stderr.isatty()
    fmt = ("{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} " + unit + " [{elapsed}<{remaining}]"
           if total else "{desc}: {n:.0f} " + unit + " [{elapsed}]")
    return tqdm(total=total, desc=desc, disable=not shown, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.2, bar_format=fmt)


class Progress:
    """A bar made at the first report, when the total is known: ``progress(done, total)``.

    For work that learns its total as it starts (``verify`` reads both
    records first). A context manager: the bar is closed, at 100 % when the
    work got there, on exit.
    """

    def __init__(self, asked: bool | None, desc: str, unit: str = "s") -> None:
        self.asked, self.desc, self.unit = asked, desc, unit
        self.bar: Any = None

    def __call__(self, done: float, total: float) -> None:
        if self.bar is None:
            self.bar = progress_bar(self.asked, total, self.desc, self.unit)
        self.bar.n = min(done, total)
        self.bar.refresh() if done >= total else self.bar.update(0)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
