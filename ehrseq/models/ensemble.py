"""Deep ensembles: K models whose survival curves are averaged (networks of one configuration and, with
``ModelConfig.linear_members``, linear models of the same inputs: :meth:`ModelConfig.member`).

:class:`EnsembleModel` holds the members (trained one after the other by
:meth:`ehrseq.DynamicSurvival.fit` from seeds seed, seed + 1, … and their own validation splits) and
answers :meth:`distribution_at` with their :class:`~ehrseq.models.distributions.ensemble.EnsembleAverage`,
so prediction, landmark evaluation and scoring use an ensemble exactly as one model. Its weights are
one state dict (``members.<k>.…``), saved and loaded like any model's; :func:`build_model` makes the
right object from a :class:`~ehrseq.models.model.ModelConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ehrseq.data.batch import SequenceBatch
from ehrseq.errors import ConfigError
from ehrseq.models.distributions.ensemble import EnsembleAverage
from ehrseq.models.model import DynamicSurvivalModel, ModelConfig


class EnsembleModel(nn.Module):
    """K :class:`DynamicSurvivalModel` members (of :meth:`ModelConfig.member`); predictions average their curves."""

    def __init__(self, config: ModelConfig, members: Sequence[DynamicSurvivalModel] | None = None) -> None:
        super().__init__()
        if members is None:
            members = [DynamicSurvivalModel(config.member(k)) for k in range(config.n_models)]
        if len(members) != config.n_models:
            raise ConfigError(f"an ensemble of n_models={config.n_models} got {len(members)} members")
        self.config = config
        self.members = nn.ModuleList(members)

    @property
    def any_time(self) -> bool:
        """Whether the members read the time elapsed since the visit (see :class:`DynamicSurvivalModel`)."""
        return self.config.any_time

    def distribution_at(self, batch: SequenceBatch, index: tuple[torch.Tensor, torch.Tensor], *,
                        elapsed: torch.Tensor | None = None, check_values: bool = True) -> EnsembleAverage:
        """The average of the members' :meth:`DynamicSurvivalModel.distribution_at`, batch shape ``[n]``."""
        return EnsembleAverage([member.distribution_at(batch, index, elapsed=elapsed, check_values=check_values)
                                for member in self.members])


def build_model(config: ModelConfig) -> DynamicSurvivalModel | EnsembleModel:
    """The model of ``config``: one :class:`DynamicSurvivalModel`, or an :class:`EnsembleModel` when
    ``config.n_models > 1``."""
    return DynamicSurvivalModel(config) if config.n_models == 1 else EnsembleModel(config)
