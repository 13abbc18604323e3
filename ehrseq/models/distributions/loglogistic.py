"""The log-logistic family: an accelerated-failure-time model with logistic noise on log time.

log R = loc + σ·ε with ε standard logistic (σ = exp(log_scale)), i.e. with z = (log u − loc)/σ,
α = e^loc (the median) and β = 1/σ (the shape):

* S(u) = 1/(1 + (u/α)^β) = sigmoid(−z),  F(u) = sigmoid(z);
* f(u) = sigmoid(z)·sigmoid(−z)/(σu),  h(u) = f/S = sigmoid(z)/(σu);
* quantile u_q = exp(loc + σ·logit(q)), median α;
* mean α·πσ/sin(πσ) for σ < 1 (infinite for σ ≥ 1: the tail S ~ (u/α)^{−β} is heavy).

Unlike the Weibull, the hazard rises then falls for β > 1 (peak at u = α(β − 1)^{1/β}), and it decreases
from +inf (β < 1) or 1/α (β = 1). Everything is computed in log space from z (``logsigmoid``: accurate in both tails, unlike ``softplus``,
which drops its correction beyond 20),
so S, f, h and the interval masses keep their relative precision far in both tails.

The Survival-CRPS tail ∫_a^∞ S(u)² du is finite only for σ < 2 (S² ~ u^{−2/σ}); the generic CRPS integrates
up to y·8^20 (:mod:`ehrseq.losses.functional.crps`), so larger σ give a finite but truncated value.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ehrseq.models.distributions._math import log1mexp
from ehrseq.models.distributions.base import Duration, SurvivalDistribution
from ehrseq.models.distributions.parametric import paired_parameters, safe_log_duration


def _log_expm1(d: torch.Tensor) -> torch.Tensor:
    """log(eᵈ − 1) for d ≥ 0 (−inf at d = 0, with a zero gradient), without overflow for large d."""
    return d + log1mexp(-d)


class LogLogistic(SurvivalDistribution):
    """log R = loc + σ·(standard logistic), ``σ = exp(log_scale)``; ``loc`` and ``log_scale`` of shape ``batch``.

    ``loc`` is the log of the median in days. Closed forms for S, f, h, the interval mass, the quantile, the
    median and the mean (see the module docstring). At u = 0, S(0) = 1 and the density is its limit: 0 for
    σ < 1, 1/α for σ = 1, +inf for σ > 1.
    """

    batched_fields = ("loc", "log_scale")

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor) -> None:
        self.loc, self.log_scale = paired_parameters(loc, log_scale, ("loc", "log_scale"))

    @property
    def batch_shape(self) -> torch.Size:
        return self.loc.shape

    @property
    def scale(self) -> torch.Tensor:
        """σ, the scale of log R (1/σ is the shape β of the usual (α, β) parametrisation)."""
        return self.log_scale.exp()

    # ------------------------------------------------------------------ log time
    def _z(self, log_u: torch.Tensor) -> torch.Tensor:
        return (log_u - self.loc.unsqueeze(-1)) / self.scale.unsqueeze(-1)

    def _standardised(self, u: Duration) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z, log u, u > 0) with log u = 0 where u = 0 (finite gradients there)."""
        log_u, positive = safe_log_duration(self._durations(u))
        return self._z(log_u), log_u, positive

    def log_survival_log_time(self, log_u: torch.Tensor) -> torch.Tensor:
        """log S(eˢ) = logsigmoid((loc − s)/σ)."""
        return F.logsigmoid(-self._z(self._durations(log_u)))

    def log_cdf_log_time(self, log_u: torch.Tensor) -> torch.Tensor:
        """log F(eˢ) = logsigmoid((s − loc)/σ), accurate where F is tiny."""
        return F.logsigmoid(self._z(self._durations(log_u)))

    # ------------------------------------------------------------------ S, f, h
    def _density_at_zero(self) -> torch.Tensor:
        """lim_{u→0} log f(u) (= lim log h(u)): −inf for σ < 1, −loc for σ = 1, +inf for σ > 1."""
        log_scale = self.log_scale.unsqueeze(-1)
        return torch.where(log_scale < 0, -math.inf, torch.where(log_scale > 0, math.inf, -self.loc.unsqueeze(-1)))

    def log_survival(self, u: Duration) -> torch.Tensor:
        z, _, positive = self._standardised(u)
        return torch.where(positive, F.logsigmoid(-z), torch.zeros_like(z))

    def log_density(self, u: Duration) -> torch.Tensor:
        """log f(u) = logsigmoid(z) + logsigmoid(−z) − log σ − log u."""
        z, log_u, positive = self._standardised(u)
        value = F.logsigmoid(z) + F.logsigmoid(-z) - self.log_scale.unsqueeze(-1) - log_u
        return torch.where(positive, value, self._density_at_zero().expand_as(value))

    def log_hazard(self, u: Duration) -> torch.Tensor:
        """log h(u) = logsigmoid(z) − log σ − log u."""
        z, log_u, positive = self._standardised(u)
        value = F.logsigmoid(z) - self.log_scale.unsqueeze(-1) - log_u
        return torch.where(positive, value, self._density_at_zero().expand_as(value))

    def log_likelihood(self, u: Duration, observed: torch.Tensor) -> torch.Tensor:
        """log f(u) where ``observed``, else log S(u), from one z."""
        z, log_u, positive = self._standardised(u)
        log_s = F.logsigmoid(-z)
        log_f = F.logsigmoid(z) + log_s - self.log_scale.unsqueeze(-1) - log_u
        log_f = torch.where(positive, log_f, self._density_at_zero().expand_as(log_f))
        return torch.where(observed, log_f, torch.where(positive, log_s, torch.zeros_like(log_s)))

    def log_interval_mass(self, lower: Duration, upper: Duration) -> torch.Tensor:
        """log(F(b) − F(a)) = logsigmoid(z_a) + log(e^d − 1) + logsigmoid(−z_b), d = (log b − log a)/σ:
        no difference of probabilities (log F(b) from 0, log S(a) to infinity)."""
        lower, upper = self._interval(lower, upper)
        finite = torch.isfinite(upper)
        log_a, from_positive = safe_log_duration(lower)
        to_positive = finite & (upper > 0)
        log_b = torch.log(torch.where(to_positive, upper, torch.ones_like(upper)))
        z_a, z_b = self._z(log_a), self._z(log_b)
        both = from_positive & to_positive
        d = torch.where(both, (log_b - log_a) / self.scale.unsqueeze(-1), torch.ones_like(log_a))
        between = F.logsigmoid(z_a) + _log_expm1(d) + F.logsigmoid(-z_b)
        from_zero = torch.where(to_positive, F.logsigmoid(z_b), torch.full_like(z_b, -math.inf))
        to_infinity = torch.where(from_positive, F.logsigmoid(-z_a), torch.zeros_like(z_a))
        return torch.where(finite, torch.where(from_positive, between, from_zero), to_infinity)

    # ------------------------------------------------------------------ summaries
    def quantile(self, q: Duration, iterations: int = 64) -> torch.Tensor:
        """exp(loc + σ·logit(q)) (closed form; ``iterations`` is not used)."""
        q = self._durations(q)
        if torch.any((q <= 0) | (q >= 1)):
            raise ValueError("quantile levels must lie strictly between 0 and 1")
        return torch.exp(self.loc.unsqueeze(-1) + self.scale.unsqueeze(-1) * (torch.log(q) - torch.log1p(-q)))

    def median(self) -> torch.Tensor:
        return self.loc.exp()

    def mean(self, upper: float | None = None, points: int = 2049) -> torch.Tensor:
        """E[R] = α·πσ/sin(πσ) for σ < 1, +inf for σ ≥ 1; with a finite ``upper`` the generic restricted mean
        (``points`` trapezoid nodes)."""
        if upper is None or math.isinf(upper):
            sigma = self.scale
            finite = sigma < 1
            value = self.loc.exp() / torch.sinc(torch.where(finite, sigma, torch.zeros_like(sigma)))
            return torch.where(finite, value, torch.full_like(value, math.inf))
        return super().mean(upper, points)
