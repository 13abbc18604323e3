"""The optional native kernels of losses, of inference and of batch padding, loaded through :mod:`ctypes`.

``_native_kernels.c`` (built with the package where a C compiler is found, see ``setup.py``) runs, in one pass per
row on POSIX threads and several times faster on CPU than the same terms as whole-tensor operations:

* :func:`grid_crps` — :class:`~ehrseq.models.distributions.grid._ConstantHazardCRPS`: per bin the closed-form
  integrals of F² and S² masked by the bins of the targets (one vectorised loop), then the targets' own bins and
  the exponential tail, and the gradient;
* :func:`location_scale_crps` — :class:`~ehrseq.losses.functional.crps._LocationScaleCRPS` (log-normal, Weibull):
  the Gauss–Legendre panels of the lower and tail terms (vectorised over the nodes, with glibc's vector math where
  the build found it), the Weibull's series and the saturated parts, and the gradient in μ and log σ;
* :func:`pair_code_bce` and :func:`pair_code_bce_gradient` — :class:`~ehrseq.losses.functional.auxiliary._PairCodeBCE`:
  the mean BCE over the vocabulary read from the logit rows of the pairs of visits, and its gradient written once
  into the whole ``[R, V]`` table (no gathered copy, no table of zeros to add into);
* :func:`mass_nll` and :func:`mass_nll_gradient` — the PMF (DeepHit) likelihood of
  :func:`~ehrseq.losses.functional.deephit.pmf_nll`, competing risks included: per real visit the log-sum-exps of
  its logit row over all outputs and over those its target keeps, and the gradient written once into the whole
  table;
* :func:`linear_hazard_log_likelihood` — log f or log S of the piecewise-linear hazard at one duration per row
  (:class:`~ehrseq.models.distributions.piecewise.PiecewiseLinearHazard`), and its gradient in the logits;
* :func:`weibull_mixture_log_likelihood` and :func:`weibull_mixture_gradient` — log f or log S of the Weibull
  mixtures (:class:`~ehrseq.models.distributions.mixture.PackedWeibullMixture`, MENSA's marginals) read in place
  from the packed parameter rows of the real visits, one log-sum-exp over the components each (vectorised over
  the mixtures), and the gradient written once into the whole parameter table.

At inference, in float32 (:mod:`ehrseq.models.encoders.recurrent`, the scorer's and ``predict_*``'s path):

* :func:`visit_embedding_steps` — the visit embedding of one step of a padded batch (the sum of its terms, kept in
  registers over the width, and its layer norm), the inputs of the visits ahead prefetched;
* :func:`gru_step` — the gates and the new state of one GRU step after its two matrix products;
* :func:`code_history_at` — the code-history term of the linear path at the selected visits of a padded batch (the
  distinct codes recorded so far of each, their weight rows summed), without a presence table over the vocabulary.

And the data path: :func:`gather_rows`, the row gather that pads a batch from the flat visit table
(:mod:`ehrseq.data.sequence`), and :func:`numeric_feature`, a numeric feature column with missing values encoded in
one pass — standardised, carried forward, with its measurement history (:mod:`ehrseq.data.features`).

The PyTorch (and NumPy) implementations stay the reference: they run on other devices, where the library was not built (or
was built from another version of its source), for grids of more than :func:`max_bins` bins, for mixtures of more
than :func:`max_components` components, and wherever
``EHRSEQ_NATIVE=0`` is set; tests hold the two equal.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import os
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch

from ehrseq.errors import ShapeError

#: Rows per thread below which another thread costs more than it saves.
_ROWS_PER_THREAD = 1024
#: The same for the visit embedding, whose rows cost ~1 µs each (a sum of ~100 rows of the width).
_VISITS_PER_THREAD = 128
#: The suffix of each entry point's version for a floating type (``ehrseq_<kernel>_<suffix>``).
_SUFFIXES = {torch.float32: "f32", torch.float64: "f64"}

#: The interface version of the entry points, ``EHRSEQ_NATIVE_KERNELS_ABI`` in ``_native_kernels.c``: a library
#: built from another version of the source is not called (its entry points may take other arguments).
_ABI = 11


@functools.lru_cache(maxsize=1)
def _library() -> tuple[ctypes.CDLL | None, str]:
    """(the loaded library or None, a sentence saying which or why not)."""
    if os.environ.get("EHRSEQ_NATIVE", "1").strip().lower() in {"0", "false", "no", "off"}:
        return None, "native kernel disabled by EHRSEQ_NATIVE"
    try:
        module = importlib.import_module("ehrseq.models.distributions._native_kernels")
    except ImportError as error:
        return None, f"native kernel not built ({error}); the PyTorch implementation runs"
    library = ctypes.CDLL(module.__file__)
    try:
        library.ehrseq_native_kernels_abi.restype = ctypes.c_int
        abi = library.ehrseq_native_kernels_abi()
    except AttributeError:
        abi = None
    if abi != _ABI:
        return None, f"native kernel at {module.__file__} is of another version (reinstall ehrseq to rebuild it)"
    pointer, size, count = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    arguments = {  # of each entry point, in the order of its C signature (the last: the number of threads)
        "grid_crps": [size, size] + [pointer] * 13 + [count],
        "location_scale_crps": [size, count, count, pointer, pointer, count] + [pointer] * 8 + [count],
        "pair_code_bce_forward": [size] * 4 + [pointer] * 4 + [count],
        "pair_code_bce_backward": [size] * 4 + [pointer] * 6 + [count],
        "mass_nll_forward": [size] * 4 + [pointer] * 6 + [count],
        "mass_nll_backward": [size] * 4 + [pointer] * 8 + [count],
        "linear_hazard_log_likelihood": [size, size] + [pointer] * 4 + [ctypes.c_double] + [pointer] * 2 + [count],
        "weibull_mixture_forward": [size] * 4 + [pointer] * 4 + [ctypes.c_double] + [pointer] * 2 + [count],
        "weibull_mixture_backward": [size] * 4 + [pointer] * 4 + [count],
    }
    for name, types in arguments.items():
        for suffix in ("f32", "f64"):
            entry = getattr(library, f"ehrseq_{name}_{suffix}")
            entry.argtypes, entry.restype = types, ctypes.c_int
    inference = {  # float32 only
        "visit_embedding": [size] * 9 + [pointer] * 13 + [ctypes.c_double] + [pointer] * 5 + [ctypes.c_double]
        + [pointer] * 2 + [count],
        "gru_step": [size] * 2 + [pointer] * 6 + [count],
        "code_history": [size] * 5 + [pointer] * 6 + [count],
    }
    for name, types in inference.items():
        entry = getattr(library, f"ehrseq_{name}_f32")
        entry.argtypes, entry.restype = types, ctypes.c_int
    library.ehrseq_visit_embedding_max_terms.restype = ctypes.c_int
    library.ehrseq_gather_rows.argtypes, library.ehrseq_gather_rows.restype = [size] * 5 + [pointer] * 4 + [count], \
        ctypes.c_int
    library.ehrseq_numeric_feature.argtypes = [size] + [pointer] * 4 + [ctypes.c_double] * 3 + [count] + [pointer] * 3
    library.ehrseq_numeric_feature.restype = ctypes.c_int
    library.ehrseq_visit_embedding_max_frequencies.restype = ctypes.c_int
    library.ehrseq_grid_crps_max_bins.restype = ctypes.c_int
    library.ehrseq_weibull_mixture_max_components.restype = ctypes.c_int
    return library, f"native kernel loaded from {module.__file__}"


def status() -> str:
    """Whether the native kernels are in use, and from which file (or why not)."""
    return _library()[1]


#: Set within :func:`disabled`.
_switched_off = False


def available() -> bool:
    """True when the native kernels are loaded and not switched off by :func:`disabled` (they then serve CPU tensors
    of float32 and float64)."""
    return not _switched_off and _library()[0] is not None


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within the block the PyTorch implementation runs even where the kernel is loaded (to compare the two in one
    process, as ``python -m ehrseq.bench losses`` does); not for use from several threads at once."""
    global _switched_off
    before, _switched_off = _switched_off, True
    try:
        yield
    finally:
        _switched_off = before


def max_bins() -> int:
    """The most grid bins the native kernel takes (0 when it is not loaded)."""
    library = _library()[0]
    return int(library.ehrseq_grid_crps_max_bins()) if library is not None else 0


def max_components() -> int:
    """The most mixture components the native Weibull-mixture likelihood takes (0 when it is not loaded)."""
    library = _library()[0]
    return int(library.ehrseq_weibull_mixture_max_components()) if library is not None else 0


Outputs = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]


def grid_crps(log_s: torch.Tensor, knots: torch.Tensor, steps: tuple[torch.Tensor, torch.Tensor], log_rate: torch.Tensor,
              grid: torch.Tensor, y: torch.Tensor, start: torch.Tensor, gradients: bool, cdf: bool) -> Outputs | None:
    """The constant-hazard Survival-CRPS natively, or ``None`` where the kernel does not apply.

    ``log_s`` log S(τ_l) and ``knots`` S(τ_l) ``[N, L+1]``, ``steps`` (−ΔH_l, 1 − e^{−ΔH_l}) ``[N, L]`` each,
    ``log_rate`` log λ ``[N]``, ``grid`` ``[L+1]``, ``y`` and ``start`` ``[N]`` (``start`` = ∞: no tail term), on the
    CPU, taken in the floating type of ``log_s``. Returns what
    :func:`~ehrseq.models.distributions.grid._pytorch_crps` returns — the score ``[N]`` and, with ``gradients``,
    its gradient in log S ``[N, L+1]`` and in log λ, F(y)² (if ``cdf``) and S(a)² ``[N]`` — computed by the terms of
    :class:`~ehrseq.models.distributions.grid._ConstantHazardCRPS`, whose docstring states them.
    """
    library = _library()[0] if available() else None
    suffix = _SUFFIXES.get(log_s.dtype)
    rows, width = log_s.shape[0], log_s.shape[-1] - 1
    if library is None or suffix is None or log_s.device.type != "cpu" or not 1 <= width <= max_bins():
        return None
    tables = [t.to(dtype=log_s.dtype).contiguous() for t in (log_s, knots, *steps, grid, y, start, log_rate)]
    shapes = [(rows, width + 1)] * 2 + [(rows, width)] * 2 + [(width + 1,), (rows,), (rows,), (rows,)]
    if any(t.device != log_s.device or tuple(t.shape) != shape for t, shape in zip(tables, shapes)):
        raise ValueError("native Survival-CRPS: inputs of mismatched shapes or devices")
    score = log_s.new_empty(rows)
    grad, rate_gradient, at_a = (log_s.new_empty(rows, width + 1), log_s.new_empty(rows), log_s.new_empty(rows)) \
        if gradients else (None, None, None)
    cdf_squared = log_s.new_empty(rows) if gradients and cdf else None
    outputs = [score, grad, rate_gradient, at_a, cdf_squared]
    _checked_call(library, f"ehrseq_grid_crps_{suffix}", rows, width, *(t.data_ptr() for t in tables),
                  *(t.data_ptr() if t is not None else None for t in outputs), _threads(rows))
    return score, grad, rate_gradient, cdf_squared, at_a


#: The noises of :func:`location_scale_crps`, numbered as in ``_location_scale_rows.h``.
LOCATION_SCALE_KINDS = {"normal": 0, "min_gumbel": 1}


def location_scale_crps(kind: str, loc: torch.Tensor, log_scale: torch.Tensor, y: torch.Tensor, start: torch.Tensor,
                        rule: tuple[torch.Tensor, torch.Tensor], series: torch.Tensor | None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The Survival-CRPS of log R = μ + σε natively, or ``None`` where the kernel does not apply.

    ``kind`` names the law of ε (:data:`LOCATION_SCALE_KINDS`); ``loc`` μ, ``log_scale`` log σ, ``y`` and
    ``start`` a ``[N]`` (``start`` = ∞: no tail term) on the CPU, taken in the floating type of ``loc``; ``rule``
    the Gauss–Legendre nodes and weights on [0, 1] ``[P]``; ``series`` the power-series coefficients below the
    windows ``[4, T]`` (lower p², lower p·g, tail p², tail p·g) or ``None``. Returns the score, ∂/∂μ and ∂/∂log σ
    ``[N]``, computed by the terms of :class:`~ehrseq.losses.functional.crps._LocationScaleCRPS`.
    """
    library = _library()[0] if available() else None
    suffix = _SUFFIXES.get(loc.dtype)
    if library is None or suffix is None or loc.device.type != "cpu":
        return None
    rows = loc.shape[0]
    nodes, weights = (t.to(dtype=loc.dtype).contiguous() for t in rule)
    table = (series if series is not None else loc.new_zeros(4, 0)).to(dtype=loc.dtype).contiguous()
    columns = [t.to(dtype=loc.dtype).contiguous() for t in (loc, log_scale, y, start)]
    if any(t.device != loc.device or tuple(t.shape) != (rows,) for t in columns) \
            or nodes.shape != weights.shape or nodes.ndim != 1 or table.ndim != 2 or table.shape[0] != 4:
        raise ValueError("native Survival-CRPS: inputs of mismatched shapes or devices")
    outputs = [loc.new_empty(rows) for _ in range(3)]
    _checked_call(library, f"ehrseq_location_scale_crps_{suffix}", rows, LOCATION_SCALE_KINDS[kind], nodes.shape[0],
                  nodes.data_ptr(), weights.data_ptr(), table.shape[1], table.data_ptr(),
                  *(t.data_ptr() for t in columns), *(t.data_ptr() for t in outputs), _threads(rows))
    return outputs[0], outputs[1], outputs[2]


def _threads(rows: int, per_thread: int = _ROWS_PER_THREAD) -> int:
    """Threads for a kernel over ``rows`` rows: one per ``per_thread`` rows, at least 1, at most torch's."""
    return max(1, min(torch.get_num_threads(), rows // per_thread))


#: A kernel's status other than success (0, or −1: a thread did not start and its rows ran on the calling thread) →
#: the error it raises, where the kernel has one of its own: (error class, message).
StatusErrors = Mapping[int, tuple[type[Exception], str]]


def _raise_for_status(entry: str, status: int, errors: StatusErrors | None = None) -> None:
    """Nothing for a status of success; the error of ``errors`` for a status it lists; else a RuntimeError naming the
    kernel ``entry``."""
    if status in (0, -1):
        return
    if errors is not None and status in errors:
        kind, message = errors[status]
        raise kind(message)
    raise RuntimeError(f"native kernel {entry} failed (status {status})")


def _checked_call(library: ctypes.CDLL, entry: str, *arguments: object, errors: StatusErrors | None = None) -> None:
    """Call the kernel ``entry`` of ``library`` with ``arguments``; its status checked by :func:`_raise_for_status`."""
    _raise_for_status(entry, getattr(library, entry)(*arguments), errors)


def _row_index(total: int, rows: torch.Tensor) -> torch.Tensor:
    """The position of each of ``total`` rows in ``rows`` (distinct), −1 for the others, ``[total]`` int64."""
    return torch.full((total,), -1, dtype=torch.int64).index_copy_(0, rows, torch.arange(rows.shape[0]))


def _pair_inputs(logits: torch.Tensor, rows: torch.Tensor, codes: torch.Tensor
                 ) -> tuple[ctypes.CDLL, str, list[torch.Tensor]] | None:
    """The library, the entry suffix and the checked contiguous inputs of the pair code loss, or ``None``."""
    library = _library()[0] if available() else None
    suffix = _SUFFIXES.get(logits.dtype)
    if library is None or suffix is None or logits.device.type != "cpu" or logits.dim() != 2:
        return None
    tables = [logits.contiguous(), rows.to(torch.int64).contiguous(), codes.to(torch.int64).contiguous()]
    if rows.dim() != 1 or codes.dim() != 2 or codes.shape[0] != rows.shape[0] \
            or any(t.device != logits.device for t in tables):
        raise ValueError("native pair code loss: inputs of mismatched shapes or devices")
    return library, suffix, tables


def pair_code_bce(logits: torch.Tensor, rows: torch.Tensor, codes: torch.Tensor) -> torch.Tensor | None:
    """ℓ_p = (1/V) [Σ_v softplus(z_{r_p v}) − Σ_{v ∈ C_p} z_{r_p v}] ``[P]`` natively, or ``None`` where the kernel
    does not apply: ``logits [R, V]``, distinct ``rows [P]`` and ``codes [P, K]`` (indices into the vocabulary, in
    any order) whose set C_p counts each listed code once and never the padding index 0, on the CPU in the
    floating type of ``logits``."""
    found = _pair_inputs(logits, rows, codes)
    if found is None:
        return None
    library, suffix, tables = found
    loss = logits.new_empty(rows.shape[0])
    threads = _threads(rows.shape[0])
    _checked_call(library, f"ehrseq_pair_code_bce_forward_{suffix}", logits.shape[0], logits.shape[1], rows.shape[0],
                  codes.shape[1], *(t.data_ptr() for t in tables), loss.data_ptr(), threads)
    return loss


def pair_code_bce_gradient(logits: torch.Tensor, rows: torch.Tensor, codes: torch.Tensor, grad: torch.Tensor
                           ) -> torch.Tensor | None:
    """The gradient of Σ_p g_p ℓ_p (:func:`pair_code_bce`, ``grad`` = g ``[P]``) in the logits, ``[R, V]``:
    (σ(z_{r_p v}) − 1{v ∈ C_p}) g_p / V in the rows r_p, zero in the others; ``None`` where the kernel does not
    apply."""
    found = _pair_inputs(logits, rows, codes)
    if found is None:
        return None
    library, suffix, tables = found
    total, pairs = logits.shape[0], rows.shape[0]
    incoming = grad.to(logits.dtype).contiguous()
    if incoming.shape != (pairs,):
        raise ValueError("native pair code loss: one incoming gradient per pair expected")
    pair_of, table = _row_index(total, tables[1]), logits.new_empty(total, logits.shape[1])
    threads = _threads(total)
    _checked_call(library, f"ehrseq_pair_code_bce_backward_{suffix}", total, logits.shape[1], pairs, codes.shape[1],
                  *(t.data_ptr() for t in tables), incoming.data_ptr(), pair_of.data_ptr(), table.data_ptr(), threads)
    return table


def mass_nll(logits: torch.Tensor, rows: torch.Tensor, index: torch.Tensor, threshold: torch.Tensor, bins: int
             ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The PMF negative log-likelihood of the logit rows ``rows [N]`` (distinct) of ``logits [R, K·L + 1]`` natively,
    or ``None`` where the kernel does not apply: lse(z) − lse(z on A) with A = {``index``} for an event
    (``index`` ≥ 0) and every output of bin ≥ ``threshold`` plus the last one when censored (``index`` = −1).
    Returns the loss ``[N]`` and the two log-sum-exps ``[N, 2]`` that :func:`mass_nll_gradient` reads."""
    library = _library()[0] if available() else None
    suffix = _SUFFIXES.get(logits.dtype)
    if library is None or suffix is None or logits.device.type != "cpu" or logits.dim() != 2:
        return None
    tables = [logits.contiguous()] + [t.to(torch.int64).contiguous() for t in (rows, index, threshold)]
    visits = rows.shape[0]
    if any(tuple(t.shape) != (visits,) or t.device != logits.device for t in tables[1:]):
        raise ValueError("native PMF likelihood: inputs of mismatched shapes or devices")
    sums, loss = logits.new_empty(visits, 2), logits.new_empty(visits)
    threads = _threads(visits)
    _checked_call(library, f"ehrseq_mass_nll_forward_{suffix}", logits.shape[0], logits.shape[1], visits, int(bins),
                  *(t.data_ptr() for t in tables), sums.data_ptr(), loss.data_ptr(), threads)
    return loss, sums


def mass_nll_gradient(logits: torch.Tensor, rows: torch.Tensor, index: torch.Tensor, threshold: torch.Tensor,
                      bins: int, sums: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The gradient of Σ_n g_n loss_n (:func:`mass_nll`; ``sums`` its second result, ``grad`` = g ``[N]``) in the
    logits, ``[R, K·L + 1]``: g_n (softmax(z) − softmax(z on A_n)) in the rows r_n, zero in the others."""
    library = _library()[0]
    suffix = _SUFFIXES[logits.dtype]
    tables = [logits.contiguous()] + [t.to(torch.int64).contiguous() for t in (rows, index, threshold)]
    incoming, visit_of = grad.to(logits.dtype).contiguous(), _row_index(logits.shape[0], tables[1])
    sums = sums.contiguous()
    table = logits.new_empty(logits.shape)
    threads = _threads(logits.shape[0])
    _checked_call(library, f"ehrseq_mass_nll_backward_{suffix}", logits.shape[0], logits.shape[1], rows.shape[0],
                  int(bins), *(t.data_ptr() for t in tables), sums.data_ptr(), incoming.data_ptr(),
                  visit_of.data_ptr(), table.data_ptr(), threads)
    return table


def linear_hazard_log_likelihood(logits: torch.Tensor, grid: torch.Tensor, y: torch.Tensor, observed: torch.Tensor,
                                 log_unit: float, grad: torch.Tensor | None = None) -> torch.Tensor | None:
    """The piecewise-linear hazard's log f(y) where ``observed``, else log S(y), of the rows of ``logits [N, L+1]``
    (rates e^{z}/u per day, u = e^{``log_unit``}) at ``y [N]`` on ``grid [L+1]`` — with ``grad [N]`` instead, the
    gradient of Σ grad·value in the logits ``[N, L+1]`` — natively, or ``None`` where the kernel does not apply (not
    on the CPU, another type, more than :func:`max_bins` bins)."""
    library = _library()[0] if available() else None
    suffix = _SUFFIXES.get(logits.dtype)
    knots = logits.shape[-1]
    if library is None or suffix is None or logits.device.type != "cpu" or logits.dim() != 2 \
            or not 2 <= knots <= max_bins() + 1:
        return None
    rows = logits.shape[0]
    tables = [logits.contiguous()] + [t.to(logits.dtype).contiguous() for t in (grid, y)]
    flags = observed.to(torch.uint8).contiguous()
    if tuple(tables[1].shape) != (knots,) or tuple(tables[2].shape) != (rows,) or tuple(flags.shape) != (rows,):
        raise ValueError("native linear-hazard likelihood: inputs of mismatched shapes")
    incoming = None if grad is None else grad.to(logits.dtype).contiguous()
    out = logits.new_empty(rows) if grad is None else logits.new_empty(rows, knots)
    threads = _threads(rows)
    _checked_call(library, f"ehrseq_linear_hazard_log_likelihood_{suffix}", rows, knots,
                  *(t.data_ptr() for t in tables), flags.data_ptr(), float(log_unit),
                  None if incoming is None else incoming.data_ptr(), out.data_ptr(), threads)
    return out


def weibull_mixture_log_likelihood(table: torch.Tensor, rows: torch.Tensor, y: torch.Tensor, observed: torch.Tensor,
                                   log_scale_offset: float, gradient: bool = False
                                   ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """log f(y) where ``observed``, else log S(y), of the Weibull mixtures in the rows ``rows [N]`` (distinct) of
    ``table [R, K, 3C]`` natively, or ``None`` where the kernel does not apply (not on the CPU, another type, more
    than :func:`max_components` components).

    Each mixture is packed as [gate logits ; log λ_c − ``log_scale_offset`` ; log k_c] (as in
    :class:`~ehrseq.models.distributions.mixture.PackedWeibullMixture`); ``y [N, K]`` are durations > 0 and
    ``observed [N, K]`` their flags. Returns the values ``[N, K]`` — per mixture m = logsumexp_c v_c of
    v_c = log w_c + log f_c(y) or log w_c + log S_c(y) (the latter clamped at 0), the terms of
    :class:`~ehrseq.models.distributions.mixture._MixtureLogLikelihood` — and, with ``gradient``, the gradient of
    each value in its mixture's parameters ``[N, K, 3C]``: with r_c = e^{v_c − m} (0 where the censored value was
    clamped) and σ_c = r_c (δ − H_c) (0 where log H_c was capped), r_c − w_c Σ r in the gate logits, −σ_c k_c in
    the log-scales and δ r_c + σ_c log H_c in the log-shapes (:func:`weibull_mixture_gradient` reads it).
    """
    library = _library()[0] if available() else None
    suffix = _SUFFIXES.get(table.dtype)
    if library is None or suffix is None or table.device.type != "cpu" or table.dim() != 3 or table.shape[-1] % 3 \
            or not 1 <= table.shape[-1] // 3 <= max_components():
        return None
    tables = [table.contiguous(), rows.to(torch.int64).contiguous(), y.to(table.dtype).contiguous()]
    flags = observed.to(torch.uint8).contiguous()
    selected, mixtures = rows.shape[0], table.shape[1]
    if rows.dim() != 1 or tuple(y.shape) != (selected, mixtures) or tuple(flags.shape) != (selected, mixtures) \
            or any(t.device != table.device for t in (*tables, flags)):
        raise ValueError("native Weibull-mixture likelihood: inputs of mismatched shapes or devices")
    value = table.new_empty(selected, mixtures)
    unit = table.new_empty(selected, mixtures, table.shape[2]) if gradient else None
    threads = _threads(selected)
    _checked_call(library, f"ehrseq_weibull_mixture_forward_{suffix}", table.shape[0], mixtures, table.shape[2] // 3,
                  selected, *(t.data_ptr() for t in tables), flags.data_ptr(), float(log_scale_offset),
                  value.data_ptr(), None if unit is None else unit.data_ptr(), threads)
    return value, unit


def weibull_mixture_gradient(unit: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor, total_rows: int
                             ) -> torch.Tensor:
    """The gradient of Σ grad · value (:func:`weibull_mixture_log_likelihood`, ``grad [N, K]``) in the parameter
    table ``[total_rows, K, 3C]``: ``grad`` times the gradients ``unit [N, K, 3C]`` of the values in the rows
    ``rows [N]``, zero in the other rows, written once."""
    library = _library()[0]
    suffix = _SUFFIXES[unit.dtype]
    selected, mixtures, width = unit.shape
    incoming = grad.to(unit.dtype).contiguous()
    if tuple(incoming.shape) != (selected, mixtures) or tuple(rows.shape) != (selected,):
        raise ValueError("native Weibull-mixture likelihood: one incoming gradient per mixture expected")
    selected_of, table = _row_index(total_rows, rows.to(torch.int64)), unit.new_empty(total_rows, mixtures, width)
    threads = _threads(total_rows)
    _checked_call(library, f"ehrseq_weibull_mixture_backward_{suffix}", total_rows, mixtures, width // 3, selected,
                  unit.contiguous().data_ptr(), incoming.data_ptr(), selected_of.data_ptr(), table.data_ptr(), threads)
    return table


# ---------------------------------------------------------------------------------------------- inference
def _float32_cpu(*tensors: torch.Tensor) -> bool:
    return all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)


_EMBEDDING_ERRORS: StatusErrors = {
    -3: (ShapeError, "SequenceBatch does not fit the visit embedding: a categorical or code index at a real visit lies "
                     "outside its vocabulary"),
}


def visit_embedding_steps(time: torch.Tensor, gap: torch.Tensor, real: torch.Tensor, values: torch.Tensor,
                          missing: torch.Tensor, categorical: torch.Tensor, categorical_offsets: torch.Tensor,
                          categorical_sizes: torch.Tensor, categorical_table: torch.Tensor, codes: torch.Tensor | None,
                          code_table: torch.Tensor | None,
                          no_codes: torch.Tensor | None, angular: torch.Tensor, time_unit: float,
                          time_weight: torch.Tensor, numeric_weight: torch.Tensor, bias: torch.Tensor,
                          norm_weight: torch.Tensor, norm_bias: torch.Tensor, eps: float
                          ) -> tuple[torch.Tensor, Callable[[int, torch.Tensor], None]] | None:
    """The visit embedding of a padded batch one step at a time, natively (float32 on the CPU, mean-pooled codes), or
    ``None`` where the kernel does not apply. Returns the table of sums ``[B, M, D]`` (a view of a time-major
    ``[M, B, D]`` table, whose rows each step writes as one block) and ``embed(m, out)``, which
    writes the layer norms of the visits at step m into ``out`` ``[B, D]`` (contiguous) and their sums into the
    table (rows not yet embedded hold arbitrary values).

    Per visit: ``time``, ``gap`` ``[B, M]`` days, ``real`` ``[B, M]``, ``values`` and ``missing`` ``[B, M, F]``,
    ``categorical`` ``[B, M, C]`` indices below ``categorical_sizes`` ``[C]``, shifted by ``categorical_offsets``
    ``[C]`` into ``categorical_table`` ``[Σ cardinalities, D]``, ``codes`` ``[B, M, K]`` into ``code_table``
    ``[V, D]`` (``None``: no code input) with the no-codes vector ``[D]``; ``angular`` the time encoding's ω ``[n]``
    and ``time_unit``; ``time_weight`` W_time ``[D, 2(1 + 2n)]`` with ``bias`` ``[D]``, ``numeric_weight`` W_num
    ``[D, 2F]``, the layer norm's ``norm_weight``, ``norm_bias`` ``[D]`` and ``eps`` — the terms of
    :class:`~ehrseq.models.encoders.embedding.VisitEmbedding`, whose docstring states them. An index outside its
    table is never read: ``embed`` raises :class:`~ehrseq.errors.ShapeError` (as ``torch`` raises for it).
    """
    library = _library()[0] if available() else None
    b, m = real.shape
    width, n = bias.shape[0], angular.shape[0]
    floats = [time, gap, values, categorical_table, angular, time_weight, numeric_weight, bias, norm_weight, norm_bias]
    if code_table is not None:
        floats += [code_table, no_codes]
    terms = 2 * (1 + 2 * n) + values.shape[-1] + categorical.shape[-1] + max(1, 0 if codes is None else codes.shape[-1])
    if library is None or not _float32_cpu(*floats) \
            or n > library.ehrseq_visit_embedding_max_frequencies() or terms > library.ehrseq_visit_embedding_max_terms():
        return None
    tables = [time.contiguous(), gap.contiguous(), real.contiguous().view(torch.uint8), values.contiguous(),
              missing.contiguous().view(torch.uint8), categorical.contiguous(), categorical_offsets.contiguous(),
              categorical_sizes.contiguous(), categorical_table.contiguous()]
    if code_table is not None:
        tables += [codes.contiguous(), code_table.contiguous(), no_codes.contiguous()]
    tables += [angular.contiguous(), time_weight.t().contiguous(), numeric_weight.t().contiguous(), bias.contiguous(),
               norm_weight.contiguous(), norm_bias.contiguous()]
    sums = bias.new_empty(m, b, width)  # time-major: each step's rows are one contiguous block
    pointers = [t.data_ptr() for t in tables]
    if code_table is None:
        pointers[9:9] = [None, None, None]
    vocabulary = 0 if code_table is None else code_table.shape[0]
    sizes = (width, values.shape[-1], categorical.shape[-1], 0 if codes is None else codes.shape[-1], n, vocabulary)
    entry, threads = library.ehrseq_visit_embedding_f32, _threads(b, _VISITS_PER_THREAD)

    def embed(step: int, out: torch.Tensor) -> None:
        _ = tables  # the inputs stay alive as long as this function
        status = entry(b, m, step, *sizes, *pointers[:13], float(time_unit), *pointers[13:], float(eps),
                       sums.data_ptr(), out.data_ptr(), threads)
        _raise_for_status("ehrseq_visit_embedding_f32", status, _EMBEDDING_ERRORS)

    return sums.transpose(0, 1), embed


def gru_step_available(*tensors: torch.Tensor) -> bool:
    """Whether :func:`gru_step` runs natively on ``tensors`` (float32 on the CPU)."""
    return available() and _float32_cpu(*tensors)


def gru_step(inputs: torch.Tensor, bias: torch.Tensor, recurrent: torch.Tensor | None, bias_n: torch.Tensor,
             previous: torch.Tensor | None, out: torch.Tensor) -> None:
    """One GRU step natively (:func:`gru_step_available` must hold), written into ``out`` ``[B, H]``: from the
    input product ``inputs`` ``[B, 3H]`` = x [W_ir ; W_iz ; 2 W_in]ᵀ, the input ``bias`` ``[3H]`` = [b_ir + b_hr ;
    b_iz + b_hz ; 2 b_in], ``recurrent`` ``[B, 3H]`` = h [W_hr ; W_hz ; 2 W_hn]ᵀ, ``bias_n`` = 2 b_hn ``[H]`` and the
    state ``previous`` h ``[B, H]`` (both ``None`` at the first step, h = 0), with i + c = [a_r ; a_z ; 2 a_n]:

        r = σ(a_r + q_r),  z = σ(a_z + q_z),  n = 2 σ(2 a_n + r ⊙ (q_n + 2 b_hn)) − 1,  h' = n + z ⊙ (h − n).

    Every tensor contiguous."""
    batch, hidden = out.shape
    _checked_call(_library()[0], "ehrseq_gru_step_f32", batch, hidden, inputs.data_ptr(), bias.data_ptr(),
                  None if recurrent is None else recurrent.data_ptr(), bias_n.data_ptr(),
                  None if previous is None else previous.data_ptr(), out.data_ptr(), _threads(batch))


def code_history_at(codes: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor,
                    weight: torch.Tensor) -> torch.Tensor | None:
    """The code-history term at selected visits natively (:func:`ehrseq.models.model.code_history_at`), ``[n, P]``:
    per selection (patient row ``rows[i]``, visit position ``positions[i]``) the sum of the ``weight`` ``[V, P]``
    rows of the distinct codes other than the padding index listed at its real visits up to that position
    (``codes`` ``[B, M, K]`` int64, ``mask`` ``[B, M]``), added in the order of their first records (the reference
    adds in code order: the two agree to float rounding). ``None`` where the kernel does not apply: not loaded, off
    the CPU, outside float32, or where ``weight`` needs a gradient. A code outside the vocabulary is never read (:class:`~ehrseq.errors.ShapeError`, as ``torch`` raises for it); a row outside
    the batch raises ``IndexError``."""
    library = _library()[0] if available() else None
    if library is None or not _float32_cpu(weight) or codes.device.type != "cpu" or codes.dtype != torch.int64 \
            or (weight.requires_grad and torch.is_grad_enabled()):
        return None
    b, m, k = codes.shape
    vocabulary, outputs = weight.shape
    n = rows.numel()
    if n and (int(rows.min()) < 0 or int(rows.max()) >= b):
        raise IndexError(f"selected patient rows must be in [0, {b}), got {int(rows.min())}..{int(rows.max())}")
    tables = [codes.contiguous(), mask.contiguous().view(torch.uint8), rows.to(torch.int64).contiguous(),
              positions.to(torch.int64).contiguous(), weight.detach().contiguous()]
    out = weight.new_empty(n, outputs)
    _checked_call(library, "ehrseq_code_history_f32", n, m, k, vocabulary, outputs, *(t.data_ptr() for t in tables),
                  out.data_ptr(), _threads(n, _VISITS_PER_THREAD), errors={
                      -3: (ShapeError, "SequenceBatch does not fit the code-history term: a code index at a real visit "
                                       f"lies outside its vocabulary of {vocabulary}"),
                      -4: (MemoryError, "native kernel ehrseq_code_history_f32 could not allocate its working memory")})
    return out


# ---------------------------------------------------------------------------------------------- data path
def gather_rows(out: np.ndarray, dst: np.ndarray, array: np.ndarray, src: np.ndarray | None) -> bool:
    """``out[dst] = array[src]`` (``array`` itself when ``src`` is None) natively, in one pass that reads ``array``
    row by row whatever its layout (a column-major table too); False where the kernel does not apply (not loaded,
    another element size than 1, 4 or 8 bytes, ``out`` not C-contiguous, rows of other widths or dtypes). ``dst``
    and ``src`` are int64 row indices (``dst`` distinct), on one thread."""
    library = _library()[0] if available() else None
    if library is None or out.dtype != array.dtype or out.dtype.itemsize not in (1, 4, 8) \
            or not out.flags.c_contiguous or out.ndim != array.ndim or out.ndim not in (1, 2) \
            or out.shape[1:] != array.shape[1:] or dst.dtype != np.int64 or not dst.flags.c_contiguous \
            or (src is not None and (src.dtype != np.int64 or not src.flags.c_contiguous or len(src) != len(dst))) \
            or (src is None and len(dst) != len(array)):
        return False
    columns = array.shape[1] if array.ndim == 2 else 1
    column_stride = array.strides[1] if array.ndim == 2 else 0
    _checked_call(library, "ehrseq_gather_rows", len(dst), columns, out.dtype.itemsize, array.strides[0],
                  column_stride, dst.ctypes.data, None if src is None else src.ctypes.data, array.ctypes.data,
                  out.ctypes.data, 1)
    return True


def numeric_feature(values: np.ndarray, missing: np.ndarray, patient: np.ndarray, elapsed: np.ndarray | None,
                    mean: float, std: float, unit: float, locf: bool, out: np.ndarray,
                    since: np.ndarray | None = None, ever: np.ndarray | None = None) -> bool:
    """One numeric feature column with missing values encoded natively in one pass (``_feature_rows.h``), on the
    calling thread: ``out [N]`` = the standardised value (x − mean) / std, carried forward within each patient with
    ``locf``, 0 where there is none; with ``since`` and ``ever`` ``[N]`` its measurement history (log1p of the time
    since the last measurement over ``unit``, divided by log1p(365.25); whether measured yet; both 0 before the
    first measurement). ``values [N]`` float64 (arbitrary where missing), ``missing [N]`` bool, ``patient [N]`` int64
    (rows grouped by patient, time-ordered), ``elapsed [N]`` float64 (needed with the history); outputs float32.
    False, with nothing written, where the kernel does not apply (not loaded, other dtypes or layouts, a std that is
    not positive and finite): :mod:`ehrseq.data.features` then runs its NumPy reference."""
    library = _library()[0] if available() else None
    history = since is not None
    n = len(out)
    arrays = [(values, np.float64), (missing, np.bool_), (patient, np.int64), (out, np.float32)]
    if history:
        arrays += [(elapsed, np.float64), (since, np.float32), (ever, np.float32)]
    if library is None or (ever is not None) != history \
            or any(a is None or a.dtype != dtype or a.ndim != 1 or len(a) != n or not a.flags.c_contiguous
                   for a, dtype in arrays):
        return False
    status = library.ehrseq_numeric_feature(
        n, values.ctypes.data, missing.ctypes.data, patient.ctypes.data,
        elapsed.ctypes.data if history else None, float(mean), float(std), float(unit), int(bool(locf)),
        out.ctypes.data, since.ctypes.data if history else None, ever.ctypes.data if history else None)
    return status == 0
