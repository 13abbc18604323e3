"""The native row gather of batch padding against NumPy's fancy indexing, for every layout, element size and row
selection it takes, and the padded batches of a cohort with and without it."""

import numpy as np
import pytest
import torch
from native_runs import natively_and_without

from ehrseq.data import FeaturePipeline, build_cohort, tensorize
from ehrseq.datasets import simulate
from ehrseq.models.distributions import _native

pytestmark = pytest.mark.skipif(not _native.available(), reason=_native.status())


@pytest.mark.parametrize("dtype", [np.float32, np.bool_, np.int64, np.float64, np.int32, np.uint8])
@pytest.mark.parametrize("order", ["C", "F", "1-D"])
@pytest.mark.parametrize("selected", [True, False])
def test_gather_rows_is_numpy_fancy_indexing(dtype, order, selected):
    rng = np.random.default_rng(7)
    rows, columns = 50, 6
    values = (rng.standard_normal((rows, columns)) * 100).astype(dtype)
    array = values[:, 2] if order == "1-D" else np.asarray(values, order=order)
    src = rng.permutation(rows)[:30].astype(np.int64) if selected else None
    count = 30 if selected else rows
    dst = np.sort(rng.choice(80, size=count, replace=False)).astype(np.int64)
    expected = np.zeros((80, *array.shape[1:]), dtype=dtype)
    expected[dst] = array if src is None else array[src]
    out = np.zeros_like(expected)
    assert _native.gather_rows(out, dst, array, src)
    np.testing.assert_array_equal(out, expected)


def test_gather_rows_declines_what_it_does_not_take():
    array = np.ones((4, 3), dtype=np.float16)  # 2-byte elements
    out, dst = np.zeros((4, 3), dtype=np.float16), np.arange(4, dtype=np.int64)
    assert not _native.gather_rows(out, dst, array, None)
    assert not _native.gather_rows(np.zeros((4, 3), dtype=np.float32), dst, array.astype(np.float64), None)
    assert not _native.gather_rows(np.zeros((3, 4), dtype=np.float32).T, dst, array.astype(np.float32), None)
    assert not _native.gather_rows(np.zeros((4, 3), dtype=np.float32), dst.astype(np.int32), array.astype(np.float32),
                                   None)
    assert (out == 0).all()


def test_padded_batches_are_the_same_with_and_without_the_kernel():
    sim = simulate(40, seed=3)
    cohort = build_cohort(sim.visits, sim.outcomes)
    data = tensorize(cohort, FeaturePipeline().fit(cohort), None)
    assert not data.numeric.numpy().flags.c_contiguous  # the feature pipeline's column-major table
    patients = torch.tensor([5, 0, 17, 3, 39])
    natively, without = natively_and_without(lambda: data.batch(patients))
    for name in ("numeric", "numeric_missing", "categorical", "codes", "time", "gap", "mask", "remaining", "bin"):
        torch.testing.assert_close(getattr(natively, name), getattr(without, name), rtol=0, atol=0, equal_nan=True)
