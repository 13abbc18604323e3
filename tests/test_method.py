"""The default method's parts: the wide (linear) path, prediction at any time with sampled prediction
times, deep ensembles and the training budget in optimiser steps."""

import math

import numpy as np
import polars as pl
import pytest
import torch

import ehrseq
from ehrseq.data import SequenceBatch, sample_prediction_times, tensorize
from ehrseq.datasets import simulate
from ehrseq.errors import ConfigError
from ehrseq.models.encoders import EncoderConfig
from ehrseq.models.families import FAMILIES
from ehrseq.models.heads import HeadConfig
from ehrseq.models.model import (
    DynamicSurvivalModel,
    ModelConfig,
    code_history_at,
    first_records,
    linear_member_lr,
    new_code_terms,
)
from ehrseq.settings import EstimatorSettings
from ehrseq.train import Trainer

TINY = dict(n_models=1, d_model=8, hidden=(8,), grid=6, batch_size=16, progress=False, device="cpu", origin="zero")


@pytest.fixture(scope="module")
def cohort():
    sim = simulate(60, 7)
    return sim.visits, sim.outcomes


# ---------------------------------------------------------------------------------------------- wide path
def _model(wide=True, any_time=False, n_numeric=3, code_history=False, proportional=False):
    encoder = EncoderConfig(kind="gru", d_model=8, n_numeric=n_numeric, categorical_cardinalities=(4,),
                            code_vocab_size=6)
    head = HeadConfig(kind="logistic_hazard", grid=(0.0, 50.0, 100.0, 200.0), hidden=(8,), time_scale=100.0)
    config = ModelConfig(encoder=encoder, head=head, wide=wide, any_time=any_time, code_history=code_history,
                         proportional=proportional)
    return DynamicSurvivalModel(config).eval()


def _batch(generator, b=3, m=4, f=3):
    time = torch.cumsum(torch.rand(b, m, generator=generator) * 50 + 1, dim=1)
    return SequenceBatch(
        numeric=torch.randn(b, m, f, generator=generator), numeric_missing=torch.rand(b, m, f, generator=generator) < 0.2,
        categorical=torch.randint(2, 4, (b, m, 1), generator=generator),
        codes=torch.randint(0, 6, (b, m, 2), generator=generator), time=time,
        gap=torch.cat([torch.zeros(b, 1), time.diff(dim=1)], dim=1), mask=torch.ones(b, m, dtype=torch.bool),
        patient_index=torch.arange(b))


def test_a_fresh_wide_model_is_the_bias_and_the_wide_path_is_a_linear_model_of_the_current_visit():
    generator = torch.Generator().manual_seed(0)
    model = _model()
    batch = _batch(generator)
    raw = model(batch).raw
    # zero-initialised wide path and sequence-path output layer: every visit predicts the bias
    assert torch.allclose(raw, model.head.net[-1].bias.expand_as(raw))
    with torch.no_grad():
        model.wide.weight.normal_(generator=generator)
    raw = model(batch).raw
    # the sequence path zeroed: the prediction at visit m depends on visit m's inputs only ...
    earlier = batch.replace(numeric=batch.numeric.clone(), codes=batch.codes.clone(), categorical=batch.categorical.clone())
    earlier.numeric[:, :2] += 5.0
    earlier.codes[:, :2] = torch.randint(0, 6, earlier.codes[:, :2].shape, generator=generator)
    earlier.categorical[:, :2] = 3
    changed = model(earlier).raw
    assert torch.allclose(changed[:, 2:], raw[:, 2:], atol=1e-6) and not torch.allclose(changed[:, :2], raw[:, :2])
    # ... and is affine in its numeric values: equal steps give equal changes
    steps = [batch.replace(numeric=batch.numeric + k * torch.tensor([0.5, 0.0, 0.0])) for k in range(3)]
    outputs = [model(step).raw for step in steps]
    torch.testing.assert_close(outputs[2] - outputs[1], outputs[1] - outputs[0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(outputs[1], outputs[0])


@pytest.mark.parametrize("kind", ["logistic_hazard", "piecewise_constant_hazard", "piecewise_linear_hazard"])
def test_the_risk_direction_of_a_hazard_grid_head_scales_every_hazard_alike(kind):
    family = FAMILIES[kind]
    config = HeadConfig(kind=kind, grid=(0.0, 30.0, 100.0, 250.0), time_scale=80.0)
    generator = torch.Generator().manual_seed(2)
    raw = torch.randn(5, family.num_outputs(config), generator=generator, dtype=torch.float64)
    eta = torch.randn(5, 1, generator=generator, dtype=torch.float64)
    direction = family.risk_direction(config).double()
    grid = torch.tensor(config.grid, dtype=torch.float64)
    before, after = (family.distribution(r, config, grid) for r in (raw, raw + eta * direction))
    if kind == "logistic_hazard":  # the odds of every bin's hazard, exactly e^η
        torch.testing.assert_close(family.hazard_logit(raw + eta * direction, config) - family.hazard_logit(raw, config),
                                   eta.expand_as(raw))
        return
    # every hazard rate, inside the bins, at a knot and beyond the grid, e^η times the other's
    times = torch.tensor([1.0, 29.0, 30.0, 64.5, 180.0, 249.0, 400.0], dtype=torch.float64)
    ratio = after.log_hazard(times.expand(5, -1)) - before.log_hazard(times.expand(5, -1))
    torch.testing.assert_close(ratio, eta.expand_as(ratio))


def test_the_risk_direction_of_the_visit_hazard_is_its_logit_and_other_heads_have_none():
    plain, uncertain = (HeadConfig(kind="visit_hazard", hazard_uncertainty=flag) for flag in (False, True))
    family = FAMILIES["visit_hazard"]
    assert torch.equal(family.risk_direction(plain), torch.tensor([1.0]))
    assert torch.equal(family.risk_direction(uncertain), torch.tensor([1.0, 0.0]))  # not the logit's log-scale
    for kind in ("pmf", "piecewise_constant_density", "lognormal", "weibull", "competing_pmf"):
        config = HeadConfig(kind=kind, grid=(0.0, 1.0, 2.0)) if FAMILIES[kind].grid else HeadConfig(kind=kind)
        assert FAMILIES[kind].risk_direction(config) is None


def test_the_proportional_term_moves_every_output_by_one_linear_predictor_of_the_current_visit():
    generator = torch.Generator().manual_seed(3)
    model = _model(proportional=True)
    batch = _batch(generator)
    raw = model(batch).raw
    bias = model.head.net[-1].bias
    assert torch.allclose(raw, bias.expand_as(raw))  # zero-initialised like the rest of the linear path
    with torch.no_grad():
        model.proportional.weight.normal_(generator=generator)
    shift = model(batch).raw - bias
    # one linear predictor η per visit, added to every bin's hazard logit ...
    assert torch.allclose(shift, shift[..., :1].expand_as(shift), atol=1e-6) and shift.abs().max() > 0.1
    # ... read from that visit's inputs only, and affine in them
    earlier = batch.replace(numeric=batch.numeric.clone())
    earlier.numeric[:, :2] += 5.0
    changed = model(earlier).raw - bias
    assert torch.allclose(changed[:, 2:], shift[:, 2:], atol=1e-6) and not torch.allclose(changed[:, :2], shift[:, :2])
    steps = [model(batch.replace(numeric=batch.numeric + k * torch.tensor([0.5, 0.0, 0.0]))).raw for k in range(3)]
    torch.testing.assert_close(steps[2] - steps[1], steps[1] - steps[0], rtol=1e-4, atol=1e-5)


def test_the_proportional_term_is_saved_in_the_config_and_needs_the_linear_path_and_a_hazard_head():
    model = _model(proportional=True)
    values = model.config.to_dict()
    assert ModelConfig.from_dict(values).proportional
    del values["proportional"]  # a model saved before the term: loads without it
    assert not ModelConfig.from_dict(values).proportional
    with pytest.raises(ConfigError, match="needs wide=True"):
        ModelConfig(encoder=model.config.encoder, head=model.config.head, proportional=True)
    pmf = HeadConfig(kind="pmf", grid=(0.0, 50.0, 100.0), hidden=(8,))
    with pytest.raises(ConfigError, match="pmf head has no risk direction"):
        ModelConfig(encoder=model.config.encoder, head=pmf, wide=True, proportional=True)


def test_the_estimator_adds_the_proportional_term_to_hazard_heads(cohort):
    visits, outcomes = cohort
    fitted = ehrseq.DynamicSurvival(epochs=1, **TINY).fit(visits, outcomes)
    assert fitted.model_config_.proportional and fitted.model_.proportional is not None
    assert not ehrseq.DynamicSurvival(epochs=1, head="pmf", **TINY).fit(visits, outcomes).model_config_.proportional
    assert not ehrseq.DynamicSurvival(epochs=1, wide=False, **TINY).fit(visits, outcomes).model_config_.proportional


def test_first_records_keep_each_code_at_its_first_visit_only():
    codes = torch.tensor([[[2, 3], [3, 0], [4, 2], [5, 5]],
                          [[3, 3], [2, 0], [3, 4], [0, 0]]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    expected = torch.tensor([[[2, 3], [0, 0], [4, 0], [0, 0]],  # padding (the 4th visit) counts nothing
                             [[3, 0], [2, 0], [0, 4], [0, 0]]])  # a repeat within one visit counts once
    assert torch.equal(first_records(codes, mask), expected)


def test_the_code_history_term_sums_the_codes_recorded_so_far_each_once():
    codes = torch.tensor([[[2, 3], [3, 0], [4, 2]]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    weight = torch.zeros(6, 2)
    weight[2], weight[3], weight[4] = torch.tensor([1.0, -1.0]), torch.tensor([10.0, 0.0]), torch.tensor([100.0, 1.0])
    expected = torch.tensor([[[11.0, -1.0], [11.0, -1.0], [111.0, 0.0]]])
    assert torch.equal(new_code_terms(codes, mask, weight).cumsum(dim=1), expected)


@pytest.mark.parametrize(("factor", "elements"), [(8, 1 << 22), (8, 20), (0, 1 << 22)])
def test_the_code_history_at_selected_visits_equals_its_cumulative_sum_there(monkeypatch, factor, elements):
    """Codes repeated within and across visits, codes at padded visits, padding indices, several selections per
    patient and none for some: the sum at the selected visits equals the cumulative one gathered there (by the
    dense table in one block and in blocks of 2 rows, and by the sorted lists)."""
    from ehrseq.models import model as model_module

    monkeypatch.setattr(model_module, "_DENSE_VOCABULARY_FACTOR", factor)
    monkeypatch.setattr(model_module, "_PRESENCE_ELEMENTS", elements)
    generator = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 9, (6, 5, 4), generator=generator)
    codes[:, :, -1] = codes[:, :, 0]
    mask = torch.arange(5).unsqueeze(0) < torch.tensor([5, 3, 1, 4, 2, 5]).unsqueeze(1)
    weight = torch.randn(9, 3, generator=generator, dtype=torch.float64)
    weight[0] = 0.0
    cumulative = new_code_terms(codes, mask, weight).cumsum(dim=1)
    rows, positions = torch.tensor([0, 0, 1, 3, 5, 5, 5]), torch.tensor([4, 1, 2, 0, 0, 3, 4])
    torch.testing.assert_close(code_history_at(codes, mask, (rows, positions), weight), cumulative[rows, positions],
                               rtol=1e-12, atol=1e-12)
    assert code_history_at(codes, mask, (rows[:0], positions[:0]), weight).shape == (0, 3)
    assert torch.equal(code_history_at(codes[..., :0], mask, (rows, positions), weight), torch.zeros(7, 3, dtype=weight.dtype))


def test_the_distribution_at_a_few_visits_equals_the_per_visit_output_there():
    """distribution_at with one or two selections per patient (the code history at those visits only) gives the
    head outputs of the whole forward pass at those visits."""
    generator = torch.Generator().manual_seed(4)
    model = _model(code_history=True)
    with torch.no_grad():
        model.code_history.weight.normal_(generator=generator)
        model.code_history.weight[0] = 0.0
    batch = _batch(generator, b=4, m=5)
    raw = model(batch).raw
    for index in ((torch.arange(4), torch.tensor([4, 0, 2, 3])), (torch.tensor([1, 2]), torch.tensor([1, 4]))):
        horizons = torch.tensor([40.0, 150.0])
        torch.testing.assert_close(model.distribution_at(batch, index).risk(horizons),
                                   model.head.distribution(raw[index]).risk(horizons), rtol=1e-5, atol=1e-6)


def test_with_code_history_the_linear_path_reads_the_codes_recorded_so_far_and_nothing_later():
    generator = torch.Generator().manual_seed(1)
    model = _model(code_history=True)
    batch = _batch(generator)
    raw = model(batch).raw
    assert torch.allclose(raw, model.head.net[-1].bias.expand_as(raw))  # zero-initialised like the wide path
    with torch.no_grad():
        model.code_history.weight[1:].normal_(generator=generator)
    raw = model(batch).raw
    # a code first recorded at visit 1 (in a free slot) moves the predictions from visit 1 on, by its vector
    codes = torch.cat([torch.where(batch.codes == 5, 0, batch.codes), torch.zeros(3, 4, 1, dtype=torch.int64)], dim=2)
    base = batch.replace(codes=codes)
    later_codes = codes.clone()
    later_codes[:, 1, 2] = 5
    later_codes[:, 3, 2] = 5  # recorded again later: counted once
    before, after = model(base).raw, model(batch.replace(codes=later_codes)).raw
    assert torch.allclose(before[:, :1], after[:, :1], atol=1e-6)
    shift = after[:, 1:] - before[:, 1:]
    assert torch.allclose(shift, model.code_history.weight[5].expand_as(shift), atol=1e-5)
    # a saved configuration without the field loads with the term off; it needs the linear path and codes
    values = model.config.to_dict()
    assert ModelConfig.from_dict(values).code_history
    del values["code_history"]
    assert not ModelConfig.from_dict(values).code_history
    with pytest.raises(ConfigError, match="code_history"):
        ModelConfig(encoder=model.config.encoder, head=model.config.head, code_history=True)


def test_the_estimator_adds_the_code_history_when_the_tables_have_codes(cohort):
    visits, outcomes = cohort
    fitted = ehrseq.DynamicSurvival(epochs=1, **TINY).fit(visits, outcomes)
    assert fitted.model_config_.code_history == (fitted.model_config_.encoder.code_vocab_size > 0)
    assert fitted.model_config_.code_history
    plain = ehrseq.DynamicSurvival(epochs=1, wide=False, **TINY).fit(visits, outcomes)
    assert not plain.model_config_.code_history


def test_without_the_wide_path_the_head_reads_the_sequence_only():
    model = _model(wide=False)
    assert model.wide is None and model.head.net[-1].weight.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- any time
def _patient():
    """One patient: visits at days 0, 100 and 250, event at day 400; a second padded row (1 visit,
    censored at day 80)."""
    mask = torch.tensor([[True, True, True], [True, False, False]])
    time = torch.tensor([[0.0, 100.0, 250.0], [0.0, 0.0, 0.0]])
    return SequenceBatch(
        numeric=torch.zeros(2, 3, 0), numeric_missing=torch.zeros(2, 3, 0, dtype=torch.bool),
        categorical=torch.zeros(2, 3, 0, dtype=torch.int64), codes=torch.zeros(2, 3, 1, dtype=torch.int64),
        time=time, gap=torch.tensor([[0.0, 100.0, 150.0], [0.0, 0.0, 0.0]]), mask=mask,
        patient_index=torch.arange(2), remaining=torch.tensor([[400.0, 300.0, 150.0], [80.0, 1.0, 1.0]]),
        event=torch.tensor([1, 0]), event_visit=torch.tensor([2, 0]), bin=torch.tensor([[3, 3, 2], [1, -1, -1]]),
        upper=torch.full((2, 3), float("inf")))


def test_sampled_prediction_times_lie_before_the_next_visit_and_the_outcome_with_landmark_targets():
    batch = _patient()
    cuts = torch.tensor([0.0, 50.0, 100.0, 200.0, 500.0], dtype=torch.float64)
    window = torch.tensor([[100.0, 150.0, 150.0], [80.0, 0.0, 0.0]])  # to the next visit; the last: to the outcome
    generator = torch.Generator().manual_seed(0)
    draws = [sample_prediction_times(batch, generator, cuts=cuts, share=0.5) for _ in range(400)]
    elapsed = torch.stack([d.elapsed for d in draws])
    real = batch.mask
    assert torch.all(elapsed[:, ~real] == 0)
    assert torch.all(elapsed[:, real] < window[real]) and torch.all(elapsed >= 0)
    moved = (elapsed[:, real] > 0).float().mean()
    assert 0.4 < moved < 0.6  # about half of the targets move
    share_of_window = (elapsed[:, real] / window[real])[elapsed[:, real] > 0]
    assert 0.45 < share_of_window.mean() < 0.55  # uniform over the window
    for d in draws[:50]:
        assert torch.equal(d.remaining[real], batch.remaining[real] - d.elapsed[real])  # the landmark target
        assert torch.equal(d.event, batch.event) and torch.isinf(d.upper).all()
        expected_bins = torch.searchsorted(cuts, d.remaining[real].double(), right=False) - 1
        assert torch.equal(d.bin[real], expected_bins) and torch.equal(d.bin[~real], batch.bin[~real])
    # reproducible from the seed; share 0 leaves the batch's targets as they were
    again = sample_prediction_times(batch, torch.Generator().manual_seed(0), cuts=cuts)
    assert torch.equal(again.elapsed, draws[0].elapsed)
    still = sample_prediction_times(batch, generator, cuts=cuts, share=0.0)
    assert torch.all(still.elapsed == 0) and torch.equal(still.remaining, batch.remaining)
    assert torch.equal(still.bin, batch.bin)


def test_before_entry_a_visit_is_history_and_its_target_moves_to_entry_or_later():
    """Left truncation: patient 0 (visits at days 0, 100, 250, event at 400) entered the risk set at day 150."""
    batch = _patient().replace(entry=torch.tensor([150.0, 0.0]))
    # without prediction times, the visits before entry are no targets; the padded visits never are
    assert torch.equal(batch.targets, torch.tensor([[False, False, True], [True, False, False]]))
    cuts = torch.tensor([0.0, 50.0, 100.0, 200.0, 1000.0], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    draws = [sample_prediction_times(batch, generator, cuts=cuts, share=0.5) for _ in range(400)]
    elapsed = torch.stack([d.elapsed[0] for d in draws])
    # visit 0: its next visit (day 100) is before entry too, so it stays history only
    assert torch.all(elapsed[:, 0] == 0) and not any(bool(d.targets[0, 0]) for d in draws)
    # visit 1: a prediction time between entry (50 days on) and the next visit (150 days on), at entry
    # itself for the targets that are not moved: the landmark target at entry, R − e
    assert torch.all((elapsed[:, 1] >= 50.0) & (elapsed[:, 1] < 150.0))
    assert 0.4 < (elapsed[:, 1] == 50.0).float().mean() < 0.6
    assert all(bool(d.targets[0, 1]) and d.remaining[0, 1] == 300.0 - d.elapsed[0, 1] for d in draws)
    # visit 2 (after entry) as without entry
    assert torch.all(elapsed[:, 2] < 150.0) and 0.4 < (elapsed[:, 2] == 0).float().mean() < 0.6


@pytest.mark.parametrize("terms", ["nll", "crps", "focal", "calibration", "ranking_at_last_visit"])
def test_a_target_before_entry_does_not_enter_the_objective(terms):
    from ehrseq.objective import Objective, ObjectiveConfig

    model = _model(n_numeric=0)
    with torch.no_grad():
        model.head.net[-1].weight.normal_(generator=torch.Generator().manual_seed(0))
    batch = _patient().replace(entry=torch.tensor([150.0, 0.0]), weight=torch.ones(2),
                               categorical=torch.full((2, 3, 1), 2, dtype=torch.int64))
    spec = {"ranking": {"horizon": 100.0}} if terms == "ranking_at_last_visit" else terms  # the last visit is after entry
    objective = Objective(ObjectiveConfig.parse(spec), model.config, 2.0)
    output = model(batch)
    loss = objective(output, batch).total
    other = batch.replace(bin=torch.tensor([[0, 1, 2], [1, -1, -1]]),  # other targets before entry
                          remaining=torch.tensor([[30.0, 80.0, 150.0], [80.0, 1.0, 1.0]]))
    assert torch.equal(objective(output, other).total, loss)
    if terms != "ranking_at_last_visit":
        without_entry = objective(output, other.replace(entry=None)).total
        assert not torch.equal(without_entry, objective(output, batch.replace(entry=None)).total)


def test_a_landmark_prediction_reads_the_time_elapsed_since_the_visit(cohort):
    visits, outcomes = cohort
    model = ehrseq.DynamicSurvival(epochs=2, **TINY).fit(visits, outcomes, validation=None)
    assert model.model_config_.any_time and model.model_config_.wide
    s, horizon = 300.0, 200.0
    risk = model.predict_risk(visits, horizon, landmark=s)
    # the same prediction by hand: the last visit at or before s, with e = s − v read by the head
    cohort_ = model.cohort(visits)
    data = tensorize(cohort_, model.features_, None)
    rows = np.flatnonzero(np.isin(cohort_.patients["patient_id"].to_numpy(), risk["patient_id"].to_numpy()))
    batch = data.batch(rows)
    visit_days = batch.time.numpy()
    position = (np.where(batch.mask.numpy(), visit_days, np.inf) <= s).sum(axis=1) - 1
    index = (torch.arange(len(rows)), torch.as_tensor(position))
    elapsed = torch.as_tensor(s - visit_days[np.arange(len(rows)), position], dtype=torch.float32)
    with torch.no_grad():
        expected = model.model_.distribution_at(batch, index, elapsed=elapsed).risk(torch.tensor([horizon]))[:, 0]
    by_id = dict(zip(cohort_.patients["patient_id"].to_numpy()[rows], expected.numpy()))
    np.testing.assert_allclose(risk["risk"].to_numpy(), [by_id[p] for p in risk["patient_id"].to_numpy()],
                               rtol=1e-5, atol=1e-6)
    # the elapsed time matters, and its offset is not applied twice
    with torch.no_grad():
        at_visit = model.model_.distribution_at(batch, index).risk(torch.tensor([horizon]))[:, 0]
    assert not np.allclose(at_visit.numpy(), expected.numpy())
    frame, distribution = model.predict_distribution(visits, landmark=s)
    assert (frame["offset"] == 0).all()


def test_any_time_is_refused_where_it_has_no_meaning(cohort):
    with pytest.raises(ConfigError, match="any_time"):
        ehrseq.DynamicSurvival(head="visit_hazard", any_time=True, epochs=1, **TINY).fit(*cohort, validation=None)
    with pytest.raises(ConfigError, match="no elapsed-time input"):
        _model(any_time=False).distribution_at(_batch(torch.Generator().manual_seed(1)),
                                               (torch.tensor([0]), torch.tensor([0])), elapsed=torch.tensor([1.0]))
    with pytest.raises(ConfigError, match="any_time must be"):
        ehrseq.DynamicSurvival(any_time="sometimes")


# ---------------------------------------------------------------------------------------------- ensembles
def test_an_ensemble_averages_its_members_and_saves_loads_and_scores_as_one_model(cohort, tmp_path):
    visits, outcomes = cohort
    model = ehrseq.DynamicSurvival(epochs=2, **{**TINY, "n_models": 3}).fit(visits, outcomes)
    members = model.model_.members
    assert len(members) == 3
    weights = [m.head.net[0].weight for m in members]
    assert not torch.allclose(weights[0], weights[1])  # members differ (seeds and validation splits)
    times = [50.0, 200.0, 600.0]
    survival = model.predict_survival(visits, times)
    cohort_ = model.cohort(visits)
    data = tensorize(cohort_, model.features_, None)
    batch = data.batch(np.arange(cohort_.n_patients))
    index = (torch.arange(batch.batch_size), batch.lengths - 1)
    with torch.no_grad():
        curves = torch.stack([m.eval().distribution_at(batch, index, elapsed=torch.zeros(batch.batch_size))
                              .survival(torch.tensor(times)) for m in members]).mean(dim=0)
    ids = cohort_.patients["patient_id"].to_numpy()
    expected = pl.DataFrame({"patient_id": np.repeat(ids, 3), "horizon": np.tile(times, ids.size),
                             "expected": curves.numpy().reshape(-1)})
    joined = survival.join(expected, on=["patient_id", "horizon"])
    assert joined.height == survival.height
    np.testing.assert_allclose(joined["survival"], joined["expected"], rtol=1e-5, atol=1e-6)

    loaded = ehrseq.load(model.save(tmp_path / "ensemble"))
    assert loaded.predict_survival(visits, times).equals(survival)
    visits.write_parquet(tmp_path / "visits.parquet")
    ehrseq.score(tmp_path / "ensemble", tmp_path / "visits.parquet", tmp_path / "scores", times, progress=False)
    scored = pl.read_parquet(tmp_path / "scores" / "visits.parquet").sort("patient_id", "horizon")
    risk = loaded.predict_risk(visits, times).sort("patient_id", "horizon")
    np.testing.assert_allclose(scored["risk"], risk["risk"], rtol=1e-5, atol=1e-6)
    # the ensemble's median is where the average curve crosses 1/2
    median = loaded.predict_median(visits).sort("patient_id")["median_remaining"].to_numpy()
    finite = np.isfinite(median)
    assert finite.any()
    with torch.no_grad():
        at_median = torch.stack([m.distribution_at(batch, index, elapsed=torch.zeros(batch.batch_size))
                                 .survival(torch.as_tensor(np.where(finite, median, 0.0), dtype=torch.float32)[:, None])
                                 for m in members]).mean(dim=0)[:, 0]
    order = np.argsort(ids)
    np.testing.assert_allclose(at_median.numpy()[order][finite], 0.5, atol=1e-3)


def test_ensembles_of_heads_without_one_survival_curve_in_days_are_refused(cohort):
    with pytest.raises(ConfigError, match="ensemble"):
        ehrseq.DynamicSurvival(head="visit_hazard", epochs=1, **{**TINY, "n_models": 2}).fit(*cohort, validation=None)
    with pytest.raises(ConfigError, match="n_models must be"):
        ehrseq.DynamicSurvival(n_models=0)


# ---------------------------------------------------------------------------------------------- step budget
@pytest.mark.parametrize(("steps_per_epoch", "expected"), [(2, (500, 80)), (20, (50, 8)), (400, (10, 8))])
def test_the_step_budget_sets_epochs_and_patience(steps_per_epoch, expected):
    """The longer of 1,000 steps and 10 epochs; patience in fiftieths of runs longer than 50 epochs."""
    settings = EstimatorSettings(steps=1000, patience=8)
    assert settings.training_length(steps_per_epoch) == expected
    assert settings.trainer(steps_per_epoch).epochs == expected[0]
    assert EstimatorSettings(epochs=7, patience=3).training_length(steps_per_epoch) == (7, 3)
    assert EstimatorSettings(steps=1000, patience=None).training_length(steps_per_epoch)[1] is None
    assert EstimatorSettings(steps=1000, min_epochs=1).training_length(400) == (3, 8)


def test_auto_ensembles_small_cohorts_of_single_event_heads_in_days(monkeypatch):
    monkeypatch.setattr(ehrseq.settings, "AUTO_ENSEMBLE", 5)  # the tests' default is one model (conftest)
    settings = EstimatorSettings()
    assert settings.n_models == "auto"
    single, competing = FAMILIES.get("logistic_hazard"), FAMILIES.get("competing_pmf")
    assert settings.n_models_for(single, 9_999) == 5 and settings.n_models_for(single, 10_000) == 1
    assert settings.n_models_for(competing, 100) == 1
    assert EstimatorSettings(n_models=3).n_models_for(single, 10**6) == 3
    with pytest.raises(ConfigError, match="n_models"):
        EstimatorSettings(n_models="many")


def test_an_auto_ensemble_is_fitted_saved_and_loaded_as_one_model(cohort, tmp_path, monkeypatch):
    monkeypatch.setattr(ehrseq.settings, "AUTO_ENSEMBLE", 5)
    monkeypatch.setattr(ehrseq.settings, "AUTO_LINEAR_PER_NETWORK", 1)
    visits, outcomes = cohort  # 60 patients: five networks and five linear members
    model = ehrseq.DynamicSurvival(epochs=1, **{**TINY, "n_models": "auto"}).fit(visits, outcomes)
    config = model.model_config_
    assert (config.n_models, config.linear_members) == (10, 5) and model.get_params()["n_models"] == "auto"
    model.save(tmp_path / "m")
    loaded = ehrseq.DynamicSurvival.load(tmp_path / "m")
    assert (loaded.model_config_.n_models, loaded.model_config_.linear_members) == (10, 5)
    assert loaded.predict_risk(visits, 100.0).equals(model.predict_risk(visits, 100.0))


def test_auto_linear_members_match_the_networks_of_an_auto_ensemble(monkeypatch):
    monkeypatch.setattr(ehrseq.settings, "AUTO_LINEAR_PER_NETWORK", 1)
    single, competing = FAMILIES.get("logistic_hazard"), FAMILIES.get("competing_pmf")
    assert EstimatorSettings().linear_members_for(single, 5) == 5
    assert EstimatorSettings().linear_members_for(single, 1) == 1  # a large cohort: one network, one linear model
    assert EstimatorSettings().linear_members_for(competing, 1) == 0  # curves that are not averaged
    assert EstimatorSettings(n_models=3).linear_members_for(single, 3) == 0  # an explicit ensemble: networks only
    assert EstimatorSettings(n_models=3, linear_members=2).linear_members_for(single, 3) == 2
    for bad in (-1, True, "some", 1.5):
        with pytest.raises(ConfigError, match="linear_members must be"):
            EstimatorSettings(linear_members=bad)


def test_linear_members_are_the_linear_model_of_the_same_inputs_trained_faster(cohort, tmp_path, monkeypatch):
    """The last members read the current visit's embedding (no sequence model, no sinusoids of the visit time)
    through a head without hidden layers, beside the same linear path; they are trained at lr ≥ 1e-2, saved and
    loaded with the networks, and the ensemble's curve is the average of all members'. The floor is 1e-2 up to the
    default width and falls as 64 / d_model above it (:func:`~ehrseq.models.model.linear_member_lr`)."""
    visits, outcomes = cohort
    seen = []
    original = Trainer.__init__

    def record(self, config=None):
        seen.append(config.lr)
        original(self, config)

    monkeypatch.setattr(Trainer, "__init__", record)
    model = ehrseq.DynamicSurvival(epochs=2, lr=2e-3, **{**TINY, "n_models": 2, "linear_members": 1}).fit(visits, outcomes)
    assert seen == [2e-3, 2e-3, 1e-2]  # the linear member: max(lr, 1e-2)
    seen.clear()
    ehrseq.DynamicSurvival(epochs=1, lr=3e-2, **{**TINY, "n_models": 1, "linear_members": 1}).fit(visits, outcomes)
    assert seen == [3e-2, 3e-2]  # a floor, not a factor
    seen.clear()
    ehrseq.DynamicSurvival(epochs=1, lr=1e-3, **{**TINY, "d_model": 128, "n_models": 1, "linear_members": 1}).fit(
        visits, outcomes)
    assert seen == [1e-3, 5e-3]  # a wider embedding: the floor scaled by 64 / d_model
    assert [linear_member_lr(d) for d in (8, 64, 128, 256)] == [1e-2, 1e-2, 5e-3, 2.5e-3]  # never above 1e-2

    network, *_, linear = model.model_.members
    assert len(model.model_.members) == 3 and model.model_config_.linear_members == 1
    assert type(network.encoder).__name__ == "RecurrentEncoder" and network.wide is not None
    assert type(linear.encoder).__name__ == "LandmarkEncoder" and linear.wide is not None
    assert len(linear.head.net) == 1 and linear.encoder.embedding.time_encoding.output_dim == 1
    times = [50.0, 200.0]
    cohort_ = model.cohort(visits)
    batch = tensorize(cohort_, model.features_, None).batch(np.arange(cohort_.n_patients))
    index = (torch.arange(batch.batch_size), batch.lengths - 1)
    weights = torch.tensor(model.model_config_.member_weights())
    assert weights.tolist() == pytest.approx([(1 - model.model_config_.linear_weight) / 2] * 2
                                             + [model.model_config_.linear_weight])
    with torch.no_grad():
        curves = torch.stack([m.eval().distribution_at(batch, index, elapsed=torch.zeros(batch.batch_size))
                              .survival(torch.tensor(times)) for m in model.model_.members])
        together = model.model_.distribution_at(batch, index, elapsed=torch.zeros(batch.batch_size))
    torch.testing.assert_close(together.survival(torch.tensor(times)), (weights[:, None, None] * curves).sum(dim=0),
                               rtol=1e-5, atol=1e-6)
    loaded = ehrseq.load(model.save(tmp_path / "mixed"))
    assert loaded.predict_survival(visits, times).equals(model.predict_survival(visits, times))
    visits.write_parquet(tmp_path / "visits.parquet")
    ehrseq.score(tmp_path / "mixed", tmp_path / "visits.parquet", tmp_path / "scores", times, progress=False)
    scored = pl.read_parquet(tmp_path / "scores" / "visits.parquet").sort("patient_id", "horizon")
    np.testing.assert_allclose(scored["risk"], model.predict_risk(visits, times).sort("patient_id", "horizon")["risk"],
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="linear_members must be an int in"):
        ModelConfig.from_dict({**model.model_config_.to_dict(), "linear_members": 3})


def test_a_diverging_member_is_named_with_its_learning_rate(cohort, monkeypatch):
    """A non-finite training loss stays a FloatingPointError (``ehrseq.tune`` fails the trial on it), and says which
    member of the ensemble diverged at which rate: a linear member's is the floor, not the ``lr`` the user set."""
    visits, outcomes = cohort
    original = Trainer.fit

    def diverging_linear_member(self, *args, **kwargs):
        if self.config.lr == 1e-2:
            raise FloatingPointError("non-finite loss (inf) at epoch 1; parts: {}. Lower the learning rate or check "
                                     "the inputs.")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", diverging_linear_member)
    with pytest.raises(FloatingPointError, match=r"^member 2 of 2 of the ensemble \(a linear member\), trained at lr "
                                                 r"0\.01; linear members train at max\(lr, 0\.01\) \(linear_members=0 "
                                                 r"leaves them out\): non-finite loss \(inf\) at epoch 1"):
        ehrseq.DynamicSurvival(epochs=1, lr=2e-3, **{**TINY, "n_models": 1, "linear_members": 1}).fit(visits, outcomes)


def test_a_small_cohort_trains_for_the_step_budget(cohort):
    visits, outcomes = cohort
    model = ehrseq.DynamicSurvival(steps=30, min_epochs=1, patience=None, **TINY).fit(visits, outcomes, validation=None)
    # 60 patients in batches of 16: 4 steps per epoch, 30 steps → 8 epochs
    assert len(model.history_.records) == 8


def test_the_same_data_on_another_clock_unit_give_the_same_predictions(cohort):
    """The clock's unit is read from the data (the median remaining time is the model's 1,000 days): weeks
    written as days, times × 7, give the same model and the same risks at the same horizons."""
    visits, outcomes = cohort
    settings = dict(TINY, epochs=3, n_models=1, seed=3)
    days = ehrseq.DynamicSurvival(**settings).fit(visits, outcomes)
    scaled_visits = visits.with_columns(pl.col("time") * 7.0)
    scaled_outcomes = outcomes.with_columns(pl.col("time") * 7.0)
    weeks = ehrseq.DynamicSurvival(**settings).fit(scaled_visits, scaled_outcomes)
    assert weeks.features_.time_unit == pytest.approx(7 * days.features_.time_unit)
    assert weeks.model_config_.encoder.time_unit == pytest.approx(7 * days.model_config_.encoder.time_unit)
    horizon = float(outcomes["time"].median())
    expected = days.predict_risk(visits, horizon, landmark=horizon / 2)
    got = weeks.predict_risk(scaled_visits, 7 * horizon, landmark=7 * horizon / 2)
    risk_columns = [c for c in expected.columns if c.startswith("risk")]
    assert risk_columns
    for column in risk_columns:
        np.testing.assert_allclose(got[column].to_numpy(), expected[column].to_numpy(), atol=1e-4)


# ---------------------------------------------------------------------------------------------- linear weight
def _mixture_log_likelihood(splits, w):
    """Σ over splits and visits of log[(1 − w) mean_k exp ℓ_net + w mean_j exp ℓ_lin], term by term."""
    total = 0.0
    for net, lin in splits:
        for v in range(len(net[0])):
            network = sum(math.exp(row[v]) for row in net) / len(net)
            linear = sum(math.exp(row[v]) for row in lin) / len(lin)
            total += math.log((1 - w) * network + w * linear) if (1 - w) * network + w * linear > 0 else -math.inf
    return total


def test_the_linear_weight_maximises_the_held_out_likelihood_of_the_mixture():
    from ehrseq.models.ensemble import LINEAR_WEIGHT_GRID, linear_weight_by_likelihood

    good, bad = 0.0, -30.0
    # the networks explain three visits, the linear member one: L(w) ∝ (1 − w)³ w, largest at w = 1/4
    one = [(np.array([[good, good, good, bad]]), np.array([[bad, bad, bad, good]]))]
    assert linear_weight_by_likelihood(one) == 0.25
    # a second split the networks explain: (1 − w)⁷ w, whose largest value on the grid is at 0.15 (1/8 between)
    two = one + [(np.array([[good] * 4]), np.array([[bad] * 4]))]
    assert linear_weight_by_likelihood(two) == 0.15
    assert linear_weight_by_likelihood([(np.array([[bad, bad]]), np.array([[good, good]]))]) == 1.0
    assert linear_weight_by_likelihood([(np.array([[good, good]]), np.array([[bad, bad]]))]) == 0.0
    # several members of a kind on one split enter through the mean of their likelihoods; random values agree
    # with the term-by-term definition
    rng = np.random.default_rng(0)
    for _ in range(20):
        splits = [(rng.normal(-1, 1, (rng.integers(1, 3), n)), rng.normal(-1, 1, (rng.integers(1, 3), n)))
                  for n in rng.integers(1, 6, size=rng.integers(1, 4))]
        brute = max(LINEAR_WEIGHT_GRID, key=lambda w: _mixture_log_likelihood(splits, w))
        assert linear_weight_by_likelihood(splits) == brute
    with pytest.raises(ConfigError, match="same visits"):
        linear_weight_by_likelihood([(np.zeros((1, 3)), np.zeros((1, 2)))])
    with pytest.raises(ConfigError, match="at least one"):
        linear_weight_by_likelihood([])


def test_the_linear_weight_is_chosen_on_the_patients_the_members_held_out(cohort, tmp_path, monkeypatch):
    """Linear member j is validated on network j's patients; the choice reads each member's log-likelihood of
    those patients' visits (log S(R) of a visit censored after R), and its share weighs the ensemble's average."""
    import ehrseq.estimator as estimator
    from ehrseq.data import split_patients

    visits, outcomes = cohort
    seen = []
    chosen = estimator.linear_weight_by_likelihood
    monkeypatch.setattr(estimator, "linear_weight_by_likelihood", lambda splits: seen.append(splits) or chosen(splits))
    model = ehrseq.DynamicSurvival(epochs=2, **{**TINY, "n_models": 2, "linear_members": 2, "origin": "zero"}
                                   ).fit(visits, outcomes)
    [splits] = seen
    cohort_ = model.cohort(visits, outcomes)
    assert len(splits) == 2
    for j, (networks, linear) in enumerate(splits):
        _, val = split_patients(cohort_, (0.85, 0.15), seed=j)
        assert networks.shape == linear.shape == (1, val.n_visits)
        # the censored visits of the linear member j, recomputed through the public prediction
        member = ehrseq.DynamicSurvival(**TINY)
        member.__dict__.update(features_=model.features_, grid_=model.grid_, reach_=model.reach_,
                               model_config_=model.model_config_.member(2 + j), model_=model.model_.members[2 + j])
        ids = val.patients["patient_id"].to_list()
        mine = visits.filter(pl.col("patient_id").is_in(ids))
        remaining = val.visits["remaining"].to_numpy().copy()
        censored = ~val.patients["event"].to_numpy().astype(bool)[val.visits["patient_index"].to_numpy()]
        survival = member.predict_survival(mine, remaining, at="all").sort("patient_id", "visit_time", "horizon")
        table = survival["survival"].to_numpy().reshape(val.n_visits, val.n_visits)  # visits × sorted horizons
        own = table[np.arange(val.n_visits), np.searchsorted(np.sort(remaining), remaining)]  # S(R) of each visit
        assert censored.sum() > 5
        np.testing.assert_allclose(linear[0][censored], np.log(own)[censored], rtol=1e-4, atol=1e-5)
    assert model.model_config_.linear_weight == chosen(splits)
    loaded = ehrseq.load(model.save(tmp_path / "weighed"))
    assert loaded.model_config_.linear_weight == model.model_config_.linear_weight
    # a weight given is used as given; without validation patients the members weigh alike
    fixed = ehrseq.DynamicSurvival(epochs=1, **{**TINY, "n_models": 1, "linear_members": 1, "linear_weight": 0.0}
                                   ).fit(visits, outcomes)
    assert fixed.model_config_.member_weights() == [1.0, 0.0]
    alone = ehrseq.DynamicSurvival(**TINY)
    alone.__dict__.update(features_=fixed.features_, grid_=fixed.grid_, reach_=fixed.reach_,
                          model_config_=fixed.model_config_.member(0), model_=fixed.model_.members[0])
    assert fixed.predict_risk(visits, 100.0).equals(alone.predict_risk(visits, 100.0))
    unvalidated = ehrseq.DynamicSurvival(epochs=1, **{**TINY, "n_models": 1, "linear_members": 1}
                                         ).fit(visits, outcomes, validation=None)
    assert unvalidated.model_config_.linear_weight is None and unvalidated.model_config_.member_weights() == [0.5, 0.5]
    for bad in (-0.1, 1.5, True, "half"):
        with pytest.raises(ConfigError, match="linear_weight must be"):
            EstimatorSettings(linear_weight=bad)
    with pytest.raises(ConfigError, match="linear_weight must be None or a number"):
        ModelConfig.from_dict({**model.model_config_.to_dict(), "linear_members": 0, "n_models": 2})


def test_with_a_horizon_the_last_visits_prediction_time_does_not_depend_on_the_patients_own_outcome():
    """Two one-visit patients, one dying at day 100, one censored at day 1,000. Drawn up to the outcome
    (no horizon), the one dying early gets ten times as many targets at every elapsed time e < 100 as the
    other: the patients at risk at e are not weighed alike and the risk at a landmark is over-predicted. With
    a horizon h the last visit's prediction time is exponential of mean h for every patient and is no target
    when it falls at or after the outcome: both patients are drawn alike at every e < 100."""
    mask = torch.ones(2, 1, dtype=torch.bool)
    batch = SequenceBatch(
        numeric=torch.zeros(2, 1, 0), numeric_missing=torch.zeros(2, 1, 0, dtype=torch.bool),
        categorical=torch.zeros(2, 1, 0, dtype=torch.int64), codes=torch.zeros(2, 1, 0, dtype=torch.int64),
        time=torch.zeros(2, 1), gap=torch.zeros(2, 1), mask=mask, patient_index=torch.arange(2),
        remaining=torch.tensor([[100.0], [1000.0]]), event=torch.tensor([1, 0]), event_visit=torch.tensor([0, 0]))
    generator = torch.Generator().manual_seed(0)

    def early_targets(horizon, n=4000):
        draws = [sample_prediction_times(batch, generator, horizon=horizon) for _ in range(n)]
        elapsed = torch.stack([d.elapsed[:, 0] for d in draws])
        kept = torch.stack([d.targets[:, 0] for d in draws])
        for d in draws[:100]:
            assert torch.all(d.remaining[d.targets] > 0)
            assert torch.equal(d.remaining, batch.remaining - d.elapsed)
        return ((elapsed > 0) & (elapsed < 100.0) & kept).sum(dim=0).float(), kept

    outcome_bound, kept = early_targets(None)
    assert kept.all() and 8 < outcome_bound[0] / outcome_bound[1] < 12  # 1/100 against 1/1,000 per day
    independent, kept = early_targets(300.0)
    assert 0.85 < independent[0] / independent[1] < 1.15
    # the share of moved draws kept: 1 − exp(−R/h) (0.28 for R = 100, 0.96 for R = 1,000), at rate 1/2
    moved_and_dropped = (~kept).float().mean(dim=0)
    assert abs(moved_and_dropped[0] - 0.5 * math.exp(-100 / 300)) < 0.03
    assert abs(moved_and_dropped[1] - 0.5 * math.exp(-1000 / 300)) < 0.01
    # a last visit before entry: its draws start at entry, and a dropped draw is left at entry (never before it)
    late = batch.replace(entry=torch.tensor([50.0, 0.0]))
    for _ in range(200):
        d = sample_prediction_times(late, generator, horizon=300.0)
        assert d.elapsed[0, 0] >= 50.0 and d.remaining[0, 0] == 100.0 - d.elapsed[0, 0]
        if d.dropped[0, 0]:
            assert d.elapsed[0, 0] == 50.0 and not d.targets[0, 0]
