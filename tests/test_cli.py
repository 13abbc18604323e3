"""The ``ehrseq`` command line: every command end to end on a tiny data set, exit codes and one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import ehrseq
from ehrseq.cli import main
from ehrseq.data import validate_predictions
from ehrseq.datasets import simulate
from ehrseq.errors import ConfigError

CONFIG = """
encoder = "gru"
head = "logistic_hazard"
grid = 6
d_model = 8
hidden = [8]
epochs = 1
batch_size = 16
device = "cpu"
validation = 0.25
"""


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    train, test = simulate(40, 0), simulate(24, 1)
    train.visits.write_parquet(root / "train_visits.parquet")
    train.outcomes.write_csv(root / "train_outcomes.csv")
    test.visits.write_parquet(root / "test_visits.parquet")
    test.outcomes.write_parquet(root / "test_outcomes.parquet")
    (root / "model.toml").write_text(CONFIG)
    return root


@pytest.fixture(scope="module")
def trained(tables):
    """The model directory written by ``ehrseq train``, and what the command printed."""
    out = tables / "model"
    capture = []
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["train", "--visits", str(tables / "train_visits.parquet"), "--outcomes",
                     str(tables / "train_outcomes.csv"), "--config", str(tables / "model.toml"), "--out", str(out),
                     "--no-progress", "--seed", "3"])
    capture.append(buffer.getvalue())
    assert code == 0
    return out, capture[0]


def test_train_prints_the_report_and_summary_and_saves_the_model(trained, tables):
    out, printed = trained
    n_visits = pl.read_parquet(tables / "train_visits.parquet").height
    model = ehrseq.load(out)
    assert model.trainer_config.seed == 3 and model.trainer_config.epochs == 1
    assert model.grid_.n_bins == 6
    assert printed.startswith("Cohort report") and f"{n_visits} used" in printed
    assert "training: 1 epoch(s)" in printed and "best validation loss" in printed
    assert f"model id {ehrseq.scoring.model_id(out)}" in printed


def test_evaluate_prints_and_writes_the_landmark_table(trained, tables, capsys):
    out, _ = trained
    for suffix in ("md", "csv", "parquet"):
        target = tables / f"landmarks.{suffix}"
        code = main(["evaluate", "--model", str(out), "--visits", str(tables / "test_visits.parquet"),
                     "--outcomes", str(tables / "test_outcomes.parquet"),
                     "--train-visits", str(tables / "train_visits.parquet"),
                     "--train-outcomes", str(tables / "train_outcomes.csv"),
                     "--landmarks", "100", "300", "--horizons", "365", "--output", str(target)])
        assert code == 0 and target.is_file()
    printed = capsys.readouterr().out
    assert "c_index" in printed and "n_at_risk" in printed
    table = pl.read_csv(tables / "landmarks.csv")
    assert table.height == 2 and set(table["landmark"]) == {100.0, 300.0}
    assert pl.read_parquet(tables / "landmarks.parquet")["c_index"].to_list() == table["c_index"].to_list()
    markdown = (tables / "landmarks.md").read_text().splitlines()
    assert markdown[0].startswith("| landmark") and len(markdown) == 4


def test_evaluate_with_intervals_and_a_paired_comparison(trained, tables, capsys):
    out, _ = trained
    common = ["evaluate", "--model", str(out), "--visits", str(tables / "test_visits.parquet"),
              "--outcomes", str(tables / "test_outcomes.parquet"),
              "--train-visits", str(tables / "train_visits.parquet"),
              "--train-outcomes", str(tables / "train_outcomes.csv"), "--landmarks", "100", "--horizons", "365",
              "--bootstrap", "50"]
    assert main(common + ["--ci", "0.9", "--compare", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "paired bootstrap comparison" in printed and "p_value" in printed
    assert "c_index" in printed and " [" in printed  # "value [lower, upper]"
    assert main(common + ["--compare", "kaplan-meier", "--output", str(tables / "with_km.csv")]) == 0
    long_name = capsys.readouterr().out
    assert "difference = model - other, other = kaplan-meier" in long_name
    assert main(common + ["--compare", "km"]) == 0  # the name --baselines takes: the same comparison
    short_name = capsys.readouterr().out
    written = f"written to {tables / 'with_km.csv'}\n"
    assert short_name.split("other = km")[1] == long_name.split("other = kaplan-meier")[1].removesuffix(written)
    assert main(common + ["--compare", str(tables / "nowhere")]) == 1
    captured = capsys.readouterr()
    assert "neither a model directory nor a baseline (km, cox, rsf" in captured.err
    assert "c_index" not in captured.out  # refused before the model is evaluated
    without_visits = [a for a in common if a != "--train-visits" and a != str(tables / "train_visits.parquet")]
    assert main([*without_visits, "--compare", "cox"]) == 1
    captured = capsys.readouterr()
    assert "--compare cox fits the baseline on the training tables: pass --train-visits" in captured.err
    assert "c_index" not in captured.out
    with pytest.raises(SystemExit):
        main(common + ["--ci", "95"])


def test_score_writes_valid_predictions_and_resumes(trained, tables, capsys):
    out, _ = trained
    predictions = tables / "predictions"
    args = ["score", "--model", str(out), "--visits", str(tables / "test_visits.parquet"), "--out", str(predictions),
            "--horizons", "365", "730", "--patients-per-chunk", "7", "--no-progress"]
    assert main(args) == 0
    assert "scored 24 patients" in capsys.readouterr().out
    frame = validate_predictions(pl.read_parquet(predictions / "test_visits.parquet"))
    assert frame.height == 48
    expected = ehrseq.load(out).predict_risk(pl.read_parquet(tables / "test_visits.parquet"), [365.0, 730.0])
    assert frame["risk"].round(6).to_list() == expected.sort("patient_id", "horizon")["risk"].round(6).to_list()
    assert main(args + ["--resume"]) == 0
    assert "0 shard(s) scored" in capsys.readouterr().out
    assert main(args) == 1
    assert "resume" in capsys.readouterr().err
    assert main(args[:7] + ["--horizons", "90", "--resume", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "horizons" in err


def test_validate_reports_and_fails_with_one_line(tables, tmp_path, capsys):
    assert main(["validate", "--visits", str(tables / "train_visits.parquet"),
                 "--outcomes", str(tables / "train_outcomes.csv")]) == 0
    assert "valid: 40 patients" in capsys.readouterr().out

    bad = pl.read_parquet(tables / "train_visits.parquet")
    bad = bad.with_columns(pl.when(pl.col("patient_id") == 7).then(-1.0).otherwise(pl.col("time")).alias("time"))
    bad.write_parquet(tmp_path / "bad.parquet")
    assert main(["validate", "--visits", str(tmp_path / "bad.parquet")]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("ehrseq: error: ") and captured.err.count("\n") == 1
    assert "time" in captured.err and "7" in captured.err and "Traceback" not in captured.err
    with pytest.raises(ehrseq.DataError):
        main(["--debug", "validate", "--visits", str(tmp_path / "bad.parquet")])
    with pytest.raises(ehrseq.DataError):
        main(["validate", "--visits", str(tmp_path / "bad.parquet"), "--debug"])


@pytest.mark.parametrize("argv", [
    [],
    ["score"],
    ["score", "--model", "m", "--visits", "v", "--out", "o"],                 # --horizons missing
    ["score", "--model", "m", "--visits", "v", "--out", "o", "--horizons", "0"],  # horizon not > 0
    ["score", "--model", "m", "--visits", "v", "--out", "o", "--horizons", "365", "--resume", "--overwrite"],
    ["evaluate", "--model", "m", "--visits", "v.parquet"],
    ["train", "--visits", "v.parquet"],
    ["demo", "--epochs", "many"],
    ["frobnicate"],
])
def test_usage_errors_exit_with_code_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "evaluate", "score", "validate", "demo"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"ehrseq {command}" in capsys.readouterr().out


def test_configuration_errors_exit_with_code_1(tables, tmp_path, capsys):
    base = ["train", "--visits", str(tables / "train_visits.parquet"), "--outcomes",
            str(tables / "train_outcomes.csv"), "--out", str(tmp_path / "model"), "--no-progress"]
    (tmp_path / "unknown.json").write_text(json.dumps({"head": "logistic_hazard", "learning_rate": 0.1}))
    (tmp_path / "broken.toml").write_text("epochs = ")
    (tmp_path / "config.yaml").write_text("epochs: 1")
    (tmp_path / "loss.toml").write_text('loss = {nll = 1.0, rankin = {weight = 0.1, horizon = 365}}')
    for config, expected in (("unknown.json", "unknown setting(s) learning_rate"), ("broken.toml", "not valid TOML"),
                             ("config.yaml", "expected a .toml or .json"), ("missing.toml", "does not exist"),
                             ("loss.toml", "unknown loss term 'rankin' (did you mean 'ranking'?)")):
        assert main([*base, "--config", str(tmp_path / config)]) == 1
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1
    assert main(["train", "--visits", str(tmp_path / "nope.parquet"), "--outcomes", "x.csv",
                 "--out", str(tmp_path / "m")]) == 1
    assert "visits table" in capsys.readouterr().err
    assert main(["score", "--model", str(tmp_path), "--visits", str(tables / "test_visits.parquet"),
                 "--out", str(tmp_path / "p"), "--horizons", "365"]) == 1
    assert "not a model directory" in capsys.readouterr().err


def test_read_config_accepts_json_and_toml(tmp_path):
    from ehrseq.cli import _split_config, read_config

    (tmp_path / "a.toml").write_text(CONFIG)
    (tmp_path / "a.json").write_text(json.dumps({"grid": 6, "validation": False}))
    options, fit = _split_config(read_config(tmp_path / "a.toml"), "a.toml")
    assert options["hidden"] == [8] and fit == {"validation": 0.25}
    assert _split_config(read_config(tmp_path / "a.json"), "a.json") == ({"grid": 6}, {"validation": None})
    with pytest.raises(ConfigError):
        read_config(tmp_path / "none.toml")


def test_demo_passes_its_options_to_run_demo(monkeypatch, tmp_path):
    import ehrseq.demo

    calls = []
    monkeypatch.setattr(ehrseq.demo, "run_demo", lambda out, **kwargs: calls.append((out, kwargs)))
    assert main(["demo", "--out", str(tmp_path), "--epochs", "3", "--seed", "5", "--no-progress"]) == 0
    assert main(["demo"]) == 0
    assert calls == [(str(tmp_path), {"epochs": 3, "seed": 5, "progress": False}),
                     ("outputs/demo", {"epochs": None, "seed": 0, "progress": "auto"})]


def test_entry_point_and_module_run_in_a_subprocess(tmp_path):
    script = Path(sys.executable).with_name("ehrseq")
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"ehrseq {ehrseq.__version__}"
    missing = subprocess.run([sys.executable, "-m", "ehrseq", "validate", "--visits", str(tmp_path / "v.parquet")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1
    assert missing.stderr == f"ehrseq: error: visits table {tmp_path / 'v.parquet'} does not exist\n"
