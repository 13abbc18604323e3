"""Feature pipeline: standardisation, missingness, LOCF, vocabularies, time features, JSON round trip."""

import math

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ehrseq import DataError
from ehrseq.data import PAD_INDEX, UNKNOWN_INDEX, FeaturePipeline, build_cohort, tensorize
from ehrseq.errors import ConfigError

NAN = float("nan")


def _cohort(**columns):
    base = {
        "patient_id": [1, 1, 1, 2, 2, 3],
        "time": [0.0, 10.0, 30.0, 0.0, 365.25, 0.0],
        "x": [1.0, None, 3.0, NAN, 5.0, 7.0],
        "k": [2.0, 2.0, 2.0, 2.0, 2.0, 2.0],
        "e": pl.Series([None] * 6, dtype=pl.Float64),
        "c": ["a", "b", "a", None, "a", "b"],
        "codes": [["A", "B"], [], None, ["A"], ["C", "A", "B"], ["B"]],
    }
    base.update(columns)
    visits = pl.DataFrame(base)
    outcomes = pl.DataFrame({"patient_id": [1, 2, 3], "time": [400.0, 400.0, 400.0], "event": [1, 0, 1]})
    return build_cohort(visits, outcomes)


def test_standardisation_uses_observed_training_values_and_flags_missing():
    cohort = _cohort()
    pipe = FeaturePipeline(time_features=False).fit(cohort)
    observed = np.array([1.0, 3.0, 5.0, 7.0])  # null and NaN are missing
    mean, sd = observed.mean(), observed.std()
    enc = pipe.transform(cohort)
    assert pipe.numeric_names == ("x", "k", "e")
    raw = [1.0, None, 3.0, None, 5.0, 7.0]
    expected_x = [0.0 if v is None else (v - mean) / sd for v in raw]
    assert enc.numeric[:, 0] == pytest.approx(np.array(expected_x, dtype=np.float32), abs=1e-6)
    assert enc.numeric_missing[:, 0].tolist() == [v is None for v in raw]
    assert enc.numeric[:, 1].tolist() == [0.0] * 6  # constant column: sd taken as 1
    assert enc.numeric[:, 2].tolist() == [0.0] * 6 and enc.numeric_missing[:, 2].all()  # never observed
    assert pipe.means.tolist() == pytest.approx([mean, 2.0, 0.0])
    assert pipe.stds.tolist() == pytest.approx([sd, 1.0, 1.0])
    assert enc.numeric.dtype == np.float32 and enc.numeric_missing.dtype == bool


def test_locf_carries_values_forward_within_a_patient_only():
    cohort = _cohort(x=[None, 4.0, None, None, 2.0, None])
    pipe = FeaturePipeline(numeric=["x"], categorical=[], codes=False, locf=True, time_features=False).fit(cohort)
    mean, sd = 3.0, 1.0
    enc = pipe.transform(cohort)
    expected_raw = [None, 4.0, 4.0, None, 2.0, None]  # patient 2's first visit does not inherit patient 1's value
    expected = [0.0 if v is None else (v - mean) / sd for v in expected_raw]
    assert enc.numeric[:, 0].tolist() == pytest.approx(expected)
    assert enc.numeric_missing[:, 0].tolist() == [True, False, True, True, False, True]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.one_of(st.none(), st.floats(-1e3, 1e3)), min_size=1, max_size=6), min_size=1, max_size=8))
def test_locf_equals_a_forward_fill_over_each_patient(patients):
    ids = [i for i, visits in enumerate(patients) for _ in visits]
    values = [v for visits in patients for v in visits]
    visits = pl.DataFrame({"patient_id": ids, "time": [float(t) for visits in patients for t in range(len(visits))],
                           "x": pl.Series(values, dtype=pl.Float64)})
    outcomes = pl.DataFrame({"patient_id": list(range(len(patients))), "time": [100.0] * len(patients),
                             "event": [1] * len(patients)})
    cohort = build_cohort(visits, outcomes)
    pipe = FeaturePipeline(numeric=["x"], categorical=[], codes=False, locf=True, time_features=False).fit(cohort)
    filled = cohort.visits.select(pl.col("x").forward_fill().over("patient_index")).to_series().to_numpy()
    expected = np.where(np.isnan(filled), 0.0, (filled - pipe.means[0]) / pipe.stds[0]).astype(np.float32)
    assert pipe.transform(cohort).numeric[:, 0].tolist() == expected.tolist()


def test_measurement_history_gives_the_age_of_the_last_observation_within_a_patient():
    # x: patient 1 measured at 0 and 30 (not 10); patient 2 not at 0 (NaN), at 365.25; patient 3 at 0
    cohort = _cohort()
    pipe = FeaturePipeline(numeric=["x", "k"], categorical=[], codes=False, locf=True, time_features=False,
                           measurement_history=True).fit(cohort)
    assert pipe.numeric_names == ("x", "k", "x:since_measured", "x:ever_measured")  # k is never missing
    enc = pipe.transform(cohort)
    year = math.log1p(365.25)
    assert enc.numeric[:, 2].tolist() == pytest.approx([0.0, math.log1p(10.0) / year, 0.0, 0.0, 0.0, 0.0])
    assert enc.numeric[:, 3].tolist() == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]  # patient 2 inherits nothing
    assert not enc.numeric_missing[:, 2:].any()
    # the age reads the clock in days of the model: a clock in weeks with time_unit = 1/7 gives the same
    weeks = _cohort(time=[0.0, 10 / 7, 30 / 7, 0.0, 365.25 / 7, 0.0])
    in_weeks = FeaturePipeline(numeric=["x"], categorical=[], codes=False, time_features=False, time_unit=1 / 7,
                               measurement_history=True).fit(weeks).transform(weeks)
    assert in_weeks.numeric[:, 1] == pytest.approx(enc.numeric[:, 2], rel=1e-6)


def test_measurement_history_is_saved_and_pipelines_saved_without_it_load_unchanged():
    cohort = _cohort()
    pipe = FeaturePipeline(locf=True, measurement_history=True).fit(cohort)
    restored = FeaturePipeline.from_json(pipe.to_json())
    assert restored.history_columns == pipe.history_columns == ("x", "e")
    assert np.array_equal(restored.transform(cohort).numeric, pipe.transform(cohort).numeric)
    older = FeaturePipeline(locf=True).fit(cohort).to_dict()
    del older["options"]["measurement_history"], older["history_columns"]
    loaded = FeaturePipeline.from_dict(older)
    assert loaded.history_columns == () and loaded.numeric_names == ("x", "k", "e", "elapsed_years", "log_gap")


def test_time_features_are_years_and_log_gap():
    cohort = _cohort()
    enc = FeaturePipeline(numeric=[], categorical=[], codes=False).fit(cohort).transform(cohort)
    elapsed = np.array([0.0, 10.0, 30.0, 0.0, 365.25, 0.0])
    gap = np.array([0.0, 10.0, 20.0, 0.0, 365.25, 0.0])
    assert enc.numeric[:, 0] == pytest.approx(elapsed / 365.25)
    assert enc.numeric[:, 1] == pytest.approx(np.log1p(gap) / math.log1p(365.25))
    assert enc.numeric[4, 1] == pytest.approx(1.0) and not enc.numeric_missing.any()


def test_categorical_vocabulary_frequency_order_null_level_and_unknown_bucket():
    train = _cohort()
    pipe = FeaturePipeline(numeric=[], codes=False, time_features=False).fit(train)
    assert pipe.levels["c"] == ["a", "b", None]  # 3 a's, 2 b's, 1 null
    assert pipe.categorical_cardinalities == (5,)
    enc = pipe.transform(train)
    assert enc.categorical[:, 0].tolist() == [2, 3, 2, 4, 2, 3]
    test = _cohort(c=["z", "a", None, "b", "y", "a"])
    assert pipe.transform(test).categorical[:, 0].tolist() == [UNKNOWN_INDEX, 2, 4, 3, UNKNOWN_INDEX, 2]
    assert PAD_INDEX not in enc.categorical


def test_boolean_and_integer_categoricals_are_compared_as_strings():
    cohort = _cohort(flag=[True, False, True, True, None, False], stage=[1, 2, 2, 3, 1, 2])
    cohort = build_cohort(
        cohort.visits.select(pl.col("patient_index").alias("patient_id"), "time", "flag", "stage"),
        pl.DataFrame({"patient_id": [0, 1, 2], "time": [400.0] * 3, "event": [0] * 3}),
        categorical=["flag", "stage"],
    )
    pipe = FeaturePipeline(codes=False, time_features=False).fit(cohort)
    assert pipe.levels == {"flag": ["true", "false", None], "stage": ["2", "1", "3"]}
    assert pipe.transform(cohort).categorical.tolist() == [[2, 3], [3, 2], [2, 2], [2, 4], [4, 3], [3, 2]]


def test_code_vocabulary_min_count_max_size_ties_and_csr_layout():
    cohort = _cohort()  # counts: A 3, B 3, C 1
    pipe = FeaturePipeline(numeric=[], categorical=[], time_features=False).fit(cohort)
    assert pipe.code_vocabulary == ["A", "B", "C"] and pipe.code_vocab_size == 5
    enc = pipe.transform(cohort)
    assert enc.code_offsets.tolist() == [0, 2, 2, 2, 3, 6, 7]
    assert enc.code_values.tolist() == [2, 3, 2, 4, 2, 3, 3]
    rare = FeaturePipeline(code_min_count=2, time_features=False).fit(cohort)
    assert rare.code_vocabulary == ["A", "B"]
    assert rare.transform(cohort).code_values.tolist() == [2, 3, 2, UNKNOWN_INDEX, 2, 3, 3]
    small = FeaturePipeline(code_max_size=1).fit(cohort)
    assert small.code_vocabulary == ["A"]
    unseen = _cohort(codes=[["Q"], ["A"], None, [], ["B", "Q"], []])
    assert rare.transform(unseen).code_values.tolist() == [UNKNOWN_INDEX, 2, 3, UNKNOWN_INDEX]


def test_statistics_come_from_the_training_cohort_only():
    cohort = _cohort()
    train = cohort[[0]]
    pipe = FeaturePipeline(numeric=["x"], categorical=["c"], codes=False, time_features=False).fit(train)
    assert pipe.means.tolist() == [2.0] and pipe.stds.tolist() == [1.0]
    enc = pipe.transform(cohort[[1, 2]])
    assert enc.numeric[:, 0].tolist() == [0.0, 3.0, 5.0]
    assert enc.categorical[:, 0].tolist() == [UNKNOWN_INDEX, 2, 3]


def test_json_round_trip_gives_identical_tensors_and_unseen_values_map_to_unknown():
    train = _cohort()
    pipe = FeaturePipeline(locf=True, code_min_count=1).fit(train)
    restored = FeaturePipeline.from_json(pipe.to_json())
    assert restored.to_dict() == pipe.to_dict()
    test = _cohort(c=["never", "a", None, "b", "seen?", "a"], codes=[["Z"], [], ["A", "Y"], None, ["B"], ["X"]],
                   x=[0.1, 0.2, None, 1e6, -3.0, None])
    for cohort in (train, test):
        a, b = tensorize(cohort, pipe).to_padded(), tensorize(cohort, restored).to_padded()
        for name, tensor in a.tensors().items():
            assert torch.equal(tensor, b.tensors()[name]), name
    batch = tensorize(test, restored).to_padded()
    assert batch.categorical[0, 0, 0].item() == UNKNOWN_INDEX
    assert batch.codes[0, 0].tolist()[:1] == [UNKNOWN_INDEX]


def test_errors_for_unfitted_pipelines_bad_options_and_missing_columns():
    cohort = _cohort()
    with pytest.raises(ConfigError, match="not fitted"):
        FeaturePipeline().transform(cohort)
    with pytest.raises(ConfigError, match="not fitted"):
        tensorize(cohort, FeaturePipeline())
    with pytest.raises(ConfigError, match="code_min_count"):
        FeaturePipeline(code_min_count=0)
    with pytest.raises(ConfigError, match="FeaturePipeline"):
        FeaturePipeline.from_json('{"format": "something else"}')
    pipe = FeaturePipeline(numeric=["x"], codes=False).fit(cohort)
    other = _cohort().select([0, 1, 2])
    stripped = build_cohort(other.visits.select(pl.col("patient_index").alias("patient_id"), "time", "k"),
                            pl.DataFrame({"patient_id": [0, 1, 2], "time": [400.0] * 3, "event": [0] * 3}))
    with pytest.raises(DataError) as info:
        pipe.transform(stripped)
    assert info.value.rule == "required_columns" and info.value.column == "x"


def test_near_constant_and_extreme_columns_stay_finite_and_exact():
    cohort = _cohort(x=[0.0, 1e-121, 0.0, 0.0, 1e-121, 0.0], k=[3e150, -3e150, 3e150, -3e150, 3e150, 0.0])
    pipe = FeaturePipeline(numeric=["x", "k"], categorical=[], codes=False, time_features=False).fit(cohort)
    assert pipe.stds[0] == 1.0  # sd below 10 machine epsilons: treated as constant
    enc = pipe.transform(cohort)
    assert np.isfinite(enc.numeric).all()
    k = np.array([3e150, -3e150, 3e150, -3e150, 3e150, 0.0])  # float32 cannot hold x - mean
    assert enc.numeric[:, 1] == pytest.approx(((k - k.mean()) / k.std()).astype(np.float32), rel=1e-6)
