"""Visit embedding: one vector per visit from its numeric, categorical, code and time inputs.

For visit m of a patient (D = ``d_model``):

    e_m = Dropout(LayerNorm( W_num [x̃_m ; r_m] + Σ_j E_j[c_{m,j}] + pool(codes_m) + W_time [φ(t_m) ; φ(g_m)] + b ))

* x̃_m ``[F]`` numeric values with missing entries set to 0, r_m ``[F]`` their missingness indicators;
* E_j one embedding table per categorical column j (its own cardinality; stored as one table with
  row offsets, which is the same thing);
* pool(codes_m) the codes recorded at the visit, pooled by :func:`mean_pool_codes` or
  :func:`attention_pool_codes`; a visit without codes gets a learned "no codes" vector;
* φ the continuous-time encoding (:mod:`~ehrseq.models.encoders.time_encoding`) of the visit time
  t_m (days since origin) and the gap g_m (days since the previous visit), both divided by the config's
  ``time_unit`` first (the clock's units per day of the model).

Padded visits (``mask == False``) are neutralised before anything is computed — their numeric
values, times and indices may hold any garbage, NaN included — so their embeddings are finite and
never influence a real visit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ehrseq.data.batch import PAD_INDEX, SequenceBatch
from ehrseq.errors import ShapeError
from ehrseq.models.distributions import _native
from ehrseq.models.encoders.config import EmbeddingConfig
from ehrseq.models.encoders.time_encoding import TimeEncoding


# ---------------------------------------------------------------------------------------------- pooling
def _bags(codes: torch.Tensor) -> torch.Tensor:
    """``[*S, K]`` → ``[prod(S), max(K, 1)]`` (an empty last dimension becomes one padding column)."""
    if codes.shape[-1] == 0:
        codes = codes.new_full((*codes.shape[:-1], 1), PAD_INDEX)
    return codes.reshape(-1, codes.shape[-1])


def mean_pool_codes(codes: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Mean embedding of each bag of codes, ignoring :data:`PAD_INDEX`; empty bags give 0.

    codes ``[*S, K]`` int64, table ``[V, D]`` → ``[*S, D]``:
    pool = (1/|k : c_k ≠ 0|) Σ_{k : c_k ≠ 0} table[c_k].

    Computed as a weighted ``embedding_bag`` sum with weights 1/|bag| on codes and 0 on padding
    (rather than ``mode="mean", padding_idx=0``, which takes a much slower kernel on CPU); padding
    entries therefore get no gradient either.
    """
    bags = _bags(codes)
    present = (bags != PAD_INDEX).to(table.dtype)
    weights = present / present.sum(dim=-1, keepdim=True).clamp(min=1.0)
    pooled = F.embedding_bag(bags, table, mode="sum", per_sample_weights=weights)
    return pooled.reshape(*codes.shape[:-1], table.shape[-1])


def attention_pool_codes(codes: torch.Tensor, table: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Attention-weighted embedding of each bag of codes with a learned query; empty bags give 0.

    codes ``[*S, K]`` int64, table ``[V, D]``, query ``[D]`` → ``[*S, D]``:
    s_k = ⟨table[c_k], q⟩ / √D, a = softmax over the non-padding codes of the bag, pool = Σ_k a_k table[c_k].

    The scores are computed once per vocabulary entry and gathered, and the weighted sum is an
    ``embedding_bag``, so no ``[*S, K, D]`` tensor is materialised. The softmax is masked with the
    most negative finite value, not −inf, and its weights are then multiplied by 0 on padding: an
    empty bag gets all-zero weights (a zero vector, zero gradients) instead of NaN.
    """
    bags = _bags(codes)
    present = bags != PAD_INDEX
    scores = (table @ query)[bags] * table.shape[-1] ** -0.5
    scores = scores.masked_fill(~present, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1).to(table.dtype) * present
    pooled = F.embedding_bag(bags, table, mode="sum", per_sample_weights=weights)
    return pooled.reshape(*codes.shape[:-1], table.shape[-1])


# ---------------------------------------------------------------------------------------------- checks
def _check_field(batch: SequenceBatch, name: str, shape: tuple[int | None, ...], kind: str) -> torch.Tensor:
    value = getattr(batch, name)
    ok_dtype = {
        "float": value.dtype.is_floating_point,
        "bool": value.dtype == torch.bool,
        "int64": value.dtype == torch.int64,
    }[kind]
    ok_shape = value.dim() == len(shape) and all(w is None or h == w for h, w in zip(value.shape, shape))
    if not (ok_dtype and ok_shape):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ShapeError(
            f"SequenceBatch.{name} must be a {kind} tensor of shape {want}, got {list(value.shape)} {value.dtype}"
        )
    return value


class VisitEmbedding(nn.Module):
    """Embeds every visit of a :class:`~ehrseq.data.SequenceBatch`: ``forward(batch) -> [B, M, D]``.

    Inputs are checked against the configuration: shapes and dtypes always (free), and — while
    :attr:`check_inputs` is True (the default) — values, at the cost of one host synchronisation per
    call: real visits left-aligned, categorical and code indices inside their vocabularies, numeric
    values finite where not flagged missing, times and gaps finite. A failed check raises
    :class:`~ehrseq.errors.ShapeError` instead of an index error deep inside torch (or a device-side
    assert on CUDA). Set ``check_inputs = False`` for ``torch.compile`` or once the data path is trusted;
    ``forward(batch, check_values=False)`` skips the value checks of one call (the prediction path
    does, for batches made by the fitted feature pipeline, which only produces valid values).
    """

    check_inputs: bool = True
    _replacement: torch.Tensor | None = None

    def __init__(self, config: EmbeddingConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.output_dim = d
        self.numeric = nn.Linear(2 * config.n_numeric, d, bias=False) if config.n_numeric else None
        cards = config.categorical_cardinalities
        if cards:
            self.categorical = nn.Parameter(torch.randn(sum(cards), d))
            starts = torch.tensor((0, *cards[:-1])).cumsum(0)
            self.register_buffer("categorical_offsets", starts, persistent=False)
            self.register_buffer("categorical_sizes", torch.tensor(cards), persistent=False)
        else:
            self.categorical = None
        if config.code_vocab_size:
            self.codes = nn.Embedding(config.code_vocab_size, d, padding_idx=PAD_INDEX)
            self.no_codes = nn.Parameter(torch.randn(d))
            self.code_query = nn.Parameter(torch.randn(d) * d**-0.5) if config.pooling == "attention" else None
        else:
            self.codes = None
            self.code_query = None
        self.time_unit = float(config.time_unit)
        self.time_encoding = TimeEncoding(
            config.time_frequencies, config.time_min_period, config.time_max_period, config.learnable_time_frequencies
        )
        self.time = nn.Linear(2 * self.time_encoding.output_dim, d)
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)

    # ------------------------------------------------------------------ checks
    def check_batch(self, batch: SequenceBatch, *, check_values: bool = True) -> None:
        """Raise :class:`ShapeError` when ``batch`` does not fit this embedding (see class docstring)."""
        cfg = self.config
        mask = batch.mask
        if mask.dim() != 2 or mask.dtype != torch.bool:
            raise ShapeError(f"SequenceBatch.mask must be a [B, M] bool tensor, got {list(mask.shape)} {mask.dtype}")
        b, m = mask.shape
        numeric = _check_field(batch, "numeric", (b, m, cfg.n_numeric), "float")
        _check_field(batch, "numeric_missing", (b, m, cfg.n_numeric), "bool")
        categorical = _check_field(batch, "categorical", (b, m, len(cfg.categorical_cardinalities)), "int64")
        codes = _check_field(batch, "codes", (b, m, None), "int64")
        time = _check_field(batch, "time", (b, m), "float")
        gap = _check_field(batch, "gap", (b, m), "float")
        if not (self.check_inputs and check_values):
            return
        real = mask.unsqueeze(-1)
        problems = {
            "real visits must be left-aligned in mask (mask[b, :n_b] True, False after)":
                (mask[:, 1:] & ~mask[:, :-1]).any(),
            "numeric values must be finite where numeric_missing is False":
                (real & ~batch.numeric_missing & ~torch.isfinite(numeric)).any(),
            "time and gap must be finite at real visits":
                (mask & ~(torch.isfinite(time) & torch.isfinite(gap))).any(),
            f"codes must lie in [0, code_vocab_size = {cfg.code_vocab_size}) at real visits":
                (real & ((codes < 0) | (codes >= max(cfg.code_vocab_size, 1)))).any(),
        }
        if self.categorical is not None:
            out = (categorical < 0) | (categorical >= self.categorical_sizes)
            problems[
                f"categorical indices must lie in [0, cardinality) per column, "
                f"cardinalities {list(cfg.categorical_cardinalities)}, at real visits"
            ] = (real & out).any()
        flags = torch.stack(list(problems.values())).tolist()
        failed = [message for message, flag in zip(problems, flags) if flag]
        if failed:
            raise ShapeError("SequenceBatch does not fit the visit embedding: " + "; ".join(failed))

    # ------------------------------------------------------------------ forward
    def forward(self, batch: SequenceBatch, *, check_values: bool = True) -> torch.Tensor:
        """Visit embeddings ``[B, M, D]`` (finite everywhere, padding included): :meth:`normalise` of :meth:`sums`."""
        return self.normalise(self.sums(batch, check_values=check_values))

    def sums(self, batch: SequenceBatch, *, check_values: bool = True) -> torch.Tensor:
        """The embedding sum before its normalisation, ``[B, M, D]`` (affine in every input; inside
        :meth:`replaced`, the sums given there).

        The dense terms are one matrix product: [φ(t) ; φ(g) ; x̃ ; r ; 1{no codes}] (``[B·M, K]``)
        times [W_time, W_num, v_no_codes]ᵀ plus the time bias, and the categorical and code
        embeddings are added to it in place; the same sum as the formula in the module docstring,
        without a ``[B, M, D]`` temporary per term.
        """
        if self._replacement is not None:
            return self._replacement
        self.check_batch(batch, check_values=check_values)
        dtype = self.time.weight.dtype
        mask = batch.mask
        shape = (*mask.shape, self.output_dim)
        real = mask.reshape(-1, 1)

        dense, weights = [self._time_terms(batch.time, batch.gap, real)], [self.time.weight]
        if self.numeric is not None:
            missing = batch.numeric_missing.reshape(real.shape[0], -1)
            dense += [torch.where(real & ~missing, batch.numeric.reshape(missing.shape).to(dtype), 0.0),
                      missing.to(dtype)]
            weights.append(self.numeric.weight)
        codes = None
        if self.codes is not None:
            codes = torch.where(real, batch.codes.reshape(real.shape[0], -1), PAD_INDEX)
            dense.append((codes == PAD_INDEX).all(dim=-1, keepdim=True).to(dtype))
            weights.append(self.no_codes.unsqueeze(-1))
        out = torch.addmm(self.time.bias, torch.cat(dense, dim=-1), torch.cat(weights, dim=-1).t())

        if self.categorical is not None:
            index = torch.where(real, batch.categorical.reshape(real.shape[0], -1), PAD_INDEX) + self.categorical_offsets
            out.add_(F.embedding_bag(index, self.categorical, mode="sum"))
        if codes is not None:
            out.add_(self._pooled_codes(codes))
        return out.view(shape)

    def native_steps(self, batch: SequenceBatch, *, check_values: bool = True
                     ) -> tuple[torch.Tensor, Callable[[int, torch.Tensor], None]] | None:
        """The embedding of ``batch`` one visit step at a time by the native kernel
        (:func:`ehrseq.models.distributions._native.visit_embedding_steps`): the table of :meth:`sums` ``[B, M, D]``
        and ``embed(m, out)``, which writes :meth:`forward` at step m into ``out`` ``[B, D]`` and the sums of step m
        into the table — for a recurrence that reads its inputs step by step, with nothing of ``[B, M, D]`` but the
        sums written. ``None`` where the kernel does not apply: with gradients, in training mode, under autocast,
        inside :meth:`replaced`, with attention-pooled codes, off the CPU, outside float32, or where the kernel
        was not built. The same values as the PyTorch path to float rounding (~1e-6)."""
        weight = self.time.weight
        # the kernel's own conditions that need no batch checked first, so that a batch falling back to
        # :meth:`sums` is checked there only (the value checks synchronise with the device)
        if (self._replacement is not None or self.training or torch.is_grad_enabled() or self.code_query is not None
                or torch.is_autocast_enabled(batch.mask.device.type) or not _native.available()
                or weight.dtype != torch.float32 or weight.device.type != "cpu"):
            return None
        self.check_batch(batch, check_values=check_values)
        d = self.output_dim
        numeric = self.numeric.weight if self.numeric is not None else weight.new_zeros(d, 0)
        if self.categorical is not None:
            table, offsets, sizes = self.categorical, self.categorical_offsets, self.categorical_sizes
        else:
            table, offsets = weight.new_zeros(0, d), torch.zeros(0, dtype=torch.int64, device=weight.device)
            sizes = offsets
        codes = self.codes is not None
        return _native.visit_embedding_steps(
            batch.time, batch.gap, batch.mask, batch.numeric, batch.numeric_missing, batch.categorical, offsets, sizes,
            table,
            batch.codes if codes else None, self.codes.weight if codes else None, self.no_codes if codes else None,
            self.time_encoding.log_frequency.float().exp(), self.time_unit, weight, numeric, self.time.bias,
            self.norm.weight, self.norm.bias, self.norm.eps)

    def _time_terms(self, time: torch.Tensor, gap: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """[φ(t) ; φ(g)] ``[B·M, 2T]`` of the visit times and gaps (0 at padding)."""
        dtype = self.time.weight.dtype
        times = torch.stack([time, gap], dim=-1).reshape(-1, 2)
        times = torch.where(real, times.to(torch.promote_types(dtype, torch.float32)), 0.0) / self.time_unit
        return self.time_encoding(times).flatten(-2).to(dtype)

    def _pooled_codes(self, codes: torch.Tensor) -> torch.Tensor:
        table = self.codes.weight
        return (mean_pool_codes(codes, table) if self.code_query is None
                else attention_pool_codes(codes, table, self.code_query))

    # ------------------------------------------------------------------ decomposition (explanations)
    def parts(self, batch: SequenceBatch) -> dict[str, torch.Tensor]:
        """The inputs of the embedding sum, one entry per input, for attribution methods:

        ``values [B, M, F]`` x̃ (0 where missing or padded), ``missing [B, M, F]`` r as floats,
        ``categorical [B, M, C, D]`` the embedding E_j[c_mj] of every categorical column,
        ``codes [B, M, D]`` pool(codes_m) + 1{no codes} v_no_codes, and ``time [B, M, 2T]`` the
        continuous-time encodings [φ(t_m) ; φ(g_m)] of the visit time and gap (:meth:`time_parts`).
        :meth:`normalise` of :meth:`sum_parts` of them equals :meth:`forward` of the batch; the sum before
        the normalisation is affine in every part, so integrated gradients over the parts split it by input.
        """
        self.check_batch(batch)
        dtype = self.time.weight.dtype
        mask = batch.mask
        real = mask.unsqueeze(-1)
        b, m = mask.shape
        d = self.output_dim
        values = torch.where(real & ~batch.numeric_missing, batch.numeric.to(dtype), 0.0)
        out = {"values": values, "missing": batch.numeric_missing.to(dtype),
               "time": self.time_parts(batch.time, batch.gap, mask)}
        n_categorical = batch.categorical.shape[-1] if self.categorical is not None else 0
        if self.categorical is not None:
            index = torch.where(real, batch.categorical, PAD_INDEX) + self.categorical_offsets
            out["categorical"] = self.categorical[index]
        else:
            out["categorical"] = values.new_zeros(b, m, n_categorical, d)
        if self.codes is not None:
            codes = torch.where(real, batch.codes, PAD_INDEX).reshape(b * m, -1)
            empty = (codes == PAD_INDEX).all(dim=-1, keepdim=True).to(dtype)
            out["codes"] = (self._pooled_codes(codes) + empty * self.no_codes).view(b, m, d)
        else:
            out["codes"] = values.new_zeros(b, m, d)
        return out

    @contextlib.contextmanager
    def replaced(self, sums: torch.Tensor) -> Iterator[None]:
        """Within the block, :meth:`sums` returns ``sums [B, M, D]`` (e.g. :meth:`sum_parts` of interpolated
        parts) instead of summing its batch's inputs, and :meth:`forward` their normalisation: attribution
        methods run the model's own forward pass on inputs that are not a batch of indices."""
        self._replacement = sums
        try:
            yield
        finally:
            self._replacement = None

    def time_parts(self, time: torch.Tensor, gap: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[φ(t) ; φ(g)] ``[B, M, 2T]`` for visit times and gaps ``[B, M]`` (days; 0 at padding)."""
        return self._time_terms(time, gap, mask.reshape(-1, 1)).view(*mask.shape, -1)

    def sum_parts(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """The embedding sum before its normalisation, ``[B, M, D]``, from :meth:`parts` (any real values:
        they may be interpolated): W_time [φ(t) ; φ(g)] + W_num [x̃ ; r] + Σ_j E_j + codes + b, affine in
        every part. :meth:`normalise` of it is the visit embedding."""
        time = parts["time"]
        b, m = time.shape[:2]
        dense, weights = [time.reshape(b * m, -1)], [self.time.weight]
        if self.numeric is not None:
            dense += [parts["values"].reshape(b * m, -1), parts["missing"].reshape(b * m, -1)]
            weights.append(self.numeric.weight)
        out = torch.addmm(self.time.bias, torch.cat(dense, dim=-1), torch.cat(weights, dim=-1).t())
        return out.view(b, m, -1) + parts["categorical"].sum(dim=-2) + parts["codes"]

    def normalise(self, sums: torch.Tensor) -> torch.Tensor:
        """Visit embeddings ``[B, M, D]`` from the sums of :meth:`sum_parts`: Dropout(LayerNorm(s))."""
        return self.dropout(self.norm(sums))
