"""The visit-indexed discrete-time head as a distribution over the number of further visit intervals."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ehrseq.models.distributions._math import (
    log_one_minus_exp_neg,
    log_positive,
    log_softplus,
    one_minus_exp_neg_over,
)
from ehrseq.models.distributions.base import Duration, SurvivalDistribution
from ehrseq.models.distributions.grid import check_parameters


class VisitHazard(SurvivalDistribution):
    """h_m = σ(z_m) = P(event before the next visit | no event yet, history ≤ m); ``logits`` ``[*batch]``.

    **Time unit: visit intervals, not days.** The head only states the risk of the event before the
    next visit. To be a distribution it holds that hazard constant for every later interval: the number
    N of further intervals until the event is geometric, P(N > j) = (1 − h)^j, and between whole
    intervals log S is linear (constant hazard −log(1 − h) = softplus(z) per interval):

        S(u) = (1 − h)^u = exp(−u·softplus(z)),   u ≥ 0 in visit intervals.

    Limits, by construction:

    * S(1) = 1 − h is the head's own prediction; S(j) for j ≥ 2 is an extrapolation — the model itself
      re-estimates the hazard at every visit, with information not available now;
    * visits are not equally spaced, so u cannot be converted to days without a model of the gaps:
      day-based quantities (risk at 365 days, C-index or Brier score at a horizon in days) must not be
      computed from this object;
    * ``mean()`` (1/softplus(z)) and ``quantile`` are in visit intervals under the same extrapolation.

    :meth:`next_visit_risk` returns h itself.
    """

    batched_fields = ("logits",)

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = check_parameters(logits, "logits")

    @property
    def batch_shape(self) -> torch.Size:
        return self.logits.shape

    def rate(self) -> torch.Tensor:
        """The constant hazard per visit interval, −log(1 − h) = softplus(z)."""
        return F.softplus(self.logits)

    def next_visit_risk(self) -> torch.Tensor:
        """h = P(event before the next visit), shape ``batch_shape``."""
        return torch.sigmoid(self.logits)

    def log_next_visit_risk(self) -> torch.Tensor:
        """log h = logsigmoid(z)."""
        return F.logsigmoid(self.logits)

    def log_survival(self, u: Duration) -> torch.Tensor:
        return -self._durations(u) * self.rate().unsqueeze(-1)

    def log_density(self, u: Duration) -> torch.Tensor:
        return log_softplus(self.logits).unsqueeze(-1) + self.log_survival(u)

    def log_interval_mass(self, lower: Duration, upper: Duration) -> torch.Tensor:
        """log(S(lower) − S(upper)) = log S(lower) + log(1 − e^{−rate·(upper − lower)})."""
        lower, upper = self._interval(lower, upper)
        finite = torch.isfinite(upper)
        span = log_positive(torch.where(finite, upper, lower + 1.0) - lower)
        log_s = self.log_survival(lower)
        return torch.where(finite, log_s + log_one_minus_exp_neg(log_softplus(self.logits).unsqueeze(-1) + span), log_s)

    def quantile(self, q: Duration, iterations: int = 64) -> torch.Tensor:
        """−log(1 − q)/softplus(z) visit intervals (closed form; ``iterations`` is not used)."""
        q = self._durations(q)
        if torch.any((q <= 0) | (q >= 1)):
            raise ValueError("quantile levels must lie strictly between 0 and 1")
        return -torch.log1p(-q) / self.rate().unsqueeze(-1)

    def mean(self, upper: float | None = None, points: int = 2049) -> torch.Tensor:
        """1/softplus(z) visit intervals, or ∫_0^upper S (closed form; ``points`` is not used)."""
        rate = self.rate()
        if upper is None or upper == float("inf"):
            return 1.0 / rate
        if upper < 0:
            raise ValueError("the upper limit of a restricted mean must be >= 0")
        return upper * one_minus_exp_neg_over(rate * upper)
