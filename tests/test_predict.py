"""The prediction core: visit selection against a loop, the landmark clock, and the landmark view of
every kind of prediction against its definition."""

import datetime as dt

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ehrseq import predict
from ehrseq.errors import ConfigError
from ehrseq.models.distributions import CompetingPMF, LogNormal, MultiEvent, Weibull


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.floats(0, 100), min_size=1, max_size=6), min_size=1, max_size=7),
       st.lists(st.floats(-10, 120), min_size=7, max_size=7))
def test_select_visits_matches_a_loop(histories, landmarks):
    width = max(len(h) for h in histories)
    mask = np.array([[m < len(h) for m in range(width)] for h in histories])
    days = np.array([sorted(h) + [-1.0] * (width - len(h)) for h in histories])  # padding holds anything
    landmark = np.array(landmarks[: len(histories)])
    b, m = predict.select_visits(mask, visit_days=days, landmark=landmark)
    expected = [(i, max(j for j in range(len(h)) if sorted(h)[j] <= landmark[i]))
                for i, h in enumerate(histories) if min(h) <= landmark[i]]
    assert list(zip(b.tolist(), m.tolist())) == expected
    b, m = predict.select_visits(mask, "last")
    assert list(zip(b.tolist(), m.tolist())) == [(i, len(h) - 1) for i, h in enumerate(histories)]
    b, m = predict.select_visits(mask, "all")
    assert list(zip(b.tolist(), m.tolist())) == [(i, j) for i, h in enumerate(histories) for j in range(len(h))]


def test_landmark_days_reads_numbers_and_calendar_times():
    origin = np.array([0.0, 18_262.0])  # 1970-01-01 and 2020-01-01 in days since the epoch
    assert predict.landmark_days(30, origin).tolist() == [30.0, 30.0]
    assert predict.landmark_days(dt.date(2020, 1, 31), origin).tolist() == [18_292.0, 30.0]
    noon = dt.datetime(2020, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert predict.landmark_days(noon, origin)[1] == pytest.approx(10 / 24)
    with pytest.raises(ConfigError, match="finite"):
        predict.landmark_days(float("nan"), origin)
    with pytest.raises(ConfigError, match="at must be"):
        predict.check_at("first")


def _selection(distribution, offset):
    n = len(offset)
    return predict.Selection(np.arange(n), np.arange(n), np.asarray(offset, dtype=np.float64), distribution, np.zeros(n))


def test_the_landmark_view_conditions_on_survival_to_the_prediction_time():
    g = torch.Generator().manual_seed(0)
    lognormal = LogNormal(torch.randn(3, generator=g, dtype=torch.float64) + 6, torch.zeros(3, dtype=torch.float64))
    offset = [0.0, 100.0, 400.0]
    ((name, view),) = _selection(lognormal, offset).marginals()
    u = torch.tensor([0.0, 30.0, 365.0], dtype=torch.float64)
    e = torch.tensor(offset, dtype=torch.float64)[:, None]
    assert name is None
    assert torch.allclose(view.survival(u), lognormal.survival(e + u) / lognormal.survival(e))
    # without a landmark the visit's own distribution is used: its closed-form median included
    ((_, plain),) = _selection(lognormal, [0.0, 0.0, 0.0]).marginals()
    assert plain is lognormal

    multi = MultiEvent({"death": lognormal, "stroke": Weibull(lognormal.loc, lognormal.log_scale)})
    views = dict(_selection(multi, offset).marginals())
    assert torch.allclose(views["stroke"].survival(u), multi["stroke"].survival(e + u) / multi["stroke"].survival(e))
    assert list(dict(_selection(multi, offset).marginals("stroke"))) == ["stroke"]


def test_competing_risks_landmark_view_gives_conditional_incidences_that_sum_to_the_all_cause_risk():
    grid = torch.tensor([0.0, 100.0, 300.0, 900.0], dtype=torch.float64)
    logits = torch.randn(4, 2 * 3 + 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    competing = CompetingPMF(logits, grid, 2)
    offset = np.array([0.0, 50.0, 250.0, 700.0])
    horizons = np.array([30.0, 200.0, 1000.0])
    selection = _selection(competing, offset)
    by_cause = [selection.competing_risk(horizons, k) for k in (1, 2)]
    total = selection.competing_risk(horizons, None)
    assert torch.allclose(by_cause[0] + by_cause[1], total)
    e = torch.as_tensor(offset)[:, None]
    end = e + torch.as_tensor(horizons)
    expected = (competing.cif(end)[:, 1] - competing.cif(e)[:, 1]) / competing.overall().survival(e)
    assert torch.allclose(by_cause[1], expected)
    ((_, overall),) = selection.marginals()
    assert torch.allclose(1 - overall.survival(torch.as_tensor(horizons)), total)
    with pytest.raises(ConfigError, match="cause must be in 1..2"):
        selection.competing_risk(horizons, 3)
