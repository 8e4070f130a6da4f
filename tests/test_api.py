"""Public API and ``ecgstream verify`` on the committed excerpt."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from ecgstream.api import (
    VerifyResult,
    beats_from_record,
    default_model,
    embed_beats,
    score_beats,
    verify_records,
)
from ecgstream.dsp import DspConfig
from ecgstream.pipeline.scores import make_template
from ecgstream.sources.records import DataError, excerpt_dir

EX = excerpt_dir()
P01_1, P01_2, P06_1 = EX / "Person_01" / "rec_1", EX / "Person_01" / "rec_2", EX / "Person_06" / "rec_1"


def test_beats_from_record_gives_good_windows():
    beats = beats_from_record(P01_1)
    assert len(beats) >= 15
    assert all(b.good and b.window.shape == (DspConfig().window_len,) for b in beats)
    every = beats_from_record(P01_1, good_only=False)
    assert len(every) >= len(beats)


def test_embed_and_score():
    beats = beats_from_record(P01_1)
    e = embed_beats(beats)
    assert e.shape == (len(beats), default_model().embedding_dim)
    np.testing.assert_allclose(embed_beats(np.stack([b.window for b in beats])), e)
    assert embed_beats([]).shape == (0, default_model().embedding_dim)
    s = score_beats(e, make_template(e))
    assert s.shape == (len(beats),) and np.all(s <= 1 + 1e-6)


def test_verify_genuine_and_impostor():
    g = verify_records(P01_1, P01_2)
    i = verify_records(P01_1, P06_1)
    assert isinstance(g, VerifyResult)
    assert g.decision == "accept" and g.accepted
    assert i.decision == "reject" and not i.accepted
    assert g.score > i.score and g.probability > i.probability
    assert 0 <= i.probability <= 1 and 0 <= g.probability <= 1
    assert g.threshold == default_model().card["thresholds"]["fused"]["eer"]
    assert g.threshold_beats == 10 and g.beats_b >= 10
    strict = verify_records(P01_1, P06_1, operating_point="far_0.001")
    assert strict.threshold >= i.threshold and strict.decision == "reject"


def test_verify_bad_input(monkeypatch):
    with pytest.raises(DataError):
        verify_records(EX / "Person_01" / "rec_99", P01_2)
    with pytest.raises(DataError, match="channel 5"):
        verify_records(P01_1, P01_2, channel=5)
    with pytest.raises(ValueError, match="operating_point"):
        verify_records(P01_1, P01_2, operating_point="best")
    import ecgstream.api as api

    monkeypatch.setattr(api, "MIN_ENROL_BEATS", 1000)
    with pytest.raises(ValueError, match="good beats; need at least 1000 to enrol"):
        verify_records(P01_1, P01_2)


def _cli(argv: list[str]) -> int:
    from ecgstream.cli import verify as cli_verify

    p = argparse.ArgumentParser()
    cli_verify.add_parser(p.add_subparsers())
    args = p.parse_args(["verify", *argv])
    return args.func(args)


def test_cli_verify_exit_codes_and_json(capsys):
    assert _cli([str(P01_1), str(P01_2)]) == 0
    out = capsys.readouterr().out
    assert "ACCEPT" in out and "score" in out
    assert _cli([str(P01_1), str(P06_1), "--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["decision"] == "reject" and 0 <= d["probability"] <= 1
    assert _cli([str(EX / "nope"), str(P06_1)]) == 2
    assert "no WFDB record" in capsys.readouterr().err


def test_cli_verify_bad_model(tmp_path, capsys):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"not a model")
    assert _cli([str(P01_1), str(P01_2), "--model", str(bad)]) == 78
    assert "card" in capsys.readouterr().err
