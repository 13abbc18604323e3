"""The scoring benchmark's --quick mode runs end to end: every engine at both cohort sizes, the
Dask / process-pool ratio, memory from the smaller to the larger cohort, the GRU-alone yardsticks (also timed in
each run's process right after it) and the model-alone measurement; and that measurement times the scorer's own forward pass."""

import numpy as np
import polars as pl
import pytest
import torch

import ehrseq
from ehrseq.bench import score as bench_score
from ehrseq.predict import distribution_at

pytestmark = pytest.mark.distributed


def test_quick_benchmark_runs(capsys):
    bench_score.main(["--quick"])
    printed = capsys.readouterr().out
    assert "patients/s" in printed and "peak RSS MiB" in printed and "worker peak MiB" in printed
    rows = [line for line in printed.splitlines() if line.startswith(("200 ", "400 "))]
    assert len(rows) == 6
    for engine in ("in-process", "dask, 2 workers", "process pool, 2 workers"):
        assert sum(engine in row for row in rows) == 2
    assert "time per stage" in printed
    assert "Dask vs process pool, 2 workers:" in printed and "memory from 200 to 400 patients" in printed
    for recurrence in ("nn.GRU", "gru_inference (the scorer's recurrence)"):
        (line,) = [line for line in printed.splitlines() if line.startswith(f"yardstick: the GRU layer alone as {recurrence} ")]
        assert "dask" in line and "in-process" in line
    (line,) = [line for line in printed.splitlines() if line.startswith("the same yardstick (nn.GRU) timed in each run")]
    assert "200 patients: in-process" in line and "400 patients: in-process" in line and line.count("process pool") == 2
    (line,) = [line for line in printed.splitlines() if line.startswith("the model alone: ")]
    assert "of nn.GRU" in line and all(engine in line for engine in ("in-process", "dask", "process pool"))


def test_the_model_alone_is_timed_on_the_batches_and_forward_pass_of_the_scorer(tmp_path):
    """The prepared batches in order of history length, each patient once, and the forward pass timed on them
    gives the risks of ``predict_risk`` at the last visit (the measurement times what scoring computes)."""
    (shard,) = bench_score.write_shards(tmp_path / "visits", 70, 70)
    estimator = ehrseq.load(bench_score.train_model(tmp_path, 120))
    batches = bench_score.prepared_batches(estimator, shard, 16)
    assert [len(index[0]) for _, index in batches] == [16, 16, 16, 16, 6]
    lengths = np.concatenate([batch.mask.sum(dim=1).numpy() for batch, _ in batches])
    assert np.all(np.diff(lengths) >= 0)
    cohort = estimator.cohort(pl.read_parquet(shard))
    risks, patients = [], []
    with torch.inference_mode():
        for batch, index in batches:
            prediction, _ = distribution_at(estimator.model_.eval(), batch, index, torch.zeros(len(index[0])),
                                            check_values=False)
            risks.append(-torch.expm1(prediction.log_survival(torch.tensor([365.0]))).squeeze(-1).double().numpy())
            patients.append(batch.patient_index.numpy())
    ids = cohort.patients.get_column("patient_id").gather(np.concatenate(patients)).to_list()
    assert sorted(ids) == sorted(cohort.patients.get_column("patient_id").to_list())
    expected = estimator.predict_risk(pl.read_parquet(shard), 365.0)
    by_id = dict(zip(expected.get_column("patient_id").to_list(), expected.get_column("risk").to_list()))
    np.testing.assert_allclose(np.concatenate(risks), [by_id[i] for i in ids], rtol=1e-6, atol=1e-7)
