"""``ecgstream plot run|enroll``: pictures of what the daemon sees in a record or a capture (PNG).

* ``plot run --source URI (--subject ID | --enrol-from URI) -o run.png``: the
  conditioned signal with the beats the detector cut and their quality
  flags; the beats, as the model sees them, on the enrolment beats (with
  ``--enrol-from``: the store keeps no waveform); each beat's score and the
  fused score against the model card's thresholds; the auth and liveness
  states over time. What ``run`` would have decided on this signal, by the
  daemon's own stages (:mod:`ecgstream.cli.plot_trace`).
* ``plot enroll --source URI -o enrol.png``: the enrolment report. What
  ``enroll`` would keep of this signal: beats kept and refused and why, the
  kept beats and their mean, each kept beat's weight in the centroid. It is
  drawn when enrolment fails too, which is when it helps most (exit 1, as
  ``enroll`` would). Nothing is saved to the store.

A record (``wfdb:``, ``synthetic:``) is read as fast as possible; a live
source (``serial:``, ``mqtt:``) is captured for ``--seconds``. matplotlib is
the ``plot`` extra; a one-line summary goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.exitcodes import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from .context import CommandExit, exits, failing, open_context

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``plot run`` and ``plot enroll``."""
    p = sub.add_parser("plot", help="pictures of a record or capture: beats, scores, states; enrolment report",
                       description="Draw what the daemon sees in a signal (PNG; needs the 'plot' extra).")
    psub = p.add_subparsers(dest="what", required=True, metavar="{run,enroll}")
    r = psub.add_parser("run", parents=[common], help="signal and beats, beats on the template, scores, states",
                        description="What `ecgstream run` would decide on this signal, beat by beat.")
    r.add_argument("--source", required=True, help="wfdb:PATH, synthetic:..., or a live source with --seconds")
    who = r.add_mutually_exclusive_group(required=True)
    who.add_argument("--subject", help="the enrolled subject to verify against (needs the store and its key)")
    who.add_argument("--enrol-from", metavar="URI",
                     help="enrol a template from this record first (as `enroll` does; nothing stored)")
    r.add_argument("--operating-point", choices=("far_0.001", "eer"),
                   help="model-card threshold (default: [decision] operating_point, far_0.001)")
    r.add_argument("--seconds", type=float, help="plot the first S seconds (a live source: capture S seconds)")
    r.add_argument("-o", "--out", required=True, type=Path, help="PNG file to write")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.set_defaults(func=cmd_plot_run)
    e = psub.add_parser("enroll", parents=[common], help="enrolment report: beats kept and refused, why, the template",
                        description="What `ecgstream enroll` would keep of this signal (nothing is stored).")
    e.add_argument("--source", required=True, help="any source URI")
    e.add_argument("--seconds", type=float, default=20.0, help="seconds of signal to collect (default 20, as enroll)")
    e.add_argument("--min-beats", type=int, default=10, help="good beats needed (default 10, as enroll)")
    e.add_argument("-o", "--out", required=True, type=Path, help="PNG file to write")
    e.add_argument("--json", action="store_true", help="print the summary as JSON")
    e.set_defaults(func=cmd_plot_enroll)


def _figures():  # noqa: ANN202 - the module
    try:
        from . import plot_figures
        plot_figures._pyplot()
    except ImportError as exc:
        print(f"ecgstream plot: {exc}", file=sys.stderr)
        return None
    return plot_figures


def _out(path: Path) -> None:
    if path.suffix.lower() != ".png":
        print(f"ecgstream plot: {path}: write a .png file", file=sys.stderr)
        raise CommandExit(EXIT_USAGE)
    path.parent.mkdir(parents=True, exist_ok=True)


def _say(args: argparse.Namespace, summary: dict) -> None:
    if args.json:
        print(json.dumps(summary))
    else:
        print(" ".join(f"{k}={v}" for k, v in summary.items()))


@exits
def cmd_plot_run(args: argparse.Namespace) -> int:
    from ..sources import SourceError, open_source
    from ..templates import TemplateError
    from .plot_trace import capture, trace_run

    _out(args.out)
    figs = _figures()
    if figs is None:
        return EXIT_FAIL
    ctx = open_context(args, "plot run", store=args.subject is not None, model=True)
    model, cfg = ctx.model, ctx.cfg
    template_windows = None
    if args.subject is not None:
        with failing("plot run", TemplateError, KeyError):
            template = ctx.store.load(args.subject, model.model_id, model.cohort_id)
    else:
        from ..templates.enroll import EnrolError, enrol

        template_windows = []
        with failing("plot run", SourceError, EnrolError, code=EXIT_USAGE):
            res = enrol(open_source(args.enrol_from), model, seconds=20.0, min_beats=10,
                        on_beat=lambda b: template_windows.append(b.window) if b.good else None)
        template = res.template("enrolled", model.model_id, args.enrol_from.split("?")[0])
    with failing("plot run", SourceError, ValueError, code=EXIT_USAGE):
        tr = trace_run(capture(open_source(args.source), args.seconds), model, template, cfg)
    who = repr(args.subject) if args.subject is not None else f"a template enrolled from {args.enrol_from.split('?')[0]}"
    summary = figs.draw_run(tr, args.out, template_windows, args.source.split("?")[0], model.dsp_config(), who)
    _say(args, {"wrote": str(args.out), **summary})
    return EXIT_OK


@exits
def cmd_plot_enroll(args: argparse.Namespace) -> int:
    from ..sources import SourceError, open_source
    from .plot_trace import trace_enrol

    _out(args.out)
    figs = _figures()
    if figs is None:
        return EXIT_FAIL
    model = open_context(args, "plot enroll", store=False, model=True).model
    with failing("plot enroll", SourceError, code=EXIT_USAGE):
        tr = trace_enrol(open_source(args.source), model, args.seconds, args.min_beats)
    if not tr.chunks:
        print(f"ecgstream plot enroll: no samples from {args.source}", file=sys.stderr)
        return EXIT_FAIL
    summary = figs.draw_enrol(tr, args.out, args.source.split("?")[0], model.dsp_config())
    _say(args, {"wrote": str(args.out), **summary})
    if tr.error is not None:  # the picture is there; enrolment itself would fail, as `enroll` says
        print(f"ecgstream plot enroll: enrolment would fail: {tr.error}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK
