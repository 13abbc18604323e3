"""Loss name registry: build losses from configuration by name.

A loss module registers itself with :func:`register_loss`::

    @register_loss("logistic_hazard")
    class LogisticHazardLoss(nn.Module): ...

and a trainer builds it from a config entry with ``get_loss("logistic_hazard", reduction="mean")``.
Names are lower-case ``snake_case``; registering the same name twice is an error.

A registered class may also define ``example_inputs(batch_size, visits, bins, *, generator=None,
dtype=torch.float32) -> dict[str, torch.Tensor]`` (a classmethod): keyword arguments of ``forward`` for a
synthetic batch of that size. The loss benchmark (``python -m ehrseq.bench losses``) and the registry
tests use it to run every registered loss; :mod:`ehrseq.losses.examples` builds the shared labels.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from ehrseq.errors import ConfigError

LossClass = TypeVar("LossClass", bound=type[nn.Module])

_LOSSES: dict[str, type[nn.Module]] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def register_loss(name: str) -> Callable[[LossClass], LossClass]:
    """Class decorator registering an ``nn.Module`` loss under ``name``."""
    if not _NAME.match(name):
        raise ValueError(f"loss names are lower-case snake_case, got {name!r}")

    def decorate(cls: LossClass) -> LossClass:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"only nn.Module subclasses can be registered as losses, got {cls!r}")
        registered = _LOSSES.get(name)
        if registered is not None and registered is not cls:
            raise ValueError(f"loss name {name!r} is already registered to {registered.__qualname__}")
        _LOSSES[name] = cls
        return cls

    return decorate


def available_losses() -> list[str]:
    """Names of every registered loss, sorted."""
    return sorted(_LOSSES)


def loss_class(name: str) -> type[nn.Module]:
    """The class registered under ``name``; :class:`ConfigError` (with close matches) if unknown."""
    try:
        return _LOSSES[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), _LOSSES, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(f"unknown loss {name!r}{hint} Available: {', '.join(available_losses())}") from None


def get_loss(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the loss registered under ``name`` with hyper-parameters ``kwargs``.

    Unknown names, unknown hyper-parameters and invalid values raise :class:`ConfigError`.
    """
    cls = loss_class(name)
    parameters = inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = [key for key in kwargs if key not in parameters or key == "self"]
    if unknown and not accepts_any:
        accepted = [p for p in parameters if p != "self"]
        raise ConfigError(
            f"loss {name!r} ({cls.__name__}) has no hyper-parameter(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"loss {name!r} ({cls.__name__}): {exc}") from exc
