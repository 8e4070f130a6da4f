"""Accuracy over the daemon path: ``enrol`` + ``Daemon.run`` on WFDB replays.

The figure a user sees: the seed protocol's held-out persons (never seen in
training) are enrolled from their first record exactly as ``ecgstream
enroll`` does (default beat floor, 20 s of signal), then every other record
of the person (genuine) and the first record of every other held-out person
(impostor) is replayed through a real :class:`ecgstream.daemon.Daemon` as
fast as it takes it, with the daemon's own fusion, liveness, thresholds and
adaptation. The last *decided* state of a run counts (``unknown`` if it
never decided). Shared by ``python -m train.evaluate`` and
``bench/bench_daemon.py``; needs no TensorFlow.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np


class _StatePublisher:
    """Keeps the sequence of auth states per device (the daemon's publisher protocol)."""

    def __init__(self) -> None:
        self.states: dict[str, list[str]] = {}

    def start(self) -> None:
        pass

    def availability(self, device: str, online: bool) -> None:
        pass

    def auth(self, device: str, payload: dict, valid_until: float) -> None:
        self.states.setdefault(device, []).append(payload["state"])

    def liveness(self, device: str, payload: dict, valid_until: float) -> None:
        pass

    def event(self, device: str, payload: dict) -> None:
        pass

    def close(self) -> None:
        pass


def enrol_records(model: Any, records: dict[str, Any], seconds: float = 20.0) -> tuple[dict, dict[str, str]]:
    """Templates of ``{subject: record path}`` as ``ecgstream enroll`` makes them.

    Returns the templates and, for subjects that could not be enrolled, why.
    """
    from ecgstream.sources import open_source
    from ecgstream.templates import Template
    from ecgstream.templates.enroll import EnrolError, enrol, utc_now

    out, failed = {}, {}
    for subj, path in records.items():
        try:
            res = enrol(open_source(f"wfdb:{path}?speed=max"), model, seconds=seconds)
        except EnrolError as exc:
            failed[subj] = str(exc)
            continue
        out[subj] = Template(subject=subj, model_id=model.model_id, centroid=res.centroid, n_beats=res.n_beats,
                             created_utc=utc_now(), quality=res.quality, source=str(path),
                             cohort_id=res.cohort_id)
    return out, failed


def daemon_path_accuracy(model: Any, persons: Iterable[int] | None = None, operating_point: str = "far_0.001",
                         data: str | None = None, adaptation: bool = True) -> dict:
    """Genuine and impostor runs through the daemon; see the module docstring."""
    from ecgstream.sources.records import SEED_HELDOUT, ecgid_records

    keep = set(SEED_HELDOUT if persons is None else persons)
    by_person: dict[int, list] = {}
    for r in ecgid_records(data):
        if r.person in keep:
            by_person.setdefault(r.person, []).append(r)
    templates, failed = enrol_records(model, {f"p{p:02d}": rs[0].path for p, rs in sorted(by_person.items())})
    probes = []
    for p, rs in sorted(by_person.items()):
        subj = f"p{p:02d}"
        if subj in templates:
            probes += [(subj, r.path, r.name, True) for r in rs[1:]]
            probes += [(subj, by_person[q][0].path, by_person[q][0].name, False) for q in sorted(by_person) if q != p]
    return summarise_runs(model, templates, failed, probes, operating_point, adaptation, len(by_person))


def replay(model: Any, templates: dict, probes: list[tuple[str, Any, str, bool]], operating_point: str,
           adaptation: bool) -> tuple[list[dict], list[float]]:
    """Replay each probe ``(subject, record path, name, genuine)`` through a daemon holding that subject only."""
    from ecgstream.core.settings import AdaptationConfig, DecisionConfig
    from ecgstream.daemon.loop import Daemon
    from ecgstream.sources import open_source

    runs: list[dict] = []
    t_dec: list[float] = []
    for subj, path, name, genuine in probes:
        pub = _StatePublisher()
        d = Daemon([open_source(f"wfdb:{path}", speed=0.0)], model, {subj: templates[subj]}, pub,
                   default_subject=subj, speed=None,
                   decision_cfg=DecisionConfig(operating_point=operating_point),
                   adaptation_cfg=AdaptationConfig(enabled=adaptation))
        d.run(threading.Event())
        states = pub.states.get(next(iter(pub.states), ""), [])
        decided = [s for s in states if s != "unknown"]
        final = decided[-1] if decided else "unknown"
        runs.append({"subject": subj, "record": name, "genuine": genuine, "final": final,
                     "ever_authenticated": "authenticated" in states})
        if d.stats.first_decision_s:
            t_dec.append(min(d.stats.first_decision_s.values()))
    return runs, t_dec


def summarise_runs(model: Any, templates: dict, failed: dict, probes: list, operating_point: str,
                   adaptation: bool, persons: int) -> dict:
    runs, t_dec = replay(model, templates, probes, operating_point, adaptation)
    gen = [r["final"] for r in runs if r["genuine"]]
    imp = [r["final"] for r in runs if not r["genuine"]]
    return {
        "operating_point": operating_point,
        "adaptation": adaptation,
        "persons": persons,
        "enrolled": len(templates),
        "enrolment_failed": failed,
        "genuine_runs": len(gen),
        "genuine_authenticated": round(gen.count("authenticated") / max(1, len(gen)), 4),
        "genuine_undecided": gen.count("unknown"),
        "impostor_runs": len(imp),
        "impostor_rejected": round(imp.count("rejected") / max(1, len(imp)), 4),
        "impostor_authenticated": imp.count("authenticated"),
        "impostor_ever_authenticated": sum(r["ever_authenticated"] for r in runs if not r["genuine"]),
        "impostor_undecided": imp.count("unknown"),
        "time_to_first_decision_s_median": round(float(np.median(t_dec)), 2) if t_dec else None,
        "time_to_first_decision_s_p90": round(float(np.percentile(t_dec, 90)), 2) if t_dec else None,
        "runs": runs,
    }


def ptbxl_daemon_path(model: Any, patients: Iterable[int], operating_point: str = "far_0.001",
                      data: str | None = None, impostors_per_probe: int = 10, seed: int = 0) -> dict:
    """The same over held-out PTB-XL patients: enrol on the first 10-s ECG, replay each later one
    (genuine) and one later ECG of ``impostors_per_probe`` random other patients (impostor)."""
    from train.ptbxl import ptbxl_records

    keep = set(patients)
    by_p: dict[int, list] = {}
    for r in ptbxl_records(data):
        if r.patient in keep:
            by_p.setdefault(r.patient, []).append(r)
    by_p = {p: rs for p, rs in sorted(by_p.items()) if len(rs) >= 2}
    templates, failed = enrol_records(model, {f"ptb{p}": rs[0].path for p, rs in by_p.items()}, seconds=10.0)
    rng = np.random.default_rng(seed)
    probes = []
    for p, rs in by_p.items():
        subj = f"ptb{p}"
        if subj not in templates:
            continue
        probes += [(subj, r.path, f"{r.ecg_id}", True) for r in rs[1:]]
        others = [q for q in by_p if q != p]
        for q in rng.choice(others, min(impostors_per_probe, len(others)), replace=False):
            r = by_p[int(q)][1]
            probes.append((subj, r.path, f"{r.ecg_id}", False))
    return summarise_runs(model, templates, failed, probes, operating_point, True, len(by_p))


def enrolment_success(model: Any, data: str | None = None, persons: Iterable[int] | None = None) -> dict:
    """Enrol from every (or the given persons') single 20 s ECG-ID record, as ``ecgstream enroll`` does.

    Each record's good beats are also counted by ``ecgstream.dsp.extract_beats``;
    the goal is that every record with at least ``MIN_BEATS`` good beats
    enrols. Returns counts and the records that failed.
    """
    from ecgstream.dsp import extract_beats
    from ecgstream.sources import open_source
    from ecgstream.sources.records import ecgid_records, read_record
    from ecgstream.templates.enroll import MIN_BEATS, EnrolError, enrol

    keep = None if persons is None else set(persons)
    cfg = model.dsp_config()
    n = eligible = ok = ok_eligible = 0
    failed: list[dict] = []
    for r in ecgid_records(data):
        if keep is not None and r.person not in keep:
            continue
        n += 1
        x, fs, _ = read_record(r.path, 0)
        good = sum(b.good for b in extract_beats(x, fs, cfg))
        eligible += good >= MIN_BEATS
        try:
            enrol(open_source(f"wfdb:{r.path}?speed=max"), model, seconds=20.0)
            ok += 1
            ok_eligible += good >= MIN_BEATS
        except EnrolError as exc:
            failed.append({"record": r.name, "good_beats": int(good), "error": str(exc)})
    return {"records": n, "with_min_beats": eligible, "min_beats": MIN_BEATS, "enrolled": ok,
            "enrolled_of_those_with_min_beats": ok_eligible, "failed": failed}
