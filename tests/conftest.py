"""Suite-wide settings."""

import pytest
import torch

from ehrseq import settings


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    """Run torch on one CPU thread: the tensors in the tests are small, and with several intra-op
    threads on a busy machine every parallel region waits for a descheduled worker (milliseconds per
    op). Benchmarks, not tests, measure multi-threaded speed. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def single_model_by_default():
    """``n_models="auto"`` fits one model in the tests, module fixtures included (five networks and five linear
    members per fit would multiply the suite's time); the tests of ensembles ask for them, and the auto rules'
    own tests restore their sizes."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "AUTO_ENSEMBLE", 1)
        patch.setattr(settings, "AUTO_LINEAR_PER_NETWORK", 0)
        yield
