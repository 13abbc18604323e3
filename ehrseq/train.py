"""Training loop: AdamW, LR schedule, gradient clipping, early stopping with best-state restore, seeds,
deterministic mode, tqdm progress, CUDA auto-selection, mixed precision on GPU, and DistributedDataParallel
under ``torchrun``.

The trainer is model-agnostic: ``model(batch)`` returns an output object, and ``objective(output,
batch)`` returns a :class:`LossResult` (the scalar to minimise and its named parts). The objective is an
``nn.Module`` so it may hold learnable parameters (e.g. multi-task uncertainty weights); they are
optimised with the model.

Distributed training: launch the same script with ``torchrun --nproc_per_node=N``. :func:`init_distributed`
initialises the process group (``gloo`` on CPU, ``nccl`` on GPU) from the ``torchrun`` environment; the
trainer then wraps the model in :class:`~torch.nn.parallel.DistributedDataParallel`, calls
``set_epoch`` on distributed samplers, pools logged losses over ranks, takes early-stopping decisions
from pooled validation losses (so all ranks stop together) and shows progress on rank 0 only. Each
rank's loss is weighed by its share of the step's patient weight (:func:`rank_share`), so with losses
that are weighted means over patients one distributed step equals one single-process step on the
union of the ranks' batches, equal in size or not (:mod:`ehrseq.data.sharding` gives each rank its
rows of the single-process batches). :func:`on_rank_zero` runs what must happen once (saving a model).
"""

from __future__ import annotations

import atexit
import copy
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ehrseq.data.batch import SequenceBatch
from ehrseq.device import select_device
from ehrseq.errors import ConfigError
from ehrseq.progress import Progress, check_progress, progress_bar


@dataclass
class LossResult:
    """A loss to minimise and its named components (detached floats, for logging)."""

    total: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


class Objective(Protocol):
    def __call__(self, output: Any, batch: SequenceBatch) -> LossResult: ...


@dataclass
class TrainerConfig:
    """Everything that controls optimisation (JSON-friendly: see :meth:`to_dict`).

    ``monitor`` is ``"val_loss"`` or the name of a value returned by the ``validation_metrics``
    callback of :meth:`Trainer.fit` (e.g. ``"c_index"``); ``mode`` says whether lower or higher is better.
    ``scheduler``: ``"cosine"`` (cosine decay over ``epochs`` after ``warmup_epochs`` of linear warm-up),
    ``"plateau"`` (halve the LR after ``patience // 2`` epochs without improvement) or ``"none"``.
    ``amp`` enables bfloat16/float16 autocast on CUDA only (ignored on CPU).
    """

    epochs: int = 50
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float | None = 1.0
    scheduler: Literal["cosine", "plateau", "none"] = "cosine"
    warmup_epochs: int = 0
    patience: int | None = 10
    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    min_delta: float = 0.0
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    amp: bool = False
    progress: Progress = "auto"

    def __post_init__(self) -> None:
        check_progress(self.progress)
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.scheduler not in ("cosine", "plateau", "none"):
            raise ConfigError(f"scheduler must be 'cosine', 'plateau' or 'none', got {self.scheduler!r}")
        if self.mode not in ("min", "max"):
            raise ConfigError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"grad_clip must be > 0 or None, got {self.grad_clip}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainerConfig:
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown trainer settings: {sorted(unknown)}")
        return cls(**values)


@dataclass
class TrainingHistory:
    """One record per epoch: ``epoch``, ``train_loss``, ``val_loss`` (if validated), loss parts
    (``train_<part>``), validation metrics, ``lr`` and ``seconds``; plus the best epoch."""

    records: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    def to_polars(self):
        import polars as pl

        return pl.DataFrame(self.records)

    def to_dict(self) -> dict[str, Any]:
        return {"records": self.records, "best_epoch": self.best_epoch, "stopped_early": self.stopped_early}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainingHistory:
        return cls(records=list(values["records"]), best_epoch=values.get("best_epoch"),
                   stopped_early=bool(values.get("stopped_early", False)))

    def plot(self, ax=None, keys: Iterable[str] = ("train_loss", "val_loss")):
        """Line plot of the given keys per epoch (matplotlib); returns the axes."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(6, 3.5))[1]
        epochs = [r["epoch"] for r in self.records]
        for key in keys:
            values = [r.get(key, math.nan) for r in self.records]
            if not all(math.isnan(v) for v in values):
                ax.plot(epochs, values, marker="o", ms=3, label=key)
        if self.best_epoch is not None:
            ax.axvline(self.best_epoch, color="grey", ls=":", lw=1, label="best")
        ax.set_xlabel("epoch")
        ax.legend()
        return ax


# ---------------------------------------------------------------------------------------- helpers
def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def distributed_context() -> tuple[int, int]:
    """(rank, world size): (0, 1) outside an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(backend: str | None = None) -> tuple[int, int]:
    """Initialise the process group from the ``torchrun`` environment (RANK, WORLD_SIZE, MASTER_ADDR,
    ...). ``backend`` defaults to ``nccl`` when CUDA is available and ``gloo`` otherwise. Returns
    (rank, world size); a no-op returning (0, 1) when not launched by ``torchrun``."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=backend)
        sys.excepthook = _noting_uncaught_exceptions(sys.excepthook)
        atexit.register(_leave_process_group)  # a group left open can abort the process at exit
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return distributed_context()


def on_rank_zero(action: Callable[[], Any]) -> Any:
    """``action()`` run once, by rank 0, its result (or its error, raised) shared with every rank once it
    is done; ``action()`` itself outside a process group."""
    rank, world = distributed_context()
    if world == 1:
        return action()
    outcome: list[Any] = [None]
    if rank == 0:
        try:
            outcome[0] = (True, action())
        except Exception as exc:  # every rank raises it, instead of waiting for rank 0 forever
            outcome[0] = (False, exc)
    dist.broadcast_object_list(outcome, src=0)
    done, value = outcome[0]
    if not done:
        raise value
    return value


_uncaught_exceptions: list[BaseException] = []


def _noting_uncaught_exceptions(hook: Callable[..., Any]) -> Callable[..., Any]:
    """``hook`` (a ``sys.excepthook``) that first notes the exception, for :func:`_leave_process_group`."""
    def excepthook(kind: type[BaseException], value: BaseException, traceback: Any) -> Any:
        _uncaught_exceptions.append(value)
        return hook(kind, value, traceback)
    return excepthook


#: The gradient group of each default group, by the default group's id (a key holding it would keep it alive).
_gradient_groups: dict[int, Any] = {}


def _gradient_group() -> Any:
    """The process group of ``DistributedDataParallel``'s gradient reductions: one group of all ranks, made once per
    process group (every rank reaches it at the same point of the same ``fit``, as ``new_group`` requires).

    Not the default group, because a ``DistributedDataParallel`` keeps its group alive until the process ends (its
    C++ reducer holds it past the wrapper's deletion), so ``destroy_process_group`` cannot join that group's worker
    threads: a thread still releasing a finished collective when the interpreter began to finalise — a
    ``broadcast_object_list`` of :func:`on_rank_zero`, whose tensors were made in Python, kept by the barrier of
    :func:`_leave_process_group` — took the GIL there, and the rank aborted (``terminate called without an active
    exception``, exit code −6) after every result was written. On a group of its own the reducer keeps only its
    gradient buckets; the default group, which carries the collectives of Python objects, is destroyed at exit and
    joins its threads while the interpreter is whole."""
    world = id(dist.group.WORLD)
    if world not in _gradient_groups:
        _gradient_groups[world] = dist.new_group(backend=dist.get_backend())
    return _gradient_groups[world]


def _leave_process_group() -> None:
    """Destroy the process groups at interpreter exit, while the interpreter is whole (see :func:`_gradient_group`).

    After a clean exit every rank first waits for the others at a barrier, so that no rank tears down its
    connections while a peer may still be finishing its last collective (as PyTorch's own distributed
    tests do before ``destroy_process_group``). After an uncaught exception the rank leaves without the
    barrier: its peers may be inside a collective it will never join, and ``torchrun`` stops them once this
    process has exited.
    """
    if not dist.is_initialized():
        return
    if not _uncaught_exceptions:
        dist.barrier()
    _gradient_groups.clear()
    dist.destroy_process_group()


def _all_reduce_means(sums: dict[str, float], count: int, device: torch.device) -> dict[str, float]:
    """Means of ``sums`` over ``count`` items, pooled over the ranks (Σ sums / Σ counts)."""
    rank, world = distributed_context()
    if world > 1 and sums:
        keys = sorted(sums)
        tensor = torch.tensor([sums[k] for k in keys] + [count], dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        *values, count = tensor.tolist()
        sums = dict(zip(keys, values))
    return {k: v / max(count, 1) for k, v in sums.items()}


def rank_share(batch: SequenceBatch) -> torch.Tensor:
    """W × this rank's share of the patient weight of the ranks' batches together: the factor that makes
    the rank-averaged gradient of the ranks' (weighted-mean) losses the gradient of the loss of their
    union. 1 outside a process group, and for equal shares."""
    _, world = distributed_context()
    weight = batch.weight.sum() if batch.weight is not None else torch.tensor(float(batch.batch_size))
    if world == 1:
        return torch.ones((), device=batch.device)
    mine = weight.to(device=batch.device, dtype=torch.float64)
    total = mine.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return (world * mine / total.clamp_min(torch.finfo(torch.float64).tiny)).to(torch.float32)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class _EarlyStopping:
    def __init__(self, mode: str, patience: int | None, min_delta: float) -> None:
        self.sign = 1.0 if mode == "min" else -1.0
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf
        self.bad_epochs = 0

    def improved(self, value: float) -> bool:
        score = self.sign * value
        if math.isfinite(score) and score < self.best - self.min_delta:
            self.best = score
            self.bad_epochs = 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience


# ---------------------------------------------------------------------------------------- trainer
class Trainer:
    """Fit a model with an objective on batches of :class:`SequenceBatch`."""

    def __init__(self, config: TrainerConfig | None = None) -> None:
        self.config = config or TrainerConfig()
        self.device = select_device(self.config.device)
        self.history = TrainingHistory()

    def _autocast(self):
        if self.config.amp and self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast(device_type="cuda", dtype=dtype)
        return torch.autocast(device_type=self.device.type, enabled=False)

    def _scheduler(self, optimizer: torch.optim.Optimizer):
        cfg = self.config
        if cfg.scheduler == "cosine":
            warmup = max(cfg.warmup_epochs, 0)

            def factor(epoch: int) -> float:
                if epoch < warmup:
                    return (epoch + 1) / (warmup + 1)
                progress = (epoch - warmup) / max(cfg.epochs - warmup, 1)
                return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

            return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        if cfg.scheduler == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=cfg.mode, factor=0.5, patience=max((cfg.patience or 10) // 2, 1)
            )
        return None

    def fit(
        self,
        model: nn.Module,
        objective: nn.Module,
        train_loader: Iterable[SequenceBatch],
        val_loader: Iterable[SequenceBatch] | None = None,
        validation_metrics: Callable[[nn.Module], Mapping[str, float]] | None = None,
    ) -> TrainingHistory:
        """Train ``model`` in place; restore the best state (by ``monitor``) at the end; return the history.

        ``validation_metrics(model)`` (optional) is called after each epoch with the unwrapped model in
        eval mode and returns named values (e.g. a C-index) that are logged and may be monitored.
        """
        cfg = self.config
        seed_everything(cfg.seed, cfg.deterministic)
        rank, world = distributed_context()
        model.to(self.device)
        objective.to(self.device)
        if world > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids, process_group=_gradient_group())
        parameters = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = self._scheduler(optimizer)
        scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and self.device.type == "cuda"
                                      and not torch.cuda.is_bf16_supported())
        if cfg.monitor != "val_loss" and validation_metrics is None:
            raise ConfigError(f"monitor={cfg.monitor!r} needs a validation_metrics callback")
        stopper = _EarlyStopping(cfg.mode, cfg.patience if (val_loader is not None or validation_metrics) else None,
                                 cfg.min_delta)
        try:
            total = cfg.epochs * len(train_loader)
        except TypeError:  # a loader without a length
            total = None
        bar = progress_bar(cfg.progress if rank == 0 else False, total=total, desc="training", unit="batch")
        self.history = TrainingHistory()
        with bar:
            self._epochs(model, objective, train_loader, val_loader, validation_metrics, optimizer, scheduler, scaler,
                         stopper, bar)
        _unwrap(model).eval()
        return self.history

    def _epochs(self, model, objective, train_loader, val_loader, validation_metrics, optimizer, scheduler, scaler,
                stopper, bar) -> None:
        """The epoch loop of :meth:`fit` (one progress ``bar`` over every training batch of every epoch)."""
        cfg = self.config
        best_state: dict[str, Any] | None = None
        for epoch in range(1, cfg.epochs + 1):
            started = time.perf_counter()
            for loader in (train_loader, val_loader):
                sampler = getattr(loader, "sampler", None)
                batch_sampler = getattr(loader, "batch_sampler", None)
                for candidate in (sampler, batch_sampler):
                    if candidate is not None and hasattr(candidate, "set_epoch"):
                        candidate.set_epoch(epoch)
            record: dict[str, float] = {"epoch": float(epoch), "lr": optimizer.param_groups[0]["lr"]}
            train = self._run_epoch(model, objective, train_loader, optimizer, scaler, bar, epoch)
            record.update({f"train_{k}": v for k, v in train.items()})
            if val_loader is not None:
                with torch.no_grad():
                    val = self._run_epoch(model, objective, val_loader, None, None, None, epoch)
                record.update({f"val_{k}": v for k, v in val.items()})
            if validation_metrics is not None:
                inner = _unwrap(model)
                inner.eval()
                with torch.no_grad():
                    record.update({k: float(v) for k, v in validation_metrics(inner).items()})
            record["seconds"] = time.perf_counter() - started
            self.history.records.append(record)

            watched = record.get(cfg.monitor, record.get("train_loss") if val_loader is None else math.nan)
            if stopper.improved(float(watched)) or best_state is None:
                best_state = {
                    "model": copy.deepcopy(_unwrap(model).state_dict()),
                    "objective": copy.deepcopy(objective.state_dict()),
                }
                self.history.best_epoch = epoch
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(float(watched) if math.isfinite(float(watched)) else record["train_loss"])
            elif scheduler is not None:
                scheduler.step()
            bar.set_postfix({"epoch": f"{epoch}/{cfg.epochs}",
                             **{k: f"{record[k]:.4f}" for k in ("train_loss", "val_loss", cfg.monitor) if k in record}})
            if stopper.should_stop:
                self.history.stopped_early = True
                bar.total = bar.n  # stopped early: the bar ends full
                bar.refresh()
                break
        if best_state is not None:
            _unwrap(model).load_state_dict(best_state["model"])
            objective.load_state_dict(best_state["objective"])

    def _run_epoch(self, model, objective, loader, optimizer, scaler, bar, epoch: int) -> dict[str, float]:
        """One pass (``bar``: advanced per batch when given); returns batch-size-weighted means of the loss and
        its parts (rank-averaged)."""
        training = optimizer is not None
        distributed = distributed_context()[1] > 1
        model.train(training)
        objective.train(training)
        sums: dict[str, float] = {}
        count = 0
        for batch in loader:
            batch = batch.to(self.device, non_blocking=True)
            with self._autocast():
                output = model(batch)
                result = objective(output, batch)
            loss = result.total
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss ({loss.item()}) at epoch {epoch}; parts: {result.parts}. "
                    "Lower the learning rate or check the inputs."
                )
            if training:
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss * rank_share(batch) if distributed else loss).backward()
                if self.config.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(
                        [p for g in optimizer.param_groups for p in g["params"]], self.config.grad_clip
                    )
                scaler.step(optimizer)
                scaler.update()
            n = batch.batch_size
            count += n
            values = {"loss": float(loss.detach()), **result.parts}
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value * n
            if bar is not None:
                bar.update(1)
        return _all_reduce_means(sums, count, self.device)
