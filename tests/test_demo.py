"""The README's main job end to end on the real PBC data (a few epochs)."""

import numpy as np
import polars as pl

import ehrseq
from ehrseq.datasets import load_pbcseq
from ehrseq.demo import run_demo


def test_demo_trains_evaluates_plots_and_saves(tmp_path, capsys):
    result = run_demo(tmp_path, epochs=2, progress=False)
    printed = capsys.readouterr().out
    assert str(result["cohort"].report) in printed  # the cohort report
    assert "mask" in printed and "numeric" in printed  # the tensor shapes
    table = result["results"]
    assert set(table["model"].unique()) == {"ehrseq default", "landmark Cox"}
    assert table.height == 2 * 3 * 2  # two models x three landmarks x two horizons
    assert table["c_index"].drop_nulls().is_between(0, 1).all()
    assert result["figure"].exists() and result["figure"].stat().st_size > 10_000
    reloaded = ehrseq.load(result["model_path"])
    visits, _ = load_pbcseq(outcome="death")
    some = visits.filter(pl.col("patient_id").is_in(visits["patient_id"].unique().sort().head(5).implode()))
    np.testing.assert_array_equal(reloaded.predict_risk(some, 365.0)["risk"].to_numpy(),
                                  result["model"].predict_risk(some, 365.0)["risk"].to_numpy())
