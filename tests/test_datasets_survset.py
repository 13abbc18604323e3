"""SurvSet's time-varying data sets through the counting-process converter (development sets only)."""

import numpy as np
import polars as pl
import pytest

from ehrseq.data import build_cohort
from ehrseq.datasets import SURVSET_TIME_UNITS, load_survset
from ehrseq.errors import ConfigError

pytest.importorskip("SurvSet")  # declared in the test extra; the import names the package if it is missing


def raw(name: str):
    from SurvSet.data import SurvLoader

    return SurvLoader().load_dataset(name)["df"]


@pytest.mark.parametrize("name", ["heart", "Rossi"])
def test_tables_match_the_raw_rows(name):
    """Brute force over the raw pandas table: a visit per row at its start, the outcome at the last row."""
    frame = raw(name)
    visits, outcomes = load_survset(name)
    ids = {pid: k for k, pid in enumerate(sorted(frame["pid"].unique()))}
    assert visits.height == len(frame)
    expected_visits, expected_outcomes = [], []
    for pid, rows in frame.groupby("pid", sort=True):
        rows = rows.sort_values("time")
        expected_visits += [(ids[pid], float(t)) for t in rows["time"]]
        last = rows.iloc[-1]
        expected_outcomes.append((ids[pid], float(last["time2"]), int(last["event"]), float(rows["time"].iloc[0])))
    assert visits.select("patient_id", "time").rows() == expected_visits
    assert outcomes.rows() == expected_outcomes
    numeric = [c for c in frame.columns if c.startswith("num_")]
    categorical = [c for c in frame.columns if c.startswith("fac_")]
    assert all(visits.schema[c] == pl.Float64 for c in numeric)
    assert all(visits.schema[c] == pl.String for c in categorical)
    first_level = frame.sort_values(["pid", "time"])[categorical[0]].iloc[0]
    assert visits[categorical[0]][0] == str(first_level)


def test_ids_are_deterministic_and_times_keep_their_unit():
    a, b = load_survset("Rossi"), load_survset("Rossi")
    assert a.visits.equals(b.visits) and a.outcomes.equals(b.outcomes)
    assert a.outcomes["patient_id"].to_list() == list(range(432))
    assert a.outcomes["time"].max() == 52.0  # weeks, as in the source (one year after release)
    assert SURVSET_TIME_UNITS["Rossi"] == "weeks"


def test_oldmort_delayed_entry_at_age_60_and_bridged_gaps():
    visits, outcomes = load_survset("oldmort")
    frame = raw("oldmort")
    assert visits.height == len(frame) and outcomes.height == frame["pid"].nunique()
    entry = outcomes["entry_time"].to_numpy()
    assert entry.min() >= 60.0 and np.all(entry < outcomes["time"].to_numpy())  # ages in years
    cohort = build_cohort(visits, outcomes, origin="zero")
    assert cohort.n_patients == outcomes.height and cohort.n_visits == visits.height


def test_only_time_varying_sets():
    with pytest.raises(ConfigError, match="not time-varying"):
        load_survset("prostate")
    with pytest.raises(ConfigError, match="not a SurvSet data set"):
        load_survset("no such set")
