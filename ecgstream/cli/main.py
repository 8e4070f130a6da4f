"""The ``ecgstream`` command line.

Exit codes: :mod:`ecgstream.core.exitcodes` (0 success, 1 a runtime failure,
2 bad usage or input, 78 a configuration error).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..core.exitcodes import EXIT_OK, EXIT_SIGINT, EXIT_USAGE

log = logging.getLogger("ecgstream")


def _cmd_beats(args: argparse.Namespace) -> int:
    from ..dsp import BeatPipeline
    from ..sources import FiniteSource, SourceError, open_source

    try:
        src = open_source(args.source)
    except SourceError as exc:
        print(f"ecgstream beats: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(src, FiniteSource):
        print("ecgstream beats: only finite sources (wfdb:, synthetic:) can be listed", file=sys.stderr)
        return EXIT_USAGE
    from .progress import progress_bar

    out = sys.stdout
    out.write("sample,time_s,rr_s,quality\n")
    pipe = None
    n = 0
    with progress_bar(args.progress, _seconds_of(src), "beats", "s of signal") as bar:
        for chunk in src.chunks():
            if pipe is None:
                try:
                    pipe = BeatPipeline(chunk.device, chunk.fs_hz)
                except ValueError as exc:
                    print(f"ecgstream beats: {args.source}: {exc}", file=sys.stderr)
                    return EXIT_USAGE
            for b in pipe.push(chunk):
                n += 1
                out.write(_beat_line(b))
            bar.update(chunk.samples.size / chunk.fs_hz)
        if bar.total:
            bar.n = bar.total  # seconds summed chunk by chunk are a little off; the record is done
            bar.refresh()
    if pipe is not None:
        for b in pipe.flush():
            n += 1
            out.write(_beat_line(b))
    if args.verbose and pipe is not None:
        st = pipe.status
        print(
            f"{n} beats, {st.beats_good} good; flags {st.flags}; "
            f"{st.samples_invalid} unreadable samples, {st.segments} segment(s)",
            file=sys.stderr,
        )
    return EXIT_OK


def _seconds_of(src) -> float | None:  # noqa: ANN001 - a FiniteSource
    """Length of a finite source in seconds, when it says (a WFDB record, a synthetic stream)."""
    x = getattr(src, "samples", None)
    if x is not None and getattr(src, "fs_hz", None):
        return round(x.size / src.fs_hz, 1)
    sec = getattr(src, "seconds", None)
    return float(sec) if sec else None


def _beat_line(b) -> str:  # noqa: ANN001 - Beat
    rr = "" if b.rr_s != b.rr_s else f"{b.rr_s:.4f}"
    return f"{b.r_sample},{b.r_time_s:.4f},{rr},{b.quality:.3f}\n"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(
        prog="ecgstream",
        description="Continuous authentication by heartbeat: ECG streams in, "
        "authentication and liveness states out.",
    )
    p.add_argument("--version", action="version", version=f"ecgstream {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="more log output on stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    b = sub.add_parser(
        "beats",
        help="print the beats of a recording as CSV",
        description="Cut a recording into beats with the streaming pipeline and print one "
        "CSV line per beat: sample (R position in the source's own rate), time_s, "
        "rr_s (empty for the first beat of a segment), quality (0..1).",
    )
    b.add_argument("--source", required=True, help="wfdb:PATH[?channel=N] or synthetic:...")
    from .progress import add_flag

    add_flag(b)
    b.set_defaults(func=_cmd_beats)

    _add_optional_commands(sub)
    return p


def _add_optional_commands(sub: argparse._SubParsersAction) -> None:
    """Commands whose modules are imported lazily (the daemon, verify, ...)."""
    from . import commands

    commands.add_parsers(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ecgstream`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.verbose:
        log.setLevel(logging.DEBUG)
    for noisy in ("tensorflow", "absl", "fsspec", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return EXIT_SIGINT
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
