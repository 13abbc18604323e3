"""Several non-exclusive events, one marginal survival distribution each (MENSA's output)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from ehrseq.errors import ConfigError, ShapeError
from ehrseq.models.distributions.base import Duration, LeadingRows, SurvivalDistribution


class MultiEvent:
    """A named collection of E marginal distributions of the times to non-exclusive events.

    Build it from a mapping ``{name: distribution}`` or a sequence of distributions (with ``names``),
    all of the same batch shape — or, more efficiently, with :meth:`stacked` from one distribution whose
    last batch dim indexes the events (e.g. a :class:`WeibullMixture` of batch ``[B, M, E]``), so that
    every event is evaluated in one call.

    ``multi["death"]`` or ``multi[0]`` is the marginal of one event; :meth:`select` indexes the batch.
    The marginals carry no joint structure: P(both A and B by u) is not defined by this object.
    """

    def __init__(
        self,
        marginals: Mapping[str, SurvivalDistribution] | Sequence[SurvivalDistribution],
        names: Sequence[str] | None = None,
    ) -> None:
        if isinstance(marginals, Mapping):
            if names is not None:
                raise ConfigError("give event names either as mapping keys or as names=, not both")
            names, marginals = list(marginals.keys()), list(marginals.values())
        marginals = list(marginals)
        if not marginals:
            raise ConfigError("a multi-event distribution needs at least one event")
        shapes = {tuple(m.batch_shape) for m in marginals}
        if len(shapes) != 1:
            raise ShapeError(f"all marginals must have the same batch shape, got {sorted(shapes)}")
        self._marginals: list[SurvivalDistribution] | None = marginals
        self._stacked: SurvivalDistribution | None = None
        self._batch_shape = marginals[0].batch_shape
        self._names = self._check_names(names, len(marginals))

    @classmethod
    def stacked(cls, distribution: SurvivalDistribution, names: Sequence[str] | None = None) -> MultiEvent:
        """Events along the last batch dim of ``distribution`` (batch ``[*S, E]``)."""
        if len(distribution.batch_shape) == 0:
            raise ShapeError("a stacked multi-event distribution needs the events in its last batch dim")
        multi = cls.__new__(cls)
        multi._marginals = None
        multi._stacked = distribution
        multi._batch_shape = distribution.batch_shape[:-1]
        multi._names = cls._check_names(names, int(distribution.batch_shape[-1]))
        return multi

    @staticmethod
    def _check_names(names: Sequence[str] | None, count: int) -> tuple[str, ...]:
        names = tuple(f"event_{e}" for e in range(count)) if names is None else tuple(str(n) for n in names)
        if len(names) != count:
            raise ConfigError(f"{len(names)} event names for {count} events")
        if len(set(names)) != count:
            raise ConfigError(f"event names must be unique, got {list(names)}")
        return names

    # ------------------------------------------------------------------ structure
    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def num_events(self) -> int:
        return len(self._names)

    @property
    def batch_shape(self) -> torch.Size:
        return torch.Size(self._batch_shape)

    def __len__(self) -> int:
        return self.num_events

    def __iter__(self) -> Iterator[SurvivalDistribution]:
        return (self[e] for e in range(self.num_events))

    def index(self, key: str | int) -> int:
        """Position of an event given by name or position."""
        if isinstance(key, str):
            if key not in self._names:
                raise KeyError(f"unknown event {key!r}; events are {list(self._names)}")
            return self._names.index(key)
        position = int(key)
        if not -self.num_events <= position < self.num_events:
            raise IndexError(f"event position {key} out of range for {self.num_events} events")
        return position % self.num_events

    def __getitem__(self, key: str | int) -> SurvivalDistribution:
        e = self.index(key)
        if self._marginals is not None:
            return self._marginals[e]
        assert self._stacked is not None
        # explicit slices, not an Ellipsis: parameters may have trailing non-batch dims (mixture components)
        return self._stacked[(*(slice(None),) * len(self._batch_shape), e)]

    def _map(self, fn) -> MultiEvent:  # noqa: ANN001 - distribution → distribution
        if self._marginals is not None:
            return MultiEvent([fn(m) for m in self._marginals], self._names)
        assert self._stacked is not None
        return MultiEvent.stacked(fn(self._stacked), self._names)

    def select(self, index: Any) -> MultiEvent:
        """Index the leading batch dims of every marginal (e.g. ``multi.select((slice(None), -1))``).

        The index must address batch dims from the left (no ``Ellipsis``), so that the event dim of a
        stacked distribution is kept.
        """
        index = LeadingRows.of(index)  # a mask resolved once for every marginal
        return self._map(lambda m: m[index])

    def to(self, device: torch.device | str) -> MultiEvent:
        return self._map(lambda m: m.to(device))

    def masked(self, keep: torch.Tensor, fill: float = 0.0) -> MultiEvent:
        """Every marginal with its parameters replaced by ``fill`` where ``keep`` is False."""
        return self._map(lambda m: m.masked(keep, fill))

    def __repr__(self) -> str:
        return f"MultiEvent(batch_shape={list(self.batch_shape)}, events={list(self._names)})"

    # ------------------------------------------------------------------ values for every event
    def _per_event(self, u: Duration, method: str, *args: torch.Tensor) -> torch.Tensor:
        """Evaluate a method of every marginal → ``[*S, E, U]``; ``u`` is ``[U]`` or ``[*S, E, U]``.

        Further tensor arguments are ``[*S, E, U]``, split by event like per-event durations.
        """
        u = torch.as_tensor(u)
        per_event = u.dim() == len(self.batch_shape) + 2
        if per_event and (tuple(u.shape[:-1]) != (*self.batch_shape, self.num_events)):
            raise ShapeError(
                f"per-event durations must have shape {[*self.batch_shape, self.num_events]} + [U], "
                f"got {list(u.shape)}"
            )
        if self._stacked is not None:
            return getattr(self._stacked, method)(u, *args)
        assert self._marginals is not None
        values = [getattr(m, method)(u[..., e, :] if per_event else u, *(a[..., e, :] for a in args))
                  for e, m in enumerate(self._marginals)]
        return torch.stack(values, dim=-2)

    def log_survival(self, u: Duration) -> torch.Tensor:
        """log S_e(u) for every event e, ``[*batch, E, U]``."""
        return self._per_event(u, "log_survival")

    def log_density(self, u: Duration) -> torch.Tensor:
        """log f_e(u) for every event e, ``[*batch, E, U]``."""
        return self._per_event(u, "log_density")

    def log_likelihood(self, u: Duration, observed: torch.Tensor) -> torch.Tensor:
        """log f_e(u) where ``observed`` else log S_e(u), ``[*batch, E, U]`` (``observed`` of that shape)."""
        return self._per_event(u, "log_likelihood", observed)

    def selected_log_likelihood(self, index: Any, u: Duration, observed: torch.Tensor) -> torch.Tensor:
        """``self.select(index).log_likelihood(u, observed)``, ``[*selected, E, U]``; a stacked distribution
        evaluates it by its :meth:`~SurvivalDistribution.selected_log_likelihood` (which may read the selected
        parameters in place)."""
        if self._stacked is not None:
            return self._stacked.selected_log_likelihood(LeadingRows.of(index), u, observed)
        return self.select(index).log_likelihood(u, observed)

    def survival(self, u: Duration) -> torch.Tensor:
        return self.log_survival(u).exp()

    def risk(self, horizon: Duration) -> torch.Tensor:
        """P(event e within ``horizon``) for every event, ``[*batch, E, U]``."""
        return -torch.expm1(self.log_survival(horizon))
