"""``ecgstream verify A B``: are two recordings of the same person?

Prints the fused score, the card threshold it is held to, the decision and
the calibrated probability (see :class:`ecgstream.api.VerifyResult`).

Exit codes: 0 accept (same person), 1 reject (different persons), 2 bad
input (a record or channel that cannot be read, too few good beats),
78 a model or card that cannot be used (hash mismatch, newer card format).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..core.exitcodes import EXIT_CONFIG, EXIT_FAIL, EXIT_OK, EXIT_USAGE

#: ``verify`` answers with its exit status: accept is success, reject a failure.
EXIT_ACCEPT, EXIT_REJECT = EXIT_OK, EXIT_FAIL


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``verify`` on the ``ecgstream`` command's subparsers."""
    v = subparsers.add_parser(
        "verify",
        help="verify two recordings against each other (score, decision, probability)",
        description="Enrol recording A (template of its good beats) and score recording B against "
        "it with the shipped int8 model: the fused score is the mean cosine score of B's good "
        "beats. Exit code 0 accept, 1 reject, 2 bad input, 78 unusable model or card.",
    )
    v.add_argument("a", metavar="A", help="WFDB record to enrol, e.g. data/ecgid-excerpt/Person_01/rec_1")
    v.add_argument("b", metavar="B", help="WFDB record to verify against A")
    v.add_argument("--channel", default="0", help="channel index or name of both records (default 0)")
    v.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    v.add_argument("--operating-point", choices=("eer", "far_0.001"), default="eer",
                   help="card threshold: equal error rate (default) or FAR 0.1%% on held-out persons")
    v.add_argument("--model", dest="verify_model", help="model .tflite (default: the shipped edge/model.tflite)")
    v.add_argument("--threads", type=int, default=1, help="LiteRT threads (default 1)")
    from .progress import add_flag

    add_flag(v)
    v.set_defaults(func=run)
    return v


def run(args: argparse.Namespace) -> int:
    """Run ``verify``; returns the exit code (see module docs)."""
    from edge import ModelError

    from ..api import verify_records
    from ..sources.records import DataError

    channel: int | str = int(args.channel) if str(args.channel).isdigit() else args.channel
    try:
        from ..core.litert_log import open_embedding_model

        model = open_embedding_model(getattr(args, "verify_model", None), num_threads=args.threads)
    except (ModelError, ValueError) as exc:
        print(f"ecgstream verify: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from .progress import Progress

    try:
        with Progress(args.progress, "verify", "s of signal") as progress:
            r = verify_records(args.a, args.b, model=model, channel=channel,
                               operating_point=args.operating_point, progress=progress)
    except (DataError, ValueError) as exc:
        print(f"ecgstream verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps({"a": str(args.a), "b": str(args.b), **r.to_dict()}))
    else:
        print(f"score {r.score:.4f}  threshold {r.threshold:.4f} ({r.operating_point}, "
              f"{r.threshold_beats} beats)  {r.decision.upper()}  probability {r.probability:.3f}  "
              f"[{r.beats_a} beats of A enrolled, {r.beats_b} beats of B scored; {r.model_id}]")
    return EXIT_ACCEPT if r.accepted else EXIT_REJECT
