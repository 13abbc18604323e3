"""Tables in, tensors out: contracts, validation, cohort and targets, features, tensorization, MEDS and
counting-process input, data sets."""

from ehrseq.data.batch import PAD_INDEX, UNKNOWN_INDEX, SequenceBatch
from ehrseq.data.cohort import Cohort, assemble_cohort, build_cohort
from ehrseq.data.counting import from_counting_process
from ehrseq.data.features import EncodedVisits, FeaturePipeline
from ehrseq.data.grid import TimeGrid
from ehrseq.data.loader import LengthBucketSampler, make_loader
from ehrseq.data.meds import read_meds
from ehrseq.data.prediction_times import PredictionTimeLoader, sample_prediction_times
from ehrseq.data.reader import NULL_VALUES, read_table
from ehrseq.data.report import CohortReport, RowCount
from ehrseq.data.sequence import SequenceData, tensorize
from ehrseq.data.specs import TableSpec, load_spec
from ehrseq.data.split import split_patients, split_tables
from ehrseq.data.validation import (
    ValidatedTables,
    validate,
    validate_counting_process,
    validate_meds,
    validate_predictions,
)

__all__ = [
    "PredictionTimeLoader",
    "sample_prediction_times",
    "NULL_VALUES",
    "PAD_INDEX",
    "UNKNOWN_INDEX",
    "Cohort",
    "CohortReport",
    "EncodedVisits",
    "FeaturePipeline",
    "LengthBucketSampler",
    "RowCount",
    "SequenceBatch",
    "SequenceData",
    "TableSpec",
    "TimeGrid",
    "ValidatedTables",
    "assemble_cohort",
    "build_cohort",
    "from_counting_process",
    "load_spec",
    "make_loader",
    "read_meds",
    "read_table",
    "split_patients",
    "split_tables",
    "tensorize",
    "validate",
    "validate_counting_process",
    "validate_meds",
    "validate_predictions",
]
