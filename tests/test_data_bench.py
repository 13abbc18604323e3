"""The tensorize benchmark runs, and its pandas baseline builds the same arrays as the pipeline."""

import numpy as np

from ehrseq.bench import tensorize as bench
from ehrseq.data import FeaturePipeline, build_cohort, tensorize


def test_quick_benchmark_prints_every_figure(capsys):
    bench.main(["--quick"])
    out = capsys.readouterr().out
    for text in ("end to end", "visit rows/s", "pandas per-patient loop", "speed-up", "peak memory", "x the output"):
        assert text in out


def test_pandas_baseline_builds_the_same_padded_arrays():
    visits, outcomes = bench.simulated_tables(60, seed=1)
    cohort = build_cohort(visits, outcomes, numeric=bench.NUMERIC)
    features = FeaturePipeline(time_features=False).fit(cohort)
    ours = tensorize(cohort, features).to_padded()
    vocabulary = {code: i + 2 for i, code in enumerate(features.code_vocabulary)}
    theirs = bench.pandas_loop(visits.to_pandas(), outcomes.to_pandas(), np.asarray(features.means), features.stds,
                               vocabulary)
    assert np.array_equal(theirs["mask"], ours.mask.numpy())
    np.testing.assert_allclose(theirs["numeric"], ours.numeric.numpy(), rtol=1e-6, atol=1e-6)
    assert np.array_equal(theirs["missing"], ours.numeric_missing.numpy())
    assert np.array_equal(theirs["codes"], ours.codes.numpy())
    np.testing.assert_allclose(theirs["elapsed"], ours.time.numpy(), rtol=1e-6)
    np.testing.assert_allclose(theirs["remaining"][theirs["mask"]], ours.remaining.numpy()[ours.mask.numpy()],
                               rtol=1e-6)
