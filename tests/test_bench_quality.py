"""The results-table benchmark: the quick mode runs end to end; folds and D-calibration are what they claim."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from ehrseq.baselines import KaplanMeier
from ehrseq.bench.quality import SEQUENCE_MODELS, folds, landmark_d_calibration, main, pbc
from ehrseq.metrics import d_calibration


def test_quick_mode_writes_the_table_and_the_figure(tmp_path, capsys):
    main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    text = (tmp_path / "results.md").read_text()
    for name in (*SEQUENCE_MODELS, "Kaplan-Meier", "landmark Cox", "landmark RSF"):
        assert f"| {name} |" in text
        assert name in out
    assert (tmp_path / "results.png").stat().st_size > 0
    results = pl.read_csv(tmp_path / "results.csv")
    assert sorted(results["fold"].unique().to_list()) == [0, 1]
    km = results.filter((pl.col("model") == "Kaplan-Meier") & pl.col("c_index").is_not_null())
    assert km.height > 0 and np.allclose(km["c_index"].to_numpy(), 0.5)  # one risk for all at a landmark
    sizes = results.group_by("landmark", "horizon", "fold").agg(pl.col("n_at_risk").n_unique())
    assert (sizes["n_at_risk"] == 1).all()  # every model is evaluated on the same patients


def test_folds_partition_the_patients_stratified_by_event():
    data = pbc(None, seed=0)
    parts = folds(data, 5, seed=0)
    ids = np.concatenate(parts)
    assert np.unique(ids).size == ids.size == data.outcomes.height
    events = data.outcomes.with_columns(pl.col("event") == 1)
    counts = [int(events.filter(pl.col("patient_id").is_in(pl.Series(p).implode()))["event"].sum()) for p in parts]
    assert max(counts) - min(counts) <= 1


def test_landmark_d_calibration_uses_the_conditional_survival_at_the_truncated_time():
    data = pbc(None, seed=0)
    model = KaplanMeier().fit(data.visits, data.outcomes)
    s, h_max = 730.0, 1095.0
    p = landmark_d_calibration(model, data.visits, data.outcomes, data.settings, s, h_max)
    at_risk = data.outcomes.filter(pl.col("time") > s)  # PBC: every patient has a visit at day 0
    remaining = at_risk["time"].to_numpy() - s
    t = np.minimum(remaining, h_max)
    event = (at_risk["event"].to_numpy() == 1) & (remaining <= h_max)
    conditional = model.survival(s + t) / model.survival(s)
    assert p == pytest.approx(d_calibration(t, event, conditional).p_value, rel=1e-12)
