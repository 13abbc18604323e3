"""Tables in, tensors out: contracts, validation, cohort and targets, features, tensorization, MEDS, data sets."""

from ehrseq.data.batch import PAD_INDEX, UNKNOWN_INDEX, SequenceBatch

__all__ = ["PAD_INDEX", "UNKNOWN_INDEX", "SequenceBatch"]
