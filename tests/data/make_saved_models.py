"""Write the saved-model fixtures of ``tests/test_saved_models.py``: small models of several head
families, the visits they were asked about and the predictions of the ehrseq that saved them.

Run from the repository root with the ehrseq whose format the fixtures should record::

    python tests/data/make_saved_models.py tests/data/saved_models_v1

The directory ``saved_models_v1`` was written by ehrseq 0.1.0 at commit 60b5543 (model format
version 1), before the estimator settings became one typed configuration. Do not regenerate it:
it is the record of what that version wrote.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from ehrseq import DynamicSurvival
from ehrseq.datasets import load_pbcseq

FAST = dict(epochs=2, batch_size=32, d_model=8, hidden=(8,), progress=False, device="cpu", seed=0)
TIMES = [0.0, 100.0, 400.0, 1000.0, 3000.0]
LANDMARK = 800.0


def _subset(tables, n: int):
    visits, outcomes = tables
    keep = outcomes["patient_id"].head(n).implode()
    return visits.filter(pl.col("patient_id").is_in(keep)), outcomes.filter(pl.col("patient_id").is_in(keep))


def _multi_outcomes(outcomes: pl.DataFrame) -> pl.DataFrame:
    """Death and transplant of PBC as two non-exclusive events (long multi-event table)."""
    return pl.concat([
        outcomes.select("patient_id", pl.lit(name).alias("event_name"), "time",
                        (pl.col("event") == code).cast(pl.Int64).alias("event"))
        for code, name in ((1, "death"), (2, "transplant"))
    ])


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=False)
    single = _subset(load_pbcseq(), 60)
    competing = _subset(load_pbcseq(outcome="competing"), 60)
    models = {
        "logistic_hazard": (DynamicSurvival(head="logistic_hazard", grid=6, **FAST), single, {}),
        "lognormal_crps": (DynamicSurvival(head="lognormal", loss={"crps": 1.0, "mle_right": 0.1}, locf=False,
                                           encoder="transformer", **FAST), single, {}),
        "competing_pmf": (DynamicSurvival(head="competing_pmf", loss={"nll": 1.0, "deephit_ranking": 0.1},
                                          grid=[0.0, 300.0, 900.0, 2000.0, 4000.0], **FAST), competing, {}),
        "multi_event": (DynamicSurvival(head={"kind": "multi_event", "num_components": 2, "hidden": [8]}, **FAST),
                        competing, {"multi_outcomes": _multi_outcomes(competing[1])}),
        "visit_hazard": (DynamicSurvival(head={"kind": "visit_hazard", "hazard_uncertainty": True, "hidden": [8]},
                                         loss={"nll": 1.0, "calibration": 0.1}, **FAST), single, {}),
    }
    visits = single[0].filter(pl.col("patient_id") <= 20)
    visits.write_parquet(out / "visits.parquet")
    for name, (model, tables, extra) in models.items():
        model.fit(*tables, **extra)
        model.save(out / name)
        if name == "visit_hazard":
            frames = {"next_visit_risk": model.predict_next_visit_risk(visits, at="all")}
        else:
            frames = {
                "survival": model.predict_survival(visits, TIMES, at="all"),
                "landmark_survival": model.predict_survival(visits, TIMES, landmark=LANDMARK),
            }
            if name != "multi_event":
                frames["median"] = model.predict_median(visits)
            if name == "competing_pmf":
                frames["landmark_risk_cause_2"] = model.predict_risk(visits, TIMES[1:], landmark=LANDMARK, cause=2)
        for kind, frame in frames.items():
            frame.write_parquet(out / f"{name}.{kind}.parquet")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
