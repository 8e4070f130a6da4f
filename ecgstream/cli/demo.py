"""``ecgstream demo``: the whole path on the ECG-ID excerpt shipped in data/.

1. Enrol ``person-01`` from Person_01 rec_1 (replayed as fast as possible).
2. Replay Person_01 rec_2 (another recording of the same person), paced, and
   print the states as they change: it should end ``authenticated``.
3. Replay Person_06 rec_1 (an impostor) against ``person-01``: ``rejected``.

Every person in the excerpt is one of the seed protocol's held-out persons,
so the shipped model never saw them in training. The template store and its
key live in a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from ..sources.records import excerpt_dir

__all__ = ["run_demo", "DemoPublisher"]


class DemoPublisher:
    """Prints state changes in words (or every payload as JSON lines)."""

    def __init__(self, label: str, out: TextIO, raw_json: bool = False) -> None:
        self.label = label
        self.out = out
        self.raw = raw_json
        self.t0 = time.monotonic()
        self.states: list[str] = []
        self._last: dict[str, Any] = {}
        self.stats: dict[str, int] = {"published": 0}

    def _say(self, text: str) -> None:
        self.out.write(f"[{time.monotonic() - self.t0:5.1f} s] {self.label}: {text}\n")
        self.out.flush()

    def _json(self, kind: str, device: str, payload: dict) -> None:
        self.out.write(json.dumps({"kind": kind, "device": device, **payload}) + "\n")

    def start(self) -> None:  # noqa: D102
        pass

    def availability(self, device: str, online: bool) -> None:  # noqa: D102
        if self.raw:
            self._json("availability", device, {"state": "online" if online else "offline"})

    def auth(self, device: str, payload: dict, valid_until: float) -> None:  # noqa: D102
        self.stats["published"] += 1
        if self.raw:
            return self._json("auth", device, payload)
        key = (payload["state"], payload.get("subject"))
        if self._last.get("auth") != key:
            self._last["auth"] = key
            self.states.append(payload["state"])
            score = payload.get("score")
            extra = ""
            if score is not None and payload.get("threshold") is not None:
                rel = ">=" if score >= payload["threshold"] else "<"
                extra = f" (fused score {score:.3f} {rel} threshold {payload['threshold']:.3f} over {payload['beats_used']} beats)"
            self._say(f"auth {payload['state'].upper():<13} {payload.get('reason') or ''}{extra}")

    def liveness(self, device: str, payload: dict, valid_until: float) -> None:  # noqa: D102
        if self.raw:
            return self._json("liveness", device, payload)
        key = (payload["live"], tuple(payload.get("reasons") or ()))
        if self._last.get("live") != key:
            self._last["live"] = key
            hr = payload.get("heart_rate_bpm")
            hr_s = f", heart rate {hr:.0f}/min" if hr else ""
            why = "; ".join(payload.get("reasons") or []) or "all checks pass"
            self._say(f"liveness {'LIVE' if payload['live'] else 'not live'} ({why}{hr_s})")

    def event(self, device: str, payload: dict) -> None:  # noqa: D102
        if self.raw:
            self._json("event", device, payload)

    def close(self) -> None:  # noqa: D102
        pass


def run_demo(speed: float = 4.0, raw_json: bool = False, out: TextIO | None = None,
             operating_point: str = "far_0.001") -> int:
    """Run the demo; returns 0 when genuine ends authenticated and impostor rejected.

    The demo decides at the model card's equal-error-rate threshold by
    default and says so: at the daemon's default (FAR 0.1 %) the shipped model
    accepts well under half of genuine 10-beat windows of held-out persons
    (docs/model/report.md), which is the honest price of that operating point.
    """

    from ..core.settings import DecisionConfig
    from ..daemon.loop import Daemon
    from ..sources import open_source
    from ..templates import TemplateStore, create_key_file, load_key
    from ..templates.enroll import enrol

    out = out or sys.stdout
    ex = excerpt_dir()
    from ..core.litert_log import open_embedding_model

    model = open_embedding_model()
    out.write(f"model {model.model_id} ({model.card.get('description', 'int8 LiteRT embedding')})\n")
    out.write(f"operating point: {operating_point} threshold of the model card "
              f"({'equal error rate' if operating_point == 'eer' else 'FAR 0.1 %'} on held-out persons)\n")
    with tempfile.TemporaryDirectory(prefix="ecgstream-demo-") as tmp:
        key_path = Path(tmp) / "template.key"
        create_key_file(key_path)
        store = TemplateStore(Path(tmp) / "templates", load_key(key_file=str(key_path)))
        enrol_uri = f"wfdb:{ex / 'Person_01' / 'rec_1'}?speed=max"
        out.write(f"1. enrolling person-01 from {enrol_uri.split('?')[0]} ...\n")
        res = enrol(open_source(enrol_uri), model, seconds=18.0, min_beats=12)
        store.save(res.template("person-01", model.model_id, "demo"))
        out.write(f"   template from {res.n_beats} good beats of {res.n_beats_seen}\n")
        templates = store.load_all(model.model_id, cohort_id=model.cohort_id)
        ok = True
        for step, (who, rec, want) in enumerate(
            (("genuine", ex / "Person_01" / "rec_2", "authenticated"),
             ("impostor", ex / "Person_06" / "rec_1", "rejected")), start=2):
            out.write(f"{step}. replaying {who} {rec.parent.name}/{rec.name} at {speed:g}x "
                      f"against person-01 (expect {want})\n")
            pub = DemoPublisher(who, out, raw_json)
            d = Daemon([open_source(f"wfdb:{rec}", speed=speed)], model, templates, pub,
                       default_subject="person-01", speed=speed, publish_interval_s=0.5,
                       decision_cfg=DecisionConfig(operating_point=operating_point))
            d.run(threading.Event())
            decided = [s for s in pub.states if s != "unknown"]
            final = decided[-1] if decided else "unknown"
            ok &= final == want
            out.write(f"   -> {who}: last decision {final.upper()} "
                      f"({d.stats.beats_good} good beats of {d.stats.beats})\n")
    out.write("demo OK\n" if ok else "demo: a decision differed from the expected one\n")
    return 0 if ok else 1
