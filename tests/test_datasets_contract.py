"""Every bundled data set passes the table contracts of ``data_specs/`` and builds a cohort."""

import polars as pl
import pytest

from ehrseq.data import build_cohort, validate
from ehrseq.datasets import DatasetTables, load_nafld, load_pbcseq, simulate

_FEATURE_DTYPES = (pl.Float64, pl.String, pl.List(pl.String))


@pytest.fixture(scope="module")
def nafld() -> DatasetTables:
    return load_nafld(multi_event=True)


_SOURCES = {
    "pbcseq-death": (lambda: load_pbcseq("death"), {}),
    "pbcseq-competing": (lambda: load_pbcseq("competing"), {}),
    "pbcseq-death_or_transplant": (lambda: load_pbcseq("death_or_transplant"), {}),
    "simulation": (lambda: simulate(300, seed=4), {}),
}


def _check_contract(data: DatasetTables) -> None:
    """Column names, dtypes and the row rules of the contract, checked directly on the frames."""
    visits, outcomes = data.visits, data.outcomes
    assert visits.columns[:2] == ["patient_id", "time"]
    assert visits.schema["patient_id"] == pl.Int64 and visits.schema["time"] == pl.Float64
    assert all(visits.schema[c] in _FEATURE_DTYPES for c in visits.columns[2:])
    assert visits.select(pl.col("patient_id", "time").null_count()).row(0) == (0, 0)
    assert visits["time"].min() >= 0 and visits["time"].is_finite().all()
    assert visits.select(pl.struct("patient_id", "time").is_unique().all()).item()
    assert visits.equals(visits.sort("patient_id", "time"))
    if "codes" in visits.columns:
        assert visits["codes"].null_count() == 0
        assert (visits["codes"].list.drop_nulls().list.len() == visits["codes"].list.len()).all()

    expected = {"patient_id": pl.Int64, "time": pl.Float64, "event": pl.Int64}
    assert {c: outcomes.schema[c] for c in expected} == expected
    assert set(outcomes.columns) <= {*expected, "entry_time"}
    assert outcomes.null_count().sum_horizontal().item() == 0
    assert outcomes["patient_id"].is_unique().all()
    assert outcomes["time"].min() >= 0
    assert set(outcomes["event"].unique()) <= set(range(len(data.event_names) + 1))
    assert set(visits["patient_id"].unique()) <= set(outcomes["patient_id"])
    if "entry_time" in outcomes.columns:
        assert outcomes["entry_time"].min() >= 0
        assert (outcomes["entry_time"] < outcomes["time"]).all()

    if data.multi_outcomes is not None:
        multi = data.multi_outcomes
        assert multi.schema == pl.Schema(
            {"patient_id": pl.Int64, "event_name": pl.String, "time": pl.Float64, "event": pl.Int64}
        )
        assert set(multi["event_name"].unique()) == set(data.multi_event_names)
        assert multi.select(pl.struct("patient_id", "event_name").is_unique().all()).item()
        end = multi.join(outcomes, on="patient_id", suffix="_end")
        assert end.height == multi.height and (end["time"] <= end["time_end"]).all()


@pytest.mark.parametrize("name", [*_SOURCES, "nafld"])
def test_tables_follow_the_contract_and_pass_validation(request, name):
    if name == "nafld":
        data, options = request.getfixturevalue("nafld"), {"origin": "entry_time", "unmatched": "drop"}
    else:
        load, options = _SOURCES[name]
        data = load()
    _check_contract(data)
    validated = validate(data.visits, data.outcomes, multi_outcomes=data.multi_outcomes,
                         event_types=data.event_names, **options)
    assert validated.visits.height == data.visits.height
    cohort = build_cohort(data.visits, data.outcomes, multi_outcomes=data.multi_outcomes,
                          event_types=data.event_names, **options)
    assert cohort.report.balanced


def test_tables_unpack_like_tuples(nafld):
    visits, outcomes = load_pbcseq()
    assert visits.height == 1_945 and outcomes.height == 312
    unpacked = tuple(nafld)
    assert len(unpacked) == 3 and unpacked[2] is nafld.multi_outcomes
    sim = simulate(20, seed=1)
    visits, outcomes = sim
    assert visits is sim.visits and outcomes is sim.outcomes
