"""Continuous parametric families on the remaining time: log-normal and Weibull.

Both take log-parameters (any real value is valid) and evaluate S and f in log space. At u = 0,
S(0) = 1 exactly; the density there is its limit (0 for the log-normal; for the Weibull 0, 1/λ or +inf
for shapes above, at or below 1).
"""

from __future__ import annotations

import math

import torch
from torch.special import log_ndtr, ndtri

from ehrseq.errors import ShapeError
from ehrseq.models.distributions._math import LOG_SQRT_2PI, log1mexp, log_one_minus_exp_neg, std_normal_cdf
from ehrseq.models.distributions.base import Duration, SurvivalDistribution
from ehrseq.models.distributions.grid import check_parameters


def paired_parameters(first: torch.Tensor, second: torch.Tensor, names: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two floating parameter tensors of the same shape and dtype."""
    check_parameters(first, names[0])
    check_parameters(second, names[1])
    if first.shape != second.shape or first.dtype != second.dtype:
        raise ShapeError(
            f"{names[0]} and {names[1]} must have the same shape and dtype, got {list(first.shape)} "
            f"{first.dtype} and {list(second.shape)} {second.dtype}"
        )
    return first, second


def safe_log_duration(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log u with 0 where u = 0, mask u > 0): the log used by the families, finite-gradient at u = 0."""
    positive = u > 0
    return torch.log(torch.where(positive, u, torch.ones_like(u))), positive


class LogNormal(SurvivalDistribution):
    """log R ~ N(loc, scale²), ``scale = exp(log_scale)``; ``loc`` and ``log_scale`` of shape ``batch``.

    ``loc`` is the log of the median in days. log S(u) = log Φ(−x) with x = (log u − loc)/scale
    (``log_ndtr``: accurate far in both tails); closed-form quantile, median and mean.
    """

    batched_fields = ("loc", "log_scale")

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor) -> None:
        self.loc, self.log_scale = paired_parameters(loc, log_scale, ("loc", "log_scale"))

    @property
    def batch_shape(self) -> torch.Size:
        return self.loc.shape

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def _standardised(self, u: Duration) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        log_u, positive = safe_log_duration(self._durations(u))
        x = (log_u - self.loc.unsqueeze(-1)) / self.scale.unsqueeze(-1)
        return x, log_u, positive

    def log_survival(self, u: Duration) -> torch.Tensor:
        x, _, positive = self._standardised(u)
        return torch.where(positive, log_ndtr(-x), torch.zeros_like(x))

    def log_survival_log_time(self, log_u: torch.Tensor) -> torch.Tensor:
        """log S(eˢ) = log Φ((loc − s)/scale)."""
        return log_ndtr((self.loc.unsqueeze(-1) - self._durations(log_u)) / self.scale.unsqueeze(-1))

    def log_cdf_log_time(self, log_u: torch.Tensor) -> torch.Tensor:
        """log F(eˢ) = log Φ((s − loc)/scale), accurate where F is tiny (no log(1 − S))."""
        return log_ndtr((self._durations(log_u) - self.loc.unsqueeze(-1)) / self.scale.unsqueeze(-1))

    def log_density(self, u: Duration) -> torch.Tensor:
        x, log_u, positive = self._standardised(u)
        value = -0.5 * x * x - LOG_SQRT_2PI - self.log_scale.unsqueeze(-1) - log_u
        return torch.where(positive, value, torch.full_like(value, -math.inf))

    def log_interval_mass(self, lower: Duration, upper: Duration) -> torch.Tensor:
        """log(Φ(x_upper) − Φ(x_lower)), taken from the tail where both probabilities are small."""
        lower, upper = self._interval(lower, upper)
        x_lower = torch.where(lower > 0, self._standardised(lower)[0], torch.full_like(lower, -math.inf))
        finite = torch.isfinite(upper)
        x_upper = self._standardised(torch.where(finite, upper, lower + 1.0))[0]
        return log_normal_interval(x_lower, torch.where(finite, x_upper, torch.full_like(x_upper, math.inf)))

    def quantile(self, q: Duration, iterations: int = 64) -> torch.Tensor:
        """exp(loc + scale·Φ⁻¹(q)) (closed form; ``iterations`` is not used)."""
        q = self._durations(q)
        if torch.any((q <= 0) | (q >= 1)):
            raise ValueError("quantile levels must lie strictly between 0 and 1")
        return torch.exp(self.loc.unsqueeze(-1) + self.scale.unsqueeze(-1) * ndtri(q))

    def median(self) -> torch.Tensor:
        return self.loc.exp()

    def mean(self, upper: float | torch.Tensor | None = None, points: int = 2049) -> torch.Tensor:
        """E[R] = exp(loc + scale²/2), or E[min(R, c)] for a finite ``upper`` c (closed form).

        E[min(R, c)] = e^{loc + scale²/2}·Φ((log c − loc − scale²)/scale) + c·S(c); ``points`` is not used.
        """
        sigma = self.scale
        full = torch.exp(self.loc + 0.5 * sigma * sigma)
        if upper is None:
            return full
        c = torch.as_tensor(upper, dtype=self.dtype, device=self.device).expand(tuple(self.batch_shape))
        if torch.any(c < 0):
            raise ValueError("the upper limit of a restricted mean must be >= 0")
        finite = torch.isfinite(c) & (c > 0)
        log_c = torch.log(torch.where(finite, c, torch.ones_like(c)))
        x = (log_c - self.loc) / sigma
        restricted = full * std_normal_cdf(x - sigma) + torch.where(finite, c, torch.zeros_like(c)) * std_normal_cdf(-x)
        return torch.where(finite, restricted, torch.where(c > 0, full, torch.zeros_like(full)))


def log_normal_interval(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Φ(b) − Φ(a)) for a ≤ b (a may be −∞, b may be +∞), without cancellation in the tails.

    Both above 0: log Φ(−a) + log(1 − Φ(−b)/Φ(−a)); both below 0: log Φ(b) + log(1 − Φ(a)/Φ(b));
    across 0: the difference of two probabilities on either side of ½.
    """
    open_a, open_b = torch.isinf(a), torch.isinf(b)
    a = torch.where(open_a, torch.where(open_b, torch.zeros_like(b), b) - 1.0, a)
    b = torch.where(open_b, a + 1.0, b)
    right, left = a >= 0, b <= 0
    middle = ~(right | left)
    a_r, b_r = torch.where(right, a, torch.zeros_like(a)), torch.where(right, b, torch.ones_like(b))
    upper_tail = log_ndtr(-a_r) + log1mexp((log_ndtr(-b_r) - log_ndtr(-a_r)).clamp_max(0.0))
    a_l, b_l = torch.where(left, a, -torch.ones_like(a)), torch.where(left, b, torch.zeros_like(b))
    lower_tail = log_ndtr(b_l) + log1mexp((log_ndtr(a_l) - log_ndtr(b_l)).clamp_max(0.0))
    a_m, b_m = torch.where(middle, a, -torch.ones_like(a)), torch.where(middle, b, torch.ones_like(b))
    across = torch.log(std_normal_cdf(b_m) - std_normal_cdf(a_m))
    closed = torch.where(right, upper_tail, torch.where(left, lower_tail, across))
    # open ends: P(R > lower) = Φ(−a), P(R ≤ upper) = Φ(b), and the whole line
    return torch.where(open_b, torch.where(open_a, torch.zeros_like(a), log_ndtr(-a)),
                       torch.where(open_a, log_ndtr(b), closed))


def weibull_log_cumulative_hazard(log_u: torch.Tensor, log_scale: torch.Tensor, log_shape: torch.Tensor) -> torch.Tensor:
    """log H(u) = k·(log u − log λ) for u > 0, capped where H itself would overflow the dtype.

    Beyond the cap (H > 1e38 in float32) S = e^{−H} is 0 at any precision; the cap keeps e^{log H} and
    its gradient finite (an overflow there would turn a zero gradient into 0·∞ = NaN).
    """
    cap = math.log(torch.finfo(log_u.dtype).max) - 1.0
    return (log_shape.exp() * (log_u - log_scale)).clamp_max(cap)


def weibull_log_survival(u: torch.Tensor, log_scale: torch.Tensor, log_shape: torch.Tensor) -> torch.Tensor:
    """log S(u) = −(u/λ)^k, exactly 0 at u = 0 (parameters broadcast against ``u``)."""
    log_u, positive = safe_log_duration(u)
    value = -weibull_log_cumulative_hazard(log_u, log_scale, log_shape).exp()
    return torch.where(positive, value, torch.zeros_like(value))


def weibull_log_density(u: torch.Tensor, log_scale: torch.Tensor, log_shape: torch.Tensor) -> torch.Tensor:
    """log f(u) = log k − log λ + (k − 1)(log u − log λ) − (u/λ)^k = log k + log H(u) − log u − H(u); its
    limit at u = 0 (from the parameters alone, broadcast over the durations)."""
    log_u, positive = safe_log_duration(u)
    log_h = weibull_log_cumulative_hazard(log_u, log_scale, log_shape)
    value = (log_shape + log_h) - log_u - log_h.exp()
    return torch.where(positive, value, weibull_log_density_at_zero(log_scale, log_shape))


def weibull_log_density_at_zero(log_scale: torch.Tensor, log_shape: torch.Tensor) -> torch.Tensor:
    """lim_{u→0} log f(u): −inf for k > 1, −log λ for k = 1, +inf for k < 1."""
    return torch.where(log_shape > 0, -math.inf, torch.where(log_shape < 0, math.inf, -log_scale))


def weibull_log_interval_mass(lower: torch.Tensor, upper: torch.Tensor, log_scale: torch.Tensor, log_shape: torch.Tensor) -> torch.Tensor:
    """log P(lower < R ≤ upper) for a Weibull: the hazard increment D = H(upper) − H(lower) is
    H(lower)·expm1(k·log(upper/lower)), or H(upper) when lower = 0 — no difference of cumulative hazards."""
    finite, positive = torch.isfinite(upper), lower > 0
    safe_lower = torch.where(positive, lower, torch.ones_like(lower))
    safe_upper = torch.where(finite, upper, safe_lower)
    shape = log_shape.exp()
    log_h_lower = weibull_log_cumulative_hazard(torch.log(safe_lower), log_scale, log_shape)
    log_h_upper = weibull_log_cumulative_hazard(torch.log(torch.where(safe_upper > 0, safe_upper, torch.ones_like(safe_upper))), log_scale, log_shape)
    growth = torch.expm1(shape * (torch.log(safe_upper) - torch.log(safe_lower)))
    log_d = torch.where(positive, log_h_lower + torch.log(torch.where(growth > 0, growth, torch.ones_like(growth))), log_h_upper)
    log_d = torch.where(positive & (growth <= 0), torch.full_like(log_d, -math.inf), log_d)
    log_s_lower = weibull_log_survival(lower, log_scale, log_shape)
    return torch.where(finite, log_s_lower + log_one_minus_exp_neg(log_d), log_s_lower)


def weibull_quantile(q: torch.Tensor, log_scale: torch.Tensor, log_shape: torch.Tensor) -> torch.Tensor:
    """λ·(−log(1 − q))^{1/k}."""
    return torch.exp(log_scale + torch.log(-torch.log1p(-q)) * torch.exp(-log_shape))


def weibull_log_mean(log_scale: torch.Tensor, log_shape: torch.Tensor) -> torch.Tensor:
    """log E[R] = log λ + log Γ(1 + 1/k)."""
    return log_scale + torch.lgamma(1.0 + torch.exp(-log_shape))


class Weibull(SurvivalDistribution):
    """Weibull with S(u) = exp(−(u/λ)^k), λ = exp(log_scale), k = exp(log_shape); shapes ``batch``.

    Closed-form quantile and mean; the restricted mean E[min(R, c)] uses the generic quadrature.
    """

    batched_fields = ("log_scale", "log_shape")

    def __init__(self, log_scale: torch.Tensor, log_shape: torch.Tensor) -> None:
        self.log_scale, self.log_shape = paired_parameters(log_scale, log_shape, ("log_scale", "log_shape"))

    @property
    def batch_shape(self) -> torch.Size:
        return self.log_scale.shape

    def log_survival(self, u: Duration) -> torch.Tensor:
        return weibull_log_survival(self._durations(u), self.log_scale.unsqueeze(-1), self.log_shape.unsqueeze(-1))

    def log_survival_log_time(self, log_u: torch.Tensor) -> torch.Tensor:
        """log S(eˢ) = −exp(k(s − log λ))."""
        return -weibull_log_cumulative_hazard(
            self._durations(log_u), self.log_scale.unsqueeze(-1), self.log_shape.unsqueeze(-1)
        ).exp()

    def log_density(self, u: Duration) -> torch.Tensor:
        return weibull_log_density(self._durations(u), self.log_scale.unsqueeze(-1), self.log_shape.unsqueeze(-1))

    def log_interval_mass(self, lower: Duration, upper: Duration) -> torch.Tensor:
        """log(S(lower) − S(upper)) = log S(lower) + log(1 − e^{−D}), D = H(lower)·((upper/lower)^k − 1)."""
        lower, upper = self._interval(lower, upper)
        return weibull_log_interval_mass(lower, upper, self.log_scale.unsqueeze(-1), self.log_shape.unsqueeze(-1))

    def quantile(self, q: Duration, iterations: int = 64) -> torch.Tensor:
        """λ(−log(1 − q))^{1/k} (closed form; ``iterations`` is not used)."""
        q = self._durations(q)
        if torch.any((q <= 0) | (q >= 1)):
            raise ValueError("quantile levels must lie strictly between 0 and 1")
        return weibull_quantile(q, self.log_scale.unsqueeze(-1), self.log_shape.unsqueeze(-1))

    def mean(self, upper: float | None = None, points: int = 2049) -> torch.Tensor:
        """λΓ(1 + 1/k); with a finite ``upper`` the generic restricted mean (``points`` trapezoid nodes)."""
        if upper is None or math.isinf(upper):
            return weibull_log_mean(self.log_scale, self.log_shape).exp()
        return super().mean(upper, points)
