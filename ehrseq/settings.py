"""The settings of :class:`~ehrseq.DynamicSurvival`: one typed, frozen configuration.

:class:`EstimatorSettings` holds every constructor argument of the estimator, as given (scikit-learn's
contract: ``get_params`` returns what was passed, so that ``sklearn.base.clone`` works), checks them
when it is made (a :class:`~ehrseq.errors.ConfigError` names the setting), and derives the typed
configurations the estimator works with — encoder and head settings, the training objective, the table
settings, the trainer configuration. It is serialised once (:meth:`~EstimatorSettings.to_dict` /
:meth:`~EstimatorSettings.from_dict`, JSON), for saved models and for ``get_params``/``set_params``.

A new setting is one field here (with its default: models saved before it existed load with it) and
its use where the model is built or trained; a field named like a field of
:class:`~ehrseq.train.TrainerConfig` reaches the trainer without more.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, fields
from typing import Any

from ehrseq.data import Cohort, FeaturePipeline, TimeGrid, build_cohort
from ehrseq.data.reader import null_values as null_values_in_force
from ehrseq.errors import ConfigError, option
from ehrseq.models.encoders import EncoderConfig
from ehrseq.models.families import FAMILIES
from ehrseq.models.heads import HeadConfig
from ehrseq.objective import ObjectiveConfig
from ehrseq.progress import Progress
from ehrseq.train import TrainerConfig


@dataclass(frozen=True)
class CohortSettings:
    """How tables become a cohort (kept with the model so prediction uses the same rules)."""

    numeric: tuple[str, ...] | None = None
    categorical: tuple[str, ...] | None = None
    codes: str | None = "codes"
    origin: str = "first_visit"
    duplicates: str = "error"
    unmatched: str = "error"
    max_visits: int | None = None
    event_types: tuple[str, ...] | int | None = None
    null_values: tuple[str, ...] | None = None

    def build(self, visits: Any, outcomes: Any = None, multi_outcomes: Any = None, *, unmatched: str | None = None,
              features: FeaturePipeline | None = None) -> Cohort:
        """The cohort of these tables; with a fitted ``features`` pipeline, its columns are the features
        (declared: the roles learnt at fit time, whatever the dtypes of these tables)."""
        return build_cohort(
            visits,
            outcomes,
            numeric=self.numeric if features is None else features.numeric_columns,
            categorical=self.categorical if features is None else features.categorical_columns,
            codes=self.codes,
            origin=self.origin,
            duplicates=self.duplicates,
            unmatched=unmatched or self.unmatched,
            max_visits=self.max_visits,
            multi_outcomes=multi_outcomes,
            event_types=self.event_types,
            null_values=self.null_values,
        )


#: the estimator settings that say how tables are read (:class:`CohortSettings`)
COHORT_SETTINGS = tuple(f.name for f in fields(CohortSettings))


#: The model's clock: the median remaining time of the training visits (the head's time scale) is this many
#: days of the visit embedding's time encoding and time features, whatever the unit of the data's clock (days,
#: weeks, years): the same data on another clock give the same model. 1,000 is about the geometric mean of the
#: suite's day-clock cohorts (105–3,138 days), so a day clock is read roughly as days.
REFERENCE_TIME_SCALE = 1000.0

#: ``n_models="auto"``: members of the ensemble for cohorts under :data:`AUTO_ENSEMBLE_COHORT` patients.
AUTO_ENSEMBLE = 5
AUTO_ENSEMBLE_COHORT = 10_000
#: ``linear_members="auto"`` (with ``n_models="auto"``): linear members per network member of the ensemble.
AUTO_LINEAR_PER_NETWORK = 1


@dataclass(frozen=True)
class EstimatorSettings:
    """The parameters of :class:`~ehrseq.DynamicSurvival` (documented there), as given."""

    encoder: str | EncoderConfig | Mapping[str, Any] = "gru"
    head: str | HeadConfig | Mapping[str, Any] = "logistic_hazard"
    loss: str | Mapping[str, Any] | ObjectiveConfig = "nll"
    _: KW_ONLY
    grid: int | Sequence[float] | TimeGrid = 20
    d_model: int = 64
    n_layers: int = 1
    dropout: float = 0.1
    hidden: Sequence[int] = (64,)
    numeric: Sequence[str] | None = None
    categorical: Sequence[str] | None = None
    codes: str | None = "codes"
    origin: str = "first_visit"
    duplicates: str = "error"
    unmatched: str = "error"
    max_visits: int | None = None
    event_types: Sequence[str] | int | None = None
    null_values: Sequence[str] | str | None = None
    locf: bool = True
    measurement_history: bool = True
    log_skewed: bool = True
    wide: bool = True
    any_time: bool | str = "auto"
    n_models: int | str = "auto"
    linear_members: int | str = "auto"
    linear_weight: float | str = "auto"
    blend: Mapping[str, Any] | None = None
    blend_weight: float = 0.5
    cause: int | None = None
    visit_weighting: str = "auto"
    epochs: int | None = None
    steps: int = 300
    min_epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int | None = 8
    grad_clip: float | None = 1.0
    scheduler: str = "cosine"
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    amp: bool = False
    progress: Progress = "auto"

    def __post_init__(self) -> None:
        for name, low in (("n_models", 1), ("linear_members", 0), ("steps", 1), ("min_epochs", 1)):
            value = getattr(self, name)
            automatic = name in ("n_models", "linear_members")
            if automatic and value == "auto":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                also = " or 'auto'" if automatic else ""
                raise ConfigError(f"{name} must be an int >= {low}{also}, got {value!r}")
        if self.linear_weight != "auto" and (isinstance(self.linear_weight, bool)
                                             or not isinstance(self.linear_weight, numbers.Real)
                                             or not 0.0 <= self.linear_weight <= 1.0):
            raise ConfigError(f"linear_weight must be a number in [0, 1] or 'auto', got {self.linear_weight!r}")
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, numbers.Integral)
                                        or self.epochs < 1):
            raise ConfigError(f"epochs must be >= 1 (an int), or None for a budget of steps, got {self.epochs!r}")
        for name in ("locf", "measurement_history", "log_skewed", "wide"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.any_time not in (True, False, "auto"):
            raise ConfigError(f"any_time must be True, False or 'auto', got {self.any_time!r}")
        self.objective()
        self.trainer()
        self.cohort()
        self._check_blend()
        family = FAMILIES.get(self.head_settings().get("kind", "logistic_hazard"))
        if family is not None and family.grid and not isinstance(self.grid, (int, Sequence, TimeGrid)):
            raise ConfigError(f"grid must be a number of bins, cut points or a TimeGrid, got {self.grid!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, numbers.Integral) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be an int >= 1, got {self.batch_size!r}")

    def _check_blend(self) -> None:
        weight = self.blend_weight
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not 0.0 < weight < 1.0:
            raise ConfigError(f"{option('blend_weight', weight)}: the second model's share of a blend is a number "
                              "in (0, 1)")
        if self.blend is None:
            return
        if not isinstance(self.blend, Mapping) or not self.blend:
            raise ConfigError(f"{option('blend')}: the settings of a blend's second model are a non-empty mapping "
                              f"(e.g. {{\"encoder\": \"lstm\", \"head\": \"weibull\"}}), got {self.blend!r}")
        shared = sorted(set(self.blend) & set(BLEND_SHARED))
        unknown = sorted(set(self.blend) - set(self.names()))
        if shared or unknown:
            what = (f"{', '.join(shared)} are shared by both models (how the tables are read and encoded, the event "
                    "of interest, where and how they run)" if shared else f"{', '.join(unknown)} are not settings")
            raise ConfigError(f"{option('blend')}: {what}; a blend sets the second model's {', '.join(BLENDABLE)}")
        try:
            self.blended()
        except ConfigError as exc:
            raise ConfigError(f"{option('blend')}: the second model's settings: {exc}") from exc

    def blended(self) -> EstimatorSettings:
        """The settings of the second model of a blend (:attr:`blend`): these with the blend's values, no blend."""
        if self.blend is None:
            raise ConfigError("these settings have no blend")
        return dataclasses.replace(self, **{**self.blend, "blend": None, "blend_weight": 0.5})

    # ------------------------------------------------------------------------------------ derived configurations
    def encoder_settings(self) -> dict[str, Any]:
        """The encoder's settings (without the sizes fitted from the data): ``encoder`` given by name
        takes ``d_model``, ``n_layers`` and ``dropout``."""
        if isinstance(self.encoder, EncoderConfig):
            return self.encoder.to_dict()
        if isinstance(self.encoder, str):
            return {"kind": self.encoder, "d_model": self.d_model, "n_layers": self.n_layers, "dropout": self.dropout}
        return dict(self.encoder)

    def head_settings(self) -> dict[str, Any]:
        """The head's settings (without those fitted from the data): ``head`` given by name takes
        ``hidden`` and ``dropout``."""
        if isinstance(self.head, HeadConfig):
            return self.head.to_dict()
        if isinstance(self.head, str):
            return {"kind": self.head, "hidden": list(self.hidden), "dropout": self.dropout}
        return dict(self.head)

    def objective(self) -> ObjectiveConfig:
        return ObjectiveConfig.parse(self.loss, cause=self.cause, visit_weighting=self.visit_weighting)

    def cohort(self) -> CohortSettings:
        return CohortSettings(
            numeric=tuple(self.numeric) if self.numeric is not None else None,
            categorical=tuple(self.categorical) if self.categorical is not None else None,
            codes=self.codes,
            origin=self.origin,
            duplicates=self.duplicates,
            unmatched=self.unmatched,
            max_visits=self.max_visits,
            event_types=tuple(self.event_types) if isinstance(self.event_types, (list, tuple)) else self.event_types,
            null_values=None if self.null_values is None else null_values_in_force(self.null_values),
        )

    def trainer(self, steps_per_epoch: int | None = None) -> TrainerConfig:
        """The trainer's configuration; with ``epochs=None`` the epochs and patience of the step budget
        for ``steps_per_epoch`` optimiser steps per epoch (:meth:`training_length`; one step per epoch
        when not given)."""
        epochs, patience = self.training_length(steps_per_epoch or 1)
        values = {name: getattr(self, name) for name in TRAINER_SETTINGS}
        return TrainerConfig(**{**values, "epochs": epochs, "patience": patience})

    def training_length(self, steps_per_epoch: int) -> tuple[int, int | None]:
        """(epochs, early-stopping patience in epochs) for ``steps_per_epoch`` optimiser steps per epoch.

        ``epochs`` given: those, with ``patience``. ``epochs=None`` (the default): a budget of ``steps``
        optimiser steps and ``min_epochs`` passes, E = max(min_epochs, ⌈steps / steps_per_epoch⌉) epochs —
        a cohort of 100 patients gets 300 updates instead of two per epoch, and one of 15,000 patients
        (200 steps per epoch) still sees its data 10 times — and, when E > 50, ``patience`` counts
        fiftieths of the run (⌈patience · E / 50⌉ epochs: the default 8 stops after 16 % of the run
        without improvement), so that early stopping does not act on the noise of a few validation
        patients' losses epoch to epoch.
        """
        if self.epochs is not None:
            return int(self.epochs), self.patience
        epochs = max(int(self.min_epochs), math.ceil(self.steps / max(int(steps_per_epoch), 1)))
        patience = self.patience
        if patience is not None and epochs > 50:
            patience = math.ceil(patience * epochs / 50)
        return epochs, patience

    def n_models_for(self, family: Any, n_patients: int) -> int:
        """The ensemble's size: ``n_models`` resolved (``"auto"``: :data:`AUTO_ENSEMBLE` members for a
        cohort of fewer than :data:`AUTO_ENSEMBLE_COHORT` patients and a single-event head in days,
        else one model).

        An ensemble averages away the variance of fits — the seed, the early-stopping split — which
        dominates on small cohorts (on the suite's cohorts of 100–700 patients, five members moved the
        paired C against landmark Cox from −0.022 to +0.002 on epileptic and from +0.004 to +0.026 on
        heart; on oldmort's 4,600 patients from −0.003 to −0.001, and its IBS excess over Cox's from 0.0020 to
        0.0009); on the 16,000 patients of NAFLD they still gained 0.003 C but cost five trainings of the
        suite's longest fit, so above 10,000 patients one model is the default (``n_models=5`` asks for them).
        """
        if self.n_models != "auto":
            return int(self.n_models)
        return AUTO_ENSEMBLE if family.ensembles and n_patients < AUTO_ENSEMBLE_COHORT else 1

    def linear_members_for(self, family: Any, networks: int) -> int:
        """The linear members beside ``networks`` network members: ``linear_members`` resolved (``"auto"``: as many
        as the networks (:data:`AUTO_LINEAR_PER_NETWORK` each) when ``n_models`` is ``"auto"`` too and the head's
        curves can be averaged, else none).

        The linear model of the same inputs (:meth:`~ehrseq.models.model.ModelConfig.member`) trained fast reads the
        current covariates as the landmark Cox model does, where the networks, trained on every visit and prediction
        time in a few hundred steps, hardly learn an effect such as epileptic's dose at a late landmark. Five beside
        five networks moved the new-user check over nine folds (one late window) on epileptic from −0.069 to −0.035
        against landmark Cox and on heart from −0.006 to +0.006, and left the suite's mean level (+0.012 against
        +0.013 over folds, +0.026 against +0.025 pooled; suite diagnosis, section 8).
        """
        if self.linear_members != "auto":
            return int(self.linear_members)
        return AUTO_LINEAR_PER_NETWORK * networks if self.n_models == "auto" and family.ensembles else 0

    def any_time_for(self, family: Any) -> bool:
        """Whether models of the head ``family`` get the elapsed-time input: ``any_time`` resolved
        (``"auto"``: for every single- or competing-event head with a time scale in days)."""
        if self.any_time == "auto":
            return family.any_time
        return bool(self.any_time)

    # ------------------------------------------------------------------------------------ parameters and JSON
    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The parameter names, in constructor order."""
        return tuple(f.name for f in fields(cls))

    def params(self) -> dict[str, Any]:
        """The parameters as given (``get_params``)."""
        return {name: getattr(self, name) for name in self.names()}

    def replace(self, **changes: Any) -> EstimatorSettings:
        """A copy with ``changes`` (unknown names are a :class:`ConfigError`)."""
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise ConfigError(f"DynamicSurvival has no setting(s) {', '.join(unknown)}; valid settings are "
                              f"{', '.join(self.names())}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values: configuration objects as their dicts, sequences as lists."""
        return {name: _jsonable(value) for name, value in self.params().items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EstimatorSettings:
        """Inverse of :meth:`to_dict`; settings missing from ``values`` take their defaults."""
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ConfigError(f"unknown estimator settings {unknown}")
        values = _from_json(values)
        if isinstance(values.get("blend"), Mapping):
            values["blend"] = _from_json(values["blend"])
        return cls(**values)


def _from_json(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings read from JSON with their Python types (a grid's dict as a TimeGrid, lists as tuples)."""
    values = dict(values)
    if isinstance(values.get("grid"), Mapping):
        values["grid"] = TimeGrid.from_dict(values["grid"])
    for key in ("hidden", "numeric", "categorical", "event_types", "null_values"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    return values


#: the settings that both models of a blend share (:attr:`EstimatorSettings.blend` cannot set them): how the tables are
#: read and encoded (one cohort, one feature pipeline), the event of interest, where and how the models run
BLEND_SHARED = (*COHORT_SETTINGS, "locf", "measurement_history", "log_skewed", "cause", "device", "deterministic",
                "amp", "progress", "blend", "blend_weight")
#: the settings a blend can give its second model
BLENDABLE = tuple(name for name in EstimatorSettings.names() if name not in BLEND_SHARED)

#: the estimator settings that configure the trainer: the fields of both :class:`ehrseq.train.TrainerConfig` and
#: :class:`EstimatorSettings` (a trainer setting users may set is a field of the same name in each)
TRAINER_SETTINGS = tuple(f.name for f in fields(TrainerConfig) if f.name in EstimatorSettings.names())


def _jsonable(value: Any) -> Any:
    if isinstance(value, (EncoderConfig, HeadConfig, ObjectiveConfig, TimeGrid)):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value
