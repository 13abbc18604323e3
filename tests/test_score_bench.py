"""The scoring benchmark's --quick mode runs end to end: every engine at both cohort sizes, the
Dask / process-pool ratio, memory from the smaller to the larger cohort and the GRU-alone yardstick."""

import pytest

from ehrseq.bench import score as bench_score

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
