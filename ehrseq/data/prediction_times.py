"""Prediction times between visits: the landmark targets that teach a model to predict at any time.

A landmark prediction at time s uses the patient's last visit m with v_m ≤ s, e = s − v_m days before.
A model that only ever saw targets at its visits (e = 0) has to extrapolate such predictions from the
visit's curve, S_m(e + Δ) / S_m(e); a model with an elapsed-time input
(:class:`~ehrseq.models.model.DynamicSurvivalModel` with ``any_time``) learns them from targets at
sampled prediction times. For visit m of a training patient with remaining time R_m (to the event or
censoring) and the next visit w_m days later:

    e_m = 0 with probability 1 − p,   e_m ~ Uniform(0, w_m) with probability p,

and the target is the remaining time after the prediction time given survival to it: R_m − e_m > 0
with the same event indicator (interval-censored upper ends shift alike, bins are recomputed on the
horizon grid). The prediction time never passes the next visit (the history at s would then include
it) nor the outcome (the patient must be at risk at s), so every sampled target is a valid landmark
observation of the same patient.

The last visit. Its window would end at the outcome, w_m = R_m, and a draw Uniform(0, R_m) depends on
the patient's own outcome: at every elapsed time e a patient at risk is drawn with density p / R_m, so
those who die soon weigh more than those who live long, and the risk the model learns for a landmark
after the last visit is too high (on SurvSet ``oldmort``, mostly one visit per patient, the default
model predicted a 2.5-year risk of 0.137 where 0.101 was observed; suite diagnosis, section 9). With a
``horizon`` h the last visit's offset is drawn from one distribution for every patient,

    e_m ~ Exponential(mean h) with probability p,

and a draw at or after the outcome (e_m ≥ R_m: not at risk there) is no target (``dropped``; the visit
stays in the history): every patient at risk at e is then drawn with the same density p e^{−e/h} / h,
as a landmark model fitted at every e weighs the patients at risk. ``DynamicSurvival`` takes h = the
median remaining time of its training visits.

Left truncation. A patient with an entry time (``entry_time`` of the outcome table: known alive and at
risk from then on, e.g. an index date after a recorded history) is no observation of survival before it.
A visit before entry, a_m = entry − v_m > 0 days earlier, gets its prediction time in [a_m, w_m) instead:

    e_m = a_m with probability 1 − p,   e_m ~ Uniform(a_m, w_m) with probability p,

when a_m < w_m (the last visit before entry predicts from entry on: the landmark target at entry); when
the next visit is also before entry (a_m ≥ w_m) the visit keeps e_m = 0 and is no target
(:attr:`SequenceBatch.targets`), only history.
"""

from __future__ import annotations

import torch

from ehrseq.data.batch import SequenceBatch

#: default probability p that a visit's training target is moved to a prediction time after it
SHARE = 0.5


def sample_prediction_times(batch: SequenceBatch, generator: torch.Generator, *, cuts: torch.Tensor | None = None,
                            share: float = SHARE, horizon: float | None = None) -> SequenceBatch:
    """``batch`` with ``elapsed`` ``[B, M]`` sampled as in the module docstring and the targets
    ``remaining``, ``upper`` and (with the horizon grid's ``cuts`` ``[L + 1]``) ``bin`` after it; with a
    ``horizon`` (days) the last visits' offsets are exponential of that mean and ``dropped`` ``[B, M]``
    marks the draws past the outcome (no target; their elapsed time and target are left unmoved).

    ``generator`` (a CPU :class:`torch.Generator`) makes the draws reproducible; padded visits keep e = 0.
    """
    if batch.remaining is None:
        raise ValueError("prediction times are sampled for labelled batches only")
    mask = batch.mask
    remaining = batch.remaining
    following = torch.cat([batch.gap[:, 1:], remaining.new_zeros(mask.shape[0], 1)], dim=1)
    has_next = torch.cat([mask[:, 1:], mask.new_zeros(mask.shape[0], 1)], dim=1)
    window = torch.where(has_next, torch.minimum(following.to(remaining.dtype), remaining), remaining)
    uniform = torch.rand(mask.shape, generator=generator).to(remaining.device)
    moved = torch.rand(mask.shape, generator=generator).to(remaining.device) < share
    start = torch.zeros_like(remaining)
    if batch.entry is not None:
        start = (batch.entry.unsqueeze(1).to(remaining.dtype) - batch.time.to(remaining.dtype)).clamp_min(0.0)
    usable = mask & (start < window)
    offset = uniform.to(remaining.dtype) * (window - start)
    if horizon is not None:  # the last visit: an exponential draw of mean `horizon`, the same for every patient
        offset = torch.where(has_next, offset, -horizon * torch.log1p(-uniform.to(remaining.dtype)))
    drawn = start + torch.where(moved, offset, 0.0)
    elapsed = torch.where(usable, drawn, 0.0)
    dropped = None
    if horizon is not None:
        dropped = mask & (elapsed >= remaining)
        elapsed = torch.where(dropped, start, elapsed)  # its unmoved prediction time (entry, if later than the visit)
    shifted = remaining - elapsed
    # the draws are in [0, 1): R − e > 0 in exact arithmetic; keep it so in floating point
    elapsed = torch.where(shifted > 0, elapsed, 0.0)
    shifted = remaining - elapsed
    changes = {"elapsed": elapsed.to(torch.float32), "remaining": shifted}
    if dropped is not None:
        changes["dropped"] = dropped
    if batch.upper is not None:
        changes["upper"] = batch.upper - elapsed
    if cuts is not None and batch.bin is not None:
        index = torch.searchsorted(cuts.to(shifted.dtype), shifted.contiguous(), right=False) - 1
        changes["bin"] = torch.where(mask, index, batch.bin)
    return batch.replace(**changes)


class PredictionTimeLoader:
    """A training loader whose batches get sampled prediction times (:func:`sample_prediction_times`).

    Iterating, ``len`` and the wrapped loader's attributes (``sampler``, ``batch_sampler``: the trainer
    calls their ``set_epoch``) behave as the wrapped loader's; the draws come from one generator
    seeded with ``seed``, so the same seed gives the same targets epoch after epoch.
    """

    def __init__(self, loader: torch.utils.data.DataLoader, seed: int, *, cuts: torch.Tensor | None = None,
                 share: float = SHARE, horizon: float | None = None) -> None:
        self.loader = loader
        self.cuts = cuts
        self.share = share
        self.horizon = horizon
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        for batch in self.loader:
            yield sample_prediction_times(batch, self.generator, cuts=self.cuts, share=self.share, horizon=self.horizon)

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):
        return getattr(self.__dict__["loader"], name)
