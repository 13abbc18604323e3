"""Suite-wide settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    """Run torch on one CPU thread: the tensors in the tests are small, and with several intra-op
    threads on a busy machine every parallel region waits for a descheduled worker (milliseconds per
    op). Benchmarks, not tests, measure multi-threaded speed. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
