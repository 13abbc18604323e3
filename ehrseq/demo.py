"""The main job on a real bundled data set (``make demo`` / ``ehrseq demo``).

Mayo Clinic PBC sequential data (312 patients, 1,945 visits): validate the tables and build the cohort,
tensorize, train a GRU with a logistic-hazard head on 80 % of the patients, compare it with a landmark
Cox model on the other 20 % at landmarks 1–3 years (horizons 1 and 3 years), plot one patient's
per-visit survival curves, and save the model (safetensors + JSON).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl

from ehrseq.data import FeaturePipeline, TimeGrid, build_cohort, split_patients, tensorize
from ehrseq.datasets import load_pbcseq
from ehrseq.estimator import DynamicSurvival
from ehrseq.evaluate import landmark
from ehrseq.extras import require
from ehrseq.progress import Progress

LANDMARKS = (365.0, 730.0, 1095.0)
HORIZONS = (365.0, 1095.0)


def _say(text: str) -> None:
    print(text, flush=True)


def run_demo(out_dir: str | Path = "outputs/demo", *, epochs: int | None = None, seed: int = 0, progress: Progress = "auto",
             baseline: bool = True) -> dict[str, Any]:
    """Run the demo, writing figures and the model to ``out_dir``; returns what it computed."""
    require("data", "plot", what="the demo")
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    _say("ehrseq demo: dynamic survival prediction on the Mayo Clinic PBC sequential data\n")
    visits, outcomes = load_pbcseq(outcome="death")
    _say(f"1. Tables: {visits.height:,} visit rows x {visits.width} columns, {outcomes.height} patients "
         f"({int((outcomes['event'] == 1).sum())} deaths; transplants censored)\n")

    cohort = build_cohort(visits, outcomes)
    _say("2. Cohort (validated against data_specs/):")
    _say(str(cohort.report) + "\n")

    train_cohort, test_cohort = split_patients(cohort, (0.8, 0.2), seed=seed)
    features = FeaturePipeline(locf=True).fit(train_cohort)
    grid = TimeGrid.quantiles(train_cohort, 20)
    batch = tensorize(train_cohort, features, grid).to_padded()
    _say("3. Tensors for the training patients (one padded batch):")
    for name, tensor in batch.tensors().items():
        _say(f"   {name:16s} {str(list(tensor.shape)):16s} {str(tensor.dtype).replace('torch.', '')}")
    _say("")

    train_ids = train_cohort.patients["patient_id"].implode()
    train = (visits.filter(pl.col("patient_id").is_in(train_ids)), outcomes.filter(pl.col("patient_id").is_in(train_ids)))
    test = (visits.filter(~pl.col("patient_id").is_in(train_ids)), outcomes.filter(~pl.col("patient_id").is_in(train_ids)))
    model = DynamicSurvival(epochs=epochs, seed=seed, progress=progress)
    budget = (f"the longer of {model.steps:,} optimiser steps and {model.min_epochs} epochs" if epochs is None
              else f"{epochs} epochs")
    _say(f"4. Training the default model (GRU + logistic hazard, a linear path from the current visit, predictions "
         f"at any time; an ensemble of five such networks and five linear models under 10,000 patients) on "
         f"{train[1].height} patients (15 % of them for "
         f"early stopping, at most {budget} per model) ...")
    model.fit(*train)
    history, members = model.history_, model.model_config_.n_models
    share = model.model_config_.linear_weight
    linear = f"{model.model_config_.linear_members} linear" + ("" if share is None else f", weighing {share:.0%}")
    _say(f"   {members} model(s) ({linear}), {len(history.records)} epochs in all; "
         f"first model: best epoch {history.best_epoch}, "
         f"validation NLL {min(r['val_loss'] for r in history.records if r.get('member', 0.0) == 0.0):.4f}\n")

    results = landmark(model, *test, LANDMARKS, HORIZONS, train)
    tables = [results.with_columns(pl.lit("ehrseq default").alias("model"))]
    if baseline:
        from ehrseq.baselines import LandmarkCox

        cox = LandmarkCox().fit(*train)
        tables.append(landmark(cox, *test, LANDMARKS, HORIZONS, train).with_columns(pl.lit("landmark Cox").alias("model")))
    table = pl.concat(tables).select(
        "model", (pl.col("landmark") / 365.25).round(1).alias("landmark_y"), (pl.col("horizon") / 365.25).round(1).alias("horizon_y"),
        "n_at_risk", "n_events", pl.col("c_index").round(3), pl.col("auc").round(3), pl.col("brier").round(3),
        pl.col("mean_risk").round(3), pl.col("observed_risk").round(3),
    ).sort("landmark_y", "horizon_y", "model")
    _say(f"5. Landmark evaluation on {test[1].height} held-out patients (C-index, AUC, Brier at landmark + horizon):")
    with pl.Config(tbl_rows=50, tbl_cols=20, tbl_width_chars=200, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True):
        _say(str(table) + "\n")

    from ehrseq.plot import patient_curves

    counts = test[0].group_by("patient_id").len().join(test[1], on="patient_id")
    patient = counts.sort(["event", "len"], descending=True)["patient_id"][0]
    ax = patient_curves(model, test[0], patient, outcomes=test[1])
    figure_path = out / f"patient_{patient}_curves.png"
    ax.figure.savefig(figure_path, dpi=120, bbox_inches="tight")
    history_ax = history.plot()
    history_path = out / "training_history.png"
    history_ax.figure.savefig(history_path, dpi=120, bbox_inches="tight")
    model_path = model.save(out / "model", overwrite=True)
    _say(f"6. Per-visit survival curves of test patient {patient}: {figure_path}")
    _say(f"   Training history: {history_path}")
    _say(f"   Model (safetensors + JSON, reload with ehrseq.load): {model_path}")
    _say(f"\nDone in {time.perf_counter() - started:.0f} s.")
    return {"cohort": cohort, "model": model, "results": table, "figure": figure_path, "model_path": model_path}
