"""Properties every loss of the discrete-time catalogue must have, checked on all of them.

* finite value and finite gradients for logits anywhere in [−50, 50] (extremes included);
* padding invariance: appending padded visits and fully padded patients holding NaN changes neither
  the loss nor the gradients of the real entries (and gives zero gradients to the padding);
* permutation invariance over the batch (pairwise losses included);
* ``torch.autograd.gradcheck`` in float64.

The random batches built here (``random_batch``) are also used by the brute-force reference tests of
the other ``test_losses_*`` files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ehrseq.losses.functional as LF

NAN = float("nan")



@dataclass
class Batch:
    """Labels of a random padded batch (float64); ``bin`` is on the grid τ_l = 2l (κ = ⌈R/2⌉ − 1, at most L)."""

    mask: torch.Tensor
    event: torch.Tensor
    event_visit: torch.Tensor
    remaining: torch.Tensor
    bin: torch.Tensor
    weight: torch.Tensor
    num_bins: int
    generator: torch.Generator = field(repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.mask.shape)

    def logits(self, *trailing: int, scale: float = 3.0, padding: float = NAN) -> torch.Tensor:
        values = scale * torch.randn(*self.shape, *trailing, generator=self.generator, dtype=torch.float64)
        real = self.mask.view(*self.shape, *([1] * len(trailing)))
        return torch.where(real, values, torch.full_like(values, padding))


def random_batch(
    seed: int, batch_size: int = 6, visits: int = 5, num_bins: int = 4, num_causes: int = 1, empty_patients: bool = True
) -> Batch:
    """Random lengths (0 = fully padded patient when ``empty_patients``), events, tied integer times."""
    g = torch.Generator().manual_seed(seed)
    low = 0 if empty_patients else 1
    lengths = torch.randint(low, visits + 1, (batch_size,), generator=g)
    lengths[0] = visits
    mask = torch.arange(visits).unsqueeze(0) < lengths.unsqueeze(1)
    event = torch.randint(0, num_causes + 1, (batch_size,), generator=g)
    event_visit = (lengths - 1).clamp(min=0)
    remaining = torch.randint(1, 2 * num_bins + 3, (batch_size, visits), generator=g).to(torch.float64)
    grid_bin = (torch.ceil(remaining / 2) - 1).clamp(max=num_bins).long()
    weight = 0.5 + 1.5 * torch.rand(batch_size, generator=g, dtype=torch.float64)
    return Batch(
        mask=mask,
        event=event,
        event_visit=event_visit,
        remaining=torch.where(mask, remaining, torch.full_like(remaining, NAN)),
        bin=torch.where(mask, grid_bin, torch.full_like(grid_bin, -1)),
        weight=weight,
        num_bins=num_bins,
        generator=g,
    )


# --------------------------------------------------------------------------- cases
# A case builds (function, inputs) from a batch. ``inputs`` maps argument name to (tensor, kind, fill):
# kind "visit" = [B, M, ...], "patient" = [B, ...], "position" = [M]; fill = value of padding.


@dataclass
class Case:
    name: str
    build: Callable[[Batch, float], tuple[Callable[..., torch.Tensor], dict[str, tuple[torch.Tensor, str, object]]]]
    differentiable: tuple[str, ...]


def _visit_labels(b: Batch) -> dict:
    return {
        "event": (b.event, "patient", 1),
        "event_visit": (b.event_visit, "patient", 0),
        "mask": (b.mask, "visit", False),
    }


def _grid_labels(b: Batch) -> dict:
    return {"bin": (b.bin, "visit", -1), "event": (b.event, "patient", 1), "mask": (b.mask, "visit", False)}


def _weight(b: Batch) -> dict:
    return {"weight": (b.weight, "patient", 2.0)}


def _logits(b: Batch, scale: float, *trailing: int) -> tuple[torch.Tensor, str, float]:
    return (b.logits(*trailing, scale=scale), "visit", NAN)


def _last_visit(b: Batch, values: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(b.shape[0])
    return torch.where(b.mask.any(1), values[rows, b.event_visit], torch.full((b.shape[0],), NAN, dtype=values.dtype))


def _case_discrete(b, s):
    weights = torch.linspace(0.5, 2.0, b.shape[1], dtype=torch.float64)
    return (
        lambda **k: LF.discrete_time_nll(**k, censored_survives_last=True),
        {"logits": _logits(b, s), **_visit_labels(b), **_weight(b), "time_weights": (weights, "position", 7.0)},
    )


def _case_logistic(b, s):
    weights = torch.linspace(0.5, 2.0, b.num_bins, dtype=torch.float64)
    return (
        lambda **k: LF.logistic_hazard_nll(**k, bin_weights=weights),
        {"logits": _logits(b, s, b.num_bins), **_grid_labels(b), **_weight(b)},
    )


def _case_focal_visit(b, s):
    return (
        lambda **k: LF.discrete_time_focal_loss(**k, gamma=2.0, alpha=0.3),
        {"logits": _logits(b, s), **_visit_labels(b), **_weight(b)},
    )


def _case_focal_grid(b, s):
    return (
        lambda **k: LF.logistic_hazard_focal_loss(**k, gamma=1.5, alpha=None, visit_weighting="visit"),
        {"logits": _logits(b, s, b.num_bins), **_grid_labels(b), **_weight(b)},
    )


def _case_pmf(b, s):
    return (
        lambda **k: LF.pmf_nll(**k, num_causes=2),
        {"logits": _logits(b, s, 2 * b.num_bins + 1), **_grid_labels(b), "event": (b.event.clamp(max=2), "patient", 2),
         **_weight(b)},
    )


def _ranking_inputs(b, s):
    return {
        "logits": _logits(b, s, 2 * b.num_bins + 1),
        **_grid_labels(b),
        "event": (b.event.clamp(max=2), "patient", 2),
        "remaining": (b.remaining, "visit", NAN),
        **_weight(b),
    }


def _case_deephit_last(b, s):
    inputs = _ranking_inputs(b, s)
    inputs["event_visit"] = (b.event_visit, "patient", 0)
    return lambda **k: LF.deephit_ranking_loss(**k, num_causes=2, sigma=0.5), inputs


def _case_deephit_visit(b, s):
    eta = torch.tensor([1.0, 0.5], dtype=torch.float64)
    return (
        lambda **k: LF.deephit_ranking_loss(**k, num_causes=2, sigma=0.5, pairs="visit", cause_weights=eta),
        _ranking_inputs(b, s),
    )


def _case_calibration_grid(b, s):
    return LF.logistic_hazard_calibration, {"logits": _logits(b, s, b.num_bins), **_grid_labels(b), **_weight(b)}


def _case_calibration_visit(b, s):
    return LF.discrete_time_calibration, {"logits": _logits(b, s), **_visit_labels(b), **_weight(b)}


def _case_ranking(b, s):
    risk = _last_visit(b, b.logits(scale=s))
    return (
        lambda **k: LF.ranking_loss(**k, temperature=0.7),
        {
            "risk": (risk, "patient", NAN),
            "time": (_last_visit(b, b.remaining), "patient", NAN),
            "event": (b.event, "patient", 1),
            "mask": (b.mask.any(1), "patient", False),
            **_weight(b),
        },
    )


def _case_contrastive(b, s, positives="sum"):
    return (
        lambda **k: LF.supervised_contrastive_loss(**k, temperature=0.3, positives=positives),
        {"states": _logits(b, s, 3), **_visit_labels(b), **_weight(b)},
    )


def _case_smooth(b, s):
    inputs = {"logits": _logits(b, s, b.num_bins), "mask": (b.mask, "visit", False), **_weight(b)}
    return LF.smooth_hazard_penalty, inputs


def _case_logit_normal(b, s):
    return (
        LF.logit_normal_hazard_nll,
        {"mean_logits": _logits(b, s), "log_scale": (b.logits(scale=1.0), "visit", NAN), **_visit_labels(b),
         **_weight(b)},
    )


def _case_next_numeric(b, s):
    numeric = b.logits(3)
    missing = torch.rand(numeric.shape, generator=b.generator) < 0.3
    return LF.next_visit_numeric_loss, {
        "prediction": _logits(b, s, 3),
        "numeric": (torch.where(missing, torch.full_like(numeric, NAN), numeric), "visit", NAN),
        "numeric_missing": (missing, "visit", True),
        "mask": (b.mask, "visit", False),
        **_weight(b),
    }


def _case_next_codes(b, s):
    codes = torch.rand(*b.shape, 5, generator=b.generator) < 0.3
    return LF.next_visit_code_loss, {
        "logits": _logits(b, s, 5),
        "codes": (codes, "visit", True),
        "mask": (b.mask, "visit", False),
        **_weight(b),
    }


def _case_cox(b, s, ties="breslow"):
    return (
        lambda **k: LF.cox_partial_likelihood(**k, ties=ties),
        {
            "risk": (_last_visit(b, b.logits(scale=s)), "patient", NAN),
            "time": (_last_visit(b, b.remaining), "patient", NAN),
            "event": (b.event, "patient", 1),
            "mask": (b.mask.any(1), "patient", False),
            **_weight(b),
        },
    )


CASES = [
    Case("discrete_time_nll", _case_discrete, ("logits",)),
    Case("logistic_hazard_nll", _case_logistic, ("logits",)),
    Case("discrete_time_focal", _case_focal_visit, ("logits",)),
    Case("logistic_hazard_focal", _case_focal_grid, ("logits",)),
    Case("pmf_nll", _case_pmf, ("logits",)),
    Case("deephit_ranking_last", _case_deephit_last, ("logits",)),
    Case("deephit_ranking_visit", _case_deephit_visit, ("logits",)),
    Case("calibration_grid", _case_calibration_grid, ("logits",)),
    Case("calibration_visit", _case_calibration_visit, ("logits",)),
    Case("ranking", _case_ranking, ("risk",)),
    Case("contrastive_sum", _case_contrastive, ("states",)),
    Case("contrastive_mean", lambda b, s: _case_contrastive(b, s, "mean"), ("states",)),
    Case("smooth_hazard", _case_smooth, ("logits",)),
    Case("logit_normal", _case_logit_normal, ("mean_logits", "log_scale")),
    Case("next_visit_numeric", _case_next_numeric, ("prediction",)),
    Case("next_visit_codes", _case_next_codes, ("logits",)),
    Case("cox_breslow", _case_cox, ("risk",)),
    Case("cox_efron", lambda b, s: _case_cox(b, s, "efron"), ("risk",)),
]
IDS = [case.name for case in CASES]


def _run(case: Case, fn: Callable, inputs: dict, reduction: str = "mean") -> tuple[torch.Tensor, dict]:
    values = {
        name: tensor.detach().clone().requires_grad_() if name in case.differentiable else tensor
        for name, (tensor, _, _) in inputs.items()
    }
    loss = fn(**values, reduction=reduction)
    grads = torch.autograd.grad(loss, [values[n] for n in case.differentiable], allow_unused=True)
    return loss.detach(), {
        n: (g if g is not None else torch.zeros_like(values[n])) for n, g in zip(case.differentiable, grads)
    }


def _pad(inputs: dict, extra_visits: int, extra_patients: int) -> dict:
    """Append padded visits (dim 1 of visit tensors) and fully padded patients (dim 0)."""
    padded = {}
    for name, (tensor, kind, fill) in inputs.items():
        if kind == "position":
            tensor = torch.cat([tensor, torch.full((extra_visits,), fill, dtype=tensor.dtype)])
        if kind == "visit":
            shape = list(tensor.shape)
            shape[1] = extra_visits
            tensor = torch.cat([tensor, torch.full(shape, fill, dtype=tensor.dtype)], dim=1)
        if kind in ("visit", "patient"):
            shape = list(tensor.shape)
            shape[0] = extra_patients
            tensor = torch.cat([tensor, torch.full(shape, fill, dtype=tensor.dtype)], dim=0)
        padded[name] = (tensor, kind, fill)
    return padded


def _permute(inputs: dict, order: torch.Tensor) -> dict:
    return {
        name: (tensor[order] if kind in ("visit", "patient") else tensor, kind, fill)
        for name, (tensor, kind, fill) in inputs.items()
    }


def _extreme(tensor: torch.Tensor, g: torch.Generator, mode: int) -> torch.Tensor:
    """Logits in [−50, 50]: uniform, or only the extremes ±50, keeping NaN padding."""
    if mode == 0:
        values = 100 * torch.rand(tensor.shape, generator=g, dtype=tensor.dtype) - 50
    else:
        values = 50.0 * torch.where(torch.rand(tensor.shape, generator=g) < 0.5, 1.0, -1.0).to(tensor.dtype)
    return torch.where(torch.isnan(tensor), tensor, values)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), mode=st.sampled_from([0, 1]))
def test_finite_values_and_gradients_for_extreme_logits(case, seed, mode):
    batch = random_batch(seed)
    fn, inputs = case.build(batch, 1.0)
    g = torch.Generator().manual_seed(seed)
    for name in case.differentiable:
        tensor, kind, fill = inputs[name]
        inputs[name] = (_extreme(tensor, g, mode), kind, fill)
    for reduction in ("mean", "sum"):
        loss, grads = _run(case, fn, inputs, reduction)
        assert torch.isfinite(loss), (case.name, reduction)
        for name, grad in grads.items():
            assert torch.all(torch.isfinite(grad)), (case.name, name)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), extra_visits=st.integers(0, 3), extra_patients=st.integers(0, 2))
def test_padding_with_nan_changes_nothing(case, seed, extra_visits, extra_patients):
    batch = random_batch(seed)
    fn, inputs = case.build(batch, 3.0)
    padded = _pad(inputs, extra_visits, extra_patients)
    b, m = batch.shape
    for reduction in ("mean", "sum"):
        loss, grads = _run(case, fn, inputs, reduction)
        padded_loss, padded_grads = _run(case, fn, padded, reduction)
        torch.testing.assert_close(padded_loss, loss, rtol=1e-10, atol=1e-12)
        for name, grad in grads.items():
            kind = inputs[name][1]
            padded_grad = padded_grads[name]
            real = padded_grad[:b, :m] if kind == "visit" else padded_grad[:b]
            torch.testing.assert_close(real, grad, rtol=1e-10, atol=1e-12)
            assert torch.all(padded_grad[b:] == 0)
            if kind == "visit":
                assert torch.all(padded_grad[:, m:] == 0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_permuting_patients_changes_nothing(case, seed):
    batch = random_batch(seed)
    fn, inputs = case.build(batch, 3.0)
    order = torch.randperm(batch.shape[0], generator=torch.Generator().manual_seed(seed))
    for reduction in ("mean", "sum"):
        loss, grads = _run(case, fn, inputs, reduction)
        permuted_loss, permuted_grads = _run(case, fn, _permute(inputs, order), reduction)
        torch.testing.assert_close(permuted_loss, loss, rtol=1e-10, atol=1e-12)
        for name, grad in grads.items():
            torch.testing.assert_close(permuted_grads[name], grad[order], rtol=1e-10, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradcheck_float64(case):
    batch = random_batch(7, batch_size=4, visits=3, num_bins=2)
    fn, inputs = case.build(batch, 1.0)
    fixed = {}
    variables = []
    for name, (tensor, _, _) in inputs.items():
        if name in case.differentiable:
            variables.append(torch.nan_to_num(tensor, nan=0.25).detach().requires_grad_())
        else:
            fixed[name] = tensor

    def loss(*args):
        return fn(**dict(zip(case.differentiable, args)), **fixed)

    assert torch.autograd.gradcheck(loss, tuple(variables), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_uncertainty_weighted_sum_gradcheck_and_extremes():
    losses = torch.tensor([0.3, 2.0, 5.0], dtype=torch.float64, requires_grad=True)
    log_var = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(LF.uncertainty_weighted_sum, (losses, log_var))
    extreme = torch.tensor([-50.0, 50.0, 0.0], dtype=torch.float64, requires_grad=True)
    value = LF.uncertainty_weighted_sum(losses, extreme)
    value.backward()
    assert torch.isfinite(value) and torch.all(torch.isfinite(extreme.grad))
