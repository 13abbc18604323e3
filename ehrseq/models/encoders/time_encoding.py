"""Continuous-time encoding of durations in days (visit time since origin, gap since the previous visit).

A duration x (days, any sign: visits before a user-chosen origin have x < 0) is encoded as

    φ(x) = [ sign(x)·log1p(|x|),  sin(ω_1 x), …, sin(ω_n x),  cos(ω_1 x), …, cos(ω_n x) ]   (1 + 2n values)

* the signed log carries the magnitude on a scale-free axis (a week and a decade are both visible,
  and it is monotone, so "how long ago" never aliases);
* the sinusoids of the *raw* days carry fine timing: ω_i = 2π / P_i with periods P_i spaced
  geometrically from ``max_period`` down to ``min_period`` (defaults 10 years … 1 day). Because
  sin/cos(ω(x + s)) is a rotation of sin/cos(ωx), a dot product of two encodings depends on the time
  *difference* — attention can express "visits about a year apart" without a position index.

The frequencies are fixed by default (a buffer rebuilt from the configuration); with
``learnable=True`` they are parameters, stored as log ω (so they stay positive) and initialised at
the geometric grid. Features are computed in at least float32 whatever the surrounding autocast
or module dtype: sin(ωx) of thousands of days is meaningless in 16-bit floats.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def signed_log1p(x: torch.Tensor) -> torch.Tensor:
    """sign(x)·log1p(|x|): odd, monotone, ≈ x near 0 and ≈ log|x| for large |x|."""
    return torch.sign(x) * torch.log1p(x.abs())


def geometric_angular_frequencies(n: int, min_period: float, max_period: float) -> torch.Tensor:
    """ω_i = 2π / P_i, ``[n]`` float64, with P_i geometric from ``max_period`` (i = 0) to ``min_period``."""
    periods = torch.logspace(math.log10(max_period), math.log10(min_period), n, dtype=torch.float64)
    return 2 * math.pi / periods


def time_features(x: torch.Tensor, angular_frequencies: torch.Tensor) -> torch.Tensor:
    """φ(x) for durations ``x [*S]`` and frequencies ``[n]`` → ``[*S, 1 + 2n]`` (see module docstring)."""
    phase = x.unsqueeze(-1) * angular_frequencies.to(x.dtype)
    return torch.cat([signed_log1p(x).unsqueeze(-1), torch.sin(phase), torch.cos(phase)], dim=-1)


class TimeEncoding(nn.Module):
    """Module form of :func:`time_features` with fixed or learnable frequencies.

    ``forward(x [*S]) -> [*S, output_dim]`` with ``output_dim = 1 + 2·n_frequencies``, in
    ``promote(x.dtype, float32)``.
    """

    def __init__(self, n_frequencies: int, min_period: float, max_period: float, learnable: bool = False) -> None:
        super().__init__()
        self.output_dim = 1 + 2 * n_frequencies
        log_frequency = geometric_angular_frequencies(n_frequencies, min_period, max_period).log().float()
        if learnable:
            self.log_frequency = nn.Parameter(log_frequency)
        else:
            self.register_buffer("log_frequency", log_frequency, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        return time_features(x.to(dtype), self.log_frequency.to(dtype).exp())
