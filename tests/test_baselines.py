"""Baselines: landmark features and stacked design against brute-force loops, landmark Cox against
scikit-survival fitted directly on that design, Kaplan–Meier against scikit-survival, shared properties."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.nonparametric import kaplan_meier_estimator

from ehrseq.baselines import KaplanMeier, LandmarkCox, LandmarkRandomForest
from ehrseq.datasets import simulate
from ehrseq.errors import ConfigError
from ehrseq.evaluate import landmark

NULL = None


def _hand_built() -> tuple[pl.DataFrame, pl.DataFrame]:
    visits = pl.DataFrame(
        {
            "patient_id": [1, 1, 1, 2, 2, 3, 3, 4, 4, 4],
            "time": [0.0, 100.0, 300.0, 0.0, 250.0, 0.0, 50.0, 0.0, 150.0, 500.0],
            "a": [1.0, NULL, 3.0, 2.0, NULL, NULL, 4.0, 0.5, 1.5, 2.5],
            "b": [NULL, 5.0, NULL, 1.0, NULL, NULL, 2.0, 3.0, NULL, NULL],
            "g": ["x", NULL, "y", "y", NULL, NULL, "x", "x", NULL, "z"],
        },
        schema_overrides={"a": pl.Float64, "b": pl.Float64, "g": pl.String},
    )
    outcomes = pl.DataFrame({"patient_id": [1, 2, 3, 4], "time": [400.0, 600.0, 120.0, 700.0], "event": [1, 0, 1, 1]})
    return visits, outcomes


def _brute_rows(visits: pl.DataFrame, outcomes: pl.DataFrame, landmarks, window, numeric, categorical):
    """One dict per (landmark, at-risk patient): LOCF values, elapsed time, counts, target (plain loops)."""
    rows = []
    for s in landmarks:
        for pid, y, event in outcomes.iter_rows():
            history = [r for r in visits.filter(pl.col("patient_id") == pid).sort("time").iter_rows(named=True)
                       if r["time"] <= s and r["time"] < y]
            if y <= s or not history:
                continue
            row = {"patient_id": pid, "s": s, "since_last_visit": s - history[-1]["time"], "n_visits": len(history),
                   "time": min(y - s, window), "event": bool(event == 1 and y - s <= window)}
            for c in (*numeric, *categorical):
                seen = [r[c] for r in history if r[c] is not None]
                row[c] = seen[-1] if seen else None
            rows.append(row)
    return rows


def test_stacked_design_matches_brute_force_locf():
    visits, outcomes = _hand_built()
    marks = (0.0, 100.0, 200.0, 350.0)
    model = LandmarkCox(landmarks=marks, window=300.0)
    design = model.stacked_design(visits, outcomes)
    ids = model.cohort_settings.build(visits, outcomes).patients["patient_id"]
    design = design.with_columns(pl.col("patient_index").map_elements(lambda i: ids[i], return_dtype=pl.Int64)
                                 .alias("patient_id")).sort("s", "patient_id")
    expected = _brute_rows(visits, outcomes, marks, 300.0, ("a", "b"), ("g",))
    assert design.height == len(expected)
    for got, want in zip(design.iter_rows(named=True), expected):
        for key, value in want.items():
            assert got[key] == value, (key, got, want)


def _design_matrix(rows, numeric, categorical, means, levels, history=True):
    """The documented columns: mean-imputed value + missing indicator, one-hot vs first level + missing,
    time since last visit and visit count (with ``history``), landmark."""
    columns = []
    for r in rows:
        out = []
        for c in numeric:
            out += [means[c] if r[c] is None else r[c], float(r[c] is None)]
        for c in categorical:
            out += [float(r[c] == level) for level in levels[c][1:]] + [float(r[c] is None)]
        out += [r["since_last_visit"], r["n_visits"], r["s"]] if history else [r["s"]]
        columns.append(out)
    return np.array(columns, dtype=np.float64)


@pytest.mark.parametrize("history", [True, False])
def test_landmark_cox_equals_sksurv_on_the_brute_force_design(history):
    sim = simulate(120, seed=1)
    numeric, categorical = ("x00", "x01", "x02"), ("sex",)
    marks, window = (0.0, 200.0, 400.0, 800.0), 1000.0
    ids = sim.outcomes["patient_id"]
    train_ids = ids.filter(ids % 4 != 0).implode()
    train = (sim.visits.filter(pl.col("patient_id").is_in(train_ids)), sim.outcomes.filter(pl.col("patient_id").is_in(train_ids)))
    test = (sim.visits.filter(~pl.col("patient_id").is_in(train_ids)), sim.outcomes.filter(~pl.col("patient_id").is_in(train_ids)))
    model = LandmarkCox(alpha=0.0, landmarks=marks, window=window, numeric=numeric, categorical=categorical,
                        codes=None, history=history).fit(*train)
    assert ("since_last_visit" in model.feature_names_) == history

    rows = _brute_rows(*train, marks, window, numeric, categorical)
    means = {c: np.mean([r[c] for r in rows if r[c] is not None]) for c in numeric}
    levels = {c: sorted({r[c] for r in rows if r[c] is not None}) for c in categorical}
    x = _design_matrix(rows, numeric, categorical, means, levels, history)
    keep = x.std(axis=0) > 0
    target = np.array([(r["event"], r["time"]) for r in rows], dtype=[("event", bool), ("time", float)])
    reference = CoxPHSurvivalAnalysis(alpha=0.0, ties="breslow").fit(x[:, keep], target)

    s, durations = 300.0, np.array([30.0, 200.0, 600.0, 1000.0])
    query = _brute_rows(*test, [s], window, numeric, categorical)
    assert len(query) >= 10
    expected = reference.predict_survival_function(
        _design_matrix(query, numeric, categorical, means, levels, history)[:, keep])
    expected = np.array([[f(min(d, f.x[-1])) if d >= f.x[0] else 1.0 for d in durations] for f in expected])
    got = (model.predict_survival(test[0], durations, landmark=s, outcomes=test[1])
           .filter(pl.col("patient_id").is_in([r["patient_id"] for r in query]))
           .sort("patient_id", "horizon")["survival"].to_numpy().reshape(-1, durations.size))
    order = np.argsort([r["patient_id"] for r in query])
    np.testing.assert_allclose(got, expected[order], rtol=1e-6, atol=1e-9)


def test_kaplan_meier_is_the_conditional_sksurv_estimate():
    sim = simulate(80, seed=2)
    model = KaplanMeier().fit(sim.visits, sim.outcomes)
    times, values = kaplan_meier_estimator(sim.outcomes["event"].to_numpy() == 1, sim.outcomes["time"].to_numpy())

    def s_km(t: float) -> float:
        below = times <= t
        return float(values[below][-1]) if below.any() else 1.0

    s, horizons = 500.0, [100.0, 365.0, 2000.0]
    frame = model.predict_risk(sim.visits, horizons, landmark=s)
    has_visit = sim.visits.filter(pl.col("time") <= s)["patient_id"].unique()
    assert sorted(frame["patient_id"].unique().to_list()) == sorted(has_visit.to_list())
    for h in horizons:
        risk = frame.filter(pl.col("horizon") == h)["risk"].unique().to_numpy()
        np.testing.assert_allclose(risk, [1.0 - s_km(s + h) / s_km(s)], rtol=1e-12)


@pytest.fixture(scope="module")
def fitted():
    sim = simulate(100, seed=3)
    ids = sim.outcomes["patient_id"]
    train_ids = ids.filter(ids % 3 != 0).implode()
    train = (sim.visits.filter(pl.col("patient_id").is_in(train_ids)), sim.outcomes.filter(pl.col("patient_id").is_in(train_ids)))
    test = (sim.visits.filter(~pl.col("patient_id").is_in(train_ids)), sim.outcomes.filter(~pl.col("patient_id").is_in(train_ids)))
    models = {
        "km": KaplanMeier().fit(*train),
        "cox": LandmarkCox(n_codes=5).fit(*train),
        "rsf": LandmarkRandomForest(n_estimators=10, min_samples_leaf=10, n_codes=5).fit(*train),
    }
    return train, test, models


@pytest.mark.parametrize("name", ["km", "cox", "rsf"])
def test_predictions_are_probabilities_monotone_in_the_horizon(fitted, name):
    train, test, models = fitted
    horizons = [0.0, 30.0, 180.0, 365.0, 900.0, 3000.0]
    first = test[0].group_by("patient_id").agg(pl.col("time").min().alias("first"))
    longest = train[1].join(train[0].group_by("patient_id").agg(pl.col("time").min().alias("first")), on="patient_id")
    longest = (longest["time"] - longest["first"]).max()  # the longest training follow-up since the first visit
    for mark in (None, 0.0, 400.0):
        frame = models[name].predict_risk(test[0], horizons, landmark=mark, outcomes=test[1])
        expected = ["patient_id", "landmark", "visit_time", "horizon", "risk", "extrapolated"] if mark is not None \
            else ["patient_id", "visit_time", "horizon", "risk", "extrapolated"]
        assert frame.columns == expected
        s = pl.lit(mark) if mark is not None else pl.col("visit_time") - pl.col("first")
        beyond = frame.join(first, on="patient_id", how="left", maintain_order="left").select(s + pl.col("horizon") > longest)
        assert frame["extrapolated"].to_list() == beyond.to_series().to_list()
        assert 0 < frame["extrapolated"].sum() < frame.height
        risk = frame.sort("patient_id", "horizon")["risk"].to_numpy().reshape(-1, len(horizons))
        assert np.all((risk >= 0) & (risk <= 1))
        assert np.all(np.diff(risk, axis=1) >= -1e-12)
        np.testing.assert_allclose(risk[:, 0], 0.0, atol=1e-12)


@pytest.mark.parametrize("name", ["km", "cox", "rsf"])
def test_landmark_evaluation_runs_on_each_baseline(fitted, name):
    train, test, models = fitted
    results = landmark(models[name], *test, [0.0, 365.0], [365.0, 730.0], train)
    assert results.height == 4
    assert results["n_at_risk"].min() > 10
    valid = results.filter(pl.col("c_index").is_not_null())
    assert valid.height >= 3
    assert valid["brier"].is_between(0, 1).all()
    if name == "km":  # one risk for everyone at a landmark: every comparable pair is tied
        assert np.allclose(valid["c_index"].to_numpy(), 0.5)
    else:
        assert valid["c_index"].mean() > 0.6


def test_visit_time_is_the_last_visit_before_the_landmark(fitted):
    _, test, models = fitted
    frame = models["cox"].predict_risk(test[0], 365.0, landmark=400.0, outcomes=test[1])
    expected = (test[0].filter(pl.col("time") <= 400.0).group_by("patient_id").agg(pl.col("time").max())
                .join(test[1].select("patient_id", outcome=pl.col("time")), on="patient_id")
                .filter(pl.col("time") < pl.col("outcome")).sort("patient_id"))
    got = frame.sort("patient_id")
    assert got["patient_id"].to_list() == expected["patient_id"].to_list()
    np.testing.assert_array_equal(got["visit_time"].to_numpy(), expected["time"].to_numpy())


def test_at_all_predicts_from_every_visit_with_that_visit_as_landmark(fitted):
    _, test, models = fitted
    cox = models["cox"]
    pid = test[1]["patient_id"][0]
    one = (test[0].filter(pl.col("patient_id") == pid), test[1].filter(pl.col("patient_id") == pid))
    every = cox.predict_survival(one[0], [100.0], at="all", outcomes=one[1])
    kept = one[0].filter(pl.col("time") < one[1]["time"][0])
    assert every.height == kept.height
    for visit_time, survival in every.select("visit_time", "survival").iter_rows():
        at_landmark = cox.predict_survival(one[0], [100.0], landmark=visit_time, outcomes=one[1])
        assert math.isclose(at_landmark["survival"][0], survival, rel_tol=1e-12)


def test_errors_are_explicit(fitted):
    train, test, models = fitted
    with pytest.raises(ConfigError, match="not fitted"):
        LandmarkCox().predict_risk(test[0], 365.0)
    windowed = LandmarkCox(window=365.0).fit(*train)
    with pytest.raises(ConfigError, match="window"):
        windowed.predict_risk(test[0], 730.0, landmark=0.0)
    with pytest.raises(ConfigError, match="numeric landmark"):
        models["cox"].predict_risk(test[0], 365.0, landmark="2020-01-01")
    with pytest.raises(ConfigError, match="durations"):
        models["km"].predict_risk(test[0], -1.0)
    with pytest.raises(ConfigError, match="missing"):
        LandmarkCox(missing="median")


def test_a_landmark_before_every_visit_gives_an_empty_frame(fitted):
    _, test, models = fitted
    for model in models.values():
        frame = model.predict_risk(test[0], [365.0], landmark=-1.0, outcomes=test[1])
        assert frame.height == 0
        assert frame.columns == ["patient_id", "landmark", "visit_time", "horizon", "risk", "extrapolated"]


def test_a_null_codes_list_counts_as_no_codes_in_the_landmark_features():
    """A visit without codes may hold an empty list or a null list (as a CSV file gives back): same counts."""
    from ehrseq.baselines import landmark_features
    from ehrseq.data import build_cohort

    visits, outcomes = _hand_built()
    codes = [["A"], [], ["A", "B"], ["B"], [], [], ["A"], [], ["B"], ["A"]]
    empty = build_cohort(visits.with_columns(pl.Series("codes", codes)), outcomes)
    null = build_cohort(visits.with_columns(pl.Series("codes", [c or None for c in codes])), outcomes)
    index, s = np.array([0, 0, 1, 3]), np.array([150.0, 350.0, 300.0, 600.0])
    counts = landmark_features(empty, index, s, ("A", "B")).select("code:A", "code:B")
    assert landmark_features(null, index, s, ("A", "B")).select("code:A", "code:B").equals(counts)
    assert counts.rows() == [(1, 0), (2, 1), (0, 1), (1, 1)]  # visits <= s recording the code, by hand


def test_forest_bootstrap_size_above_the_stacked_rows_means_all_rows(fitted):
    train, test, _ = fitted
    stacked = LandmarkRandomForest(n_codes=5).stacked_design(*train).height
    capped = LandmarkRandomForest(n_estimators=5, max_samples=10 * stacked, n_codes=5, seed=1).fit(*train)
    full = LandmarkRandomForest(n_estimators=5, max_samples=None, n_codes=5, seed=1).fit(*train)
    smaller = LandmarkRandomForest(n_estimators=5, max_samples=stacked // 2, n_codes=5, seed=1).fit(*train)
    assert smaller.model_.max_samples == stacked // 2 and capped.model_.max_samples is None
    predict = lambda m: m.predict_risk(test[0], [180.0], landmark=400.0, outcomes=test[1])["risk"]  # noqa: E731
    assert predict(capped).equals(predict(full))
