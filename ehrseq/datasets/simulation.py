r"""Known-truth simulator of irregular visit histories with a closed-form survival law.

Generative model (τ = t / 365.25 is time in years since the patient's first visit, t in days; every
rate below is per year). For patient i = 0, …, n − 1:

1. **Patient.** ``sex`` s_i ∈ {F, M} with probability ½ each; latent health intercept and slope

       a_i = sex_effect · (1{s_i = M} − ½) + intercept_sd · ε_a,      b_i = slope_mean + slope_sd · ε_b,

   ε ~ N(0, 1). The latent health trajectory is the line z_i(τ) = a_i + b_i τ (higher = sicker).
2. **Event.** Hazard λ_i(τ) = λ₀ exp(β z_i(τ)) (λ₀ = ``baseline_hazard``, β = ``health_effect``), a
   Gompertz hazard with cumulative hazard, for c_i = λ₀ e^{β a_i} and r_i = β b_i,

       H_i(τ) = c_i (e^{r_i τ} − 1) / r_i   (= c_i τ when r_i = 0),

   so that P(T_i > s + u | T_i > s) = exp(−c_i e^{r_i s} (e^{r_i u} − 1) / r_i). Event times are drawn
   by inversion, E_i ~ Exp(1):

       T_i = H_i^{-1}(E_i) = log(1 + r_i E_i / c_i) / r_i   if r_i E_i / c_i > −1, else T_i = ∞

   (a patient whose health improves, r_i < 0, has a finite total hazard c_i / |r_i| and may never
   have the event).
3. **Censoring**, independent of everything else: C_i = min(A_i, D_i) with administrative end of
   follow-up A_i ~ U(``follow_up``) and drop-out D_i ~ Exp(``censoring``) (no drop-out when 0). The
   outcome is Y_i = min(T_i, C_i), event 1{T_i ≤ C_i}.
4. **Visits**, given (a_i, b_i) independent of T_i and C_i: a renewal process in the operational time
   Λ_i(τ) = ∫₀^τ ρ₀ e^{γ z_i(v)} dv = q_i (e^{γ b_i τ} − 1) / (γ b_i), q_i = ρ₀ e^{γ a_i}
   (γ = ``visit_health_effect``: sicker patients are seen more often, and more so as they worsen).
   The first visit is at τ = 0 and the operational gaps are those of a stationary renewal process
   with Gamma(κ, scale 1/κ) gaps (mean 1; κ = ``visit_regularity``: 1 is a Poisson process, larger is
   more regular): the first gap is the forward recurrence time U · Gamma(κ + 1, 1/κ), U ~ U(0, 1),
   the next ones Gamma(κ, 1/κ), so that the expected number of visits in (0, τ) is exactly Λ_i(τ).
   Only visits with τ < Y_i are kept. ρ₀ = (``mean_visits`` − 1) / E[Λ_i(Y_i) / ρ₀], the expectation
   taken over a fixed reference draw of 20,000 patients (it depends on the parameters only, not on
   ``seed`` or ``n_patients``), so that patients have ``mean_visits`` visits on average.
5. **Features** at a visit at τ, with z = z_i(τ), drawn independently per visit:

   * numeric ``x00 … x{F−1}``: x_j = m_j + s_j (w_j z + σ ε), ε ~ N(0, 1), σ = ``noise``, loadings
     w_j = (−1)^j (1 − j / F), scales s_j = 10^{(j mod 3) − 1}, offsets m_j = 4 s_j; each value is
     missing (null) with probability ``missing_rate``, independently (MCAR);
   * categorical ``sex`` (static) and ``visit_type`` = ``"urgent"`` with probability
     1 / (1 + e^{2 − z}), else ``"routine"``;
   * ``codes``: the first ⌊V/2⌋ of the V = ``n_codes`` codes ``C000…`` are background codes, the
     others disease codes. A visit draws Poisson(1.5) background codes and Poisson(0.5 e^{z}) disease
     codes, each code of a group chosen with probability ∝ 1 / (rank in group + 1); repeats within a
     visit are recorded once. Code j of group g is thus present with probability
     1 − exp(−μ_g π_j e^{δ_g z}) (μ = 1.5, 0.5; δ = 0, 1; π_j its within-group probability).

Since visits and features depend on the patient only through (a_i, b_i), the conditional survival
given the history and the patient's parameters is exactly the Gompertz law of step 2; that is what
:class:`SimulationTruth` returns. A model sees only the noisy features, so it cannot reach it; the
gap measures what is left to learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from ehrseq.datasets._tables import DAYS_PER_YEAR, DatasetTables
from ehrseq.errors import ConfigError, ShapeError

_REFERENCE_PATIENTS = 20_000
_REFERENCE_SEED = 20240531
# Codes: (mean count per visit at z = 0, log-rate per unit of z) of the background and disease groups.
_CODE_GROUPS = ((1.5, 0.0), (0.5, 1.0))
_URGENT_OFFSET = 2.0
# Safety margin (in standard deviations) of the number of renewal gaps drawn per patient in one round.
_GAP_MARGIN_SD = 3.0


@dataclass(frozen=True)
class SimulationParameters:
    """Every parameter of the generative model of :func:`simulate` (rates per year, see module docs)."""

    n_patients: int
    seed: int
    n_numeric: int
    n_codes: int
    mean_visits: float
    censoring: float
    follow_up: tuple[float, float]
    baseline_hazard: float
    health_effect: float
    intercept_sd: float
    sex_effect: float
    slope_mean: float
    slope_sd: float
    visit_health_effect: float
    visit_regularity: float
    noise: float
    missing_rate: float


@dataclass(frozen=True, eq=False)
class SimulationTruth:
    """Ground truth of a simulation: per-patient parameters and the exact (conditional) survival law.

    Arrays are indexed by ``patient_id`` (0, …, n − 1). Times are in days, as in the tables.

    Attributes
    ----------
    parameters:
        The generative parameters.
    intercept, slope:
        a_i and b_i (slope per year) of the health line z_i(τ) = a_i + b_i τ, ``[N]``.
    event_time:
        Latent event time T_i in days (``inf`` when the patient never has the event), ``[N]``.
    censoring_time:
        Latent censoring time C_i in days, ``[N]``.
    visit_rate:
        ρ₀, the visit rate per year at z = 0 (before the Gamma renewal), set from ``mean_visits``.
    loadings, offsets, scales:
        w_j, m_j, s_j of the numeric features, ``[F]``.
    """

    parameters: SimulationParameters
    intercept: np.ndarray
    slope: np.ndarray
    event_time: np.ndarray
    censoring_time: np.ndarray
    visit_rate: float
    loadings: np.ndarray
    offsets: np.ndarray
    scales: np.ndarray

    @property
    def n_patients(self) -> int:
        return int(self.intercept.shape[0])

    def health(self, patient_id: np.ndarray | int, time: np.ndarray | float) -> np.ndarray:
        """Latent health z_i(t) = a_i + b_i t / 365.25 (broadcast of ``patient_id`` and ``time`` in days)."""
        index = self._index(patient_id)
        years = _as_times(time, "time", allow_infinite=False) / DAYS_PER_YEAR
        return self.intercept[index] + self.slope[index] * years

    def cumulative_hazard(self, patient_id: np.ndarray | int, time: np.ndarray | float) -> np.ndarray:
        """H_i(t) in closed form (broadcast of ``patient_id`` and ``time`` in days)."""
        index = self._index(patient_id)
        years = _as_times(time, "time") / DAYS_PER_YEAR
        c, r = self._hazard_scale_and_rate(index)
        return c * _integrated_exponential(years, r)

    def survival(
        self, patient_id: np.ndarray | int, landmark_time: np.ndarray | float, durations: np.ndarray | float
    ) -> np.ndarray:
        """P(T_i > s + u | T_i > s) for each patient and duration, ``[n, U]``.

        Parameters
        ----------
        patient_id: ``[n]`` (or scalar)
            Patients to evaluate.
        landmark_time: ``[n]`` or scalar
            Landmark s in days (e.g. the time of the visit a prediction is made at; 0 = marginal law).
        durations: ``[U]`` or scalar
            Durations u ≥ 0 in days after the landmark.
        """
        return np.exp(-self._hazard_increment(patient_id, landmark_time, durations))

    def risk(
        self, patient_id: np.ndarray | int, landmark_time: np.ndarray | float, durations: np.ndarray | float
    ) -> np.ndarray:
        """P(T_i ≤ s + u | T_i > s) = 1 − :meth:`survival`, ``[n, U]`` (computed without cancellation)."""
        return -np.expm1(-self._hazard_increment(patient_id, landmark_time, durations))

    def predict_risk(self, visits: pl.DataFrame, horizon: np.ndarray | float, *, landmark: float = 0.0,
                     outcomes: pl.DataFrame | None = None) -> pl.DataFrame:
        """The oracle as a landmark model (the interface of :func:`ehrseq.evaluate.landmark`).

        For every patient of ``visits`` with a visit at or before ``landmark`` s: the true
        P(T ≤ s + Δ | T > s) for each Δ in ``horizon``, as a frame ``patient_id, landmark, horizon, risk``.
        ``outcomes`` is accepted for interface compatibility and not used.
        """
        del outcomes
        s = float(landmark)
        horizons = np.atleast_1d(np.asarray(horizon, dtype=np.float64))
        ids = (
            visits.lazy().filter(pl.col("time") <= s).select(pl.col("patient_id").unique(maintain_order=True))
            .collect()["patient_id"].to_numpy()
        )
        risk = self.risk(ids, s, horizons)
        n, u = risk.shape
        return pl.DataFrame({
            "patient_id": np.repeat(ids, u),
            "landmark": np.full(n * u, s),
            "horizon": np.tile(horizons, n),
            "risk": risk.reshape(-1),
        })

    def table(self) -> pl.DataFrame:
        """Per-patient ground truth: ``patient_id, intercept, slope, event_time, censoring_time``."""
        return pl.DataFrame(
            {
                "patient_id": np.arange(self.n_patients, dtype=np.int64),
                "intercept": self.intercept,
                "slope": self.slope,
                "event_time": self.event_time,
                "censoring_time": self.censoring_time,
            }
        )

    def _hazard_increment(
        self, patient_id: np.ndarray | int, landmark_time: np.ndarray | float, durations: np.ndarray | float
    ) -> np.ndarray:
        """H_i(s + u) − H_i(s) = c_i e^{r_i s} ∫₀^u e^{r_i v} dv, ``[n, U]``."""
        index = np.atleast_1d(self._index(patient_id))
        if index.ndim != 1:
            raise ShapeError(f"patient_id must be a scalar or 1-D, got shape {list(index.shape)}")
        landmark = _as_times(landmark_time, "landmark_time", allow_infinite=False)
        if landmark.ndim and landmark.shape != index.shape:
            raise ShapeError(
                f"landmark_time must be a scalar or shaped like patient_id {list(index.shape)}, "
                f"got {list(landmark.shape)}"
            )
        landmark = np.broadcast_to(landmark, index.shape) / DAYS_PER_YEAR
        u = np.atleast_1d(_as_times(durations, "durations")) / DAYS_PER_YEAR
        if u.ndim != 1:
            raise ShapeError(f"durations must be a scalar or 1-D, got shape {list(u.shape)}")
        c, r = self._hazard_scale_and_rate(index)
        return (c * np.exp(r * landmark))[:, None] * _integrated_exponential(u[None, :], r[:, None])

    def _hazard_scale_and_rate(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.parameters
        return p.baseline_hazard * np.exp(p.health_effect * self.intercept[index]), p.health_effect * self.slope[index]

    def _index(self, patient_id: np.ndarray | int) -> np.ndarray:
        ids = np.asarray(patient_id)
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"patient_id must be integers, got dtype {ids.dtype}")
        bad = (ids < 0) | (ids >= self.n_patients)
        if np.any(bad):
            raise ValueError(
                f"patient_id must be in [0, {self.n_patients}); unknown ids: {ids[bad][:5].tolist()}"
            )
        return ids


@dataclass(frozen=True, eq=False, kw_only=True)
class Simulation(DatasetTables):
    """Simulated ``visits`` and ``outcomes`` (unpack as ``visits, outcomes = sim``) plus the ``truth``.

    ``event_names == ("event",)``; ``truth`` is a :class:`SimulationTruth`.
    """

    truth: SimulationTruth


def simulate(
    n_patients: int,
    seed: int = 0,
    *,
    n_numeric: int = 8,
    n_codes: int = 50,
    mean_visits: float = 10.0,
    censoring: float = 0.05,
    follow_up: tuple[float, float] = (2.0, 8.0),
    baseline_hazard: float = 0.1,
    health_effect: float = 1.0,
    intercept_sd: float = 1.2,
    sex_effect: float = 0.4,
    slope_mean: float = 0.1,
    slope_sd: float = 0.4,
    visit_health_effect: float = 0.5,
    visit_regularity: float = 2.0,
    noise: float = 1.0,
    missing_rate: float = 0.2,
) -> Simulation:
    """Simulate irregular visit histories with features driven by a latent health line and a known hazard.

    The generative model is given in full in :mod:`ehrseq.datasets.simulation`; all rates are per year,
    all table times in days. The defaults give about 46 % events (median observed time 2.6 years),
    10 visits per patient (median 8, 95th percentile 24), 22 % of patients who would never have the
    event, and a 1-year landmark C-index of the true risk of about 0.79 (at landmarks 0 and 1 year).
    The features are noisy enough that a model must pool visits to approach it: a landmark Cox model
    on the last observed values reaches about 0.74 with 5,000 training patients.

    Parameters
    ----------
    n_patients, seed:
        Size and random seed; the result is a deterministic function of all arguments. Outcomes and
        visit times do not depend on ``n_numeric``, ``n_codes``, ``noise`` or ``missing_rate``.
    n_numeric, n_codes:
        Numeric features F and code vocabulary V (0 = no ``codes`` column).
    mean_visits:
        Expected visits per patient (≥ 1), including the first visit at time 0.
    censoring, follow_up:
        Drop-out rate per year, and the range in years of the uniform administrative censoring time.
    baseline_hazard, health_effect:
        λ₀ (per year, at z = 0) and β of the hazard λ₀ exp(β z).
    intercept_sd, sex_effect, slope_mean, slope_sd:
        Distribution of the health intercept a_i and slope b_i (per year).
    visit_health_effect, visit_regularity:
        γ (log visit rate per unit of z) and the Gamma shape κ of the operational gaps.
    noise, missing_rate:
        Standard deviation σ of the numeric features' noise (in units of z) and their MCAR rate.

    Returns
    -------
    Simulation
        ``visits`` (``patient_id`` Int64 = 0 … n − 1, ``time`` Float64 days, numeric ``x00 …``, String
        ``sex``, ``visit_type``, List[String] ``codes``, sorted by patient and time), ``outcomes``
        (``patient_id, time, event``, one row per patient, ``event`` 1 = the event), ``event_names =
        ("event",)``, and ``truth`` (:class:`SimulationTruth`).
    """
    params = _parameters(
        n_patients=n_patients, seed=seed, n_numeric=n_numeric, n_codes=n_codes, mean_visits=mean_visits,
        censoring=censoring, follow_up=follow_up, baseline_hazard=baseline_hazard, health_effect=health_effect,
        intercept_sd=intercept_sd, sex_effect=sex_effect, slope_mean=slope_mean, slope_sd=slope_sd,
        visit_health_effect=visit_health_effect, visit_regularity=visit_regularity, noise=noise,
        missing_rate=missing_rate,
    )
    patient_seed, visit_seed, numeric_seed, category_seed, code_seed = np.random.SeedSequence(seed).spawn(5)
    patient_rng, visit_rng, category_rng, code_rng = (
        np.random.default_rng(s) for s in (patient_seed, visit_seed, category_seed, code_seed)
    )
    cohort = _draw_patients(patient_rng, n_patients, params)
    visit_rate = _visit_rate(params)
    patient, years = _visit_times(visit_rng, cohort, visit_rate, params)
    health = cohort.intercept[patient] + cohort.slope[patient] * years

    columns: dict[str, pl.Series] = {
        "patient_id": pl.Series("patient_id", patient, dtype=pl.Int64),
        "time": pl.Series("time", years * DAYS_PER_YEAR, dtype=pl.Float64),
    }
    loadings, offsets, scales = _numeric_design(n_numeric)
    for j, feature_seed in enumerate(numeric_seed.spawn(n_numeric)):
        name = f"x{j:02d}"
        rng = np.random.default_rng(feature_seed)
        values = _numeric_feature(rng, health, loadings[j], offsets[j], scales[j], params)
        columns[name] = pl.Series(name, values, dtype=pl.Float64, nan_to_null=True)
    sexes = pl.Series("sex", ["F", "M"], dtype=pl.String)
    columns["sex"] = sexes.gather(cohort.male.astype(np.int64)[patient])
    # U < 1 / (1 + e^{2 − z})  ⇔  U (1 + e^{2 − z}) < 1
    urgent = category_rng.random(health.size) * (1.0 + np.exp(_URGENT_OFFSET - health)) < 1.0
    visit_types = pl.Series("visit_type", ["routine", "urgent"], dtype=pl.String)
    columns["visit_type"] = visit_types.gather(urgent.astype(np.int64))
    if n_codes > 0:
        columns["codes"] = _codes(code_rng, health, n_codes)
    visits = pl.DataFrame(list(columns.values()))

    observed = np.minimum(cohort.event_time, cohort.censoring_time)
    outcomes = pl.DataFrame(
        {
            "patient_id": np.arange(n_patients, dtype=np.int64),
            "time": observed * DAYS_PER_YEAR,
            "event": (cohort.event_time <= cohort.censoring_time).astype(np.int64),
        }
    )
    truth = SimulationTruth(
        parameters=params, intercept=cohort.intercept, slope=cohort.slope,
        event_time=cohort.event_time * DAYS_PER_YEAR, censoring_time=cohort.censoring_time * DAYS_PER_YEAR,
        visit_rate=visit_rate, loadings=loadings, offsets=offsets, scales=scales,
    )
    return Simulation(visits=visits, outcomes=outcomes, event_names=("event",), truth=truth)


@dataclass(frozen=True, eq=False)
class _Cohort:
    """Per-patient draws of steps 1–3 (times in years)."""

    male: np.ndarray
    intercept: np.ndarray
    slope: np.ndarray
    event_time: np.ndarray
    censoring_time: np.ndarray


def _draw_patients(rng: np.random.Generator, n: int, p: SimulationParameters) -> _Cohort:
    """Sex, health line, latent event time (by inversion of H) and censoring time of ``n`` patients."""
    male = rng.random(n) < 0.5
    intercept = p.sex_effect * (male - 0.5) + p.intercept_sd * rng.standard_normal(n)
    slope = p.slope_mean + p.slope_sd * rng.standard_normal(n)
    scale = p.baseline_hazard * np.exp(p.health_effect * intercept)
    event_time = _inverse_integrated_exponential(rng.exponential(size=n), scale, p.health_effect * slope)
    administrative = rng.uniform(p.follow_up[0], p.follow_up[1], size=n)
    dropout = rng.exponential(1.0 / p.censoring, size=n) if p.censoring > 0 else np.full(n, np.inf)
    return _Cohort(male, intercept, slope, event_time, np.minimum(administrative, dropout))


def _visit_rate(p: SimulationParameters) -> float:
    """ρ₀ such that 1 + ρ₀ E[Λ̃(Y)] = ``mean_visits`` on a fixed reference cohort (Λ̃ = Λ at ρ₀ = 1)."""
    if p.mean_visits == 1.0:
        return 0.0
    cohort = _draw_patients(np.random.default_rng(_REFERENCE_SEED), _REFERENCE_PATIENTS, p)
    horizon = np.minimum(cohort.event_time, cohort.censoring_time)
    per_unit = _operational_time(horizon, cohort, 1.0, p)
    return (p.mean_visits - 1.0) / float(per_unit.mean())


def _operational_time(years: np.ndarray, cohort: _Cohort, visit_rate: float, p: SimulationParameters) -> np.ndarray:
    """Λ_i(τ) = ρ₀ e^{γ a_i} ∫₀^τ e^{γ b_i v} dv for every patient of ``cohort``."""
    gamma = p.visit_health_effect
    return visit_rate * np.exp(gamma * cohort.intercept) * _integrated_exponential(years, gamma * cohort.slope)


def _visit_times(
    rng: np.random.Generator, cohort: _Cohort, visit_rate: float, p: SimulationParameters
) -> tuple[np.ndarray, np.ndarray]:
    """Flat (patient, τ) of all visits, sorted by patient then time; τ in years, each patient ≥ 1 visit.

    Operational visit times are segment-wise cumulative sums of Gamma gaps, drawn in rounds: each round
    draws, per patient still short of its horizon Λ_i(Y_i), a number of gaps a few standard deviations
    above the expected need, so a second round is rare and a third rarer still.
    """
    n = cohort.intercept.size
    outcome = np.minimum(cohort.event_time, cohort.censoring_time)
    horizon = _operational_time(outcome, cohort, visit_rate, p)
    kappa = p.visit_regularity
    patients, op_times = [], []
    start = np.zeros(n)
    active = np.arange(n)
    first_round = True
    while active.size:
        remaining = horizon[active] - start[active]
        counts = np.ceil(remaining + _GAP_MARGIN_SD * (np.sqrt(remaining / kappa) + 1.0)).astype(np.int64)
        if first_round:
            counts += 1
        owner = np.repeat(active, counts)
        gaps = rng.gamma(kappa, 1.0 / kappa, size=owner.size)
        ends = np.cumsum(counts)
        if first_round:
            gaps[ends - counts] = 0.0
            gaps[ends - counts + 1] = _stationary_first_gaps(rng, active.size, kappa)
        totals = np.cumsum(gaps)
        before = np.concatenate([[0.0], totals[ends[:-1] - 1]])
        times = totals - np.repeat(before, counts) + start[owner]
        keep = times < horizon[owner]
        if first_round:
            keep[ends - counts] = True
            first_round = False
        patients.append(owner[keep])
        op_times.append(times[keep])
        start[active] = times[ends - 1]
        active = active[start[active] < horizon[active]]
    patient = np.concatenate(patients)
    op_time = np.concatenate(op_times)
    if len(patients) > 1:
        order = np.argsort(patient, kind="stable")
        patient, op_time = patient[order], op_time[order]
    years = np.zeros_like(op_time)
    later = op_time > 0
    gamma = p.visit_health_effect
    owner = patient[later]
    years[later] = _inverse_integrated_exponential(
        op_time[later], visit_rate * np.exp(gamma * cohort.intercept[owner]), gamma * cohort.slope[owner]
    )
    keep = years < outcome[patient]
    return patient[keep], years[keep]


def _stationary_first_gaps(rng: np.random.Generator, n: int, shape: float) -> np.ndarray:
    """Forward recurrence time of a stationary Gamma(κ, 1/κ) renewal process: U · Gamma(κ + 1, 1/κ)."""
    return rng.random(n) * rng.gamma(shape + 1.0, 1.0 / shape, size=n)


def _numeric_design(n_numeric: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loadings w_j = (−1)^j (1 − j/F), scales s_j = 10^{(j mod 3) − 1}, offsets m_j = 4 s_j."""
    j = np.arange(n_numeric)
    loadings = np.where(j % 2 == 0, 1.0, -1.0) * (1.0 - j / max(n_numeric, 1))
    scales = 10.0 ** ((j % 3) - 1.0)
    return loadings, 4.0 * scales, scales


def _numeric_feature(
    rng: np.random.Generator, health: np.ndarray, loading: float, offset: float, scale: float,
    p: SimulationParameters,
) -> np.ndarray:
    """m + s (w z + σ ε) at every visit, NaN (missing) with probability ``missing_rate``; in place, one buffer."""
    values = rng.standard_normal(health.size)
    values *= p.noise
    values += loading * health
    values *= scale
    values += offset
    values[rng.random(health.size, dtype=np.float32) < p.missing_rate] = np.nan
    return values


def _codes(rng: np.random.Generator, health: np.ndarray, n_codes: int) -> pl.Series:
    """List[String] codes per visit (see module docs, step 5).

    Drawn as the superposition of the two groups' Poisson counts: Poisson(total rate) codes per visit,
    each from the disease group with probability (disease rate) / (total rate), then a code of its
    group by its within-group probability — the same law as two independent Poisson draws.
    """
    n_visits = health.size
    n_background = n_codes // 2
    (background_mean, _), (disease_mean, disease_effect) = _CODE_GROUPS
    background_rate = background_mean if n_background > 0 else 0.0
    disease_rate = disease_mean * np.exp(disease_effect * health)
    visit = np.repeat(np.arange(n_visits, dtype=np.int64), rng.poisson(background_rate + disease_rate))
    rate = disease_rate[visit]
    disease = rng.random(visit.size) * (background_rate + rate) < rate
    # One inverse-CDF lookup for both groups: background draws in [0, 1), disease draws in [1, 2).
    boundaries = np.concatenate(
        [_rank_cdf(n_background), [1.0] if n_background else [], 1.0 + _rank_cdf(n_codes - n_background)]
    )
    code = np.searchsorted(boundaries, rng.random(visit.size) + disease, side="right")
    bits = max(int(n_codes - 1).bit_length(), 1)
    key = np.sort((visit << bits) | code, kind="stable")  # only codes within a visit move
    if key.size:
        key = key[np.concatenate([[True], key[1:] != key[:-1]])]
    visit, code = key >> bits, key & ((1 << bits) - 1)
    offsets = np.zeros(n_visits + 1, dtype=np.int64)
    np.cumsum(np.bincount(visit, minlength=n_visits), out=offsets[1:])
    width = max(3, len(str(n_codes - 1)))
    names = pl.Series([f"C{j:0{width}d}" for j in range(n_codes)], dtype=pl.String).gather(code)
    # Zero-copy assembly: Polars strings as Arrow string views, NumPy offsets as an Arrow buffer.
    values = names.to_arrow(compat_level=pl.CompatLevel.newest())
    starts = pa.Array.from_buffers(pa.int64(), offsets.size, [None, pa.py_buffer(offsets)])
    return pl.Series("codes", pa.LargeListArray.from_arrays(starts, values), dtype=pl.List(pl.String))


def _rank_cdf(size: int) -> np.ndarray:
    """Inner boundaries of the cumulative probabilities ∝ 1 / (rank + 1) of ``size`` codes, ``[size − 1]``."""
    weights = 1.0 / np.arange(1, size + 1)
    return np.cumsum(weights / weights.sum())[:-1]


def _inverse_integrated_exponential(value: np.ndarray, scale: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """τ ≥ 0 with scale ∫₀^τ e^{rate v} dv = value (scale > 0).

    τ = log(1 + rate v / scale) / rate (v / scale when rate = 0); τ = ∞ when rate v / scale ≤ −1, i.e.
    when the integral never reaches the value (it is bounded by scale / |rate| for rate < 0).
    """
    ratio, rate = np.broadcast_arrays(np.asarray(value / scale, dtype=np.float64), np.asarray(rate, dtype=np.float64))
    x = rate * ratio
    safe = np.where(rate == 0.0, 1.0, rate)
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = np.where(rate == 0.0, ratio, np.log1p(np.maximum(x, -1.0)) / safe)
    return np.where(x > -1.0, inverse, np.inf)


def _integrated_exponential(time: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """∫₀^t e^{rate v} dv = expm1(rate t) / rate (t when rate = 0); at t = ∞: 1/|rate| if rate < 0, else ∞."""
    time, rate = np.broadcast_arrays(np.asarray(time, dtype=np.float64), np.asarray(rate, dtype=np.float64))
    safe = np.where(rate == 0.0, 1.0, rate)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(rate == 0.0, time, np.expm1(rate * time) / safe)


def _as_times(value: np.ndarray | float, name: str, *, allow_infinite: bool = True) -> np.ndarray:
    times = np.asarray(value, dtype=np.float64)
    if np.any(np.isnan(times)) or np.any(times < 0) or (not allow_infinite and np.any(np.isinf(times))):
        bound = "finite and >= 0" if not allow_infinite else ">= 0 (inf allowed)"
        raise ValueError(f"{name} must be {bound}, in days")
    return times


_COUNTS = ("n_patients", "seed", "n_numeric", "n_codes")


def _parameters(**values: object) -> SimulationParameters:
    """Validate the arguments of :func:`simulate`; raise :class:`ConfigError` outside the model's domain."""
    for name, value in values.items():
        if name in _COUNTS:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            values[name] = int(value)
        elif name == "follow_up":
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise ConfigError(f"follow_up must be a (low, high) pair of years, got {value!r}")
            values[name] = (_real(name, value[0]), _real(name, value[1]))
        else:
            values[name] = _real(name, value)
    p = SimulationParameters(**values)  # type: ignore[arg-type]
    rules = [
        (p.n_patients >= 1, "n_patients must be >= 1"),
        (p.seed >= 0, "seed must be >= 0"),
        (p.n_numeric >= 0 and p.n_codes >= 0, "n_numeric and n_codes must be >= 0"),
        (p.mean_visits >= 1.0, "mean_visits must be >= 1 (the first visit is always made)"),
        (p.censoring >= 0.0, "censoring (drop-out rate per year) must be >= 0"),
        (0.0 < p.follow_up[0] <= p.follow_up[1], "follow_up must be (low, high) years with 0 < low <= high"),
        (p.baseline_hazard > 0.0, "baseline_hazard must be > 0"),
        (p.intercept_sd >= 0.0 and p.slope_sd >= 0.0, "intercept_sd and slope_sd must be >= 0"),
        (p.visit_regularity > 0.0, "visit_regularity (Gamma shape) must be > 0"),
        (p.noise >= 0.0, "noise must be >= 0"),
        (0.0 <= p.missing_rate < 1.0, "missing_rate must be in [0, 1)"),
    ]
    for ok, message in rules:
        if not ok:
            raise ConfigError(message)
    return p


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return float(value)
