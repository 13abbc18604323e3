"""The native code-history term at selected visits against the PyTorch reference (both of its paths: the presence
table of small vocabularies and the sorted lists of large ones), at several thread counts, and what it declines."""

import pytest
import torch
from native_runs import at_thread_counts, natively_and_without

from ehrseq.data.batch import PAD_INDEX
from ehrseq.errors import ShapeError
from ehrseq.models import model as model_module
from ehrseq.models.distributions import _native
from ehrseq.models.model import code_history_at, new_code_terms

pytestmark = pytest.mark.skipif(not _native.available(), reason=_native.status())


def _batch(vocabulary: int, b: int = 9, m: int = 7, k: int = 4, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, vocabulary, (b, m, k), generator=generator)  # 0: padding, repeats within and across visits
    lengths = torch.randint(1, m + 1, (b,), generator=generator)
    mask = torch.arange(m) < lengths[:, None]
    codes[~mask] = torch.randint(0, vocabulary, (int((~mask).sum()), k), generator=generator)  # garbage at padding
    weight = torch.randn(vocabulary, 5, generator=generator)
    weight[PAD_INDEX] = 0.0
    rows = torch.tensor([0, 3, 3, 8, 5, 1, 2, 6, 7, 4, 0])
    positions = torch.tensor([0, 2, 6, 3, 10, -1, 1, 5, 4, 0, 6])  # beyond the length, and before the first visit
    return codes, mask, (rows, positions), weight


@pytest.mark.parametrize("vocabulary", [6, 40, 2000])  # the presence table and the sorted lists of the reference
def test_native_code_history_is_the_reference(vocabulary):
    codes, mask, index, weight = _batch(vocabulary)
    natively, reference = natively_and_without(lambda: code_history_at(codes, mask, index, weight))
    torch.testing.assert_close(natively, reference, rtol=1e-6, atol=1e-6)
    # and the cumulative sum of the first records at every visit, read at the selected (real) visits
    rows, positions = index
    cumulative = new_code_terms(codes, mask, weight).cumsum(dim=1)
    last = torch.minimum(positions.clamp(min=0), mask.sum(dim=1)[rows] - 1)
    real = positions >= 0
    torch.testing.assert_close(natively[real], cumulative[rows, last][real], rtol=1e-5, atol=1e-5)
    assert (natively[~real] == 0).all()


def test_native_code_history_is_the_same_at_every_thread_count():
    codes, mask, (rows, positions), weight = _batch(30, b=300, seed=2)
    rows = torch.arange(300).repeat(2)
    positions = torch.randint(-1, 8, (600,), generator=torch.Generator().manual_seed(4))
    one, three = at_thread_counts(lambda: _native.code_history_at(codes, mask, rows, positions, weight))
    assert torch.equal(one, three)


def test_the_model_takes_the_kernel_and_declines_with_gradients(monkeypatch):
    codes, mask, index, weight = _batch(40)
    taken = []

    def spy(*arguments):
        taken.append(kernel(*arguments))
        return taken[-1]

    kernel = _native.code_history_at
    monkeypatch.setattr(model_module._native, "code_history_at", spy)
    code_history_at(codes, mask, index, weight)
    assert taken[-1] is not None
    trained = weight.clone().requires_grad_()
    value = code_history_at(codes, mask, index, trained)
    assert taken[-1] is None and value.requires_grad  # the autograd path of the reference
    with torch.no_grad():
        code_history_at(codes, mask, index, trained)
    assert taken[-1] is not None
    assert _native.code_history_at(codes, mask, *index, weight.double()) is None


def test_codes_outside_the_vocabulary_and_rows_outside_the_batch_raise():
    codes, mask, (rows, positions), weight = _batch(12)
    codes[0, 0, 0] = 12
    mask[0, 0] = True
    with pytest.raises(ShapeError, match="outside its vocabulary"):
        _native.code_history_at(codes, mask, rows, positions, weight)
    codes[0, 0, 0] = -3
    with pytest.raises(ShapeError, match="outside its vocabulary"):
        _native.code_history_at(codes, mask, rows, positions, weight)
    codes[0, 0, 0] = 1
    with pytest.raises(IndexError, match="patient rows"):
        _native.code_history_at(codes, mask, torch.tensor([9]), torch.tensor([0]), weight)
