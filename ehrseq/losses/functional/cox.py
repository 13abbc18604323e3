"""Cox partial likelihood with Breslow or Efron ties and the Breslow baseline hazard (§A18).

Risk scores η (log-hazard ratios) of N subjects with times Y, event indicators Δ and sample weights w.
Everything is computed after one sort by decreasing time: risk sets {j : Y_j ≥ t} are prefixes of the
sorted order, so their log-sums log Σ w_j e^{η_j} come from one cumulative logsumexp, read at the end of
each group of tied times — O(N log N), no pairwise matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ehrseq.losses.functional._aggregate import Reduction, check_floating, check_reduction, check_shape, patient_weights
from ehrseq.losses.functional._labels import event_indicator

Ties = Literal["breslow", "efron"]


@dataclass(frozen=True)
class _RiskSets:
    """Subjects that take part (mask True, weight > 0), sorted by decreasing time, with tie groups."""

    index: torch.Tensor  # [n] positions in the input of the sorted subjects
    risk: torch.Tensor  # [n] η
    log_weight: torch.Tensor  # [n] log w
    weight: torch.Tensor  # [n] w
    event: torch.Tensor  # [n] bool Δ
    time: torch.Tensor  # [n]
    group: torch.Tensor  # [n] tie-group id (0 = latest time)
    group_size: torch.Tensor  # [G]
    log_risk_set: torch.Tensor  # [G] log Σ_{Y_j ≥ t_g} w_j e^{η_j}


def _risk_sets(
    risk: torch.Tensor,
    time: torch.Tensor,
    event: torch.Tensor,
    weight: torch.Tensor | None,
    mask: torch.Tensor | None,
    cause: int | None,
) -> _RiskSets:
    check_floating(risk, "risk")
    check_shape(risk, (None,), "risk")
    size = risk.shape[0]
    check_floating(time, "time")
    check_shape(time, (size,), "time")
    delta = event_indicator(event, size, cause)
    w = patient_weights(weight, size, risk)
    keep = w > 0
    if mask is not None:
        check_shape(mask, (size,), "mask")
        keep = keep & mask.bool()
    index = keep.nonzero().flatten()
    if not torch.all(torch.isfinite(time[index])):
        raise ValueError("time must be finite for every subject that takes part (mask True, weight > 0)")
    order = torch.argsort(time[index], descending=True, stable=True)
    index = index[order]
    sorted_time = time[index]
    new_group = torch.ones_like(sorted_time, dtype=torch.bool)
    new_group[1:] = sorted_time[1:] != sorted_time[:-1]
    group = torch.cumsum(new_group, dim=0) - 1
    group_size = torch.bincount(group, minlength=int(new_group.sum()))
    group_end = torch.cumsum(group_size, dim=0) - 1
    sorted_w = w[index]
    log_weight = torch.log(sorted_w)
    sorted_risk = risk[index]
    cumulative = torch.logcumsumexp(sorted_risk + log_weight, dim=0)
    return _RiskSets(
        index=index,
        risk=sorted_risk,
        log_weight=log_weight,
        weight=sorted_w,
        event=delta[index],
        time=sorted_time,
        group=group,
        group_size=group_size,
        log_risk_set=cumulative[group_end],
    )


def _group_sum(values: torch.Tensor, sets: _RiskSets) -> torch.Tensor:
    """Σ of ``values [n]`` within each tie group → ``[G]``."""
    return values.new_zeros(sets.group_size.shape[0]).index_add(0, sets.group, values)


def _efron_log_denominators(sets: _RiskSets) -> tuple[torch.Tensor, torch.Tensor]:
    """Efron's per-event log-denominators log(R_g − (r/d_g) E_g) and the groups' mean event weights.

    For a group of d tied events D with E = Σ_{i∈D} w_i e^{η_i} and risk-set sum R, the r-th event
    (r = 0..d−1, in sorted order) uses R − (r/d) E; each of these log-terms weighs the mean weight of D.
    """
    events = sets.event
    zero = torch.zeros((), dtype=sets.risk.dtype, device=sets.risk.device)
    scaled = torch.where(events, sets.risk + sets.log_weight, torch.full_like(sets.risk, -torch.inf))
    groups = sets.group_size.shape[0]
    peak = torch.full((groups,), -torch.inf, dtype=scaled.dtype, device=scaled.device).scatter_reduce(
        0, sets.group, scaled, reduce="amax"
    )
    peak = torch.where(torch.isfinite(peak), peak, zero)
    shifted = torch.where(events, torch.exp(scaled - peak[sets.group]), zero)
    event_mass = _group_sum(shifted, sets)  # E_g · e^{−peak_g}
    event_count = _group_sum(events.to(sets.risk.dtype), sets)  # d_g
    event_weight = _group_sum(torch.where(events, sets.weight, zero), sets)
    mean_weight = event_weight / event_count.clamp_min(1)

    count_so_far = torch.cumsum(events.to(sets.risk.dtype), dim=0)
    before_group = (count_so_far - events.to(sets.risk.dtype))[torch.cumsum(sets.group_size, 0) - sets.group_size]
    rank = count_so_far - 1 - before_group[sets.group]  # r for event positions
    fraction = torch.where(events, rank / event_count[sets.group].clamp_min(1), zero)
    log_ratio = torch.log(event_mass.clamp_min(torch.finfo(shifted.dtype).tiny)) + peak - sets.log_risk_set
    log_denominator = sets.log_risk_set[sets.group] + torch.log1p(-fraction * torch.exp(log_ratio[sets.group]))
    return log_denominator, mean_weight[sets.group]


def cox_partial_likelihood(
    risk: torch.Tensor,
    time: torch.Tensor,
    event: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    ties: Ties = "breslow",
    cause: int | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Negative Cox partial log-likelihood ([monograph] eq. 42), Breslow or Efron ties.

    Breslow: −Σ_{i: Δ_i=1} w_i [η_i − log Σ_{j: Y_j ≥ Y_i} w_j e^{η_j}].
    Efron: for each time t with d tied events D (weighted sum E = Σ_{i∈D} w_i e^{η_i}) and risk-set sum R,
    −Σ_{i∈D} w_i η_i + w̄_D Σ_{r=0}^{d−1} log(R − (r/d) E), w̄_D the mean weight of D (as R's ``coxph``).
    Both reduce to the same value without ties. A subject censored at t is in the risk set at t.

    Parameters
    ----------
    risk: ``[N]`` log-hazard ratios η; time: ``[N]``; event: ``[N]`` (0 censored, 1..K or bool; ``cause=k``
    makes other types censored); weight: ``[N]`` sample weights; mask: ``[N]`` False to leave a subject
    out (its values may be NaN).
    reduction:
        "mean" = divided by Σ_{events} w_i (0 without events), "sum", or "none" for the per-subject
        terms ``[N]`` (0 for censored and left-out subjects).
    """
    check_reduction(reduction)
    if ties not in ("breslow", "efron"):
        raise ValueError(f'ties must be "breslow" or "efron", got {ties!r}')
    sets = _risk_sets(risk, time, event, weight, mask, cause)
    zero = torch.zeros((), dtype=risk.dtype, device=risk.device)
    if ties == "breslow":
        log_denominator, denominator_weight = sets.log_risk_set[sets.group], sets.weight
    else:
        log_denominator, denominator_weight = _efron_log_denominators(sets)
    terms = torch.where(
        sets.event, denominator_weight * log_denominator - sets.weight * sets.risk, zero
    )
    if reduction == "none":
        return torch.zeros_like(risk).index_put((sets.index,), terms)
    total = terms.sum()
    if reduction == "sum":
        return total
    events_weight = torch.where(sets.event, sets.weight, zero).sum()
    return total / events_weight.clamp_min(torch.finfo(risk.dtype).tiny)


def breslow_baseline(
    risk: torch.Tensor,
    time: torch.Tensor,
    event: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    cause: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Breslow estimator of the cumulative baseline hazard H_0 for fitted risk scores.

    H_0(t) = Σ_{event times t_k ≤ t} d_k / Σ_{j: Y_j ≥ t_k} w_j e^{η_j}, with d_k the (weighted) number of
    events at t_k. Returns ``(event_times [U], cumulative_hazard [U])``, U distinct event times in
    increasing order; H_0 is a right-continuous step function, 0 before the first event time.
    Then S(t | x) = exp(−H_0(t) e^{η(x)}), see :func:`cox_survival`.
    """
    sets = _risk_sets(risk, time, event, weight, mask, cause)
    zero = torch.zeros((), dtype=risk.dtype, device=risk.device)
    events_weight = _group_sum(torch.where(sets.event, sets.weight, zero), sets)
    has_event = _group_sum(sets.event.to(risk.dtype), sets) > 0
    first_in_group = torch.cumsum(sets.group_size, 0) - sets.group_size
    group_time = sets.time[first_in_group]
    increment = torch.exp(torch.log(events_weight.clamp_min(torch.finfo(risk.dtype).tiny)) - sets.log_risk_set)
    increment = torch.where(has_event, increment, zero)
    # groups run from the latest time to the earliest: flip to accumulate forward in time
    cumulative = torch.cumsum(increment.flip(0), dim=0)
    event_times = group_time.flip(0)
    keep = has_event.flip(0)
    return event_times[keep], cumulative[keep]


def cox_survival(
    risk: torch.Tensor, event_times: torch.Tensor, cumulative_hazard: torch.Tensor, times: torch.Tensor
) -> torch.Tensor:
    """S(t | x_i) = exp(−H_0(t) e^{η_i}) for risk scores ``[N]`` at ``times [T]`` → ``[N, T]``.

    ``event_times`` and ``cumulative_hazard`` are the output of :func:`breslow_baseline`.
    """
    check_floating(risk, "risk")
    check_shape(risk, (None,), "risk")
    check_shape(event_times, (None,), "event_times")
    check_shape(cumulative_hazard, tuple(event_times.shape), "cumulative_hazard")
    times = torch.as_tensor(times, dtype=cumulative_hazard.dtype, device=cumulative_hazard.device).reshape(-1)
    position = torch.searchsorted(event_times.contiguous(), times.contiguous(), right=True)
    padded = torch.cat([cumulative_hazard.new_zeros(1), cumulative_hazard])
    baseline = padded[position]  # [T]
    exponent = baseline.unsqueeze(0) * torch.exp(risk).unsqueeze(1)
    return torch.exp(-torch.where(baseline.unsqueeze(0) > 0, exponent, torch.zeros_like(exponent)))
