"""Why did the risk change: integrated-gradients attributions of per-visit risks to (visit, input) pairs.

For a prediction made at visit m of a patient — the risk r = P(T ≤ v_m + Δ | history ≤ m), or with a
landmark s the conditional risk from the last visit ≤ s — every input of the visits 1 … m gets an
attribution, computed with integrated gradients (Sundararajan et al. 2017, implemented by Captum):

    A_i = (x_i − x'_i) ∫_0^1 ∂r(x' + α (x − x')) / ∂x_i dα,     Σ_i A_i = r(x) − r(x')  (completeness)

along the straight path from a baseline x' to the inputs x, through the model's own forward pass.
The inputs are those of the visit embedding (:meth:`~ehrseq.models.encoders.embedding.VisitEmbedding.parts`),
grouped per visit into:

* **numeric** feature f: its standardised value x̃_f and its missingness flag r_f. Baseline: *not
  measured* — value at the training mean (x̃ = 0), flagged missing (r = 1), which is what the model is
  given for a feature that was not measured; its measurement-history columns (``<f>:since_measured``,
  ``<f>:ever_measured``, :class:`~ehrseq.data.FeaturePipeline`) are inputs of their own, never missing,
  with baseline 0 (never measured);
* **categorical** column j: its embedding E_j[c_j]. Baseline: the embedding of the most frequent
  training level (the population's typical value);
* **codes**: the pooled embedding of the codes recorded at the visit and, in models whose linear path
  reads the coded history (:attr:`~ehrseq.models.model.ModelConfig.code_history`), the increment of that
  history at the visit (the terms of the codes first recorded there). Baseline: no code recorded;
* **time**: the visit time and the gap since the previous visit — their continuous-time encodings
  [φ(t) ; φ(g)] (interpolated as encodings: along raw times the sinusoids would oscillate faster than
  any quadrature can follow) and the ``elapsed_years`` / ``log_gap`` features. Baseline: 0 days since
  origin, no gap.

So the baseline history is "m visits at the origin with nothing measured" and r(x') the risk the model
gives such an uninformed history: the *level view* (``view="level"``) splits r(x) − r(x') over every
(visit ≤ m, input). The *change view* (``view="change"``) splits the change from the prediction at
visit m − 1 to the one at visit m: the baseline is the history with visit m replaced by a repeat of
visit m − 1 (same inputs, same time, no gap), so only the inputs of visit m that changed — values,
measurements, categories, codes, and the time that passed — get non-zero attributions, and

    r_m − r_{m−1} = Σ attributions + (r(x') − r_{m−1}),

the last term ("repeat") being the model's response to a new visit at which nothing changed. At the
first visit the change view is the level view. Every explanation reports the completeness gap
Σ A − (r(x) − r(x')) of the numerical integral (Gauss–Legendre, ``n_steps`` points). The landmark
offset s − v_m is part of the question, not an input: it is the same at x and x'.

The integrals are computed over the sums before the embedding's normalisation, which are affine in
every input (see :class:`_Explainer`): the same attributions as integrated gradients over the inputs
themselves, at the cost of the encoder's forward and backward passes over the visits ≤ m. The models
read their inputs through the visit embedding only; the forward pass gets the patients' batch as it
is besides the interpolated embeddings, and a model that reads the batch elsewhere is refused
(:class:`~ehrseq.errors.ConfigError`) rather than explained incompletely.

**Ensembles.** An ensemble's prediction is the mixture S = Σ_k w_k S_k of its members' distributions with the
weights w_k of :meth:`~ehrseq.models.model.ModelConfig.member_weights` (unequal when linear members have their
share). Its risk is a mixture of the members' risks,

    r(x) = Σ_k ω_k(x) r_k(x),     ω_k = w_k S_k(e) / Σ_j w_j S_j(e),

with S_k(e) the member's survival from the visit to the prediction time when the ensemble's members predict at the
visit and their average is conditioned on survival to the prediction time (models without an elapsed-time input), and
1 when they predict at the prediction time itself (every prediction at a visit; ensembles that read the elapsed time,
and blends of which one model does, where each member is at or conditioned to the prediction time on its own: ω_k =
w_k). The attributions are Σ_k ω_k A_k and the reference Σ_k ω_k r_k(x'), so r(x) and completeness are exactly the
ensemble's (integrated gradients are linear in the function; ω is that of the prediction explained, the same at x and
x' as the offset e is).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch

from ehrseq import predict
from ehrseq.data import tensorize
from ehrseq.data.batch import PAD_INDEX, UNKNOWN_INDEX, SequenceBatch
from ehrseq.data.features import TIME_FEATURES
from ehrseq.device import select_device
from ehrseq.errors import ConfigError
from ehrseq.models.distributions import CompetingRisksDistribution
from ehrseq.models.ensemble import EnsembleModel

__all__ = ["Explanation", "explain"]

_PART_NAMES = ("values", "missing", "categorical", "codes", "time")
#: Index of the most frequent training level of every categorical column (levels are stored by frequency).
_MODE_INDEX = UNKNOWN_INDEX + 1
#: Visit rows (prediction × integration point × visit) per forward pass.
_VISIT_ROWS = 1 << 16
#: The fields of a batch with a visit dimension (the others are per patient).
_VISIT_FIELDS = frozenset({"numeric", "numeric_missing", "categorical", "codes", "time", "gap", "mask", "remaining",
                           "bin", "upper"})


@dataclass(frozen=True)
class Explanation:
    """Attributions of per-visit risks (see the module docstring).

    ``attributions``: one row per (prediction, input visit, input): ``patient_id, visit`` (1-based index of
    the visit the prediction is made at), ``visit_time``, ``input_visit``, ``input_visit_time``, ``input``
    (feature name, ``codes`` or ``time``), ``kind`` (numeric, categorical, codes, time), ``attribution``.
    The change view keeps the inputs of visit m only (the others are exactly 0).

    ``risks``: one row per prediction: ``patient_id, visit, visit_time, risk`` r(x), ``reference`` r(x'),
    ``attributed`` Σ A, ``gap`` = Σ A − (r(x) − r(x')) and, in the change view, ``previous_risk`` r_{m−1}
    (null at the first visit) and ``repeat`` = r(x') − r_{m−1}.
    """

    attributions: pl.DataFrame
    risks: pl.DataFrame
    view: str
    horizon: float
    landmark: float | None

    @property
    def relative_gap(self) -> float:
        """The completeness check over all explained predictions: Σ |gap| / Σ |r(x) − r(x')| (0 when no
        risk moved)."""
        moved = float((self.risks["risk"] - self.risks["reference"]).abs().sum())
        return float(self.risks["gap"].abs().sum()) / moved if moved > 0 else 0.0

    def top(self, k: int = 5, *, by_input: bool = True) -> pl.DataFrame:
        """The ``k`` largest attributions in absolute value per prediction; with ``by_input``, summed over
        the input visits first (one row per input)."""
        keys = ["patient_id", "visit", "visit_time"]
        frame = self.attributions
        if by_input:
            frame = frame.group_by([*keys, "input", "kind"], maintain_order=True).agg(pl.col("attribution").sum())
        return (frame.with_columns(pl.col("attribution").abs().alias("_size"))
                .sort([*keys, "_size"], descending=[False, False, False, True])
                .group_by(keys, maintain_order=True).head(k).drop("_size"))


def explain(model: Any, visits: Any, horizon: float, *, patients: Sequence[Any] | None = None, at: str = "all",
            landmark: Any = None, view: str = "level", outcomes: Any = None, cause: int | None = None,
            event: str | None = None, n_steps: int = 64, batch_size: int = 512) -> Explanation:
    """Attributions of the predicted risk within ``horizon`` days (module docstring).

    Parameters
    ----------
    model: a fitted :class:`~ehrseq.DynamicSurvival`.
    visits: visit table (read with the model's table settings); ``patients`` restricts it to these ids.
    horizon: Δ in days after the visit (or after the landmark).
    at: explain the prediction at every visit (``"all"``) or at each patient's last visit (``"last"``).
    landmark: explain the landmark prediction at s (days since origin, or a date as in ``predict_risk``)
        from the last visit ≤ s instead.
    view: ``"level"`` (risk against the uninformed baseline) or ``"change"`` (against the previous visit).
    outcomes: drop visits at or after each patient's outcome (as in prediction).
    cause, event: competing-risks cause or multi-event event, as in ``predict_risk``.
    n_steps: points of the integral (Gauss–Legendre); batch_size: patients prepared at a time.
    """
    if not hasattr(model, "model_") or not hasattr(model, "features_"):
        raise ConfigError("explain needs a fitted DynamicSurvival model (fit() or ehrseq.load())")
    if view not in ("level", "change"):
        raise ConfigError(f"view must be 'level' or 'change', got {view!r}")
    predict.check_at(at)
    if landmark is not None and view == "change":
        raise ConfigError("the change view compares consecutive visits; it has no landmark")
    if not model.family_.in_days:
        raise ConfigError(f"the {model.model_config_.head.kind} head has no time scale in days to explain a risk "
                          "within a horizon")
    horizon = float(horizon)
    if not (np.isfinite(horizon) and horizon > 0):
        raise ConfigError(f"horizon must be a positive number of days, got {horizon!r}")
    if not isinstance(n_steps, int) or n_steps < 2:
        raise ConfigError(f"n_steps must be an int >= 2, got {n_steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    table = pl.DataFrame(visits) if not isinstance(visits, pl.DataFrame) else visits
    if patients is not None:
        wanted = list(patients)
        table = table.filter(pl.col("patient_id").is_in(pl.Series(wanted, dtype=table.schema["patient_id"]).implode()))
        found = set(table["patient_id"].unique().to_list())
        absent = [p for p in wanted if p not in found]
        if absent:
            raise ConfigError(f"patient(s) {absent[:5]} have no visit in the visit table")
    cohort = model.cohort(table, outcomes)
    try:
        from captum.attr import IntegratedGradients
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("explanations need Captum: pip install 'ehrseq[explain]'") from exc

    device = select_device(model.trainer_config.device)
    # an ensemble's risk is a mixture of its members' (module docstring, "Ensembles"): integrated gradients are
    # linear in the function, so its attributions (and their completeness) are the same mixture of the members'
    if isinstance(model.model_, EnsembleModel):
        weighed = [(member, weight) for member, weight in zip(model.model_.members,
                                                               model.model_.config.member_weights()) if weight > 0]
    else:
        weighed = [(model.model_, 1.0)]
    weights = np.array([weight for _, weight in weighed])
    at_prediction_time = bool(getattr(model.model_, "any_time", False))  # members mixed at the prediction time
    explainers = [_Explainer(network, model.features_, device, horizon, cause, event, view, IntegratedGradients,
                             n_steps) for network, _ in weighed]
    data = tensorize(cohort, model.features_, None)
    elapsed = cohort.visits["elapsed"].to_numpy()
    landmark_elapsed = None
    if landmark is not None:
        landmark_elapsed = predict.landmark_days(landmark, cohort.patients["origin"].to_numpy())
    order = np.argsort(data.lengths.numpy(), kind="stable")
    attributions, risks = [], []
    for start in range(0, order.size, batch_size):
        chosen = order[start:start + batch_size]
        batch = data.batch(chosen)
        mask = batch.mask.numpy()
        if landmark_elapsed is None:
            rows, positions = predict.select_visits(mask, at)
            offsets = np.zeros(rows.size)
        else:
            visit_days = predict.padded_visit_days(elapsed, cohort.offsets, chosen, mask.shape[1])
            rows, positions = predict.select_visits(mask, at, visit_days, landmark_elapsed[chosen])
            offsets = landmark_elapsed[chosen[rows]] - visit_days[rows, positions]
        if rows.size == 0:
            continue
        parts, summaries = zip(*(explainer.run(batch, rows, positions, offsets) for explainer in explainers))
        survival_to_time = [summary.pop("survival_to_time") for summary in summaries]
        if at_prediction_time:
            survival_to_time = [np.ones_like(survival) for survival in survival_to_time]
        mixture = _mixture(weights, survival_to_time)
        attributions.append(_average(parts, mixture))
        risks.append(_average(summaries, mixture))
    if not risks:
        raise ConfigError("no prediction to explain (no patient has a visit at or before the landmark)")
    return _frames(cohort, model.features_, attributions, risks, view, horizon, landmark)


class _Explainer:
    """Integrated gradients of one risk per prediction through the model's forward pass.

    The embedding sum before normalisation, s = Σ_i W_i p_i + b (:meth:`VisitEmbedding.sum_parts`), is
    affine in the parts p_i, so the straight path from x' to x in the parts is the straight path from
    s(x') to s(x), and the gradient along it is W_iᵀ ∂r/∂s. Captum integrates the gradient with respect
    to s once, G = ∫_0^1 ∂r(s' + α (s − s'))/∂s dα ``[N, m, D]`` (``multiply_by_inputs=False``), and
    every part's attribution is (W_iᵀ G) ⊙ (p_i − p'_i): exactly integrated gradients over the parts,
    with one interpolated tensor of width D instead of all of them. Predictions are grouped by the
    length of their history (the visits ≤ m; the encoders are causal), so no step of the integral runs
    the encoder over visits after m or over padding.
    """

    def __init__(self, network: Any, features: Any, device: torch.device, horizon: float, cause: int | None,
                 event: str | None, view: str, method: Any, n_steps: int) -> None:
        self.device = device
        self.model = network.to(self.device).eval()
        self.embedding = self.model.encoder.embedding
        self.history = getattr(self.model, "code_history", None) is not None
        self.horizon, self.cause, self.event, self.view, self.n_steps = horizon, cause, event, view, n_steps
        self.time_columns = [features.numeric_names.index(name) for name in TIME_FEATURES
                             if name in features.numeric_names]
        derived = {*TIME_FEATURES, *features.history_names}
        self.never_missing = [i for i, name in enumerate(features.numeric_names) if name in derived]
        self.method = method(self._forward, multiply_by_inputs=False)
        self.method.gradient_func = _gradients_of_total

    # ---------------------------------------------------------------- forward pass
    def _forward(self, sums: torch.Tensor, *rest: Any) -> torch.Tensor:
        """Risk ``[R]`` at the last visit of histories whose embedding sums are ``sums [R, L, D]`` and, in
        models with a code history, whose history increments are ``rest[0]`` ``[R, L, P]``; then ``batch``
        (the ``[N, L]`` histories, repeated to R = N × steps rows in Captum's layout) and ``offsets``."""
        history, (batch, offsets) = (rest[0], rest[1:]) if self.history else (None, rest)
        repeat = sums.shape[0] // batch.batch_size
        expanded = _repeat(batch, repeat) if repeat > 1 else batch
        rows = torch.arange(sums.shape[0], device=sums.device)
        with self.embedding.replaced(sums), self._history_replaced(history):
            return self._prediction_risk(expanded, (rows, torch.full_like(rows, sums.shape[1] - 1)), offsets)

    def _history_replaced(self, history: torch.Tensor | None) -> Any:
        return contextlib.nullcontext() if history is None else self.model.replaced_new_code_terms(history)

    def _prediction(self, batch: SequenceBatch, index: tuple[torch.Tensor, torch.Tensor],
                    offsets: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """The distribution of the predictions ``offsets`` days after the visits ``index`` of ``batch``, as
        :func:`ehrseq.predict.predictions` makes it, and the offsets it is still to be conditioned on (0 when it is
        at the prediction time)."""
        distribution, at_time = predict.distribution_at(self.model, batch, index, offsets, check_values=False)
        return distribution, torch.zeros_like(offsets) if at_time else offsets

    def _prediction_risk(self, batch: SequenceBatch, index: tuple[torch.Tensor, torch.Tensor],
                         offsets: torch.Tensor) -> torch.Tensor:
        """The risk ``[n]`` of the predictions ``offsets`` days after the visits ``index`` of ``batch``."""
        return self._risk(*self._prediction(batch, index, offsets))

    def _survival_to_time(self, distribution: Any, offsets: torch.Tensor) -> torch.Tensor:
        """S(e) ``[n]``: the survival to the prediction times under a ``distribution`` still to be conditioned on
        ``offsets`` e (1 where e = 0: a distribution at the prediction time itself)."""
        if not bool((offsets > 0).any()):
            return torch.ones_like(offsets)
        if isinstance(distribution, CompetingRisksDistribution):
            distribution = distribution.overall()
        (_, marginal), *_ = predict.marginals(distribution, self.event)
        return marginal.survival(offsets.to(marginal.dtype).unsqueeze(-1))[:, 0]

    def _risk(self, distribution: Any, offsets: torch.Tensor) -> torch.Tensor:
        """P(event within Δ of the prediction time | survival to it) ``[n]`` of a distribution ``[n]``."""
        horizons = np.array([self.horizon])
        offset = offsets.detach().cpu().numpy()
        if isinstance(distribution, CompetingRisksDistribution):
            return predict.competing_risk(distribution, offset, horizons, self.cause)[:, 0]
        (_, marginal), *others = predict.marginals(distribution, self.event)
        if others:
            raise ConfigError("a multi-event model: choose the event to explain with event=")
        horizon = torch.as_tensor(horizons, dtype=marginal.dtype, device=marginal.device)
        return predict.conditional(marginal, offset).risk(horizon)[:, 0]

    # ---------------------------------------------------------------- one batch of patients
    def run(self, batch: SequenceBatch, rows: np.ndarray, positions: np.ndarray,
            offsets: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
        """Attributions and risks of the predictions at (``rows``, ``positions``) of ``batch``."""
        batch = batch.to(self.device)
        row = torch.as_tensor(rows, device=self.device)
        position = torch.as_tensor(positions, device=self.device)
        offset = torch.as_tensor(offsets, dtype=torch.float64, device=self.device)
        with torch.no_grad():
            parts = self.embedding.parts(batch)
            if self.history:
                parts["code_history"] = self.model.new_code_terms(batch)
            uninformed = self._uninformed(parts, batch.mask)
            distribution, conditioned_on = self._prediction(batch, (row, position), offset)
            risk = self._risk(distribution, conditioned_on)
            survival_to_time = self._survival_to_time(distribution, conditioned_on)
            self._check_embedding_only(batch, parts, (row, position), offset, risk)
            previous = None
            if self.view == "change":
                before = self._prediction_risk(batch, (row, (position - 1).clamp(min=0)), offset)
                previous = torch.where(position > 0, before, torch.nan)
        n, width = rows.size, batch.max_visits
        grouped = {"numeric": np.zeros((n, width, parts["values"].shape[-1] - len(self.time_columns))),
                   "categorical": np.zeros((n, width, parts["categorical"].shape[-2])),
                   "codes": np.zeros((n, width)), "time": np.zeros((n, width))}
        reference = np.empty(n)
        for length in np.unique(positions + 1):
            selected = np.flatnonzero(positions + 1 == length)
            per_call = max(1, _VISIT_ROWS // (int(length) * self.n_steps))
            for chunk in np.array_split(selected, -(-selected.size // per_call)):
                attributions, reference[chunk] = self._attribute(batch, parts, uninformed, row[chunk], int(length),
                                                                 offset[chunk])
                for name, value in self._group(attributions).items():
                    grouped[name][chunk, :length] = value
        summary = {"patient_index": batch.patient_index.cpu().numpy()[rows], "position": positions,
                   "risk": risk.double().cpu().numpy(), "reference": reference,
                   "previous": None if previous is None else previous.double().cpu().numpy(),
                   "survival_to_time": survival_to_time.double().cpu().numpy()}
        return {"patient_index": summary["patient_index"], "position": positions, **grouped}, summary

    def _check_embedding_only(self, batch: SequenceBatch, parts: dict[str, torch.Tensor],
                              index: tuple[torch.Tensor, torch.Tensor], offset: torch.Tensor,
                              risk: torch.Tensor) -> None:
        """Refuse a model that reads the batch outside the visit embedding: with the embedding given,
        its risks must not move when every other input of the batch is blanked (nothing measured, no
        category, no code, time 0). Such inputs would be held at their values along the path, outside
        both the attributions and r(x) − r(x'), and the explanation would be silently incomplete."""
        real = batch.mask.unsqueeze(-1)
        blank = batch.replace(numeric=torch.zeros_like(batch.numeric),
                              numeric_missing=torch.ones_like(batch.numeric_missing),
                              categorical=torch.where(real, UNKNOWN_INDEX, PAD_INDEX).expand_as(batch.categorical),
                              codes=torch.full_like(batch.codes, PAD_INDEX), time=torch.zeros_like(batch.time),
                              gap=torch.zeros_like(batch.gap))
        with self.embedding.replaced(self.embedding.sum_parts(parts)), \
                self._history_replaced(parts.get("code_history")):
            blanked = self._prediction_risk(blank, index, offset)
        if not torch.allclose(blanked, risk, rtol=1e-4, atol=1e-6):
            raise ConfigError("this model reads inputs outside the visit embedding (its risk changes with the "
                              "batch's values when the embedding is fixed); explain attributes the embedding's inputs "
                              "only and cannot split this model's risk completely")

    def _attribute(self, batch: SequenceBatch, parts: dict[str, torch.Tensor], uninformed: dict[str, torch.Tensor],
                   rows: torch.Tensor, length: int, offsets: torch.Tensor) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """Attributions per part ``[n, length, …]`` and the reference risk r(x') ``[n]`` of the predictions
        at visit ``length − 1`` of the patients ``rows``."""
        target = _prefix(batch, rows, length)
        x = {name: parts[name][rows, :length] for name in _PART_NAMES}
        x0 = self._baseline(x, {name: uninformed[name][rows, :length] for name in _PART_NAMES})
        with torch.no_grad():
            inputs, baselines = (self.embedding.sum_parts(x),), (self.embedding.sum_parts(x0),)
            if self.history:  # no code is new at an uninformed visit, nor at a repeat of the visit before
                history = parts["code_history"][rows, :length]
                past = history[:, :-1] if self.view == "change" else torch.zeros_like(history[:, :-1])
                inputs = (*inputs, history)
                baselines = (*baselines, torch.cat([past, torch.zeros_like(history[:, -1:])], dim=1))
            reference = self._forward(*baselines, target, offsets)
        gradients = self.method.attribute(inputs, baselines=baselines, additional_forward_args=(target, offsets),
                                          n_steps=self.n_steps, method="gausslegendre",
                                          internal_batch_size=max(rows.numel(), _VISIT_ROWS // length))
        gradient = gradients[0]
        leaves = {name: value.detach().requires_grad_() for name, value in x.items()}
        # W_iᵀ G for every part i: the vector-Jacobian product of the affine sum
        pulled = torch.autograd.grad(self.embedding.sum_parts(leaves), list(leaves.values()), grad_outputs=gradient,
                                     allow_unused=True, materialize_grads=True)
        attributions = {name: g.detach() * (x[name] - x0[name]) for name, g in zip(leaves, pulled)}
        if self.history:
            attributions["code_history"] = gradients[1].detach() * (inputs[1] - baselines[1])
        return attributions, reference.double().cpu().numpy()

    # ---------------------------------------------------------------- baselines
    def _uninformed(self, parts: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The level view's baseline of every visit ``[B, M, …]``: nothing measured, typical categories,
        no codes, at the origin without a gap."""
        missing = torch.ones_like(parts["missing"])
        missing[..., self.never_missing] = 0.0  # nothing measured, so never measured: history columns 0 too
        zero = torch.zeros(mask.shape, dtype=parts["time"].dtype, device=mask.device)
        return {"values": torch.zeros_like(parts["values"]), "missing": missing,
                "categorical": self._modal_categories(parts["categorical"]), "codes": self._no_codes(parts["codes"]),
                "time": self.embedding.time_parts(zero, zero, torch.ones_like(mask))}

    def _baseline(self, x: dict[str, torch.Tensor], uninformed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """x' of predictions at the last of their ``[n, L]`` visits: the uninformed history (level view), or
        the history with its last visit replaced by a repeat of the one before — same inputs, same time,
        no gap (change view; the uninformed visit at the first visit)."""
        length = x["time"].shape[1]
        if self.view == "level" or length == 1:
            return uninformed if self.view == "level" else {
                name: torch.cat([x[name][:, :-1], uninformed[name][:, -1:]], dim=1) for name in _PART_NAMES}
        out = {}
        for name in _PART_NAMES:
            repeated = x[name][:, -2:-1].clone()
            if name == "time":  # φ(t_{m−1}) and the encoding of a zero gap
                half = repeated.shape[-1] // 2
                repeated[..., half:] = uninformed["time"][:, -1:, half:]
            if name in ("values", "missing") and self.time_columns:  # elapsed_years of m − 1, log_gap 0
                repeated[..., self.time_columns[1:]] = 0.0
            out[name] = torch.cat([x[name][:, :-1], repeated], dim=1)
        return out

    def _modal_categories(self, categorical: torch.Tensor) -> torch.Tensor:
        if self.embedding.categorical is None or categorical.shape[-2] == 0:
            return categorical.clone()
        modes = self.embedding.categorical[self.embedding.categorical_offsets + _MODE_INDEX]  # [C, D]
        sizes = self.embedding.categorical_sizes
        modes = torch.where((sizes > _MODE_INDEX)[:, None], modes,
                            self.embedding.categorical[self.embedding.categorical_offsets + UNKNOWN_INDEX])
        return modes.detach().expand_as(categorical).clone()

    def _no_codes(self, codes: torch.Tensor) -> torch.Tensor:
        if self.embedding.codes is None:
            return codes.clone()
        return self.embedding.no_codes.detach().expand_as(codes).clone()

    def _group(self, attributions: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Attributions per (prediction, visit, input): numeric ``[N, L, F']`` (time features removed),
        categorical ``[N, L, C]``, codes ``[N, L]``, time ``[N, L]``."""
        numeric = (attributions["values"] + attributions["missing"]).double()
        time = attributions["time"].double().sum(dim=-1)
        keep = [f for f in range(numeric.shape[-1]) if f not in self.time_columns]
        if self.time_columns:
            time = time + numeric[..., self.time_columns].sum(dim=-1)
        codes = attributions["codes"].double().sum(dim=-1)
        if "code_history" in attributions:
            codes = codes + attributions["code_history"].double().sum(dim=-1)
        return {
            "numeric": numeric[..., keep].cpu().numpy(),
            "categorical": attributions["categorical"].double().sum(dim=-1).cpu().numpy(),
            "codes": codes.cpu().numpy(),
            "time": time.cpu().numpy(),
        }


def _mixture(weights: np.ndarray, survival_to_time: Sequence[np.ndarray]) -> np.ndarray:
    """ω ``[K, n]``: each member's share of each prediction's risk, ω_k = w_k S_k(e) / Σ_j w_j S_j(e), from the
    members' ``weights`` w ``[K]`` and their survival to the prediction time S_k(e) ``[n]`` each (module docstring,
    "Ensembles")."""
    weighed = weights[:, None] * np.stack(survival_to_time)
    return weighed / weighed.sum(axis=0, keepdims=True)


def _average(records: Sequence[dict[str, Any]], mixture: np.ndarray) -> dict[str, Any]:
    """The members' records of one batch mixed value by value with the shares ``mixture`` ``[K, n]`` (per member
    and prediction; indices and positions are the same in every member's record and are kept; ``None`` stays
    ``None``)."""
    first = records[0]
    if len(records) == 1:
        return first
    keep = ("patient_index", "position")

    def mixed(key: str) -> np.ndarray:
        values = np.stack([r[key] for r in records])  # [K, n, ...]
        return (mixture.reshape(mixture.shape + (1,) * (values.ndim - 2)) * values).sum(axis=0)

    return {key: value if key in keep or value is None else mixed(key) for key, value in first.items()}


def _gradients_of_total(forward_fn: Any, inputs: tuple[torch.Tensor, ...], target_ind: Any = None,
                        additional_forward_args: tuple[Any, ...] | None = None) -> tuple[torch.Tensor, ...]:
    """Captum's gradient function with one backward pass of the total of the outputs ``[R]``: the rows
    do not interact (the model in eval mode embeds, encodes and predicts each history on its own), so
    ∂(Σ_r y_r)/∂x_r = ∂y_r/∂x_r. (Captum's default hands autograd the R outputs one scalar at a time.)"""
    with torch.enable_grad():
        outputs = forward_fn(*inputs, *(additional_forward_args or ()))
        return torch.autograd.grad(outputs.sum(), inputs)


def _prefix(batch: SequenceBatch, rows: torch.Tensor, length: int) -> SequenceBatch:
    """The first ``length`` visits of the patients ``rows`` of ``batch``."""
    return batch.replace(**{name: value[rows, :length] if name in _VISIT_FIELDS else value[rows]
                            for name, value in batch.tensors().items()})


def _repeat(batch: SequenceBatch, times: int) -> SequenceBatch:
    """The batch stacked ``times`` times along the batch dimension (Captum's layout of the steps)."""
    return batch.replace(**{name: torch.cat([value] * times) for name, value in batch.tensors().items()})


def _frames(cohort: Any, features: Any, attributions: list[dict[str, Any]], risks: list[dict[str, Any]], view: str,
            horizon: float, landmark: float | None) -> Explanation:
    patient_ids = cohort.patients["patient_id"]
    visit_times = cohort.visits["time"].to_numpy()
    offsets = cohort.offsets
    numeric_names = [n for n in features.numeric_names if n not in TIME_FEATURES]
    names = [*numeric_names, *features.categorical_names, "codes", "time"]
    kinds = ["numeric"] * len(numeric_names) + ["categorical"] * len(features.categorical_names) + ["codes", "time"]
    if not features.code_vocab_size or features.codes_column is None:
        names, kinds = names[:-2] + ["time"], kinds[:-2] + ["time"]
    frames = []
    for part in attributions:
        blocks = [part["numeric"], part["categorical"]]
        if "codes" in names:
            blocks.append(part["codes"][..., None])
        blocks.append(part["time"][..., None])
        values = np.concatenate(blocks, axis=-1)  # [N, M, I]
        n, m, n_inputs = values.shape
        prediction, visit, which = np.meshgrid(np.arange(n), np.arange(m), np.arange(n_inputs), indexing="ij")
        position = part["position"][prediction]
        keep = visit <= position if view == "level" else visit == position
        prediction, visit, which = prediction[keep], visit[keep], which[keep]
        first = offsets[part["patient_index"][prediction]]
        frames.append(pl.DataFrame({
            "patient_index": part["patient_index"][prediction], "visit": position[keep] + 1,
            "visit_time": visit_times[first + position[keep]], "input_visit": visit + 1,
            "input_visit_time": visit_times[first + visit], "input": np.asarray(names)[which],
            "kind": np.asarray(kinds)[which], "attribution": values[prediction, visit, which],
        }))
    table = pl.concat(frames)
    summary = []
    for part in risks:
        first = offsets[part["patient_index"]]
        frame = {"patient_index": part["patient_index"], "visit": part["position"] + 1,
                 "visit_time": visit_times[first + part["position"]], "risk": part["risk"],
                 "reference": part["reference"]}
        if part["previous"] is not None:
            frame["previous_risk"] = part["previous"]
        summary.append(pl.DataFrame(frame))
    risks_frame = pl.concat(summary)
    totals = table.group_by("patient_index", "visit").agg(pl.col("attribution").sum().alias("attributed"))
    risks_frame = risks_frame.join(totals, on=["patient_index", "visit"], how="left").with_columns(
        (pl.col("attributed") - (pl.col("risk") - pl.col("reference"))).alias("gap"))
    if view == "change":
        risks_frame = risks_frame.with_columns(
            pl.col("previous_risk").fill_nan(None),
            (pl.col("reference") - pl.col("previous_risk").fill_nan(None)).alias("repeat"))
    ids = pl.DataFrame({"patient_index": np.arange(patient_ids.len()), "patient_id": patient_ids})
    clock = cohort.to_clock

    def finish(frame: pl.DataFrame, time_columns: list[str]) -> pl.DataFrame:
        frame = frame.join(ids, on="patient_index").drop("patient_index")
        frame = frame.with_columns(pl.Series(c, clock(frame[c].to_numpy())) for c in time_columns)
        return frame.select("patient_id", *[c for c in frame.columns if c != "patient_id"]).sort(
            "patient_id", "visit", maintain_order=True)

    return Explanation(finish(table, ["visit_time", "input_visit_time"]), finish(risks_frame, ["visit_time"]),
                       view, horizon, landmark)
