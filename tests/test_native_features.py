"""The native encoding of a numeric feature column with missing values (standardised, carried forward, with its
measurement history) against the feature pipeline's NumPy reference, on a hand-made patient and on random tables."""

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from native_runs import natively_and_without

from ehrseq.data import FeaturePipeline, build_cohort
from ehrseq.models.distributions import _native

pytestmark = pytest.mark.skipif(not _native.available(), reason=_native.status())

YEAR = math.log1p(365.25)


def _outputs(n: int, history: bool):
    out = np.full(n, 99.0, dtype=np.float32)  # every row must be written
    since = np.full(n, 99.0, dtype=np.float32) if history else None
    ever = np.full(n, 99.0, dtype=np.float32) if history else None
    return out, since, ever


def test_one_column_by_hand():
    # patient 0: unmeasured, 2.0, unmeasured twice, 5.0; patient 1: unmeasured, then 1.0 (nothing inherited)
    values = np.array([123.0, 2.0, -7.0, 0.0, 5.0, 8.0, 1.0])  # arbitrary where missing
    missing = np.array([1, 0, 1, 1, 0, 1, 0], dtype=bool)
    patient = np.array([0, 0, 0, 0, 0, 1, 1], dtype=np.int64)
    elapsed = np.array([0.0, 1.0, 3.0, 10.0, 11.0, 0.0, 4.0])
    mean, std, unit = 1.0, 2.0, 0.5
    out, since, ever = _outputs(7, history=True)
    assert _native.numeric_feature(values, missing, patient, elapsed, mean, std, unit, True, out, since, ever)
    assert out.tolist() == [0.0, 0.5, 0.5, 0.5, 2.0, 0.0, 0.0]
    expected_since = [0.0, 0.0, math.log1p(2 / unit) / YEAR, math.log1p(9 / unit) / YEAR, 0.0, 0.0, 0.0]
    assert since.tolist() == pytest.approx(expected_since, rel=1e-6)
    assert ever.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0]
    # without carry-forward: the value where measured, 0 elsewhere; the history is the same
    out, since_nolocf, ever_nolocf = _outputs(7, history=True)
    assert _native.numeric_feature(values, missing, patient, elapsed, mean, std, unit, False, out, since_nolocf,
                                   ever_nolocf)
    assert out.tolist() == [0.0, 0.5, 0.0, 0.0, 2.0, 0.0, 0.0]
    assert since_nolocf.tolist() == since.tolist() and ever_nolocf.tolist() == ever.tolist()
    # without the history: only the values
    out, _, _ = _outputs(7, history=False)
    assert _native.numeric_feature(values, missing, patient, None, mean, std, unit, True, out)
    assert out.tolist() == [0.0, 0.5, 0.5, 0.5, 2.0, 0.0, 0.0]


def test_it_declines_what_it_does_not_take_and_writes_nothing():
    n = 4
    values, missing = np.ones(n), np.array([0, 1, 0, 1], dtype=bool)
    patient, elapsed = np.zeros(n, dtype=np.int64), np.arange(n, dtype=np.float64)
    out, since, ever = _outputs(n, history=True)
    declined = [
        (values.astype(np.float32), missing, patient, elapsed, 0.0, 1.0, 1.0, True, out, since, ever),  # float32 values
        (values, missing, patient.astype(np.int32), elapsed, 0.0, 1.0, 1.0, True, out, since, ever),  # int32 patients
        (values, missing, patient, elapsed, 0.0, 0.0, 1.0, True, out, since, ever),  # std 0
        (values, missing, patient, elapsed, 0.0, math.nan, 1.0, True, out, since, ever),  # std NaN
        (values, missing, patient, None, 0.0, 1.0, 1.0, True, out, since, ever),  # history without times
        (values, missing, patient, elapsed, 0.0, 1.0, 1.0, True, out, since, None),  # half a history
        (values[:3], missing, patient, elapsed, 0.0, 1.0, 1.0, True, out, since, ever),  # lengths differ
        (values[::2].repeat(2)[::1], missing, patient, elapsed, 0.0, 1.0, 1.0, True,
         np.zeros(2 * n, dtype=np.float32)[::2], since, ever),  # a strided output
    ]
    for arguments in declined:
        assert not _native.numeric_feature(*arguments)
    assert (out == 99.0).all() and (since == 99.0).all() and (ever == 99.0).all()


def _random_cohort(rng: np.random.Generator, patients: int, missing_rate: float):
    lengths = rng.integers(1, 12, size=patients)
    ids = np.repeat(np.arange(patients), lengths)
    time = np.concatenate([np.cumsum(rng.exponential(40.0, size=k)) for k in lengths])
    columns = {}
    for name, rate in (("a", missing_rate), ("b", missing_rate / 2), ("c", 0.0), ("d", 1.0)):
        x = rng.normal(3.0, 2.0, size=ids.size)
        unmeasured = rng.random(ids.size) < rate
        columns[name] = pl.Series([None if u else float(v) for u, v in zip(unmeasured, x)], dtype=pl.Float64)
    visits = pl.DataFrame({"patient_id": ids, "time": time, **columns})
    outcomes = pl.DataFrame({"patient_id": np.arange(patients), "time": [5000.0] * patients,
                             "event": rng.integers(0, 2, size=patients)})
    return build_cohort(visits, outcomes)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), patients=st.integers(1, 40), missing_rate=st.floats(0.0, 0.95),
       locf=st.booleans(), history=st.booleans(), unit=st.sampled_from([1.0, 1 / 7, 30.0]))
def test_the_pipeline_encodes_the_same_with_and_without_the_kernel(seed, patients, missing_rate, locf, history, unit):
    cohort = _random_cohort(np.random.default_rng(seed), patients, missing_rate)
    pipeline = FeaturePipeline(numeric=["a", "b", "c", "d"], categorical=[], codes=False, locf=locf,
                               time_unit=unit, measurement_history=history).fit(cohort)
    natively, reference = natively_and_without(lambda: pipeline.transform(cohort))
    np.testing.assert_array_equal(natively.numeric_missing, reference.numeric_missing)
    np.testing.assert_allclose(natively.numeric, reference.numeric, rtol=1e-6, atol=1e-7)


def test_the_pipeline_takes_the_kernel_for_columns_with_missing_values(monkeypatch):
    cohort = _random_cohort(np.random.default_rng(5), 30, 0.4)
    taken = []

    def spy(*arguments, **keywords):
        taken.append(kernel(*arguments, **keywords))
        return taken[-1]

    kernel = _native.numeric_feature
    monkeypatch.setattr(_native, "numeric_feature", spy)
    FeaturePipeline(numeric=["a", "b", "c", "d"], categorical=[], codes=False, locf=True,
                    measurement_history=True).fit(cohort).transform(cohort)
    assert taken == [True, True]  # a and b; c has no missing value and d none observed
