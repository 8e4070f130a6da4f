"""The matcher stage: sittings, cohort normalisation, bounded online adaptation."""

from __future__ import annotations

import numpy as np
import pytest

from ecgstream.pipeline.scores import (
    AdaptationPolicy,
    Cohort,
    CohortError,
    Scorer,
    make_template,
    quality_weights,
)


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def _cloud(rng, centre, n, spread=0.2):
    return _unit(centre + spread * rng.normal(size=(n, centre.size)))


def test_raw_scores_are_cosines_and_best_sitting_wins(rng):
    a, b = _unit(rng.normal(size=(2, 16)))
    sc = Scorer([np.stack([a, b])])
    e = _unit(rng.normal(size=(5, 16)))
    np.testing.assert_allclose(sc.scores(e)[:, 0], np.maximum(e @ a, e @ b))
    two = Scorer([a[None], b[None]])
    np.testing.assert_allclose(two.scores(e), np.stack([e @ a, e @ b], axis=1))


def test_znorm_uses_the_cohort_spread_of_each_template(rng):
    cohort = Cohort(_unit(rng.normal(size=(50, 16))), "m")
    t = _unit(rng.normal(size=16))
    sc = Scorer([t[None]], norm="znorm", cohort=cohort)
    raw = cohort.vectors.astype(np.float64) @ t
    e = _unit(rng.normal(size=(3, 16)))
    want = (e @ t - raw.mean()) / max(raw.std(), 0.02)
    np.testing.assert_allclose(sc.scores(e)[:, 0], want, rtol=1e-6)
    # The cohort's own members score about 0 on average: a normalised score of
    # 0 is "as similar as a typical impostor".
    assert abs(sc.scores(cohort.vectors)[:, 0].mean()) < 1e-6


def test_znorm_without_cohort_and_unknown_norm_are_refused(rng):
    t = _unit(rng.normal(size=(1, 8)))
    with pytest.raises(ValueError, match="needs a cohort"):
        Scorer([t], norm="znorm")
    with pytest.raises(ValueError, match="unknown score normalisation"):
        Scorer([t], norm="tnorm")
    with pytest.raises(ValueError, match="dimension"):
        Scorer([t], norm="znorm", cohort=Cohort(_unit(rng.normal(size=(30, 9))), "m"))


def test_cohort_file_round_trip_and_checks(tmp_path, rng):
    c = Cohort(_unit(rng.normal(size=(40, 8))), "ecgstream-embed-abc")
    c.save(tmp_path / "cohort.npz")
    back = Cohort.load(tmp_path / "cohort.npz", model_id="ecgstream-embed-abc", cohort_id=c.id)
    assert back.id == c.id and np.array_equal(back.vectors, c.vectors)
    with pytest.raises(CohortError, match="made by model"):
        Cohort.load(tmp_path / "cohort.npz", model_id="ecgstream-embed-other")
    with pytest.raises(CohortError, match="names"):
        Cohort.load(tmp_path / "cohort.npz", cohort_id="cohort-000000000000")
    with pytest.raises(CohortError, match="not found"):
        Cohort.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(CohortError, match="not a valid cohort"):
        Cohort.load(tmp_path / "bad.npz")
    with pytest.raises(CohortError, match="at least"):
        Cohort(_unit(rng.normal(size=(5, 8))), "m")
    with pytest.raises(CohortError, match="unit length"):
        Cohort(rng.normal(size=(40, 8)) * 3, "m")


def test_quality_weights_push_outliers_down_not_out(rng):
    centre = _unit(rng.normal(size=16))
    e = _cloud(rng, centre, 20, 0.1)
    e[3] = _unit(rng.normal(size=16))  # a bad beat that passed the gate
    w = quality_weights(e)
    assert w[3] == pytest.approx(0.25)
    assert np.sum(w[np.arange(20) != 3] == 1.0) >= 17
    c_w, c_plain = make_template(e, w), make_template(e)
    assert c_w @ centre > c_plain @ centre


def test_adaptation_follows_the_wearer_within_the_floor(rng):
    enrolled = _unit(rng.normal(size=16))
    drift = _unit(enrolled + 0.6 * _unit(rng.normal(size=16)))  # the same person, another day
    sc = Scorer([enrolled[None]])
    pol = AdaptationPolicy(rate=0.05, floor=0.9)
    before = float(sc.scores(drift[None])[0, 0])
    for e in _cloud(rng, drift, 200, 0.05):
        cos = sc.adapt(0, e, pol)
        assert cos >= 0.9 - 1e-9
    after = float(sc.scores(drift[None])[0, 0])
    assert after > before
    c = sc.adapted_centroids(0)[0]
    assert float(c @ enrolled) >= 0.9 - 1e-6


def test_an_impostor_cannot_capture_a_template_by_adaptation(rng):
    """Even if every impostor beat were allowed to adapt (a gate that failed
    open), the template stays on the floor's cone around the enrolled
    centroid: the impostor's score rises by a bounded amount and the genuine
    wearer still matches the adapted template better than the impostor does."""
    d = 32
    genuine = _unit(rng.normal(size=d))
    impostor = _unit(rng.normal(size=d))
    sc = Scorer([genuine[None]])
    pol = AdaptationPolicy(rate=0.2, floor=0.9)
    for e in _cloud(rng, impostor, 2000, 0.05):
        sc.adapt(0, e, pol)
    c = sc.adapted_centroids(0)[0]
    assert float(c @ genuine) == pytest.approx(0.9, abs=1e-6)
    g = float(sc.scores(genuine[None])[0, 0])
    i = float(sc.scores(impostor[None])[0, 0])
    assert g > i
    # Without a floor the impostor would own the template; with it, the
    # impostor's cosine is bounded by cos(arccos(0.9) + angle(genuine, impostor)).
    theta = np.arccos(np.clip(genuine @ impostor, -1, 1))
    assert i <= np.cos(max(0.0, theta - np.arccos(0.9))) + 1e-6


def test_adaptation_policy_bounds_are_checked():
    with pytest.raises(ValueError):
        AdaptationPolicy(rate=0.0)
    with pytest.raises(ValueError):
        AdaptationPolicy(rate=0.5)
    with pytest.raises(ValueError):
        AdaptationPolicy(floor=1.0)
