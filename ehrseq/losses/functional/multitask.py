"""Multi-task combination with learned homoscedastic uncertainty weights (§A7; Kendall et al., 2018)."""

from __future__ import annotations

import torch

from ehrseq.losses.functional._aggregate import Reduction, check_floating, check_reduction, check_shape


def uncertainty_weighted_sum(
    losses: torch.Tensor, log_variances: torch.Tensor, *, reduction: Reduction = "sum"
) -> torch.Tensor:
    """Σ_k [exp(−s_k) L_k + s_k] for task losses L_k ``[K]`` and log-variances s_k = log σ_k² ``[K]``.

    The weight exp(−s_k) of a noisy task shrinks as its learned variance grows, and the +s_k term keeps
    the variances from growing without bound; at the optimum exp(−s_k) = 1/L_k. "sum" gives the total,
    "mean" divides it by K, "none" returns the K weighted terms.
    """
    check_floating(losses, "losses")
    check_shape(losses, (None,), "losses")
    check_shape(log_variances, (losses.shape[0],), "log_variances")
    check_reduction(reduction)
    terms = torch.exp(-log_variances) * losses + log_variances
    if reduction == "none":
        return terms
    return terms.sum() if reduction == "sum" else terms.mean()
