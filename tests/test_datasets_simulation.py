"""Known-truth simulator: determinism, the exact survival law, and the documented generative model."""

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from sksurv.metrics import concordance_index_censored
from sksurv.nonparametric import kaplan_meier_estimator

from ehrseq.datasets import Simulation, simulate
from ehrseq.errors import ConfigError, ShapeError

YEAR = 365.25
N = 20_000


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(N, seed=11)


def _years_hazard(sim: Simulation, pid: int, years: float) -> float:
    p, truth = sim.truth.parameters, sim.truth
    return p.baseline_hazard * np.exp(p.health_effect * (truth.intercept[pid] + truth.slope[pid] * years))


def test_deterministic_per_seed_and_seeds_differ():
    first, again, other = simulate(400, seed=3), simulate(400, seed=3), simulate(400, seed=4)
    assert first.visits.equals(again.visits) and first.outcomes.equals(again.outcomes)
    np.testing.assert_array_equal(first.truth.event_time, again.truth.event_time)
    assert not first.outcomes.equals(other.outcomes)


def test_outcomes_and_visit_times_do_not_depend_on_feature_options():
    base = simulate(300, seed=8)
    wide = simulate(300, seed=8, n_numeric=16, n_codes=0, noise=2.0, missing_rate=0.5)
    assert base.outcomes.equals(wide.outcomes)
    assert base.visits.select("patient_id", "time").equals(wide.visits.select("patient_id", "time"))
    assert "codes" not in wide.visits.columns and wide.visits.columns[2:18] == [f"x{j:02d}" for j in range(16)]


def test_visits_come_before_the_outcome_and_start_at_zero(sim):
    visits, outcomes = sim.visits, sim.outcomes
    joined = visits.join(outcomes, on="patient_id", suffix="_outcome")
    assert (joined["time"] < joined["time_outcome"]).all()
    per_patient = visits.group_by("patient_id").agg(pl.col("time").min(), pl.len())
    assert per_patient.height == N and (per_patient["time"] == 0).all()
    truth = sim.truth
    observed = np.minimum(truth.event_time, truth.censoring_time)
    np.testing.assert_allclose(outcomes["time"].to_numpy(), observed)
    np.testing.assert_array_equal(outcomes["event"].to_numpy(), truth.event_time <= truth.censoring_time)


def test_defaults_meet_the_documented_targets(sim):
    outcomes = sim.outcomes
    counts = sim.visits.group_by("patient_id").len()["len"].to_numpy()
    assert 0.30 <= outcomes["event"].mean() <= 0.60
    assert abs(counts.mean() - 10.0) < 0.4 and 5 <= np.median(counts) <= 20
    time, event = outcomes["time"].to_numpy(), outcomes["event"].to_numpy().astype(bool)
    for landmark in (0.0, YEAR):
        at_risk = np.flatnonzero(time > landmark)
        risk = sim.truth.risk(at_risk, landmark, [YEAR])[:, 0]
        remaining = time[at_risk] - landmark
        within = event[at_risk] & (remaining <= YEAR)
        c_index = concordance_index_censored(within, np.minimum(remaining, YEAR), risk)[0]
        assert 0.75 <= c_index <= 0.85


def test_kaplan_meier_matches_the_average_true_survival(sim):
    time, event = sim.outcomes["time"].to_numpy(), sim.outcomes["event"].to_numpy().astype(bool)
    grid = np.linspace(0.0, 6 * YEAR, 25)
    km_times, km_survival = kaplan_meier_estimator(event, time)
    km = np.concatenate([[1.0], km_survival])[np.searchsorted(km_times, grid, side="right")]
    true = sim.truth.survival(np.arange(N), 0.0, grid).mean(axis=0)
    assert np.abs(km - true).max() < 0.02


def test_latent_event_times_follow_the_closed_form_law(sim):
    truth = sim.truth
    ids = np.arange(N)
    finite = np.isfinite(truth.event_time)
    assert 0 < (~finite).sum() < N  # patients whose health improves may never have the event
    pit = np.empty(N)
    pit[finite] = np.exp(-truth.cumulative_hazard(ids[finite], truth.event_time[finite]))
    never = np.exp(-truth.cumulative_hazard(ids[~finite], np.inf))  # P(T = ∞)
    pit[~finite] = np.random.default_rng(0).random((~finite).sum()) * never  # randomized PIT at the atom
    assert stats.kstest(pit, "uniform").pvalue > 0.01


def test_censoring_is_administrative_or_dropout(sim):
    p = sim.truth.parameters
    low, high = p.follow_up

    def cdf(years: np.ndarray) -> np.ndarray:  # C = min(U(low, high), Exp(censoring))
        administrative = np.clip((high - years) / (high - low), 0.0, 1.0)
        return 1.0 - administrative * np.exp(-p.censoring * years)

    assert stats.kstest(sim.truth.censoring_time / YEAR, cdf).pvalue > 0.01


def test_cumulative_hazard_is_the_integral_of_the_hazard(sim):
    truth = sim.truth
    for pid in (0, 1, 2, 3, 4):
        for years in (0.3, 2.0, 7.5):
            reference = integrate.quad(lambda t: _years_hazard(sim, pid, t), 0.0, years, epsabs=0, epsrel=1e-12)[0]
            assert truth.cumulative_hazard(pid, years * YEAR) == pytest.approx(reference, rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    pid=st.integers(0, N - 1),
    landmark=st.floats(0.0, 20 * YEAR),
    durations=st.lists(st.floats(0.0, 1e6), min_size=1, max_size=8),
)
def test_conditional_survival_is_a_survival_function(sim, pid, landmark, durations):
    truth = sim.truth
    u = np.sort(np.array([0.0, *durations, np.inf]))
    survival = truth.survival([pid], landmark, u)[0]
    risk = truth.risk([pid], landmark, u)[0]
    assert survival[0] == 1.0 and risk[0] == 0.0
    assert np.all(np.isfinite(survival)) and np.all((survival >= 0) & (survival <= 1))
    assert np.all(np.diff(survival) <= 0)
    np.testing.assert_allclose(risk, 1.0 - survival, atol=1e-12)
    at = np.array([landmark])
    finite = np.isfinite(u)
    increment = truth.cumulative_hazard(pid, landmark + u[finite]) - truth.cumulative_hazard(pid, at)
    np.testing.assert_allclose(survival[finite], np.exp(-increment), rtol=1e-9, atol=1e-300)


def test_expected_visit_count_is_the_operational_time(sim):
    # Stationary renewal process: E[visits − 1 | patient] = Λ_i(Y_i) = ρ₀ e^{γ a} (e^{γ b Y} − 1) / (γ b).
    truth, p = sim.truth, sim.truth.parameters
    years = sim.outcomes["time"].to_numpy() / YEAR
    rate = p.visit_health_effect * truth.slope
    operational = truth.visit_rate * np.exp(p.visit_health_effect * truth.intercept) * np.expm1(rate * years) / rate
    extra = sim.visits.group_by("patient_id").len().sort("patient_id")["len"].to_numpy() - 1.0
    difference = extra - operational
    assert abs(difference.mean()) < 4 * difference.std() / np.sqrt(N)
    sick = truth.intercept > 1.0
    assert extra[sick].sum() / years[sick].sum() > 1.5 * extra[~sick].sum() / years[~sick].sum()


def test_numeric_features_are_noisy_linear_maps_of_health(sim):
    truth, p = sim.truth, sim.truth.parameters
    health = truth.health(sim.visits["patient_id"].to_numpy(), sim.visits["time"].to_numpy())
    for j in range(p.n_numeric):
        values = sim.visits[f"x{j:02d}"].to_numpy()
        observed = ~np.isnan(values)
        assert abs((~observed).mean() - p.missing_rate) < 0.005
        fit = stats.linregress(health[observed], values[observed])
        scale = truth.scales[j]
        assert fit.slope == pytest.approx(scale * truth.loadings[j], abs=0.01 * scale)
        assert fit.intercept == pytest.approx(truth.offsets[j], abs=0.01 * scale)
        residual = values[observed] - fit.intercept - fit.slope * health[observed]
        assert residual.std() == pytest.approx(scale * p.noise, rel=0.01)


def test_codes_and_visit_type_rise_with_health(sim):
    visits = sim.visits
    health = sim.truth.health(visits["patient_id"].to_numpy(), visits["time"].to_numpy())
    lengths = visits["codes"].list.len().to_numpy()
    number = visits["codes"].explode().drop_nulls().str.slice(1).cast(pl.Int64).to_numpy()
    owner = np.repeat(np.arange(visits.height), lengths)
    same_visit = owner[1:] == owner[:-1]
    assert np.all(np.diff(number)[same_visit] > 0)  # sorted, each code once per visit
    disease = np.bincount(owner, weights=number >= 25, minlength=visits.height)
    background = lengths - disease
    high = health > 1.0
    assert disease[high].mean() > 2 * disease[~high].mean()
    assert background[high].mean() == pytest.approx(background[~high].mean(), rel=0.05)
    # Documented law: code j of group g is present with probability 1 − exp(−μ_g π_j e^{δ_g z}).
    harmonic = (1.0 / np.arange(1, 26)).sum()
    for code, mean, effect in ((0, 1.5, 0.0), (3, 1.5, 0.0), (25, 0.5, 1.0), (30, 0.5, 1.0)):
        share = 1.0 / ((code % 25 + 1) * harmonic)
        present = np.bincount(owner, weights=number == code, minlength=visits.height)
        expected = 1.0 - np.exp(-mean * share * np.exp(effect * health))
        assert present.mean() == pytest.approx(expected.mean(), abs=0.003)
    urgent = (visits["visit_type"] == "urgent").to_numpy()
    bins = np.digitize(health, [-1.0, 0.0, 1.0, 2.0])
    for b in range(5):
        expected = (1.0 / (1.0 + np.exp(2.0 - health[bins == b]))).mean()
        assert urgent[bins == b].mean() == pytest.approx(expected, abs=0.02)
    sex = visits.group_by("patient_id").agg(pl.col("sex").n_unique())["sex"]
    assert sex.max() == 1


@pytest.mark.parametrize(
    "options",
    [{"n_patients": 0}, {"seed": -1}, {"mean_visits": 0.5}, {"censoring": -0.1}, {"follow_up": (3.0, 1.0)},
     {"missing_rate": 1.0}, {"n_codes": 2.5}, {"baseline_hazard": float("nan")}, {"follow_up": 5.0}],
)
def test_invalid_parameters_raise_config_error(options):
    arguments = {"n_patients": 10, **options}
    with pytest.raises(ConfigError):
        simulate(**arguments)


def test_truth_queries_are_validated(sim):
    truth = sim.truth
    with pytest.raises(ValueError, match="unknown ids"):
        truth.survival([N], 0.0, [1.0])
    with pytest.raises(ValueError, match="durations"):
        truth.survival([0], 0.0, [-1.0])
    with pytest.raises(ShapeError, match="landmark_time"):
        truth.survival([0, 1], [0.0, 1.0, 2.0], [1.0])
    with pytest.raises(ShapeError, match="durations"):
        truth.risk([0], 0.0, [[1.0]])


def test_single_visit_and_no_dropout_edge_cases():
    sim = simulate(200, seed=2, mean_visits=1.0, censoring=0.0, n_codes=1)
    assert sim.visits.height == 200 and (sim.visits["time"] == 0).all()
    assert set(sim.visits["codes"].explode().drop_nulls()) <= {"C000"}
    assert (sim.truth.censoring_time >= 2 * YEAR).all()
