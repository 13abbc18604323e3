"""The scoring benchmark's --quick mode runs end to end and reports every cohort size."""

from ehrseq.bench import score as bench_score


def test_quick_benchmark_runs(capsys):
    bench_score.main(["--quick"])
    printed = capsys.readouterr().out
    assert "patients/s" in printed and "peak RSS MiB" in printed
    rows = [line for line in printed.splitlines() if line.startswith(("200 ", "400 "))]
    assert len(rows) == 2
    assert "time per stage" in printed
    assert "yardstick: the GRU layer alone" in printed
