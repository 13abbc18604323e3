"""Bootstrap intervals of the landmark table and paired comparisons, against loops that recompute every
metric on each resampled test set."""

import numpy as np
import polars as pl
import pytest

from ehrseq.bootstrap import compare_predictions, paired_p_value, paired_window_differences
from ehrseq.errors import ConfigError
from ehrseq.evaluate import evaluation_horizons, landmark_from_predictions
from ehrseq.metrics import (
    CensoringDistribution,
    NoComparablePairsError,
    cause_specific_auc,
    cause_specific_brier_score,
    cause_specific_harrell_c,
    cause_specific_integrated_brier_score,
    cause_specific_uno_c,
)
from ehrseq.metrics.resampled import bootstrap_weights

LANDMARKS = (0.0, 4.0)
HORIZONS = (5.0, 10.0)
IBS_POINTS = 4


def _data(seed: int, n_test: int = 70, competing: bool = True):
    rng = np.random.default_rng(seed)
    frailty = rng.standard_normal(n_test)
    time = rng.exponential(8 * np.exp(-0.7 * frailty)).round(1) + 0.1
    types = [1, 2] if competing else [1]
    event = np.where(rng.random(n_test) < 0.7, rng.choice(types, size=n_test), 0)
    test = pl.DataFrame({"patient_id": np.arange(n_test) + 1000, "time": time, "event": event})
    n_train = 200
    train = pl.DataFrame({"patient_id": np.arange(n_train), "time": rng.exponential(9, n_train) + 0.1,
                          "event": np.where(rng.random(n_train) < 0.7, 1, 0)})
    grid = evaluation_horizons(HORIZONS, IBS_POINTS)

    def predictions(noise: float, seed: int) -> pl.DataFrame:
        r = np.random.default_rng(seed)
        rate = 0.1 * np.exp(0.7 * frailty + noise * r.standard_normal(n_test))
        frames = []
        for s in LANDMARKS:
            risk = 1 - np.exp(-rate[:, None] * grid[None, :])
            frames.append(pl.DataFrame({
                "patient_id": np.repeat(test["patient_id"].to_numpy(), grid.size),
                "landmark": np.full(n_test * grid.size, s), "horizon": np.tile(grid, n_test), "risk": risk.ravel()}))
        return pl.concat(frames)

    return test, train, predictions


def _window_values(test, train, predictions, s, h, index=None):
    """The five metrics of window (s, h) computed directly, on the test rows ``index`` (with repeats)."""
    at_risk = np.flatnonzero(test["time"].to_numpy() > s)
    rows = at_risk if index is None else index
    time = test["time"].to_numpy()[rows] - s
    event_type = test["event"].to_numpy()[rows]
    at = predictions.filter(pl.col("landmark") == s)
    wide = at.pivot(on="horizon", index="patient_id", values="risk", sort_columns=True)
    ids = test["patient_id"].to_numpy()[rows]
    wide = pl.DataFrame({"patient_id": ids}).join(wide, on="patient_id", how="left", maintain_order="left")
    grid = np.unique(at["horizon"].to_numpy())
    inside = grid[grid <= h]
    risk = wide[str(h)].to_numpy()
    incidence = wide.select([str(t) for t in inside]).to_numpy()
    at_train = train.filter(pl.col("time") > s)
    censoring = CensoringDistribution.fit(at_train["time"].to_numpy() - s, at_train["event"].to_numpy() != 0)
    window_type = np.where(time <= h, event_type, 0)

    def attempt(compute):
        try:
            return float(compute())
        except (NoComparablePairsError, ValueError):
            return np.nan

    return {
        "c_index": attempt(lambda: cause_specific_harrell_c(np.minimum(time, h), window_type, risk, cause=1).cindex),
        "uno_c": attempt(lambda: cause_specific_uno_c(time, event_type, risk, censoring, cause=1, tau=h).cindex),
        "auc": attempt(lambda: cause_specific_auc(time, event_type, risk, [h], censoring, cause=1).auc[0]),
        "brier": attempt(lambda: cause_specific_brier_score(time, event_type, risk[:, None], [h], censoring,
                                                            cause=1)[0]),
        "ibs": attempt(lambda: cause_specific_integrated_brier_score(time, event_type, incidence, inside, censoring,
                                                                     cause=1)),
    }


def _loop_resamples(test, train, predictions, s, h, weights):
    """Each metric of window (s, h) recomputed on every resampled test set, ``{metric: [R]}``."""
    at_risk = np.flatnonzero(test["time"].to_numpy() > s)
    values = []
    for counts in weights.astype(int):
        index = np.repeat(at_risk, counts[at_risk])
        values.append(_window_values(test, train, predictions, s, h, index))
    return {name: np.array([v[name] for v in values]) for name in values[0]}


def _p_value_loop(d):
    d = d[np.isfinite(d)]
    below = sum(1 for x in d if x <= 0)
    above = sum(1 for x in d if x >= 0)
    return min(1.0, 2 * min((1 + below) / (len(d) + 1), (1 + above) / (len(d) + 1)))


@pytest.mark.parametrize("competing", [False, True])
def test_compare_predictions_equals_a_loop_over_resampled_test_sets(competing):
    test, train, predictions = _data(3, competing=competing)
    a, b = predictions(0.3, 1), predictions(1.0, 2)
    resamples, seed = 40, 7
    table = compare_predictions(a, b, test, train, LANDMARKS, HORIZONS, n_bootstrap=resamples, seed=seed, level=0.9)
    weights = bootstrap_weights(test.height, resamples, seed)
    overall = {name: [] for name in ("c_index", "uno_c", "auc", "brier", "ibs")}
    for s in LANDMARKS:
        for h in HORIZONS:
            point_a, point_b = _window_values(test, train, a, s, h), _window_values(test, train, b, s, h)
            loop_a = _loop_resamples(test, train, a, s, h, weights)
            loop_b = _loop_resamples(test, train, b, s, h, weights)
            for name in overall:
                row = table.filter((pl.col("landmark") == s) & (pl.col("horizon") == h) & (pl.col("metric") == name))
                assert row["a"][0] == pytest.approx(point_a[name], abs=1e-12)
                assert row["b"][0] == pytest.approx(point_b[name], abs=1e-12)
                d = loop_a[name] - loop_b[name]
                finite = d[np.isfinite(d)]
                assert row["n_resamples"][0] == finite.size
                lower, upper = np.quantile(finite, [0.05, 0.95])
                assert row["lower"][0] == pytest.approx(lower, abs=1e-12)
                assert row["upper"][0] == pytest.approx(upper, abs=1e-12)
                assert row["p_value"][0] == pytest.approx(_p_value_loop(d), abs=1e-15)
                overall[name].append((point_a[name], point_b[name], d))
    for name, entries in overall.items():
        row = table.filter(pl.col("landmark").is_null() & (pl.col("metric") == name))
        assert row["a"][0] == pytest.approx(np.mean([e[0] for e in entries]), abs=1e-12)
        assert row["difference"][0] == pytest.approx(np.mean([e[0] - e[1] for e in entries]), abs=1e-12)
        per_resample = np.nanmean(np.stack([e[2] for e in entries], axis=1), axis=1)
        assert row["p_value"][0] == pytest.approx(_p_value_loop(per_resample), abs=1e-15)
        assert row["lower"][0] == pytest.approx(np.quantile(per_resample, 0.05), abs=1e-12)


@pytest.mark.parametrize("metric", ["c_index", "brier", "ibs"])
def test_paired_window_differences_equal_a_loop_over_resampled_test_sets(metric):
    """Two of the four landmark × horizon windows: the mean difference over them, and per resample the mean of the
    recomputed differences over the windows where the resample has one."""
    test, train, predictions = _data(4, competing=False)
    a, b = predictions(0.3, 1), predictions(1.0, 2)
    windows = [(0.0, 10.0), (4.0, 5.0)]
    since_origin = {"time": "outcome_time"}
    point, resampled = paired_window_differences(a, b, test.rename(since_origin), train.rename(since_origin), windows,
                                                 metric, min_at_risk=1, n_bootstrap=30, seed=5)
    weights = bootstrap_weights(test.height, 30, 5)
    points, loops = [], []
    for s, h in windows:
        points.append(_window_values(test, train, a, s, h)[metric] - _window_values(test, train, b, s, h)[metric])
        loops.append(_loop_resamples(test, train, a, s, h, weights)[metric]
                     - _loop_resamples(test, train, b, s, h, weights)[metric])
    assert point == pytest.approx(np.mean(points), abs=1e-12)
    np.testing.assert_allclose(resampled, np.nanmean(np.stack(loops, axis=1), axis=1), rtol=0, atol=1e-12)
    same, zeros = paired_window_differences(a, a, test.rename(since_origin), train.rename(since_origin), windows, metric,
                                            n_bootstrap=10)
    assert same == 0.0 and np.all(zeros == 0.0)
    with pytest.raises(ConfigError, match="metric must be one of c_index"):
        paired_window_differences(a, b, test.rename(since_origin), train.rename(since_origin), windows, "accuracy")


def test_a_model_compared_with_itself_differs_by_zero_with_p_one():
    test, train, predictions = _data(5)
    a = predictions(0.5, 1)
    table = compare_predictions(a, a.sample(fraction=1.0, shuffle=True, seed=2), test, train, LANDMARKS, HORIZONS,
                                n_bootstrap=200, seed=0)
    defined = table.filter(pl.col("difference").is_not_null())
    assert defined.height >= 20
    assert (defined["difference"] == 0).all() and (defined["lower"] == 0).all() and (defined["upper"] == 0).all()
    assert (defined["p_value"] == 1.0).all()


def test_clearly_better_predictions_are_significant():
    test, train, predictions = _data(9, n_test=300, competing=False)
    table = compare_predictions(predictions(0.0, 1), predictions(3.0, 2), test, train, LANDMARKS, HORIZONS,
                                n_bootstrap=300, seed=1)
    c = table.filter(pl.col("landmark").is_null() & (pl.col("metric") == "c_index"))
    assert c["difference"][0] > 0 and c["lower"][0] > 0 and c["p_value"][0] < 0.01


def test_landmark_intervals_equal_percentiles_of_a_loop():
    test, train, predictions = _data(4)
    a = predictions(0.5, 3)
    table = landmark_from_predictions(a, test.rename({"time": "outcome_time"}), train.rename({"time": "outcome_time"}),
                                      LANDMARKS, HORIZONS, ci=0.8, n_bootstrap=30, seed=11)
    weights = bootstrap_weights(test.height, 30, 11)
    for row in table.iter_rows(named=True):
        loop = _loop_resamples(test, train, a, row["landmark"], row["horizon"], weights)
        for name, values in loop.items():
            assert row[name] is not None
            lower, upper = np.quantile(values[np.isfinite(values)], [0.1, 0.9])
            assert row[f"{name}_lower"] == pytest.approx(lower, abs=1e-12)
            assert row[f"{name}_upper"] == pytest.approx(upper, abs=1e-12)
            assert row[f"{name}_lower"] <= row[name] + 0.2 and row[name] - 0.2 <= row[f"{name}_upper"]


def test_compare_refuses_different_patients_and_bad_levels():
    test, train, predictions = _data(6)
    a = predictions(0.5, 1)
    dropped = a.filter(pl.col("patient_id") != a["patient_id"][0])
    with pytest.raises(ConfigError, match="different patients"):
        compare_predictions(a, dropped, test, train, LANDMARKS, HORIZONS, n_bootstrap=5)
    with pytest.raises(ConfigError, match="level"):
        compare_predictions(a, a, test, train, LANDMARKS, HORIZONS, level=95)


def test_paired_p_value_definition():
    assert paired_p_value(np.zeros(10)) == 1.0
    assert paired_p_value(np.ones(99)) == pytest.approx(2 / 100)
    assert paired_p_value(np.array([np.nan, np.nan])) is None
