"""Deep ensembles: K models whose survival curves are averaged (networks of one configuration and, with
``ModelConfig.linear_members``, linear models of the same inputs: :meth:`ModelConfig.member`; with
``ModelConfig.blend``, also the members of a second configuration).

:class:`EnsembleModel` holds the members (trained one after the other by
:meth:`ehrseq.DynamicSurvival.fit` from seeds seed, seed + 1, … and their own validation splits) and
answers :meth:`distribution_at` with their :class:`~ehrseq.models.distributions.ensemble.EnsembleAverage`,
so prediction, landmark evaluation and scoring use an ensemble exactly as one model. Its weights are
one state dict (``members.<k>.…``), saved and loaded like any model's; :func:`build_model` makes the
right object from a :class:`~ehrseq.models.model.ModelConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ehrseq.data.batch import SequenceBatch
from ehrseq.errors import ConfigError
from ehrseq.models.distributions.base import SurvivalDistribution
from ehrseq.models.distributions.ensemble import EnsembleAverage
from ehrseq.models.model import DynamicSurvivalModel, ModelConfig


class EnsembleModel(nn.Module):
    """K :class:`DynamicSurvivalModel` members (of :meth:`ModelConfig.member`); predictions average their curves."""

    def __init__(self, config: ModelConfig, members: Sequence[DynamicSurvivalModel] | None = None) -> None:
        super().__init__()
        if members is None:
            members = [DynamicSurvivalModel(config.member(k)) for k in range(config.n_members)]
        if len(members) != config.n_members:
            raise ConfigError(f"an ensemble of {config.n_members} members got {len(members)}")
        self.config = config
        self.members = nn.ModuleList(members)

    @property
    def any_time(self) -> bool:
        """Whether the ensemble predicts at the prediction time itself: whether any member reads the time elapsed
        since the visit (see :class:`DynamicSurvivalModel`)."""
        return self.config.reads_elapsed

    def distribution_at(self, batch: SequenceBatch, index: tuple[torch.Tensor, torch.Tensor], *,
                        elapsed: torch.Tensor | None = None, check_values: bool = True) -> EnsembleAverage:
        """The average of the members' :meth:`DynamicSurvivalModel.distribution_at` with the weights of
        :meth:`ModelConfig.member_weights` (members of weight 0 are not evaluated), batch shape ``[n]``.

        With ``elapsed`` e (an ensemble whose members, or some of them, read it), the average of the members'
        distributions of the remaining time after the prediction time: a member that does not read e (a blend of
        one configuration with and one without, :attr:`ModelConfig.blend`) gives its visit's distribution
        conditioned on survival to e, S(e + u) / S(e)."""
        weighed = [(member, weight) for member, weight in zip(self.members, self.config.member_weights()) if weight > 0]
        return EnsembleAverage([self._at_prediction_time(member, batch, index, elapsed, check_values)
                                for member, _ in weighed], [weight for _, weight in weighed])

    @staticmethod
    def _at_prediction_time(member: DynamicSurvivalModel, batch: SequenceBatch,
                            index: tuple[torch.Tensor, torch.Tensor], elapsed: torch.Tensor | None,
                            check_values: bool) -> SurvivalDistribution:
        if elapsed is None or member.any_time:
            return member.distribution_at(batch, index, elapsed=elapsed, check_values=check_values)
        distribution = member.distribution_at(batch, index, check_values=check_values)
        if not bool((elapsed > 0).any()):
            return distribution
        return distribution.conditional(elapsed.to(dtype=distribution.dtype, device=distribution.device))


#: The shares of the linear members among which :func:`linear_weight_by_likelihood` chooses.
LINEAR_WEIGHT_GRID = tuple(i / 20 for i in range(21))


def linear_weight_by_likelihood(splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """The share w of the linear members in an ensemble's average that maximises the validation likelihood.

    ``splits``: per validation split σ, the log-likelihoods ℓ of its validation visits under the members that
    held it out, networks ``[K_σ, V_σ]`` and linear members ``[J_σ, V_σ]`` (log f(R) for a visit followed by
    the event after R, log S(R) for one censored after R). The mixture of each split's networks and linear
    members has the likelihood

        L_σ(w) = Π_v [(1 − w) · mean_k exp ℓ^net_{k,v} + w · mean_j exp ℓ^lin_{j,v}],

    and the chosen w maximises Σ_σ log L_σ(w) over :data:`LINEAR_WEIGHT_GRID` (0 to 1 in steps of 0.05;
    the smallest such w on ties). Each visit is scored by members that did not train on it, so the choice is
    a one-parameter stacking of the two kinds of member on held-out patients (a super learner over two
    learners): the linear members weigh most where the landmark model's linear effects are what there is to
    learn, the networks where the history carries more.
    """
    if not splits:
        raise ConfigError("choosing the linear members' weight needs at least one validation split")
    networks, linear = [], []
    for net, lin in splits:
        net, lin = np.atleast_2d(np.asarray(net, dtype=np.float64)), np.atleast_2d(np.asarray(lin, dtype=np.float64))
        if net.shape[1] != lin.shape[1] or not net.shape[0] or not lin.shape[0]:
            raise ConfigError(f"a validation split needs networks' and linear members' log-likelihoods of the same "
                              f"visits, got shapes {net.shape} and {lin.shape}")
        networks.append(np.logaddexp.reduce(net, axis=0) - np.log(net.shape[0]))
        linear.append(np.logaddexp.reduce(lin, axis=0) - np.log(lin.shape[0]))
    net, lin = np.concatenate(networks), np.concatenate(linear)
    with np.errstate(divide="ignore"):
        totals = [np.logaddexp(np.log1p(-w) + net, np.log(w) + lin).sum() for w in LINEAR_WEIGHT_GRID]
    return LINEAR_WEIGHT_GRID[int(np.argmax(totals))]


def build_model(config: ModelConfig) -> DynamicSurvivalModel | EnsembleModel:
    """The model of ``config``: one :class:`DynamicSurvivalModel`, or an :class:`EnsembleModel` when
    ``config.n_members > 1``."""
    return DynamicSurvivalModel(config) if config.n_members == 1 else EnsembleModel(config)
