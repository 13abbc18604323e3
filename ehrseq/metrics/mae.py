"""Mean absolute error of predicted event times under censoring (hinge, margin, pseudo-observation).

Events contribute |Y_i − T̂_i|. A censored subject's error depends on ``method``:

* ``"hinge"``: max(0, Y_i − T̂_i) — only predictions before the censoring time are penalised;
* ``"margin"`` (Haider et al. 2020): |T_i^margin − T̂_i| with the best guess
  T^margin = Y + ∫_Y^∞ S_KM(u) du / S_KM(Y) = E_KM[T | T > Y];
* ``"pseudo_obs"`` (Qi et al. 2023): |T_i^PO − T̂_i| with the jackknife pseudo-observation
  T^PO = (N + 1) ∫_0^∞ S_KM+i − N ∫_0^∞ S_KM, KM+i the Kaplan–Meier estimate of the N training
  outcomes plus the censored test subject i (the form used in SurvivalEVAL).

S_KM is fitted on the **training** outcomes (:class:`~ehrseq.metrics.KaplanMeier`). Its area needs a
tail when the last training time t_L is censored (S_KM(t_L) = s_L > 0): the curve continues on the
line through (0, 1) and (t_L, s_L) down to 0 at t_L / (1 − s_L) (Haider et al. 2020), so the tail adds
t_L s_L² / (2 (1 − s_L)). Where S_KM(Y) = 0 the margin best guess is Y itself.

With ``weighted=True`` (default for the margin method, as Haider et al. propose) a censored subject
weighs 1 − S_KM(Y_i) and the result is Σ w_i err_i / Σ w_i.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ehrseq.metrics._curves import check_distribution_batch
from ehrseq.metrics._validation import as_float, check_choice, check_outcome
from ehrseq.metrics.kaplan_meier import KaplanMeier
from ehrseq.models.distributions.base import SurvivalDistribution

METHODS = ("hinge", "margin", "pseudo_obs")


class _ExtendedKM:
    """Training Kaplan–Meier curve with the linear tail described in the module docstring."""

    def __init__(self, km: KaplanMeier) -> None:
        self.km = km
        self.times, self.values = np.asarray(km.times), np.asarray(km.survival_values)
        self.last_time, self.last_value = float(self.times[-1]), float(self.values[-1])
        if self.last_value >= 1.0:
            raise ValueError("the training Kaplan-Meier curve has no event: its mean and tail are undefined")
        self.zero_time = self.last_time / (1.0 - self.last_value)
        widths = np.diff(self.times)
        # step area from 0 to each training time
        self.area_to = self.times[0] + np.concatenate(([0.0], np.cumsum(self.values[:-1] * widths)))

    def survival(self, y: np.ndarray) -> np.ndarray:
        step = self.km.survival(np.minimum(y, self.last_time))
        span = self.zero_time - self.last_time
        linear = self.last_value * np.clip(self.zero_time - y, 0.0, None) / span if span > 0 else np.zeros_like(y)
        return np.where(y < self.last_time, step, linear)

    def area_beyond(self, y: np.ndarray) -> np.ndarray:
        """∫_y^∞ S(u) du."""
        index = np.searchsorted(self.times, y, side="right") - 1
        safe = np.maximum(index, 0)
        area_to_y = np.where(index >= 0, self.area_to[safe] + self.values[safe] * (y - self.times[safe]), y)
        step_part = np.where(y < self.last_time, self.area_to[-1] - area_to_y, 0.0)
        start = np.maximum(y, self.last_time)
        span = self.zero_time - self.last_time
        tail = self.last_value * np.clip(self.zero_time - start, 0.0, None) ** 2 / (2 * span) if span > 0 else 0.0
        return step_part + tail


def _tail_area(last_time: np.ndarray, last_value: np.ndarray) -> np.ndarray:
    return np.where(last_value > 0, last_time * last_value**2 / (2 * (1.0 - last_value)), 0.0)


def margin_times(y: np.ndarray, km: KaplanMeier) -> np.ndarray:
    """Best-guess event times Y + ∫_Y^∞ S_KM / S_KM(Y) of subjects censored at ``y`` ``[c]``."""
    ext = _ExtendedKM(km)
    s = ext.survival(y)
    return np.where(s > 0, y + ext.area_beyond(y) / np.where(s > 0, s, 1.0), y)


def pseudo_observation_times(y: np.ndarray, km: KaplanMeier) -> np.ndarray:
    """Jackknife pseudo event times (N + 1) A(KM+i) − N A(KM) of subjects censored at ``y`` ``[c]``.

    Adding a censored subject at c raises the at-risk count of every training time ≤ c by one, so the
    new curve is P1_k = Π_{j≤k} (1 − d_j/(r_j + 1)) up to c and P1_{K−1} · P0_k / P0_{K−1} after it
    (P0 the training curve, K = #training times ≤ c); its area follows from prefix/suffix sums — no loop.
    """
    ext = _ExtendedKM(km)
    t, d, r = ext.times, km.events.astype(np.float64), km.at_risk.astype(np.float64)
    p0 = np.concatenate(([1.0], np.cumprod(1.0 - d / r)))  # p0[k + 1] = S at t_k; p0[0] = 1
    p1 = np.concatenate(([1.0], np.cumprod(1.0 - d / (r + 1.0))))
    widths = np.diff(t)
    prefix1 = np.concatenate(([0.0], np.cumsum(p1[1:-1] * widths)))  # Σ_{k<j} P1_k Δ_k, j = 0..m-1
    suffix0 = np.concatenate((np.cumsum((p0[1:-1] * widths)[::-1])[::-1], [0.0]))  # Σ_{k≥j} P0_k Δ_k
    m = t.size
    k = np.searchsorted(t, y, side="right")  # training times <= c
    ratio = np.divide(p1[k], p0[k], out=np.zeros(y.size), where=p0[k] > 0)
    j = np.minimum(k, m - 1)
    step_area = t[0] + prefix1[j] + ratio * suffix0[j]
    last_value = np.where(k == m, p1[m], ratio * p0[m])
    new_last_time = np.maximum(t[-1], y)
    area_with = step_area + last_value * (new_last_time - t[-1]) + _tail_area(new_last_time, last_value)
    n = km.n_samples
    return (n + 1) * area_with - n * ext.area_beyond(np.zeros(1))[0]


def mae(
    time: Any,
    event: Any,
    predicted_time: Any,
    *,
    method: str = "hinge",
    km: KaplanMeier | None = None,
    weighted: bool | None = None,
) -> float:
    """Mean absolute error of predicted event times (see module docs).

    Parameters
    ----------
    time, event:
        Test outcomes ``[n]``.
    predicted_time:
        Point predictions T̂ ``[n]`` (≥ 0), or a distribution with batch shape ``[n]`` (its median).
    method:
        ``"hinge"``, ``"margin"`` or ``"pseudo_obs"``.
    km:
        :class:`~ehrseq.metrics.KaplanMeier` fitted on the training outcomes; required by the margin and
        pseudo-observation methods and by weighting.
    weighted:
        Weigh censored subjects by 1 − S_KM(Y_i) (default: True for ``"margin"``, False otherwise).
    """
    check_choice(method, METHODS, "method")
    t, e = check_outcome(time, event)
    if isinstance(predicted_time, SurvivalDistribution):
        check_distribution_batch(predicted_time, t.size, "predicted_time")
        with torch.no_grad():
            predicted_time = predicted_time.median().detach().cpu().numpy()
    pred = as_float(predicted_time, "predicted_time", (t.size,))
    if np.any(pred < 0):
        raise ValueError("predicted_time must be >= 0")
    if km is not None and not isinstance(km, KaplanMeier):
        raise TypeError(f"km must be a KaplanMeier fitted on the training outcomes, got {type(km).__name__}")
    weighted = method == "margin" if weighted is None else weighted
    if km is None and (weighted or method != "hinge"):
        what = f"method {method!r}" + (" with weighting" if weighted else "")
        raise ValueError(f"{what} needs km, a KaplanMeier fitted on the training outcomes")
    if t.size == 0:
        raise ValueError("MAE needs at least one subject")

    censored = ~e
    errors = np.abs(t - pred)
    if method == "hinge":
        errors[censored] = np.maximum(t[censored] - pred[censored], 0.0)
    elif np.any(censored):
        guess = margin_times if method == "margin" else pseudo_observation_times
        errors[censored] = np.abs(guess(t[censored], km) - pred[censored])
    weights = np.ones(t.size)
    if weighted:
        weights[censored] = 1.0 - _ExtendedKM(km).survival(t[censored])
    if weights.sum() <= 0:
        raise ValueError("all weights are 0 (every subject is censored where the training KM is 1)")
    return float(np.sum(weights * errors) / weights.sum())
