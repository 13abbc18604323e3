"""What each loss of the [catalogue] buys: the same GRU trained with the discrete-time NLL and its variants, scored on simulated and PBC visit sequences.

The [catalogue] proposes variants of the visit-indexed discrete-time NLL (calibration, ranking, focal,
multi-task, time-stratified, contrastive, smoothness, uncertainty, auxiliary next-visit tasks) without
measuring them. Here every variant trains the same encoder (GRU, same width, optimiser, epochs and
early stopping) on the same splits, so the only difference is the objective.

**Two heads, two tables.** The visit-indexed head (``visit_hazard``) predicts h_m = P(event before the
next visit), a probability over an interval whose length depends on when the next visit happens — not
a risk within a number of days, so it has no survival curve to put through the C-index at a horizon,
the Brier score or D-calibration. We therefore run the variants that exist for both heads on the
**logistic-hazard head** (the same discrete-time NLL on a horizon grid, §A2) and score them with the
usual landmark metrics, and score the **visit-indexed** variants separately with metrics of what that
head predicts: the event before the next visit.

*Logistic-hazard table* (grid: quantiles of the training event times): per variant, at landmarks s
(days since the first visit) and horizon Δ — Harrell's C-index (events in (s, s + Δ]) and the Brier
score at Δ (:func:`ehrseq.evaluate.landmark`, IPCW from the training patients; means over the
landmarks), the IBS over (0, Δ], and on the patients at risk at the first landmark the D-calibration
p-value and the calibration slope of S(T − s | T > s) (:func:`ehrseq.metrics.d_calibration`,
:func:`ehrseq.metrics.calibration_slope`). On ``simulate()`` also the gap to the true model: the mean
absolute difference between the predicted and the true risk within Δ (``sim.truth``), and the true
model's own metrics as a reference row.

*Visit-indexed table*: at every test visit, the label "event before the next visit" (1 at the last
visit of a patient who has the event, 0 at every earlier visit; a censored patient's last visit has no
label, as in the [catalogue]'s likelihood): AUC, Brier score, mean predicted vs observed rate, and the
logistic calibration slope (the slope of the label's logistic regression on logit h; 1 = calibrated).

The auxiliary weights (ranking 0.1, calibration 10, contrastive 0.1, smoothness 10, next visit 0.1) put
each term at a visible fraction of the NLL; they are not tuned, and other weights give other trade-offs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ehrseq.bench import _repro
from ehrseq.bench._repro import DAYS_PER_YEAR, Report, fmt, mean_sd
from ehrseq.data import TimeGrid
from ehrseq.datasets import load_pbcseq, simulate
from ehrseq.estimator import DynamicSurvival
from ehrseq.evaluate import landmark
from ehrseq.metrics import calibration_slope, d_calibration

WEIGHTS = {"ranking": 0.1, "calibration": 10.0, "contrastive": 0.1, "smooth": 10.0, "next_visit": 0.1}


@dataclass(frozen=True)
class Variant:
    """A named objective for a head: ``loss`` as accepted by :class:`ehrseq.DynamicSurvival`
    (a function of the horizon and the number of grid bins), and head settings."""

    name: str
    loss: Callable[[float, int], Any]
    head: dict[str, Any]


def grid_variants() -> list[Variant]:
    """The variants on the logistic-hazard head (§A2 and the [catalogue] variants that apply to it)."""
    head = {"kind": "logistic_hazard"}
    w = WEIGHTS
    return [
        Variant("NLL", lambda h, L: "nll", head),
        Variant("focal (γ=2, α=0.25)", lambda h, L: "focal", head),
        Variant("NLL + ranking", lambda h, L: {"nll": 1.0, "ranking": {"weight": w["ranking"], "horizon": h}}, head),
        Variant("NLL + calibration", lambda h, L: {"nll": 1.0, "calibration": w["calibration"]}, head),
        Variant("NLL + contrastive", lambda h, L: {"nll": 1.0, "contrastive": w["contrastive"]}, head),
        Variant("time-stratified NLL (0.9^l)", lambda h, L: {"nll": {"bin_weights": [0.9**l for l in range(L)]}}, head),
        Variant("NLL + smooth", lambda h, L: {"nll": 1.0, "smooth": w["smooth"]}, head),
        Variant("NLL + next visit", lambda h, L: {"nll": 1.0, "next_visit": w["next_visit"]}, head),
        Variant("uncertainty-balanced NLL + ranking + calibration",
                lambda h, L: {"terms": [{"name": "nll"}, {"name": "ranking", "options": {"horizon": h}},
                                        {"name": "calibration"}], "balance": "uncertainty"}, head),
    ]


def visit_variants() -> list[Variant]:
    """The variants on the visit-indexed head (A1 and the [catalogue] variants that apply to it)."""
    head = {"kind": "visit_hazard"}
    w = WEIGHTS
    return [
        Variant("NLL", lambda h, L: "nll", head),
        Variant("uncertainty (logit-normal hazard)", lambda h, L: "nll", {**head, "hazard_uncertainty": True}),
        Variant("focal (γ=2, α=0.25)", lambda h, L: "focal", head),
        Variant("NLL + calibration", lambda h, L: {"nll": 1.0, "calibration": w["calibration"]}, head),
        Variant("NLL + ranking", lambda h, L: {"nll": 1.0, "ranking": w["ranking"]}, head),
        Variant("NLL + contrastive", lambda h, L: {"nll": 1.0, "contrastive": w["contrastive"]}, head),
        Variant("NLL + smooth", lambda h, L: {"nll": 1.0, "smooth": w["smooth"]}, head),
    ]


# ------------------------------------------------------------------------------- data sets
@dataclass(frozen=True)
class Cohort:
    """A data set before splitting: its tables, landmarks, horizon and (simulated data) true model."""

    name: str
    description: str
    visits: pl.DataFrame
    outcomes: pl.DataFrame
    landmarks: tuple[float, ...]
    horizon: float
    truth: Any = None


@dataclass(frozen=True)
class Dataset:
    """One 70/30 patient split of a cohort."""

    name: str
    train: tuple[pl.DataFrame, pl.DataFrame]
    test: tuple[pl.DataFrame, pl.DataFrame]
    landmarks: tuple[float, ...]
    horizon: float
    truth: Any = None


def split(cohort: Cohort, seed: int) -> Dataset:
    train_ids, test_ids = _repro.split_ids(cohort.outcomes, (0.7, 0.3), seed)
    visits, outcomes = cohort.visits, cohort.outcomes
    train = (_repro.keep_patients(visits, train_ids), _repro.keep_patients(outcomes, train_ids))
    test = (_repro.keep_patients(visits, test_ids), _repro.keep_patients(outcomes, test_ids))
    return Dataset(cohort.name, train, test, cohort.landmarks, cohort.horizon, cohort.truth)


def load_cohorts(args) -> list[Cohort]:
    cohorts = []
    if "sim" in args.datasets:
        sim = simulate(args.n_patients, seed=args.seed)
        cohorts.append(Cohort("simulate()", f"`simulate({args.n_patients}, seed={args.seed})`", sim.visits,
                              sim.outcomes, (DAYS_PER_YEAR, 2 * DAYS_PER_YEAR), 2 * DAYS_PER_YEAR, sim.truth))
    if "pbc" in args.datasets:
        visits, outcomes = load_pbcseq("death")
        if args.quick:
            ids = _repro.sample_ids(outcomes["patient_id"].to_numpy(), 80, args.seed)
            visits, outcomes = _repro.keep_patients(visits, ids), _repro.keep_patients(outcomes, ids)
        cohorts.append(Cohort("PBC", "PBC (`load_pbcseq('death')`)", visits, outcomes, (0.0, 2 * DAYS_PER_YEAR),
                              3 * DAYS_PER_YEAR))
    return cohorts


def event_time_grid(visits: pl.DataFrame, outcomes: pl.DataFrame, bins: int) -> TimeGrid:
    """Quantile grid of the remaining times Y − v at the visits of training patients with an event."""
    remaining = visits.select("patient_id", pl.col("time").alias("visit")).join(
        outcomes.filter(pl.col("event") == 1).select("patient_id", "time"), on="patient_id").filter(
        pl.col("visit") < pl.col("time")).select(pl.col("time") - pl.col("visit"))
    return TimeGrid.quantiles(remaining.to_series().to_numpy(), bins)


# ------------------------------------------------------------------------------- scoring
def grid_scores(model, data: Dataset) -> dict[str, float]:
    """Landmark C-index, Brier and IBS (means over landmarks), D-calibration p and calibration slope at
    the first landmark, and on simulated data the mean |risk − true risk|."""
    frame = landmark(model, *data.test, list(data.landmarks), [data.horizon], data.train[1])
    scores = {column: _mean(frame[column]) for column in ("c_index", "brier", "ibs")}
    if isinstance(model, DynamicSurvival):
        first = _repro.at_landmark(model, *data.test, data.landmarks[0])
        time_since, event, survival = first.time, first.event, first.survival_at_outcome()
    else:
        time_since, event, survival = _truth_at_landmark(data, data.landmarks[0])
    scores["d_cal_p"] = d_calibration(time_since, event, survival).p_value
    scores["slope"] = calibration_slope(time_since, event, survival).slope
    if data.truth is not None and isinstance(model, DynamicSurvival):
        gaps = []
        for s in data.landmarks:
            scored = _repro.at_landmark(model, *data.test, s)
            truth = data.truth.risk(scored.patient_id, s, data.horizon)[:, 0]
            gaps.append(float(np.mean(np.abs(scored.risk(data.horizon) - truth))))
        scores["gap"] = float(np.mean(gaps))
    return scores


def _mean(column: pl.Series) -> float:
    values = column.drop_nulls().to_numpy()
    return float(values.mean()) if values.size else float("nan")


def _truth_at_landmark(data: Dataset, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time since s, event and the true S(T − s | T > s) of the test patients at risk at s."""
    visits, outcomes = data.test
    seen = visits.filter(pl.col("time") <= s)["patient_id"].unique()
    at_risk = outcomes.filter(pl.col("patient_id").is_in(seen.implode()) & (pl.col("time") > s))
    ids, y = at_risk["patient_id"].to_numpy(), at_risk["time"].to_numpy()
    truth = data.truth
    survival = np.exp(-(truth.cumulative_hazard(ids, y) - truth.cumulative_hazard(ids, np.full(ids.size, s))))
    return y - s, at_risk["event"].to_numpy() == 1, survival


def next_visit_labels(model: DynamicSurvival, visits: pl.DataFrame, outcomes: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Predicted h_m and the label "event before the next visit" at every labelled test visit."""
    frame = model.predict_next_visit_risk(visits, at="all", outcomes=outcomes)
    last = frame.group_by("patient_id").agg(pl.col("visit_time").max().alias("last"))
    table = frame.join(last, on="patient_id").join(outcomes.select("patient_id", "event"), on="patient_id")
    is_last = table["visit_time"].to_numpy() == table["last"].to_numpy()
    event = table["event"].to_numpy() == 1
    labelled = ~is_last | event
    return table["risk"].to_numpy()[labelled], (is_last & event)[labelled]


def visit_scores(model: DynamicSurvival, data: Dataset) -> dict[str, float]:
    risk, label = next_visit_labels(model, *data.test)
    clipped = np.clip(risk, 1e-12, 1 - 1e-12)
    logit = np.log(clipped) - np.log1p(-clipped)
    recalibration = LogisticRegression(C=np.inf).fit(logit[:, None], label)
    return {
        "auc": float(roc_auc_score(label, risk)),
        "brier": float(np.mean((risk - label) ** 2)),
        "mean_risk": float(risk.mean()),
        "observed": float(label.mean()),
        "logit_slope": float(recalibration.coef_[0, 0]),
    }


# ------------------------------------------------------------------------------- experiment
def fit(variant: Variant, data: Dataset, grid: TimeGrid, args, seed: int) -> tuple[DynamicSurvival, float]:
    model = DynamicSurvival(encoder="gru", head={**variant.head, "hidden": [args.d_model], "dropout": 0.1},
                            loss=variant.loss(data.horizon, grid.n_bins), grid=grid, d_model=args.d_model,
                            epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, patience=args.patience,
                            seed=seed, progress=False)
    start = time.perf_counter()
    model.fit(*data.train)
    return model, time.perf_counter() - start


def run_dataset(cohort: Cohort, args, report: Report) -> None:
    """Every variant on ``args.seeds`` patient splits (each with its own initialisation) of ``cohort``."""
    seeds = range(args.seed, args.seed + args.seeds)
    events = int(cohort.outcomes["event"].sum())
    s_text = ", ".join(f"{s / DAYS_PER_YEAR:g}" for s in cohort.landmarks)
    grid_sizes = set()
    grid_results: dict[str, list[dict[str, float]]] = {}
    truth_results: list[dict[str, float]] = []
    visit_results: dict[str, list[dict[str, float]]] = {}
    for seed in seeds:
        data = split(cohort, seed)
        grid = event_time_grid(*data.train, args.bins)
        grid_sizes.add(grid.n_bins)
        for variant in grid_variants() if "grid" in args.tables else []:
            model, seconds = fit(variant, data, grid, args, seed)
            grid_results.setdefault(variant.name, []).append({**grid_scores(model, data), "seconds": seconds})
        if data.truth is not None and "grid" in args.tables:
            truth_results.append(grid_scores(data.truth, data))
        for variant in visit_variants() if "visit" in args.tables else []:
            model, seconds = fit(variant, data, grid, args, seed)
            visit_results.setdefault(variant.name, []).append({**visit_scores(model, data), "seconds": seconds})
    bins = "/".join(str(n) for n in sorted(grid_sizes))
    report.section(cohort.name, f"{cohort.description}: {cohort.outcomes.height} patients, {cohort.visits.height} "
                                f"visits, {events} events; {args.seeds} random 70/30 patient splits, each with its "
                                f"own initialisation. Landmarks s = {s_text} years, horizon Δ = "
                                f"{cohort.horizon / DAYS_PER_YEAR:g} years; logistic-hazard grid of {bins} bins.")
    with_truth = cohort.truth is not None
    if grid_results:
        rows = [[name, *_cells(runs, with_truth), f"{_average(runs, 'seconds'):.0f}"]
                for name, runs in grid_results.items()]
        if truth_results:
            rows.append(["true model", *_cells(truth_results, False), "–", "–"])
        report.add("Logistic-hazard head (mean ± sd over the splits; D-cal: splits with p > 0.05):")
        report.table(["objective", "C-index", "Brier", "IBS", "D-cal", "cal. slope",
                      *(["mean |risk − true risk|"] if with_truth else []), "fit s"], rows)
        report.add(_grid_findings(grid_results, with_truth))
    if visit_results:
        rows = [[name, mean_sd(r["auc"] for r in runs), mean_sd((r["brier"] for r in runs), 4),
                 fmt(_average(runs, "mean_risk"), 4), fmt(_average(runs, "observed"), 4),
                 mean_sd((r["logit_slope"] for r in runs), 2), f"{_average(runs, 'seconds'):.0f}"]
                for name, runs in visit_results.items()]
        report.add("Visit-indexed head (event before the next visit; mean ± sd over the splits):")
        report.table(["objective", "AUC", "Brier", "mean h", "observed rate", "logit slope", "fit s"], rows)
        report.add(_visit_findings(visit_results))


def _average(runs: list[dict[str, float]], key: str) -> float:
    return float(np.nanmean([run[key] for run in runs]))


def _cells(runs: list[dict[str, float]], with_gap: bool) -> list[str]:
    calibrated = sum(run["d_cal_p"] > 0.05 for run in runs)
    cells = [mean_sd(r["c_index"] for r in runs), mean_sd((r["brier"] for r in runs), 4),
             mean_sd((r["ibs"] for r in runs), 4), f"{calibrated}/{len(runs)}", mean_sd((r["slope"] for r in runs), 2)]
    return cells + ([mean_sd((r.get("gap") for r in runs), 4)] if with_gap else [])


def _paired(runs: list[dict[str, float]], base: list[dict[str, float]], key: str, digits: int) -> str:
    """Mean ± sd over the splits of the paired difference (variant − NLL) of ``key``, signed."""
    differences = np.array([run[key] - ref[key] for run, ref in zip(runs, base)], dtype=np.float64)
    text = f"{differences.mean():+.{digits}f}"
    return text + (f" ± {differences.std(ddof=1):.{digits}f}" if differences.size > 1 else "")


def _grid_findings(results: dict[str, list[dict[str, float]]], with_truth: bool) -> str:
    base = results.get("NLL")
    if base is None:
        return ""
    lines = ["Compared with the plain NLL on the same splits (paired difference variant − NLL, mean ± sd over the "
             "splits; negative IBS and gap = better):"]
    for name, runs in results.items():
        if name == "NLL":
            continue
        lines.append(f"- {name}: C {_paired(runs, base, 'c_index', 3)}, IBS {_paired(runs, base, 'ibs', 4)}"
                     + (f", gap to truth {_paired(runs, base, 'gap', 4)}" if with_truth else "") + ".")
    failing = [f"{name} ({sum(run['d_cal_p'] <= 0.05 for run in runs)}/{len(runs)})"
               for name, runs in results.items() if any(run["d_cal_p"] <= 0.05 for run in runs)]
    lines.append("Not D-calibrated (p ≤ 0.05) on some split: " + (", ".join(failing) if failing else "none") + ".")
    return "\n".join(lines)


def _visit_findings(results: dict[str, list[dict[str, float]]]) -> str:
    base = results.get("NLL")
    if base is None:
        return ""
    lines = ["Compared with the plain visit-indexed NLL on the same splits (paired AUC difference, mean ± sd; "
             "mean predicted / observed rate):"]
    for name, runs in results.items():
        observed = _average(runs, "observed")
        ratio = _average(runs, "mean_risk") / observed if observed > 0 else float("nan")
        difference = _paired(runs, base, "auc", 3) if name != "NLL" else "–"
        lines.append(f"- {name}: AUC {difference}; predicted/observed {ratio:.2f}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = _repro.parser("losses_quality", __doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=("sim", "pbc"), default=["sim", "pbc"])
    parser.add_argument("--tables", nargs="+", choices=("grid", "visit"), default=["grid", "visit"])
    parser.add_argument("--n-patients", type=int, default=1000, help="simulated patients")
    parser.add_argument("--bins", type=int, default=12, help="logistic-hazard grid bins (quantiles)")
    parser.add_argument("--seeds", type=int, default=5, help="patient splits × initialisations per data set")
    _repro.add_training_options(parser, epochs=15, patience=3)
    args = parser.parse_args(argv)
    if args.quick:
        args.n_patients, args.epochs, args.d_model, args.bins, args.seeds = 150, 1, 8, 6, 2
    out = _repro.start(args, needs=("data",) if "pbc" in args.datasets else ())
    report = Report("Loss catalogue — what each variant of the discrete-time NLL buys")
    report.add(__doc__.split("\n\n", 1)[1].strip())
    for cohort in load_cohorts(args):
        run_dataset(cohort, args, report)
    report.add("**Reading the tables.** A paired difference whose mean is smaller than its sd is within the noise "
               "of one split (PBC's test sets have under 100 patients). The [catalogue] reports no numbers to "
               "compare with; its claims are qualitative (e.g. focal loss for rare events, a calibration penalty "
               "for calibration).")
    report.write(out, "losses_quality")
