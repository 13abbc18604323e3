"""Hyperparameter search for :class:`~ehrseq.DynamicSurvival`: :func:`ehrseq.tune` and ``ehrseq tune``.

::

    model, trials = ehrseq.tune(visits, outcomes, n_trials=30, timeout=3600)
    model.save("tuned")                     # a DynamicSurvival like any other
    trials.sort("score", descending=True)   # trial, the searched settings, score, fold_mean, fold_sd, folds, ...

The search is Optuna's (``pip install 'ehrseq[tune]'``): a seeded TPE sampler proposes settings from the
search space, each proposal is cross-validated on patient-level folds, and a median pruner stops a
proposal whose running score after a fold is below the median of the finished trials at that fold.

**Search space.** One mapping, :data:`SEARCH_SPACE`, from a setting of
:class:`~ehrseq.settings.EstimatorSettings` to its range: :class:`Choice` (a list of values),
:class:`IntRange` or :class:`FloatRange` (``log=True`` for a log scale). Every range is checked against
the estimator's settings before any fit (its name is a setting, its values have the setting's type and
pass the setting's own checks), so a new estimator setting is searched by adding one entry here, and a
user's space (``space=``; a TOML/JSON file on the command line) is checked the same way. Settings passed
as fixed (``fixed=`` or keyword arguments) are taken out of the default space.

**Cross-validation.** The patients of the cohort (read with the fixed table settings) are split into
``folds`` parts stratified by event type (:func:`ehrseq.data.split.split_indices`, seeded), the same parts
for every trial. In each fold a model is fitted on the other parts (with its own early-stopping fraction,
``validation``) and scored on the held-out part.

**Score.** The landmark evaluation of :func:`ehrseq.evaluate.landmark` (the real-data suite's protocol):
landmarks s at the 25 % and 50 % quantiles of the event times (time since origin of the observed events of
the cohort), window ends at the 50 % and 75 % quantiles, Δ = end − s for every end after s
(:func:`ehrseq.evaluate.quantile_windows`), or the given ``landmarks`` × ``horizons``; ``metric`` averaged
over the windows that have a value (``min_at_risk`` patients at risk and an event): ``"c_index"`` (default;
Harrell's C of the events in (s, s + Δ]), ``"uno_c"``, ``"auc"`` (higher is better), ``"brier"`` or ``"ibs"``
(lower is better). A trial's score is that of its **out-of-fold predictions**: every patient's landmark risks
from the model fitted without them, pooled over the folds and scored as one test set (censoring weights from
all patients). On a small cohort a fold's test part holds a few events per window (the suite's FRTCS: 1–4
in each of three folds) and its C-index is mostly noise; the pooled predictions score every event once, as
Simon et al. (2011, *Briefings in Bioinformatics* 12:203) recommend for cross-validating survival models on
few events. Pooling also ranks patients predicted by different folds' models against each other, so the score
falls below the folds' mean where those models disagree in level (settings whose fits vary from fold to fold
score lower). Each fold is also scored alone (``fold_mean`` and ``fold_sd`` of the table; what the pruner reads).

**First trial.** The estimator's defaults of the searched settings (those the space holds), so that the
search compares every proposal with the model a new user fits; the sampler proposes the rest.

**Budget.** ``n_trials`` trials at most, and no new trial after ``timeout`` seconds (a running trial
finishes). Same data, settings and ``seed`` → the same folds, the same proposals and the same trials.

**Choice.** The defaults are refitted unless the best-scoring trial's gain over them clears one standard error
— the one-standard-error rule of model selection (Breiman et al. 1984; Hastie, Tibshirani and Friedman, §7.10),
applied to the one model that needs no evidence, the defaults, with the standard error of the paired bootstrap over
patients of the two trials' out-of-fold predictions (:func:`ehrseq.bootstrap.paired_window_differences`, 1,000
resamples, seeded; the defaults are kept unless the central 68.27 % percentile interval of the resampled gains lies
above 0). A best trial that clears it is fitted on all patients **blended with the defaults**
(:class:`~ehrseq.DynamicSurvival` ``blend=``, weighing ``BLEND_WEIGHT`` = 0.5): the returned model averages the
defaults' ensemble and the best trial's. On a small cohort the best of many noisy cross-validated scores is biased
upwards even past the rule, and refitting it alone loses where it won by chance; the blend keeps half of a real
gain, halves a chance loss and gains what averaging two different models gains. On 25 outer folds of five small
suite sets, tuned − default was −0.002 C with the blend and −0.005 with the chosen trial refitted alone, on FRTCS
−0.001 against −0.005 (``docs/results/suite_diagnosis.md``, section 18). Where there is no complete trial of the
defaults or the settings cannot be blended (a setting both models of a blend share, such as ``locf``; a head
without survival curves in days) the best trial is fitted alone. The table's ``best`` marks the best-scoring trial and its ``note`` says what was refitted, with its gain over the
defaults and the interval.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, fields
from typing import Any

import numpy as np
import polars as pl

from ehrseq.bootstrap import paired_window_differences
from ehrseq.data.reader import read_table
from ehrseq.data.split import split_indices
from ehrseq.errors import ConfigError, EhrseqError, option
from ehrseq.estimator import DynamicSurvival
from ehrseq.evaluate import (
    event_of_interest,
    landmark_from_predictions,
    landmark_predictions,
    outcomes_since_origin,
    quantile_windows,
    windows_by_landmark,
)
from ehrseq.metrics.resampled import percentile_interval
from ehrseq.models.encoders import EncoderConfig
from ehrseq.models.families import get_family
from ehrseq.models.heads import HeadConfig
from ehrseq.progress import Progress, check_progress, progress_bar
from ehrseq.settings import EstimatorSettings

#: The metrics a trial can be scored by, and whether higher is better.
METRICS: dict[str, bool] = {"c_index": True, "uno_c": True, "auc": True, "brier": False, "ibs": False}
#: The choice's paired bootstrap: resamples of the patients, and the level of the interval whose lower end the
#: best trial's gain must clear (the share of a normal distribution within one standard deviation).
CHOICE_RESAMPLES = 1000
ONE_STANDARD_ERROR = 0.6827
#: The best trial's share of the tuned model, a blend of it and the defaults (module docstring, "Choice").
BLEND_WEIGHT = 0.5


# ---------------------------------------------------------------------------------------------- distributions
def _label(value: Any) -> Any:
    """The value Optuna records for a choice: itself when Optuna stores it (None, bool, int, float, str),
    ``"64,64"`` for a sequence, JSON for a mapping."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, Sequence):
        return ",".join(str(v) for v in value)
    raise ConfigError(f"a choice must be a number, a string, None, a list or a mapping, got {value!r}")


@dataclass(frozen=True)
class Choice:
    """One of ``options`` (numbers, strings, None, sequences such as ``hidden`` widths, or mappings)."""

    options: tuple[Any, ...]

    def __post_init__(self) -> None:
        options = tuple(tuple(o) if isinstance(o, list) else o for o in self.options)
        object.__setattr__(self, "options", options)
        if not options:
            raise ConfigError("a choice needs at least one option")
        labels = [_label(o) for o in options]
        if len(set(map(repr, labels))) != len(labels):
            raise ConfigError(f"the options of a choice must differ, got {list(options)}")

    def suggest(self, trial: Any, name: str) -> Any:
        labels = [_label(o) for o in self.options]
        return self.options[labels.index(trial.suggest_categorical(name, labels))]

    def values(self) -> tuple[Any, ...]:
        return self.options

    def contains(self, value: Any) -> bool:
        value = tuple(value) if isinstance(value, list) else value
        return any(type(value) is type(o) and value == o for o in self.options)

    def __str__(self) -> str:
        return "one of " + ", ".join(str(_label(o)) for o in self.options)


@dataclass(frozen=True)
class IntRange:
    """An integer in [low, high] (every ``step``-th; ``log=True``: uniform on a log scale)."""

    low: int
    high: int
    log: bool = False
    step: int = 1

    def __post_init__(self) -> None:
        for name in ("low", "high", "step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"an integer range needs integer {name}, got {value!r}")
        if self.low > self.high or self.step < 1 or (self.log and (self.low < 1 or self.step != 1)):
            raise ConfigError(f"invalid integer range {self} (low <= high, step >= 1; log: low >= 1, step 1)")

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step), log=self.log)

    def values(self) -> tuple[int, ...]:
        return (int(self.low), int(self.high))

    def contains(self, value: Any) -> bool:
        return (isinstance(value, numbers.Integral) and not isinstance(value, bool) and self.low <= value <= self.high
                and (value - self.low) % self.step == 0)

    def __str__(self) -> str:
        step = f" step {self.step}" if self.step != 1 else ""
        return f"integer in [{self.low}, {self.high}]{step}{' (log scale)' if self.log else ''}"


@dataclass(frozen=True)
class FloatRange:
    """A number in [low, high] (``log=True``: uniform on a log scale)."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        for name in ("low", "high"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ConfigError(f"a number range needs a finite {name}, got {value!r}")
        if self.low > self.high or (self.log and self.low <= 0):
            raise ConfigError(f"invalid number range {self} (low <= high; log: low > 0)")

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)

    def values(self) -> tuple[float, ...]:
        return (float(self.low), float(self.high))

    def contains(self, value: Any) -> bool:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and self.low <= value <= self.high

    def __str__(self) -> str:
        return f"number in [{self.low:g}, {self.high:g}]{' (log scale)' if self.log else ''}"


Distribution = Choice | IntRange | FloatRange

#: The default search space: setting of :class:`~ehrseq.settings.EstimatorSettings` → its range. The
#: sizes (``d_model``, ``n_layers``, ``hidden``) and ``dropout`` apply to the encoder and head given by
#: name; ``grid`` (bins of the horizon grid) matters to grid heads only. A new setting is one entry.
SEARCH_SPACE: dict[str, Distribution] = {
    "encoder": Choice(("gru", "lstm", "transformer", "landmark")),  # landmark + hidden () + wide: the linear model
    "head": Choice(("logistic_hazard", "pmf", "piecewise_constant_hazard", "lognormal", "weibull")),
    "grid": IntRange(8, 32, step=4),
    "d_model": Choice((16, 32, 64, 128)),
    "n_layers": IntRange(1, 2),
    "hidden": Choice(((), (32,), (64,), (128,), (64, 64))),
    "wide": Choice((True, False)),
    "any_time": Choice(("auto", False)),
    "steps": Choice((150, 300, 1000)),
    "dropout": FloatRange(0.0, 0.5),
    "lr": FloatRange(1e-4, 1e-2, log=True),
    "weight_decay": FloatRange(1e-6, 1e-1, log=True),
    "batch_size": Choice((16, 32, 64, 128)),
}


def distribution(spec: Any, name: str = "") -> Distribution:
    """A range from its written form (what a TOML or JSON space file holds): a list of options →
    :class:`Choice`; ``{choices = [...]}`` → :class:`Choice`; ``{low, high[, log][, step]}`` →
    :class:`IntRange` when low, high (and step) are integers, else :class:`FloatRange`."""
    if isinstance(spec, (Choice, IntRange, FloatRange)):
        return spec
    where = f"{name}: " if name else ""
    if isinstance(spec, (list, tuple)):
        return Choice(tuple(spec))
    if isinstance(spec, Mapping):
        keys = set(spec)
        if keys == {"choices"}:
            return Choice(tuple(spec["choices"]))
        if {"low", "high"} <= keys <= {"low", "high", "log", "step"}:
            ints = all(isinstance(spec.get(k, 1), numbers.Integral) and not isinstance(spec.get(k, 1), bool)
                       for k in ("low", "high", "step"))
            if ints:
                return IntRange(spec["low"], spec["high"], log=bool(spec.get("log", False)), step=spec.get("step", 1))
            if "step" in spec:
                raise ConfigError(f"{where}a step needs an integer range")
            return FloatRange(spec["low"], spec["high"], log=bool(spec.get("log", False)))
    raise ConfigError(f"{where}a range is a list of choices, {{choices = [...]}} or {{low, high, log, step}}; "
                      f"got {spec!r}")


def _field_kind(name: str) -> type | None:
    """``int`` or ``float`` when the setting's default says so (the type a range of it must keep)."""
    default = {f.name: f.default for f in fields(EstimatorSettings)}.get(name, MISSING)
    if isinstance(default, bool):
        return None
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    return None


def _check_settings(settings: EstimatorSettings) -> None:
    """The checks of ``fit`` that need no data: the encoder's and the head's configurations."""
    EncoderConfig.from_dict(settings.encoder_settings())
    head = settings.head_settings()
    family = get_family(head.get("kind", "logistic_hazard"))
    if family.grid and head.get("grid") is None:
        head["grid"] = [0.0, 1.0]  # the grid is fitted on the data
    if not family.multi_event:  # multi-event heads name their events from the data
        HeadConfig.from_dict(head)


def check_space(space: Mapping[str, Any], fixed: Mapping[str, Any]) -> dict[str, Distribution]:
    """``space`` as ranges (:func:`distribution`), checked against :class:`~ehrseq.settings.EstimatorSettings`:
    every name is a setting that is not also fixed, a range of an integer setting holds integers, and every
    end of a range and every choice passes the setting's own checks (with the ``fixed`` settings)."""
    where = option("space", flag="--space")
    names = EstimatorSettings.names()
    unknown = sorted(set(space) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; the settings of DynamicSurvival are "
                          f"{', '.join(names)}")
    both = sorted(set(space) & set(fixed))
    if both:
        raise ConfigError(f"{where}: {', '.join(both)} both searched and fixed; drop one")
    if not space:
        raise ConfigError(f"{where}: nothing to search (an empty space)")
    base = EstimatorSettings(**fixed)
    checked = {}
    for name, spec in space.items():
        dist = distribution(spec, name)
        kind = _field_kind(name)
        if kind is int and isinstance(dist, FloatRange):
            raise ConfigError(f"{where}: {name} takes integers, got {dist}")
        for value in dist.values():
            if kind is int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise ConfigError(f"{where}: {name} takes integers, got {value!r}")
            try:
                _check_settings(base.replace(**{name: value}))
            except ConfigError as exc:
                raise ConfigError(f"{where}: {name} = {value!r} is not a valid setting: {exc}") from exc
        checked[name] = dist
    return checked


def describe_space(space: Mapping[str, Any] | None = None) -> pl.DataFrame:
    """``setting, range, default``: a search space (default :data:`SEARCH_SPACE`) with the estimator's defaults."""
    space = SEARCH_SPACE if space is None else space
    defaults = EstimatorSettings().params()
    return pl.DataFrame({"setting": list(space), "range": [str(distribution(s, n)) for n, s in space.items()],
                         "default": [str(_label(defaults.get(n))) for n in space]})


# ---------------------------------------------------------------------------------------------- result
@dataclass(frozen=True)
class Tuned:
    """What :func:`tune` returns; unpacks as ``model, trials = ehrseq.tune(...)``.

    ``model``: the defaults, or the best-scoring trial's settings blended with them when its gain clears one standard
    error (with the fixed settings), fitted on all patients (a fitted :class:`~ehrseq.DynamicSurvival`; its ``blend``
    holds the best trial's settings that differ from the defaults: module docstring, "Choice");
    ``trials``: the table of trials; ``best``: the best trial's settings;
    ``metric`` and ``windows``: what scored the trials ((landmark s, horizon Δ) pairs); ``study``: the Optuna
    study (for Optuna's plots and analyses).
    """

    model: Any
    trials: pl.DataFrame
    best: dict[str, Any]
    metric: str
    windows: tuple[tuple[float, float], ...]
    study: Any

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.trials))


_STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def _trials_table(study: Any, space: Mapping[str, Distribution], best: int | None,
                  notes: Mapping[int, str] | None = None) -> pl.DataFrame:
    rows = []
    notes = notes or {}
    mixed = {name for name in space if len({type(t.params[name]) for t in study.trials if t.params.get(name) is not None}) > 1}
    for trial in study.trials:
        scores = [s for s in trial.user_attrs.get("fold_scores", []) if s is not None]
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        rows.append({
            "trial": trial.number,
            **{name: (str(trial.params[name]) if name in mixed and trial.params.get(name) is not None
                      else trial.params.get(name)) for name in space},
            "score": trial.value if trial.state.name == "COMPLETE" else None,
            "fold_mean": float(np.mean(scores)) if scores else None,
            "fold_sd": float(np.std(scores, ddof=1)) if len(scores) > 1 else None,
            "folds": len(scores),
            "state": _STATES.get(trial.state.name, trial.state.name.lower()),
            "seconds": duration,
            "best": trial.number == best,
            "note": trial.user_attrs.get("error", notes.get(trial.number)),
        })
    schema = {"trial": pl.Int64, "score": pl.Float64, "fold_mean": pl.Float64, "fold_sd": pl.Float64, "folds": pl.Int64,
              "state": pl.String, "seconds": pl.Float64, "best": pl.Boolean, "note": pl.String}
    frame = pl.DataFrame(rows, infer_schema_length=None)
    if frame.height == 0:
        return pl.DataFrame(schema={"trial": pl.Int64, **{n: pl.String for n in space}, **schema})
    return frame.cast({k: v for k, v in schema.items() if k in frame.columns})


# ---------------------------------------------------------------------------------------------- search
@dataclass(frozen=True)
class OutOfFold:
    """A trial's landmark risks for held-out patients: ``predictions`` (``patient_id, landmark, horizon, risk``),
    the patients' outcomes since origin ``times`` (``patient_id, outcome_time, event``) and the event type scored;
    of one fold, or of every fold (:meth:`pool`: each patient predicted once, by the model fitted without them)."""

    predictions: pl.DataFrame
    times: pl.DataFrame
    event: int

    @classmethod
    def pool(cls, parts: Sequence[OutOfFold]) -> OutOfFold:
        return cls(pl.concat([part.predictions for part in parts]), pl.concat([part.times for part in parts]),
                   parts[0].event)


class _TrialFailed(EhrseqError):
    """A trial whose settings could not be fitted or scored (recorded, not raised)."""


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's log at warning level or above only, restored afterwards (trials are shown by the bar)."""
    import optuna

    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


@dataclass(frozen=True)
class _Folds:
    """The tuning data: tables, the cohort's patients and their fold, the windows."""

    visits: pl.DataFrame
    outcomes: pl.DataFrame
    patient_ids: pl.Series
    fold: np.ndarray
    windows: tuple[tuple[float, float], ...]

    def tables(self, k: int, test: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
        ids = self.patient_ids.filter(pl.Series(self.fold == k) if test else pl.Series(self.fold != k)).implode()
        return (self.visits.filter(pl.col("patient_id").is_in(ids)),
                self.outcomes.filter(pl.col("patient_id").is_in(ids)))


def fold_predictions(model: Any, train: tuple[Any, Any], test: tuple[Any, Any],
                     windows: Sequence[tuple[float, float]]) -> tuple[OutOfFold, pl.DataFrame]:
    """The landmark risks of a ``model`` fitted on the ``train`` tables for the ``test`` tables at the ``windows``
    (s, Δ) (:func:`ehrseq.evaluate.landmark_predictions`), as an :class:`OutOfFold`, and the training patients'
    outcomes since origin (for the censoring weights)."""
    test_times, train_times = outcomes_since_origin(test, model), outcomes_since_origin(train, model)
    event = event_of_interest([model], None, test_times, train_times)
    predictions = pl.concat([landmark_predictions(model, test[0], [s], horizons, outcomes=test[1], event=event)
                             for s, horizons in windows_by_landmark(windows)])
    return OutOfFold(predictions, test_times, event), train_times


def window_score(predictions: pl.DataFrame, test_times: pl.DataFrame, train_times: pl.DataFrame,
                 windows: Sequence[tuple[float, float]], metric: str = "c_index", min_at_risk: int = 10,
                 event: int = 1) -> tuple[float | None, pl.DataFrame]:
    """``metric`` of the landmark risks ``predictions`` averaged over the ``windows`` (s, Δ) that have a value
    (``min_at_risk`` patients of ``test_times`` at risk and an event; censoring weights from ``train_times``),
    and the landmark table it averages."""
    table = pl.concat([landmark_from_predictions(predictions, test_times, train_times, [s], horizons, event=event,
                                                 min_at_risk=min_at_risk)
                       for s, horizons in windows_by_landmark(windows)])
    values = table[metric].drop_nulls()
    return (float(values.mean()) if values.len() else None), table


def check_options(*, n_trials: Any = 20, timeout: Any = None, folds: Any = 3, metric: Any = "c_index",
                  landmarks: Any = None, horizons: Any = None, space: Mapping[str, Any] | None = None,
                  fixed: Mapping[str, Any] | None = None, seed: int = 0) -> tuple[dict[str, Any], dict[str, Distribution]]:
    """The options of :func:`tune` checked before any table is read (a :class:`ConfigError` in the words of the
    interface called); returns the fixed settings (with the models' ``seed``) and the checked search space."""
    if isinstance(n_trials, bool) or not isinstance(n_trials, numbers.Integral) or n_trials < 1:
        raise ConfigError(f"{option('n_trials', n_trials, flag=f'--trials {n_trials}')}: the number of trials must "
                          "be an integer >= 1")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, numbers.Real)
                                or not timeout > 0):
        raise ConfigError(f"{option('timeout', timeout)}: the time budget must be a number of seconds > 0")
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or folds < 2:
        raise ConfigError(f"{option('folds', folds)}: cross-validation needs an integer >= 2 folds")
    if metric not in METRICS:
        raise ConfigError(f"{option('metric', metric)}: the score is one of {', '.join(METRICS)}")
    if (landmarks is None) != (horizons is None):
        raise ConfigError(f"give both {option('landmarks')} and {option('horizons')}, or neither (quantile windows)")
    fixed = dict(fixed or {})
    _check_settings(EstimatorSettings().replace(**fixed))  # unknown or invalid fixed settings
    if space is None or "seed" not in space:
        fixed.setdefault("seed", seed)
    if space is None:
        space = {name: dist for name, dist in SEARCH_SPACE.items() if name not in fixed}
    return fixed, check_space(space, fixed)


def tune(
    visits: Any,
    outcomes: Any,
    *,
    n_trials: int = 20,
    timeout: float | None = None,
    folds: int = 3,
    metric: str = "c_index",
    landmarks: Sequence[float] | None = None,
    horizons: Sequence[float] | None = None,
    min_at_risk: int = 10,
    space: Mapping[str, Any] | None = None,
    fixed: Mapping[str, Any] | None = None,
    seed: int = 0,
    pruner: Any = None,
    validation: float | None = 0.15,
    progress: Progress = "auto",
    **settings: Any,
) -> Tuned:
    """Search the settings of :class:`~ehrseq.DynamicSurvival` with Optuna; return the defaults, or the best settings
    blended with them when they gain more than one standard error, fitted on all patients, and the table of trials
    (see the module docstring).

    Parameters
    ----------
    visits, outcomes: the tables (any source of :func:`ehrseq.data.read_table`), as for ``fit``.
    n_trials: trials at most (>= 1). timeout: no new trial after this many seconds (a running trial finishes;
        the final fit comes after).
    folds: patient-level cross-validation folds (>= 2), stratified by event type.
    metric: ``"c_index"`` (default), ``"uno_c"``, ``"auc"`` (maximised), ``"brier"`` or ``"ibs"`` (minimised),
        averaged over the landmark windows.
    landmarks, horizons: the windows (days since origin, days after the landmark; every pair); default the
        quantile windows of the event times (module docstring).
    min_at_risk: a window scores a fold when that many test patients are at risk at its landmark.
    space: setting → range (:class:`Choice`, :class:`IntRange`, :class:`FloatRange`, or their written form,
        :func:`distribution`); default :data:`SEARCH_SPACE` without the fixed settings. A given space replaces
        the default (extend it with ``{**SEARCH_SPACE, ...}``).
    fixed, **settings: settings of every fit that are not searched (e.g. ``epochs=20``, ``origin="entry_time"``;
        the table settings also say how the tables are read).
    seed: seeds the folds, the sampler and (unless ``seed`` is a fixed setting) every model.
    pruner: an Optuna pruner; default ``MedianPruner(n_startup_trials=5, n_warmup_steps=0)``: from the sixth
        trial on, a trial whose mean score after a fold is worse than the median of the finished trials after
        that fold is stopped (state ``pruned``). ``False``: no pruning.
    validation: the early-stopping fraction of every fit (the argument of ``fit``).
    progress: a bar over the trials (``"auto"``: on a terminal only); the fits themselves show none.

    Returns
    -------
    :class:`Tuned`, which unpacks as ``(model, trials)``: ``model`` a fitted :class:`~ehrseq.DynamicSurvival`: the fixed
    settings, blended with the best trial's (``blend=``) when it gains more than one standard error; ``trials`` a
    Polars frame, one row per trial: ``trial`` (number), one column per
    searched setting (sequences written ``"64,64"``), ``score`` (of the out-of-fold predictions pooled over the folds;
    complete trials), ``fold_mean`` and ``fold_sd`` (of the folds' own scores),
    ``folds`` (scored), ``state`` (complete, pruned or failed), ``seconds``, ``best`` (the best-scoring trial) and
    ``note`` (why a trial failed: an error of its settings or of its fits; for the best trial, what was refitted and
    its gain over the defaults with its bootstrap interval, module docstring "Choice").
    """
    from ehrseq.extras import require

    require("tune", what="tuning")
    import optuna

    fixed, space = check_options(n_trials=n_trials, timeout=timeout, folds=folds, metric=metric, landmarks=landmarks,
                                 horizons=horizons, space=space, fixed={**(fixed or {}), **settings}, seed=seed)
    progress = check_progress(progress)
    if validation is not None and (isinstance(validation, bool) or not isinstance(validation, numbers.Real)
                                   or not 0 < validation < 1):
        raise ConfigError(f"{option('validation', validation)}: the early-stopping fraction of every fit is a number "
                          "in (0, 1), or None")
    if pruner is None:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    elif pruner is False:
        pruner = optuna.pruners.NopPruner()

    data = _tuning_data(visits, outcomes, fixed, folds, seed, landmarks, horizons)
    quiet = {"progress": False}
    direction = "maximize" if METRICS[metric] else "minimize"
    out_of_fold: dict[int, OutOfFold] = {}  # the defaults' and the best-scoring trial's so far (memory)
    scored: dict[int, float] = {}

    def keep(number: int, score: float, pooled: OutOfFold) -> None:
        sign = 1.0 if METRICS[metric] else -1.0
        scored[number] = score
        leader = max(scored, key=lambda n: sign * scored[n])
        out_of_fold[number] = pooled
        for other in [n for n in out_of_fold if n not in (0, leader)]:
            del out_of_fold[other]

    def objective(trial: Any) -> float:
        params = {name: dist.suggest(trial, name) for name, dist in space.items()}
        scores: list[float | None] = []
        parts: list[OutOfFold] = []
        for k in range(folds):
            train, test = data.tables(k, test=False), data.tables(k, test=True)
            try:
                model = DynamicSurvival(**{**fixed, **params, **quiet}).fit(*train, validation=validation)
                part, train_times = fold_predictions(model, train, test, data.windows)
                score, _ = window_score(part.predictions, part.times, train_times, data.windows, metric, min_at_risk,
                                        part.event)
            except (EhrseqError, FloatingPointError) as exc:  # bad settings, or a fit they made diverge
                trial.set_user_attr("error", f"fold {k + 1}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                raise _TrialFailed(str(exc)) from exc
            parts.append(part)
            scores.append(score)
            trial.set_user_attr("fold_scores", list(scores))
            done = [s for s in scores if s is not None]
            if done:
                trial.report(float(np.mean(done)), k)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        pooled = OutOfFold.pool(parts)
        score, _ = window_score(pooled.predictions, pooled.times, pooled.times, data.windows, metric, min_at_risk,
                                pooled.event)
        if score is None:
            trial.set_user_attr("error", f"no window had a {metric} on the out-of-fold predictions (too few patients "
                                         "at risk or events)")
            raise _TrialFailed(trial.user_attrs["error"])
        keep(trial.number, score, pooled)
        return score

    sampler = optuna.samplers.TPESampler(seed=seed)
    with _quiet_optuna():
        study = optuna.create_study(direction=direction, sampler=sampler, pruner=pruner)
        start = _default_trial(space, fixed)
        if start:
            study.enqueue_trial(start)  # the first trial: the estimator's defaults, where the space holds them
        with progress_bar(progress, total=n_trials, desc="tuning", unit="trial") as bar:
            def advance(study: Any, trial: Any) -> None:
                bar.update(1)
                complete = [t for t in study.trials if t.state.name == "COMPLETE"]
                if complete:
                    bar.set_postfix({metric: f"{study.best_value:.4f}"})

            study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(_TrialFailed,), callbacks=[advance])
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        notes = [t.user_attrs["error"] for t in study.trials if "error" in t.user_attrs]
        reason = f": {notes[0]}" if notes else " (every trial was pruned)"
        raise ConfigError(f"no trial of {len(study.trials)} completed{reason}")
    defaults = 0 if start and len(start) == len(space) and study.trials[0].state.name == "COMPLETE" else None
    best = study.best_trial
    params = {name: dist.suggest(optuna.trial.FixedTrial(best.params), name) for name, dist in space.items()}
    refit, note = _refit(study, params, defaults, fixed, out_of_fold, data.windows, metric, min_at_risk, seed)
    model = DynamicSurvival(**{**refit, **quiet}).fit(data.visits, data.outcomes, validation=validation)
    model.set_params(progress=fixed.get("progress", "auto"))
    return Tuned(model, _trials_table(study, space, best.number, {best.number: note}), params, metric, data.windows,
                 study)


def _refit(study: Any, params: Mapping[str, Any], defaults: int | None, fixed: Mapping[str, Any],
           out_of_fold: Mapping[int, OutOfFold], windows: Sequence[tuple[float, float]], metric: str,
           min_at_risk: int, seed: int) -> tuple[dict[str, Any], str]:
    """The settings of the tuned model and the note on the best trial (module docstring, "Choice"): the defaults
    unless the best trial's gain over them clears one standard error; then the best trial blended with them, or alone
    where there are no defaults to blend it with or its settings cannot be blended."""
    best = study.best_trial.number
    if defaults is None:
        return {**fixed, **params}, "refitted alone (no complete trial of the defaults to compare and blend it with)"
    if best == defaults:
        return dict(fixed), "the defaults, refitted"
    gain = gain_over_defaults(study, defaults, out_of_fold, windows, metric, min_at_risk=min_at_risk, seed=seed)
    if gain is None or gain.lower <= 0:
        what = "no window scores both it and the defaults" if gain is None else f"{gain}, holds 0"
        return dict(fixed), f"not refitted ({what}): the defaults are refitted"
    blend, reason = blend_with_defaults(params, fixed)
    if blend is None:
        return {**fixed, **params}, f"refitted alone ({gain}; not blended with the defaults: {reason})"
    return ({**fixed, "blend": blend, "blend_weight": BLEND_WEIGHT},
            f"refitted blended with the defaults (trial {defaults}), weighing {BLEND_WEIGHT:g} ({gain})")


def blend_with_defaults(params: Mapping[str, Any], fixed: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The ``blend`` that adds a trial's settings ``params`` to the defaults (with the ``fixed`` settings): those that
    differ from the defaults; ``None`` and the reason when they cannot be blended (a setting both models of a blend
    share, a head without survival curves in days)."""
    base = EstimatorSettings(**fixed).params()
    blend = {name: value for name, value in params.items() if _label(value) != _label(base[name])}
    try:
        settings = EstimatorSettings(**fixed, blend=blend, blend_weight=BLEND_WEIGHT)
    except ConfigError as exc:
        return None, str(exc).splitlines()[0]
    heads = [one.head_settings().get("kind", "logistic_hazard") for one in (settings, settings.blended())]
    if not all(get_family(kind).ensembles for kind in heads):
        return None, f"the heads {heads} do not all average survival curves in days"
    return blend, ""


@dataclass(frozen=True)
class Gain:
    """A trial's gain over the defaults on the tuning metric (higher is better for every metric: a Brier score's
    gain is its fall) and the central 68.27 % interval (± one standard error) of its paired bootstrap over patients."""

    value: float
    lower: float
    upper: float

    def __str__(self) -> str:
        return (f"its gain over the defaults {self.value:+.4f}, paired bootstrap interval over patients of ± one "
                f"standard error {self.lower:+.4f} to {self.upper:+.4f}")


def gain_over_defaults(study: Any, defaults: int, out_of_fold: Mapping[int, OutOfFold],
                       windows: Sequence[tuple[float, float]], metric: str, *, min_at_risk: int = 10,
                       seed: int = 0) -> Gain | None:
    """The :class:`Gain` of the best trial of ``study`` over trial ``defaults`` from the paired bootstrap over patients
    of their out-of-fold predictions ``out_of_fold`` (by trial number; module docstring, "Choice"); ``None`` when no
    window scores both."""
    mine, reference = out_of_fold[study.best_trial.number], out_of_fold[defaults]
    gain, resampled = paired_window_differences(mine.predictions, reference.predictions, mine.times, mine.times,
                                                windows, metric, event=mine.event, min_at_risk=min_at_risk,
                                                n_bootstrap=CHOICE_RESAMPLES, seed=seed)
    if gain is None:
        return None
    sign = 1.0 if METRICS[metric] else -1.0
    lower, upper = (float(bound[0]) for bound in percentile_interval(sign * resampled[:, None], ONE_STANDARD_ERROR))
    return Gain(sign * gain, lower, upper)


def _default_trial(space: Mapping[str, Distribution], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """The estimator's default of every searched setting that the space holds (as Optuna records it)."""
    defaults = EstimatorSettings(**fixed).params()
    return {name: _label(defaults[name]) for name, dist in space.items() if dist.contains(defaults[name])}


def _tuning_data(visits: Any, outcomes: Any, fixed: Mapping[str, Any], folds: int, seed: int,
                 landmarks: Sequence[float] | None, horizons: Sequence[float] | None) -> _Folds:
    """Read the tables once, build the cohort with the fixed table settings, assign folds and windows."""
    settings = EstimatorSettings(**fixed)
    cohort_settings = settings.cohort()
    visits = read_table(visits, "visits", null_values=cohort_settings.null_values)
    outcomes = read_table(outcomes, "outcomes", null_values=cohort_settings.null_values)
    cohort = cohort_settings.build(visits, outcomes)
    patients = cohort.patients
    ids = patients["patient_id"]
    visits = visits.filter(pl.col("patient_id").is_in(ids.implode()))  # what fit reads; drop="drop" rows gone
    outcomes = outcomes.filter(pl.col("patient_id").is_in(ids.implode()))
    events = patients["event"].to_numpy()
    n_events = int((events > 0).sum())
    if n_events < folds:
        raise ConfigError(f"{option('folds', folds)}: {n_events} patient(s) with an event cannot be shared out over "
                          f"{folds} folds")
    fold = np.empty(patients.height, dtype=np.int64)
    for k, part in enumerate(split_indices(events, [1.0 / folds] * folds, seed)):
        fold[part] = k
    if landmarks is not None and horizons is not None:
        if not len(landmarks) or not len(horizons) or min(float(h) for h in horizons) <= 0:
            raise ConfigError(f"{option('landmarks')} and {option('horizons')} need at least one value each, "
                              "horizons > 0")
        windows = tuple(sorted((float(s), float(h)) for s in landmarks for h in horizons))
    else:
        cause = settings.objective().cause
        times = patients.filter(pl.col("event") == cause if cause is not None else pl.col("event") > 0)
        windows = quantile_windows(times["outcome_time"].to_numpy()) if times.height else ()
        if not windows:
            raise ConfigError(f"the event times leave no landmark window (too few distinct event times); give "
                              f"{option('landmarks')} and {option('horizons')}")
    return _Folds(visits, outcomes, ids, fold, windows)
