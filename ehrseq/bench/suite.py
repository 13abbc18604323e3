"""Real-data suite: ehrseq against landmark Cox, landmark RSF and Kaplan–Meier on seven longitudinal data sets, paired by fold.

Data (``python -m ehrseq.bench suite --datasets ...``; SurvSet's ``aids``, ``csl`` and ``heartvalve`` are
held out for independent checks and refused):

* ``pbc`` — ``load_pbcseq(outcome="death")`` (days; origin = registration);
* ``nafld`` — ``load_nafld()``, the full cohort: every subject with a visit (days; origin = the index
  date, ``origin="entry_time"``);
* ``heart``, ``epileptic``, ``FRTCS``, ``oldmort``, ``Rossi`` — ``load_survset(name)``: SurvSet's
  counting-process tables through :func:`ehrseq.data.from_counting_process`, times in each set's own
  unit (days; years for ``oldmort``, measured from entry; weeks for ``Rossi``); origin = the first visit.

Folds: patient-level, stratified by event, ``folds`` of them; sets with fewer than 500 patients are
cross-validated ``repeats`` times with different shuffles. A patient's fold is a deterministic function of
(data set, repeat, seed), and every model sees the same folds.

Windows: landmarks s at the 25 % and 50 % quantiles of the event times (time since origin of the observed
events), window ends at the 50 % and 75 % quantiles, Δ = end − s for every end after s: (q25, q50 − q25),
(q25, q75 − q25) and (q50, q75 − q50), computed once per data set on all its patients. Quantiles of the
event times rather than of all outcome times: where most patients are censored at the end of the study
(Rossi: 318 of 432 at 52 weeks; FRTCS: 5 years) the follow-up quantiles coincide and leave no window
(``--windows follow-up`` uses them, as the issue's first measurements did, dropping empty windows). A
window is kept when every test fold has at least ``min_at_risk`` patients at risk and ``min_events``
events in it; the others are listed as such with their counts.

Models (each fitted on the training folds only): ``default`` = ``DynamicSurvival(progress=False)`` as a new
user fits it (with the data set's table options: NAFLD's origin); ``tuned`` = ``ehrseq.tune`` on the
training folds only (inner cross-validation: 10 trials × 3 inner folds scored by the landmark C-index of the
out-of-fold predictions at the training folds' event-time quantile windows, median pruning, seed 0; the chosen
settings — the defaults, or the best trial's blended with them (``ehrseq.tune``'s choice) — refitted on the training
folds; not in the default run, whose 45-minute budget it would break — ``--models tuned,cox`` runs it); ``cox`` = landmark Cox fitted at the evaluation landmark s on
the training patients alive at s with a visit by s, on their last observed covariates (carried forward to
s; missing: training mean + indicator; categorical: one-hot), ridge alpha 0.01, events after s + Δ_max
censored, Δ_max the longest window from s — the classical landmark model (on heart, epileptic and FRTCS its
C-index equals that of scikit-survival's ``CoxPHSurvivalAnalysis(alpha=0.01)`` fitted directly on those
covariates, fold by fold); ``cox_history`` = the same with the visit history
at s (time since the last visit, number of visits) as two more covariates; ``rsf`` = the landmark random
survival forest fitted like ``cox`` (100 trees, bootstrap samples of at most 2,000 rows); ``km`` = the
landmark-conditional Kaplan–Meier.

Metrics: :func:`ehrseq.evaluate.landmark` per (data set, repeat, fold, model, window): Harrell's C of
events in (s, s + Δ], the IPCW Brier score at s + Δ and the integrated Brier score over (0, Δ] (censoring
weights from the training folds). Per data set and model: the mean over kept windows within a fold, then
mean ± sd over folds (and repeats); the paired difference against landmark Cox is taken per fold, then
mean ± sd over folds. The overall line averages each model's paired C difference over data sets.
"""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from joblib import Parallel, delayed

from ehrseq.baselines import KaplanMeier, LandmarkCox, LandmarkRandomForest
from ehrseq.bench import _repro
from ehrseq.bench._repro import Report, fmt, keep_patients
from ehrseq.bench._timing import format_table
from ehrseq.bootstrap import paired_p_value, window_resamples
from ehrseq.data.split import split_indices
from ehrseq.errors import ConfigError, EhrseqError
from ehrseq.estimator import CohortSettings, DynamicSurvival
from ehrseq.evaluate import (
    landmark_from_predictions,
    landmark_predictions,
    landmark_windows,
    outcomes_since_origin,
    quantile_windows,
)
from ehrseq.metrics.resampled import bootstrap_weights, percentile_interval

#: SurvSet sets that are never used here: they are kept for independent checks of the project.
HELD_OUT = ("aids", "csl", "heartvalve")
#: Metrics summarised per data set: (column of the landmark table, label, whether higher is better).
METRICS = (("c_index", "C-index", True), ("brier", "Brier", False), ("ibs", "IBS", False))
REFERENCE = "cox"
SMALL_COHORT = 500  # patients: below it the folds are repeated
RSF_MAX_SAMPLES = 2000  # stacked rows per tree of the landmark forest (all rows of the smaller sets)

ModelFactory = Callable[..., Any]


# ---------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class SuiteData:
    """One data set of the suite: tables, how every model reads them, the clock unit and the windows."""

    name: str
    visits: pl.DataFrame
    outcomes: pl.DataFrame
    table: dict[str, Any]  # table-reading options passed to every model factory (origin, ...)
    unit: str
    windows: tuple[tuple[float, float], ...]  # (landmark s, horizon Δ), on the unit's clock since origin
    patients: pl.DataFrame  # the cohort's patients: patient_id, event, outcome_time (the folds' unit and strata)
    notes: tuple[str, ...] = ()

    @property
    def landmarks(self) -> tuple[float, ...]:
        return tuple(sorted({s for s, _ in self.windows}))

    def horizons(self, s: float) -> list[float]:
        return sorted(h for l, h in self.windows if l == s)


WINDOW_RULES = ("events", "follow-up")


def _suite_data(name: str, visits: pl.DataFrame, outcomes: pl.DataFrame, table: dict[str, Any], unit: str,
                notes: Iterable[str], windows: str) -> SuiteData:
    """The cohort's patients (with a visit before the outcome) and their rows only, so that every model reads
    the same patients without further options."""
    cohort = CohortSettings(**table, unmatched="drop").build(visits, outcomes)
    patients = cohort.patients.select("patient_id", "event", "outcome_time")
    ids = patients["patient_id"]
    visits, outcomes = keep_patients(visits, ids), keep_patients(outcomes, ids)
    if windows not in WINDOW_RULES:
        raise ConfigError(f"windows must be one of {WINDOW_RULES}, got {windows!r}")
    times = patients.filter(pl.col("event") > 0) if windows == "events" else patients
    n_events = int((patients["event"] > 0).sum())
    facts = (f"{patients.height:,} patients, {visits.height:,} visits, {n_events:,} events; times in {unit}.",)
    return SuiteData(name, visits, outcomes, table, unit, quantile_windows(times["outcome_time"].to_numpy()),
                     patients, (*notes, *facts))


def _pbc(windows: str) -> SuiteData:
    from ehrseq.datasets import load_pbcseq

    visits, outcomes = load_pbcseq(outcome="death")
    return _suite_data("pbc", visits, outcomes, {}, "days",
                       ["PBC (`load_pbcseq(outcome=\"death\")`): death, transplant censored; origin = registration."],
                       windows)


def _nafld(windows: str) -> SuiteData:
    from ehrseq.datasets import load_nafld

    visits, outcomes = load_nafld()
    n_subjects = outcomes.height
    data = _suite_data("nafld", visits, outcomes, {"origin": "entry_time"}, "days",
                       ["NAFLD (`load_nafld()`), the full cohort: death; origin = the index date "
                        "(`origin=\"entry_time\"`)."], windows)
    dropped = n_subjects - data.patients.height
    return replace(data, notes=(*data.notes, f"{dropped:,} of the {n_subjects:,} subjects have no visit before their "
                                "outcome and are not in the cohort."))


def _survset(name: str) -> Callable[[str], SuiteData]:
    def load(windows: str) -> SuiteData:
        from ehrseq.datasets import SURVSET_TIME_UNITS, load_survset

        visits, outcomes = load_survset(name)
        note = (f"SurvSet `{name}` (`load_survset(\"{name}\")`, counting-process rows → a visit at each start); "
                "origin = the first visit (entry).")
        return _suite_data(name, visits, outcomes, {}, SURVSET_TIME_UNITS[name], [note], windows)

    return load


#: Loader of every data set of the suite.
DATASETS: dict[str, Callable[[str], SuiteData]] = {
    "pbc": _pbc,
    "nafld": _nafld,
    **{name: _survset(name) for name in ("heart", "epileptic", "FRTCS", "oldmort", "Rossi")},
}


def load_dataset(name: str, windows: str = "events") -> SuiteData:
    """The suite's data set ``name`` (one of :data:`DATASETS`) with its windows from the quantiles of the
    event times (``windows="events"``) or of all outcome times (``"follow-up"``); held-out sets are refused."""
    if name in HELD_OUT:
        raise ConfigError(f"{name!r} is held out for independent checks; the suite's data sets are "
                          f"{', '.join(DATASETS)}")
    if name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}; the suite's data sets are {', '.join(DATASETS)}")
    return DATASETS[name](windows)


# ---------------------------------------------------------------------------------------------- folds
def fold_seed(dataset: str, repeat: int, seed: int) -> int:
    """The shuffle seed of one repeat of one data set's folds (stable across processes and runs)."""
    return zlib.crc32(f"{dataset}/{repeat}/{seed}".encode())


def assign_folds(data: SuiteData, folds: int, repeat: int, seed: int) -> np.ndarray:
    """Fold index of every patient of ``data.patients`` (in its row order), stratified by event type."""
    parts = split_indices(data.patients["event"].to_numpy(), [1.0 / folds] * folds, fold_seed(data.name, repeat, seed))
    fold = np.empty(data.patients.height, dtype=np.int64)
    for k, part in enumerate(parts):
        fold[part] = k
    return fold


def repeats_for(data: SuiteData, repeats: int) -> int:
    """``repeats`` for cohorts under :data:`SMALL_COHORT` patients, else 1."""
    return repeats if data.patients.height < SMALL_COHORT else 1


# ---------------------------------------------------------------------------------------------- models
class AtLandmark:
    """A landmark model fitted at the landmark of the question: ``predict_risk(..., landmark=s)`` uses
    ``make(s, window)`` fitted on the training tables, with ``window`` the longest horizon asked for at s
    (events after s + window censored). Fitted models are kept per (s, window)."""

    def __init__(self, make: Callable[[float, float], Any], table: Mapping[str, Any]) -> None:
        self.make = make
        self.cohort_settings = CohortSettings(**table)
        self.models_: dict[tuple[float, float], Any] = {}

    def fit(self, visits: Any, outcomes: Any) -> AtLandmark:
        self.cohort_settings.build(visits, outcomes)  # the tables are checked now, not at the first prediction
        self.train_ = (visits, outcomes)
        return self

    def predict_risk(self, visits: Any, horizon: Any, *, landmark: Any = None, outcomes: Any = None) -> pl.DataFrame:
        if landmark is None:
            raise ConfigError("a model fitted at the landmark predicts at a landmark only (landmark=s)")
        if not hasattr(self, "train_"):
            raise ConfigError("fit() first")
        key = (float(landmark), float(np.max(horizon)))
        if key not in self.models_:
            self.models_[key] = self.make(*key).fit(*self.train_)
        return self.models_[key].predict_risk(visits, horizon, landmark=landmark, outcomes=outcomes)


@dataclass(frozen=True)
class ModelSpec:
    """A model of the suite's registry: its label on the results page, its factory (``None``: not available)
    and whether the default run (no ``--models``) fits it, with the reason when not."""

    label: str
    factory: ModelFactory | None
    unavailable: str = ""
    default_run: bool = True


#: The inner search of the tuned model: trials and inner folds per training fold.
TUNED_TRIALS = 10
TUNED_FOLDS = 3


@dataclass(frozen=True)
class TunedOnTrainingFold:
    """``ehrseq.tune`` on the tables given to :meth:`fit` (the training folds: inner cross-validation, never the
    test fold); ``fit`` returns the chosen settings refitted on those tables, a fitted DynamicSurvival."""

    table: Mapping[str, Any]
    n_trials: int = TUNED_TRIALS
    folds: int = TUNED_FOLDS
    fixed: Mapping[str, Any] = field(default_factory=dict)
    min_at_risk: int = 10

    def fit(self, visits: Any, outcomes: Any) -> DynamicSurvival:
        from ehrseq.tuning import tune

        return tune(visits, outcomes, n_trials=self.n_trials, folds=self.folds, fixed={**self.fixed, **self.table},
                    min_at_risk=self.min_at_risk, seed=0, progress=False).model


#: The suite's models. A factory is called with the data set's table-reading options as keyword
#: arguments (``origin=...`` for NAFLD, none for the others) and returns an unfitted estimator with
#: ``fit(visits, outcomes)`` and ``predict_risk(visits, horizon, landmark=, outcomes=)``.
MODELS: dict[str, ModelSpec] = {
    "default": ModelSpec("ehrseq default", lambda **table: DynamicSurvival(progress=False, **table)),
    "tuned": ModelSpec("ehrseq tuned", lambda **table: TunedOnTrainingFold(table), default_run=False,
                       unavailable=f"not in the default run: {TUNED_TRIALS} trials × {TUNED_FOLDS} inner folds + the "
                                   "refit per fold would break its 45-minute budget; --models tuned runs it"),
    "cox": ModelSpec("landmark Cox", lambda **table: AtLandmark(
        lambda s, window: LandmarkCox(landmarks=[s], window=window, alpha=0.01, history=False, **table), table)),
    "cox_history": ModelSpec("landmark Cox + visit history", lambda **table: AtLandmark(
        lambda s, window: LandmarkCox(landmarks=[s], window=window, alpha=0.01, **table), table)),
    "rsf": ModelSpec("landmark RSF", lambda **table: AtLandmark(
        lambda s, window: LandmarkRandomForest(landmarks=[s], window=window, max_samples=RSF_MAX_SAMPLES, n_jobs=1,
                                               history=False, seed=0, **table), table)),
    "km": ModelSpec("Kaplan–Meier", lambda **table: KaplanMeier(**table)),
}


def _quick_models() -> dict[str, ModelFactory]:
    """Tiny budgets for ``--quick`` (a smoke test of the code paths, not a result)."""
    return {
        "default": lambda **table: DynamicSurvival(progress=False, epochs=2, d_model=8, hidden=(8,), **table),
        "tuned": lambda **table: TunedOnTrainingFold(table, n_trials=2, folds=2, min_at_risk=5,
                                                     fixed={"epochs": 2, "d_model": 8, "hidden": (8,)}),
        "cox": MODELS["cox"].factory,  # type: ignore[dict-item]
        "cox_history": MODELS["cox_history"].factory,  # type: ignore[dict-item]
        "rsf": lambda **table: AtLandmark(lambda s, window: LandmarkRandomForest(
            landmarks=[s], window=window, n_estimators=5, history=False, seed=0, **table), table),
        "km": MODELS["km"].factory,  # type: ignore[dict-item]
    }


def label(model: str) -> str:
    return MODELS[model].label if model in MODELS else model


# ---------------------------------------------------------------------------------------------- tasks
_SCHEMA = {
    "dataset": pl.String, "repeat": pl.Int64, "fold": pl.Int64, "model": pl.String, "landmark": pl.Float64,
    "horizon": pl.Float64, "n_at_risk": pl.Int64, "n_events": pl.Int64, "c_index": pl.Float64,
    "uno_c": pl.Float64, "auc": pl.Float64, "brier": pl.Float64, "ibs": pl.Float64, "mean_risk": pl.Float64,
    "observed_risk": pl.Float64, "note": pl.String, "seconds": pl.Float64,
}


@dataclass(frozen=True)
class Task:
    """Fit one model on the training folds of one (data set, repeat, fold) and evaluate every window."""

    dataset: str
    repeat: int
    fold: int
    model: str
    test_ids: tuple[Any, ...]

    @property
    def key(self) -> str:
        return f"{self.dataset}-r{self.repeat}-f{self.fold}-{self.model}"


def _evaluate(data: SuiteData, factory: ModelFactory, task: Task, predictions_path: Path | None = None
              ) -> list[dict[str, Any]]:
    """The landmark table rows of one task (see :class:`Task`); with ``predictions_path`` the test patients'
    landmark risks (``patient_id, landmark, horizon, risk`` on the evaluation grid) are written there as Parquet."""
    test_ids = pl.Series(list(task.test_ids))
    in_test = data.patients["patient_id"].is_in(test_ids.implode())
    train_ids = data.patients.filter(~in_test)["patient_id"]
    train = (keep_patients(data.visits, train_ids), keep_patients(data.outcomes, train_ids))
    test = (keep_patients(data.visits, test_ids), keep_patients(data.outcomes, test_ids))
    started = time.perf_counter()
    predictions = pl.DataFrame(schema={"patient_id": data.patients.schema["patient_id"], "landmark": pl.Float64,
                                       "horizon": pl.Float64, "risk": pl.Float64})
    try:
        model = factory(**data.table).fit(*train)
        test_times, train_times = outcomes_since_origin(test, model), outcomes_since_origin(train, model)
        frames = []
        for s in data.landmarks:
            at_s = landmark_predictions(model, test[0], [s], data.horizons(s), outcomes=test[1])
            frames.append(landmark_from_predictions(at_s, test_times, train_times, [s], data.horizons(s),
                                                    min_at_risk=1))
            predictions = pl.concat([predictions, at_s.cast(dict(predictions.schema))])
        rows = pl.concat(frames).to_dicts()
    except EhrseqError as exc:  # recorded in the table (null metrics, the reason in note), never dropped
        reason = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        rows = [{"landmark": s, "horizon": h, "note": reason} for s, h in data.windows]
    if predictions_path is not None:
        predictions_path.parent.mkdir(parents=True, exist_ok=True)
        predictions.write_parquet(predictions_path)
    seconds = time.perf_counter() - started
    ident = {"dataset": task.dataset, "repeat": task.repeat, "fold": task.fold, "model": task.model}
    return [{**ident, **row, "seconds": seconds} for row in rows]


def _protocol(task: Task, data: SuiteData) -> dict[str, Any]:
    """What a cached result must match to be reused: the test patients, the windows and the tables' size."""
    ids = ",".join(str(i) for i in sorted(task.test_ids))
    return {"windows": [list(w) for w in data.windows], "table": data.table,
            "test_ids": zlib.crc32(ids.encode()), "n_visits": data.visits.height}


def _read_cache(path: Path | None, protocol: dict[str, Any]) -> list[dict[str, Any]] | None:
    if path is None or not path.exists() or not path.with_suffix(".parquet").exists():
        return None
    stored = json.loads(path.read_text(encoding="utf-8"))
    return stored["rows"] if stored.get("protocol") == protocol else None


def _write_cache(path: Path, protocol: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"protocol": protocol, "rows": rows}), encoding="utf-8")
    temporary.replace(path)


def _in_worker(index: int, data: SuiteData, factory: ModelFactory, task: Task,
               predictions_path: Path | None) -> tuple[int, list[dict[str, Any]]]:
    """One task in a worker process (fresh, not forked: Polars' thread pool does not survive a fork)."""
    torch.set_num_threads(1)
    return index, _evaluate(data, factory, task, predictions_path)


def run_suite(
    models: Mapping[str, ModelFactory],
    datasets: Sequence[str] | Mapping[str, SuiteData] = tuple(DATASETS),
    *,
    folds: int = 5,
    repeats: int = 3,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    jobs: int = 1,
    say: Callable[[str], None] = lambda text: None,
) -> pl.DataFrame:
    """Cross-validate every model on every data set; one row per (dataset, repeat, fold, model, landmark,
    horizon) with the landmark-table metrics, the window's counts and ``seconds`` (fit + evaluation of
    that (dataset, repeat, fold, model)).

    ``models`` maps names to factories: ``factory(**table)`` returns an unfitted estimator, ``table`` being
    the data set's table-reading options (``{"origin": "entry_time"}`` for NAFLD, ``{}`` otherwise).
    ``datasets`` names data sets of :data:`DATASETS` or maps names to loaded :class:`SuiteData`.
    With ``cache_dir`` each (dataset, repeat, fold, model) result is stored as JSON (and the test
    patients' landmark risks as Parquet, read by :func:`noise_flags`) and reused when the test patients,
    windows and tables are unchanged — keyed by the model's *name*: use a new name (or delete its files)
    after changing a model. ``jobs`` > 1 runs the fits in that many processes.
    """
    if folds < 2 or repeats < 1 or jobs < 1:
        raise ConfigError(f"folds must be >= 2, repeats and jobs >= 1; got {folds}, {repeats}, {jobs}")
    loaded = dict(datasets) if isinstance(datasets, Mapping) else {name: load_dataset(name) for name in datasets}
    tasks: list[Task] = []
    for name, data in loaded.items():
        for repeat in range(repeats_for(data, repeats)):
            fold_of = assign_folds(data, folds, repeat, seed)
            ids = data.patients["patient_id"].to_list()
            for k in range(folds):
                test_ids = tuple(i for i, f in zip(ids, fold_of) if f == k)
                tasks.extend(Task(name, repeat, k, model, test_ids) for model in models)
    cache = Path(cache_dir) if cache_dir is not None else None
    results: dict[int, list[dict[str, Any]]] = {}
    pending = []

    def cache_path(task: Task) -> Path | None:
        return None if cache is None else cache / f"{task.key}.json"

    def predictions_path(task: Task) -> Path | None:
        return None if cache is None else cache / f"{task.key}.parquet"

    for index, task in enumerate(tasks):
        rows = _read_cache(cache_path(task), _protocol(task, loaded[task.dataset]))
        if rows is None:
            pending.append(index)
        else:
            results[index] = rows
    say(f"{len(tasks)} fits: {len(tasks) - len(pending)} from the cache, {len(pending)} to run on {jobs} process(es)")

    def done(index: int, rows: list[dict[str, Any]]) -> None:
        results[index] = rows
        task = tasks[index]
        path = cache_path(task)
        if path is not None:
            _write_cache(path, _protocol(task, loaded[task.dataset]), rows)
        c = [r["c_index"] for r in rows if r.get("c_index") is not None]
        note = next((r["note"] for r in rows if str(r.get("note") or "").startswith("failed")), "")
        say(f"  {task.dataset} repeat {task.repeat} fold {task.fold} {task.model:10s} {rows[0]['seconds']:7.1f} s  "
            f"mean C {fmt(np.mean(c) if c else None)} {note}")

    if jobs == 1 or len(pending) <= 1:
        for index in pending:
            task = tasks[index]
            done(index, _evaluate(loaded[task.dataset], models[task.model], task, predictions_path(task)))
    else:
        # longest first: the biggest cohorts' sequence models set the wall time; factories travel by cloudpickle
        order = sorted(pending, key=lambda i: -loaded[tasks[i].dataset].visits.height)
        parallel = Parallel(n_jobs=min(jobs, len(pending)), backend="loky", return_as="generator_unordered")
        work = (delayed(_in_worker)(i, loaded[tasks[i].dataset], models[tasks[i].model], tasks[i],
                                    predictions_path(tasks[i])) for i in order)
        for index, rows in parallel(work):
            done(index, rows)
    rows = [row for index in range(len(tasks)) for row in results[index]]
    return pl.DataFrame(rows, schema=_SCHEMA)


# ---------------------------------------------------------------------------------------------- summaries
@dataclass(frozen=True)
class SuiteSummary:
    """The suite's tables (Polars frames):

    * ``windows`` — per (dataset, landmark, horizon): the least patients at risk and events over test
      folds, and ``kept``;
    * ``per_fold`` — per (dataset, model, repeat, fold): each metric's mean over kept windows;
    * ``per_dataset`` — per (dataset, model): ``<metric>_mean`` / ``<metric>_sd`` over folds, ``n_folds``,
      the paired differences against the reference model ``d_<metric>_mean`` / ``d_<metric>_sd``
      (per fold, then over folds) and ``seconds`` (mean fit + evaluation time per fold);
    * ``overall`` — per model: the paired differences averaged over data sets (``d_<metric>``), and the
      number of data sets;
    * ``failures`` — (dataset, model, repeat, fold, note) of fits that raised an ehrseq error;
    * ``seconds`` — per dataset, the sum over its folds and models of the fit + evaluation times.

    ``n_folds`` counts the folds with a value (a failed fit has none).
    """

    windows: pl.DataFrame
    per_fold: pl.DataFrame
    per_dataset: pl.DataFrame
    overall: pl.DataFrame
    failures: pl.DataFrame
    seconds: pl.DataFrame
    reference: str
    min_at_risk: int
    min_events: int


def summarise(frame: pl.DataFrame, *, min_at_risk: int = 10, min_events: int = 3,
              reference: str = REFERENCE) -> SuiteSummary:
    """The suite's tables from :func:`run_suite`'s frame (see :class:`SuiteSummary`)."""
    names = [m for m, _, _ in METRICS]
    frame = frame.with_columns(pl.col("note").cast(pl.String))  # all null when read back from a CSV
    windows = (
        frame.group_by("dataset", "landmark", "horizon")
        .agg(pl.col("n_at_risk").min().alias("min_at_risk"), pl.col("n_events").min().alias("min_events"))
        .with_columns(((pl.col("min_at_risk") >= min_at_risk) & (pl.col("min_events") >= min_events))
                      .fill_null(False).alias("kept"))
        .sort("dataset", "landmark", "horizon")
    )
    kept = frame.join(windows.filter("kept").select("dataset", "landmark", "horizon"),
                      on=["dataset", "landmark", "horizon"])
    keys = ["dataset", "model", "repeat", "fold"]
    tasks = frame.group_by(keys).agg(pl.col("seconds").first(), pl.col("note").filter(
        pl.col("note").str.starts_with("failed")).first())
    per_fold = (kept.group_by(keys).agg(*[pl.col(m).mean() for m in names])
                .join(tasks.select(*keys, "seconds"), on=keys).sort(keys))
    reference_folds = per_fold.filter(pl.col("model") == reference).select(
        "dataset", "repeat", "fold", *[pl.col(m).alias(f"ref_{m}") for m in names])
    paired = per_fold.join(reference_folds, on=["dataset", "repeat", "fold"], how="left").with_columns(
        (pl.col(m) - pl.col(f"ref_{m}")).alias(f"d_{m}") for m in names)
    per_dataset = (
        paired.group_by("dataset", "model")
        .agg(*[pl.col(m).mean().alias(f"{m}_mean") for m in names],
             *[pl.col(m).std().alias(f"{m}_sd") for m in names],
             *[pl.col(f"d_{m}").mean().alias(f"d_{m}_mean") for m in names],
             *[pl.col(f"d_{m}").std().alias(f"d_{m}_sd") for m in names],
             pl.col("c_index").is_not_null().sum().alias("n_folds"), pl.col("seconds").mean())
        .sort("dataset", "model")
    )
    overall = (per_dataset.group_by("model")
               .agg(*[pl.col(f"d_{m}_mean").mean().alias(f"d_{m}") for m in names],
                    pl.col("d_c_index_mean").is_not_null().sum().alias("n_datasets"))
               .sort("model"))
    failures = tasks.filter(pl.col("note").is_not_null()).select(*keys, "note").sort(keys)
    seconds = tasks.group_by("dataset").agg(pl.col("seconds").sum()).sort("dataset")
    return SuiteSummary(windows, per_fold, per_dataset, overall, failures, seconds, reference, min_at_risk, min_events)


# ---------------------------------------------------------------------------------------------- noise
def _pooled_predictions(cache_dir: Path, frame: pl.DataFrame, dataset: str, repeat: int, model: str) -> pl.DataFrame | None:
    """The out-of-fold landmark risks of one repeat (every patient once), or None when a fold has none."""
    folds = frame.filter((pl.col("dataset") == dataset) & (pl.col("repeat") == repeat) & (pl.col("model") == model))
    parts = []
    for fold in sorted(folds["fold"].unique().to_list()):
        path = cache_dir / f"{Task(dataset, repeat, fold, model, ()).key}.parquet"
        if not path.exists():
            return None
        part = pl.read_parquet(path)
        if part.height == 0:
            return None
        parts.append(part)
    return pl.concat(parts) if parts else None


def noise_flags(summary: SuiteSummary, frame: pl.DataFrame, datasets: Mapping[str, SuiteData], cache_dir: str | Path,
                *, metrics: Sequence[str] = ("c_index", "ibs"), n_bootstrap: int = 1000, level: float = 0.95,
                seed: int = 0) -> pl.DataFrame:
    """Whether each model's difference against the reference is beyond the noise of the test patients.

    Paired bootstrap of the patients (:mod:`ehrseq.bootstrap`: ``bootstrap_weights``, ``window_resamples``,
    ``paired_p_value``) on the out-of-fold predictions stored in ``cache_dir`` by :func:`run_suite`: within a
    repeat every patient is a test patient once, so the folds' predictions pool into one prediction per
    patient, scored against all patients' outcomes (censoring weights from all patients too). A resample
    draws the data set's patients with replacement; the same resample weighs both models, every kept
    window and every repeat. Per resample, the difference (model − reference) is averaged over the kept
    windows and the repeats. Returns ``dataset, model, metric, difference`` (the pooled estimate),
    ``lower, upper`` (percentile interval at ``level``), ``p_value``, ``beyond_noise`` (the interval
    excludes 0) and ``n_resamples``; nothing for a model without stored predictions.
    """
    cache = Path(cache_dir)
    rows = []
    for name, data in datasets.items():
        kept = summary.windows.filter((pl.col("dataset") == name) & pl.col("kept"))
        if kept.height == 0:
            continue
        times = data.patients.select("patient_id", "outcome_time", "event")
        population = times["patient_id"]
        index = pl.DataFrame({"patient_id": population, "row": np.arange(population.len())})
        weights = np.vstack([np.ones(population.len()), bootstrap_weights(population.len(), n_bootstrap, seed)])
        repeats = sorted(frame.filter(pl.col("dataset") == name)["repeat"].unique().to_list())
        models = [m for m in frame.filter(pl.col("dataset") == name)["model"].unique(maintain_order=True).to_list()
                  if m != summary.reference]
        reference = {r: _pooled_predictions(cache, frame, name, r, summary.reference) for r in repeats}
        for model in models:
            per_repeat = {m: [] for m in metrics}
            for r in repeats:
                pooled = _pooled_predictions(cache, frame, name, r, model)
                if pooled is None or reference[r] is None:
                    break
                per_window = {m: [] for m in metrics}
                for s in sorted(kept["landmark"].unique().to_list()):
                    horizons = kept.filter(pl.col("landmark") == s)["horizon"].to_list()
                    for a, b in zip(landmark_windows(pooled, times, times, [s], horizons),
                                    landmark_windows(reference[r], times, times, [s], horizons)):
                        rows_of = a.patient_id.to_frame().join(index, on="patient_id", how="left")["row"].to_numpy()
                        w = weights[:, rows_of]
                        values_a, values_b = (window_resamples(x, w, 1, list(metrics)) for x in (a, b))
                        for m in metrics:
                            per_window[m].append(values_a[m] - values_b[m])
                for m in metrics:
                    per_repeat[m].append(np.nanmean(np.stack(per_window[m]), axis=0))
            else:
                for m in metrics:
                    d = np.mean(np.stack(per_repeat[m]), axis=0)  # [1 + R]: the estimate, then the resamples
                    lower, upper = percentile_interval(d[1:, None], level)
                    rows.append((name, model, m, float(d[0]), float(lower[0]), float(upper[0]),
                                 paired_p_value(d[1:]), bool(lower[0] > 0 or upper[0] < 0), n_bootstrap))
    schema = {"dataset": pl.String, "model": pl.String, "metric": pl.String, "difference": pl.Float64,
              "lower": pl.Float64, "upper": pl.Float64, "p_value": pl.Float64, "beyond_noise": pl.Boolean,
              "n_resamples": pl.Int64}
    return pl.DataFrame(rows, schema=schema, orient="row")


# ---------------------------------------------------------------------------------------------- report
def _mean_sd(row: Mapping[str, Any], prefix: str, signed: bool = False) -> str:
    mean, sd = row[f"{prefix}_mean"], row[f"{prefix}_sd"]
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return text if sd is None else f"{text} ± {sd:.3f}"


def fmt_signed(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:+.3f}"


def _number(value: float) -> str:
    return f"{value:.4g}"


def _order(models: Sequence[str]) -> list[str]:
    registry = [m for m in MODELS if m in models]
    return registry + [m for m in models if m not in registry]


def write_report(summary: SuiteSummary, datasets: Mapping[str, SuiteData], models: Sequence[str], *,
                 folds: int, repeats: int, seed: int, wall: float, jobs: int, out: Path, command: str, quick: bool,
                 not_run: Mapping[str, str], flags: pl.DataFrame | None = None, started: float | None = None) -> Path:
    """Write ``<out>/suite.md`` (also printed); ``flags`` from :func:`noise_flags` mark the paired differences."""
    title = ("ehrseq real-data suite (--quick smoke test: not a result)" if quick
             else f"ehrseq real-data suite: landmark evaluation on {len(datasets)} data sets, paired by fold")
    doc = Report(title)
    if started is not None:
        doc.started = started
    doc.add(f"Command: `{command}`")
    if not quick:
        doc.add("Why the former defaults failed on small cohorts, and what each change of the method did, measured: "
                "[suite_diagnosis.md](suite_diagnosis.md).")
    doc.section("Protocol", (__doc__ or "").split("\n\n", 1)[1].strip())
    doc.add(f"{folds} folds; data sets under {SMALL_COHORT} patients cross-validated {repeats} times with different "
            f"shuffles; seed {seed}. Windows kept when every test fold has ≥ {summary.min_at_risk} patients at risk "
            f"and ≥ {summary.min_events} events in the window.")
    for model, reason in not_run.items():
        doc.add(f"Not run: {label(model)} ({reason}).")
    missing = [name for name in DATASETS if name not in datasets]
    if missing:
        doc.add(f"Data sets of the suite not in this run: {', '.join(missing)}.")
    if summary.failures.height:
        doc.add("Fits that failed (their folds have no value):")
        doc.table(["data set", "model", "repeat", "fold", "error"],
                  [[r["dataset"], label(r["model"]), r["repeat"], r["fold"], r["note"]]
                   for r in summary.failures.iter_rows(named=True)])
    ordered = _order(models)
    per_dataset, overall = summary.per_dataset, summary.overall
    names = [m for m, _, _ in METRICS]

    compared = [m for m in ordered if m != summary.reference]
    totals = {r["model"]: r for r in overall.iter_rows(named=True)}
    beyond = set() if flags is None else {(r["dataset"], r["model"], r["metric"])
                                          for r in flags.filter("beyond_noise").iter_rows(named=True)}
    noise = ("" if flags is None else " **Bold**: the pooled out-of-fold difference of the section \"Noise of the "
             "test patients\" is beyond that noise (its 95 % bootstrap interval excludes 0); the pooled difference "
             "can differ from the mean over folds shown here, most on the smallest sets.")
    for metric, title in (("c_index", "C-index (higher is better)"), ("ibs", "IBS (lower is better)")):
        doc.section(f"Paired {title.split(' ')[0]} difference against landmark Cox",
                    f"{title}: per data set, mean ± sd over folds of (model − landmark Cox), each fold's value the "
                    f"mean over kept windows. Last row: the mean over data sets.{noise}")
        rows = []
        for name in datasets:
            part = {r["model"]: r for r in per_dataset.filter(pl.col("dataset") == name).iter_rows(named=True)}
            cells = []
            for m in compared:
                cell = _mean_sd(part[m], f"d_{metric}", signed=True) if m in part else "–"
                cells.append(f"**{cell}**" if (name, m, metric) in beyond else cell)
            rows.append([name, *cells])
        rows.append(["**mean over data sets**", *[fmt_signed(totals.get(m, {}).get(f"d_{metric}")) for m in compared]])
        doc.table(["data set", *[label(m) for m in compared]], rows)

    for name, data in datasets.items():
        doc.section(f"{name}", *[f"- {n}" for n in data.notes])
        part = {r["model"]: r for r in per_dataset.filter(pl.col("dataset") == name).iter_rows(named=True)}
        table = []
        for model in ordered:
            if model not in part:
                continue
            r = part[model]
            paired = [("–" if model == summary.reference else _mean_sd(r, f"d_{m}", signed=True)) for m in names]
            table.append([label(model), *[_mean_sd(r, m) for m in names], *paired, r["n_folds"],
                          fmt(r["seconds"], 1)])
        doc.add("Mean ± sd over folds; Δ = paired difference against landmark Cox (per fold, then mean ± sd):")
        doc.table(["model", "C-index", "Brier", "IBS", "Δ C-index", "Δ Brier", "Δ IBS", "folds", "s/fold"], table)
        win = summary.windows.filter(pl.col("dataset") == name)
        doc.add(f"Windows (landmark s and horizon Δ in {data.unit}; least patients at risk and events over test folds):")
        doc.table(["s", "Δ", "s + Δ", "at risk", "events", "kept"],
                  [[_number(w["landmark"]), _number(w["horizon"]), _number(w["landmark"] + w["horizon"]),
                    w["min_at_risk"], w["min_events"], "yes" if w["kept"] else "no (too few at risk or events)"]
                   for w in win.iter_rows(named=True)])

    if flags is not None and flags.height:
        resamples = flags["n_resamples"][0] if "n_resamples" in flags.columns else None
        doc.section("Noise of the test patients",
                    "Paired bootstrap of the patients (`ehrseq.bootstrap`: `bootstrap_weights`, `window_resamples`, "
                    "`paired_p_value`) on the out-of-fold predictions: within a repeat every patient is a test patient "
                    "once, so the folds' predictions pool into one prediction per patient, scored against all "
                    "patients' outcomes (censoring weights from all patients too). A resample draws the data set's "
                    "patients with replacement; the same resample weighs both models, every kept window and every "
                    "repeat. Per resample, the difference (model − landmark Cox) is averaged over the kept windows "
                    f"and the repeats{'' if resamples is None else f' ({resamples} resamples)'}. Pooling compares "
                    "risks of models fitted on different folds, so the pooled difference is not the mean over folds "
                    "of the tables above; it answers whether the difference could come from which patients were "
                    "drawn.")
        doc.table(["data set", "model", "metric", "pooled difference", "95 % interval", "p", "beyond noise"],
                  [[r["dataset"], label(r["model"]), r["metric"], f"{r['difference']:+.4f}",
                    f"[{r['lower']:+.4f}, {r['upper']:+.4f}]", fmt(r["p_value"], 3), "yes" if r["beyond_noise"] else "no"]
                   for r in flags.iter_rows(named=True)])
    seconds = dict(summary.seconds.iter_rows())
    doc.section("Time", f"This invocation: {wall:.0f} s of wall time with {jobs} process(es) on {os.cpu_count()} cores "
                "(fits read from the cache cost nothing here). Per data set, the sum of the measured fit + evaluation "
                "times of its folds and models (one core each; a run with 2 processes takes about half the total):")
    doc.table(["data set", "seconds"], [[name, f"{seconds.get(name, 0.0):.0f}"] for name in datasets]
              + [["**total**", f"{sum(seconds.values()):.0f}"]])
    return doc.write(out, "suite")


# ---------------------------------------------------------------------------------------------- entry point
def _names(text: str | None, known: Iterable[str], what: str) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--{what}: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


def main(argv: list[str] | None = None) -> None:
    parser = _repro.parser("suite", __doc__.splitlines()[0])
    parser.add_argument("--datasets", default=None, help=f"comma-separated subset of {','.join(DATASETS)} (default all)")
    parser.add_argument("--models", default=None,
                        help=f"comma-separated subset of {','.join(MODELS)} (default every one of the default run: all "
                             "but tuned)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    parser.add_argument("--repeats", type=int, default=2,
                        help=f"repeats of the folds for data sets under {SMALL_COHORT} patients (default 2)")
    parser.add_argument("--cache", type=Path, default=Path("outputs") / "suite-cache",
                        help="directory of the per-(dataset, repeat, fold, model) results and predictions, reused by "
                             "later runs (default outputs/suite-cache)")
    parser.add_argument("--bootstrap", type=int, default=200,
                        help="bootstrap resamples of the patients for the noise flags (0: none)")
    parser.add_argument("--jobs", type=int, default=2, help="processes fitting in parallel (default 2)")
    parser.add_argument("--min-at-risk", type=int, default=10, help="window kept if every test fold has this many at risk")
    parser.add_argument("--min-events", type=int, default=3, help="... and this many events in the window")
    parser.add_argument("--windows", choices=WINDOW_RULES, default="events",
                        help="landmarks and window ends at quantiles of the event times (default) or of follow-up")
    args = parser.parse_args(argv)
    if args.datasets is not None and any(n.strip() in HELD_OUT for n in args.datasets.split(",")):
        raise ConfigError(f"--datasets: {', '.join(HELD_OUT)} are held out for independent checks")
    datasets = _names(args.datasets, DATASETS, "datasets")
    requested = _names(args.models, MODELS, "models")
    out = _repro.start(args)
    command = "python -m ehrseq.bench suite " + " ".join(argv if argv is not None else [])
    say = lambda text: print(text, flush=True)  # noqa: E731
    if args.quick:
        args.folds, args.repeats = 2, 1
        datasets = datasets or ["heart"]
        factories = _quick_models()
    else:
        factories = {name: spec.factory for name, spec in MODELS.items() if spec.factory is not None}
    chosen = requested or [m for m in MODELS if args.quick or MODELS[m].default_run]
    not_run = {m: MODELS[m].unavailable for m in MODELS
               if (m in chosen and m not in factories) or (not requested and m not in chosen)}
    factories = {m: factories[m] for m in chosen if m in factories}
    started = time.perf_counter()
    loaded = {name: load_dataset(name, args.windows) for name in (datasets or DATASETS)}
    for data in loaded.values():
        say(f"{data.name}: {data.notes[-1]} windows (s, Δ): "
            + ", ".join(f"({_number(s)}, {_number(h)})" for s, h in data.windows))
    frame = run_suite(factories, loaded, folds=args.folds, repeats=args.repeats, seed=args.seed,
                      cache_dir=args.cache, jobs=args.jobs, say=say)
    wall = time.perf_counter() - started
    frame.write_csv(out / "suite.csv")
    summary = summarise(frame, min_at_risk=args.min_at_risk, min_events=args.min_events)
    flags = None
    if args.bootstrap and REFERENCE in factories:
        flags = noise_flags(summary, frame, loaded, args.cache, n_bootstrap=args.bootstrap, seed=args.seed)
    write_report(summary, loaded, list(factories), folds=args.folds, repeats=args.repeats, seed=args.seed,
                 wall=wall, jobs=args.jobs, out=out, command=command, quick=args.quick, not_run=not_run, flags=flags,
                 started=started)
    seconds = dict(summary.seconds.iter_rows())
    print(format_table(["data set", "model", "C-index", "Δ C vs Cox", "IBS", "Δ IBS vs Cox"],
                       [[r["dataset"], label(r["model"]), _mean_sd(r, "c_index"), _mean_sd(r, "d_c_index", True),
                         _mean_sd(r, "ibs"), _mean_sd(r, "d_ibs", True)]
                        for r in summary.per_dataset.iter_rows(named=True)]))
    print(f"time: {wall:.0f} s wall ({args.jobs} processes); per data set (sum of fits): "
          + ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items()))
