"""The ``ehrseq`` command: ``validate``, ``split``, ``train``, ``tune``, ``evaluate``, ``explain``, ``score`` and ``demo``.

::

    ehrseq validate --visits visits.csv --outcomes outcomes.csv
    ehrseq split    --visits visits.csv --outcomes outcomes.csv --out split/ --fractions 0.8 0.2
    ehrseq train    --visits split/train_visits.csv --outcomes split/train_outcomes.csv --config model.toml --out model/
    ehrseq tune     --visits split/train_visits.csv --outcomes split/train_outcomes.csv --trials 30 --timeout 3600 \\
                    --out tuned/          # tuned/model/ (the refitted best settings), tuned/trials.csv and .parquet
    ehrseq evaluate --model model/ --visits split/test_visits.csv --outcomes split/test_outcomes.csv \\
                    --train-visits split/train_visits.csv --train-outcomes split/train_outcomes.csv \\
                    --landmarks 365 730 --horizons 365 1095 --baselines cox,km --output landmarks.md
    ehrseq explain  --model model/ --visits split/test_visits.csv --patient 17 --horizon 365 --view change
    ehrseq score    --model model/ --visits 'visits/*.parquet' --out predictions/ --horizons 365 730 1825
    ehrseq demo     --out outputs/demo

Tables are Parquet or CSV files, folders of them, globs or lists of files, read by one reader
(:func:`ehrseq.data.read_table`: CSV null markers such as R's ``NA``, ``--null-values`` to change them).
Every option of :class:`ehrseq.DynamicSurvival` has a ``train`` flag (``--head``, ``--numeric``,
``--unmatched``, ...); a configuration file (TOML or JSON; ``data_specs/model.toml`` documents every key)
holds the same settings, plus ``validation`` (the argument of ``fit``), and flags override it. ``head``
names a registered head family (:mod:`ehrseq.models.families`) and ``loss`` registered loss terms
(:mod:`ehrseq.losses.terms`) with their weights and options::

    head = "logistic_hazard"
    loss = {nll = 1.0, ranking = {weight = 0.1, horizon = 365}}

``tune`` searches the model settings with Optuna (the tune extra; :mod:`ehrseq.tuning`): the same flags and
``--config`` fix settings, ``--space FILE`` (TOML or JSON: setting = a list of choices or ``{low, high, log}``)
replaces the default search space. Errors name the flags to type.

Exit codes: 0 on success, 1 when the data, the configuration or the model is at fault (one line on
standard error; ``--debug`` shows the traceback), 2 for a malformed command line. Warnings about the
data (e.g. R's event coding) are printed as ``ehrseq: warning: ...``. Progress bars are shown on a
terminal only, unless ``--progress`` / ``--no-progress`` say otherwise. Heavy modules (torch, polars)
are imported only by the command that needs them, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ehrseq import __version__
from ehrseq.errors import ConfigError, DataWarning, EhrseqError, command_line

OUTPUT_SUFFIXES = (".csv", ".parquet", ".md")
#: ``fit`` arguments accepted in a training configuration (the other keys go to the constructor).
FIT_KEYS = ("validation",)
#: Settings that can be off (``None`` in Python): TOML and JSON files say ``false`` (``codes`` also ``""``).
OFF_KEYS = ("codes", "numeric", "categorical", "max_visits", "event_types", "null_values", "cause", "patience", "epochs",
            "grad_clip", "validation")


# ---------------------------------------------------------------------------------------------- inputs
def read_table(source: str | Sequence[str], name: str, null_values: Sequence[str] | None = None) -> Any:
    """A table from a file, folder, glob or list of files (:func:`ehrseq.data.read_table`)."""
    from ehrseq.data import read_table as read

    if not isinstance(source, str):
        source = source[0] if len(source) == 1 else list(source)
    return read(source, name, null_values=null_values)


def read_config(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """A training configuration from a TOML or JSON file (an empty one when ``path`` is ``None``)."""
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"configuration file {file} does not exist")
    suffix = file.suffix.lower()
    text = file.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{file} is not valid JSON: {exc}") from exc
    elif suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError as exc:  # Python 3.10
            raise ConfigError(f"{file}: TOML configurations need Python 3.11 or later (tomllib); "
                              "write the configuration as JSON") from exc
        try:
            config = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file} is not valid TOML: {exc}") from exc
    else:
        raise ConfigError(f"configuration file {file}: expected a .toml or .json file")
    if not isinstance(config, dict):
        raise ConfigError(f"{file} must hold a table of DynamicSurvival arguments")
    return config


def _split_config(config: dict[str, Any], source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Constructor and ``fit`` arguments of a configuration; unknown keys are an error."""
    allowed = estimator_parameters()
    unknown = sorted(set(config) - set(allowed) - set(FIT_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; valid settings are "
                          f"{', '.join(allowed + list(FIT_KEYS))}")
    config = {k: None if k in OFF_KEYS and (v is False or (k == "codes" and v == "")) else v for k, v in config.items()}
    fit = {key: config[key] for key in FIT_KEYS if key in config}
    return {k: v for k, v in config.items() if k not in FIT_KEYS}, fit


def estimator_parameters() -> list[str]:
    """The keyword arguments of :class:`ehrseq.DynamicSurvival` (each a ``train`` flag and a configuration key)."""
    import inspect

    from ehrseq.estimator import DynamicSurvival

    return [name for name in inspect.signature(DynamicSurvival.__init__).parameters if name != "self"]


# ---------------------------------------------------------------------------------------------- value types
def _landmark(text: str) -> Any:
    """A landmark: days (a number) or an ISO date / datetime."""
    try:
        return float(text)
    except ValueError:
        pass
    import datetime as dt

    try:
        return dt.date.fromisoformat(text) if len(text) == 10 else dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of days nor an ISO date") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _positive(text: str) -> float:
    value = _number(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def _count_or_auto(text: str) -> int | str:
    """A count, or the word ``auto``, for ``--n-models`` and ``--linear-members``."""
    return "auto" if text.lower() == "auto" else _count(text)


def _share_or_auto(text: str) -> float | str:
    """A number in [0, 1], or the word ``auto``, for ``--linear-weight``."""
    if text.lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number in [0, 1] or auto") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number in [0, 1] or auto")
    return value


def _any_time(text: str) -> bool | str:
    """``on``/``off``/``auto`` (also true/false/yes/no/1/0) for ``--any-time``."""
    word = text.lower()
    if word == "auto":
        return "auto"
    if word in ("on", "true", "yes", "1"):
        return True
    if word in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not on, off or auto")


def _optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """``kind``, or ``None`` for the word ``none``."""
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


def _loss(text: str) -> Any:
    """A loss term name, or a JSON mapping of terms to weights / settings."""
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"--loss {text!r} is not valid JSON: {exc}") from None
    return text


def _blend(text: str) -> dict[str, Any]:
    """A JSON mapping of the second model's settings, for ``--blend``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--blend {text!r} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"--blend {text!r} is not a JSON mapping of settings, e.g. "
                                         '\'{"encoder": "lstm", "head": "weibull"}\'')
    return value


def _share(text: str) -> float:
    """A number in (0, 1), for ``--blend-weight``."""
    value = _number(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number in (0, 1)")
    return value


def _grid(values: list[float]) -> Any:
    """``--grid 20`` is a number of bins, ``--grid 30 90 365`` cut points (days)."""
    if len(values) == 1 and float(values[0]).is_integer():
        return int(values[0])
    return [float(v) for v in values]


def _event_types(values: list[str]) -> Any:
    """``--event-types 2`` declares K, ``--event-types death transplant`` names the types."""
    if len(values) == 1 and values[0].isdigit():
        return int(values[0])
    return list(values)


def _names(text: str) -> list[str]:
    """A comma-separated list: ``cox,rsf,km``."""
    return [part.strip() for part in text.split(",") if part.strip()]


# ---------------------------------------------------------------------------------------------- estimator flags
@dataclass(frozen=True)
class Flag:
    """The ``train`` flag of one :class:`ehrseq.DynamicSurvival` argument: ``argparse`` settings and how the
    parsed value becomes the argument (``convert``)."""

    name: str
    help: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    convert: Callable[[Any], Any] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


#: How tables are read: flags of ``validate`` and ``train`` (arguments of ``build_cohort`` and the estimator).
TABLE_FLAGS = (
    Flag("numeric", "numeric feature columns; declared columns win over the inference rules (default: inferred)",
         {"nargs": "+", "metavar": "COLUMN"}),
    Flag("categorical", "categorical feature columns, e.g. integer-coded factors (default: inferred)",
         {"nargs": "+", "metavar": "COLUMN"}),
    Flag("codes", "list-of-codes column; in CSV files 'E11;I10' ('' for none; default: codes)",
         {"metavar": "COLUMN"}, lambda v: v or None),
    Flag("origin", "time origin: first_visit, zero or a column name (default: first_visit)", {"metavar": "ORIGIN"}),
    Flag("duplicates", "duplicate (patient, time) visits: error or merge (default: error)",
         {"choices": ("error", "merge")}),
    Flag("unmatched", "patients in only one of the tables: error or drop (default: error)",
         {"choices": ("error", "drop")}),
    Flag("max_visits", "keep each patient's most recent N visits (default: all)", {"type": _count, "metavar": "N"}),
    Flag("event_types", "K, or the names of the event types 1..K (default: the largest event code)",
         {"nargs": "+", "metavar": "K_OR_NAME"}, _event_types),
    Flag("null_values", "strings read as missing in CSV files and text columns of numbers (default: '' NA N/A "
         "n/a NaN nan NULL null #N/A .)", {"nargs": "*", "metavar": "TEXT"}),
)

#: The model and its training: the other ``train`` flags (one per argument of DynamicSurvival).
MODEL_FLAGS = (
    Flag("encoder", "gru, lstm or transformer (default: gru)", {"metavar": "KIND"}),
    Flag("head", "survival head, e.g. logistic_hazard, pmf, lognormal, competing_pmf (default: logistic_hazard)",
         {"metavar": "KIND"}),
    Flag("loss", "a loss term (nll, crps, ...) or a JSON mapping of terms to weights (default: nll)",
         {"type": _loss, "metavar": "LOSS"}),
    Flag("grid", "grid heads: one integer = number of bins, several numbers = cut points in days (default: 20)",
         {"nargs": "+", "type": _positive, "metavar": "N_OR_DAYS"}, _grid),
    Flag("d_model", "encoder width (default: 64)", {"type": int, "metavar": "N"}),
    Flag("n_layers", "encoder layers (default: 1)", {"type": int, "metavar": "N"}),
    Flag("dropout", "dropout rate (default: 0.1)", {"type": _number, "metavar": "RATE"}),
    Flag("hidden", "hidden layer widths of the head (default: 64)", {"nargs": "+", "type": int, "metavar": "N"}),
    Flag("locf", "carry the last observed value forward instead of the training mean (default: on)",
         {"action": argparse.BooleanOptionalAction}),
    Flag("measurement_history", "for each numeric feature with missing values, also the time since it was last "
         "measured and whether it ever was (default: on)", {"action": argparse.BooleanOptionalAction}),
    Flag("log_skewed", "read every right-skewed non-negative numeric feature (skewness above 1, most lab values) on the "
         "log scale (default: on)", {"action": argparse.BooleanOptionalAction}),
    Flag("wide", "a linear path from the current visit's inputs to the head, beside the sequence path (default: on)",
         {"action": argparse.BooleanOptionalAction}),
    Flag("any_time", "predict at any time after a visit: the head reads the time elapsed since it, and training "
         "samples prediction times between visits (default: auto = on for heads in days)",
         {"type": _any_time, "metavar": "on|off|auto"}),
    Flag("n_models", "a deep ensemble of N models whose survival curves are averaged, or auto (default: auto = "
         "5 for cohorts under 10,000 patients, else 1)", {"type": _count_or_auto, "metavar": "N|auto"}),
    Flag("linear_members", "linear models of the same inputs added to the ensemble, trained at a learning rate of at least 0.01 "
         "(0.01 x 64 / --d-model above the default width), or auto "
         "(default: auto = as many as the networks when --n-models is auto, else 0)",
         {"type": _count_or_auto, "metavar": "N|auto"}),
    Flag("linear_weight", "the linear members' share of the ensemble's average, or auto (default: auto = the share "
         "that maximises the likelihood of the validation patients)", {"type": _share_or_auto, "metavar": "W|auto"}),
    Flag("blend", "a blend of two models: a JSON mapping of the second model's settings (the others are this "
         "one's), e.g. '{\"encoder\": \"lstm\", \"head\": \"weibull\"}'; the prediction averages the two "
         "(default: none)", {"type": _blend, "metavar": "JSON"}),
    Flag("blend_weight", "the second model's share of a blend's average (default: 0.5)",
         {"type": _share, "metavar": "W"}),
    Flag("cause", "single-event heads on K > 1 event types: the event type of interest", {"type": int, "metavar": "K"}),
    Flag("visit_weighting", "auto, visit or patient (default: auto)", {"choices": ("auto", "visit", "patient")}),
    Flag("epochs", "training epochs, or none for the budget of --steps (default: none)",
         {"type": _optional(_count), "metavar": "N"}),
    Flag("steps", "training budget in optimiser steps when --epochs is none (default: 300)",
         {"type": _count, "metavar": "N"}),
    Flag("min_epochs", "... and at least N passes over the data (default: 10)", {"type": _count, "metavar": "N"}),
    Flag("batch_size", "patients per batch (default: 64)", {"type": int, "metavar": "N"}),
    Flag("lr", "learning rate (default: 0.001)", {"type": _positive, "metavar": "RATE"}),
    Flag("weight_decay", "AdamW weight decay (default: 0.0001)", {"type": _number, "metavar": "W"}),
    Flag("patience", "early-stopping patience in epochs, or none (default: 8)",
         {"type": _optional(_count), "metavar": "N"}),
    Flag("grad_clip", "gradient norm clip, or none (default: 1.0)", {"type": _optional(_positive), "metavar": "NORM"}),
    Flag("scheduler", "cosine, plateau or none (default: cosine)", {"choices": ("cosine", "plateau", "none")}),
    Flag("seed", "random seed (default: 0)", {"type": int, "metavar": "N"}),
    Flag("deterministic", "deterministic algorithms (default: off)", {"action": argparse.BooleanOptionalAction}),
    Flag("device", "auto, cpu, cuda, cuda:1, ... (default: auto)", {"metavar": "DEVICE"}),
    Flag("amp", "mixed precision on CUDA (default: off)", {"action": argparse.BooleanOptionalAction}),
)


#: The fixed settings of ``tune``: the model flags but ``--seed``, which seeds the search too.
TUNE_MODEL_FLAGS = tuple(flag for flag in MODEL_FLAGS if flag.name != "seed")


def _add_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag], title: str) -> None:
    group = parser.add_argument_group(title)
    for flag in flags:
        group.add_argument(flag.flag, dest=f"option_{flag.name}", default=argparse.SUPPRESS, help=flag.help,
                           **flag.kwargs)


def _given(args: argparse.Namespace, flags: Sequence[Flag]) -> dict[str, Any]:
    """The arguments of the flags given on the command line (absent flags are absent)."""
    values = {}
    for flag in flags:
        key = f"option_{flag.name}"
        if hasattr(args, key):
            value = getattr(args, key)
            values[flag.name] = flag.convert(value) if flag.convert is not None else value
    return values


def _progress(args: argparse.Namespace) -> Any:
    """``--progress`` / ``--no-progress``, else ``"auto"`` (a bar on a terminal only)."""
    return "auto" if args.progress is None else args.progress


def _add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show a progress bar (default: only when standard error is a terminal)")


# ---------------------------------------------------------------------------------------------- commands
def _say(text: str = "") -> None:
    print(text, flush=True)


def _tables(args: argparse.Namespace, null_values: Sequence[str] | None) -> tuple[Any, Any]:
    visits = read_table(args.visits, "visits", null_values)
    outcomes = None if args.outcomes is None else read_table(args.outcomes, "outcomes", null_values)
    return visits, outcomes


def cmd_validate(args: argparse.Namespace) -> int:
    options = _given(args, TABLE_FLAGS)
    visits, outcomes = _tables(args, options.get("null_values"))
    from ehrseq.data import build_cohort

    cohort = build_cohort(visits, outcomes, **options)
    _say(str(cohort.report))
    _say(f"\nvalid: {cohort.n_patients:,} patients, {cohort.n_visits:,} visits")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if len(args.names) != len(args.fractions):
        raise ConfigError(f"--names gives {len(args.names)} name(s) for {len(args.fractions)} fraction(s)")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise ConfigError(f"{out} already exists and is not empty; pass --overwrite to write into it")
    visits, outcomes = _tables(args, args.null_values)
    import polars as pl

    from ehrseq.data import split_tables

    stratify = None if args.stratify == "none" else args.stratify
    suffix = args.format or ("csv" if _first_path(args.visits).lower().endswith((".csv", ".tsv", ".tab")) else "parquet")
    parts = split_tables(visits, outcomes, tuple(args.fractions), seed=args.seed, stratify=stratify)
    out.mkdir(parents=True, exist_ok=True)
    for name, (part_visits, part_outcomes) in zip(args.names, parts):
        for table, kind in ((part_visits, "visits"), (part_outcomes, "outcomes")):
            path = out / f"{name}_{kind}.{suffix}"
            write_table(table, path)
        events = (part_outcomes.get_column("event").cast(pl.Int64).value_counts(sort=True)
                  if "event" in part_outcomes.columns else None)
        counted = "" if events is None else ", " + ", ".join(
            f"{'censored' if k == 0 else f'event {k}'}: {n}" for k, n in sorted(events.iter_rows()))
        _say(f"{name}: {part_outcomes.height:,} patients, {part_visits.height:,} visits{counted} -> "
             f"{out / f'{name}_visits.{suffix}'}, {out / f'{name}_outcomes.{suffix}'}")
    return 0


def _first_path(source: str | Sequence[str]) -> str:
    return source if isinstance(source, str) else source[0]


def write_table(table: Any, path: Path) -> None:
    """A table to CSV (lists of codes written ``'E11;I10'``, as the reader reads them back) or Parquet."""
    import polars as pl

    if path.suffix == ".csv":
        lists = [c for c, d in table.schema.items() if isinstance(d, pl.List)]
        table.with_columns(pl.col(c).cast(pl.List(pl.String)).list.join(";") for c in lists).write_csv(path)
    else:
        table.write_parquet(path)


def cmd_train(args: argparse.Namespace) -> int:
    from ehrseq.train import init_distributed

    # under torchrun every process trains its share; rank 0 writes the model and reports
    say = _say if init_distributed()[0] == 0 else (lambda *_: None)
    config = read_config(args.config)
    config.update(_given(args, TABLE_FLAGS + MODEL_FLAGS))
    if hasattr(args, "validation"):
        config["validation"] = args.validation
    if args.progress is not None or "progress" not in config:
        config["progress"] = _progress(args)
    out = Path(args.out)
    if out.exists() and not args.overwrite and any(out.iterdir()):
        raise ConfigError(f"{out} already exists and is not empty; pass --overwrite to replace it")
    options, fit = _split_config(config, str(args.config or "the command line"))
    from ehrseq.estimator import DynamicSurvival

    model = DynamicSurvival(**options)  # settings are checked before the tables are read
    visits = read_table(args.visits, "visits", model.cohort_settings.null_values)
    outcomes = read_table(args.outcomes, "outcomes", model.cohort_settings.null_values)
    model.fit(visits, outcomes, **fit)
    say(str(model.cohort_report_))
    history = model.history_
    records = history.records
    last = records[-1] if records else {}
    parts = [f"{len(records)} epoch(s)"]
    if history.best_epoch is not None:
        parts.append(f"best epoch {history.best_epoch}")
    if history.stopped_early:
        parts.append("stopped early")
    if "train_loss" in last:
        parts.append(f"final training loss {last['train_loss']:.4f}")
    val = [r["val_loss"] for r in records if "val_loss" in r]
    if val:
        parts.append(f"best validation loss {min(val):.4f}")
    parts.append(f"{sum(r.get('seconds', 0.0) for r in records):.1f} s")
    say("\ntraining: " + ", ".join(parts))
    if model.family_.in_days:
        say(f"reach of the training data: {model.reach_}")
    path = model.save(out, overwrite=args.overwrite)
    from ehrseq.scoring import model_id

    say(f"model saved to {path} (model id {model_id(path)})")
    return 0


TUNE_OUTPUTS = ("model", "trials.csv", "trials.parquet")


def cmd_tune(args: argparse.Namespace) -> int:
    from ehrseq.extras import require

    require("tune", what="ehrseq tune")
    config = read_config(args.config)
    config.update(_given(args, TABLE_FLAGS + TUNE_MODEL_FLAGS))
    if hasattr(args, "validation"):
        config["validation"] = args.validation
    out = Path(args.out)
    if out.exists() and not args.overwrite and any(out.iterdir()):
        raise ConfigError(f"{out} already exists and is not empty; pass --overwrite to replace its "
                          f"{', '.join(TUNE_OUTPUTS)}")
    fixed, fit = _split_config(config, str(args.config or "the command line"))
    space = None if args.space is None else read_config(args.space)
    from ehrseq.settings import EstimatorSettings
    from ehrseq.tuning import check_options, tune

    search = {"n_trials": args.trials, "timeout": args.timeout, "folds": args.folds, "metric": args.metric,
              "landmarks": args.landmarks, "horizons": args.horizons, "space": space, "seed": args.seed}
    settings, _ = check_options(**search, fixed=fixed)  # before the tables are read
    null_values = EstimatorSettings(**settings).cohort().null_values
    visits = read_table(args.visits, "visits", null_values)
    outcomes = read_table(args.outcomes, "outcomes", null_values)
    result = tune(visits, outcomes, **search, fixed=fixed, min_at_risk=args.min_at_risk,
                  validation=fit.get("validation", 0.15), progress=_progress(args))
    trials = result.trials
    import polars as pl

    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_width_chars=250, fmt_str_lengths=40):
        _say(str(trials.drop("note")))
    states = trials["state"].value_counts(sort=True)
    counts = ", ".join(f"{n} {state}" for state, n in states.iter_rows())
    best = trials.filter("best").row(0, named=True)
    spread = "" if best["fold_sd"] is None else f" ± {best['fold_sd']:.4f}"
    _say(f"\n{trials.height} trial(s) ({counts}) in {trials['seconds'].sum():.0f} s; windows (s, Δ): "
         + ", ".join(f"({s:g}, {h:g})" for s, h in result.windows))
    _say(f"best trial {best['trial']}: {result.metric} {best['score']:.4f} on the out-of-fold predictions of "
         f"{best['folds']} folds (per fold {best['fold_mean']:.4f}{spread}); "
         + ", ".join(f"{name}={value!r}" for name, value in result.best.items()))
    _say(f"trial {best['trial']} {best['note']}")
    out.mkdir(parents=True, exist_ok=True)
    path = result.model.save(out / "model", overwrite=args.overwrite)
    trials.write_csv(out / "trials.csv")
    trials.write_parquet(out / "trials.parquet")
    from ehrseq.scoring import model_id

    _say(f"model (fitted on all patients) saved to {path} (model id {model_id(path)}); trials "
         f"written to {out / 'trials.csv'} and {out / 'trials.parquet'}")
    return 0


def _write_output(table: Any, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ConfigError(f"--output {path}: expected a .csv, .parquet or .md file")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        table.write_csv(path)
    elif suffix == ".parquet":
        table.write_parquet(path)
    else:
        path.write_text(_markdown(table), encoding="utf-8")


def _markdown(table: Any) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.iter_rows()]
    return "\n".join(lines) + "\n"


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.output is not None and Path(args.output).suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(f"--output {args.output}: expected a .csv, .parquet or .md file")
    baselines = args.baselines or []
    from ehrseq.baselines import BASELINES

    unknown = [name for name in baselines if name not in BASELINES]
    if unknown:
        raise ConfigError(f"--baselines {','.join(unknown)}: unknown; choose from {','.join(BASELINES)}")
    if baselines and args.train_visits is None:
        raise ConfigError("--baselines are fitted on the training tables: pass --train-visits FILE")
    compared = None if args.compare is None else _comparison_baseline(args.compare, args.train_visits)
    from ehrseq.estimator import load

    model = load(args.model)
    null_values = model.cohort_settings.null_values
    visits = read_table(args.visits, "visits", null_values)
    outcomes = read_table(args.outcomes, "outcomes", null_values)
    train_outcomes = read_table(args.train_outcomes, "training outcomes", null_values)
    train = train_outcomes if args.train_visits is None else (read_table(args.train_visits, "training visits",
                                                                          null_values), train_outcomes)
    import polars as pl

    from ehrseq.baselines import reading_like
    from ehrseq.evaluate import landmark, landmark_models

    options = {"event": args.event, "ci": args.ci, "n_bootstrap": args.bootstrap, "seed": args.seed,
               "progress": _progress(args)}
    cause = model.objective.cause or args.event or 1  # of the baselines: the type the model is evaluated for
    if baselines:
        models: dict[str, Any] = {"ehrseq": model}
        for name in baselines:
            models[name] = reading_like(name, model, cause=cause).fit(*train)
        table = landmark_models(models, visits, outcomes, args.landmarks, args.horizons, train, **options)
    else:
        table = landmark(model, visits, outcomes, args.landmarks, args.horizons, train, **options)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_width_chars=250,
                   fmt_str_lengths=40):
        _say(str(_intervals_inline(table)))
        if args.compare is not None:
            from ehrseq.bootstrap import compare

            other = load(args.compare) if compared is None else reading_like(compared, model, cause=cause).fit(*train)
            comparison = compare(model, other, visits, outcomes, args.landmarks, args.horizons, train, event=args.event,
                                 level=args.ci or 0.95, n_bootstrap=args.bootstrap, seed=args.seed,
                                 names=("model", "other"))
            _say(f"\npaired bootstrap comparison ({args.bootstrap} resamples of the test patients; "
                 f"difference = model - other, other = {args.compare}):")
            _say(str(comparison))
    if args.output is not None:
        _write_output(table, Path(args.output))
        _say(f"written to {args.output}")
    return 0


def _intervals_inline(table: Any) -> Any:
    """The landmark table for the terminal: each metric with intervals as one text column "value [lower, upper]"."""
    import polars as pl

    bounded = [c[: -len("_lower")] for c in table.columns if c.endswith("_lower")]
    if not bounded:
        return table

    def text(name: str) -> pl.Expr:
        def number(column: str) -> pl.Expr:
            return pl.col(column).round(3).cast(pl.String)

        joined = pl.concat_str([number(name), pl.lit(" ["), number(f"{name}_lower"), pl.lit(", "),
                                number(f"{name}_upper"), pl.lit("]")])
        return pl.coalesce(joined, number(name)).alias(name)

    dropped = [f"{name}_{side}" for name in bounded for side in ("lower", "upper")]
    return table.with_columns(text(name) for name in bounded).drop(dropped)


#: Longer ``--compare`` spellings of the baselines (``--compare`` takes the ``--baselines`` names too).
COMPARISON_BASELINES = {"kaplan-meier": "km", "landmark-cox": "cox", "landmark-rsf": "rsf"}


def _comparison_baseline(spec: str, train_visits: Any) -> str | None:
    """What ``--compare`` names, checked before any work: the baseline (a name of ``--baselines`` or its
    longer spelling), fitted on the training tables reading them as the model does, or ``None`` for a saved
    model directory."""
    from ehrseq.baselines import BASELINES

    name = COMPARISON_BASELINES.get(spec, spec)
    if name in BASELINES:
        if train_visits is None:
            raise ConfigError(f"--compare {spec} fits the baseline on the training tables: pass --train-visits FILE")
        return name
    if not Path(spec).is_dir():
        raise ConfigError(f"--compare {spec}: neither a model directory nor a baseline "
                          f"({', '.join(BASELINES)}, or {', '.join(COMPARISON_BASELINES)})")
    return None


def _level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a level in (0, 1), e.g. 0.95")
    return value


def cmd_score(args: argparse.Namespace) -> int:
    from ehrseq.scoring import score

    if args.landmark is not None and args.at == "all":
        raise ConfigError("--landmark predicts from the last visit at or before the landmark; drop --at all")
    visits: Any = args.visits if len(args.visits) > 1 else args.visits[0]
    summary = score(
        args.model, visits, args.out, args.horizons, at=args.at, landmark=args.landmark, cause=args.cause,
        event=args.event, batch_size=args.batch_size, patients_per_chunk=args.patients_per_chunk,
        outcomes=args.outcomes, resume=args.resume, overwrite=args.overwrite, progress=_progress(args),
        num_workers=args.workers, scheduler=args.scheduler, model_version=args.model_version,
    )
    _say(str(summary))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from ehrseq.extras import require

    require("explain", *(("plot",) if args.plot is not None else ()), what="ehrseq explain")
    visits = read_table(args.visits, "visits")
    outcomes = None if args.outcomes is None else read_table(args.outcomes, "outcomes")
    import polars as pl

    from ehrseq.estimator import load
    from ehrseq.explain import explain

    dtype = visits.schema["patient_id"]
    try:
        patient = pl.Series([args.patient]).cast(dtype, strict=True)[0]
    except pl.exceptions.PolarsError:
        raise ConfigError(f"--patient {args.patient!r} is not a {dtype} patient id") from None
    model = load(args.model)
    result = explain(model, visits, args.horizon, patients=[patient], landmark=args.landmark, view=args.view,
                     outcomes=outcomes, cause=args.cause, event=args.event, n_steps=args.steps)
    leading = result.top(args.top)
    for row in result.risks.iter_rows(named=True):
        head = f"visit {row['visit']} at {row['visit_time']}: risk within {args.horizon:g} days {row['risk']:.4f}"
        if result.view == "change" and row.get("previous_risk") is not None:
            head += (f" ({row['risk'] - row['previous_risk']:+.4f} since visit {row['visit'] - 1}; "
                     f"new visit itself {row['repeat']:+.4f})")
        else:
            head += f" (baseline {row['reference']:.4f})"
        _say(head)
        for name, value in (leading.filter(pl.col("visit") == row["visit"]).select("input", "attribution")
                            .iter_rows()):
            _say(f"    {name:<20} {value:+.4f}")
    _say(f"completeness: attributions sum to the risk difference within {100 * result.relative_gap:.2f} %")
    if args.output is not None:
        _write_output(result.attributions, Path(args.output))
        _say(f"attributions written to {args.output}")
    if args.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        from ehrseq.plot import explanation

        axes = explanation(result, patient, top=args.top)
        axes.figure.savefig(args.plot, dpi=120, bbox_inches="tight")
        _say(f"plot written to {args.plot}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ehrseq.demo import run_demo

    run_demo(args.out, epochs=args.epochs, seed=args.seed, progress=_progress(args))
    return 0


# ---------------------------------------------------------------------------------------------- parser
TABLES_HELP = "a .parquet or .csv file, a folder of them or a glob (quote it)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ehrseq", description="Dynamic (per-visit) time-to-event prediction from longitudinal health records.",
        epilog="Run 'ehrseq <command> --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"ehrseq {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of errors")
    commands = parser.add_subparsers(dest="command", metavar="<command>", required=True)

    def add(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=description)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show the full traceback of errors")
        return sub

    validate = add("validate", "check visit (and outcome) tables and print the cohort report",
                   "Check a visit table, and optionally its outcome table, against the table contracts "
                   "(data_specs/) and print the cohort report, which shows the rule that gave every column its "
                   "role. Exit code 1 when a rule is broken.")
    validate.add_argument("--visits", nargs="+", required=True, help=f"visit table: {TABLES_HELP}")
    validate.add_argument("--outcomes", nargs="+", help=f"outcome table: {TABLES_HELP}")
    _add_flags(validate, TABLE_FLAGS, "how the tables are read")
    validate.set_defaults(run=cmd_validate)

    split = add("split", "split visit and outcome tables by patient (stratified) into train/test files",
                "Split a visit table and its outcome table by patient, keeping the event mix of every part "
                "(stratified by the event column), into OUT/<name>_visits and OUT/<name>_outcomes files.")
    split.add_argument("--visits", nargs="+", required=True, help=f"visit table: {TABLES_HELP}")
    split.add_argument("--outcomes", nargs="+", required=True, help=f"outcome table: {TABLES_HELP}")
    split.add_argument("--out", required=True, help="output folder")
    split.add_argument("--fractions", type=_positive, nargs="+", default=[0.8, 0.2], metavar="F",
                       help="fraction of the patients in each part, summing to 1 (default: 0.8 0.2)")
    split.add_argument("--names", nargs="+", default=["train", "test"], metavar="NAME",
                       help="name of each part (default: train test)")
    split.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    split.add_argument("--stratify", default="event", metavar="COLUMN",
                       help="outcome column whose mix every part keeps, or none (default: event)")
    split.add_argument("--format", choices=("csv", "parquet"), help="output files (default: as the visit table)")
    split.add_argument("--null-values", nargs="*", metavar="TEXT", help="strings read as missing in CSV files")
    split.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    split.set_defaults(run=cmd_split)

    train = add("train", "train a model and save it",
                "Train a DynamicSurvival model on visit and outcome tables; print the cohort report and a training "
                "summary, and save the model (safetensors + JSON). Settings come from --config (TOML or JSON, keys "
                "as in data_specs/model.toml) and the flags below, which override it.")
    train.add_argument("--visits", nargs="+", required=True, help=f"visit table: {TABLES_HELP}")
    train.add_argument("--outcomes", nargs="+", required=True, help=f"outcome table: {TABLES_HELP}")
    train.add_argument("--config", help="model configuration (.toml or .json; default: the library defaults)")
    train.add_argument("--out", required=True, help="model directory to write")
    train.add_argument("--validation", type=_optional(_positive), metavar="FRACTION", default=argparse.SUPPRESS,
                       help="fraction of the patients held out for early stopping, or none (default: 0.15)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    _add_progress(train)
    _add_flags(train, TABLE_FLAGS, "how the tables are read")
    _add_flags(train, MODEL_FLAGS, "model and training (DynamicSurvival arguments)")
    train.set_defaults(run=cmd_train)

    tune_ = add("tune", "search the model settings (Optuna, patient-level cross-validation) and save the best model",
                "Search the settings of DynamicSurvival with Optuna (pip install 'ehrseq[tune]'): each trial is "
                "cross-validated on patient-level folds stratified by event type and scored by the landmark C-index "
                "(or --metric) of its out-of-fold predictions at landmark windows from the quantiles of the event "
                "times (or --landmarks and --horizons); a median pruner stops trials that fall behind after a fold. "
                "The best settings (or the defaults, the first trial, when the best gains less than one standard "
                "error over them in a paired bootstrap over patients) are fitted on all patients and saved to "
                "OUT/model, the table of trials to OUT/trials.csv and OUT/trials.parquet. Settings given by --config "
                "or the flags below are fixed (not searched); --space replaces the default search space.")
    tune_.add_argument("--visits", nargs="+", required=True, help=f"visit table: {TABLES_HELP}")
    tune_.add_argument("--outcomes", nargs="+", required=True, help=f"outcome table: {TABLES_HELP}")
    tune_.add_argument("--out", required=True, help="output folder (model/, trials.csv, trials.parquet)")
    tune_.add_argument("--trials", type=int, default=20, metavar="N", help="trials at most (default: 20)")
    tune_.add_argument("--timeout", type=_number, metavar="SECONDS",
                       help="start no trial after this many seconds (default: no limit)")
    tune_.add_argument("--folds", type=int, default=3, metavar="K", help="cross-validation folds (default: 3)")
    tune_.add_argument("--metric", default="c_index", metavar="NAME",
                       help="c_index, uno_c, auc (maximised), brier or ibs (minimised) (default: c_index)")
    tune_.add_argument("--landmarks", type=float, nargs="+", metavar="DAYS",
                       help="landmarks of the score, days since origin (default: event-time quantiles)")
    tune_.add_argument("--horizons", type=_positive, nargs="+", metavar="DAYS",
                       help="horizons of the score, days after the landmark (with --landmarks)")
    tune_.add_argument("--min-at-risk", type=_count, default=10, metavar="N",
                       help="a window scores a fold with this many test patients at risk (default: 10)")
    tune_.add_argument("--space", metavar="FILE",
                       help="search space (.toml or .json): setting = [choices] or {low, high, log} (default: "
                            "ehrseq.tuning.SEARCH_SPACE without the fixed settings)")
    tune_.add_argument("--config", help="fixed model settings (.toml or .json, keys as in data_specs/model.toml)")
    tune_.add_argument("--validation", type=_optional(_positive), metavar="FRACTION", default=argparse.SUPPRESS,
                       help="early-stopping fraction of every fit, or none (default: 0.15)")
    tune_.add_argument("--seed", type=int, default=0,
                       help="seeds the folds, the search and the models (default: 0)")
    tune_.add_argument("--overwrite", action="store_true", help="replace the outputs in an existing folder")
    _add_progress(tune_)
    _add_flags(tune_, TABLE_FLAGS, "how the tables are read (fixed)")
    _add_flags(tune_, TUNE_MODEL_FLAGS, "fixed model and training settings (not searched)")
    tune_.set_defaults(run=cmd_tune)

    evaluate = add("evaluate", "landmark evaluation of a saved model (and baselines) on test tables",
                   "Evaluate a saved model at every (landmark, horizon) on test tables: patients at risk, events, "
                   "C-index, Uno's C, AUC, Brier score, IBS and calibration-in-the-large. The censoring distribution "
                   "is estimated on the training tables; --baselines adds landmark baselines fitted on them.")
    evaluate.add_argument("--model", required=True, help="model directory (from 'ehrseq train' or DynamicSurvival.save)")
    evaluate.add_argument("--visits", nargs="+", required=True, help=f"test visit table: {TABLES_HELP}")
    evaluate.add_argument("--outcomes", nargs="+", required=True, help=f"test outcome table: {TABLES_HELP}")
    evaluate.add_argument("--train-outcomes", nargs="+", required=True, help="training outcome table")
    evaluate.add_argument("--train-visits", nargs="+",
                          help="training visit table (needed with dates, or first visits not at day 0, and for "
                               "--baselines)")
    evaluate.add_argument("--landmarks", type=float, nargs="+", required=True, metavar="DAYS",
                          help="landmarks, days since each patient's origin")
    evaluate.add_argument("--horizons", type=_positive, nargs="+", required=True, metavar="DAYS",
                          help="horizons, days after the landmark")
    evaluate.add_argument("--event", type=int, help="event type of interest (default: the model's cause, else 1)")
    evaluate.add_argument("--baselines", type=_names, metavar="NAMES",
                          help="also evaluate landmark baselines fitted on the training tables: a comma-separated "
                               "list of cox, rsf, km")
    evaluate.add_argument("--output", help="also write the table (.csv, .parquet or .md)")
    evaluate.add_argument("--ci", type=_level, metavar="LEVEL",
                          help="add percentile bootstrap intervals at this level (e.g. 0.95) over the test patients")
    evaluate.add_argument("--compare", metavar="OTHER",
                          help="paired bootstrap comparison with another model directory or a baseline fitted on the "
                               "training tables (a name of --baselines, or "
                               f"{', '.join(COMPARISON_BASELINES)}): differences, intervals, p-values")
    evaluate.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                          help="bootstrap resamples for --ci and --compare (default: 1000)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples (default: 0)")
    _add_progress(evaluate)
    evaluate.set_defaults(run=cmd_evaluate)

    score = add("score", "score visit tables into Parquet prediction shards",
                "Score every patient of a visit table — a Parquet or CSV file, a glob, or a folder of such files "
                "(every patient's visits in one file) — into Parquet prediction shards with a manifest; bounded "
                "memory, atomic outputs, --resume after an interruption.")
    score.add_argument("--model", required=True, help="model directory")
    score.add_argument("--visits", nargs="+", required=True,
                       help="Parquet or CSV file(s), a glob (quote it) or a folder of such files")
    score.add_argument("--out", required=True, help="output directory")
    score.add_argument("--horizons", type=_positive, nargs="+", required=True, metavar="DAYS",
                       help="horizons, days after the visit (or the landmark)")
    score.add_argument("--at", choices=("last", "all"), default="last",
                       help="predict at each patient's last visit or at every visit (default: last)")
    score.add_argument("--landmark", type=_landmark,
                       help="predict at this landmark: days since each patient's origin, or a date / datetime "
                            "(calendar clocks only)")
    score.add_argument("--outcomes", help="outcome table: visits at or after the outcome are dropped")
    score.add_argument("--cause", type=int, help="competing-risks models: only this cause")
    score.add_argument("--event", help="multi-event models: the event to score")
    score.add_argument("--batch-size", type=int, default=1024, help="patients per forward pass (default: 1024)")
    score.add_argument("--patients-per-chunk", type=int, default=20_000,
                       help="patients read and predicted at a time; bounds memory (default: 20000)")
    engine = score.add_mutually_exclusive_group()
    engine.add_argument("--workers", type=_count, default=0, metavar="N",
                        help="score the shards on a local Dask cluster of N worker processes (needs the dask extra; "
                             "default: 0, in this process)")
    engine.add_argument("--scheduler", metavar="ADDRESS",
                        help="score the shards on an existing Dask cluster, e.g. tcp://host:8786 (the model, visits "
                             "and --out on paths every worker can read)")
    score.add_argument("--model-version", help="label written in the model_version column")
    mode = score.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="complete an interrupted run in OUT")
    mode.add_argument("--overwrite", action="store_true", help="replace the predictions in OUT")
    _add_progress(score)
    score.set_defaults(run=cmd_score)

    explain_ = add("explain", "which inputs moved a patient's predicted risk",
                   "Attribute the risk predicted at each visit of one patient to the inputs of the visits "
                   "(integrated gradients; needs the explain extra): against an uninformed baseline (--view level) "
                   "or against the previous visit (--view change).")
    explain_.add_argument("--model", required=True, help="model directory")
    explain_.add_argument("--visits", required=True, help="visit table")
    explain_.add_argument("--patient", required=True, help="patient id")
    explain_.add_argument("--horizon", type=_positive, default=365.0, metavar="DAYS",
                          help="risk within this many days (default: 365)")
    explain_.add_argument("--view", choices=("change", "level"), default="change",
                          help="what the attributions split (default: change)")
    explain_.add_argument("--landmark", type=float, metavar="DAYS", help="explain the prediction at this landmark")
    explain_.add_argument("--outcomes", help="outcome table: visits at or after the outcome are dropped")
    explain_.add_argument("--cause", type=int, help="competing-risks models: the cause")
    explain_.add_argument("--event", help="multi-event models: the event")
    explain_.add_argument("--top", type=int, default=5, help="inputs listed per visit (default: 5)")
    explain_.add_argument("--steps", type=int, default=64, help="integration points (default: 64)")
    explain_.add_argument("--output", help="write every attribution (.csv, .parquet or .md)")
    explain_.add_argument("--plot", help="draw the risk trajectory with its top inputs to this image file")
    explain_.set_defaults(run=cmd_explain)

    demo = add("demo", "the end-to-end demo on the PBC data",
               "Validate the Mayo Clinic PBC sequential data, train a GRU with a logistic-hazard head, evaluate it "
               "at landmarks against a landmark Cox model, plot one patient's survival curves and save the model. "
               "Needs the data and plot extras: pip install 'ehrseq[data,plot]'.")
    demo.add_argument("--out", default="outputs/demo", help="output directory (default: outputs/demo)")
    demo.add_argument("--epochs", type=_optional(_count), default=None,
                      help="training epochs, or none for the default model's budget of optimiser steps; early "
                           "stopping on 15 %% of the patients (default: none)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _add_progress(demo)
    demo.set_defaults(run=cmd_demo)
    return parser


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    print(f"ehrseq: warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"ehrseq: error: {text or type(exc).__name__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        with command_line(), warnings.catch_warnings():
            warnings.simplefilter("always", DataWarning)
            warnings.showwarning = _show_warning
            return args.run(args)
    except (EhrseqError, OSError) as exc:
        if args.debug:
            raise
        print(_one_line(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ehrseq: interrupted", file=sys.stderr)
        return 130
