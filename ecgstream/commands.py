"""Subcommands beyond ``beats``: run, enroll, templates, keygen, check-config, demo, verify.

Modules load only when a command runs, so ``ecgstream --help`` stays fast.

Every command that needs the configuration starts the same way:
:func:`open_context` loads the file and the flags, opens the template store
and the model as asked, and maps what goes wrong to one line on stderr and
an exit status (:mod:`ecgstream.exitcodes`): a configuration problem,
including a missing template key, is 78; anything else the command's own
choice. A command body then holds only what is its own. Opening the model
and the store, and building the daemon from the config, are
:mod:`ecgstream.wiring` (``build_daemon`` and the other names stay
importable from here).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .exitcodes import EXIT_CONFIG, EXIT_FAIL, EXIT_OK, EXIT_SIGINT, EXIT_USAGE
from .wiring import build_daemon
from .wiring import device_keys as _device_keys  # noqa: F401 - the old names stay importable here
from .wiring import mqtt_kwargs as _mqtt_kwargs  # noqa: F401
from .wiring import open_model as _model
from .wiring import open_store as _store
from .wiring import publisher_kwargs as _publisher_kwargs  # noqa: F401
from .wiring import tls_options as _tls  # noqa: F401

log = logging.getLogger("ecgstream")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register the subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML config file (see docs/config.md)")
    common.add_argument("--store", help="template store directory")
    common.add_argument("--model", help="model .tflite (default: the shipped edge/model.tflite)")
    common.add_argument("--key-file", help="template key file (32 bytes; see `ecgstream keygen`)")

    r = sub.add_parser("run", parents=[common], help="run the daemon",
                       description="Authenticate continuously and publish states (MQTT, or JSON lines on stdout).")
    r.add_argument("--source", help="serial:/dev/ttyUSB0?baud=115200&fs=250, mqtt://host:port/ecgstream/+/ecg, wfdb:PATH")
    r.add_argument("--subject", help="subject bound to the device(s) (verification); default: identify")
    r.add_argument("--speed", type=float, help="replay speed for wfdb: sources (1 = real time, 0 = as fast as possible)")
    r.add_argument("--mqtt-host", help="publish to this broker (default: config, else stdout)")
    r.add_argument("--mqtt-port", type=int)
    r.add_argument("--no-retain", dest="clear_on_stop", action="store_const", const=True,
                   help="on a clean stop, delete this run's retained topics and Home Assistant devices "
                   "(for replays: [mqtt] clear_on_stop)")
    r.add_argument("--operating-point", choices=("far_0.001", "eer"),
                   help="model-card threshold: far_0.001 (default; <= 0.1%% impostors accepted on held-out "
                   "persons) or eer (equal error rate: more genuine accepted, more impostors too)")
    r.set_defaults(func=cmd_run)

    e = sub.add_parser("enroll", parents=[common], help="enrol a subject from a source",
                       description="Collect quality-gated beats and store the subject's template.")
    e.add_argument("--subject", required=True, help="subject id (letters, digits, . _ -)")
    e.add_argument("--source", required=True, help="any source URI")
    e.add_argument("--seconds", type=float, default=20.0, help="seconds of signal to collect (default 20)")
    e.add_argument("--min-beats", type=int, default=10,
                   help="good beats needed (default 10; docs/model/report.md has the trade-off)")
    e.add_argument("--no-samples-s", type=float, default=10.0, metavar="S",
                   help="give up when the source sends no samples for S wall-clock seconds (default 10)")
    how = e.add_mutually_exclusive_group()
    how.add_argument("--force", action="store_true", help="replace an existing template")
    how.add_argument("--append", action="store_true",
                     help="add this sitting to the subject's template (another day, another placement); "
                          "refused unless the new beats already match the template")
    e.set_defaults(func=cmd_enroll)

    t = sub.add_parser("templates", parents=[common], help="list or remove enrolled subjects")
    tsub = t.add_subparsers(dest="action", required=True)
    tsub.add_parser("list", parents=[common], help="list enrolled subjects").set_defaults(func=cmd_templates_list)
    rm = tsub.add_parser("remove", parents=[common], help="remove a subject's template")
    rm.add_argument("subject")
    rm.set_defaults(func=cmd_templates_remove)

    k = sub.add_parser("keygen", help="write a new random template key (mode 0600)")
    k.add_argument("path", help="key file to create (refuses to overwrite)")
    k.set_defaults(func=cmd_keygen)

    c = sub.add_parser("check-config", help="validate a config file and list every problem")
    c.add_argument("config", help="TOML config file")
    c.set_defaults(func=cmd_check_config)

    d = sub.add_parser("demo", help="enrol from a shipped record, then replay a genuine and an impostor record",
                       description="Runs on the ECG-ID excerpt shipped in data/: enrols Person_01 from rec_1, "
                       "then replays Person_01 rec_2 (genuine) and Person_06 rec_1 (impostor), "
                       "printing the states as they change.")
    d.add_argument("--speed", type=float, default=4.0, help="replay speed (default 4x real time)")
    d.add_argument("--json", action="store_true", help="print the raw JSON lines instead")
    d.add_argument("--operating-point", choices=("far_0.001", "eer"), default="eer",
                   help="model-card threshold used (default eer; the daemon's default is far_0.001)")
    d.set_defaults(func=cmd_demo)

    from . import cli_trust  # watch, device-key

    cli_trust.add_parsers(sub, common)
    from .fleet import cli as fleet_cli  # nats-config (issue 10)

    fleet_cli.add_parsers(sub)
    try:
        from . import cli_verify
    except ImportError:  # pragma: no cover - cli_verify ships with the package
        return
    cli_verify.add_parser(sub)


# -- shared helpers ---------------------------------------------------------------
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
    from .config import ConfigError

    try:
        cfg = _load_config(args, _overrides(args))
        if check is not None:
            check(cfg)
        ctx = Context(cfg)
        if store:
            ctx.store = _store(cfg)
        if model:
            ctx.model = _model(cfg)
        return ctx
    except (ConfigError, KeyError, *config_errors) as exc:
        raise CommandExit(_config_error(exc)) from None
    except Exception as exc:  # model, card, key or store problems: one clear line
        print(f"ecgstream {command}: {exc}", file=sys.stderr)
        raise CommandExit(other_errors) from None


def _load_config(args: argparse.Namespace, overrides: dict[str, Any]):
    from .config import load_config

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
    return o


def _config_error(exc: Exception) -> int:
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


def _exits(cmd: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn a :class:`CommandExit` raised in a command into its exit status."""

    def run(args: argparse.Namespace) -> int:
        try:
            return cmd(args)
        except CommandExit as e:
            return e.code

    run.__name__ = run.__qualname__ = cmd.__name__
    run.__doc__ = cmd.__doc__
    return run


# -- commands ---------------------------------------------------------------------
def cmd_check_config(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config
    from .wiring import check_runnable

    try:
        # The same checks `run` makes before it starts (source parameters, section combinations).
        check_runnable(load_config(args.config, {}))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.config}: OK")
    return EXIT_OK


@_exits
def cmd_keygen(args: argparse.Namespace) -> int:
    from .templates import create_key_file

    with failing("keygen", FileExistsError, OSError):
        create_key_file(args.path)
    print(f"wrote a new 32-byte key to {args.path} (mode 0600)")
    return EXIT_OK


@_exits
def cmd_templates_list(args: argparse.Namespace) -> int:
    from .templates import TemplateError

    ctx = open_context(args, "templates list", config_errors=(TemplateError,))
    store = ctx.store
    rows = store.list()
    if not rows:
        print(f"no templates in {ctx.cfg.daemon.store}")
    for row in rows:
        print("\t".join(str(v) for v in row))
    for err in store.last_report.broken:
        print(f"DAMAGED\t{err}")
    return EXIT_FAIL if store.last_report.broken else EXIT_OK


@_exits
def cmd_templates_remove(args: argparse.Namespace) -> int:
    from .templates import TemplateError

    ctx = open_context(args, "templates remove")
    with failing("templates remove", TemplateError, FileNotFoundError):
        ctx.store.remove(args.subject)
    print(f"removed {args.subject}")
    return EXIT_OK


@_exits
def cmd_enroll(args: argparse.Namespace) -> int:
    from .enroll import EnrolError, enrol
    from .sources import SourceError, open_source
    from .templates import TemplateError, validate_subject

    # Before the store, the model and 20 s of someone's time: the id names a file.
    with failing("enroll", TemplateError, code=EXIT_USAGE):
        validate_subject(args.subject)
    ctx = open_context(args, "enroll", model=True)
    store, model = ctx.store, ctx.model
    existing = None
    if args.append:
        try:
            existing = store.load(args.subject, model.model_id, model.cohort_id)
        except TemplateError as exc:
            print(f"ecgstream enroll --append: {exc}", file=sys.stderr)
            return EXIT_FAIL
    elif not args.force and args.subject in store:  # a file exists, even a damaged one
        print(f"ecgstream enroll: {args.subject!r} is enrolled already (use --force to replace, "
              "--append to add a sitting)", file=sys.stderr)
        return EXIT_FAIL
    with failing("enroll", SourceError, code=EXIT_USAGE):
        src = open_source(args.source)
    tty = sys.stderr.isatty()
    said = {"t": -1e9}

    def progress(good: int, need: int, t: float) -> None:
        if tty:
            print(f"\renrolling {args.subject}: {good}/{need} good beats, {t:5.1f} s", end="", file=sys.stderr)
        elif t - said["t"] >= 5.0:  # a log or a pipe: one line every 5 s of signal
            said["t"] = t
            log.info("enrolling %s: %d/%d good beats, %.1f s of signal", args.subject, good, need, t)

    try:
        res = enrol(src, model, seconds=args.seconds, min_beats=args.min_beats, progress=progress,
                    against=existing, no_samples_s=args.no_samples_s if args.no_samples_s > 0 else None)
        if existing is not None:
            from .decision import Thresholds
            from .enroll import append_sitting, utc_now

            thr, _ = Thresholds.from_card(model.card.thresholds, "eer").for_beats(res.n_beats)
            tmpl = append_sitting(existing, res, thr, utc_now())
        else:
            tmpl = res.template(args.subject, model.model_id, args.source.split("?")[0])
    except (EnrolError, SourceError) as exc:
        print(f"\necgstream enroll: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        print(f"\necgstream enroll: interrupted; nothing saved for {args.subject!r}", file=sys.stderr)
        return EXIT_SIGINT
    if tty:
        print(file=sys.stderr)
    with failing("enroll", TemplateError, OSError):
        store.save(tmpl)
    print(f"enrolled {args.subject}: {res.n_beats} good beats of {res.n_beats_seen} in {res.seconds:.1f} s; "
          f"enrolment beat score mean {res.quality['score_mean']:.3f}"
          + (f"; sitting {tmpl.sittings} added (match {res.match_score:.3f})" if existing is not None else ""))
    return EXIT_OK


@_exits
def cmd_run(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .notify import SystemdNotifier
    from .publish import PublishError
    from .sources import SourceError

    def check(cfg: Any) -> None:
        if not args.verbose:
            logging.getLogger().setLevel(cfg.daemon.log_level)
        if args.subject is not None:
            from .templates import TemplateError, validate_subject

            try:
                validate_subject(args.subject)
            except TemplateError as exc:
                raise ConfigError([f"--subject: {exc}"]) from None
        if not cfg.daemon.source:
            raise ConfigError(["daemon.source: no source given (--source or [daemon] source)"])

    # model, card, key or template problems fail closed with the reason: 78 as well
    cfg = open_context(args, "run", store=False, check=check, other_errors=EXIT_CONFIG).cfg
    try:
        daemon = build_daemon(cfg, notifier=SystemdNotifier(), subject=args.subject)
    except (ConfigError, KeyError, SourceError) as exc:
        return _config_error(exc)
    except Exception as exc:
        print(f"ecgstream run: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)
    try:
        return daemon.run(stop)
    except PublishError as exc:
        print(f"ecgstream run: {exc}", file=sys.stderr)
        return EXIT_FAIL


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(speed=args.speed, raw_json=args.json, operating_point=args.operating_point)


def excerpt_record(person: int, rec: int) -> Path:
    """Path of a record of the shipped ECG-ID excerpt."""
    from .data import excerpt_dir

    return excerpt_dir() / f"Person_{person:02d}" / f"rec_{rec}"
