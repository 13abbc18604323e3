"""Data sets: real longitudinal cohorts (PBC, NAFLD, SurvSet's time-varying sets) and a known-truth simulator.

Every loader returns a :class:`DatasetTables` in the table contract of ``data_specs/``; it unpacks as
``visits, outcomes`` and names the event codes in ``event_names``.
"""

from ehrseq.datasets._tables import DatasetTables
from ehrseq.datasets.nafld import NAFLD_MULTI_EVENT_NAMES, load_nafld
from ehrseq.datasets.pbc import PBCSEQ_EVENT_NAMES, load_pbcseq
from ehrseq.datasets.simulation import Simulation, SimulationParameters, SimulationTruth, simulate
from ehrseq.datasets.survset import SURVSET_TIME_UNITS, load_survset

__all__ = [
    "NAFLD_MULTI_EVENT_NAMES",
    "PBCSEQ_EVENT_NAMES",
    "SURVSET_TIME_UNITS",
    "DatasetTables",
    "Simulation",
    "SimulationParameters",
    "SimulationTruth",
    "load_nafld",
    "load_pbcseq",
    "load_survset",
    "simulate",
]
