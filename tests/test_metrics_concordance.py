"""Harrell's and Uno's C against scikit-survival; Antolini's C_td against its pair-loop definition."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sksurv.exceptions import NoComparablePairException
from sksurv.metrics import concordance_index_censored, concordance_index_ipcw
from sksurv.util import Surv

from ehrseq.errors import ShapeError
from ehrseq.metrics import CensoringDistribution, NoComparablePairsError, antolini_c, harrell_c, uno_c

CASES = [(n, seed) for n in (5, 17, 120, 2000) for seed in range(3)]


def tied_outcomes(n, seed, *, n_times=None, censor_rate=0.4):
    """Outcomes with many tied times (integers) and tied scores (rounded), events and censorings mixed."""
    rng = np.random.default_rng(seed)
    time = rng.integers(1, n_times or max(3, n // 4), n).astype(float)
    event = rng.random(n) > censor_rate
    risk = np.round(rng.normal(size=n), 1)
    return time, event, risk


@pytest.mark.parametrize(("n", "seed"), CASES)
def test_harrell_equals_scikit_survival_with_tied_times_and_scores(n, seed):
    time, event, risk = tied_outcomes(n, seed)
    if not event.any():
        event[0] = True
    expected = concordance_index_censored(event, time, risk)
    got = harrell_c(time, event, risk)
    assert got.cindex == pytest.approx(expected[0], abs=1e-12)
    assert tuple(got[1:]) == tuple(int(v) for v in expected[1:])
    assert got.tied_time > 0 or n < 50  # the generator does produce event/censoring ties at equal times


def test_harrell_tolerance_ties_match_scikit_survival():
    rng = np.random.default_rng(7)
    n = 400
    time = rng.integers(1, 40, n).astype(float)
    event = rng.random(n) < 0.7
    # scores differ by less / more than the tolerance; ties are not transitive
    risk = np.round(rng.normal(size=n), 2) + rng.choice([0.0, 5e-9, 2e-8], n)
    for tol in (0.0, 1e-8, 1e-2):
        expected = concordance_index_censored(event, time, risk, tied_tol=tol)
        got = harrell_c(time, event, risk, tied_tol=tol)
        assert got.cindex == pytest.approx(expected[0], abs=1e-12)
        assert tuple(got[1:]) == tuple(int(v) for v in expected[1:])


def test_harrell_hand_example_from_the_monograph():
    # A fails at 2, B fails at 10, C censored at 6; comparable pairs (A,B), (A,C).
    time, event = [2.0, 10.0, 6.0], [1, 1, 0]
    assert harrell_c(time, event, [3.0, 1.0, 2.0]).cindex == 1.0
    assert harrell_c(time, event, [2.0, 3.0, 1.0]).cindex == 0.5  # ranks A above C only
    result = harrell_c(time, event, [1.0, 1.0, 1.0])
    assert result == (0.5, 0, 0, 2, 0)


def test_event_and_censoring_at_the_same_time_are_comparable_two_events_are_not():
    time, event = [3.0, 3.0, 3.0], [True, False, True]
    result = harrell_c(time, event, [2.0, 1.0, 0.0])
    # pairs: (0 event, 1 censored) concordant; (2 event, 1 censored) discordant; events 0/2 not ordered
    assert result == (0.5, 1, 1, 0, 2)


def test_degenerate_inputs_raise_no_comparable_pairs_where_sksurv_fails_or_returns_nan():
    with pytest.raises(NoComparablePairsError, match="censored"):
        harrell_c([1.0, 2.0, 3.0], [0, 0, 0], [1.0, 2.0, 3.0])
    with pytest.raises(NoComparablePairsError):
        harrell_c([1.0], [1], [0.5])
    # events only at the largest time, nobody outlives them: sksurv divides 0 by 0
    time, event, risk = np.array([1.0, 5.0, 5.0]), np.array([False, True, True]), np.array([0.0, 1.0, 2.0])
    with np.errstate(invalid="ignore"):
        assert np.isnan(concordance_index_censored(event, time, risk)[0])
    with pytest.raises(NoComparablePairsError):
        harrell_c(time, event, risk)
    with pytest.raises(NoComparablePairException):
        concordance_index_censored(np.array([False, True]), np.array([1.0, 2.0]), np.array([0.0, 1.0]))
    with pytest.raises(NoComparablePairsError):
        harrell_c([1.0, 2.0], [0, 1], [0.0, 1.0])


def test_input_validation_names_the_problem():
    with pytest.raises(ShapeError, match="risk"):
        harrell_c([1.0, 2.0], [1, 0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="finite"):
        harrell_c([1.0, 2.0], [1, 0], [np.nan, 2.0])
    with pytest.raises(ValueError, match="0/1"):
        harrell_c([1.0, 2.0], [2, 0], [1.0, 2.0])
    with pytest.raises(ValueError, match=">= 0"):
        harrell_c([-1.0, 2.0], [1, 0], [1.0, 2.0])
    with pytest.raises(ValueError, match="tied_tol"):
        harrell_c([1.0, 2.0], [1, 0], [1.0, 2.0], tied_tol=-1.0)


def test_torch_inputs_are_accepted():
    torch = pytest.importorskip("torch")
    time, event, risk = tied_outcomes(60, 1)
    expected = harrell_c(time, event, risk)
    got = harrell_c(torch.tensor(time), torch.tensor(event), torch.tensor(risk, requires_grad=True))
    assert got == expected


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 6), st.booleans(), st.integers(-3, 3)), min_size=2, max_size=40),
    st.randoms(use_true_random=False),
)
def test_harrell_matches_sksurv_on_arbitrary_small_data_and_is_permutation_invariant(rows, rnd):
    time = np.array([r[0] for r in rows], dtype=float)
    event = np.array([r[1] for r in rows])
    risk = np.array([r[2] for r in rows], dtype=float)
    try:
        with np.errstate(invalid="ignore"):
            expected = concordance_index_censored(event, time, risk)
    except (NoComparablePairException, ValueError):
        expected = None
    if expected is None or np.isnan(expected[0]):
        with pytest.raises(NoComparablePairsError):
            harrell_c(time, event, risk)
        return
    got = harrell_c(time, event, risk)
    assert got.cindex == pytest.approx(expected[0], abs=1e-12)
    assert tuple(got[1:]) == tuple(int(v) for v in expected[1:])
    perm = np.array(rnd.sample(range(len(rows)), len(rows)))
    assert harrell_c(time[perm], event[perm], risk[perm]) == got
    # a strictly increasing transform of the scores changes nothing
    assert harrell_c(time, event, 3.0 * risk + 1.0) == got


def _train_test(n, seed):
    time, event, risk = tied_outcomes(n, seed, n_times=30)
    rng = np.random.default_rng(seed + 100)
    train_time = rng.integers(1, 31, 3 * n + 10).astype(float)
    train_event = rng.random(train_time.size) < 0.6
    train_event[train_time == train_time.max()] = True  # G > 0 up to the last training time
    return time, event, risk, train_time, train_event


@pytest.mark.parametrize(("n", "seed"), CASES)
@pytest.mark.parametrize("tau", [None, 20.0])
def test_uno_equals_scikit_survival(n, seed, tau):
    time, event, risk, train_time, train_event = _train_test(n, seed)
    if not event.any():
        event[0] = True
    censoring = CensoringDistribution.fit(train_time, train_event)
    y_train, y_test = Surv.from_arrays(train_event, train_time), Surv.from_arrays(event, time)
    try:
        with np.errstate(invalid="ignore"):
            expected = concordance_index_ipcw(y_train, y_test, risk, tau=tau)
    except NoComparablePairException:
        expected = (np.nan,)
    if np.isnan(expected[0]):
        with pytest.raises(NoComparablePairsError):
            uno_c(time, event, risk, censoring, tau=tau)
        return
    got = uno_c(time, event, risk, censoring, tau=tau)
    assert got.cindex == pytest.approx(expected[0], abs=1e-12)
    if tau is None:
        assert tuple(got[1:]) == tuple(int(v) for v in expected[1:])
    else:  # counts cover the pairs entering the index: Harrell's counts on events before tau
        early = time < tau
        brute = _pair_counts(time, event & early, risk, time, event)
        assert tuple(got[1:]) == brute


def _pair_counts(time, anchors, risk, all_time, all_event):
    """Pairwise-matrix definition of (concordant, discordant, tied_risk, tied_time) over scikit-survival's
    comparable pairs: anchor i (an event) and j with Y_j > Y_i, or Y_j = Y_i and j censored."""
    later = all_time[None, :] > all_time[:, None]
    same_censored = (all_time[None, :] == all_time[:, None]) & ~all_event[None, :]
    comparable = anchors[:, None] & (later | same_censored)
    diff = risk[:, None] - risk[None, :]
    tie = comparable & (np.abs(diff) <= 1e-8)
    con = comparable & ~tie & (diff > 0)
    dis = comparable & ~tie & (diff < 0)
    return int(con.sum()), int(dis.sum()), int(tie.sum()), int((comparable & same_censored).sum())


def test_uno_without_censoring_in_training_is_harrell():
    time, event, risk = tied_outcomes(300, 4)
    censoring = CensoringDistribution.fit(np.arange(1.0, 200.0), np.ones(199, dtype=bool))
    assert uno_c(time, event, risk, censoring).cindex == pytest.approx(harrell_c(time, event, risk).cindex, abs=1e-12)


def test_uno_refuses_event_times_outside_the_censoring_support():
    time, event, risk, train_time, train_event = _train_test(200, 3)
    censoring = CensoringDistribution.fit(train_time, train_event)
    late = time.copy()
    late[np.flatnonzero(event)[0]] = train_time.max() + 5
    with pytest.raises(ValueError, match="last training time"):
        uno_c(late, event, risk, censoring)
    assert np.isfinite(uno_c(late, event, risk, censoring, tau=train_time.max()).cindex)
    ended = np.r_[train_event[:-1], False]
    ended_time = np.r_[train_time[:-1], train_time.max() + 10]  # the last training subject is censored: G = 0
    late[np.flatnonzero(event)[0]] = ended_time.max()
    with pytest.raises(ValueError, match="G is 0"):
        uno_c(late, event, risk, CensoringDistribution.fit(ended_time, ended))
    with pytest.raises(ValueError, match="tau"):
        uno_c(time, event, risk, censoring, tau=-1.0)


# ---------------------------------------------------------------- Antolini C_td


def ph_curves(risk, grid):
    """Proportional-hazards curves S_i(t) = exp(−t/10)^{exp(r_i)}: their ranking at any t follows r."""
    return np.exp(-np.outer(np.exp(risk), grid) / 10.0)


def antolini_loop(time, event, surv_at, ties):
    """Pair-loop definition: Δ_i = 1, Y_i < Y_j; concordant when S_i(Y_i) < S_j(Y_i)."""
    num = den = 0.0
    for i in range(time.size):
        if not event[i]:
            continue
        for j in range(time.size):
            if time[i] < time[j]:
                den += 1
                own, other = surv_at(i, time[i]), surv_at(j, time[i])
                if abs(own - other) <= 1e-8:
                    num += 0.5 if ties == "half" else 0.0
                elif own < other:
                    num += 1
    return num / den


@pytest.mark.parametrize("interpolation", ["linear", "step"])
@pytest.mark.parametrize("ties", ["zero", "half"])
@pytest.mark.parametrize("seed", range(3))
def test_antolini_equals_pair_loop_on_crossing_curves(interpolation, ties, seed):
    rng = np.random.default_rng(seed)
    n = 40
    grid = np.array([0.5, 1.0, 2.0, 4.0, 6.0, 9.0])
    time = rng.integers(0, 12, n) * 0.75
    event = rng.random(n) < 0.6
    # non-proportional, crossing curves with exact ties between subjects sharing a curve
    hazards = np.round(rng.uniform(0.05, 0.6, (n // 2, grid.size)), 1)
    surv = np.repeat(np.exp(-np.cumsum(hazards, axis=1)), 2, axis=0)

    def surv_at(i, t):
        knots, values = np.r_[0.0, grid], np.r_[1.0, surv[i]]
        if interpolation == "linear":
            return np.interp(t, knots, values)
        return values[np.searchsorted(knots, t, side="right") - 1]

    expected = antolini_loop(time, event, surv_at, ties)
    got = antolini_c(time, event, surv, grid, interpolation=interpolation, ties=ties)
    assert got.cindex == pytest.approx(expected, abs=1e-12)
    assert got.concordant + got.discordant + got.tied_risk == sum(
        (time[i] < time).sum() for i in np.flatnonzero(event)
    )


def test_antolini_equals_harrell_for_proportional_hazards_without_tied_times():
    rng = np.random.default_rng(5)
    n = 300
    time = rng.permutation(np.arange(1, n + 1)) / 10.0
    event = rng.random(n) < 0.6
    risk = rng.normal(size=n)
    grid = np.linspace(0.05, 31.0, 400)
    got = antolini_c(time, event, ph_curves(risk, grid), grid, tied_tol=0.0)
    assert got.cindex == pytest.approx(harrell_c(time, event, risk).cindex, abs=1e-12)


def test_antolini_validates_curves():
    grid = np.array([1.0, 2.0])
    with pytest.raises(ValueError, match="times"):
        antolini_c([1.0, 2.0], [1, 0], np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="non-increasing"):
        antolini_c([1.0, 2.0], [1, 0], np.array([[0.5, 0.6], [0.5, 0.4]]), grid)
    with pytest.raises(ValueError, match="probabilities"):
        antolini_c([1.0, 2.0], [1, 0], np.array([[1.5, 0.6], [0.5, 0.4]]), grid)
    with pytest.raises(ValueError, match="strictly increasing"):
        antolini_c([1.0, 2.0], [1, 0], np.full((2, 2), 0.5), [2.0, 1.0])
    with pytest.raises(ShapeError):
        antolini_c([1.0, 2.0], [1, 0], np.full((3, 2), 0.5), grid)
    with pytest.raises(ValueError, match="interpolation"):
        antolini_c([1.0, 2.0], [1, 0], np.full((2, 2), 0.5), grid, interpolation="cubic")
    with pytest.raises(NoComparablePairsError):
        antolini_c([1.0, 2.0], [0, 0], np.full((2, 2), 0.5), grid)
