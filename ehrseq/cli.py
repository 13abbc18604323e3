"""The ``ehrseq`` command: ``train``, ``evaluate``, ``explain``, ``score``, ``validate`` and ``demo``.

::

    ehrseq validate --visits visits.parquet --outcomes outcomes.parquet
    ehrseq train --visits train_visits.parquet --outcomes train_outcomes.parquet --config model.toml --out model/
    ehrseq evaluate --model model/ --visits test_visits.parquet --outcomes test_outcomes.parquet \\
        --train-visits train_visits.parquet --train-outcomes train_outcomes.parquet \\
        --landmarks 365 730 --horizons 365 1095 --output landmarks.md
    ehrseq explain --model model/ --visits test_visits.parquet --patient 17 --horizon 365 --view change
    ehrseq score --model model/ --visits 'visits/*.parquet' --out predictions/ --horizons 365 730 1825
    ehrseq demo --out outputs/demo

Tables are Parquet (``.parquet``, ``.pq``) or CSV (``.csv``) files; ``score`` also reads a directory or a
glob of Parquet shards (see :mod:`ehrseq.scoring`). The ``train`` configuration is a TOML or JSON file
whose keys are the arguments of :class:`ehrseq.DynamicSurvival`, plus ``validation`` (the argument of
``fit``: a fraction of patients held out for early stopping, or ``false`` for none); ``head`` names a
registered head family (:mod:`ehrseq.models.families`) and ``loss`` registered loss terms
(:mod:`ehrseq.losses.terms`) with their weights and options::

    encoder = "gru"
    head = "logistic_hazard"
    loss = {nll = 1.0, ranking = {weight = 0.1, horizon = 365}}
    grid = 20
    d_model = 64
    epochs = 40
    validation = 0.15

Exit codes: 0 on success, 1 when the data, the configuration or the model is at fault (one line on
standard error; ``--debug`` shows the traceback), 2 for a malformed command line. Heavy modules
(torch, polars) are imported only by the command that needs them, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ehrseq import __version__
from ehrseq.errors import ConfigError, EhrseqError

TABLE_SUFFIXES = (".parquet", ".pq", ".csv")
OUTPUT_SUFFIXES = (".csv", ".parquet", ".md")
#: ``fit`` arguments accepted in a training configuration (the other keys go to the constructor).
FIT_KEYS = ("validation",)


# ---------------------------------------------------------------------------------------------- inputs
def read_table(path: str | os.PathLike[str], name: str) -> Any:
    """A Polars DataFrame from a Parquet or CSV file; a missing or unreadable file is a one-line error."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{name} table {file} does not exist")
    suffix = file.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ConfigError(f"{name} table {file}: expected a .parquet or .csv file")
    import polars as pl

    try:
        if suffix == ".csv":
            return pl.read_csv(file, try_parse_dates=True)
        return pl.read_parquet(file)
    except (pl.exceptions.PolarsError, OSError) as exc:
        from ehrseq.errors import DataError

        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read the {name} table {file}: {detail}", table=name) from exc


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
    import inspect

    from ehrseq.estimator import DynamicSurvival

    allowed = [name for name in inspect.signature(DynamicSurvival.__init__).parameters if name != "self"]
    unknown = sorted(set(config) - set(allowed) - set(FIT_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; valid settings are "
                          f"{', '.join(allowed + list(FIT_KEYS))}")
    fit = {key: config[key] for key in FIT_KEYS if key in config}
    if fit.get("validation") is False:
        fit["validation"] = None
    return {k: v for k, v in config.items() if k not in FIT_KEYS}, fit


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


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
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


# ---------------------------------------------------------------------------------------------- commands
def _say(text: str = "") -> None:
    print(text, flush=True)


def cmd_validate(args: argparse.Namespace) -> int:
    visits = read_table(args.visits, "visits")
    outcomes = None if args.outcomes is None else read_table(args.outcomes, "outcomes")
    from ehrseq.data import build_cohort

    cohort = build_cohort(visits, outcomes, numeric=args.numeric, categorical=args.categorical,
                          codes=None if args.codes == "" else args.codes, origin=args.origin,
                          duplicates=args.duplicates, unmatched=args.unmatched)
    _say(str(cohort.report))
    _say(f"\nvalid: {cohort.n_patients:,} patients, {cohort.n_visits:,} visits")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    config = read_config(args.config)
    for key in ("epochs", "seed", "device"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    if args.no_progress:
        config["progress"] = False
    out = Path(args.out)
    if out.exists() and not args.overwrite and any(out.iterdir()):
        raise ConfigError(f"{out} already exists and is not empty; pass --overwrite to replace it")
    visits = read_table(args.visits, "visits")
    outcomes = read_table(args.outcomes, "outcomes")
    options, fit = _split_config(config, str(args.config or "the command line"))
    from ehrseq.estimator import DynamicSurvival

    model = DynamicSurvival(**options)
    model.fit(visits, outcomes, **fit)
    _say(str(model.cohort_report_))
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
    _say("\ntraining: " + ", ".join(parts))
    path = model.save(out, overwrite=args.overwrite)
    from ehrseq.scoring import model_id

    _say(f"model saved to {path} (model id {model_id(path)})")
    return 0


def _write_table(table: Any, path: Path) -> None:
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
    visits = read_table(args.visits, "visits")
    outcomes = read_table(args.outcomes, "outcomes")
    train_outcomes = read_table(args.train_outcomes, "training outcomes")
    train = train_outcomes if args.train_visits is None else (read_table(args.train_visits, "training visits"),
                                                              train_outcomes)
    import polars as pl

    from ehrseq.estimator import load
    from ehrseq.evaluate import landmark

    model = load(args.model)
    table = landmark(model, visits, outcomes, args.landmarks, args.horizons, train, event=args.event, ci=args.ci,
                     n_bootstrap=args.bootstrap, seed=args.seed)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_width_chars=250,
                   fmt_str_lengths=40):
        _say(str(_intervals_inline(table)))
        if args.compare is not None:
            from ehrseq.bootstrap import compare

            other = _comparison_model(args.compare, train)
            comparison = compare(model, other, visits, outcomes, args.landmarks, args.horizons, train, event=args.event,
                                 level=args.ci or 0.95, n_bootstrap=args.bootstrap, seed=args.seed,
                                 names=("model", "other"))
            _say(f"\npaired bootstrap comparison ({args.bootstrap} resamples of the test patients; "
                 f"difference = model - other, other = {args.compare}):")
            _say(str(comparison))
    if args.output is not None:
        _write_table(table, Path(args.output))
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


#: ``--compare`` names of the baselines, fitted on the training tables.
COMPARISON_BASELINES = {"kaplan-meier": "KaplanMeier", "landmark-cox": "LandmarkCox",
                        "landmark-rsf": "LandmarkRandomForest"}


def _comparison_model(spec: str, train: Any) -> Any:
    """``--compare``: a saved model directory, or a baseline name fitted on the training tables."""
    if spec in COMPARISON_BASELINES:
        if not isinstance(train, tuple):
            raise ConfigError(f"--compare {spec} fits the baseline on the training tables: pass --train-visits too")
        from ehrseq import baselines

        return getattr(baselines, COMPARISON_BASELINES[spec])().fit(*train)
    if not Path(spec).is_dir():
        raise ConfigError(f"--compare {spec}: neither a model directory nor one of {', '.join(COMPARISON_BASELINES)}")
    from ehrseq.estimator import load

    return load(spec)


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
        outcomes=args.outcomes, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
        num_workers=args.workers, model_version=args.model_version,
    )
    _say(str(summary))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
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
        _write_table(result.attributions, Path(args.output))
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

    run_demo(args.out, epochs=args.epochs, seed=args.seed, progress=not args.no_progress)
    return 0


# ---------------------------------------------------------------------------------------------- parser
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
                   "(data_specs/) and print the cohort report. Exit code 1 when a rule is broken.")
    validate.add_argument("--visits", required=True, help="visit table (.parquet or .csv)")
    validate.add_argument("--outcomes", help="outcome table (.parquet or .csv)")
    validate.add_argument("--numeric", nargs="+", metavar="COLUMN", help="numeric feature columns (default: inferred)")
    validate.add_argument("--categorical", nargs="+", metavar="COLUMN",
                          help="categorical feature columns (default: inferred)")
    validate.add_argument("--codes", default="codes", help="list-of-codes column ('' for none; default: codes)")
    validate.add_argument("--origin", default="first_visit",
                          help="time origin: first_visit, zero or a column name (default: first_visit)")
    validate.add_argument("--duplicates", choices=("error", "merge"), default="error",
                          help="duplicate (patient, time) visits (default: error)")
    validate.add_argument("--unmatched", choices=("error", "drop"), default="error",
                          help="patients in only one of the tables (default: error)")
    validate.set_defaults(run=cmd_validate)

    train = add("train", "train a model and save it",
                "Train a DynamicSurvival model on visit and outcome tables; print the cohort report and a "
                "training summary, and save the model (safetensors + JSON). The configuration (TOML or JSON) "
                "holds DynamicSurvival arguments and 'validation' (fraction held out for early stopping, or false).")
    train.add_argument("--visits", required=True, help="visit table (.parquet or .csv)")
    train.add_argument("--outcomes", required=True, help="outcome table (.parquet or .csv)")
    train.add_argument("--config", help="model configuration (.toml or .json; default: the library defaults)")
    train.add_argument("--out", required=True, help="model directory to write")
    train.add_argument("--epochs", type=_count, help="override the configuration's epochs")
    train.add_argument("--seed", type=int, help="override the configuration's seed")
    train.add_argument("--device", help="override the configuration's device (auto, cpu, cuda, ...)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=cmd_train)

    evaluate = add("evaluate", "landmark evaluation of a saved model on test tables",
                   "Evaluate a saved model at every (landmark, horizon) on test tables: patients at risk, events, "
                   "C-index, Uno's C, AUC, Brier score, IBS and calibration-in-the-large. The censoring distribution "
                   "is estimated on the training outcomes.")
    evaluate.add_argument("--model", required=True, help="model directory (from 'ehrseq train' or DynamicSurvival.save)")
    evaluate.add_argument("--visits", required=True, help="test visit table")
    evaluate.add_argument("--outcomes", required=True, help="test outcome table")
    evaluate.add_argument("--train-outcomes", required=True, help="training outcome table")
    evaluate.add_argument("--train-visits",
                          help="training visit table (needed unless times are days from a first visit at 0)")
    evaluate.add_argument("--landmarks", type=float, nargs="+", required=True, metavar="DAYS",
                          help="landmarks, days since origin")
    evaluate.add_argument("--horizons", type=_positive, nargs="+", required=True, metavar="DAYS",
                          help="horizons, days after the landmark")
    evaluate.add_argument("--event", type=int, default=1, help="event type of interest (default: 1)")
    evaluate.add_argument("--output", help="also write the table (.csv, .parquet or .md)")
    evaluate.add_argument("--ci", type=_level, metavar="LEVEL",
                          help="add percentile bootstrap intervals at this level (e.g. 0.95) over the test patients")
    evaluate.add_argument("--compare", metavar="OTHER",
                          help="paired bootstrap comparison with another model directory or a baseline fitted on the "
                               f"training tables ({', '.join(COMPARISON_BASELINES)}): differences, intervals, p-values")
    evaluate.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                          help="bootstrap resamples for --ci and --compare (default: 1000)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples (default: 0)")
    evaluate.set_defaults(run=cmd_evaluate)

    score = add("score", "score visit tables into Parquet prediction shards",
                "Score every patient of a visit table, Parquet file, glob or directory of Parquet shards "
                "(every patient's visits in one shard) into Parquet prediction shards with a manifest; "
                "bounded memory, atomic outputs, --resume after an interruption.")
    score.add_argument("--model", required=True, help="model directory")
    score.add_argument("--visits", nargs="+", required=True,
                       help="Parquet file(s), a glob (quote it) or a directory of Parquet shards")
    score.add_argument("--out", required=True, help="output directory")
    score.add_argument("--horizons", type=_positive, nargs="+", required=True, metavar="DAYS",
                       help="horizons, days after the visit (or the landmark)")
    score.add_argument("--at", choices=("last", "all"), default="last",
                       help="predict at each patient's last visit or at every visit (default: last)")
    score.add_argument("--landmark", type=_landmark, help="predict at this landmark (days since origin, or a date)")
    score.add_argument("--outcomes", help="outcome table: visits at or after the outcome are dropped")
    score.add_argument("--cause", type=int, help="competing-risks models: only this cause")
    score.add_argument("--event", help="multi-event models: the event to score")
    score.add_argument("--batch-size", type=int, default=1024, help="patients per forward pass (default: 1024)")
    score.add_argument("--patients-per-chunk", type=int, default=20_000,
                       help="patients read and predicted at a time; bounds memory (default: 20000)")
    score.add_argument("--workers", type=_count, default=0, help="shard processes (default: 0, in this process)")
    score.add_argument("--model-version", help="label written in the model_version column")
    mode = score.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="complete an interrupted run in OUT")
    mode.add_argument("--overwrite", action="store_true", help="replace the predictions in OUT")
    score.add_argument("--no-progress", action="store_true", help="no progress bar")
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
               "at landmarks against a landmark Cox model, plot one patient's survival curves and save the model.")
    demo.add_argument("--out", default="outputs/demo", help="output directory (default: outputs/demo)")
    demo.add_argument("--epochs", type=_count, default=100, help="maximum training epochs, early stopping on 15 %% of the patients (default: 100)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(run=cmd_demo)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"ehrseq: error: {text or type(exc).__name__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return args.run(args)
    except (EhrseqError, OSError) as exc:
        if args.debug:
            raise
        print(_one_line(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ehrseq: interrupted", file=sys.stderr)
        return 130
