"""Results table on real data: ehrseq sequence models versus Kaplan–Meier, landmark Cox and landmark RSF, by 5-fold cross-validation.

Data (docs/reference.md §C):

* **PBC** — ``load_pbcseq()``, death (transplant censored); origin = first visit (registration);
  landmarks 1, 2, 3, 5 years, horizons 1, 3, 5 years.
* **NAFLD** — ``load_nafld()``, death; origin = the index date (``origin="entry_time"``,
  ``unmatched="drop"``: subjects without a visit are dropped, as its docstring says); a random subsample
  of ``--nafld-patients`` subjects with visits for the time budget (stated in the report); landmarks at
  the index date and the 25 % and 50 % quantiles of follow-up, horizons 1 year and those two
  quantiles (rounded to whole years; stated in the report).

Protocol: patient-level folds stratified by event, the same folds for every model. Every model is
fitted on the training folds only; the sequence models hold out 15 % of the training patients for
early stopping (their only model selection); no setting is tuned on the test folds. Settings are the
library defaults except the optimisation budget (epochs, batch size, width, learning rate: the same
for the four sequence models).

Metrics: :func:`ehrseq.evaluate.landmark` per (landmark s, horizon Δ) on the test fold (Harrell C of
events in (s, s + Δ], cumulative/dynamic AUC and IPCW Brier at s + Δ, censoring weights from the
training folds). A (landmark, horizon) window is kept when every test fold has ≥ ``--min-at-risk``
patients at risk and ≥ ``--min-events`` events in it; others are listed as such. D-calibration
(:func:`ehrseq.metrics.d_calibration`, 10 bins) at each landmark s: the conditional survival
P(T > s + t | T > s, history ≤ s) at each at-risk patient's t = min(Y − s, Δ_max), events after
s + Δ_max censored there (Δ_max = the largest horizon); its p-value is reported (p > 0.05: no evidence
of miscalibration). Summary per model: the mean over kept windows (D-calibration: over landmarks)
within each fold, then mean ± sd over folds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ehrseq.baselines import KaplanMeier, LandmarkCox, LandmarkRandomForest
from ehrseq.bench import _repro
from ehrseq.bench._repro import DAYS_PER_YEAR, Report, fmt, keep_patients, mean_sd, sample_ids
from ehrseq.bench._timing import format_table
from ehrseq.data.split import split_indices
from ehrseq.datasets import load_nafld, load_pbcseq
from ehrseq.estimator import DynamicSurvival
from ehrseq.evaluate import landmark
from ehrseq.metrics import d_calibration
from ehrseq.settings import CohortSettings

SEQUENCE_MODELS: dict[str, dict[str, Any]] = {
    "GRU logistic hazard": {"encoder": "gru", "head": "logistic_hazard", "loss": "nll"},
    "Transformer logistic hazard": {"encoder": "transformer", "head": "logistic_hazard", "loss": "nll"},
    "GRU log-normal CRPS": {"encoder": "gru", "head": "lognormal", "loss": "crps"},
    "GRU log-normal MLE": {"encoder": "gru", "head": "lognormal", "loss": "nll"},
}
BASELINES = ("Kaplan-Meier", "landmark Cox", "landmark RSF")
METRICS = ("c_index", "auc", "brier")


@dataclass(frozen=True)
class Dataset:
    """Tables, how to read them, and the evaluation windows."""

    name: str
    visits: pl.DataFrame
    outcomes: pl.DataFrame
    table: dict[str, Any]  # origin / unmatched for the estimator and the baselines
    landmarks: tuple[float, ...]
    horizons: tuple[float, ...]
    notes: tuple[str, ...] = ()

    @property
    def settings(self) -> CohortSettings:
        return CohortSettings(**self.table)


@dataclass(frozen=True)
class Budget:
    """Optimisation budget of the sequence models and size of the forest."""

    epochs: int
    patience: int
    batch_size: int
    d_model: int
    lr: float
    n_estimators: int
    rsf_max_samples: int | None = None


@dataclass
class FoldResult:
    rows: list[pl.DataFrame] = field(default_factory=list)
    seconds: dict[str, list[float]] = field(default_factory=dict)


def _years(days: float) -> str:
    return f"{days / DAYS_PER_YEAR:g}"


# ---------------------------------------------------------------------------------------- data
def pbc(patients: int | None, seed: int) -> Dataset:
    visits, outcomes = load_pbcseq(outcome="death")
    notes = ["PBC (Mayo, `load_pbcseq()`): death, transplant censored; origin = first visit (registration)."]
    if patients is not None:
        ids = sample_ids(outcomes["patient_id"].to_numpy(), patients, seed)
        visits, outcomes = keep_patients(visits, ids), keep_patients(outcomes, ids)
        notes.append(f"Random subsample of {outcomes.height} of the 312 patients.")
    years = DAYS_PER_YEAR
    return Dataset("PBC", visits, outcomes, {}, (1 * years, 2 * years, 3 * years, 5 * years),
                   (1 * years, 3 * years, 5 * years), tuple(notes))


def nafld(patients: int | None, seed: int) -> Dataset:
    visits, outcomes = load_nafld()
    table = {"origin": "entry_time", "unmatched": "drop"}
    cohort = CohortSettings(**table).build(visits, outcomes)
    ids = cohort.patients["patient_id"].to_numpy()
    n_all = ids.size
    ids = sample_ids(ids, patients, seed)
    visits, outcomes = keep_patients(visits, ids), keep_patients(outcomes, ids)
    follow_up = cohort.patients.filter(pl.col("patient_id").is_in(pl.Series(ids).implode()))["outcome_time"].to_numpy()
    q25, q50 = (max(1.0, float(np.round(np.quantile(follow_up, q) / DAYS_PER_YEAR))) for q in (0.25, 0.5))
    landmarks = tuple(sorted({0.0, q25 * DAYS_PER_YEAR, q50 * DAYS_PER_YEAR}))
    horizons = tuple(sorted({DAYS_PER_YEAR, q25 * DAYS_PER_YEAR, q50 * DAYS_PER_YEAR}))
    notes = (
        "NAFLD (Rochester Epidemiology Project, `load_nafld()`): death; origin = index date "
        "(`origin=\"entry_time\"`, `unmatched=\"drop\"`: subjects without a visit dropped).",
        f"Random subsample of {ids.size:,} of the {n_all:,} subjects with visits (seed {seed}), for the time budget; "
        f"{visits.height:,} visits, {int((outcomes['event'] == 1).sum())} deaths.",
        f"Landmarks: the index date and the 25 % / 50 % quantiles of follow-up in the subsample, rounded to whole "
        f"years ({', '.join(_years(s) for s in landmarks)} y); horizons 1 y and the same quantiles "
        f"({', '.join(_years(h) for h in horizons)} y).",
    )
    return Dataset("NAFLD", visits, outcomes, table, landmarks, horizons, notes)


def folds(dataset: Dataset, k: int, seed: int) -> list[np.ndarray]:
    """Test patient ids of each of ``k`` folds, stratified by event (patients of the cohort only)."""
    patients = dataset.settings.build(dataset.visits, dataset.outcomes).patients
    parts = split_indices(patients["event"].to_numpy(), [1.0 / k] * k, seed)
    ids = patients["patient_id"].to_numpy()
    return [ids[part] for part in parts]


# ---------------------------------------------------------------------------------------- models
def model_factories(dataset: Dataset, budget: Budget, seed: int) -> dict[str, Callable[[], Any]]:
    window = max(dataset.horizons)
    factories: dict[str, Callable[[], Any]] = {}
    for name, spec in SEQUENCE_MODELS.items():
        def make(spec: dict[str, Any] = spec) -> DynamicSurvival:
            return DynamicSurvival(**spec, grid=20, d_model=budget.d_model, epochs=budget.epochs,
                                   patience=budget.patience, batch_size=budget.batch_size, lr=budget.lr, seed=seed,
                                   progress=False, device="cpu", **dataset.table)
        factories[name] = make
    factories["Kaplan-Meier"] = lambda: KaplanMeier(**dataset.table)
    factories["landmark Cox"] = lambda: LandmarkCox(window=window, **dataset.table)
    factories["landmark RSF"] = lambda: LandmarkRandomForest(window=window, n_estimators=budget.n_estimators,
                                                             max_samples=budget.rsf_max_samples, seed=seed,
                                                             **dataset.table)
    return factories


# ---------------------------------------------------------------------------------------- metrics
def landmark_d_calibration(model: Any, visits: pl.DataFrame, outcomes: pl.DataFrame, settings: CohortSettings,
                           s: float, h_max: float) -> float | None:
    """D-calibration p-value at landmark ``s`` (see the module docstring); None with < 10 patients at risk."""
    patients = settings.build(visits, outcomes, unmatched="drop").patients
    at_risk = patients.filter((pl.col("outcome_time") > s) & (pl.col("first_visit") <= s))
    if at_risk.height < 10:
        return None
    remaining = at_risk["outcome_time"].to_numpy() - s
    t = np.minimum(remaining, h_max)
    event = (at_risk["event"].to_numpy() == 1) & (remaining <= h_max)
    ids = at_risk["patient_id"]
    curves = model.predict_survival(keep_patients(visits, ids), np.unique(t), landmark=s,
                                    outcomes=keep_patients(outcomes, ids))
    wanted = pl.DataFrame({"patient_id": ids, "horizon": t})
    survival = wanted.join(curves.select("patient_id", "horizon", "survival"), on=["patient_id", "horizon"],
                           how="left", maintain_order="left")["survival"].to_numpy()
    return float(d_calibration(t, event, survival).p_value)


def run_fold(dataset: Dataset, factories: dict[str, Callable[[], Any]], test_ids: np.ndarray, fold: int,
             say: Callable[[str], None]) -> FoldResult:
    test = (keep_patients(dataset.visits, test_ids), keep_patients(dataset.outcomes, test_ids))
    train_mask = ~dataset.outcomes["patient_id"].is_in(pl.Series(test_ids).implode())
    train_ids = dataset.outcomes.filter(train_mask)["patient_id"]
    train = (keep_patients(dataset.visits, train_ids), keep_patients(dataset.outcomes, train_ids))
    result = FoldResult()
    h_max = max(dataset.horizons)
    for name, make in factories.items():
        started = time.perf_counter()
        model = make().fit(*train)
        seconds = time.perf_counter() - started
        result.seconds.setdefault(name, []).append(seconds)
        frame = landmark(model, *test, dataset.landmarks, dataset.horizons, train, min_at_risk=1)
        dcal = {s: landmark_d_calibration(model, *test, dataset.settings, s, h_max) for s in dataset.landmarks}
        frame = frame.with_columns(
            pl.lit(dataset.name).alias("dataset"), pl.lit(name).alias("model"), pl.lit(fold).alias("fold"),
            pl.col("landmark").replace_strict(dcal, return_dtype=pl.Float64).alias("dcal_p"),
        )
        result.rows.append(frame)
        say(f"  {dataset.name} fold {fold + 1}: {name:28s} fit {seconds:6.1f} s, mean C "
            f"{fmt(frame['c_index'].mean())}, mean Brier {fmt(frame['brier'].mean())}")
    return result


# ---------------------------------------------------------------------------------------- summaries
def kept_windows(results: pl.DataFrame, min_at_risk: int, min_events: int) -> pl.DataFrame:
    """dataset, landmark, horizon, min at risk / events over folds, and ``kept``."""
    return (
        results.group_by("dataset", "landmark", "horizon")
        .agg(pl.col("n_at_risk").min().alias("min_at_risk"), pl.col("n_events").min().alias("min_events"))
        .with_columns(((pl.col("min_at_risk") >= min_at_risk) & (pl.col("min_events") >= min_events)).alias("kept"))
        .sort("dataset", "landmark", "horizon")
    )


def summarise(results: pl.DataFrame, windows: pl.DataFrame) -> pl.DataFrame:
    """Per dataset and model: per-fold means over kept windows, then mean and sd over folds."""
    kept = results.join(windows.filter("kept").select("dataset", "landmark", "horizon"),
                        on=["dataset", "landmark", "horizon"])
    per_fold = kept.group_by("dataset", "model", "fold").agg(*[pl.col(m).mean() for m in METRICS])
    dcal = (kept.unique(["dataset", "model", "fold", "landmark"]).group_by("dataset", "model", "fold")
            .agg(pl.col("dcal_p").mean()))
    per_fold = per_fold.join(dcal, on=["dataset", "model", "fold"])
    return per_fold.group_by("dataset", "model").agg(
        *[pl.col(m).mean().alias(f"{m}_mean") for m in (*METRICS, "dcal_p")],
        *[pl.col(m).std().alias(f"{m}_sd") for m in (*METRICS, "dcal_p")],
        pl.col(METRICS[0]).alias("c_folds"), pl.col("brier").alias("brier_folds"),
    )


def _cell(row: dict[str, Any], metric: str) -> str:
    mean, sd = row[f"{metric}_mean"], row[f"{metric}_sd"]
    if mean is None:
        return "–"
    return fmt(mean) if sd is None else f"{mean:.3f} ± {sd:.3f}"


def _order(model: str) -> int:
    names = [*SEQUENCE_MODELS, *BASELINES]
    return names.index(model) if model in names else len(names)


def figure(results: pl.DataFrame, windows: pl.DataFrame, path: Path) -> Path:
    """C-index and Brier across landmarks (mean ± sd over folds) at one horizon per data set."""
    from ehrseq.plot import landmark_curves

    plt = _repro.pyplot()
    datasets = results["dataset"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(len(datasets), 2, figsize=(12, 4.2 * len(datasets)), squeeze=False)
    for row, name in enumerate(datasets):
        kept = windows.filter((pl.col("dataset") == name) & pl.col("kept"))
        if kept.height == 0:
            continue
        counts = kept.group_by("horizon").len().sort(["len", "horizon"], descending=[True, False])
        horizon = counts["horizon"][0]
        part = (results.filter((pl.col("dataset") == name) & (pl.col("horizon") == horizon))
                .join(kept.select("landmark", "horizon"), on=["landmark", "horizon"])
                .group_by("model", "landmark", "horizon")
                .agg(*[pl.col(m).mean() for m in METRICS], *[pl.col(m).std().alias(f"{m}_sd") for m in METRICS])
                .sort(pl.col("model").map_elements(_order, return_dtype=pl.Int64), "landmark"))
        for col, metric in enumerate(("c_index", "brier")):
            ax = landmark_curves(part, metric, ax=axes[row][col])
            ax.set_title(f"{name}: {metric} at horizon {_years(horizon)} y (mean ± sd over folds)")
    return _repro.save_figure(fig, path)


def report(datasets: Sequence[Dataset], results: pl.DataFrame, seconds: dict[tuple[str, str], list[float]],
           args: Any, budgets: dict[str, Budget], out: Path, command: str, started: float) -> Path:
    windows = kept_windows(results, args.min_at_risk, args.min_events)
    summary = summarise(results, windows)
    doc = Report("ehrseq results on real data: 5-fold cross-validated landmark evaluation" if not args.quick
                 else "ehrseq results on real data (--quick smoke test: not a result)")
    doc.started = started
    doc.add(f"Command: `{command}`")
    doc.section("Protocol", (__doc__ or "").split("\n\n", 1)[1].strip())
    doc.add(f"{args.folds} folds (seed {args.seed}). Landmark Cox (ridge alpha 0.01) and landmark RSF are landmark "
            "super-models with their default fitting landmarks and a window of the largest horizon.")
    for data in datasets:
        budget = budgets[data.name]
        notes = [*data.notes, f"Sequence models: epochs ≤ {budget.epochs} (patience {budget.patience}), batch "
                 f"{budget.batch_size} patients, d_model {budget.d_model}, lr {budget.lr:g}, 20-bin grid for the "
                 f"logistic-hazard head; landmark RSF: {budget.n_estimators} trees"
                 + (f", bootstrap samples of {budget.rsf_max_samples} stacked rows." if budget.rsf_max_samples else ".")]
        doc.section(f"{data.name}", *[f"- {n}" for n in notes])
        rows = []
        part = summary.filter(pl.col("dataset") == data.name).sort(
            pl.col("model").map_elements(_order, return_dtype=pl.Int64))
        for row in part.iter_rows(named=True):
            fit = seconds.get((data.name, row["model"]), [])
            rows.append([row["model"], _cell(row, "c_index"), _cell(row, "auc"), _cell(row, "brier"),
                         _cell(row, "dcal_p"), fmt(np.mean(fit) if fit else None, 1)])
        doc.add("Summary (mean over kept windows within a fold, then mean ± sd over folds):")
        doc.table(["model", "C-index", "AUC", "Brier", "D-cal p", "fit s/fold"], rows)
        doc.add(_comparison(part))
        win = windows.filter(pl.col("dataset") == data.name)
        doc.add("Windows (min over test folds of patients at risk and events in the window):")
        doc.table(["landmark (y)", "horizon (y)", "at risk", "events", "kept"],
                  [[_years(r["landmark"]), _years(r["horizon"]), r["min_at_risk"], r["min_events"],
                    "yes" if r["kept"] else f"no (< {args.min_at_risk} at risk or < {args.min_events} events)"]
                   for r in win.iter_rows(named=True)])
        detail = (results.filter(pl.col("dataset") == data.name)
                  .join(win.filter("kept").select("landmark", "horizon"), on=["landmark", "horizon"])
                  .group_by("model", "landmark", "horizon")
                  .agg(*[pl.col(m).alias(m) for m in METRICS])
                  .sort(pl.col("model").map_elements(_order, return_dtype=pl.Int64), "landmark", "horizon"))
        doc.add("Per window (mean ± sd over folds):")
        doc.table(["model", "landmark (y)", "horizon (y)", "C-index", "AUC", "Brier"],
                  [[r["model"], _years(r["landmark"]), _years(r["horizon"]), *[mean_sd(r[m]) for m in METRICS]]
                   for r in detail.iter_rows(named=True)])
    path = doc.write(out, "results")
    print(f"figure written to {figure(results, windows, out / 'results.png')}")
    return path


def _comparison(summary: pl.DataFrame) -> str:
    """Which sequence models beat landmark Cox on mean C-index and mean Brier (fold means)."""
    cox = summary.filter(pl.col("model") == "landmark Cox")
    if cox.height == 0 or cox["c_index_mean"][0] is None:
        return "No landmark Cox summary to compare with."
    c_cox, b_cox = cox["c_index_mean"][0], cox["brier_mean"][0]
    lines = []
    for row in summary.filter(pl.col("model").is_in(list(SEQUENCE_MODELS))).iter_rows(named=True):
        if row["c_index_mean"] is None:
            continue
        better_c, better_b = row["c_index_mean"] > c_cox, row["brier_mean"] < b_cox
        folds_c = sum(a > b for a, b in zip(row["c_folds"], cox["c_folds"][0]))
        verdict = "beats" if better_c and better_b else "does not beat"
        lines.append(f"- {row['model']} {verdict} landmark Cox on both (C {row['c_index_mean']:.3f} vs {c_cox:.3f}, "
                     f"higher in {folds_c}/{len(row['c_folds'])} folds; Brier {row['brier_mean']:.4f} vs {b_cox:.4f}).")
    return "Against landmark Cox (mean over folds):\n\n" + "\n".join(lines)


# ---------------------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> None:
    parser = _repro.parser("quality", __doc__.splitlines()[0])
    parser.set_defaults(out=Path("outputs") / "quality")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    parser.add_argument("--datasets", nargs="+", choices=("pbc", "nafld"), default=None,
                        help="data sets (default both; --quick: PBC)")
    parser.add_argument("--nafld-patients", type=int, default=2500,
                        help="random subsample of NAFLD subjects with visits (default 2500; 0 = all)")
    parser.add_argument("--epochs", type=int, default=None, help="maximum epochs (default: 30 PBC, 10 NAFLD)")
    parser.add_argument("--min-at-risk", type=int, default=30, help="window kept if every test fold has this many at risk")
    parser.add_argument("--min-events", type=int, default=5, help="... and this many events in the window")
    args = parser.parse_args(argv)
    out = _repro.start(args, needs=("data", "plot"))
    started = time.perf_counter()
    command = "python -m ehrseq.bench quality " + " ".join(argv if argv is not None else [])
    say = lambda text: print(text, flush=True)  # noqa: E731
    if args.quick:
        args.folds, args.min_at_risk, args.min_events = 2, 5, 1
        names = args.datasets or ["pbc"]
    else:
        names = args.datasets or ["pbc", "nafld"]
    datasets, budgets = [], {}
    for name in names:
        if name == "pbc":
            data = pbc(60 if args.quick else None, args.seed)
            budgets[data.name] = Budget(epochs=args.epochs or (1 if args.quick else 30), patience=6,
                                        batch_size=32, d_model=8 if args.quick else 32, lr=3e-3,
                                        n_estimators=5 if args.quick else 100)
        else:
            data = nafld(120 if args.quick else (args.nafld_patients or None), args.seed)
            budgets[data.name] = Budget(epochs=args.epochs or (1 if args.quick else 10), patience=4,
                                        batch_size=64, d_model=8 if args.quick else 32, lr=3e-3,
                                        n_estimators=5 if args.quick else 100, rsf_max_samples=2000)
        datasets.append(data)
    frames, seconds = [], {}
    for data in datasets:
        factories = model_factories(data, budgets[data.name], args.seed)
        say(f"{data.name}: {data.outcomes.height} patients, {data.visits.height} visits, {args.folds} folds")
        for fold, test_ids in enumerate(folds(data, args.folds, args.seed)):
            result = run_fold(data, factories, test_ids, fold, say)
            frames.extend(result.rows)
            for model, values in result.seconds.items():
                seconds.setdefault((data.name, model), []).extend(values)
    results = pl.concat(frames, how="diagonal_relaxed")
    results.write_csv(out / "results.csv")
    report(datasets, results, seconds, args, budgets, out, command, started)
    windows = kept_windows(results, args.min_at_risk, args.min_events)
    summary = summarise(results, windows).sort("dataset", pl.col("model").map_elements(_order, return_dtype=pl.Int64))
    print(format_table(["data", "model", "C-index", "AUC", "Brier", "D-cal p"],
                       [[r["dataset"], r["model"], *[_cell(r, m) for m in (*METRICS, "dcal_p")]]
                        for r in summary.iter_rows(named=True)]))
