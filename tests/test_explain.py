"""Integrated-gradients explanations: exact on a hand-built linear model, complete on a trained GRU,
consistent with the model's own predictions."""

import numpy as np
import polars as pl
import pytest
import torch
from torch import nn

import ehrseq
from ehrseq.data import tensorize
from ehrseq.datasets import load_pbcseq, simulate
from ehrseq.errors import ConfigError
from ehrseq.explain import explain
from ehrseq.models.distributions.base import SurvivalDistribution
from ehrseq.models.encoders.embedding import VisitEmbedding

HORIZON = 365.0


@pytest.fixture(scope="module")
def small():
    """A GRU fitted for one epoch on simulated visits with numeric, categorical and code inputs."""
    data = simulate(30, 0)
    model = ehrseq.DynamicSurvival(d_model=8, hidden=(8,), grid=5, epochs=1, seed=0, progress=False)
    return model.fit(data.visits, data.outcomes, validation=None), data


def test_assembled_parts_are_the_visit_embedding(small):
    model, data = small
    batch = tensorize(model.cohort(data.visits), model.features_, None).batch(list(range(10)))
    embedding = model.model_.encoder.embedding.eval()
    parts = embedding.parts(batch)
    assembled = embedding.normalise(embedding.sum_parts(parts))
    torch.testing.assert_close(assembled, embedding(batch), rtol=1e-5, atol=1e-5)
    sums = embedding.sum_parts(parts)
    torch.testing.assert_close(sums, embedding.sums(batch), rtol=1e-5, atol=1e-5)
    with embedding.replaced(sums * 0):
        assert torch.all(embedding.sums(batch) == 0)
        torch.testing.assert_close(embedding(batch), embedding.normalise(sums * 0))
    assert torch.equal(embedding(batch), embedding(batch))


def _documented_baseline(embedding, parts, time_columns, history_columns=()):
    """The level view's x' as the module docstring defines it: values 0 and flagged missing (time features
    and measurement history 0, never missing), the most frequent level (index 2) of every categorical
    column, no codes, visits at the origin without a gap."""
    missing = torch.ones_like(parts["missing"])
    missing[..., [*time_columns, *history_columns]] = 0.0
    modes = embedding.categorical[embedding.categorical_offsets + 2].detach()
    zero = torch.zeros(parts["time"].shape[:2])
    return {"values": torch.zeros_like(parts["values"]), "missing": missing,
            "categorical": modes.expand_as(parts["categorical"]),
            "codes": embedding.no_codes.detach().expand_as(parts["codes"]),
            "time": embedding.time_parts(zero, zero, torch.ones(zero.shape, dtype=torch.bool)).detach()}


class _Linear(SurvivalDistribution):
    """Risk by HORIZON equal to a score (S(u) = 1 − score·u/HORIZON on [0, HORIZON])."""

    batched_fields = ("score",)

    def __init__(self, score):
        self.score = score

    @property
    def batch_shape(self):
        return self.score.shape

    def log_survival(self, u):
        u = self._durations(u)
        return torch.log1p(-self.score.unsqueeze(-1) * u.clamp(max=HORIZON) / HORIZON)

    def log_density(self, u):
        u = self._durations(u)
        return torch.log(self.score.unsqueeze(-1) / HORIZON).expand_as(u)


class _LinearEmbedding(VisitEmbedding):
    """The parts of a visit concatenated, without normalisation: a linear map of the parts."""

    def sum_parts(self, parts):
        return torch.cat([parts["values"], parts["missing"], parts["categorical"].flatten(-2), parts["codes"],
                          parts["time"]], dim=-1)

    def normalise(self, sums):
        return sums

    def forward(self, batch, check_values=True):
        if self._replacement is not None:
            return self._replacement
        return self.sum_parts(self.parts(batch))


class _LinearModel(nn.Module):
    """score_m = c + Σ_{j ≤ m} ⟨w, parts_j⟩: the risk at visit m is linear in every input of visits ≤ m."""

    def __init__(self, embedding, width):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.embedding = embedding
        self.weight = nn.Parameter(torch.randn(width, dtype=torch.float64) * 0.002)

    def distribution_at(self, batch, index, check_values=True):
        score = 0.3 + torch.cumsum(self.encoder.embedding(batch).double() @ self.weight, dim=1)
        return _Linear(score[index])


def test_attributions_of_a_linear_model_are_its_known_contributions(small):
    model, data = small
    real = model.model_.encoder.embedding
    embedding = _LinearEmbedding(real.config)
    embedding.load_state_dict(real.state_dict())
    embedding.eval()
    cohort = model.cohort(data.visits)
    batch = tensorize(cohort, model.features_, None).batch(list(range(cohort.n_patients)))
    with torch.no_grad():
        parts = embedding.parts(batch)
    width = embedding.sum_parts(parts).shape[-1]
    torch.manual_seed(0)
    linear = _LinearModel(embedding, width)
    model.model_, original = linear, model.model_
    try:
        explanation = explain(model, data.visits, HORIZON, n_steps=8)
        changes = explain(model, data.visits, HORIZON, n_steps=8, view="change")
    finally:
        model.model_ = original

    # known contributions: w · (x − x') per input group, x' the documented baseline
    names = model.features_.numeric_names
    f = len(names)
    w = linear.weight.detach()
    sizes = [f, f, parts["categorical"].shape[-2] * parts["categorical"].shape[-1], parts["codes"].shape[-1],
             parts["time"].shape[-1]]
    w_values, w_missing, w_categorical, w_codes, w_time = torch.split(w, sizes)
    time_columns = [names.index("elapsed_years"), names.index("log_gap")]
    history_columns = [i for i, name in enumerate(names) if name.endswith((":since_measured", ":ever_measured"))]
    assert history_columns  # the data have missing values: the default model reads their measurement history
    base = {k: v.double() for k, v in _documented_baseline(real, parts, time_columns, history_columns).items()}
    delta = {k: parts[k].double() - base[k] for k in parts}
    numeric = w_values * delta["values"] + w_missing * delta["missing"]
    categorical = (delta["categorical"] * w_categorical.view(delta["categorical"].shape[-2:])).sum(-1)
    codes = delta["codes"] @ w_codes
    time = delta["time"] @ w_time + numeric[..., time_columns].sum(-1)

    position = {name: i for i, name in enumerate(names)}
    ids = cohort.patients["patient_id"].to_list()
    rows = explanation.attributions.with_columns(pl.col("patient_id").replace_strict(ids, list(range(len(ids))))
                                                 .alias("row"))
    checked = 0
    for row in rows.filter(pl.col("visit") <= 3).iter_rows(named=True):
        b, j = row["row"], row["input_visit"] - 1
        if row["kind"] == "numeric":
            expected = numeric[b, j, position[row["input"]]]
        elif row["kind"] == "categorical":
            expected = categorical[b, j, model.features_.categorical_names.index(row["input"])]
        elif row["kind"] == "codes":
            expected = codes[b, j]
        else:
            expected = time[b, j]
        assert row["attribution"] == pytest.approx(float(expected), abs=1e-6)
        checked += 1
    assert checked > 500 and set(rows["kind"]) == {"numeric", "categorical", "codes", "time"}
    assert explanation.risks["gap"].abs().max() < 1e-6
    # the linear score adds visit m's inputs to visit m − 1's: the change view is visit m's contributions
    # against a repeat of visit m − 1, and the repeat itself changes the risk by visit m − 1's contributions
    r = changes.risks.filter(pl.col("visit") > 1)
    np.testing.assert_allclose(r["attributed"] + r["repeat"], r["risk"] - r["previous_risk"], atol=1e-6)
    assert changes.risks["gap"].abs().max() < 1e-6


def test_attributions_equal_captum_over_every_part_of_full_histories(small):
    """The reference: Captum's integrated gradients over the five parts themselves and the code history's
    increments per visit (its own gradient function, one output at a time), each prediction on its
    patient's full padded history."""
    from captum.attr import IntegratedGradients

    model, data = small
    ids = data.visits["patient_id"].unique().sort().head(5)
    subset = data.visits.filter(pl.col("patient_id").is_in(ids.implode()))
    result = explain(model, subset, HORIZON, n_steps=16)
    net = model.model_.eval()
    embedding = net.encoder.embedding
    names = model.features_.numeric_names
    time_columns = [names.index("elapsed_years"), names.index("log_gap")]
    cohort = model.cohort(subset)
    batch = tensorize(cohort, model.features_, None).batch(list(range(cohort.n_patients)))
    assert net.code_history is not None  # the default model's linear path reads the coded history
    with torch.no_grad():
        parts = embedding.parts(batch)
        history = net.new_code_terms(batch)
    history_columns = [i for i, name in enumerate(names) if name.endswith((":since_measured", ":ever_measured"))]
    base = _documented_baseline(embedding, parts, time_columns, history_columns)
    rows, positions = (torch.as_tensor(a) for a in np.nonzero(batch.mask.numpy()))
    keys = ("values", "missing", "categorical", "codes", "time")
    parts["code_history"], base["code_history"] = history, torch.zeros_like(history)  # no code recorded

    def risk(values, missing, categorical, codes, time, code_history):
        repeat = values.shape[0] // rows.numel()
        expanded = batch.replace(**{k: torch.cat([v[rows]] * repeat) for k, v in batch.tensors().items()})
        sums = embedding.sum_parts(dict(zip(keys, (values, missing, categorical, codes, time))))
        with embedding.replaced(sums), net.replaced_new_code_terms(code_history):
            distribution = net.distribution_at(expanded, (torch.arange(values.shape[0]), positions.repeat(repeat)))
        return distribution.risk(torch.tensor([HORIZON]))[:, 0]

    attributions = IntegratedGradients(risk).attribute(tuple(parts[k][rows] for k in (*keys, "code_history")),
                                                       baselines=tuple(base[k][rows] for k in (*keys, "code_history")),
                                                       n_steps=16)
    a = dict(zip((*keys, "code_history"), (t.double() for t in attributions)))
    numeric = a["values"] + a["missing"]
    time = a["time"].sum(-1) + numeric[..., time_columns].sum(-1)
    categorical = a["categorical"].sum(-1)
    codes = a["codes"].sum(-1) + a["code_history"].sum(-1)
    row_of = {pid: i for i, pid in enumerate(cohort.patients["patient_id"].to_list())}
    prediction = {(int(b), int(m)): i for i, (b, m) in enumerate(zip(rows, positions))}
    checked = 0
    for row in result.attributions.iter_rows(named=True):
        i, j = prediction[(row_of[row["patient_id"]], row["visit"] - 1)], row["input_visit"] - 1
        expected = {"numeric": lambda: numeric[i, j, names.index(row["input"])],
                    "categorical": lambda: categorical[i, j, model.features_.categorical_names.index(row["input"])],
                    "codes": lambda: codes[i, j], "time": lambda: time[i, j]}[row["kind"]]()
        assert row["attribution"] == pytest.approx(float(expected), abs=1e-6)
        checked += 1
    assert checked == result.attributions.height > 200
    # inputs of visits after the prediction's visit get nothing from the reference either
    after = positions[:, None] < torch.arange(batch.max_visits)[None, :]
    assert numeric[after].abs().max() == 0 and time[after].abs().max() == 0


class _ReadsTheBatch(nn.Module):
    """A model with a path from the batch's numeric values around the visit embedding."""

    def __init__(self, model, through_batch):
        super().__init__()
        self.encoder = model.encoder
        self.through_batch = through_batch

    def distribution_at(self, batch, index, check_values=True):
        score = self.encoder(batch, check_values=check_values)[index].sum(-1)
        if self.through_batch:
            score = score + batch.numeric[index].sum(-1)
        return _Linear(0.2 + 0.1 * torch.sigmoid(score.double()))


@pytest.mark.parametrize("through_batch", [False, True])
def test_a_model_reading_the_batch_outside_the_embedding_is_refused(small, through_batch):
    model, data = small
    model.model_, original = _ReadsTheBatch(model.model_, through_batch), model.model_
    try:
        if through_batch:
            with pytest.raises(ConfigError, match="outside the visit embedding"):
                explain(model, data.visits, HORIZON, n_steps=4)
        else:
            assert explain(model, data.visits, HORIZON, n_steps=4).risks.height == data.visits.height
    finally:
        model.model_ = original


@pytest.mark.slow
def test_completeness_within_one_percent_on_a_trained_gru_and_risks_are_the_predictions():
    visits, outcomes = load_pbcseq(outcome="death")
    model = ehrseq.DynamicSurvival(d_model=16, hidden=(16,), epochs=20, seed=0, progress=False).fit(visits, outcomes)
    patients = outcomes["patient_id"].head(25).to_list()
    subset = visits.filter(pl.col("patient_id").is_in(patients))
    for view in ("level", "change"):
        explanation = explain(model, subset, 1095.0, view=view)
        assert explanation.relative_gap <= 0.01, (view, explanation.relative_gap)
        assert explanation.risks.height == subset.height
    predicted = model.predict_risk(subset, 1095.0, at="all")
    np.testing.assert_allclose(explanation.risks["risk"], predicted["risk"], rtol=1e-5, atol=1e-6)
    changes = explanation.risks.filter(pl.col("visit") > 1)
    np.testing.assert_allclose(changes["attributed"] - changes["gap"] + changes["repeat"],
                               changes["risk"] - changes["previous_risk"], atol=1e-6)
    at_landmark = explain(model, subset, 365.0, landmark=730.0)
    expected = model.predict_risk(subset, 365.0, landmark=730.0)
    np.testing.assert_allclose(at_landmark.risks["risk"], expected["risk"], rtol=1e-5, atol=1e-6)


def test_change_view_gives_unchanged_inputs_exactly_zero(small):
    model, data = small
    visits = data.visits.filter(pl.col("patient_id") == data.visits["patient_id"][0])
    repeated = pl.concat([visits.head(2), visits.head(2).tail(1).with_columns(pl.col("time") + 30.0)])
    changes = explain(model, repeated, HORIZON, view="change", n_steps=16)
    third = changes.attributions.filter(pl.col("visit") == 3)
    # the age of a value measured before visit 2 but not at it grows by the 30 days, as the time does
    aging = third["input"].str.ends_with(":since_measured")
    assert (third.filter((pl.col("kind") != "time") & ~aging)["attribution"] == 0).all()
    assert (third.filter(pl.col("kind") == "time")["attribution"].abs() > 0).all()
    first, second = visits.row(0, named=True), visits.row(1, named=True)
    stale = {f"{c}:since_measured" for c in model.features_.history_columns
             if second[c] is None and first[c] is not None}
    assert stale  # the patient chosen has such a value
    ages = third.filter(aging).filter(pl.col("input_visit") == 3)
    assert set(ages.filter(pl.col("attribution") != 0)["input"]) == stale


def test_bad_arguments_are_config_errors(small):
    model, data = small
    with pytest.raises(ConfigError, match="view"):
        explain(model, data.visits, HORIZON, view="delta")
    with pytest.raises(ConfigError, match="no visit"):
        explain(model, data.visits, HORIZON, patients=[-12345])
    with pytest.raises(ConfigError, match="horizon"):
        explain(model, data.visits, -1.0)
    with pytest.raises(ConfigError, match="fitted"):
        explain(ehrseq.DynamicSurvival(), data.visits, HORIZON)


def test_command_line_and_plot(small, tmp_path, capsys):
    from ehrseq.cli import main

    model, data = small
    directory = model.save(tmp_path / "model")
    data.visits.write_parquet(tmp_path / "visits.parquet")
    patient = str(data.visits["patient_id"][0])
    args = ["explain", "--model", str(directory), "--visits", str(tmp_path / "visits.parquet"), "--patient", patient,
            "--top", "2", "--steps", "8", "--output", str(tmp_path / "attributions.csv"),
            "--plot", str(tmp_path / "explanation.png")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "visit 1 at" in printed and "completeness" in printed and "since visit 1" in printed
    table = pl.read_csv(tmp_path / "attributions.csv")
    assert set(table["patient_id"].cast(pl.String)) == {patient}
    assert (tmp_path / "explanation.png").stat().st_size > 0
    assert main(args[:5] + ["--patient", "not-an-id"]) == 1
    assert "patient" in capsys.readouterr().err


def test_plot_explanation_draws_the_trajectory(small):
    import matplotlib

    matplotlib.use("Agg")
    model, data = small
    patient = data.visits["patient_id"][0]
    result = explain(model, data.visits, HORIZON, patients=[patient], n_steps=8)
    ax = ehrseq.plot.explanation(result, patient, top=2)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), result.risks["risk"].to_numpy())
    assert len(ax.texts) == result.risks.height
    with pytest.raises(ConfigError):
        ehrseq.plot.explanation(result, -1)


def test_an_ensemble_of_equal_members_is_explained_by_the_average_of_their_attributions():
    visits, outcomes = load_pbcseq(outcome="death")
    patients = outcomes["patient_id"].head(40).to_list()
    subset = visits.filter(pl.col("patient_id").is_in(patients))
    model = ehrseq.DynamicSurvival(d_model=8, hidden=(8,), epochs=3, n_models=2, seed=0, progress=False).fit(
        subset, outcomes.filter(pl.col("patient_id").is_in(patients)))
    explanation = explain(model, subset, 1095.0, landmark=700.0)
    assert explanation.relative_gap <= 0.01
    expected = model.predict_risk(subset, 1095.0, landmark=700.0)
    np.testing.assert_allclose(explanation.risks["risk"], expected["risk"], rtol=1e-5, atol=1e-6)
    members = [explain(_member(model, k), subset, 1095.0, landmark=700.0) for k in range(2)]
    mean = (members[0].attributions["attribution"] + members[1].attributions["attribution"]) / 2
    np.testing.assert_allclose(explanation.attributions["attribution"], mean, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("any_time", [True, False])
def test_an_ensemble_with_weighted_members_is_explained_by_its_own_risk(any_time):
    """Two networks and a linear member with a share of 0.2 (unequal member weights, as in the default ensemble): the explained risk is
    predict_risk's, at a landmark too, where members without an elapsed-time input are conditioned one by one; with
    elapsed-time inputs the attributions are the members' weighted by the ensemble's weights."""
    visits, outcomes = load_pbcseq(outcome="death")
    patients = outcomes["patient_id"].head(40).to_list()
    subset = visits.filter(pl.col("patient_id").is_in(patients))
    model = ehrseq.DynamicSurvival(d_model=8, hidden=(8,), epochs=3, n_models=2, linear_members=1, linear_weight=0.2,
                                   any_time=any_time, seed=0, progress=False).fit(
        subset, outcomes.filter(pl.col("patient_id").is_in(patients)))
    for landmark in (None, 700.0):
        explanation = explain(model, subset, 1095.0, landmark=landmark, at="last")
        assert explanation.relative_gap <= 0.01
        expected = model.predict_risk(subset, 1095.0, landmark=landmark, at="last")
        np.testing.assert_allclose(explanation.risks["risk"], expected["risk"], rtol=1e-5, atol=1e-6)
    if any_time:
        weights = model.model_config_.member_weights()
        assert weights == pytest.approx([0.4, 0.4, 0.2])  # two networks share 0.8, the linear member has 0.2
        members = [explain(_member(model, k), subset, 1095.0, landmark=700.0, at="last") for k in range(3)]
        mixed = sum(w * member.attributions["attribution"] for w, member in zip(weights, members))
        np.testing.assert_allclose(explanation.attributions["attribution"], mixed, rtol=1e-5, atol=1e-8)


def _member(model, k):
    """The ensemble's k-th member as a fitted one-model estimator."""
    import copy

    one = copy.copy(model)
    one.model_ = model.model_.members[k]
    one.model_config_ = model.model_config_.member(k)
    return one
