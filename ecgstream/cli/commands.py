"""Subcommands beyond ``beats``: run, enroll, templates, keygen, check-config, demo, verify.

Modules load only when a command runs, so ``ecgstream --help`` stays fast.

Every command that needs the configuration starts the same way, with
:func:`~ecgstream.cli.context.open_context` (:mod:`ecgstream.cli.context`);
a command body then holds only what is its own. Opening the model and the
store, and building the daemon from the config, are
:mod:`ecgstream.cli.wiring`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from ..core.exitcodes import EXIT_CONFIG, EXIT_FAIL, EXIT_OK, EXIT_SIGINT, EXIT_USAGE
from .context import config_error, exits, failing, open_context
from .wiring import build_daemon

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
    r.add_argument("--metrics", nargs="?", const="", metavar="[HOST:]PORT", type=_metrics_flag,
                   help="serve Prometheus metrics at http://HOST:PORT/metrics ([metrics]; default "
                   "127.0.0.1:9713; needs the 'metrics' extra)")
    r.set_defaults(func=cmd_run)

    e = sub.add_parser("enroll", parents=[common], help="enrol a subject from a source",
                       description="Collect quality-gated beats and store the subject's template.")
    e.add_argument("--subject", required=True, help="subject id (letters, digits, . _ -)")
    e.add_argument("--source", required=True, help="any source URI")
    e.add_argument("--seconds", type=float, default=20.0, help="seconds of signal to collect (default 20)")
    e.add_argument("--min-beats", type=int, default=None,
                   help="good beats needed (default ecgstream.templates.enroll.MIN_BEATS, 6; docs/model/scale.md "
                        "has the trade-off)")
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
    d.add_argument("--operating-point", choices=("far_0.001", "eer"), default="far_0.001",
                   help="model-card threshold used (default far_0.001, the daemon's own default)")
    d.set_defaults(func=cmd_demo)

    from . import trust as cli_trust  # watch, device-key

    cli_trust.add_parsers(sub, common)
    from . import plot as cli_plot  # plot run, plot enroll (issue 18)

    cli_plot.add_parsers(sub, common)
    from ..fleet import cli as fleet_cli  # nats-config (issue 10)

    fleet_cli.add_parsers(sub)
    try:
        from . import verify as cli_verify
    except ImportError:  # pragma: no cover - cli_verify ships with the package
        return
    cli_verify.add_parser(sub)


# -- commands ---------------------------------------------------------------------
def cmd_check_config(args: argparse.Namespace) -> int:
    from ..config import ConfigError, load_config
    from .wiring import check_runnable

    try:
        cfg = load_config(args.config, {})
        # The same checks `run` makes before it starts (source parameters, section combinations).
        check_runnable(cfg)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    from ..trust.exposure import input_warnings

    for w in input_warnings(cfg):  # valid, but an open door: said loudly (issue 16)
        print(f"{args.config}: WARNING: INSECURE INPUT: {w}", file=sys.stderr)
    print(f"{args.config}: OK")
    return EXIT_OK


@exits
def cmd_keygen(args: argparse.Namespace) -> int:
    from ..templates import create_key_file

    with failing("keygen", FileExistsError, OSError):
        create_key_file(args.path)
    print(f"wrote a new 32-byte key to {args.path} (mode 0600)")
    return EXIT_OK


@exits
def cmd_templates_list(args: argparse.Namespace) -> int:
    from ..templates import TemplateError

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


@exits
def cmd_templates_remove(args: argparse.Namespace) -> int:
    from ..templates import TemplateError

    ctx = open_context(args, "templates remove")
    with failing("templates remove", TemplateError, FileNotFoundError):
        ctx.store.remove(args.subject)
    print(f"removed {args.subject}")
    return EXIT_OK


@exits
def cmd_enroll(args: argparse.Namespace) -> int:
    from ..sources import SourceError, open_source
    from ..templates import TemplateError, validate_subject
    from ..templates.enroll import MIN_BEATS, EnrolError, enrol

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
        res = enrol(src, model, seconds=args.seconds, min_beats=args.min_beats or MIN_BEATS, progress=progress,
                    against=existing, no_samples_s=args.no_samples_s if args.no_samples_s > 0 else None)
        if existing is not None:
            from ..pipeline.decide import Thresholds
            from ..templates.enroll import append_sitting, utc_now

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


@exits
def cmd_run(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..daemon.notify import SystemdNotifier
    from ..publish import PublishError
    from ..sources import SourceError

    def check(cfg: Any) -> None:
        if not args.verbose:
            logging.getLogger().setLevel(cfg.daemon.log_level)
        if args.subject is not None:
            from ..templates import TemplateError, validate_subject

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
        return config_error(exc)
    except Exception as exc:
        print(f"ecgstream run: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)
    metrics = None
    if cfg.metrics.enabled:  # ecgstream/daemon/metrics.py: asked for and not served is a config error
        from ..daemon.metrics import serve_metrics

        try:
            metrics = serve_metrics(daemon, cfg.metrics)
        except (ImportError, OSError) as exc:
            print(f"ecgstream run: metrics.enabled: {exc} ({cfg.metrics.host}:{cfg.metrics.port})",
                  file=sys.stderr)
            return EXIT_CONFIG
    try:
        return daemon.run(stop)
    except PublishError as exc:
        print(f"ecgstream run: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        if metrics is not None:
            metrics.close()


def _metrics_flag(v: str) -> dict[str, Any]:
    """``--metrics [[HOST:]PORT]`` as ``[metrics]`` overrides (checked by the config's own rules)."""
    o: dict[str, Any] = {"metrics.enabled": True}
    if v:
        host, sep, port = v.rpartition(":")
        if not port.isdigit():
            raise argparse.ArgumentTypeError(f"expected [HOST:]PORT, got {v!r}")
        o["metrics.port"] = int(port)
        if sep:
            o["metrics.host"] = host.strip("[]")
    return o


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(speed=args.speed, raw_json=args.json, operating_point=args.operating_point)


def excerpt_record(person: int, rec: int) -> Path:
    """Path of a record of the shipped ECG-ID excerpt."""
    from ..sources.records import excerpt_dir

    return excerpt_dir() / f"Person_{person:02d}" / f"rec_{rec}"
