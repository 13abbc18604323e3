"""Concordance indices versus scikit-survival on the same arrays: values, times and speed-up.

``python -m ehrseq.bench metrics [--n 200000] [--seed 0] [--repeats 3] [--quick]``

The data have many ties, as real EHR outcomes do: times are whole days in 1..3650, risk scores are
rounded to three decimals. Harrell's C is compared with ``concordance_index_censored``; Uno's C
(τ = 9 years, censoring distribution fitted on a separate training set of the same size) with
``concordance_index_ipcw``. Each is timed on the same arrays in the same run: ehrseq ``--repeats`` times
after one warm-up call (best time reported); scikit-survival's quadratic loop runs once, without
warm-up, when n exceeds 20,000, and the output says so.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
from sksurv.metrics import concordance_index_censored, concordance_index_ipcw
from sksurv.util import Surv

from ehrseq.bench._timing import Timing, environment_line, format_table, measure
from ehrseq.metrics import CensoringDistribution, harrell_c, uno_c

QUICK_N = 2_000
SINGLE_RUN_ABOVE = 20_000
TOLERANCE = 1e-9


def make_data(n: int, seed: int) -> dict[str, np.ndarray]:
    """Tied test outcomes and scores, and training outcomes whose censoring support covers them."""
    rng = np.random.default_rng(seed)
    days = 3650

    def outcomes() -> tuple[np.ndarray, np.ndarray]:
        event_time = rng.integers(1, days + 1, n)
        censor_time = rng.integers(1, days + 1, n)
        time_ = np.minimum(event_time, censor_time).astype(np.float64)
        return time_, event_time <= censor_time

    test_time, test_event = outcomes()
    train_time, train_event = outcomes()
    train_event[train_time == train_time.max()] = True  # censoring survival stays > 0 up to the last day
    risk = np.round(rng.normal(size=n) - test_time / days, 3)
    return {"time": test_time, "event": test_event, "risk": risk, "train_time": train_time, "train_event": train_event}


def run(fn: Callable[[], Any], repeats: int, warmup: int) -> tuple[Any, Timing]:
    """The result of ``fn`` and the timing of ``repeats`` calls after ``warmup`` untimed ones."""
    results: list[Any] = []
    timing = measure(lambda: results.append(fn()), repeats=repeats, warmup=warmup)
    return results[-1], timing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ehrseq.bench metrics", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="number of test subjects (default 200,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ehrseq (best is reported)")
    parser.add_argument("--quick", action="store_true", help=f"small run (n = {QUICK_N:,})")
    args = parser.parse_args(argv)
    n = QUICK_N if args.quick else args.n
    if n < 2 or args.repeats < 1:
        parser.error("--n must be at least 2 and --repeats at least 1")
    data = make_data(n, args.seed)
    t, e, r = data["time"], data["event"], data["risk"]
    tau = 9 * 365.0
    censoring = CensoringDistribution.fit(data["train_time"], data["train_event"])
    y_train = Surv.from_arrays(data["train_event"], data["train_time"])
    y_test = Surv.from_arrays(e, t)
    sk_repeats = 1 if n > SINGLE_RUN_ABOVE else args.repeats

    rows = []
    for name, ours_fn, reference_fn in (
        ("Harrell C", lambda: harrell_c(t, e, r).cindex, lambda: concordance_index_censored(e, t, r)[0]),
        (
            f"Uno C (tau = {tau:g} d)",
            lambda: uno_c(t, e, r, censoring, tau=tau).cindex,
            lambda: concordance_index_ipcw(y_train, y_test, r, tau=tau)[0],
        ),
    ):
        value, ours = run(ours_fn, args.repeats, warmup=1)
        reference, theirs = run(reference_fn, sk_repeats, warmup=0 if sk_repeats == 1 else 1)
        diff = abs(value - float(reference))
        rows.append(
            (
                name,
                f"{value:.15f}",
                f"{float(reference):.15f}",
                f"{diff:.1e}",
                "yes" if diff <= TOLERANCE else "NO",
                f"{ours.best:.4f}",
                f"{theirs.best:.4f}",
                f"{theirs.best / ours.best:.1f}x",
            )
        )

    print(
        f"ehrseq.bench metrics: n = {n:,} test subjects ({np.unique(t).size:,} distinct times, "
        f"{np.unique(r).size:,} distinct scores, {e.mean():.0%} events), seed {args.seed}; {environment_line()}"
    )
    print(
        f"ehrseq: best of {args.repeats} run(s); scikit-survival: "
        + ("1 run (its O(n^2) loop is too slow to repeat at this size)" if sk_repeats == 1 else f"best of {sk_repeats}")
    )
    headers = ("metric", "ehrseq", "scikit-survival", "|diff|", "equal", "ehrseq s", "sksurv s", "speed-up")
    print(format_table(headers, rows))


if __name__ == "__main__":
    main()
