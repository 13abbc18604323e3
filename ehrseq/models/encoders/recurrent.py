"""Recurrent encoders: unidirectional GRU or LSTM over the embedded visits.

A unidirectional recurrence is causal by construction (h_m = cell(h_{m−1}, e_m)), and because real
visits are left-aligned, the padding that follows them can never reach a real visit's state. The
recurrence therefore runs over the padded batch as it is: no packing, no sort, no host
synchronisation for the lengths. (Packing with ``pack_padded_sequence(enforce_sorted=False)`` gives
the same real-visit states but was slower on CPU even with half of the batch padded, and length
bucketing keeps padding small anyway.) States at padded visits are finite and meaningless.
Bidirectional recurrences are refused by the configuration (they would let visit m see later visits).

Under CPU autocast the recurrence runs in the weights' dtype: oneDNN has no bfloat16 LSTM primitive
on most x86 CPUs (``nn.LSTM`` fails there with "could not create a primitive descriptor"), and the
CPU GRU is not autocast anyway. On CUDA, autocast applies as usual (cuDNN in float16/bfloat16).

At inference on the CPU (no gradients, eval mode) a GRU runs :func:`gru_steps`, one step of every layer at a
time; in float32 with mean-pooled codes, :meth:`RecurrentEncoder.encode` also embeds the visits one step at a time
with the native kernel, so that the recurrence reads each step's ``[B, D]`` inputs from a buffer in cache. Scoring
and ``predict_*`` take this path; the states equal those of ``nn.GRU`` over the PyTorch embedding to float
rounding (tested; ``EHRSEQ_NATIVE=0`` switches the kernels off).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ehrseq.data.batch import SequenceBatch
from ehrseq.errors import ConfigError
from ehrseq.models.distributions import _native
from ehrseq.models.encoders.base import SequenceEncoder
from ehrseq.models.encoders.config import EncoderConfig

_CELLS: dict[str, type[nn.RNNBase]] = {"gru": nn.GRU, "lstm": nn.LSTM}


class RecurrentEncoder(SequenceEncoder):
    """Visit embedding → ``n_layers`` stacked GRU or LSTM layers of width ``d_model`` (``config.kind``).

    ``dropout`` is applied to the visit embedding and between recurrent layers.
    """

    def __init__(self, config: EncoderConfig) -> None:
        if config.kind not in _CELLS:
            raise ConfigError(f"RecurrentEncoder needs kind in {sorted(_CELLS)}, got {config.kind!r}")
        super().__init__(config)
        self.rnn = _CELLS[config.kind](
            input_size=config.d_model,
            hidden_size=config.d_model,
            num_layers=config.n_layers,
            batch_first=True,
            dropout=config.dropout if config.n_layers > 1 else 0.0,
        )

    def encode(self, batch: SequenceBatch, *, check_values: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`SequenceEncoder.encode`; a GRU at inference on the CPU in float32 takes the native path: each
        visit step embedded by :meth:`VisitEmbedding.native_steps` into a ``[B, D]`` buffer and read from it by
        :func:`gru_steps` (no ``[B, M, D]`` embedding or ``[M, B, 3H]`` projection is formed)."""
        if isinstance(self.rnn, nn.GRU) and not torch.is_grad_enabled():
            native = self.embedding.native_steps(batch, check_values=check_values)
            if native is not None:
                sums, embed = native
                b, m = batch.mask.shape
                buffer = sums.new_empty(b, self.rnn.input_size)

                def step_input(t: int) -> torch.Tensor:
                    embed(t, buffer)
                    return buffer

                return sums, gru_steps(self.rnn, step_input, b, m).transpose(0, 1)
        return super().encode(batch, check_values=check_values)

    def contextualize(self, visits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if visits.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return self.contextualize(visits.to(self.rnn.weight_ih_l0.dtype), mask)
        if isinstance(self.rnn, nn.GRU) and visits.device.type == "cpu" and not torch.is_grad_enabled():
            return gru_inference(self.rnn, visits)
        states, _ = self.rnn(visits)
        return states


def gru_inference(rnn: nn.GRU, visits: torch.Tensor) -> torch.Tensor:
    """The states of a batch-first ``rnn`` over ``visits`` ``[B, M, D]`` from a zero initial state, without
    gradients, ``[B, M, H]`` (a view of :func:`gru_steps`'s time-major states): the recurrence of ``nn.GRU``
    (the same values up to float rounding, ~1e-7), faster on the CPU."""
    b, m, _ = visits.shape
    return gru_steps(rnn, lambda t: visits[:, t], b, m).transpose(0, 1)


def gru_steps(rnn: nn.GRU, step_input: Callable[[int], torch.Tensor], batch: int, steps: int) -> torch.Tensor:
    """The states ``[M, B, H]`` (time-major) of ``rnn`` from a zero initial state, without gradients, over the inputs
    ``step_input(t)`` ``[B, D]`` of the steps t = 0 … M − 1, each read once, in order, before the next is asked for:
    the recurrence of ``nn.GRU`` (whatever its ``batch_first``) to float rounding (~1e-7).

    Every layer advances one step at a time: its input product i = x W_i'ᵀ and recurrent product q = h W_h'ᵀ are
    two matrix products into ``[B, 3H]`` buffers, with W_i' = [W_ir ; W_iz ; 2 W_in] and W_h' = [W_hr ; W_hz ;
    2 W_hn], and with c = [b_ir + b_hr ; b_iz + b_hz ; 2 b_in]:

        r, z = σ(i_{r,z} + c_{r,z} + q_{r,z}),   n = 2 σ(i_n + c_n + r ⊙ (q_n + 2 b_hn)) − 1,   h' = n + z ⊙ (h − n),

    where n = tanh(a), a = W_in x + b_in + r ⊙ (W_hn h + b_hn), as 2 σ(2a) − 1 with the factor 2 folded into the
    weights and biases (a sigmoid costs a sixth of a tanh on CPU; the difference is a float rounding, ~1e-7 in
    float32). In float32 on the CPU the gates of a step are one pass of the native kernel
    (:func:`ehrseq.models.distributions._native.gru_step`); otherwise the same formulas as a few whole-tensor
    operations. Nothing of size ``[M, B, 3H]`` is formed; the last layer writes straight into the time-major output.
    Between layers in eval mode there is no dropout; this path is for inference (``torch.no_grad`` /
    ``inference_mode``).
    """
    layers = [_GruLayer(rnn, layer, batch) for layer in range(rnn.num_layers)]
    first = rnn.weight_ih_l0
    out = first.new_empty(steps, batch, rnn.hidden_size)
    states = [first.new_empty(2, batch, rnn.hidden_size) for _ in layers[:-1]]  # h_{t−1} and h_t of lower layers
    for t in range(steps):
        x = step_input(t)
        for k, layer in enumerate(layers):
            top = k == len(layers) - 1
            previous = (out[t - 1] if top else states[k][(t - 1) % 2]) if t else None
            x = layer.step(x, previous, out[t] if top else states[k][t % 2])
    return out


class _GruLayer:
    """One layer of a GRU at inference (see :func:`gru_steps`): its folded weights and the ``[batch, 3H]`` buffers of
    a step's two products."""

    def __init__(self, rnn: nn.GRU, layer: int, batch: int) -> None:
        w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
        hidden = self.hidden = w_hh.shape[1]
        b_ih = getattr(rnn, f"bias_ih_l{layer}", None)
        b_hh = getattr(rnn, f"bias_hh_l{layer}", None)
        b_ih = w_ih.new_zeros(3 * hidden) if b_ih is None else b_ih
        b_hh = w_hh.new_zeros(3 * hidden) if b_hh is None else b_hh
        rz, n = slice(0, 2 * hidden), slice(2 * hidden, 3 * hidden)
        self.input_weight = torch.cat([w_ih[rz], 2 * w_ih[n]]).t().contiguous()  # [D, 3H]
        self.input_bias = torch.cat([b_ih[rz] + b_hh[rz], 2 * b_ih[n]]).contiguous()
        self.recurrent_weight = torch.cat([w_hh[rz], 2 * w_hh[n]]).t().contiguous()  # [H, 3H]
        self.bias_n = (2 * b_hh[n]).contiguous()
        self.native = _native.gru_step_available(self.input_weight, self.recurrent_weight)
        self.inputs = w_ih.new_empty(batch, 3 * hidden)
        self.recurrent = w_ih.new_empty(batch, 3 * hidden)

    def step(self, x: torch.Tensor, previous: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
        """h' ``[B, H]`` written into ``out`` from the input ``x`` ``[B, D]`` and the state ``previous`` (``None``: 0)."""
        torch.mm(x, self.input_weight, out=self.inputs)
        recurrent = None
        if previous is not None:
            recurrent = torch.mm(previous, self.recurrent_weight, out=self.recurrent)
        if self.native:
            _native.gru_step(self.inputs, self.input_bias, recurrent, self.bias_n, previous, out)
            return out
        h = self.hidden
        gates = self.inputs.add_(self.input_bias)
        if recurrent is None:
            recurrent = torch.zeros_like(gates)
        rz = gates[:, :2 * h].add_(recurrent[:, :2 * h]).sigmoid_()
        candidate = torch.addcmul(gates[:, 2 * h:], rz[:, :h], recurrent[:, 2 * h:].add_(self.bias_n))
        candidate = candidate.sigmoid_().mul_(2).sub_(1)
        if previous is None:
            return torch.mul(candidate, 1 - rz[:, h:], out=out)
        return torch.lerp(candidate, previous, rz[:, h:], out=out)
