"""Held-out negative log-likelihood of right-censored outcomes under the model's own distribution.

    NLL = −(1/n) Σ_i [Δ_i log f_i(Y_i) + (1 − Δ_i) log S_i(Y_i)].

It is the likelihood every ehrseq distribution defines (a strictly proper score); compare models on it
only when they describe the same outcome (same time unit, continuous densities — a grid head's density
depends on how it interpolates between grid points).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ehrseq.metrics._curves import check_distribution_batch
from ehrseq.metrics._validation import apply_reduction, as_float, check_outcome
from ehrseq.models.distributions.base import SurvivalDistribution


def _log_values(values: Any, used: np.ndarray, name: str) -> np.ndarray:
    arr = as_float(values, name, (used.size,), finite=False)[used]
    if np.any(np.isnan(arr) | (arr == np.inf)):
        raise ValueError(f"{name} must not be NaN or +inf (−inf means probability 0 and gives an infinite NLL)")
    return arr


def held_out_nll(
    time: Any,
    event: Any,
    distribution: SurvivalDistribution | None = None,
    *,
    log_density: Any = None,
    log_survival: Any = None,
    reduction: str = "mean",
) -> float | np.ndarray:
    """Held-out NLL from a distribution (batch shape ``[n]``) or from per-subject log-likelihood terms.

    Parameters
    ----------
    time, event:
        Outcomes ``[n]``.
    distribution:
        The model's predictions; log f and log S are evaluated at each subject's own time.
    log_density, log_survival:
        Alternatively, log f_i(Y_i) and log S_i(Y_i) ``[n]``. Only the entries that are used are read
        (log f for events, log S for censored subjects), so the other entries may hold anything.
    reduction:
        ``"mean"``, ``"sum"`` or ``"none"`` (per-subject −log-likelihood, ``[n]``).
    """
    t, e = check_outcome(time, event)
    if distribution is not None:
        if log_density is not None or log_survival is not None:
            raise ValueError("give either a distribution or log_density/log_survival, not both")
        check_distribution_batch(distribution, t.size, "distribution")
        u = torch.as_tensor(t[:, None], dtype=distribution.dtype, device=distribution.device)
        with torch.no_grad():
            log_density = distribution.log_density(u)[:, 0].detach().cpu().numpy()
            log_survival = distribution.log_survival(u)[:, 0].detach().cpu().numpy()
    terms = np.zeros(t.size)
    for values, used, name in ((log_density, e, "log_density"), (log_survival, ~e, "log_survival")):
        if not np.any(used):
            continue
        if values is None:
            raise ValueError(f"{name} is required: {int(used.sum())} subject(s) need it")
        terms[used] = _log_values(values, used, name)
    if np.any(terms[~e] > 1e-6):
        raise ValueError("log_survival must be <= 0")
    return apply_reduction(-terms, reduction)
