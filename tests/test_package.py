"""Package-level contracts: public errors, device selection, the batch container."""

import pytest
import torch

import ehrseq
from ehrseq.data import SequenceBatch
from ehrseq.device import select_device
from ehrseq.errors import ShapeError


def test_data_error_names_table_column_rule_and_at_most_five_ids():
    err = ehrseq.DataError("times must be >= 0", table="visits", column="time", rule="non_negative",
                           patient_ids=[1, 2, 3, 4, 5, 6, 7], n_offending=7)
    text = str(err)
    assert "[visits.time]" in text and "non_negative" in text
    assert err.patient_ids == [1, 2, 3, 4, 5]
    assert "first 5 of 7" in text
    assert isinstance(err, ValueError)


def test_select_device_auto_matches_cuda_availability():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device().type == expected
    assert select_device("cpu").type == "cpu"


def _batch(b=2, m=3, f=4):
    return SequenceBatch(
        numeric=torch.zeros(b, m, f), numeric_missing=torch.zeros(b, m, f, dtype=torch.bool),
        categorical=torch.zeros(b, m, 1, dtype=torch.long), codes=torch.zeros(b, m, 2, dtype=torch.long),
        time=torch.zeros(b, m), gap=torch.zeros(b, m), mask=torch.ones(b, m, dtype=torch.bool),
        patient_index=torch.arange(b),
    )


def test_sequence_batch_validate_accepts_documented_shapes_and_names_bad_field():
    batch = _batch()
    assert batch.validate() is batch
    assert batch.lengths.tolist() == [3, 3]
    with pytest.raises(ShapeError, match="numeric_missing"):
        batch.replace(numeric_missing=torch.zeros(2, 3, 5, dtype=torch.bool)).validate()
    with pytest.raises(ShapeError, match="gap"):
        batch.replace(gap=torch.zeros(2, 4)).validate()


def test_sequence_batch_to_moves_every_tensor():
    moved = _batch().to("cpu")
    assert all(t.device.type == "cpu" for t in moved.tensors().values())
