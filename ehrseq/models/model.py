"""`DynamicSurvivalModel`: encoder (history → one state per visit) × head (state → distribution).

One prediction path serves training, evaluation and scoring: ``model(batch)`` returns a
:class:`ModelOutput` whose :attr:`~ModelOutput.distribution` is the per-visit survival distribution
(batch shape ``[B, M]``) that losses, metrics and scoring all consume.

The head's raw outputs at visit m (P of them, :mod:`ehrseq.models.families`) are

    raw_m = head(h_m ; φ(e_m)) + A [s_m ; φ(e_m)] + (b · [s_m ; φ(e_m)]) r + Σ_{c ∈ C_m} u_c
              (the second term with ``wide``, the third with ``proportional``, the last with ``code_history``)

* h_m the encoder's state (the sequence path, "deep");
* s_m the visit embedding's sum before its normalisation (:meth:`VisitEmbedding.sums`), affine in the
  current visit's inputs — numeric values (last observation carried forward) and their missingness,
  categorical levels, codes, visit time and gap — so ``A s_m`` is a linear model of the current visit
  ("wide"): the model nests the landmark linear model (Cox-like on the last observed covariates), and
  attributions over the embedding's inputs (:mod:`ehrseq.explain`) cover both paths;
* r ``[P]`` the head family's risk direction (:meth:`~ehrseq.models.families.HeadFamily.risk_direction`:
  every output of the logistic and piecewise hazards, the hazard logit of the visit hazard), along which
  the linear predictor η_m = b · [s_m ; φ(e_m)] scales every hazard of the head alike — the hazard odds of
  every bin, or every hazard rate, by e^η, as a Cox model's linear predictor does. A + b rᵀ spans the same
  linear maps as A alone: the term adds no capacity, it changes what an early-stopped fit on a small
  cohort learns first. Each of A's P·D weights moves only with the events and exposure of its own bin,
  while b gets the gradient of all bins at once, so the few optimiser steps a small cohort affords learn
  a covariate's proportional effect first, and A's per-bin departures from it as the data support them;
* C_m the codes recorded at any visit up to and including m (each counted once, from its first record),
  u_c ∈ R^P a learned vector per code: the linear path's view of the coded history (comorbidities,
  procedures) that the current visit alone does not show, as a landmark model's "ever recorded up to s"
  indicators; computed as a cumulative sum over visits, so causal (:func:`new_code_terms` gives its
  increments, which attributions split as inputs of their own and add to the codes of their visits);
* φ(e) = [log(1 + e/τ) ; e/τ] the time e elapsed since the visit, in units of the head's time scale τ
  (with ``any_time``; e = 0 at a visit): the distribution is that of the remaining time after the
  prediction time v_m + e given survival to it, so a landmark prediction between visits is learned
  (training samples e, :func:`ehrseq.data.sample_prediction_times`) rather than extrapolated from the
  visit's curve.

With ``wide`` the sequence path's last layer starts at zero: a fresh model is the life-table bias plus
the (zero) linear model, and the history's contribution grows from there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

from ehrseq.data.batch import PAD_INDEX, SequenceBatch
from ehrseq.errors import ConfigError
from ehrseq.models.distributions import _native
from ehrseq.models.encoders import EncoderConfig, build_encoder
from ehrseq.models.families import Prediction
from ehrseq.models.heads import HeadConfig, SurvivalHead


@dataclass(frozen=True)
class ModelConfig:
    """Fully describes a :class:`DynamicSurvivalModel` (JSON round trip with :meth:`to_dict`/:meth:`from_dict`).

    ``wide`` adds the linear path from the current visit's inputs, ``proportional`` (with ``wide`` and a head
    that has a risk direction) its proportional term, ``code_history`` (with ``wide`` and codes only) its
    terms for the codes recorded so far, and ``any_time`` the elapsed-time input (module docstring); models
    saved without them load with them off. ``n_models`` > 1 makes a
    deep ensemble of that many such models (:mod:`ehrseq.models.ensemble`), of which the last ``linear_members``
    are the linear model of the same inputs (:meth:`member`); ``linear_weight`` is their share of the average
    (``None``: every member weighs 1 / ``n_models``; :meth:`member_weights`).
    ``next_visit`` adds an auxiliary predictor of the next visit's numeric features and codes
    (trained by the ``next_visit`` loss term; [catalogue] §9, monograph §6.2.3).

    ``blend`` is a second configuration of models of the same inputs (one model or an ensemble of its own, no blend
    of its own) whose members follow this configuration's in the ensemble, weighing ``blend_weight`` of the average
    together (:meth:`member_weights`): a blend of two configurations (``DynamicSurvival(blend=...)``; what
    :func:`ehrseq.tune` returns when it chooses settings other than the defaults). Both heads average single-event
    survival curves in days; the encoders read the same inputs.
    """

    encoder: EncoderConfig
    head: HeadConfig
    next_visit: bool = False
    wide: bool = False
    any_time: bool = False
    n_models: int = 1
    code_history: bool = False
    proportional: bool = False
    linear_members: int = 0
    linear_weight: float | None = None
    blend: ModelConfig | None = None
    blend_weight: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.n_models, bool) or not isinstance(self.n_models, int) or self.n_models < 1:
            raise ConfigError(f"n_models must be an int >= 1, got {self.n_models!r}")
        if (isinstance(self.linear_members, bool) or not isinstance(self.linear_members, int)
                or not 0 <= self.linear_members < self.n_models):
            raise ConfigError(f"linear_members must be an int in [0, n_models - 1] = [0, {self.n_models - 1}] (an "
                              f"ensemble keeps at least one network), got {self.linear_members!r}")
        if self.linear_weight is not None and (
                isinstance(self.linear_weight, bool) or not isinstance(self.linear_weight, (int, float))
                or not 0.0 <= self.linear_weight <= 1.0 or not self.linear_members):
            raise ConfigError(f"linear_weight must be None or a number in [0, 1] with linear_members > 0, got "
                              f"{self.linear_weight!r} with linear_members={self.linear_members}")
        if self.code_history and not (self.wide and self.encoder.code_vocab_size):
            raise ConfigError("code_history is a term of the linear path over codes: it needs wide=True and a "
                              "code vocabulary")
        family = self.head.family
        if self.proportional and not self.wide:
            raise ConfigError("proportional is a term of the linear path: it needs wide=True")
        if self.proportional and family.risk_direction(self.head) is None:
            raise ConfigError(f"proportional is a term of the linear path along the head's risk direction: it needs "
                              f"a hazard head (the {self.head.kind} head has no risk direction)")
        if self.n_models > 1 and not family.ensembles:
            raise ConfigError(f"an ensemble (n_models > 1) averages single-event survival curves in days; the "
                              f"{self.head.kind} head is not one")
        if self.any_time and not family.any_time:
            raise ConfigError(f"the {self.head.kind} head cannot predict at any time (any_time): it has no single "
                              f"remaining time in days")
        self._check_blend()

    def _check_blend(self) -> None:
        if self.blend is None:
            if self.blend_weight is not None:
                raise ConfigError("blend_weight is the share of a blended configuration: it needs blend")
            return
        weight = self.blend_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 < weight < 1.0:
            raise ConfigError(f"blend_weight must be a number in (0, 1), got {weight!r}")
        if self.blend.blend is not None:
            raise ConfigError("a blended configuration has no blend of its own")
        for config in (self, self.blend):
            if not config.head.family.ensembles:
                raise ConfigError(f"a blend averages single-event survival curves in days; the {config.head.kind} "
                                  f"head has none")
        inputs = ("n_numeric", "categorical_cardinalities", "code_vocab_size", "time_unit")
        differ = [name for name in inputs if getattr(self.encoder, name) != getattr(self.blend.encoder, name)]
        if differ:
            raise ConfigError(f"the blended models must read the same inputs; their encoders differ in {differ}")

    @property
    def n_members(self) -> int:
        """The models of the configuration: :attr:`n_models`, and those of :attr:`blend`."""
        return self.n_models + (self.blend.n_models if self.blend is not None else 0)

    @property
    def reads_elapsed(self) -> bool:
        """Whether any member reads the time elapsed since the visit (:attr:`any_time`, here or in the blend)."""
        return self.any_time or (self.blend is not None and self.blend.any_time)

    def to_dict(self) -> dict[str, Any]:
        values = {"encoder": self.encoder.to_dict(), "head": self.head.to_dict(), "next_visit": self.next_visit,
                  "wide": self.wide, "any_time": self.any_time, "n_models": self.n_models,
                  "code_history": self.code_history, "proportional": self.proportional,
                  "linear_members": self.linear_members, "linear_weight": self.linear_weight}
        if self.blend is not None:
            values.update(blend=self.blend.to_dict(), blend_weight=self.blend_weight)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        unknown = set(values) - {"encoder", "head", "next_visit", "wide", "any_time", "n_models",
                                  "code_history", "proportional", "linear_members", "linear_weight", "blend",
                                  "blend_weight"}
        if unknown:
            raise ConfigError(f"unknown model settings: {sorted(unknown)}")
        if "encoder" not in values or "head" not in values:
            raise ConfigError("a model config needs 'encoder' and 'head'")
        return cls(
            encoder=EncoderConfig.from_dict(values["encoder"]),
            head=HeadConfig.from_dict(values["head"]),
            next_visit=bool(values.get("next_visit", False)),
            wide=bool(values.get("wide", False)),
            any_time=bool(values.get("any_time", False)),
            n_models=int(values.get("n_models", 1)),
            code_history=bool(values.get("code_history", False)),
            proportional=bool(values.get("proportional", False)),
            linear_members=int(values.get("linear_members", 0)),
            linear_weight=None if values.get("linear_weight") is None else float(values["linear_weight"]),
            blend=None if values.get("blend") is None else cls.from_dict(values["blend"]),
            blend_weight=None if values.get("blend_weight") is None else float(values["blend_weight"]),
        )

    def member_weights(self) -> list[float]:
        """The weight of each member in the ensemble's average (:attr:`n_members` numbers ≥ 0 summing to 1): 1 / K
        each without :attr:`linear_weight`, else (1 − linear_weight) shared equally by the networks and
        linear_weight by the linear members; with a :attr:`blend`, these times (1 − blend_weight), then the blend's
        own weights times blend_weight."""
        if self.linear_weight is None:
            own = [1.0 / self.n_models] * self.n_models
        else:
            networks = self.n_models - self.linear_members
            own = ([(1.0 - self.linear_weight) / networks] * networks
                   + [self.linear_weight / self.linear_members] * self.linear_members)
        if self.blend is None or self.blend_weight is None:
            return own
        return ([(1.0 - self.blend_weight) * w for w in own]
                + [self.blend_weight * w for w in self.blend.member_weights()])

    def member(self, k: int) -> ModelConfig:
        """The configuration of member ``k`` of the ensemble (one model). The last :attr:`linear_members` members
        are the linear model of the same inputs: the current visit's embedding (encoder ``"landmark"``) without the
        sinusoids of the visit time and gap, and a head without hidden layers, beside the same linear path — a
        model that reads what the landmark Cox model reads and, trained fast, estimates its effects
        (``DynamicSurvival`` trains these members at a learning rate of at least :func:`linear_member_lr`).
        Members :attr:`n_models` and on are those of the :attr:`blend`."""
        if not 0 <= k < self.n_members:
            raise ConfigError(f"member {k} of an ensemble of {self.n_members}")
        if k >= self.n_models and self.blend is not None:
            return self.blend.member(k - self.n_models)
        single = dataclasses.replace(self, n_models=1, linear_members=0, linear_weight=None, blend=None,
                                     blend_weight=None)
        if k < self.n_models - self.linear_members:
            return single
        encoder = EncoderConfig.from_dict({**self.encoder.to_dict(), "kind": "landmark", "time_frequencies": 0})
        head = HeadConfig.from_dict({**self.head.to_dict(), "hidden": []})
        return dataclasses.replace(single, encoder=encoder, head=head)


#: ``DynamicSurvival`` trains the linear members of an ensemble (:meth:`ModelConfig.member`) at a learning rate of
#: max(lr, this): their weights start at zero and move about lr per step, and at the default 1e-3 the step budget of a
#: small cohort leaves them far from fitted (suite diagnosis, section 8); a floor, not a factor, so that a large lr
#: (a tuning trial's 1e-2) is not multiplied into a diverging one. Chosen at the default embedding width
#: (:data:`LINEAR_MEMBER_WIDTH`); :func:`linear_member_lr` scales it down for wider embeddings.
LINEAR_MEMBER_LR = 1e-2

#: The embedding width (``d_model``) at which :data:`LINEAR_MEMBER_LR` was measured: the default.
LINEAR_MEMBER_WIDTH = 64


def linear_member_lr(d_model: int) -> float:
    """The learning-rate floor of the linear members of an ensemble whose visit embedding has width ``d_model``:
    LINEAR_MEMBER_LR · min(1, LINEAR_MEMBER_WIDTH / d_model).

    A linear member's outputs are sums over the ``d_model`` coordinates of the embedding sum s_m. In its first
    steps Adam moves every weight by about lr, and the moves of a row agree in sign wherever the coordinates keep
    theirs, so an output moves by up to lr · ‖s_m‖₁ ∝ lr · d_model per step. Scaling the floor by 64 / d_model keeps
    that movement where the suite measured it; at 1e-2, a Weibull member reading a 128-wide embedding took its
    shape to k = e^6.8 within the first epoch on SurvSet ``Rossi`` (an infinite loss, and ``head="weibull",
    d_model=128`` could not be fitted there). Never above LINEAR_MEMBER_LR: narrower embeddings keep the measured
    floor."""
    return LINEAR_MEMBER_LR * min(1.0, LINEAR_MEMBER_WIDTH / d_model)


@dataclass
class ModelOutput:
    """What the model computes for a batch.

    states: ``[B, M, D]`` encoder state per visit; raw: ``[B, M, P]`` head outputs;
    next_numeric: ``[B, M, F]`` predicted numeric features of visit m + 1 (if enabled);
    next_code_logits: ``[B, M, V]`` logits of the codes of visit m + 1 (if enabled).
    """

    states: torch.Tensor
    raw: torch.Tensor
    head: SurvivalHead = field(repr=False)
    next_numeric: torch.Tensor | None = None
    next_code_logits: torch.Tensor | None = None

    @cached_property
    def distribution(self) -> Prediction:
        """The per-visit survival distribution, batch shape ``[B, M]``."""
        return self.head.distribution(self.raw)


class NextVisitPredictor(nn.Module):
    """Linear maps from the state at visit m to visit m + 1's numeric features and code logits."""

    def __init__(self, input_dim: int, n_numeric: int, code_vocab_size: int) -> None:
        super().__init__()
        self.numeric = nn.Linear(input_dim, n_numeric) if n_numeric else None
        self.codes = nn.Linear(input_dim, code_vocab_size) if code_vocab_size else None

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        numeric = self.numeric(states) if self.numeric is not None else None
        codes = self.codes(states) if self.codes is not None else None
        return numeric, codes


#: width of φ(e), the elapsed-time features of the head's input
ELAPSED_FEATURES = 2


def elapsed_features(elapsed: torch.Tensor, time_scale: float) -> torch.Tensor:
    """φ(e) = [log(1 + e/τ) ; e/τ] ``[..., 2]`` of elapsed times e ``[...]`` (days, clamped at 0)."""
    scaled = elapsed.clamp(min=0) / time_scale
    return torch.stack([torch.log1p(scaled), scaled], dim=-1)


def first_records(codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The codes ``[B, M, K]`` of real visits (``mask`` ``[B, M]``) at their first record in each patient's
    history, every later record of the same code (and padding) replaced by :data:`PAD_INDEX`: one stable
    sort of each patient's ``M·K`` codes, whose order keeps earlier visits first."""
    b, m, k = codes.shape
    flat = torch.where(mask.unsqueeze(-1), codes, PAD_INDEX).reshape(b, m * k)
    ordered, order = torch.sort(flat, dim=1, stable=True)
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    keep = torch.empty_like(first).scatter_(1, order, first)
    return torch.where(keep, flat, PAD_INDEX).view(b, m, k)


def new_code_terms(codes: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ_{c first recorded at visit m} u_c ``[B, M, P]``: the sum of ``weight`` ``[V, P]`` rows over the codes
    of visit m recorded at no earlier visit (``weight[PAD_INDEX]`` must be 0), from codes ``[B, M, K]`` and
    ``mask`` ``[B, M]``. Its cumulative sum over visits is the code-history term Σ_{c ∈ C_m} u_c."""
    b, m, k = codes.shape
    if k == 0:  # no visit of the batch records a code
        return weight.new_zeros(b, m, weight.shape[1])
    new = first_records(codes, mask).reshape(b * m, k)
    return nn.functional.embedding_bag(new, weight, mode="sum", padding_idx=PAD_INDEX).view(b, m, -1)


#: :func:`code_history_at` marks the codes of each selection in a dense ``[rows, V]`` table while V is at most this many
#: times the M·K codes listed per selection (then faster than sorting the lists), in row blocks of at most
#: :data:`_PRESENCE_ELEMENTS` elements; beyond, it sorts the lists.
_DENSE_VOCABULARY_FACTOR = 8
_PRESENCE_ELEMENTS = 1 << 22


def code_history_at(codes: torch.Tensor, mask: torch.Tensor, index: tuple[torch.Tensor, torch.Tensor],
                    weight: torch.Tensor) -> torch.Tensor:
    """The code-history term Σ_{c ∈ C_m} u_c ``[n, P]`` at the visits ``index`` = (patient rows ``[n]``, visit positions
    ``[n]``) only: the codes recorded at real visits up to and including m of each selected patient, each counted
    once (``weight[PAD_INDEX]`` must be 0). Equal to the cumulative sum of :func:`new_code_terms` at those visits,
    without forming it at every visit. Each selection's ``[M·K]`` codes are marked in a 0/1 row over the vocabulary
    and multiplied by ``weight`` (small vocabularies, in row blocks), or sorted with repeats replaced by the padding
    index and summed by ``embedding_bag`` (large ones: no ``[n, V]`` table); on the CPU in float32 without gradients,
    by the native kernel (:func:`ehrseq.models.distributions._native.code_history_at`: the same sum, the codes of
    each selection marked in a reused byte table)."""
    rows, positions = index
    n = rows.numel()
    b, m, k = codes.shape
    vocabulary = weight.shape[0]
    if k == 0 or n == 0:
        return weight.new_zeros(n, weight.shape[1])
    native = _native.code_history_at(codes, mask, rows, positions, weight)
    if native is not None:
        return native
    recorded = mask[rows] & (torch.arange(m, device=mask.device) <= positions.unsqueeze(-1))  # [n, M]
    listed = torch.where(recorded.unsqueeze(-1), codes[rows], PAD_INDEX).reshape(n, m * k)
    if vocabulary > _DENSE_VOCABULARY_FACTOR * m * k:
        listed = listed.sort(dim=1).values
        listed[:, 1:].masked_fill_(listed[:, 1:] == listed[:, :-1], PAD_INDEX)  # each code once
        return nn.functional.embedding_bag(listed, weight, mode="sum", padding_idx=PAD_INDEX)
    blocks = []
    for block in listed.split(max(1, _PRESENCE_ELEMENTS // vocabulary)):
        presence = weight.new_zeros(block.shape[0], vocabulary).scatter_(1, block, 1.0)
        presence[:, PAD_INDEX] = 0.0
        blocks.append(presence @ weight)
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks)


class DynamicSurvivalModel(nn.Module):
    """``forward(batch) -> ModelOutput``; causal by construction (the encoders never look ahead)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config.encoder)
        extra = ELAPSED_FEATURES if config.any_time else 0
        self.head = SurvivalHead(config.head, self.encoder.output_dim + extra)
        self.wide = None
        linear_inputs = self.encoder.embedding.output_dim + extra  # [s_m ; φ(e_m)], read by the linear path
        if config.wide:
            self.wide = nn.Linear(linear_inputs, config.head.num_outputs, bias=False)
            nn.init.zeros_(self.wide.weight)
            nn.init.zeros_(self.head.net[-1].weight)
        self.proportional = None
        if config.proportional:
            self.proportional = nn.Linear(linear_inputs, 1, bias=False)
            nn.init.zeros_(self.proportional.weight)
            self.register_buffer("risk_direction", config.head.family.risk_direction(config.head), persistent=False)
        self.code_history = None
        self._new_code_replacement: torch.Tensor | None = None
        if config.code_history:
            self.code_history = nn.Embedding(config.encoder.code_vocab_size, config.head.num_outputs,
                                             padding_idx=PAD_INDEX)
            nn.init.zeros_(self.code_history.weight)
        self.next_visit = (
            NextVisitPredictor(self.encoder.output_dim, config.encoder.n_numeric, config.encoder.code_vocab_size)
            if config.next_visit
            else None
        )

    @property
    def any_time(self) -> bool:
        """Whether the head reads the time elapsed since the visit (its distribution is then the one at
        the prediction time, not at the visit)."""
        return self.config.any_time

    def _encode(self, batch: SequenceBatch, check_values: bool, with_history: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Embedding sums ``[B, M, D]``, encoder states ``[B, M, D]`` and the code-history terms ``[B, M, P]``
        (``None`` without :attr:`ModelConfig.code_history`, or when not ``with_history``)."""
        history = None
        if with_history and self.code_history is not None:
            history = self.new_code_terms(batch).cumsum(dim=1)
        sums, states = self.encoder.encode(batch, check_values=check_values)
        return sums, states, history

    def new_code_terms(self, batch: SequenceBatch) -> torch.Tensor:
        """The code-history term's increments per visit ``[B, M, P]`` (:func:`new_code_terms`; within
        :meth:`replaced_new_code_terms`, the tensor given there). Models with :attr:`ModelConfig.code_history` only."""
        if self._new_code_replacement is not None:
            return self._new_code_replacement
        if self.code_history is None:
            raise ConfigError("this model has no code-history term")
        return new_code_terms(batch.codes, batch.mask, self.code_history.weight)

    @contextmanager
    def replaced_new_code_terms(self, terms: torch.Tensor) -> Iterator[None]:
        """Within the block the code-history increments are ``terms`` ``[B, M, P]`` (e.g. interpolated by an
        attribution method, as :meth:`VisitEmbedding.replaced` does for the embedding sums)."""
        self._new_code_replacement = terms
        try:
            yield
        finally:
            self._new_code_replacement = None

    def _raw(self, states: torch.Tensor, sums: torch.Tensor, history: torch.Tensor | None,
             elapsed: torch.Tensor | None) -> torch.Tensor:
        """Head outputs ``[..., P]`` from states and sums ``[..., D]``, code-history terms ``[..., P]`` (or None)
        and elapsed days ``[...]`` (None: 0)."""
        if self.config.any_time:
            if elapsed is None:
                elapsed = states.new_zeros(states.shape[:-1])
            time = elapsed_features(elapsed.to(states.dtype), self.config.head.time_scale)
            states, sums = torch.cat([states, time], dim=-1), torch.cat([sums, time], dim=-1)
        raw = self.head(states)
        if self.wide is not None:
            raw = raw + self.wide(sums)
        if self.proportional is not None:
            raw = raw + self.proportional(sums) * self.risk_direction
        if history is not None:
            raw = raw + history.to(raw.dtype)
        return raw.float()

    def forward(self, batch: SequenceBatch) -> ModelOutput:
        sums, states, history = self._encode(batch, True)
        raw = self._raw(states, sums, history, batch.elapsed)
        next_numeric = next_codes = None
        if self.next_visit is not None:
            next_numeric, next_codes = self.next_visit(states)
        return ModelOutput(states=states, raw=raw, head=self.head, next_numeric=next_numeric,
                           next_code_logits=next_codes)

    def distribution_at(self, batch: SequenceBatch, index: tuple[torch.Tensor, torch.Tensor], *,
                        elapsed: torch.Tensor | None = None, check_values: bool = True) -> Prediction:
        """The head's distribution at the visits ``index`` = (patient rows ``[n]``, visit positions
        ``[n]``) of ``batch``, batch shape ``[n]``: the encoder reads every visit (the recurrence needs
        them), the head only the selected states. ``elapsed`` ``[n]``: days from each visit to the
        prediction time (models with :attr:`any_time` only; ``None``: 0, the visit itself).
        ``check_values``: see :class:`~ehrseq.models.encoders.embedding.VisitEmbedding`."""
        if elapsed is not None and not self.config.any_time:
            raise ConfigError("this model has no elapsed-time input; condition its visit distribution instead")
        # a few visits per patient (the last, a landmark): the code history at those only
        selected_only = (self.code_history is not None and self._new_code_replacement is None
                         and index[0].numel() <= batch.mask.shape[0])
        sums, states, history = self._encode(batch, check_values, with_history=not selected_only)
        if selected_only:
            history = code_history_at(batch.codes, batch.mask, index, self.code_history.weight)
        elif history is not None:
            history = history[index]
        return self.head.distribution(self._raw(states[index], sums[index], history, elapsed))

    @torch.no_grad()
    def predict(self, batch: SequenceBatch) -> Prediction:
        """The per-visit distribution in eval mode, without gradients."""
        was_training = self.training
        self.eval()
        try:
            return self(batch).distribution
        finally:
            self.train(was_training)
