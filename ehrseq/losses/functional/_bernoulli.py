"""Bernoulli log-likelihood terms of a hazard from its logit, plain or focal-weighted.

A discrete-time likelihood has two kinds of terms: −log(1 − h) for a step survived and −log h for the
step with the event (h = σ(z)). Each function below returns its term where ``mask`` is True and 0
elsewhere; excluded positions may hold any value (NaN included) — the logit is replaced by −∞
(survival) or +∞ (event) before any transcendental function, where the term and its gradient are 0.

Focal weights (Lin et al., 2017): the term of the observed outcome y is multiplied by α_y (1 − p_y)^γ,
p_y the probability of y: h^γ for a survived step, (1 − h)^γ for the event. They are computed from the
same softplus as the term, so they are finite for every finite logit; ``detach_weights`` treats them
as constants in the backward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _focal(
    terms: torch.Tensor,
    log_other: Callable[[], torch.Tensor],
    gamma: float,
    balance: float | None,
    detach_weights: bool,
) -> torch.Tensor:
    """Weigh −log p_y by b (1 − p_y)^γ, given log(1 − p_y) (computed only when γ ≠ 0)."""
    if gamma != 0:
        modulation = torch.exp(gamma * log_other())
        terms = (modulation.detach() if detach_weights else modulation) * terms
    return terms if balance is None else balance * terms


def survival_nll(
    logits: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 0.0,
    alpha: float | None = None,
    detach_weights: bool = False,
) -> torch.Tensor:
    """−(1 − α) h^γ log(1 − h) where ``mask`` (γ = 0, ``alpha=None``: −log(1 − h) = softplus(z))."""
    z = torch.where(mask, logits, torch.full_like(logits, -torch.inf))
    terms = F.softplus(z)  # 0 at z = −∞
    balance = None if alpha is None else 1.0 - alpha
    return _focal(terms, lambda: z - terms, gamma, balance, detach_weights)  # log h = z − softplus(z)


def event_nll(
    logits: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 0.0,
    alpha: float | None = None,
    detach_weights: bool = False,
) -> torch.Tensor:
    """−α (1 − h)^γ log h where ``mask`` (γ = 0, ``alpha=None``: −log h = softplus(−z))."""
    z = torch.where(mask, logits, torch.full_like(logits, torch.inf))
    terms = F.softplus(-z)  # 0 at z = +∞
    return _focal(terms, lambda: -(terms + z), gamma, alpha, detach_weights)  # log(1 − h) = −softplus(−z) − z
