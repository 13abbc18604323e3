"""Time-varying data sets of the SurvSet collection, through :func:`ehrseq.data.from_counting_process`."""

from __future__ import annotations

import warnings
from typing import Any

import polars as pl

from ehrseq.data.counting import from_counting_process
from ehrseq.datasets._tables import DatasetTables
from ehrseq.errors import ConfigError

#: Clock unit of the time-varying data sets this project develops on (SurvSet keeps each source's unit).
SURVSET_TIME_UNITS: dict[str, str] = {
    "heart": "days",
    "epileptic": "days",
    "FRTCS": "days",
    "oldmort": "years",
    "Rossi": "weeks",
}


def _survset() -> Any:
    try:
        from SurvSet.data import SurvLoader
    except ImportError as exc:
        raise ImportError("the SurvSet data sets need the optional 'survset' package: "
                          "pip install 'ehrseq[survset]'") from exc
    return SurvLoader()


def load_survset(name: str) -> DatasetTables:
    """Load a time-varying (counting-process) data set of SurvSet as visit and outcome tables.

    SurvSet (Drysdale, 2022; the ``survset`` package, installed with ``pip install 'ehrseq[survset]'``)
    ships each data set as one table with ``pid``, ``event``, ``time``, ``time2`` (the interval
    (time, time2]) and covariates ``num_*`` (numeric) and ``fac_*`` (categorical). The table goes
    through :func:`ehrseq.data.from_counting_process` with ``gaps="bridge"`` (a patient seen again
    after a gap in follow-up is taken as event-free through it): a visit at each interval's start
    with that row's covariates; the outcome at the last stop, with ``entry_time`` = the first start.

    **Times are in the data set's own unit, not days** (nothing is converted): durations, landmarks
    and horizons given to models of these tables are in that unit too. For the sets used in this
    project's development:

    ==============  =====================  ========  ==========================================
    name            unit                   patients  notes
    ==============  =====================  ========  ==========================================
    ``heart``       days                   103       Stanford heart transplant (R ``survival``)
    ``epileptic``   days                   605       SANAD epilepsy trial (R ``joineR``)
    ``FRTCS``       days                   697       Hosmer–Lemeshow–May, 5-year follow-up
    ``oldmort``     years (clock: age)     4,603     delayed entry at age 60 or later (R ``eha``);
                                                     180 gaps in follow-up, bridged
    ``Rossi``       weeks                  432       recidivism after release (1 year)
    ==============  =====================  ========  ==========================================

    The other time-varying sets of SurvSet load the same way (:data:`SURVSET_TIME_UNITS` lists the units
    known here). With the estimator's default ``origin="first_visit"`` times are measured from each
    patient's entry (for ``oldmort``: years since entry, not age; ``origin="zero"`` keeps age).

    Returns
    -------
    DatasetTables
        ``visits``: ``patient_id`` Int64 (SurvSet's ``pid`` replaced by its rank among the distinct ids,
        0-based, so the same data give the same ids), ``time`` Float64, the ``num_*`` columns as Float64
        and the ``fac_*`` columns as String (null = missing). ``outcomes``: ``patient_id``, ``time``
        Float64 (last stop), ``event`` Int64 (0 censored, 1 event), ``entry_time`` Float64 (first start).
        ``event_names`` is ``("event",)``.
    """
    loader = _survset()
    catalogue = loader.df_ds
    time_varying = catalogue.loc[catalogue["is_td"], "ds"].tolist()
    if name not in time_varying:
        known = catalogue["ds"].tolist()
        what = "is not time-varying (one row per patient)" if name in known else "is not a SurvSet data set"
        raise ConfigError(f"{name!r} {what}; the time-varying sets are {', '.join(sorted(time_varying))}")
    with warnings.catch_warnings():  # the package's pickles name numpy.core, which numpy 2 deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        raw = pl.from_pandas(loader.load_dataset(name)["df"])
    table = raw.select(
        (pl.col("pid").rank("dense") - 1).cast(pl.Int64).alias("pid"),
        pl.col("time").cast(pl.Float64),
        pl.col("time2").cast(pl.Float64),
        pl.col("event").cast(pl.Int64),
        *(pl.col(c).cast(pl.Float64) for c in raw.columns if c.startswith("num_")),
        *(pl.col(c).cast(pl.String) for c in raw.columns if c.startswith("fac_")),
    )
    numeric = [c for c in table.columns if c.startswith("num_")]
    categorical = [c for c in table.columns if c.startswith("fac_")]
    visits, outcomes = from_counting_process(table, numeric=numeric, categorical=categorical, gaps="bridge")
    return DatasetTables(visits=visits, outcomes=outcomes, event_names=("event",))
