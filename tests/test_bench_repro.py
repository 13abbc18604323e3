"""The paper reproductions (``piecewise``, ``countdown``, ``multievent``, ``losses-quality``): their
helpers against hand-computed and brute-force values, the MENSA trajectory option through the
objective, the runner's ``-`` → ``_`` mapping, and a ``--quick`` smoke run of each command."""

import math
import re

import numpy as np
import polars as pl
import pytest
import torch
from scipy import stats

from ehrseq.bench import __main__ as runner
from ehrseq.bench import countdown, losses_quality, multievent, piecewise
from ehrseq.data import SequenceBatch
from ehrseq.datasets import load_pbcseq
from ehrseq.estimator import DynamicSurvival
from ehrseq.losses.functional.multievent import mensa_loss
from ehrseq.models.encoders import EncoderConfig
from ehrseq.models.heads import HeadConfig
from ehrseq.models.model import DynamicSurvivalModel, ModelConfig
from ehrseq.objective import Objective, ObjectiveConfig

DAY_YEAR = 365.25


# ------------------------------------------------------------------------------- piecewise
def test_weibull_oracle_nll_matches_scipy():
    sample = piecewise.simulate_weibull(400, np.random.default_rng(3), censoring_max=3.0)
    assert 0 < sample.event.sum() < sample.event.size  # both kinds of rows are exercised
    log_f = stats.weibull_min.logpdf(sample.time, sample.shape, scale=sample.scale)
    log_s = stats.weibull_min.logsf(sample.time, sample.shape, scale=sample.scale)
    expected = -np.where(sample.event, log_f, log_s).mean()
    assert piecewise.oracle_nll(sample) == pytest.approx(expected, rel=1e-10)


def test_weibull_simulation_draws_the_papers_covariates_and_censoring():
    sample = piecewise.simulate_weibull(20000, np.random.default_rng(0), censoring_max=3.0)
    assert sample.scale.min() >= 1 and sample.scale.max() <= 3
    assert sample.shape.min() >= 0.5 and sample.shape.max() <= 5
    assert sample.time.max() <= 3.0
    uncensored = piecewise.simulate_weibull(20000, np.random.default_rng(0), censoring_max=0.0)
    assert uncensored.event.all()
    # T | λ, k is Weibull: the probability integral transform S(T) is uniform
    pit = np.exp(-((uncensored.time / uncensored.scale) ** uncensored.shape))
    assert stats.kstest(pit, "uniform").pvalue > 1e-3


# ------------------------------------------------------------------------------- countdown
def test_age_cap_bound_is_the_time_the_patient_reaches_the_cap():
    visits = pl.DataFrame({
        "patient_id": [1, 1, 2, 3, 3],
        "time": [0.0, DAY_YEAR, 0.0, 0.0, 100.0],
        "age": [60.0, 61.0, 70.0, 99.5, None],
    })
    outcomes = pl.DataFrame({"patient_id": [1, 2, 3], "time": [2 * DAY_YEAR, 500.0, DAY_YEAR], "event": [0, 1, 0]})
    capped = countdown.add_age_cap(visits, outcomes, cap_age=100.0)
    upper = dict(zip(capped.outcomes["patient_id"].to_list(), capped.outcomes["time_upper"].to_list()))
    # patient 1 is 62 at censoring: 38 more years; patient 2 died; patient 3 is 100.5 at censoring
    assert upper[1] == pytest.approx(2 * DAY_YEAR + 38 * DAY_YEAR)
    assert upper[2] is None and upper[3] is None
    assert (capped.censored, capped.bounded) == (2, 1)
    assert capped.outcomes.columns == ["patient_id", "time", "event", "time_upper"]


# ------------------------------------------------------------------------------- multievent
def test_local_concordance_matches_a_loop_over_subjects():
    rng = np.random.default_rng(1)
    n, k = 40, 3
    time = rng.integers(1, 8, (n, k)).astype(float)  # ties in time are not comparable
    event = rng.random((n, k)) < 0.6
    risk = np.round(rng.random((n, k)), 1)  # ties in risk count ½
    concordant = comparable = 0.0
    for i in range(n):
        for a in range(k):
            for b in range(k):
                if a != b and event[i, a] and time[i, a] < time[i, b]:
                    comparable += 1
                    concordant += 1.0 if risk[i, a] > risk[i, b] else 0.5 if risk[i, a] == risk[i, b] else 0.0
    index, pairs = multievent.local_concordance(time, event, risk)
    assert pairs == comparable and index == pytest.approx(concordant / comparable)


def _multi_event_data(multi: pl.DataFrame, events: tuple[str, ...]) -> multievent.MultiEventData:
    ids = multi["patient_id"].unique().sort()
    outcomes = pl.DataFrame({"patient_id": ids, "time": 0.0, "event": 0, "entry_time": 10.0})
    visits = pl.DataFrame({"patient_id": ids, "time": 0.0})
    return multievent.MultiEventData(visits, outcomes, multi, events, ids.len())


def test_first_event_takes_the_earliest_onset_and_censors_at_the_end_of_follow_up():
    multi = pl.DataFrame({
        "patient_id": [1, 1, 1, 2, 2, 2, 3, 3, 3],
        "event_name": ["death", "dm", "htn"] * 3,
        "time": [90.0, 40.0, 60.0, 50.0, 50.0, 50.0, 80.0, 80.0, 80.0],
        "event": [1, 1, 1, 1, 1, 0, 0, 0, 0],
    })
    table = multievent.first_event(_multi_event_data(multi, ("death", "dm", "htn")))
    assert table["time"].to_list() == [40.0, 50.0, 80.0]
    assert table["event"].to_list() == [2, 1, 0]  # patient 2: tie between death and dm goes to the first listed
    assert table["entry_time"].to_list() == [10.0, 10.0, 10.0]


def test_visit_window_keeps_the_latest_before_and_the_earliest_after_the_index_date():
    visits = pl.DataFrame({"patient_id": [1] * 6 + [2] * 2, "time": [0.0, 1, 2, 3, 4, 5, 7, 9]})
    outcomes = pl.DataFrame({"patient_id": [1, 2], "entry_time": [2.0, 8.0]})
    kept = multievent.window_visits(visits, outcomes, before=2, after=2)
    assert kept.filter(pl.col("patient_id") == 1)["time"].to_list() == [1.0, 2.0, 3.0, 4.0]
    assert kept.filter(pl.col("patient_id") == 2)["time"].to_list() == [7.0, 9.0]


def test_trajectory_option_reaches_the_mensa_loss_through_the_objective():
    """``{"nll": {"trajectories": [...]}}`` on a ``multi_event`` head is MENSA with the trajectory term."""
    torch.manual_seed(0)
    b, m = 4, 3
    head = HeadConfig(kind="multi_event", num_causes=2, event_names=("death", "dm"), time_scale=200.0)
    model = DynamicSurvivalModel(ModelConfig(EncoderConfig(kind="gru", n_numeric=2, d_model=8), head))
    time = torch.tensor([[0.0, 50.0, 100.0]] * b)
    batch = SequenceBatch(
        numeric=torch.randn(b, m, 2), numeric_missing=torch.zeros(b, m, 2, dtype=torch.bool),
        categorical=torch.zeros(b, m, 0, dtype=torch.long), codes=torch.zeros(b, m, 0, dtype=torch.long),
        time=time, gap=torch.diff(time, prepend=time[:, :1]), mask=torch.ones(b, m, dtype=torch.bool),
        patient_index=torch.arange(b), weight=torch.ones(b),
        event_times=torch.tensor([[400.0, 200.0], [300.0, 350.0], [500.0, 150.0], [250.0, 600.0]]),
        event_flags=torch.tensor([[True, True], [True, False], [False, True], [True, True]]),
    )
    out = model(batch)
    with_term = Objective(ObjectiveConfig.parse({"nll": {"trajectories": [["dm", "death"]]}}), model.config, 3.0)
    plain = Objective(ObjectiveConfig.parse("nll"), model.config, 3.0)
    expected = mensa_loss(out.distribution, batch.event_times, batch.event_flags, batch.time, batch.mask,
                          trajectories=[("dm", "death")], visit_weighting="visit", reduction="sum") / (b * 3.0)
    assert torch.allclose(with_term(out, batch).total, expected)
    assert not torch.allclose(plain(out, batch).total, expected)


def test_competing_risks_predictions_in_several_batches_equal_one_batch():
    """``competing_pmf`` predictions of more patients than one prediction batch are concatenated."""
    visits, outcomes = load_pbcseq(outcome="competing")
    keep = outcomes["patient_id"].head(12).implode()
    visits, outcomes = visits.filter(pl.col("patient_id").is_in(keep)), outcomes.filter(pl.col("patient_id").is_in(keep))
    model = DynamicSurvival(head="competing_pmf", grid=4, epochs=1, d_model=8, hidden=(8,), progress=False,
                            device="cpu").fit(visits, outcomes)
    frame, whole = model.predict_distribution(visits, at="all")
    chunked_frame, chunked = model.predict_distribution(visits, at="all", batch_size=5)
    assert frame.equals(chunked_frame) and tuple(chunked.batch_shape) == (frame.height,)
    assert torch.allclose(chunked.cif(torch.tensor([200.0, 900.0])), whole.cif(torch.tensor([200.0, 900.0])),
                          atol=1e-6)


# ------------------------------------------------------------------------------- commands
def test_runner_maps_dashes_to_underscores(capsys):
    with pytest.raises(SystemExit) as exit_info:
        runner.main(["losses-quality", "--help"])
    assert exit_info.value.code == 0
    assert "python -m ehrseq.bench losses-quality" in capsys.readouterr().out
    assert runner.main(["no-such-benchmark"]) == 2


def _table(text: str, first_header: str) -> list[list[str]]:
    """Rows (cells) of the first Markdown table whose first header cell is ``first_header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _number(cell: str) -> float:
    return float(re.match(r"-?[0-9.]+", cell).group()) if re.match(r"-?[0-9.]+", cell) else math.nan


def test_piecewise_quick(tmp_path):
    piecewise.main(["--quick", "--out", str(tmp_path)])
    text = (tmp_path / "piecewise.md").read_text()
    static = {row[0]: row for row in _table(text, "head")}
    for kind in piecewise.KINDS:
        nll = _number(static[piecewise.LABELS[kind]][1])
        assert math.isfinite(nll) and nll > 0
    assert math.isfinite(_number(static["true Weibull model"][1]))
    sequences = {row[0]: row for row in _table(text.split("## Part 2", 1)[1], "head")}
    assert set(sequences) == {*(piecewise.LABELS[k] for k in piecewise.KINDS), "true model"}
    assert all(0 <= _number(row[2]) <= 1 for row in sequences.values() if row[2] != "–")
    assert (tmp_path / "piecewise_example.png").stat().st_size > 0
    assert "censor" in text and "differ" in text


def test_countdown_quick(tmp_path):
    countdown.main(["--quick", "--out", str(tmp_path)])
    text = (tmp_path / "countdown.md").read_text()
    for dataset in ("PBC", "NAFLD"):
        rows = {row[0]: row[1:] for row in _table(text.split(f"## {dataset}", 1)[1], "metric")}
        assert len(rows["CoV"]) == 4 and all(_number(c) > 0 for c in rows["CoV"])
        assert all(0 <= _number(c) <= 1 for c in rows["C-index"] + rows["mass beyond cap"] + rows["Survival-AUPRC"])
    assert "get a bound at age 100" in text and "Why our numbers differ" in text
    assert (tmp_path / "countdown_calibration.png").stat().st_size > 0


def test_multievent_quick(tmp_path):
    multievent.main(["--quick", "--out", str(tmp_path)])
    text = (tmp_path / "multievent.md").read_text()
    rows = {row[0]: row for row in _table(text, "model")}
    assert set(multievent.MODELS) <= set(rows)
    for name in multievent.MODELS:
        assert 0 <= _number(rows[name][1]) <= 1 and 0 <= _number(rows[name][2]) <= 1
        passed, tested = (int(x) for x in rows[name][4].split("/"))
        assert tested == 4 and 0 <= passed <= tested
    assert re.search(r"Observed onsets in the subsample: death \d+, diabetes \d+, htn \d+, stroke \d+", text)


def test_losses_quality_quick(tmp_path):
    losses_quality.main(["--quick", "--out", str(tmp_path)])
    text = (tmp_path / "losses_quality.md").read_text()
    simulated = text.split("## simulate()", 1)[1].split("## PBC", 1)[0]
    grid = {row[0]: row for row in _table(simulated, "objective")}
    assert {v.name for v in losses_quality.grid_variants()} | {"true model"} == set(grid)
    assert all(0 <= _number(row[1]) <= 1 for row in grid.values())
    visit = {row[0]: row for row in _table(text.split("## PBC", 1)[1].split("Visit-indexed head", 1)[1], "objective")}
    assert {v.name for v in losses_quality.visit_variants()} == set(visit)
    assert all(0 <= _number(row[1]) <= 1 for row in visit.values())
