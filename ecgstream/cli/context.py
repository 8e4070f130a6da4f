"""What every command starts with: the config, store and model it asked for, and how it ends.

:func:`open_context` loads the file and the flags, opens the template store
and the model as asked, and maps what goes wrong to one line on stderr and
an exit status (:mod:`ecgstream.core.exitcodes`): a configuration problem,
including a missing template key, is 78; anything else the command's own
choice. :class:`CommandExit` carries that status out of a command body;
:func:`exits` turns it into the command's return value.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..core.exitcodes import EXIT_CONFIG, EXIT_FAIL
from .wiring import open_model, open_store

__all__ = ["CommandExit", "Context", "config_error", "exits", "failing", "open_context"]


class CommandExit(Exception):
    """End a command with ``code``; the reason is printed already."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Context:
    """What a command works with: the validated config, and the store and model it asked for."""

    cfg: Any
    store: Any = None
    model: Any = None


def open_context(args: argparse.Namespace, command: str, *, store: bool = True, model: bool = False,
                 check: Callable[[Any], None] | None = None, other_errors: int = EXIT_FAIL,
                 config_errors: tuple[type[BaseException], ...] = ()) -> Context:
    """Load the config (file and flags), then open the store and the model as asked.

    Parameters
    ----------
    args : argparse.Namespace
        The command's arguments (``--config``, ``--store``, ... flags).
    command : str
        The command's name, for messages (``"enroll"``).
    store, model : bool
        Open the template store (with its key) / the embedding model.
    check : callable, optional
        ``check(cfg)`` after loading; may raise ``ConfigError``.
    other_errors : int
        Exit status for any other failure (a bad model, card, key or store).
    config_errors : tuple of exception types
        Further exceptions that count as configuration problems (78).

    Raises
    ------
    CommandExit
        After printing the reason on stderr.
    """
    from ..config import ConfigError

    try:
        cfg = _load_config(args, _overrides(args))
        if check is not None:
            check(cfg)
        ctx = Context(cfg)
        if store:
            ctx.store = open_store(cfg)
        if model:
            ctx.model = open_model(cfg)
        return ctx
    except (ConfigError, KeyError, *config_errors) as exc:
        raise CommandExit(config_error(exc)) from None
    except Exception as exc:  # model, card, key or store problems: one clear line
        print(f"ecgstream {command}: {exc}", file=sys.stderr)
        raise CommandExit(other_errors) from None


def _load_config(args: argparse.Namespace, overrides: dict[str, Any]):
    from ..config import load_config

    return load_config(getattr(args, "config", None), overrides)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {}
    for attr, key in (("source", "daemon.source"), ("store", "daemon.store"), ("model", "daemon.model"),
                      ("speed", "daemon.speed"), ("mqtt_host", "mqtt.host"), ("mqtt_port", "mqtt.port"),
                      ("key_file", "templates.key_file"), ("operating_point", "decision.operating_point"),
                      ("clear_on_stop", "mqtt.clear_on_stop")):
        v = getattr(args, attr, None)
        if v is not None:
            o[key] = v
    o.update(getattr(args, "metrics", None) or {})  # run --metrics [HOST:]PORT
    return o


def config_error(exc: Exception) -> int:
    print(f"ecgstream: configuration error:\n{exc}", file=sys.stderr)
    return EXIT_CONFIG


@contextlib.contextmanager
def failing(command: str, *errors: type[BaseException], code: int = EXIT_FAIL) -> Iterator[None]:
    """Map ``errors`` raised in the block to one line on stderr and :class:`CommandExit` ``code``."""
    try:
        yield
    except errors as exc:
        print(f"ecgstream {command}: {exc}", file=sys.stderr)
        raise CommandExit(code) from None


def exits(cmd: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn a :class:`CommandExit` raised in a command into its exit status."""

    def run(args: argparse.Namespace) -> int:
        try:
            return cmd(args)
        except CommandExit as e:
            return e.code

    run.__name__ = run.__qualname__ = cmd.__name__
    run.__doc__ = cmd.__doc__
    return run
