"""The real-data suite: quick mode end to end, folds, windows, the cache, parallel runs and the summary arithmetic."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from ehrseq.baselines import KaplanMeier, LandmarkCox
from ehrseq.bench import suite
from ehrseq.bench._repro import keep_patients
from ehrseq.errors import ConfigError
from ehrseq.estimator import DynamicSurvival
from ehrseq.evaluate import landmark_from_predictions

pytest.importorskip("SurvSet")


@pytest.fixture(scope="module")
def heart() -> suite.SuiteData:
    return suite.load_dataset("heart")


@pytest.mark.slow
def test_quick_mode_writes_the_page_with_consistent_numbers(tmp_path, capsys):
    cache = tmp_path / "cache"
    suite.main(["--quick", "--jobs", "1", "--out", str(tmp_path), "--cache", str(cache), "--bootstrap", "20"])
    text = (tmp_path / "suite.md").read_text()
    for name in ("ehrseq default", "ehrseq tuned", "landmark Cox", "landmark Cox + visit history", "landmark RSF", "Kaplan–Meier",
                 "## heart", "## Time"):
        assert name in text
    frame = pl.read_csv(tmp_path / "suite.csv")
    # 1 data set x 1 repeat x 2 folds x 6 models x 3 windows
    assert frame.height == 2 * 6 * 3
    assert frame.group_by("dataset", "fold", "model").len()["len"].to_list() == [3] * 12
    assert frame["note"].drop_nulls().str.starts_with("failed").sum() == 0  # the tuned model's search completed
    same_patients = frame.group_by("dataset", "fold", "landmark", "horizon").agg(pl.col("n_at_risk").n_unique())
    assert (same_patients["n_at_risk"] == 1).all()  # every model is scored on the same test patients
    km = frame.filter(pl.col("model") == "km")
    assert np.allclose(km["c_index"].drop_nulls().to_numpy(), 0.5)  # one risk for everyone at a landmark

    summary = suite.summarise(frame)
    for row in summary.per_dataset.filter(pl.col("model") == "default").iter_rows(named=True):
        cox = summary.per_dataset.filter((pl.col("dataset") == row["dataset"]) & (pl.col("model") == "cox")).row(
            0, named=True)
        # every fold has a value for both, so the mean paired difference is the difference of the means
        assert row["n_folds"] == cox["n_folds"] == 2
        for metric in ("c_index", "brier", "ibs"):
            assert row[f"d_{metric}_mean"] == pytest.approx(row[f"{metric}_mean"] - cox[f"{metric}_mean"], abs=1e-12)
    printed = capsys.readouterr().out
    assert "time:" in printed and "Δ C vs Cox" in printed

    # the noise flags' estimate: the pooled out-of-fold difference, scored like the landmark table
    data = {"heart": suite.load_dataset("heart")}
    flags = suite.noise_flags(summary, frame, data, cache, n_bootstrap=20)
    assert "## Noise of the test patients" in text
    assert set(flags["model"]) == {"default", "tuned", "cox_history", "rsf", "km"} and set(flags["metric"]) == {"c_index", "ibs"}
    assert ((flags["lower"] <= flags["upper"]) & (flags["beyond_noise"] == ((flags["lower"] > 0) | (flags["upper"] < 0)))).all()
    for name, d in data.items():
        kept = summary.windows.filter((pl.col("dataset") == name) & pl.col("kept"))
        times = d.patients.select("patient_id", "outcome_time", "event")

        def pooled_c(model):
            predictions = pl.concat([pl.read_parquet(cache / f"{name}-r0-f{k}-{model}.parquet") for k in (0, 1)])
            tables = [landmark_from_predictions(predictions, times, times, [s],
                                                kept.filter(pl.col("landmark") == s)["horizon"].to_list())
                      for s in kept["landmark"].unique().to_list()]
            return pl.concat(tables)["c_index"].mean()

        got = flags.filter((pl.col("dataset") == name) & (pl.col("model") == "default") & (pl.col("metric") == "c_index"))
        assert got["difference"][0] == pytest.approx(pooled_c("default") - pooled_c("cox"), abs=1e-12)


def test_the_tuned_model_searches_on_the_training_folds_only_and_is_not_in_the_default_run(heart):
    pytest.importorskip("optuna")
    assert not suite.MODELS["tuned"].default_run and "45-minute" in suite.MODELS["tuned"].unavailable
    assert [m for m, spec in suite.MODELS.items() if not spec.default_run] == ["tuned"]
    ids = heart.patients["patient_id"].head(70)
    train = (keep_patients(heart.visits, ids), keep_patients(heart.outcomes, ids))
    wrapper = suite.TunedOnTrainingFold({}, n_trials=1, folds=2, min_at_risk=5,
                                        fixed={"epochs": 1, "d_model": 8, "hidden": (8,)})
    model = wrapper.fit(*train)
    assert isinstance(model, DynamicSurvival) and model.epochs == 1 and model.d_model == 8
    assert sum(model.cohort_report_.events.values()) == 70  # fitted on the training patients, no other


def test_summary_arithmetic_on_a_hand_made_frame():
    rows = []
    # one data set, two folds, two models, windows A (kept) and B (too few events in fold 1)
    values = {("m", 0, "A"): 0.7, ("m", 0, "B"): 0.1, ("m", 1, "A"): 0.6, ("m", 1, "B"): 0.2,
              ("cox", 0, "A"): 0.65, ("cox", 0, "B"): 0.3, ("cox", 1, "A"): 0.5, ("cox", 1, "B"): 0.4}
    windows = {"A": (1.0, 2.0), "B": (1.0, 5.0)}
    for (model, fold, window), c in values.items():
        s, h = windows[window]
        events = 1 if (window, fold) == ("B", 1) else 5
        rows.append({"dataset": "d", "repeat": 0, "fold": fold, "model": model, "landmark": s, "horizon": h,
                     "n_at_risk": 40, "n_events": events, "c_index": c, "brier": c / 10, "ibs": c / 20,
                     "note": None, "seconds": 2.0})
    frame = pl.DataFrame(rows)
    summary = suite.summarise(frame, min_at_risk=10, min_events=3, reference="cox")
    assert summary.windows.filter(pl.col("horizon") == 5.0)["kept"].to_list() == [False]
    m = summary.per_dataset.filter(pl.col("model") == "m").row(0, named=True)
    assert m["c_index_mean"] == pytest.approx(0.65) and m["c_index_sd"] == pytest.approx(np.std([0.7, 0.6], ddof=1))
    assert m["d_c_index_mean"] == pytest.approx(np.mean([0.05, 0.1]))
    assert m["d_c_index_sd"] == pytest.approx(np.std([0.05, 0.1], ddof=1))
    assert m["seconds"] == 2.0 and m["n_folds"] == 2
    overall = summary.overall.filter(pl.col("model") == "m").row(0, named=True)
    assert overall["d_c_index"] == pytest.approx(0.075) and overall["n_datasets"] == 1
    assert summary.seconds.row(0) == ("d", 8.0)


def test_windows_are_quantiles_of_the_times_without_repeats():
    times = np.arange(1.0, 101.0)
    q = np.quantile(times, [0.25, 0.5, 0.75])
    assert suite.quantile_windows(times) == ((q[0], q[1] - q[0]), (q[0], q[2] - q[0]), (q[1], q[2] - q[1]))
    tied = np.array([1.0, 2.0, 52.0, 52.0, 52.0, 52.0, 52.0, 52.0])
    assert suite.quantile_windows(tied) == ((float(np.quantile(tied, 0.25)), 52.0 - np.quantile(tied, 0.25)),)



def test_windows_group_by_landmark_in_increasing_order():
    from ehrseq.evaluate import windows_by_landmark

    windows = [(66.0, 109.5), (19.5, 156.0), (19.5, 46.5), (66, 20)]
    assert windows_by_landmark(windows) == [(19.5, [46.5, 156.0]), (66.0, [20.0, 109.5])]
    assert windows_by_landmark([]) == []


def test_folds_are_deterministic_stratified_and_differ_between_repeats(heart):
    first = suite.assign_folds(heart, 5, repeat=0, seed=0)
    assert np.array_equal(first, suite.assign_folds(heart, 5, repeat=0, seed=0))
    assert not np.array_equal(first, suite.assign_folds(heart, 5, repeat=1, seed=0))
    assert set(first.tolist()) == set(range(5))
    events = heart.patients["event"].to_numpy() > 0
    per_fold = np.bincount(first[events], minlength=5)
    assert per_fold.max() - per_fold.min() <= 1
    assert suite.repeats_for(heart, 3) == 3  # 103 patients: repeated


def test_every_model_gets_the_same_folds_and_the_cache_skips_refits(heart, tmp_path):
    calls = []

    def counted(**table):
        calls.append(1)
        return KaplanMeier(**table)

    models = {"a": counted, "b": lambda **table: KaplanMeier(**table)}
    first = suite.run_suite(models, {"heart": heart}, folds=2, repeats=1, cache_dir=tmp_path)
    a = first.filter(pl.col("model") == "a").drop("model", "seconds")
    b = first.filter(pl.col("model") == "b").drop("model", "seconds")
    assert a.equals(b)  # the same model on the same folds gives the same rows
    assert len(calls) == 2 and len(list(tmp_path.glob("*.json"))) == 4
    again = suite.run_suite(models, {"heart": heart}, folds=2, repeats=1, cache_dir=tmp_path)
    assert len(calls) == 2 and again.equals(first)
    suite.run_suite(models, {"heart": heart}, folds=3, repeats=1, cache_dir=tmp_path)
    assert len(calls) == 5  # other folds: other test patients, refitted


@pytest.mark.slow
def test_parallel_run_equals_the_sequential_one(heart):
    """Two worker processes (fresh interpreters: the factories travel by cloudpickle) give the sequential rows."""
    models = {"cox": suite.MODELS["cox"].factory, "km": suite.MODELS["km"].factory}
    one = suite.run_suite(models, {"heart": heart}, folds=2, repeats=1, jobs=1)
    two = suite.run_suite(models, {"heart": heart}, folds=2, repeats=1, jobs=2)
    assert one.drop("seconds").equals(two.drop("seconds"))


def test_landmark_cox_is_fitted_at_the_landmark_with_the_longest_window(heart):
    train = keep_patients(heart.visits, heart.patients["patient_id"].head(80))
    train_outcomes = keep_patients(heart.outcomes, heart.patients["patient_id"].head(80))
    s, horizons = heart.landmarks[0], heart.horizons(heart.landmarks[0])
    model = suite.MODELS["cox"].factory().fit(train, train_outcomes)
    got = model.predict_risk(heart.visits, horizons, landmark=s)
    direct = LandmarkCox(landmarks=[s], window=max(horizons), alpha=0.01, history=False).fit(train, train_outcomes)
    assert got.equals(direct.predict_risk(heart.visits, horizons, landmark=s))
    with pytest.raises(ConfigError, match="landmark"):
        model.predict_risk(heart.visits, horizons)


def test_held_out_and_unknown_data_sets_are_refused():
    for name in suite.HELD_OUT:
        with pytest.raises(ConfigError, match="held out"):
            suite.load_dataset(name)
    with pytest.raises(ConfigError, match="held out"):
        suite.main(["--quick", "--datasets", "heart,aids"])
    with pytest.raises(ConfigError, match="unknown"):
        suite.main(["--quick", "--models", "default,nope"])


def test_a_failing_fit_is_reported_not_dropped(heart):
    def broken(**table):
        return LandmarkCox(landmarks=[1e9], **table)  # nobody at risk there: DataError at fit

    frame = suite.run_suite({"broken": broken}, {"heart": heart}, folds=2, repeats=1)
    assert frame.height == 2 * len(heart.windows) and frame["c_index"].is_null().all()
    assert frame["note"].str.starts_with("failed: DataError").all()
    summary = suite.summarise(frame)
    assert summary.failures.height == 2
