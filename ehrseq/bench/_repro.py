"""Helpers shared by the reproduction benchmarks (``piecewise``, ``countdown``, ``multievent``,
``losses-quality``): command-line options, Markdown reports, patient-level table splits, and the
per-visit and landmark predictions the benchmarks score.

Every reproduction writes one Markdown report (``<out>/<name>.md``, also printed) and, where a figure
helps, PNG files next to it. ``--quick`` runs the same code paths on tiny settings (a smoke test, not
a result).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from ehrseq.bench._timing import environment_line
from ehrseq.data.split import split_indices
from ehrseq.errors import ConfigError
from ehrseq.extras import require
from ehrseq.models.distributions import SurvivalDistribution

DAYS_PER_YEAR = 365.25


# ---------------------------------------------------------------------------------------- options
def parser(name: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every reproduction has: ``--quick``, ``--out``, ``--seed``,
    ``--threads``."""
    command = name.replace("_", "-")
    result = argparse.ArgumentParser(prog=f"python -m ehrseq.bench {command}", description=description)
    result.set_defaults(name=command)
    result.add_argument("--quick", action="store_true", help="tiny smoke-test setting (seconds; not a result)")
    result.add_argument("--out", type=Path, default=Path("outputs") / command,
                        help=f"directory of the report and figures (default outputs/{command})")
    result.add_argument("--seed", type=int, default=0, help="base random seed")
    result.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the models are small and the machine may be shared)")
    return result


def add_training_options(parser: argparse.ArgumentParser, *, epochs: int, patience: int) -> None:
    """``--epochs``, ``--patience``, ``--lr``, ``--batch-size`` and ``--d-model`` of the sequence models."""
    parser.add_argument("--epochs", type=int, default=epochs, help=f"maximum epochs (default {epochs})")
    parser.add_argument("--patience", type=int, default=patience, help="early-stopping patience in epochs")
    parser.add_argument("--lr", type=float, default=3e-3, help="learning rate")
    parser.add_argument("--batch-size", type=int, default=64, help="patients per batch")
    parser.add_argument("--d-model", type=int, default=32, help="encoder width")


def start(args: argparse.Namespace, *, needs: Sequence[str] = ()) -> Path:
    """Check the optional extras the benchmark ``needs`` (before any work), apply ``--threads`` and create
    ``--out``; return the output directory."""
    require(*needs, what=f"python -m ehrseq.bench {getattr(args, 'name', '')}".rstrip())
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


# ---------------------------------------------------------------------------------------- report
def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals; ``–`` for missing or non-finite values."""
    if value is None:
        return "–"
    value = float(value)
    if not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


def mean_sd(values: Iterable[float], digits: int = 3) -> str:
    """``mean ± sd`` (sample sd; just the mean for a single value) of the finite values."""
    array = np.asarray([v for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)
    if array.size == 0:
        return "–"
    if array.size == 1:
        return fmt(array[0], digits)
    return f"{array.mean():.{digits}f} ± {array.std(ddof=1):.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (cells converted with ``str``)."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Report:
    """A Markdown report assembled section by section, written to ``<out>/<name>.md`` and printed."""

    title: str
    parts: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def add(self, *paragraphs: str) -> None:
        self.parts.extend(p.strip("\n") for p in paragraphs)

    def section(self, heading: str, *paragraphs: str) -> None:
        self.add(f"## {heading}", *paragraphs)

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        self.add(markdown_table(headers, rows))

    def render(self) -> str:
        elapsed = time.perf_counter() - self.started
        footer = f"_Run time {elapsed:.0f} s; {environment_line()}._"
        return "\n\n".join([f"# {self.title}", *self.parts, footer]) + "\n"

    def write(self, out: Path, name: str) -> Path:
        text = self.render()
        path = Path(out) / f"{name}.md"
        path.write_text(text, encoding="utf-8")
        print(text)
        print(f"report written to {path}")
        return path


def save_figure(figure: Any, path: Path) -> Path:
    """Save a Matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------------------- tables
def keep_patients(frame: pl.DataFrame, ids: Any) -> pl.DataFrame:
    """Rows of ``frame`` whose ``patient_id`` is in ``ids``."""
    return frame.filter(pl.col("patient_id").is_in(pl.Series(np.asarray(ids)).implode()))


def split_ids(outcomes: pl.DataFrame, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Patient ids of each part of a split stratified by ``event`` (as :func:`ehrseq.data.split_patients`)."""
    ids = outcomes["patient_id"].to_numpy()
    strata = outcomes["event"].to_numpy() if "event" in outcomes.columns else np.zeros(ids.size)
    return [ids[part] for part in split_indices(strata, fractions, seed)]


def sample_ids(ids: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """``n`` ids drawn without replacement (all of them, sorted, when ``n`` is None or too large)."""
    ids = np.sort(np.asarray(ids))
    if n is None or n >= ids.size:
        return ids
    return np.sort(np.random.default_rng(seed).choice(ids, size=n, replace=False))


# ---------------------------------------------------------------------------------------- predictions
@dataclass(frozen=True)
class Scored:
    """Predictions with their outcomes: one row per scored unit (a visit or an at-risk patient).

    ``visit_time`` is the time of the visit predicted from (on the tables' clock), ``time`` the remaining
    time from the visit (or from the landmark) to the event or censoring, ``event`` the event flag;
    ``distribution`` has batch shape ``[n]`` (on the CPU, in float64).
    """

    patient_id: np.ndarray
    visit_time: np.ndarray
    time: np.ndarray
    event: np.ndarray
    distribution: SurvivalDistribution

    def __len__(self) -> int:
        return int(self.time.size)

    def survival_at_outcome(self) -> np.ndarray:
        """S_i(time_i), ``[n]``."""
        u = torch.as_tensor(self.time[:, None], dtype=self.distribution.dtype)
        with torch.no_grad():
            return self.distribution.survival(u)[:, 0].double().numpy()

    def risk(self, horizon: float) -> np.ndarray:
        """F_i(horizon), ``[n]``."""
        with torch.no_grad():
            return self.distribution.risk(float(horizon))[:, 0].double().numpy()


def as_float64(distribution: Any) -> Any:
    """A CPU copy of a distribution (or competing-risks prediction) with float64 parameters, so that
    metrics read it without float32 round-off."""
    fields = [name for name in distribution.batched_fields if getattr(distribution, name) is not None]
    converted = distribution.to("cpu")
    for name in fields:
        setattr(converted, name, getattr(converted, name).double())
    if hasattr(converted, "grid") and isinstance(converted.grid, torch.Tensor):
        converted.grid = converted.grid.double()
    if hasattr(converted, "_after_index"):
        converted._after_index()
    return converted


def per_row(table: pl.DataFrame, patient_id: np.ndarray, column: str) -> np.ndarray:
    """``table[column]`` (one row per patient) for each id in ``patient_id``; NaN where missing."""
    lookup = table.select("patient_id", pl.col(column).cast(pl.Float64))
    joined = pl.DataFrame({"patient_id": patient_id}).join(lookup, on="patient_id", how="left", maintain_order="left")
    return joined[column].fill_null(np.nan).to_numpy()


def _event_flags(outcomes: pl.DataFrame, patient_id: np.ndarray, event: int) -> tuple[np.ndarray, np.ndarray]:
    """(outcome time on the table's clock, event == ``event``) of each id in ``patient_id``."""
    return per_row(outcomes, patient_id, "time"), per_row(outcomes, patient_id, "event") == event


def at_visits(model: Any, visits: pl.DataFrame, outcomes: pl.DataFrame, *, event: int = 1,
              marginal: str | None = None) -> Scored:
    """Per-visit predictions of a fitted :class:`~ehrseq.DynamicSurvival` at every kept visit (visits
    before the outcome), with the remaining time Y − v_m and the event flag (type ``event``; other
    types count as censored). ``marginal`` picks one event of a multi-event head."""
    frame, distribution = model.predict_distribution(visits, at="all", outcomes=outcomes)
    if marginal is not None:
        distribution = distribution[marginal]
    patient_id = frame["patient_id"].to_numpy()
    visit_time = frame["visit_time"].cast(pl.Float64).to_numpy()
    outcome_time, flag = _event_flags(outcomes, patient_id, event)
    return Scored(patient_id, visit_time, outcome_time - visit_time, flag, as_float64(distribution))


def at_landmark(model: Any, visits: pl.DataFrame, outcomes: pl.DataFrame, landmark: float, *,
                event: int = 1, marginal: str | None = None, times: pl.DataFrame | None = None) -> Scored:
    """Landmark predictions of a fitted :class:`~ehrseq.DynamicSurvival`: for every patient with a
    visit at or before s (days since the model's origin) and still event-free at s, the distribution
    of T − s given T > s and the history up to s, with the observed time since s and the event flag.

    ``times`` (``patient_id, time, event`` on the model's origin clock) replaces the outcome table as
    the source of the observed times, e.g. one event of a multi-event table.
    """
    frame, distribution = model.predict_distribution(visits, landmark=landmark, outcomes=outcomes)
    if marginal is not None:
        distribution = distribution[marginal]
    patient_id = frame["patient_id"].to_numpy()
    cohort = model.cohort_settings.build(visits, outcomes, unmatched="drop").patients
    since_origin = cohort.select("patient_id", pl.col("outcome_time").alias("time"), "event")
    if times is not None:
        origin = cohort.select("patient_id", "outcome_time").join(
            outcomes.select("patient_id", pl.col("time").alias("clock_time")), on="patient_id")
        since_origin = times.join(origin, on="patient_id").select(
            "patient_id", (pl.col("time") - pl.col("clock_time") + pl.col("outcome_time")).alias("time"), "event")
    observed, flag = _event_flags(since_origin, patient_id, event)
    at_risk = np.isfinite(observed) & (observed > landmark)
    offset = torch.as_tensor(frame["offset"].to_numpy()[at_risk], dtype=torch.float64)
    conditional = as_float64(distribution)[torch.as_tensor(np.flatnonzero(at_risk))].conditional(offset)
    visit_time = frame["visit_time"].cast(pl.Float64).to_numpy()
    return Scored(patient_id[at_risk], visit_time[at_risk], observed[at_risk] - landmark, flag[at_risk], conditional)
