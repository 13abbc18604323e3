"""Hyperparameter search (ehrseq.tune, ehrseq tune): the refitted best model, the trials table, seeding, pruning,
the time budget, persistence and scoring of the tuned model, the command line and the refusals."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import polars as pl
import pytest

import ehrseq
from ehrseq.cli import main
from ehrseq.datasets import simulate
from ehrseq.errors import ConfigError
from ehrseq.estimator import DynamicSurvival
from ehrseq.evaluate import landmark
from ehrseq.settings import EstimatorSettings
from ehrseq.tuning import SEARCH_SPACE, Choice, FloatRange, IntRange, check_space, describe_space, distribution, tune

optuna = pytest.importorskip("optuna")

#: a tiny model: the search is over everything else of the default space
FIXED = dict(epochs=2, d_model=8, hidden=(8,), batch_size=32, device="cpu")


@pytest.fixture(scope="module")
def cohort():
    data = simulate(60, 0)
    return data.visits, data.outcomes


@pytest.fixture(scope="module")
def tuned(cohort):
    return tune(*cohort, n_trials=2, folds=2, seed=1, progress=False, **FIXED)


def test_tune_returns_the_best_settings_blended_with_the_defaults(tuned, cohort):
    model, trials = tuned
    assert isinstance(model, DynamicSurvival) and hasattr(model, "model_")
    searched = [name for name in SEARCH_SPACE if name not in FIXED]
    assert trials.columns == ["trial", *searched, "score", "fold_mean", "fold_sd", "folds", "state", "seconds", "best",
                              "note"]
    assert trials.height == 2 and trials["trial"].to_list() == [0, 1]
    assert trials["state"].to_list() == ["complete", "complete"] and trials["folds"].to_list() == [2, 2]
    assert trials["seconds"].min() > 0 and trials["score"].is_between(0, 1).all()
    best = trials.filter("best")
    assert best.height == 1 and best["trial"][0] == trials["score"].arg_max()  # the best-scoring trial
    assert set(tuned.best) == set(searched)
    for name in searched:  # the best trial's settings, as the table writes them
        value = tuned.best[name]
        assert (",".join(str(v) for v in value) if isinstance(value, tuple) else value) == best[name][0], name
    # the model: the fixed settings and the defaults, blended with the best trial's settings that differ from them when
    # its gain clears one standard error
    params = model.get_params()
    defaults = EstimatorSettings(**FIXED).params()
    assert all(params[name] == defaults[name] for name in searched)
    differ = {name: value for name, value in tuned.best.items() if value != defaults[name]}
    note = best["note"][0]
    gain = r"its gain over the defaults [+-]\d\.\d{4}, paired bootstrap interval over patients of ± one standard " \
           r"error [+-]\d\.\d{4} to [+-]\d\.\d{4}"
    if best["trial"][0] == 0:
        assert params["blend"] is None and note == "the defaults, refitted"
    elif note.startswith("not refitted"):
        assert params["blend"] is None and re.fullmatch(rf"not refitted \({gain}, holds 0\): the defaults are refitted",
                                                        note)
    else:
        assert params["blend"] == differ and params["blend_weight"] == 0.5 and differ
        assert re.fullmatch(rf"refitted blended with the defaults \(trial 0\), weighing 0\.5 \({gain}\)", note)
        assert model.model_config_.n_members == model.model_config_.n_models + model.model_config_.blend.n_models
    assert all(params[k] == v for k, v in FIXED.items()) and params["seed"] == 1 and params["progress"] == "auto"
    # the first trial: the estimator's defaults of the searched settings
    defaults = EstimatorSettings().params()
    first = trials.row(0, named=True)
    for name in searched:
        value = defaults[name]
        assert first[name] == (",".join(str(v) for v in value) if isinstance(value, tuple) else value), name
    # fitted on every patient of the cohort
    assert sum(model.cohort_report_.events.values()) == cohort[1].height
    assert tuned.metric == "c_index" and tuned.windows and tuned.study.direction.name == "MAXIMIZE"


def test_a_trial_scores_the_landmark_c_index_of_its_out_of_fold_predictions(tuned, cohort):
    """Refit the best trial's settings on each fold by hand: the fold scores of the search, and as the trial's score
    the landmark C-index of every patient's prediction by the model fitted without them, pooled over the folds."""
    from ehrseq.data.split import split_indices
    from ehrseq.evaluate import landmark_from_predictions, landmark_predictions, outcomes_since_origin

    visits, outcomes = cohort
    events = DynamicSurvival().cohort_settings.build(visits, outcomes).patients
    parts = split_indices(events["event"].to_numpy(), [0.5, 0.5], seed=1)
    settings = {**FIXED, **tuned.best, "seed": 1, "progress": False}
    landmarks = sorted({s for s, _ in tuned.windows})

    def horizons(s):
        return [h for landmark, h in tuned.windows if landmark == s]

    def mean_c(predictions, test_times, train_times):
        return pl.concat([landmark_from_predictions(predictions, test_times, train_times, [s], horizons(s))
                          for s in landmarks])["c_index"].drop_nulls().mean()

    scores, predictions, times = [], [], []
    for part in parts:
        test_ids = events["patient_id"].gather(part).implode()
        test = (visits.filter(pl.col("patient_id").is_in(test_ids)), outcomes.filter(pl.col("patient_id").is_in(test_ids)))
        train = (visits.filter(~pl.col("patient_id").is_in(test_ids)),
                 outcomes.filter(~pl.col("patient_id").is_in(test_ids)))
        model = DynamicSurvival(**settings).fit(*train)
        fold = pl.concat([landmark_predictions(model, test[0], [s], horizons(s), outcomes=test[1]) for s in landmarks])
        scores.append(mean_c(fold, outcomes_since_origin(test, model), outcomes_since_origin(train, model)))
        predictions.append(fold)
        times.append(outcomes_since_origin(test, model))
    pooled, everyone = pl.concat(predictions), pl.concat(times)
    assert everyone["patient_id"].sort().equals(events["patient_id"].sort())  # each patient predicted once
    best = tuned.trials.filter("best")
    assert best["score"][0] == pytest.approx(mean_c(pooled, everyone, everyone), abs=1e-12)
    assert best["fold_mean"][0] == pytest.approx(np.mean(scores), abs=1e-9)
    assert best["fold_sd"][0] == pytest.approx(np.std(scores, ddof=1), abs=1e-9)


def test_the_same_seed_gives_the_same_trials_and_another_seed_others(tuned, cohort):
    again = tune(*cohort, n_trials=2, folds=2, seed=1, progress=False, **FIXED)
    assert again.trials.drop("seconds").equals(tuned.trials.drop("seconds"))
    other = tune(*cohort, n_trials=2, folds=2, seed=2, progress=False, **FIXED)
    settings = [name for name in SEARCH_SPACE if name not in FIXED]
    assert other.trials.select(settings).row(1) != tuned.trials.select(settings).row(1)  # trial 0: the defaults


def test_the_tuned_model_saves_loads_and_scores_like_any_other(tuned, cohort, tmp_path):
    model = tuned.model
    visits, outcomes = cohort
    loaded = ehrseq.load(model.save(tmp_path / "tuned"))
    assert loaded.get_params() == model.get_params()
    risk = model.predict_risk(visits, [180.0, 365.0], landmark=200.0)
    assert risk.equals(loaded.predict_risk(visits, [180.0, 365.0], landmark=200.0))
    summary = ehrseq.score(tmp_path / "tuned", visits, tmp_path / "scores", [365.0], progress=False)
    scored = summary.scan().collect()
    expected = loaded.predict_risk(visits, 365.0)
    joined = scored.join(expected, on="patient_id")
    assert joined.height == expected.height == outcomes.height
    assert np.allclose(joined["risk"], joined["risk_right"], atol=1e-6)
    table = landmark(loaded, visits, outcomes, [200.0], [365.0], (visits, outcomes), progress=False)
    assert table["c_index"][0] is not None


def test_pruned_trials_stop_after_the_fold_that_falls_behind(cohort):
    """The score is reported after every fold; a pruner that stops every trial after the first is obeyed."""

    class PruneLater(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.number >= 1

    result = tune(*cohort, n_trials=2, folds=2, seed=0, progress=False, pruner=PruneLater(),
                  space={"lr": FloatRange(1e-3, 1e-2, log=True)}, **FIXED)
    trials = result.trials
    assert trials["state"].to_list() == ["complete", "pruned"] and trials["folds"].to_list() == [2, 1]
    assert trials["fold_sd"][1] is None and trials["score"][1] is None and trials["best"].to_list() == [True, False]
    reported = result.study.trials[1].intermediate_values
    assert list(reported) == [0] and reported[0] == pytest.approx(trials["fold_mean"][1])


def test_the_search_keeps_the_out_of_fold_predictions_of_the_defaults_and_of_the_best_trial_only(cohort, monkeypatch):
    import ehrseq.tuning as tuning

    gain = tuning.gain_over_defaults
    kept = []

    def recording(study, defaults, out_of_fold, *args, **kwargs):
        kept.append((set(out_of_fold), study.best_trial.number))
        return gain(study, defaults, out_of_fold, *args, **kwargs)

    monkeypatch.setattr(tuning, "gain_over_defaults", recording)
    result = tune(*cohort, n_trials=4, folds=2, seed=0, progress=False, pruner=False,
                  space={"lr": [1e-3, 1e-2, 3e-2, 1e-4]}, **FIXED)
    assert result.trials["state"].to_list() == ["complete"] * 4
    assert kept == [({0, kept[0][1]}, kept[0][1])] and kept[0][1] != 0  # (the best trial is not the defaults here)


def test_the_time_budget_stops_the_search_and_lower_scores_win_for_the_brier_metrics(cohort):
    result = tune(*cohort, n_trials=5, timeout=1e-3, folds=2, metric="ibs", progress=False,
                  space={"dropout": [0.0, 0.2]}, **FIXED)
    assert result.trials.height == 1 and result.study.direction.name == "MINIMIZE"
    assert result.trials.columns[:2] == ["trial", "dropout"] and result.model.dropout == result.trials["dropout"][0]


def test_a_trial_whose_settings_fail_is_recorded_and_all_failing_is_an_error(cohort):
    """Each value is a valid setting alone; together they are not (a Transformer of width 6 with 4 heads)."""
    fixed = {k: v for k, v in FIXED.items() if k != "d_model"}
    with pytest.raises(ConfigError, match=r"no trial of 1 completed: fold 1: ConfigError: d_model \(6\)"):
        tune(*cohort, n_trials=1, folds=2, progress=False, space={"encoder": ["transformer"], "d_model": [6]},
             **fixed)


def test_a_trial_whose_fit_diverges_is_recorded_as_failed_and_the_search_goes_on(cohort, monkeypatch):
    """A non-finite training loss (``FloatingPointError`` from the trainer: settings under which a fit diverges) fails
    that trial, with the trainer's message as its note, as a trial with invalid settings does; the later trials run
    and the best of them is refitted."""
    fit = DynamicSurvival.fit
    calls = []

    def diverging_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise FloatingPointError("non-finite loss (inf) at epoch 1; parts: {}. Lower the learning rate or check the "
                                     "inputs.")
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(DynamicSurvival, "fit", diverging_once)
    model, trials = tune(*cohort, n_trials=2, folds=2, seed=1, progress=False, space={"dropout": [0.0, 0.2]}, **FIXED)
    assert trials["state"].to_list() == ["failed", "complete"]
    assert trials["note"][0] == "fold 1: FloatingPointError: non-finite loss (inf) at epoch 1; parts: {}. Lower the " \
                                "learning rate or check the inputs."
    assert trials["best"].to_list() == [False, True] and hasattr(model, "model_")
    assert len(calls) == 1 + 2 + 1  # the failed trial's first fold, the second trial's two folds, the refit


def _study(direction: str, values: list[float]):
    """An Optuna study of completed trials with these scores (trial 0: the defaults)."""
    study = optuna.create_study(direction=direction)
    for k, value in enumerate(values):
        study.add_trial(optuna.trial.create_trial(params={"dropout": 0.1 * k}, value=value,
                                                  distributions={"dropout": optuna.distributions.FloatDistribution(0, 1)}))
    return study


def _out_of_fold(risk: np.ndarray):
    """Risks at (landmark 100, horizon 400) for 80 patients with outcome times 110, 120, …, 900 (every other one an
    event), as pooled out-of-fold predictions."""
    from ehrseq.tuning import OutOfFold

    ids = np.arange(80)
    times = pl.DataFrame({"patient_id": ids, "outcome_time": 110.0 + 10.0 * ids, "event": ids % 2})
    predictions = pl.DataFrame({"patient_id": ids, "landmark": 100.0, "horizon": 400.0, "risk": risk})
    return OutOfFold(predictions, times, 1)


WINDOW = [(100.0, 400.0)]


def _refit_of(values: list[float], out_of_fold: dict, metric: str = "c_index", params: dict | None = None,
              direction: str = "maximize"):
    from ehrseq.tuning import _refit

    return _refit(_study(direction, values), params or {"dropout": 0.3}, 0, FIXED, out_of_fold, WINDOW, metric, 10, 0)


def test_the_defaults_are_refitted_unless_the_best_trial_gains_more_than_one_bootstrap_standard_error():
    """Both directions on the paired bootstrap over patients of the pooled out-of-fold predictions: risks that rank
    the window's events perfectly against constant ones (C 1 against 0.5) are refitted, blended with the defaults;
    the same risks as the defaults (a gain of 0 on every resample) keep the defaults, with the note; the Brier score
    counts a lower score as the gain; without a defaults trial the best is refitted alone."""
    from ehrseq.tuning import _refit

    ranked = np.linspace(1.0, 0.0, 80)  # earlier outcome, higher risk
    flat = np.full(80, 0.5)
    refit, note = _refit_of([0.5, 1.0], {0: _out_of_fold(flat), 1: _out_of_fold(ranked)})
    assert refit == {**FIXED, "blend": {"dropout": 0.3}, "blend_weight": 0.5}
    assert re.fullmatch(r"refitted blended with the defaults \(trial 0\), weighing 0\.5 \(its gain over the defaults "
                        r"\+0\.5000, paired bootstrap interval over patients of ± one standard error \+0\.\d{4} to "
                        r"\+\d\.\d{4}\)", note)
    refit, note = _refit_of([0.5, 0.6], {0: _out_of_fold(ranked), 1: _out_of_fold(ranked)})
    assert refit == FIXED
    assert note == ("not refitted (its gain over the defaults +0.0000, paired bootstrap interval over patients of ± one "
                    "standard error +0.0000 to +0.0000, holds 0): the defaults are refitted")
    within = ((110.0 + 10.0 * np.arange(80) <= 500.0) & (np.arange(80) % 2 == 1)).astype(float)  # events in (100, 500]
    refit, note = _refit_of([0.25, 0.0], {0: _out_of_fold(flat), 1: _out_of_fold(within)}, "brier",
                            direction="minimize")
    assert refit["blend"] == {"dropout": 0.3} and "its gain over the defaults +0.2500" in note  # Brier 0 against 0.25
    refit, _ = _refit_of([0.25, 0.2], {0: _out_of_fold(flat), 1: _out_of_fold(flat)}, "brier", direction="minimize")
    assert refit == FIXED
    assert _refit(_study("maximize", [0.5, 0.6]), {"dropout": 0.3}, None, FIXED, {}, WINDOW, "c_index", 10, 0) == (
        {**FIXED, "dropout": 0.3}, "refitted alone (no complete trial of the defaults to compare and blend it with)")
    assert _refit(_study("maximize", [0.6, 0.5]), {"dropout": 0.1}, 0, FIXED, {}, WINDOW, "c_index", 10, 0) == (
        FIXED, "the defaults, refitted")
    # settings that cannot be blended: the best trial alone
    refit, note = _refit_of([0.5, 1.0], {0: _out_of_fold(flat), 1: _out_of_fold(ranked)}, params={"locf": False})
    assert refit == {**FIXED, "locf": False} and "not blended with the defaults: blend=: locf are shared" in note


def test_a_trials_settings_are_blended_with_the_defaults_where_they_can_be():
    from ehrseq.tuning import blend_with_defaults

    best = {"encoder": "lstm", "dropout": 0.1, "hidden": (8,)}  # dropout: the default; hidden: the fixed value
    assert blend_with_defaults(best, FIXED) == ({"encoder": "lstm"}, "")
    blend, reason = blend_with_defaults({"locf": False, "lr": 1e-2}, FIXED)
    assert blend is None and reason.startswith("blend=: locf are shared")
    blend, reason = blend_with_defaults({"head": "visit_hazard", "any_time": False}, FIXED)
    assert blend is None and "do not all average survival curves in days" in reason


def test_the_command_line_says_when_the_defaults_are_refitted_over_a_better_scoring_trial(csv_tables, capsys,
                                                                                      monkeypatch):
    import ehrseq.tuning as tuning

    def within(*args, **kwargs):
        return tuning.Gain(0.01, -0.01, 0.03)

    monkeypatch.setattr(tuning, "gain_over_defaults", within)
    last_complete = property(lambda study: [t for t in study.trials if t.state.name == "COMPLETE"][-1])
    monkeypatch.setattr(optuna.study.Study, "best_trial", last_complete)  # trial 1 the best
    out = csv_tables / "kept"
    assert main(_tune_argv(csv_tables, out)) == 0
    printed = capsys.readouterr().out
    assert "best trial 1:" in printed
    assert re.search(r"^trial 1 not refitted \(its gain over the defaults \+0\.0100, paired bootstrap interval over "
                     r"patients of ± one standard error -0\.0100 to \+0\.0300, holds 0\): the defaults are refitted$",
                     printed, re.MULTILINE)
    trials = pl.read_parquet(out / "trials.parquet")
    assert trials["best"].to_list() == [False, True] and trials["note"][1].startswith("not refitted")
    assert ehrseq.load(out / "model").blend is None


def test_the_search_space_is_settings_of_the_estimator():
    assert set(SEARCH_SPACE) <= set(EstimatorSettings.names())
    assert check_space(SEARCH_SPACE, {}) == SEARCH_SPACE
    defaults = EstimatorSettings().params()
    assert all(dist.contains(defaults[name]) for name, dist in SEARCH_SPACE.items())  # the first trial is the default
    assert Choice(((32,), (64,))).contains([64]) and not Choice((1, 2)).contains(True)
    assert IntRange(8, 32, step=4).contains(20) and not IntRange(8, 32, step=4).contains(21)
    described = describe_space()
    assert described["setting"].to_list() == list(SEARCH_SPACE)
    assert described.filter(pl.col("setting") == "lr")["default"][0] == "0.001"
    # the written forms of a TOML or JSON space
    assert distribution(["gru", "lstm"]) == Choice(("gru", "lstm"))
    assert distribution({"choices": [[32], [64, 64]]}) == Choice(((32,), (64, 64)))
    assert distribution({"low": 1, "high": 3}) == IntRange(1, 3)
    assert distribution({"low": 1e-4, "high": 1e-2, "log": True}) == FloatRange(1e-4, 1e-2, log=True)
    assert distribution({"low": 16, "high": 128, "step": 16}) == IntRange(16, 128, step=16)
    # a new setting is one entry: any field of EstimatorSettings can be searched
    new = dataclasses.fields(EstimatorSettings)[-1].name
    assert new in check_space({new: Choice((False,))}, {})


@pytest.mark.parametrize(("options", "message"), [
    ({"n_trials": 0}, r"n_trials=0: the number of trials must be an integer >= 1"),
    ({"timeout": 0}, r"timeout=0: the time budget"),
    ({"folds": 1}, r"folds=1: cross-validation needs"),
    ({"metric": "accuracy"}, r"metric='accuracy': the score is one of c_index"),
    ({"landmarks": [100.0]}, r"give both landmarks= and horizons="),
    ({"space": {"nope": [1, 2]}}, r"space=: unknown setting\(s\) nope; the settings of DynamicSurvival are encoder"),
    ({"space": {"lr": [1e-3]}, "lr": 1e-2}, r"space=: lr both searched and fixed"),
    ({"space": {"d_model": FloatRange(8.0, 16.0)}}, r"d_model takes integers"),
    ({"space": {"encoder": ["gru", "rnn"]}}, r"encoder = 'rnn' is not a valid setting"),
    ({"space": {"lr": {"low": 1, "high": 2, "lo": 3}}}, r"lr: a range is a list of choices"),
    ({"space": {}}, r"nothing to search"),
    ({"fixed": {"nope": 1}}, r"DynamicSurvival has no setting\(s\) nope"),
    ({"validation": 1.5}, r"validation=1.5: the early-stopping fraction"),
])
def test_bad_options_are_refused_before_any_fit(cohort, options, message):
    with pytest.raises(ConfigError, match=message):
        tune(*cohort, progress=False, **options)


# ---------------------------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def csv_tables(cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp("tune-cli")
    visits, outcomes = cohort
    visits.with_columns(pl.col("codes").list.join(";")).write_csv(root / "visits.csv")
    outcomes.write_csv(root / "outcomes.csv")
    return root


def _tune_argv(csv_tables, out) -> list[str]:
    """``ehrseq tune`` on the CSV tables: two trials of a tiny model over two folds, written to ``out``."""
    return ["tune", "--visits", str(csv_tables / "visits.csv"), "--outcomes", str(csv_tables / "outcomes.csv"),
            "--trials", "2", "--folds", "2", "--out", str(out), "--seed", "1", "--no-progress",
            "--epochs", "2", "--d-model", "8", "--hidden", "8", "--batch-size", "32", "--device", "cpu"]


def test_the_command_line_saves_the_model_and_the_trials(csv_tables, capsys):
    out = csv_tables / "tuned"
    argv = _tune_argv(csv_tables, out)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "best trial" in printed and "saved to" in printed and "trials written to" in printed
    trials = pl.read_parquet(out / "trials.parquet")
    assert trials.height == 2 and pl.read_csv(out / "trials.csv")["score"].to_list() == trials["score"].to_list()
    model = ehrseq.load(out / "model")
    best = trials.filter("best").row(0, named=True)
    if best["note"].startswith("not refitted"):  # the defaults
        assert model.blend is None and model.encoder == "gru" and model.lr == 1e-3
    else:  # the best trial's settings, blended with the defaults
        settings = {**model.get_params(), **(model.blend or {})}
        assert settings["encoder"] == best["encoder"] and settings["lr"] == best["lr"]
    assert model.epochs == 2 and model.d_model == 8
    assert f"trial {best['trial']} {best['note']}" in printed
    assert main(argv) == 1  # the folder is not empty
    assert "pass --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "message"), [
    (["--trials", "0"], "ehrseq: error: --trials 0: the number of trials must be an integer >= 1"),
    (["--timeout", "-5"], "ehrseq: error: --timeout -5.0: the time budget"),
    (["--folds", "1"], "ehrseq: error: --folds 1: cross-validation needs"),
    (["--metric", "accuracy"], "ehrseq: error: --metric accuracy: the score is one of"),
    (["--landmarks", "100"], "ehrseq: error: give both --landmarks and --horizons"),
    (["--space", "UNKNOWN"], "ehrseq: error: --space: unknown setting(s) foo; the settings of DynamicSurvival are"),
    (["--space", "LR", "--lr", "0.01"], "ehrseq: error: --space: lr both searched and fixed; drop one"),
])
def test_command_line_errors_name_the_flags_before_reading_the_tables(tmp_path, capsys, flags, message):
    spaces = {"UNKNOWN": 'foo = [1, 2]\nlr = {low = 1e-4, high = 1e-2, log = true}\n', "LR": "lr = [0.001, 0.01]\n"}
    for name, text in spaces.items():
        (tmp_path / f"{name}.toml").write_text(text)
    flags = [str(tmp_path / f"{f}.toml") if f in spaces else f for f in flags]
    missing = str(tmp_path / "missing.csv")  # never read: the options are refused first
    assert main(["tune", "--visits", missing, "--outcomes", missing, "--out", str(tmp_path / "out"), *flags]) == 1
    assert capsys.readouterr().err.startswith(message)


def test_a_space_file_replaces_the_default_space(csv_tables, tmp_path, capsys):
    space = tmp_path / "space.json"
    space.write_text('{"lr": {"low": 0.001, "high": 0.01, "log": true}, "hidden": [[8], [8, 8]]}')
    out = tmp_path / "out"
    assert main(["tune", "--visits", str(csv_tables / "visits.csv"), "--outcomes", str(csv_tables / "outcomes.csv"),
                 "--trials", "1", "--folds", "2", "--out", str(out), "--space", str(space), "--no-progress",
                 "--epochs", "1", "--d-model", "8", "--device", "cpu"]) == 0
    trials = pl.read_parquet(out / "trials.parquet")
    assert trials.columns[:3] == ["trial", "lr", "hidden"] and trials["hidden"][0] in ("8", "8,8")
    assert ehrseq.load(out / "model").hidden in ((8,), (8, 8))
