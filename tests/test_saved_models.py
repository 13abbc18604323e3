"""Models saved by an earlier ehrseq keep loading and predicting the same values.

``tests/data/saved_models_v1`` holds small models of five head families written by ehrseq 0.1.0
(model format version 1; see ``tests/data/make_saved_models.py``), the visits they were asked about,
and the predictions that version made. Loading them with this version must give the same numbers:
a changed reading of any saved setting (time scale, grid, head options, table settings, feature
pipeline) would change them.
"""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import ehrseq
from ehrseq.checkpoint import FORMAT_VERSION

DATA = Path(__file__).parent / "data" / "saved_models_v1"
TIMES = [0.0, 100.0, 400.0, 1000.0, 3000.0]
LANDMARK = 800.0
MODELS = ("logistic_hazard", "lognormal_crps", "competing_pmf", "multi_event", "visit_hazard")


@pytest.fixture(scope="module")
def visits():
    return pl.read_parquet(DATA / "visits.parquet")


def _recorded(name: str, kind: str) -> pl.DataFrame:
    """What version 0.1 predicted; its duration column is called horizon since, as in scoring, and its
    median (then written as Float32) is a Float64 as every other prediction."""
    recorded = pl.read_parquet(DATA / f"{name}.{kind}.parquet")
    if "median_remaining" in recorded.columns:
        recorded = recorded.with_columns(pl.col("median_remaining").cast(pl.Float64))
    return recorded.rename({"duration": "horizon"}) if "duration" in recorded.columns else recorded


def _same(model, visits, predicted: pl.DataFrame, recorded: pl.DataFrame, landmark=None) -> None:
    """The recorded values, and the extrapolation flags of a model saved before ehrseq recorded the
    reach of its training data: beyond the grid's last point τ_L only (offset e + duration > τ_L)."""
    assert_frame_equal(predicted.select(recorded.columns), recorded)
    end = float(model.grid_.cuts[-1]) if model.grid_ is not None else np.inf
    offsets = model.predict_distribution(visits, landmark=landmark, at="all" if landmark is None else "last")[0]
    joined = predicted.join(offsets, on=["patient_id", "visit_time"], how="left", maintain_order="left")
    assert joined["offset"].null_count() == 0
    if "horizon" in predicted.columns:
        expected = (joined["offset"] + joined["horizon"]) > end
        assert joined["extrapolated"].to_list() == expected.to_list()
    else:
        assert joined["median_extrapolated"].to_list() == (joined["median_remaining"] > end).to_list()


@pytest.mark.parametrize("name", MODELS)
def test_a_model_saved_by_version_0_1_loads_and_predicts_what_it_predicted(name, visits):
    model = ehrseq.load(DATA / name)
    if name == "visit_hazard":
        assert_frame_equal(model.predict_next_visit_risk(visits, at="all"), _recorded(name, "next_visit_risk"))
        return
    _same(model, visits, model.predict_survival(visits, TIMES, at="all"), _recorded(name, "survival"))
    _same(model, visits, model.predict_survival(visits, TIMES, landmark=LANDMARK), _recorded(name, "landmark_survival"),
          LANDMARK)
    if name != "multi_event":
        _same(model, visits, model.predict_median(visits), _recorded(name, "median"))
    if name == "competing_pmf":
        _same(model, visits, model.predict_risk(visits, TIMES[1:], landmark=LANDMARK, cause=2),
              _recorded(name, "landmark_risk_cause_2"), LANDMARK)


def test_a_version_1_model_reads_its_settings_and_is_saved_again_in_the_current_format(visits, tmp_path):
    model = ehrseq.load(DATA / "lognormal_crps")
    params = model.get_params()
    assert params["locf"] is False and params["epochs"] == 2 and params["batch_size"] == 32
    assert params["encoder"]["kind"] == "transformer" and params["head"]["kind"] == "lognormal"
    assert [(t.name, t.weight) for t in model.objective.terms] == [("crps", 1.0), ("mle_right", 0.1)]
    assert model.trainer_config.patience == 8 and model.cohort_settings.codes == "codes"
    path = model.save(tmp_path / "again")
    assert json.loads((path / "manifest.json").read_text())["format_version"] == FORMAT_VERSION == 2
    again = ehrseq.load(path)
    assert again.settings == model.settings
    _same(again, visits, again.predict_survival(visits, TIMES, at="all"), _recorded("lognormal_crps", "survival"))
