"""Plots of dynamic predictions (matplotlib): per-visit survival curves, calibration, landmark metrics.

Every function draws on ``ax`` (a new figure when ``None``) and returns the Axes; none calls ``show``.
``model`` is a fitted :class:`~ehrseq.DynamicSurvival` or a baseline of :mod:`ehrseq.baselines` (anything
with their ``predict_survival`` / ``predict_risk``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from ehrseq.data import build_cohort
from ehrseq.errors import ConfigError
from ehrseq.metrics import KaplanMeier

__all__ = ["calibration_curve", "explanation", "landmark_curves", "patient_curves", "training_history"]

DAYS_PER_YEAR = 365.25


def _axes(ax: Any, figsize: tuple[float, float]) -> Any:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)[1]


def _table(frame: Any, name: str) -> pl.DataFrame:
    if isinstance(frame, pl.DataFrame):
        return frame
    try:
        return pl.DataFrame(frame)
    except Exception as exc:  # noqa: BLE001 — any unreadable input becomes one clear error
        raise ConfigError(f"{name} must be a Polars or pandas data frame, got {type(frame).__name__}") from exc


def _patients(model: Any, visits: Any, outcomes: Any) -> pl.DataFrame:
    """patient_id, outcome_time, event, last_visit (days since origin) read with the model's table rules."""
    settings = getattr(model, "cohort_settings", None)
    cohort = (settings.build(visits, outcomes, unmatched="drop") if settings is not None
              else build_cohort(visits, outcomes, unmatched="drop"))
    return cohort.patients.select("patient_id", "outcome_time", "event", "last_visit")


def patient_curves(model: Any, visits: Any, patient_id: Any, *, horizon: float | None = None, outcomes: Any = None,
                   points: int = 100, ax: Any = None) -> Any:
    """The per-visit survival curves of one patient: at each visit v_m, P(T > v_m + u | history ≤ v_m) for
    u in [0, ``horizon``] days, drawn from v_m on the patient's clock (the visit table's time axis) and
    colored by visit order; with ``outcomes``, the event or censoring time is marked.

    ``horizon`` defaults to 5 years, extended to the patient's outcome time when that is later.
    Returns the Axes (one line per visit, in visit order, then the outcome marker).
    """
    table = _table(visits, "visits")
    patient = table.filter(pl.col("patient_id") == patient_id)
    if patient.height == 0:
        raise ConfigError(f"patient {patient_id!r} has no visit in the visit table")
    outcome = None
    if outcomes is not None:
        outcome = _table(outcomes, "outcomes").filter(pl.col("patient_id") == patient_id)
        if outcome.height != 1:
            raise ConfigError(f"patient {patient_id!r} needs exactly one row in the outcome table, got {outcome.height}")
    numeric_clock = patient.schema["time"].is_numeric()
    if horizon is None:
        horizon = 5 * DAYS_PER_YEAR
        if outcome is not None and numeric_clock:
            horizon = max(horizon, float(outcome["time"][0] - patient["time"].min()))
    if not (math.isfinite(horizon) and horizon > 0):
        raise ConfigError(f"horizon must be a positive number of days, got {horizon!r}")
    durations = np.linspace(0.0, float(horizon), points)
    curves = model.predict_survival(patient, durations, at="all", outcomes=outcome)
    visit_times = curves["visit_time"].unique(maintain_order=True)

    import matplotlib as mpl

    ax = _axes(ax, (7, 4))
    colormap = mpl.colormaps["viridis"]
    n = visit_times.len()
    for m, visit_time in enumerate(visit_times):
        curve = curves.filter(pl.col("visit_time") == visit_time)
        if numeric_clock:
            x = float(visit_time) + curve["horizon"].to_numpy()
        else:
            x = curve["visit_time"].to_numpy() + (curve["horizon"].to_numpy() * 86_400e6).astype("timedelta64[us]")
        ax.plot(x, curve["survival"].to_numpy(), color=colormap(m / max(n - 1, 1)), lw=1.5,
                label=f"visit {m + 1}" if m in (0, n - 1) else None)
    if outcome is not None:
        died = int(outcome["event"][0]) != 0
        ax.axvline(outcome["time"][0], color="crimson" if died else "grey", ls="--", lw=1.2,
                   label="event" if died else "censored")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("time on the patient's clock (days)" if numeric_clock else "time")
    ax.set_ylabel("P(event-free | history to the visit)")
    ax.set_title(f"Patient {patient_id}: survival predicted at each of {n} visits")
    ax.legend(loc="lower left", fontsize=8)
    return ax


def calibration_curve(model_or_predictions: Any, visits: Any, outcomes: Any, *, horizon: float,
                      landmark: float | None = None, bins: int = 10, ax: Any = None) -> Any:
    """Predicted risk by ``horizon`` days against the observed risk (1 − Kaplan–Meier at the horizon)
    within ``bins`` quantile groups of predicted risk, with the diagonal.

    Time runs from the landmark s (patients at risk: Y > s with a visit ≤ s), or from each patient's last
    visit when ``landmark`` is None. ``model_or_predictions``: a fitted model, or its ``predict_risk`` frame
    (``patient_id, risk`` at this horizon). Returns the Axes; its first line holds (mean predicted,
    observed) per group, in increasing predicted risk.
    """
    if bins < 2:
        raise ConfigError(f"bins must be >= 2, got {bins}")
    if hasattr(model_or_predictions, "predict_risk"):
        model = model_or_predictions
        predictions = model.predict_risk(visits, horizon, landmark=landmark, outcomes=outcomes)
    else:
        model = None
        predictions = _table(model_or_predictions, "predictions")
        if "horizon" in predictions.columns:
            predictions = predictions.filter(pl.col("horizon") == float(horizon))
    if predictions["patient_id"].n_unique() != predictions.height:
        raise ConfigError("predictions must hold one risk per patient (one horizon, one landmark)")
    frame = predictions.select("patient_id", "risk").join(_patients(model, visits, outcomes), on="patient_id")
    start = pl.lit(float(landmark)) if landmark is not None else pl.col("last_visit")
    frame = frame.with_columns((pl.col("outcome_time") - start).alias("from_start")).filter(pl.col("from_start") > 0)
    if frame.height < bins:
        raise ConfigError(f"{frame.height} patients at risk: too few for {bins} groups")
    risk = frame["risk"].to_numpy()
    order = np.argsort(risk, kind="stable")
    groups = np.array_split(order, bins)
    predicted = np.array([risk[g].mean() for g in groups])
    time, event = frame["from_start"].to_numpy(), frame["event"].to_numpy() == 1
    observed = np.array([1.0 - KaplanMeier.fit(time[g], event[g]).survival(np.array([horizon]))[0] for g in groups])

    ax = _axes(ax, (4.5, 4.5))
    ax.plot(predicted, observed, marker="o", lw=1.5, label="groups of predicted risk")
    top = max(1e-3, float(np.max(predicted)), float(np.max(observed))) * 1.05
    ax.plot([0, top], [0, top], color="grey", ls=":", lw=1, label="perfect calibration")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel(f"predicted risk within {horizon:g} days")
    ax.set_ylabel("observed risk (Kaplan-Meier)")
    ax.set_title("Calibration" + (f" at landmark {landmark:g} days" if landmark is not None else " at the last visit"))
    ax.legend(loc="upper left", fontsize=8)
    return ax


def landmark_curves(results: Any, metric: str = "c_index", *, ax: Any = None) -> Any:
    """A metric of :func:`ehrseq.evaluate.landmark` across landmarks (in years): one line per horizon, and
    per model when the frame has a ``model`` column. A ``<metric>_sd`` column, when present, is drawn as
    a ±1 sd band. Returns the Axes."""
    frame = _table(results, "results")
    for column in ("landmark", "horizon", metric):
        if column not in frame.columns:
            raise ConfigError(f"the results frame has no column {column!r} (columns: {frame.columns})")
    keys = ["model", "horizon"] if "model" in frame.columns else ["horizon"]
    ax = _axes(ax, (6.5, 4))
    styles = ("-", "--", ":", "-.")
    horizons = sorted(frame["horizon"].unique().to_list())
    for group in frame.select(keys).unique(maintain_order=True).iter_rows(named=True):
        part = frame.filter(*[pl.col(k) == v for k, v in group.items()]).sort("landmark")
        part = part.filter(pl.col(metric).is_not_null())
        if part.height == 0:
            continue
        x = part["landmark"].to_numpy() / DAYS_PER_YEAR
        y = part[metric].to_numpy()
        label = f"{group['horizon'] / DAYS_PER_YEAR:g} y horizon"
        if "model" in group:
            label = f"{group['model']}, {label}"
        line = ax.plot(x, y, marker="o", ms=4, ls=styles[horizons.index(group["horizon"]) % len(styles)], label=label)[0]
        if f"{metric}_sd" in part.columns:
            sd = part[f"{metric}_sd"].fill_null(0.0).to_numpy()
            ax.fill_between(x, y - sd, y + sd, color=line.get_color(), alpha=0.12, lw=0)
    ax.set_xlabel("landmark (years since origin)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    return ax


def training_history(history: Any, *, keys: tuple[str, ...] = ("train_loss", "val_loss"), ax: Any = None) -> Any:
    """Loss per epoch of a fitted model's ``history_`` (or a :class:`~ehrseq.train.TrainingHistory`)."""
    history = getattr(history, "history_", history)
    if not hasattr(history, "plot"):
        raise ConfigError(f"expected a TrainingHistory or a fitted model, got {type(history).__name__}")
    return history.plot(ax=ax, keys=keys)


def explanation(result: Any, patient_id: Any, *, top: int = 3, ax: Any = None) -> Any:
    """The risk trajectory of one patient from :func:`ehrseq.explain.explain` (risk at each visit) with, at
    each visit, its ``top`` contributing inputs (largest |attribution|, summed over input visits) written
    beside the point, "+" raising the risk: in the change view, what moved the risk since the previous
    visit, and the model's response to a new visit at which nothing changed ("new visit", the
    ``repeat`` column); in the level view, what sets it apart from the uninformed baseline. Returns the
    Axes (its first line is the risk trajectory)."""
    if top < 1:
        raise ConfigError(f"top must be >= 1, got {top}")
    risks = result.risks.filter(pl.col("patient_id") == patient_id).sort("visit")
    if risks.height == 0:
        raise ConfigError(f"patient {patient_id!r} is not in the explanation")
    leading = result.top(top).filter(pl.col("patient_id") == patient_id)
    ax = _axes(ax, (8, 4.5))
    x = risks["visit_time"].to_numpy()
    y = risks["risk"].to_numpy()
    ax.plot(x, y, marker="o", lw=1.8, color="tab:blue", label=f"risk within {result.horizon:g} days")
    if result.view == "level":
        ax.plot(x, risks["reference"].to_numpy(), ls=":", color="grey", lw=1.2, label="uninformed baseline")
    repeats = risks["repeat"].to_list() if "repeat" in risks.columns else [None] * risks.height
    for index, (visit, time, risk, repeat) in enumerate(zip(risks["visit"], x, y, repeats)):
        lines = [f"{name} {value:+.3f}" for name, value in
                 leading.filter(pl.col("visit") == visit).select("input", "attribution").iter_rows()]
        if repeat is not None:
            lines.append(f"(new visit {repeat:+.3f})")
        above = index % 2 == 0  # alternate sides so that the labels of neighbouring visits do not collide
        ax.annotate("\n".join(lines), (time, risk), textcoords="offset points", xytext=(0, 8 if above else -8),
                    ha="center", va="bottom" if above else "top", fontsize=7, color="dimgrey")
    ax.margins(x=0.08, y=0.35)
    ax.set_xlabel("visit time")
    ax.set_ylabel("predicted risk")
    what = "change since the previous visit" if result.view == "change" else "difference from the baseline"
    ax.set_title(f"Patient {patient_id}: risk at each visit and its top {top} inputs ({what})", fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)
    return ax
