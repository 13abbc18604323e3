"""Threaded array jobs: order, errors, inline fallback, and identical tensors with and without threads."""

import threading

import numpy as np
import pytest
import torch

import ehrseq.data._parallel as parallel
from ehrseq.data import FeaturePipeline, build_cohort, tensorize
from ehrseq.datasets import simulate


@pytest.fixture
def two_threads(monkeypatch):
    """Two torch threads and no size threshold, so that every thread_map call uses a pool."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(parallel, "MIN_PARALLEL_ELEMENTS", 0)
    yield
    torch.set_num_threads(threads)


def test_results_keep_input_order_and_use_several_threads(two_threads):
    barrier = threading.Barrier(2, timeout=10)  # both jobs must be running at once to pass it

    def job(i):
        barrier.wait()
        return i * 10, threading.get_ident()

    results = parallel.thread_map(job, [1, 2], elements=1)
    assert [value for value, _ in results] == [10, 20]
    assert len({ident for _, ident in results}) == 2


def test_small_inputs_and_one_thread_run_inline():
    main = threading.get_ident()
    assert parallel.thread_map(lambda _: threading.get_ident(), range(3), elements=10) == [main] * 3
    assert torch.get_num_threads() == 1  # the suite runs single-threaded
    assert parallel.thread_map(lambda _: threading.get_ident(), range(3), elements=10**9) == [main] * 3


def test_the_first_error_is_raised(two_threads):
    def job(i):
        if i == 1:
            raise ValueError("job 1 failed")
        return i

    with pytest.raises(ValueError, match="job 1 failed"):
        parallel.thread_map(job, range(4), elements=1)


@pytest.mark.parametrize("locf", [False, True])
def test_threaded_features_and_padding_equal_the_sequential_ones(locf, monkeypatch):
    sim = simulate(300, seed=3)
    cohort = build_cohort(sim.visits, sim.outcomes)
    features = FeaturePipeline(locf=locf).fit(cohort)
    sequential = tensorize(cohort, features).to_padded().tensors()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(parallel, "MIN_PARALLEL_ELEMENTS", 0)
    try:
        threaded = tensorize(cohort, features).to_padded().tensors()
    finally:
        torch.set_num_threads(threads)
    assert sequential.keys() == threaded.keys()
    for name, tensor in sequential.items():
        assert tensor.dtype == threaded[name].dtype and torch.equal(tensor, threaded[name]), name
    assert np.isfinite(sequential["numeric"].numpy()).all()
