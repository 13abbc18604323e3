"""Every registered head family end to end: fit → predict_survival / predict_risk / predict_median →
save / load → batch scoring, on small PBC cohorts.

The families are read from the registry, so a family that is registered but not wired into the
estimator, persistence or scoring fails here. What each family is asked follows its capabilities: a
competing-risks head is fitted on death and transplant as competing causes and asked per cause, a
multi-event head on them as two non-exclusive events and asked per event, the visit-indexed head
(no time scale in days) for its next-visit risk — and it must refuse the questions in days.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import ehrseq
from ehrseq.datasets import load_pbcseq
from ehrseq.errors import ConfigError
from ehrseq.estimator import DynamicSurvival
from ehrseq.models.families import FAMILIES, HeadFamily

FAST = dict(epochs=2, batch_size=16, d_model=8, hidden=(8,), grid=4, progress=False, device="cpu", seed=0)
HORIZONS = [200.0, 800.0, 2500.0]
PATIENTS = 40
KEYS = ["patient_id", "visit_time", "horizon"]


def _subset(tables, n: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    visits, outcomes = tables
    keep = outcomes["patient_id"].head(n).implode()
    return visits.filter(pl.col("patient_id").is_in(keep)), outcomes.filter(pl.col("patient_id").is_in(keep))


@pytest.fixture(scope="module")
def single():
    return _subset(load_pbcseq(), PATIENTS)


@pytest.fixture(scope="module")
def competing():
    return _subset(load_pbcseq(outcome="competing"), PATIENTS)


def _multi_outcomes(outcomes: pl.DataFrame) -> pl.DataFrame:
    """Death and transplant as two non-exclusive events (the long multi-event table)."""
    return pl.concat([
        outcomes.select("patient_id", pl.lit(name).alias("event_name"), "time",
                        (pl.col("event") == code).cast(pl.Int64).alias("event"))
        for code, name in ((1, "death"), (2, "transplant"))
    ])


def _fit(family: HeadFamily, single, competing) -> tuple[DynamicSurvival, pl.DataFrame]:
    """The family fitted on the inputs it needs; returns the model and the visits to predict from."""
    model = DynamicSurvival(head=family.kind, **FAST)
    if family.multi_event:
        visits, outcomes = competing
        model.fit(visits, outcomes, validation=None, multi_outcomes=_multi_outcomes(outcomes))
    elif family.competing:
        visits, outcomes = competing
        model.fit(visits, outcomes, validation=None)
    else:
        visits, outcomes = single
        model.fit(visits, outcomes, validation=None)
    return model, visits


def _questions(model: DynamicSurvival) -> list[dict]:
    """The keyword arguments of predict_risk / score that ask the model one outcome at a time."""
    family, head = model.family_, model.model_config_.head
    if family.multi_event:
        return [{"event": name} for name in head.event_names]
    if family.competing:
        return [{"cause": k} for k in range(1, family.num_causes(head) + 1)]
    return [{}]


def _in_days(model: DynamicSurvival, visits: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Survival, risks and medians in days, checked against each other; the frames to compare after loading."""
    family = model.family_
    survival = model.predict_survival(visits, [0.0, *HORIZONS])
    assert survival["survival"].is_between(0.0, 1.0).all()
    assert (survival.filter(pl.col("horizon") == 0.0)["survival"] == 1.0).all()
    by = ["patient_id", *(["event"] if family.multi_event else [])]
    steps = survival.sort([*by, "horizon"]).group_by(by, maintain_order=True).agg(pl.col("survival").diff().max())
    assert (steps["survival"] <= 1e-6).all(), "survival non-increasing in the horizon"

    frames = {"survival": survival}
    risk = model.predict_risk(visits, HORIZONS)
    frames["risk"] = risk
    expected = survival.filter(pl.col("horizon") > 0).join(risk, on=[*KEYS, *by[1:], "extrapolated"])
    assert expected.height == risk.height
    np.testing.assert_allclose(expected["risk"], 1.0 - expected["survival"], atol=1e-6)
    if family.competing:
        per_cause = [model.predict_risk(visits, HORIZONS, **question) for question in _questions(model)]
        np.testing.assert_allclose(sum(frame.sort(KEYS)["risk"].to_numpy() for frame in per_cause),
                                   risk.sort(KEYS)["risk"].to_numpy(), atol=1e-5)
        frames.update({f"risk_cause_{k + 1}": frame for k, frame in enumerate(per_cause)})
    if family.multi_event:
        with pytest.raises(ConfigError, match="single-event head"):
            model.predict_median(visits)
        return frames

    median = model.predict_median(visits)
    frames["median"] = median
    assert median.height == visits["patient_id"].n_unique() and (median["median_remaining"] > 0).all()
    offsets, distribution = model.predict_distribution(visits)
    overall = distribution.overall() if family.competing else distribution
    at_median = overall.survival(overall.median()[:, None])[:, 0].double().numpy()
    joined = median.join(offsets.with_columns(at_median=at_median), on=["patient_id", "visit_time"])
    assert joined.height == median.height
    finite = joined.filter(pl.col("median_remaining").is_finite())
    np.testing.assert_allclose(finite["at_median"], 0.5, atol=1e-4)  # the median is that of the survival
    return frames


def _scored(path, visits, out, question: dict) -> pl.DataFrame:
    ehrseq.score(path, visits, out, HORIZONS, progress=False, **question)
    return pl.read_parquet(sorted(out.rglob("*.parquet")))


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_every_registered_family_fits_predicts_saves_loads_and_scores(kind, single, competing, tmp_path):
    family = FAMILIES[kind]
    model, visits = _fit(family, single, competing)
    assert model.model_config_.head.kind == kind and model.family_ is family
    assert np.isfinite(model.history_.records[-1]["train_loss"])
    path = model.save(tmp_path / "model")
    loaded = ehrseq.load(path)
    assert loaded.family_ is family

    if not family.in_days:
        risk = model.predict_next_visit_risk(visits)
        assert risk.height == visits["patient_id"].n_unique() and risk["risk"].is_between(0.0, 1.0).all()
        assert loaded.predict_next_visit_risk(visits).equals(risk)
        for ask in (lambda m: m.predict_risk(visits, HORIZONS), lambda m: m.predict_survival(visits, HORIZONS),
                    lambda m: m.predict_median(visits),
                    lambda m: ehrseq.score(path, visits, tmp_path / "out", HORIZONS, progress=False)):
            with pytest.raises(ConfigError, match="next visit|next_visit|time scale in days"):
                ask(model)
        return

    frames = _in_days(model, visits)
    assert _in_days(loaded, visits).keys() == frames.keys()
    for name, frame in _in_days(loaded, visits).items():
        assert frame.equals(frames[name]), f"{name} after save/load"

    survival = frames["survival"].filter(pl.col("horizon") > 0)
    for i, question in enumerate(_questions(model)):
        scored = _scored(path, visits, tmp_path / f"out{i}", question)
        if family.competing:
            expected = model.predict_risk(visits, HORIZONS, **question)
            scored = scored.filter(pl.col("cause") == question["cause"])
        elif family.multi_event:
            expected = frames["risk"].filter(pl.col("event") == question["event"])
        else:
            expected = frames["risk"]
        expected = expected.sort(KEYS)
        scored = scored.sort(KEYS)
        assert scored.select(KEYS).equals(expected.select(KEYS))
        np.testing.assert_allclose(scored["risk"], expected["risk"], rtol=1e-5, atol=1e-6)
        assert scored["extrapolated"].to_list() == expected["extrapolated"].to_list()
        marginal = survival.filter(pl.col("event") == question["event"]) if family.multi_event else survival
        np.testing.assert_allclose(scored["survival"], marginal.sort(KEYS)["survival"], rtol=1e-5, atol=1e-6)
        if "median" in frames:
            medians = scored.join(frames["median"], on=["patient_id", "visit_time"], suffix="_api")
            assert medians.height == scored.height
            np.testing.assert_allclose(medians["median_remaining"], medians["median_remaining_api"], rtol=1e-5)
