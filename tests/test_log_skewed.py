"""Right-skewed non-negative numeric columns read on the log scale (``log_skewed``): which columns, the values
(by hand and against a NumPy reference), unit invariance, carrying forward, saving, and the estimator's setting."""

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ehrseq
from ehrseq.cli import main as cli_main
from ehrseq.data import FeaturePipeline, build_cohort
from ehrseq.data.features import LOG_MIN_DISTINCT, SKEWNESS_THRESHOLD

# two patients of four visits; "lab" is right-skewed (one large value), "symmetric" is not, "flag" has two
# levels, "signed" has a negative value; skewness of lab's values: 2.26 > 1
LAB = [0.0, 1.0, 2.0, 1.0, 3.0, 2.0, 1.0, 40.0]
COLUMNS = {
    "lab": LAB,
    "symmetric": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
    "flag": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
    "signed": [-1.0, 1.0, 2.0, 1.0, 3.0, 2.0, 1.0, 40.0],
}


def _cohort(**columns):
    data = {**COLUMNS, **columns}
    visits = pl.DataFrame({"patient_id": [1, 1, 1, 1, 2, 2, 2, 2],
                           "time": [0.0, 30.0, 60.0, 90.0, 0.0, 30.0, 60.0, 90.0],
                           **{name: pl.Series(values, dtype=pl.Float64) for name, values in data.items()}})
    outcomes = pl.DataFrame({"patient_id": [1, 2], "time": [400.0, 300.0], "event": [1, 0]})
    return build_cohort(visits, outcomes)


def _skewness(x):
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean()
    return np.mean(centred ** 3) / np.mean(centred ** 2) ** 1.5


def _pipeline(cohort, **options):
    return FeaturePipeline(numeric=list(COLUMNS), categorical=[], codes=False, time_features=False,
                           **{"log_skewed": True, **options}).fit(cohort)


def test_only_right_skewed_non_negative_measurements_are_read_on_the_log_scale():
    # lab, flag and signed are all skewed; flag has two levels, signed a negative value
    assert min(_skewness(COLUMNS[c]) for c in ("lab", "flag", "signed")) > SKEWNESS_THRESHOLD
    assert _skewness(COLUMNS["symmetric"]) < SKEWNESS_THRESHOLD
    assert len(set(COLUMNS["flag"])) < LOG_MIN_DISTINCT <= len(set(LAB))
    pipe = _pipeline(_cohort())
    assert pipe.log_scales == {"lab": 2.0}  # the median of the positive values 1, 2, 1, 3, 2, 1, 40
    assert FeaturePipeline(numeric=list(COLUMNS), categorical=[], codes=False).fit(_cohort()).log_scales == {}


def test_values_on_the_log_scale_by_hand():
    cohort = _cohort()
    pipe = _pipeline(cohort)
    logged = np.log1p(np.array(LAB) / 2.0)
    assert pipe.means[0] == pytest.approx(logged.mean()) and pipe.stds[0] == pytest.approx(logged.std())
    encoded = pipe.transform(cohort).numeric[:, 0]
    assert encoded == pytest.approx((logged - logged.mean()) / logged.std(), abs=1e-6)
    # the untouched columns are standardised raw values
    symmetric = np.array(COLUMNS["symmetric"])
    assert pipe.transform(cohort).numeric[:, 1] == pytest.approx((symmetric - 4.5) / symmetric.std(), abs=1e-6)


def test_the_log_scale_does_not_depend_on_the_unit():
    in_units = _pipeline(_cohort()).transform(_cohort()).numeric
    scaled = _cohort(lab=[1000 * v for v in LAB])
    in_thousandths = _pipeline(scaled).transform(scaled).numeric
    assert in_thousandths == pytest.approx(in_units, abs=1e-5)


def test_a_negative_value_met_after_fitting_is_read_by_the_signed_log():
    pipe = _pipeline(_cohort())
    later = _cohort(lab=[-2.0, -0.5, 0.0, 0.5, 2.0, 6.0, 1.0, 1.0])
    x = pipe.transform(later).numeric[:, 0] * pipe.stds[0] + pipe.means[0]
    expected = np.sign([-2.0, -0.5, 0.0, 0.5, 2.0, 6.0]) * np.log1p(np.abs([-2.0, -0.5, 0.0, 0.5, 2.0, 6.0]) / 2.0)
    assert np.isfinite(x).all()
    assert x[:6] == pytest.approx(expected, abs=1e-5)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(0.0, 1e4)), min_size=8, max_size=8), st.booleans(), st.booleans())
def test_carried_forward_values_and_history_are_those_of_the_log_scale_values(lab, locf, history):
    """The log scale applies before everything else: encoding any table equals encoding the table of its log-scale
    values with a pipeline fitted on log-scale values and read without it (the native kernel, which carries
    values forward, and the NumPy path alike)."""
    fitted_on = [0.0, 1.0, None, 1.0, 3.0, 2.0, 1.0, 40.0]  # skewed, with a missing value (so a history)
    options = dict(numeric=["lab"], categorical=[], codes=False, time_features=False, locf=locf,
                   measurement_history=history)
    pipe = FeaturePipeline(**options, log_skewed=True).fit(_cohort(lab=fitted_on))
    assert pipe.log_scales == {"lab": 1.5}  # the median of 1, 1, 3, 2, 1, 40

    def logged(values):
        return _cohort(lab=[None if v is None else float(np.log1p(v / 1.5)) for v in values])

    reference = FeaturePipeline(**options).fit(logged(fitted_on))
    ours, theirs = pipe.transform(_cohort(lab=lab)), reference.transform(logged(lab))
    assert ours.numeric == pytest.approx(theirs.numeric, abs=1e-5)
    assert np.array_equal(ours.numeric_missing, theirs.numeric_missing)


def test_log_scales_are_saved_and_pipelines_saved_without_them_load_unchanged():
    cohort = _cohort()
    pipe = _pipeline(cohort)
    restored = FeaturePipeline.from_json(pipe.to_json())
    assert restored.log_scales == pipe.log_scales and restored.log_skewed
    assert np.array_equal(restored.transform(cohort).numeric, pipe.transform(cohort).numeric)
    older = FeaturePipeline(numeric=list(COLUMNS), categorical=[], codes=False).fit(cohort).to_dict()
    del older["options"]["log_skewed"]
    for column in older["numeric"]:
        del column["log_scale"]
    loaded = FeaturePipeline.from_dict(older)
    assert loaded.log_scales == {} and not loaded.log_skewed


def test_the_estimator_reads_skewed_columns_on_the_log_scale_by_default_scores_them_and_the_cli_can_turn_it_off(
        tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    ids = np.repeat(np.arange(n), 3)
    visits = pl.DataFrame({"patient_id": ids, "time": np.tile([0.0, 100.0, 200.0], n),
                           "lab": rng.lognormal(0.0, 1.5, 3 * n), "age": np.repeat(rng.normal(60, 8, n), 3)})
    outcomes = pl.DataFrame({"patient_id": np.arange(n), "time": rng.uniform(250, 900, n),
                             "event": rng.integers(0, 2, n)})
    small = dict(progress=False, n_models=1, linear_members=0, epochs=1)
    fitted = ehrseq.DynamicSurvival(**small).fit(visits, outcomes)
    assert set(fitted.features_.log_scales) == {"lab"}
    # saved, loaded and scored in batch like any model: the same risks as predict_risk, a negative value included
    later = visits.with_columns(pl.when(pl.col("patient_id") == 0).then(-1.0).otherwise(pl.col("lab")).alias("lab"))
    ehrseq.score(fitted.save(tmp_path / "fitted"), later, tmp_path / "scores", [100.0, 300.0], progress=False)
    scored = pl.read_parquet(sorted((tmp_path / "scores").rglob("*.parquet"))).sort("patient_id", "horizon")
    expected = ehrseq.load(tmp_path / "fitted").predict_risk(later, [100.0, 300.0]).sort("patient_id", "horizon")
    assert np.isfinite(scored["risk"].to_numpy()).all()
    np.testing.assert_allclose(scored["risk"].to_numpy(), expected["risk"].to_numpy(), rtol=1e-5, atol=1e-6)
    assert ehrseq.DynamicSurvival(log_skewed=False, **small).fit(visits, outcomes).features_.log_scales == {}
    visits.write_parquet(tmp_path / "visits.parquet")
    outcomes.write_parquet(tmp_path / "outcomes.parquet")
    cli_main(["train", "--visits", str(tmp_path / "visits.parquet"), "--outcomes", str(tmp_path / "outcomes.parquet"),
              "--out", str(tmp_path / "model"), "--no-log-skewed", "--n-models", "1", "--linear-members", "0",
              "--epochs", "1", "--no-progress"])
    assert ehrseq.load(tmp_path / "model").features_.log_scales == {}


@pytest.mark.parametrize("name", ["log_skewed", "measurement_history", "locf", "wide"])
def test_the_estimators_switches_take_true_or_false_only(name):
    with pytest.raises(ehrseq.ConfigError, match=f"{name} must be True or False, got 'yes'"):
        ehrseq.DynamicSurvival(**{name: "yes"})
