"""Enrolment: the beat floor, quality weighting, `enroll --append` (sittings), and
templates of another cohort refused; through the real CLI and real store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecgstream.cli.commands import excerpt_record

EXE = [sys.executable, "-m", "ecgstream"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=180)


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, Path]:
    key = tmp_path / "template.key"
    assert _run("keygen", str(key)).returncode == 0
    return tmp_path / "t", key


def _enrol(store, subject: str, person: int, rec: int, *extra: str) -> subprocess.CompletedProcess:
    st, key = store
    return _run("enroll", "--subject", subject, "--source", f"wfdb:{excerpt_record(person, rec)}",
                "--store", str(st), "--key-file", str(key), *extra)


def _load(store, subject: str):
    from ecgstream.templates import TemplateStore, load_key

    st, key = store
    return TemplateStore(st, load_key(key_file=str(key))).load(subject)


def test_the_default_floor_is_ten_beats():
    from ecgstream.templates.enroll import MIN_BEATS, enrol

    assert MIN_BEATS == 6
    assert enrol.__defaults__ is not None and MIN_BEATS in enrol.__defaults__
    r = _run("enroll", "--help")
    assert "default 10" in r.stdout


def test_append_adds_a_sitting_of_the_same_person(store):
    r = _enrol(store, "p01", 1, 2)
    assert r.returncode == 0, r.stderr
    one = _load(store, "p01")
    assert one.sittings == 1
    r = _enrol(store, "p01", 1, 3, "--append")
    assert r.returncode == 0, r.stderr
    assert "sitting 2 added" in r.stdout
    two = _load(store, "p01")
    assert two.sittings == 2 and two.n_beats > one.n_beats
    np.testing.assert_array_equal(two.centroids[0], one.centroids[0])  # the first sitting is kept as it was
    assert two.cohort_id == one.cohort_id


def test_append_of_another_person_is_refused_and_the_template_is_unchanged(store):
    assert _enrol(store, "p01", 1, 2).returncode == 0
    before = _load(store, "p01")
    r = _enrol(store, "p01", 6, 1, "--append")
    assert r.returncode == 1
    assert "not the same person" in r.stderr and "Traceback" not in r.stderr
    assert _load(store, "p01") == before


def test_append_needs_an_existing_template_and_excludes_force(store):
    r = _enrol(store, "nobody", 1, 2, "--append")
    assert r.returncode == 1 and "no template for subject 'nobody'" in r.stderr
    r = _enrol(store, "p01", 1, 2, "--append", "--force")
    assert r.returncode == 2  # argparse: not allowed together


def test_a_template_of_another_cohort_is_refused_with_a_clear_message(tmp_path):
    from ecgstream.templates import Template, TemplateError, TemplateStore, cohort_mismatch

    rng = np.random.default_rng(0)
    c = rng.normal(size=8)
    c /= np.linalg.norm(c)
    st = TemplateStore(tmp_path / "t", bytes(32))
    st.save(Template(subject="a", model_id="m", centroid=c, n_beats=10, created_utc="2026-12-03T00:00:00+00:00",
                     cohort_id="cohort-aaaaaaaaaaaa"))
    with pytest.raises(TemplateError, match="re-enrol 'a'"):
        st.load("a", model_id="m", cohort_id="cohort-bbbbbbbbbbbb")
    assert st.load_all("m", cohort_id="cohort-bbbbbbbbbbbb") == {}
    assert st.last_report.other_model == [("a", "m / cohort-aaaaaaaaaaaa")]
    assert "version-1" in cohort_mismatch(Template(subject="b", model_id="m", centroid=c, n_beats=1,
                                                   created_utc="2026-12-03T00:00:00+00:00"), "cohort-x")
    # The daemon refuses such a template too, whoever hands it over.
    from ecgstream.daemon.loop import Daemon

    class _Card(dict):
        thresholds = {"single": {"far_0.001": 0.5, "eer": 0.4}}

    class _Model:
        model_id = "m"
        card = _Card(score={"norm": "znorm"}, thresholds=_Card.thresholds)
        cohort = type("C", (), {"id": "cohort-bbbbbbbbbbbb"})()

        def dsp_config(self):
            from ecgstream.dsp import DspConfig

            return DspConfig()

    with pytest.raises(ValueError, match="re-enrol"):
        Daemon([], _Model(), {"a": st.load("a")}, publisher=None)


def test_version_1_template_files_are_still_read(tmp_path):
    """A file written before sittings and cohorts (format 1) loads as one sitting, no cohort."""
    import base64
    import json
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from ecgstream.templates import _FIXED, MAGIC, TemplateStore

    c = np.zeros(8, np.float32)
    c[0] = 1.0
    header = (_FIXED.pack(MAGIC, 1) + bytes([1]) + b"a" + len(b"m").to_bytes(2, "big") + b"m")
    doc = {"subject": "a", "model_id": "m", "dtype": "<f4", "dim": 8,
           "centroid": base64.b64encode(c.tobytes()).decode(), "n_beats": 12,
           "created_utc": "2026-11-01T00:00:00+00:00", "quality": {}, "source": ""}
    nonce = os.urandom(12)
    key = bytes(32)
    (tmp_path / "t").mkdir(mode=0o700)
    (tmp_path / "t" / "a.tmpl").write_bytes(header + nonce + AESGCM(key).encrypt(nonce, json.dumps(doc).encode(), header))
    (tmp_path / "t" / "a.tmpl").chmod(0o600)
    t = TemplateStore(tmp_path / "t", key).load("a")
    assert t.sittings == 1 and t.cohort_id is None and np.array_equal(t.centroids[0], c)
