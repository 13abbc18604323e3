"""The training benchmark compares like with like: prefix re-encoding gives the causal pass's predictions."""

import torch

from ehrseq.bench.train import build, main, prefixes, synthetic_batch


def test_prefix_augmentation_reproduces_the_causal_per_visit_predictions():
    batch = synthetic_batch(3, 6, n_numeric=4, vocab=20, codes=2, seed=1)
    for kind in ("gru", "transformer"):
        model, _ = build(kind, n_numeric=4, vocab=20)
        model.eval()
        with torch.no_grad():
            causal = model(batch).raw  # [3, 6, L]
            augmented = prefixes(batch)
            out = model(augmented).raw  # [18, 6, L]
        last = augmented.lengths - 1
        per_prefix = out[torch.arange(18), last].reshape(3, 6, -1)
        assert torch.allclose(per_prefix, causal, atol=1e-5)
        assert torch.equal(augmented.remaining[torch.arange(18), last].reshape(3, 6), batch.remaining)


def test_quick_benchmark_runs(capsys):
    main(["--quick"])
    out = capsys.readouterr().out
    assert "speed-up" in out and "patients/s" in out
