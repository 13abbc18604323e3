"""The command line as a new user meets it: a flag for every option of the API, errors worded in flags,
CSV files, folders, `ehrseq split`, `evaluate --baselines`, progress bars only where they belong, optional
extras checked before the work, and the documented configuration file."""

import inspect
import json
from pathlib import Path

import polars as pl
import pytest
import tomllib

import ehrseq
from ehrseq.cli import FIT_KEYS, MODEL_FLAGS, TABLE_FLAGS, _split_config, build_parser, main, read_config
from ehrseq.datasets import simulate
from ehrseq.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MODEL_TOML = ROOT / "data_specs" / "model.toml"
TINY = ["--d-model", "8", "--hidden", "8", "--grid", "4", "--epochs", "1", "--batch-size", "16", "--device", "cpu",
        "--no-progress"]


def _csv(table: pl.DataFrame, path: Path) -> Path:
    table.with_columns(pl.col(c).list.join(";") for c, d in table.schema.items() if isinstance(d, pl.List)).write_csv(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    train, test = simulate(40, 0), simulate(24, 1)
    test_visits = test.visits.with_columns(pl.col("patient_id") + 100)
    test_outcomes = test.outcomes.with_columns(pl.col("patient_id") + 100)
    paths = {"tv": _csv(train.visits, root / "train_visits.csv"), "to": _csv(train.outcomes, root / "train_outcomes.csv"),
             "sv": _csv(test_visits, root / "test_visits.csv"), "so": _csv(test_outcomes, root / "test_outcomes.csv")}
    test_visits.write_parquet(root / "test_visits.parquet")
    paths["sv_parquet"] = root / "test_visits.parquet"
    return root, paths


@pytest.fixture(scope="module")
def model_dir(files):
    root, paths = files
    out = root / "model"
    assert main(["train", "--visits", str(paths["tv"]), "--outcomes", str(paths["to"]), "--out", str(out), *TINY]) == 0
    return out


# ---------------------------------------------------------------------------------------------- flags
def test_every_estimator_argument_has_a_train_flag_and_no_flag_is_invented():
    parameters = [name for name in inspect.signature(ehrseq.DynamicSurvival.__init__).parameters if name != "self"]
    flagged = [flag.name for flag in TABLE_FLAGS + MODEL_FLAGS] + ["progress"]
    assert sorted(flagged) == sorted(parameters)
    train = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    options = {option for action in train._actions for option in action.option_strings}
    for name in parameters:
        assert "--" + name.replace("_", "-") in options, name
    assert {"--unmatched", "--duplicates", "--numeric", "--categorical", "--null-values", "--validation"} <= options


def test_flags_reach_the_model_and_override_the_configuration(files, tmp_path, capsys):
    root, paths = files
    visits = pl.read_csv(paths["tv"])
    extra = pl.concat([visits, visits.filter(pl.col("patient_id") == 3).with_columns(pl.lit(999, dtype=pl.Int64).alias("patient_id"))])
    extra.write_csv(tmp_path / "v.csv")  # patient 999 has visits but no outcome row
    (tmp_path / "m.toml").write_text('epochs = 3\nhead = "pmf"\nvalidation = false\n')
    base = ["train", "--visits", str(tmp_path / "v.csv"), "--outcomes", str(paths["to"]), "--out", str(tmp_path / "m"),
            "--config", str(tmp_path / "m.toml"), *TINY]
    assert main(base) == 1
    err = capsys.readouterr().err
    assert "pass --unmatched drop" in err and "unmatched='drop'" not in err
    assert main([*base, "--unmatched", "drop", "--categorical", "sex", "--numeric", "x00", "x01",
                 "--codes", "", "--patience", "none", "--seed", "4"]) == 0
    printed = capsys.readouterr().out
    assert "no_outcome" in printed and "numeric (2): declared: x00, x01" in printed
    model = ehrseq.load(tmp_path / "m")
    assert model.trainer_config.epochs == 1 and model.model_config_.head.kind == "pmf"  # flag over file; file over default
    assert model.trainer_config.patience is None and model.trainer_config.seed == 4
    assert model.cohort_settings.unmatched == "drop" and model.cohort_settings.codes is None
    assert model.features_.numeric_columns == ("x00", "x01") and model.features_.categorical_columns == ("sex",)
    assert len(model.history_.records) == 1 and "val_loss" not in model.history_.records[0]


@pytest.mark.parametrize("case", ["duplicates", "resume", "overwrite_model", "date_landmark"])
def test_errors_name_the_flags_a_command_line_user_types(case, files, model_dir, tmp_path, capsys):
    root, paths = files
    if case == "duplicates":
        visits = pl.read_csv(paths["sv"])
        pl.concat([visits, visits.head(1)]).write_csv(tmp_path / "dup.csv")
        argv, expected = ["validate", "--visits", str(tmp_path / "dup.csv")], "pass --duplicates merge"
    elif case == "resume":
        argv = ["score", "--model", str(model_dir), "--visits", str(paths["sv"]), "--out", str(tmp_path / "p"),
                "--horizons", "365", "--no-progress"]
        assert main(argv) == 0
        capsys.readouterr()
        expected = "pass --resume to complete that run or --overwrite"
    elif case == "overwrite_model":
        argv, expected = (["train", "--visits", str(paths["tv"]), "--outcomes", str(paths["to"]), "--out",
                           str(model_dir), *TINY], "pass --overwrite")
    else:
        argv = ["score", "--model", str(model_dir), "--visits", str(paths["sv"]), "--out", str(tmp_path / "q"),
                "--horizons", "365", "--landmark", "2001-01-01", "--no-progress"]
        expected = "--landmark 2001-01-01 is a date"
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
    assert "=True" not in err and "='" not in err


def test_the_cohort_report_names_the_typing_flags(files, capsys):
    root, paths = files
    assert main(["validate", "--visits", str(paths["sv"]), "--outcomes", str(paths["so"])]) == 0
    printed = capsys.readouterr().out
    assert "float columns" in printed and "pass --numeric / --categorical to decide otherwise" in printed
    assert "numeric=" not in printed


# ---------------------------------------------------------------------------------------------- inputs
def test_score_reads_csv_files_and_folders_like_parquet(files, model_dir, tmp_path, capsys):
    root, paths = files
    outputs = {}
    for name, source in (("csv", paths["sv"]), ("parquet", paths["sv_parquet"])):
        assert main(["score", "--model", str(model_dir), "--visits", str(source), "--out", str(tmp_path / name),
                     "--horizons", "365", "730", "--no-progress"]) == 0
        outputs[name] = pl.read_parquet(tmp_path / name / "test_visits.parquet")
    assert outputs["csv"].equals(outputs["parquet"])
    (tmp_path / "shards").mkdir()
    visits = pl.read_csv(paths["sv"])
    visits.filter(pl.col("patient_id") < 110).write_csv(tmp_path / "shards" / "a.csv")
    visits.filter(pl.col("patient_id") >= 110).write_parquet(tmp_path / "shards" / "b.parquet")
    assert main(["validate", "--visits", str(tmp_path / "shards"), "--outcomes", str(paths["so"])]) == 0
    assert "valid: 24 patients" in capsys.readouterr().out
    assert main(["score", "--model", str(model_dir), "--visits", str(tmp_path / "shards"), "--out",
                 str(tmp_path / "from_folder"), "--horizons", "365", "730", "--no-progress"]) == 0
    scored = pl.scan_parquet(tmp_path / "from_folder" / "*.parquet").collect().sort("patient_id", "horizon")
    whole = outputs["parquet"].sort("patient_id", "horizon")
    assert scored.select("patient_id", "visit_time", "horizon").equals(whole.select("patient_id", "visit_time", "horizon"))
    # other shards, other batches: float32 sums in another order
    assert scored["risk"].to_list() == pytest.approx(whole["risk"].to_list(), abs=1e-6)


def test_split_writes_stratified_parts_that_read_back_as_the_api_split(files, tmp_path, capsys):
    root, paths = files
    assert main(["split", "--visits", str(paths["tv"]), "--outcomes", str(paths["to"]), "--out", str(tmp_path / "s"),
                 "--fractions", "0.75", "0.25", "--seed", "2"]) == 0
    assert "train: 30 patients" in capsys.readouterr().out
    expected = ehrseq.data.split_tables(paths["tv"], paths["to"], (0.75, 0.25), seed=2)
    for name, (visits, outcomes) in zip(("train", "test"), expected):
        written = ehrseq.data.build_cohort(tmp_path / "s" / f"{name}_visits.csv", tmp_path / "s" / f"{name}_outcomes.csv")
        direct = ehrseq.data.build_cohort(visits, outcomes)
        assert written.patients.equals(direct.patients)
        assert written.visits.drop("codes").equals(direct.visits.drop("codes"))
        codes = [[c or [] for c in cohort.visits["codes"].cast(pl.List(pl.String)).to_list()]
                 for cohort in (written, direct)]  # an empty list is written as an empty field: a null list
        assert codes[0] == codes[1]
    train_ids, test_ids = (set(pl.read_csv(tmp_path / "s" / f"{n}_outcomes.csv")["patient_id"]) for n in ("train", "test"))
    assert not train_ids & test_ids and len(train_ids | test_ids) == 40
    assert main(["split", "--visits", str(paths["tv"]), "--outcomes", str(paths["to"]), "--out", str(tmp_path / "s")]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_evaluate_with_baselines_adds_their_rows_as_the_api_computes_them(files, model_dir, capsys):
    from ehrseq.baselines import reading_like
    from ehrseq.evaluate import landmark

    root, paths = files
    argv = ["evaluate", "--model", str(model_dir), "--visits", str(paths["sv"]), "--outcomes", str(paths["so"]),
            "--train-outcomes", str(paths["to"]), "--landmarks", "100", "300", "--horizons", "365",
            "--baselines", "cox,km", "--output", str(root / "with_baselines.csv"), "--no-progress"]
    assert main(argv) == 1
    assert "--baselines are fitted on the training tables: pass --train-visits FILE" in capsys.readouterr().err
    argv += ["--train-visits", str(paths["tv"])]
    assert main(argv) == 0
    table = pl.read_csv(root / "with_baselines.csv")
    assert table["model"].to_list() == ["ehrseq"] * 2 + ["cox"] * 2 + ["km"] * 2
    model = ehrseq.load(model_dir)
    train = (pl.read_csv(paths["tv"]), pl.read_csv(paths["to"]))
    cox = reading_like("cox", model).fit(*train)
    expected = landmark(cox, pl.read_csv(paths["sv"]), pl.read_csv(paths["so"]), [100.0, 300.0], [365.0], train,
                        progress=False)
    assert table.filter(pl.col("model") == "cox")["c_index"].to_list() == pytest.approx(expected["c_index"].to_list())
    assert main([*argv, "--baselines", "cox,xgboost"]) == 1
    assert "--baselines xgboost: unknown" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- progress
def test_progress_is_one_bar_per_command_and_quiet_in_logs(files, tmp_path, capsys):
    root, paths = files
    train = ["train", "--visits", str(paths["tv"]), "--outcomes", str(paths["to"]), "--out", str(tmp_path / "m"),
             *[a for a in TINY if a != "--no-progress"], "--epochs", "3"]
    assert main(train) == 0
    assert capsys.readouterr().err == ""  # not a terminal: no bar written into the log
    assert main([*train, "--overwrite", "--progress"]) == 0
    err = capsys.readouterr().err
    assert "training" in err and "epochs" not in err and "epoch 1" not in err and "validate" not in err
    evaluate = ["evaluate", "--model", str(tmp_path / "m"), "--visits", str(paths["sv"]), "--outcomes", str(paths["so"]),
                "--train-outcomes", str(paths["to"]), "--train-visits", str(paths["tv"]), "--landmarks", "100", "300",
                "--horizons", "365", "--baselines", "km"]
    assert main(evaluate) == 0 and capsys.readouterr().err == ""
    assert main([*evaluate, "--progress"]) == 0
    err = capsys.readouterr().err
    assert "evaluating" in err and "4/4" in err  # one bar over 2 models x 2 landmarks


def test_a_missing_extra_is_named_before_any_work(monkeypatch, tmp_path, capsys):
    import importlib.util

    import ehrseq.bench.quality
    from ehrseq.bench.__main__ import main as bench
    from ehrseq.extras import EXTRAS

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    monkeypatch.setattr(ehrseq.bench.quality, "pbc", lambda *a, **k: pytest.fail("work started"))
    for name in ("quality", "piecewise"):
        assert bench([name, "--quick", "--out", str(tmp_path / name)]) == 1
        err = capsys.readouterr().err
        assert "needs matplotlib: pip install 'ehrseq[plot]'" in err
        assert not (tmp_path / name).exists()
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 1
    assert "the demo needs matplotlib: pip install 'ehrseq[plot]'" in capsys.readouterr().err
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        packages = [requirement.split(">")[0].split("=")[0].split("[")[0] for requirement in declared[extra]]
        assert packages == [module.lower() for module in modules], extra


# ---------------------------------------------------------------------------------------------- model.toml
def test_the_documented_model_toml_lists_every_setting_with_its_default():
    text = MODEL_TOML.read_text(encoding="utf-8")
    config = read_config(MODEL_TOML)
    commented = tomllib.loads("\n".join(line.lstrip("# ") for line in text.splitlines()
                                        if line.startswith("# ") and " = " in line.split("#")[1]))
    parameters = inspect.signature(ehrseq.DynamicSurvival.__init__).parameters
    documented = set(config) | set(commented)
    assert documented == (set(parameters) - {"self"}) | set(FIT_KEYS)
    for key, value in config.items():  # the values shown are the defaults: the file documents them
        if key in FIT_KEYS:
            assert value == inspect.signature(ehrseq.DynamicSurvival.fit).parameters[key].default
            continue
        default = parameters[key].default
        assert value == (list(default) if isinstance(default, tuple) else default), key
    options, fit = _split_config({**config, **commented}, str(MODEL_TOML))  # the commented examples are valid too
    ehrseq.DynamicSurvival(**options)
    assert fit == {"validation": 0.15}


def test_a_configuration_turns_settings_off_with_false(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"patience": False, "codes": "", "validation": False, "locf": False}))
    options, fit = _split_config(read_config(tmp_path / "c.json"), "c.json")
    assert options == {"patience": None, "codes": None, "locf": False} and fit == {"validation": None}
    with pytest.raises(ConfigError, match="unknown setting"):
        _split_config({"learning_rate": 1}, "c.json")


def test_linear_weight_flag_reads_a_share_or_auto(capsys):
    argv = ["train", "--visits", "v.csv", "--outcomes", "o.csv", "--out", "m", "--linear-weight"]
    assert build_parser().parse_args([*argv, "0.3"]).option_linear_weight == 0.3
    assert build_parser().parse_args([*argv, "AUTO"]).option_linear_weight == "auto"
    for bad in ("1.5", "half"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*argv, bad])
        assert f"'{bad}' is not a number in [0, 1] or auto" in capsys.readouterr().err
