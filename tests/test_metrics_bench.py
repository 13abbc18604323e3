"""The metrics benchmark runs end to end in its quick mode and reports equal values."""

import re

from ehrseq.bench.metrics import TOLERANCE, main


def test_quick_benchmark_reports_both_indices_equal_to_scikit_survival(capsys):
    main(["--quick", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "n = 2,000" in out
    rows = [line for line in out.splitlines() if line.startswith(("Harrell C", "Uno C"))]
    assert len(rows) == 2
    for row in rows:
        numbers = re.findall(r"[-+]?\d+\.\d+(?:e[-+]\d+)?", row)
        ours, reference, diff = float(numbers[0]), float(numbers[1]), float(numbers[2])
        assert abs(ours - reference) <= TOLERANCE and diff <= TOLERANCE
        assert row.split()[-4] == "yes" and row.endswith("x")
