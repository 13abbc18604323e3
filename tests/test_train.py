"""Trainer mechanics on a toy model: learning, early stopping with best-state restore, determinism."""

import math

import pytest
import torch
from torch import nn

from ehrseq.data import SequenceBatch
from ehrseq.errors import ConfigError
from ehrseq.train import LossResult, Trainer, TrainerConfig


def make_batches(n_batches=4, b=16, m=5, f=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        x = torch.randn(b, m, f, generator=g)
        lengths = torch.randint(1, m + 1, (b,), generator=g)
        mask = torch.arange(m)[None, :] < lengths[:, None]
        target = (x[..., 0] > 0).float()
        batches.append(SequenceBatch(
            numeric=x, numeric_missing=torch.zeros(b, m, f, dtype=torch.bool),
            categorical=torch.zeros(b, m, 0, dtype=torch.long), codes=torch.zeros(b, m, 0, dtype=torch.long),
            time=torch.zeros(b, m), gap=torch.zeros(b, m), mask=mask, patient_index=torch.arange(b),
            remaining=target,
        ))
    return batches


class Toy(nn.Module):
    def __init__(self, f=3):
        super().__init__()
        self.linear = nn.Linear(f, 1)

    def forward(self, batch):
        return self.linear(batch.numeric).squeeze(-1)


class BCE(nn.Module):
    def forward(self, logits, batch):
        per_visit = nn.functional.binary_cross_entropy_with_logits(logits, batch.remaining, reduction="none")
        total = per_visit[batch.mask].mean()
        return LossResult(total, {"bce": float(total.detach())})


def quiet(**kw):
    return TrainerConfig(progress=False, device="cpu", **kw)


def test_loss_decreases_and_history_is_recorded():
    torch.manual_seed(0)
    model = Toy()
    history = Trainer(quiet(epochs=15, lr=0.05, patience=None)).fit(model, BCE(), make_batches(), make_batches(seed=1))
    losses = [r["train_loss"] for r in history.records]
    assert len(losses) == 15 and losses[-1] < 0.6 * losses[0]
    assert {"train_bce", "val_loss", "lr", "seconds"} <= set(history.records[0])
    assert history.to_polars().height == 15
    assert not model.training


def test_early_stopping_restores_the_best_epoch():
    class Overfit(nn.Module):  # validation target is the opposite: val loss rises while training
        def forward(self, logits, batch):
            target = batch.remaining if self.training else 1 - batch.remaining
            per_visit = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
            return LossResult(per_visit[batch.mask].mean())

    model = Toy()
    trainer = Trainer(quiet(epochs=40, lr=0.05, patience=3, scheduler="none"))
    history = trainer.fit(model, Overfit(), make_batches(), make_batches(seed=1))
    assert history.stopped_early and len(history.records) < 40
    best = history.best_epoch
    val = [r["val_loss"] for r in history.records]
    assert val[best - 1] == min(val)
    # the restored weights reproduce the best validation loss
    objective = Overfit().eval()
    with torch.no_grad():
        again = sum(objective(model(b), b).total.item() * b.batch_size for b in make_batches(seed=1)) / 64
    assert again == pytest.approx(val[best - 1], rel=1e-6)


def test_seeded_training_is_reproducible():
    def run():
        torch.manual_seed(123)
        model = Toy()
        Trainer(quiet(epochs=3, seed=7)).fit(model, BCE(), make_batches())
        return model.linear.weight.detach().clone()

    assert torch.equal(run(), run())


def test_monitoring_a_metric_requires_a_callback_and_uses_it():
    with pytest.raises(ConfigError, match="validation_metrics"):
        Trainer(quiet(monitor="accuracy", mode="max")).fit(Toy(), BCE(), make_batches())
    calls = []

    def metrics(model):
        calls.append(model.training)
        return {"accuracy": 0.5}

    history = Trainer(quiet(epochs=2, monitor="accuracy", mode="max")).fit(Toy(), BCE(), make_batches(),
                                                                          validation_metrics=metrics)
    assert calls == [False, False] and history.records[0]["accuracy"] == 0.5


def test_non_finite_loss_is_reported_clearly():
    class Bad(nn.Module):
        def forward(self, logits, batch):
            return LossResult(logits.sum() * math.nan)

    with pytest.raises(FloatingPointError, match="non-finite loss"):
        Trainer(quiet(epochs=1)).fit(Toy(), Bad(), make_batches())


def test_config_validation_and_round_trip():
    with pytest.raises(ConfigError):
        TrainerConfig(epochs=0)
    with pytest.raises(ConfigError, match="unknown"):
        TrainerConfig.from_dict({"epochz": 3})
    cfg = TrainerConfig(epochs=3, lr=0.01)
    assert TrainerConfig.from_dict(cfg.to_dict()) == cfg
