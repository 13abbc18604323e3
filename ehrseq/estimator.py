"""`DynamicSurvival`: the estimator users meet first — visit tables in, per-visit survival curves out.

::

    model = ehrseq.DynamicSurvival(encoder="gru", head="logistic_hazard", loss="nll")
    model.fit(visits, outcomes)                                   # validation: 15 % of patients
    model.predict_survival(visits, times=[365, 730])              # per patient, at the last visit
    model.predict_risk(visits, horizon=365, landmark=730)         # P(event by s + 365 | alive at s = 730)
    model.save("pbc-model"); model = ehrseq.load("pbc-model")

Everything the fitted estimator needs to predict — model config and weights, the fitted feature
pipeline, the horizon grid, the cohort settings — is saved as safetensors + JSON (no pickle).

**Time.** Durations (``times``, ``horizon``) are days after the visit (or after the landmark). A
numeric ``landmark`` s is measured in days since each patient's origin (the first visit by default,
or the origin column chosen at fit time); a date/datetime landmark is a calendar time (datetime clocks).
The landmark prediction uses the last visit m with v_m ≤ s and conditions on survival to s:
P(T > s + Δ | T > s, history ≤ s) = S_m(s + Δ − v_m) / S_m(s − v_m).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import inspect
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from ehrseq import predict
from ehrseq.checkpoint import load_checkpoint, save_checkpoint
from ehrseq.data import Cohort, FeaturePipeline, PredictionTimeLoader, TimeGrid, make_loader, split_patients, tensorize
from ehrseq.data.batch import reached_entry
from ehrseq.data.sharding import RankSlices
from ehrseq.device import select_device
from ehrseq.errors import CheckpointError, ConfigError, option
from ehrseq.losses.terms import get_term
from ehrseq.models.distributions import MultiEvent, SurvivalDistribution
from ehrseq.models.distributions.base import ConditionalSurvival
from ehrseq.models.distributions.ensemble import EnsembleAverage
from ehrseq.models.encoders import EncoderConfig
from ehrseq.models.ensemble import EnsembleModel, build_model, linear_weight_by_likelihood
from ehrseq.models.families import HeadFamily, get_family
from ehrseq.models.heads import HeadConfig
from ehrseq.models.model import DynamicSurvivalModel, ModelConfig, linear_member_lr
from ehrseq.objective import Objective, ObjectiveConfig
from ehrseq.settings import (
    COHORT_SETTINGS,
    REFERENCE_TIME_SCALE,
    TRAINER_SETTINGS,
    CohortSettings,
    EstimatorSettings,
)
from ehrseq.train import Trainer, TrainerConfig, TrainingHistory, distributed_context, init_distributed, on_rank_zero

TablePair = tuple[Any, Any]


class DynamicSurvival:
    """Per-visit survival prediction from visit tables (scikit-learn style: settings in ``__init__``,
    learned state in attributes ending with ``_`` after :meth:`fit`).

    The settings are one typed configuration, :attr:`settings` (:class:`ehrseq.settings.EstimatorSettings`):
    ``get_params``/``set_params`` read and change it (an assignment such as ``model.epochs = 5`` is a
    ``set_params``), ``sklearn.base.clone`` makes an unfitted copy, and :meth:`save` writes it.

    Parameters
    ----------
    encoder: ``"gru"``, ``"lstm"``, ``"transformer"``, ``"landmark"`` (no history: the current visit only), or an :class:`EncoderConfig` / dict.
    head: a head kind (see :mod:`ehrseq.models.families`), or a :class:`HeadConfig` / dict.
    loss: a loss term name, a mapping ``{term: weight or {weight, options}}`` or an
        :class:`ObjectiveConfig` (see :mod:`ehrseq.objective`); default the head's own likelihood.
    grid: horizon grid for grid heads: the number of bins (quantiles of the training event times),
        explicit cut points in days, or a :class:`TimeGrid`.
    d_model, n_layers, dropout, hidden: sizes used when ``encoder``/``head`` are given by name.
    numeric, categorical, codes, origin, duplicates, unmatched, max_visits, event_types, null_values: how the
        tables are read (see :func:`ehrseq.data.build_cohort`); kept with the model for prediction, where the
        feature columns are those of the fitted model (their roles are not inferred again).
    locf: carry the last observed numeric value forward instead of imputing the training mean.
    measurement_history: for each numeric feature with missing values, add how long ago it was last measured
        and whether it ever was (default on; :class:`~ehrseq.data.FeaturePipeline`): the age of a value
        carried forward, and a never-measured value told apart from the training mean.
    log_skewed: read every right-skewed non-negative numeric feature (skewness above 1 in the training
        visits: most laboratory values) on the log scale, sign(x) log1p(|x| / c) with c the median of its
        positive training values (default on; :class:`~ehrseq.data.FeaturePipeline`): its ratios, not its
        differences, move the risk, and its largest values no longer set the scale of everyone else's.
    wide: add a linear path from the current visit's inputs (values carried forward, missingness,
        categories, codes, visit time) and from the codes recorded at any visit so far (each once, from its
        first record) to the head's outputs, beside the sequence path (default on): the
        model then nests the landmark linear model a statistician would fit, and starts from it (the
        sequence path's last layer starts at zero). With a hazard head (logistic or piecewise hazards) the
        path also has a proportional term, one linear predictor that scales every bin's hazard alike as a
        Cox model's does, beside the per-bin effects. See :mod:`ehrseq.models.model`.
    any_time: predict at any time after a visit, not only at visits (default ``"auto"``: on for every
        single- or competing-event head in days): the head reads the time elapsed since the visit, and
        training samples prediction times between visits with their landmark targets (after the last visit
        from one exponential distribution for every patient, of mean the median remaining time of the
        training visits: :mod:`ehrseq.data.prediction_times`), so a landmark prediction from an older visit
        is learned, not extrapolated from the visit's curve.
    n_models: a deep ensemble of this many models (seeds ``seed``, ``seed + 1``, …, each with its own
        validation split) whose survival curves are averaged; saved, loaded and scored as one model
        (single-event heads in days). Default ``"auto"``: 5 for cohorts under 10,000 patients (where the
        variance of one fit dominates), else 1 (:meth:`EstimatorSettings.n_models_for`).
    linear_members: linear models of the same inputs added to the ensemble (the current visit's embedding and a
        head without hidden layers beside the linear path, trained at max(``lr``, 1e-2) at the default ``d_model``
        (the floor scaled by 64 / ``d_model`` for wider embeddings: :func:`ehrseq.models.model.linear_member_lr`):
        :meth:`ehrseq.models.model.ModelConfig.member`), their curves averaged with the networks'. Default
        ``"auto"``: as many as the networks when ``n_models="auto"`` (else 0;
        :meth:`EstimatorSettings.linear_members_for`).
    linear_weight: the linear members' share of the ensemble's average, a number in [0, 1] (the networks share
        the rest). Default ``"auto"``: linear member j is validated on the patients of network j, and the share
        is the one (0 to 1 in steps of 0.05) under which the mixture of the two kinds gives those held-out
        patients' visits the highest likelihood (:func:`ehrseq.models.ensemble.linear_weight_by_likelihood`);
        with ``validation=None`` every member weighs alike.
    blend, blend_weight: a blend of two configurations: ``blend`` maps settings to the values of a second model
        (or ensemble) fitted on the same data, e.g. ``{"encoder": "lstm", "head": "weibull", "lr": 3e-3}``; the
        others are this one's. The prediction is the mixture of the two, the second weighing ``blend_weight``
        (default 0.5): S = (1 − w) S_this + w S_blend, the average of their curves at the prediction time (a member
        without an elapsed-time input conditioned on survival to it). Both models read the same tables and
        features, so ``blend`` cannot set how tables are read or encoded, ``cause``, ``device`` and the like
        (:data:`ehrseq.settings.BLEND_SHARED`); their heads must average (single-event heads in days). Saved,
        loaded and scored as one model. :func:`ehrseq.tune` returns such a blend of the defaults and the best
        trial's settings when that trial's gain over the defaults clears one standard error.
    cause: event type of interest for single-event heads on data with K > 1 types (others censored).
    visit_weighting: ``"auto"`` (default; unbiased per-visit weighting, see :mod:`ehrseq.objective`),
        ``"visit"`` or ``"patient"``.
    epochs, steps, min_epochs: the training length: ``epochs`` when given, else (default) a budget of
        ``steps`` optimiser steps (300) and at least ``min_epochs`` passes over the data (10), whichever is
        longer (:meth:`EstimatorSettings.training_length`); early stopping with best-weights restore on the
        validation patients in both cases.
    batch_size, lr, weight_decay, patience, grad_clip, scheduler: optimisation (see
        :class:`ehrseq.train.TrainerConfig`).

    The defaults were chosen on the real-data suite (``python -m ehrseq.bench suite``; the figures and the
    diagnosis of small-cohort fits are in ``docs/results/suite.md``).
    seed, deterministic, device, amp: reproducibility and hardware.
    progress: one progress bar while training: ``"auto"`` (default: on a terminal only), ``True`` or ``False``.

    :func:`ehrseq.tune` searches these settings by patient-level cross-validation (Optuna; the search space is
    :data:`ehrseq.tuning.SEARCH_SPACE`) and returns a fitted ``DynamicSurvival`` with the best of them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # the signature is that of EstimatorSettings (set below): one field per setting
        object.__setattr__(self, "settings", EstimatorSettings(*args, **kwargs))

    # ------------------------------------------------------------------------------------ settings
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments, as given (scikit-learn's estimator API; ``deep`` has no effect)."""
        return self.settings.params()

    def set_params(self, **params: Any) -> DynamicSurvival:
        """Change settings (checked as in the constructor); they apply at the next :meth:`fit`."""
        object.__setattr__(self, "settings", self.settings.replace(**params))
        return self

    def __getattr__(self, name: str) -> Any:
        settings = self.__dict__.get("settings")
        if settings is not None and name in EstimatorSettings.names():
            return getattr(settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in EstimatorSettings.names():
            self.set_params(**{name: value})
        else:
            object.__setattr__(self, name, value)

    @property
    def objective(self) -> ObjectiveConfig:
        """The training objective of the ``loss``, ``cause`` and ``visit_weighting`` settings."""
        return self.settings.objective()

    @property
    def cohort_settings(self) -> CohortSettings:
        """How tables are read (the table settings)."""
        return self.settings.cohort()

    @property
    def trainer_config(self) -> TrainerConfig:
        """The optimisation settings."""
        return self.settings.trainer()

    # ------------------------------------------------------------------------------------ fitting
    def fit(
        self,
        visits: Any,
        outcomes: Any,
        *,
        validation: float | TablePair | None = 0.15,
        multi_outcomes: Any = None,
    ) -> DynamicSurvival:
        """Build the cohort, fit features and grid on the training patients, and train the model.

        ``validation``: a fraction of patients held out (stratified by event type) for early stopping,
        a ``(visits, outcomes)`` pair, or ``None`` (train for ``epochs`` without early stopping).
        Afterwards: ``model_``, ``features_``, ``grid_``, ``reach_`` (how far the training patients
        reach: predictions beyond are marked ``extrapolated``, :class:`ehrseq.predict.Reach`),
        ``history_``, ``cohort_report_``.

        Under ``torchrun --nproc_per_node=N`` (``--nnodes`` for several machines) every process calls
        ``fit`` on the same tables; they join one process group (gloo on CPU, NCCL on CUDA) and each
        trains on its share of every batch of one process (:mod:`ehrseq.data.sharding`), so the fitted
        weights are those of one process up to floating-point rounding (with ``dropout=0``: dropout masks
        are drawn by each process). :meth:`save` then writes the model once, from rank 0.
        """
        init_distributed()  # under torchrun: join the process group (a no-op otherwise)
        cohort = self.cohort_settings.build(visits, outcomes, multi_outcomes)
        self._check_event_types(cohort)
        self.cohort_report_ = cohort.report
        self.event_type_names_ = cohort.event_type_names
        self.event_names_ = cohort.event_names
        if isinstance(validation, (tuple, list)) and len(validation) in (2, 3):
            explicit = self.cohort_settings.build(*validation)
        elif validation is None or (isinstance(validation, (int, float)) and not isinstance(validation, bool)
                                    and 0 < float(validation) < 1):
            explicit = None
        elif isinstance(validation, (int, float)) and not isinstance(validation, bool):
            raise ConfigError(f"validation must be a fraction in (0, 1), a (visits, outcomes) pair or None, got {validation}")
        else:
            raise ConfigError("validation must be a fraction, a (visits, outcomes) pair or None")

        head = self._head_config(cohort)
        time_unit = head.time_scale / REFERENCE_TIME_SCALE  # the clock's units per day of the model
        self.features_ = FeaturePipeline(codes=self.settings.codes is not None, locf=self.settings.locf,
                                         time_unit=time_unit,
                                         measurement_history=self.settings.measurement_history,
                                         log_skewed=self.settings.log_skewed).fit(cohort)
        self.grid_ = TimeGrid.manual(head.grid) if head.grid is not None else None
        self.reach_ = predict.Reach.of(cohort, self.grid_)
        encoder = EncoderConfig.from_dict({
            **self.settings.encoder_settings(),
            "n_numeric": len(self.features_.numeric_names),
            "categorical_cardinalities": list(self.features_.categorical_cardinalities),
            "code_vocab_size": self.features_.code_vocab_size,
            "time_unit": time_unit,
        })
        networks = self.settings.n_models_for(head.family, cohort.n_patients)
        linear = self.settings.linear_members_for(head.family, networks)
        self.model_config_ = ModelConfig(
            encoder=encoder, head=head,
            next_visit=any(get_term(t.name).needs_next_visit for t in self.objective.terms),
            wide=self.settings.wide, any_time=self.settings.any_time_for(head.family),
            n_models=networks + linear, linear_members=linear,
            code_history=self.settings.wide and encoder.code_vocab_size > 0,
            proportional=self.settings.wide and head.family.risk_direction(head) is not None)
        members, records, held_out = [], [], []
        for member in range(self.model_config_.n_models):
            seed = self.settings.seed + member
            split = member if member < networks else (member - networks) % networks  # linear j: network j's split
            if explicit is not None:
                train, val = cohort, explicit
            elif validation is None:
                train, val = cohort, None
            else:
                train, val = split_patients(cohort, (1 - float(validation), float(validation)),
                                            seed=self.settings.seed + split)
            label = (f"member {member + 1} of {self.model_config_.n_models} of the ensemble "
                     f"({'a linear member' if member >= networks else 'a network'})"
                     if self.model_config_.n_models > 1 else "the model")
            model, history = self._train_member(train, val, seed, self.model_config_.member(member),
                                                linear_member_lr(self.model_config_.encoder.d_model)
                                                if member >= networks else None, label)
            members.append(model)
            held_out.append((0 if explicit is not None else split, val))
            records += [{**record, "member": float(member)} for record in history.records]
            if member == 0:
                self.history_ = history
        if linear:
            weight = self._linear_weight(members, held_out, networks)
            self.model_config_ = dataclasses.replace(self.model_config_, linear_weight=weight)
        if len(members) == 1:
            self.model_ = members[0]
        else:
            self.model_ = EnsembleModel(self.model_config_, members)
            self.history_ = TrainingHistory(records=records, best_epoch=self.history_.best_epoch,
                                            stopped_early=self.history_.stopped_early)
        if self.settings.blend is not None:
            self._fit_blend(visits, outcomes, validation, multi_outcomes)
        return self

    def _fit_blend(self, visits: Any, outcomes: Any, validation: Any, multi_outcomes: Any) -> None:
        """Fit the second model of a blend (settings :meth:`EstimatorSettings.blended`) on the same tables and make
        the fitted model the ensemble of both (:attr:`ModelConfig.blend`)."""
        second = DynamicSurvival(**self.settings.blended().params()).fit(
            visits, outcomes, validation=validation, multi_outcomes=multi_outcomes)
        if second.features_.to_dict() != self.features_.to_dict():
            raise ConfigError("the blended models encode the tables differently (a time scale set in one head "
                              "only?); a blend needs one feature pipeline")
        self.model_config_ = dataclasses.replace(self.model_config_, blend=second.model_config_,
                                                 blend_weight=float(self.settings.blend_weight))
        first = _members(self.model_)
        self.model_ = EnsembleModel(self.model_config_, [*first, *_members(second.model_)])
        self.reach_ = predict.Reach(min(self.reach_.remaining, second.reach_.remaining), self.reach_.follow_up)
        records = [{"member": 0.0, **record} for record in self.history_.records]  # the second's members follow
        records += [{**record, "member": record.get("member", 0.0) + len(first)} for record in second.history_.records]
        self.history_ = TrainingHistory(records=records, best_epoch=self.history_.best_epoch,
                                        stopped_early=self.history_.stopped_early)

    def _linear_weight(self, members: list[DynamicSurvivalModel], held_out: list[tuple[int, Cohort | None]],
                       networks: int) -> float | None:
        """The linear members' share of the average: ``linear_weight`` when a number; for ``"auto"`` the share
        of :func:`~ehrseq.models.ensemble.linear_weight_by_likelihood` on the validation patients (each linear
        member held out the patients of a network member), or ``None`` (equal weights) without validation."""
        if self.settings.linear_weight != "auto":
            return float(self.settings.linear_weight)
        splits: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        for k, (member, (split, val)) in enumerate(zip(members, held_out)):
            if val is None:
                return None
            scored_networks, scored_linear = splits.setdefault(split, ([], []))
            (scored_linear if k >= networks else scored_networks).append(self._log_likelihoods(member, val))
        return linear_weight_by_likelihood([(np.stack(net), np.stack(lin)) for net, lin in splits.values()
                                            if net and lin])

    def _log_likelihoods(self, model: DynamicSurvivalModel, cohort: Cohort) -> np.ndarray:
        """log f(R) of each visit of ``cohort`` whose patient has the event after R, log S(R) of each visit
        censored after R (R the remaining time), at every visit at or after the patient's entry ``[V]``
        (visits before entry are history: no loss reads them), in the order of the cohort's visit rows."""
        remaining, event, _ = _visit_targets(cohort, self.objective.cause)
        at_risk = np.ones(remaining.size, dtype=bool)
        if "entry_time" in cohort.patients.columns:
            entry = cohort.patients["entry_time"].to_numpy()[cohort.visits["patient_index"].to_numpy()]
            at_risk = reached_entry(torch.tensor(cohort.visits["elapsed"].to_numpy()), torch.tensor(entry)).numpy()
        values = np.full(remaining.size, np.nan)
        for selection in predict.predictions(model, self.features_, cohort, at="all", batch_size=512,
                                             device=select_device(self.trainer_config.device)):
            [(_, distribution)] = selection.marginals()
            rows = selection.visit_row
            u = _tensor(remaining[rows], distribution).unsqueeze(-1)  # [n, 1]: one duration per visit
            happened = torch.as_tensor(event[rows] > 0, device=distribution.device)
            values[rows] = torch.where(happened, distribution.log_density(u)[:, 0],
                                       distribution.log_survival(u)[:, 0]).cpu().numpy()
        return values[at_risk]

    def _train_member(self, train: Cohort, val: Cohort | None, seed: int, config: ModelConfig, lr_floor: float | None,
                      label: str = "the model") -> tuple[DynamicSurvivalModel, TrainingHistory]:
        """One model of ``config`` (a member of :attr:`model_config_`, named ``label`` in errors) trained from
        ``seed`` on ``train`` at a learning rate of at least ``lr_floor`` (when given; early stopping on ``val``)."""
        torch.manual_seed(seed)
        model = DynamicSurvivalModel(config)
        model.head.initialize_bias(*_visit_targets(train, self.objective.cause))
        objective = Objective(self.objective, config, visits_per_patient=train.n_visits / train.n_patients)

        train_data = tensorize(train, self.features_, self.grid_)
        # Training batches are drawn at random, not bucketed by history length: history length is
        # tied to the outcome (early deaths have short histories), and length-homogeneous batches make
        # the stochastic gradients outcome-correlated enough to leave the fitted risks miscalibrated
        # (measured on simulated data with known truth). Prediction batches are bucketed (harmless there).
        train_loader = make_loader(train_data, self.settings.batch_size, shuffle=True, seed=seed,
                                   bucket_by_length=False)
        if self.model_config_.any_time:
            cuts = torch.tensor(np.asarray(self.grid_.cuts, dtype=np.float64)) if self.grid_ is not None else None
            horizon = float(np.median(train.visits["remaining"].to_numpy()))  # the last visits' mean offset
            train_loader = PredictionTimeLoader(train_loader, seed, cuts=cuts, horizon=horizon)
        rank, world = distributed_context()
        if world > 1:  # under torchrun: each rank trains on its rows of the batches of one process
            train_loader = RankSlices(train_loader, rank, world)
        val_loader = None
        if val is not None:
            val_loader = make_loader(tensorize(val, self.features_, self.grid_), self.settings.batch_size, shuffle=False)
        trainer_config = self.settings.trainer(len(train_loader))
        lr = trainer_config.lr if lr_floor is None else max(trainer_config.lr, lr_floor)
        trainer = Trainer(dataclasses.replace(trainer_config, seed=seed, lr=lr))
        try:
            history = trainer.fit(model, objective, train_loader, val_loader)
        except FloatingPointError as exc:  # which fit diverged, at which rate (a linear member's is not lr)
            floor = (f"; linear members train at max(lr, {lr_floor:g}) ({option('linear_members', 0)} leaves them "
                     "out)" if lr_floor is not None else "")
            raise FloatingPointError(f"{label}, trained at lr {lr:g}{floor}: {exc}") from exc
        return model.to("cpu"), history

    def _check_event_types(self, cohort: Cohort) -> None:
        """A single-event head on K > 1 event types needs ``cause`` (the type of interest; the others then end
        follow-up like censorings), and ``cause`` must be a type that occurs."""
        kind = self.settings.head_settings().get("kind", "logistic_hazard")
        family = get_family(kind)
        if family.competing or family.multi_event:
            return
        events = cohort.report.events if cohort.report is not None else {}
        summary = ", ".join(f"{'censored' if k == 0 else f'type {k}'}: {n:,}" for k, n in sorted(events.items()))
        cause = self.objective.cause
        if cause is None and cohort.n_event_types > 1:
            hint = ""
            if 0 not in events:
                hint = (" (nobody is censored: if 1 means censored, as in R's Surv() coding, recode the events "
                        "to event - 1)")
            first = min((k for k in events if k), default=1)
            raise ConfigError(
                f"the outcome table has {cohort.n_event_types} event types ({summary}){hint}, and the {kind} head "
                f"models one event: pass {option('cause', first)} "
                f"(the event type of interest; the other types then end follow-up like censorings) or use "
                f"{option('head', 'competing_pmf')} for competing risks")
        if cause is not None and events.get(cause, 0) == 0:
            raise ConfigError(f"{option('cause', cause)}: no patient has event type {cause} ({summary})")

    def _head_config(self, train: Cohort) -> HeadConfig:
        settings = self.settings.head_settings()
        family = get_family(settings.get("kind", "logistic_hazard"))
        remaining = train.visits["remaining"].to_numpy()
        if "time_scale" not in settings:
            median = float(np.median(remaining)) if remaining.size else 365.25
            settings["time_scale"] = median if median > 0 and math.isfinite(median) else 365.25
        if family.grid and settings.get("grid") is None:
            grid = self.settings.grid
            if isinstance(grid, TimeGrid):
                cuts = grid
            elif isinstance(grid, int):
                cuts = TimeGrid.quantiles(train, grid)
            else:
                cuts = TimeGrid.manual(grid)
            settings["grid"] = [float(c) for c in np.asarray(cuts.cuts)]
        if family.competing and "num_causes" not in settings:
            settings["num_causes"] = max(train.n_event_types, 1)
        if family.multi_event and not settings.get("event_names"):
            if not train.event_names:
                raise ConfigError("a multi_event head needs multi_outcomes at fit time")
            settings["event_names"] = list(train.event_names)
        return HeadConfig.from_dict(settings)

    # ------------------------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ConfigError("this DynamicSurvival is not fitted yet; call fit() or ehrseq.load()")

    def cohort(self, visits: Any, outcomes: Any = None) -> Cohort:
        """The visit table as this model reads it for prediction: validated with its table settings;
        with ``outcomes``, visits at or after each patient's outcome are dropped (and patients without
        an outcome row), as counted in the cohort's report."""
        if outcomes is None and self.cohort_settings.origin not in ("first_visit", "zero"):
            raise ConfigError(
                f"the model measures time from the outcome-table column {self.cohort_settings.origin!r}; "
                f"pass {option('outcomes')} (it may hold only patient_id and that column) to predict"
            )
        return self.cohort_settings.build(visits, outcomes, unmatched="drop" if outcomes is not None else None,
                                          features=self.features_)

    @property
    def family_(self) -> HeadFamily:
        """The head family of the fitted model (its capabilities: :mod:`ehrseq.models.families`)."""
        self._check_fitted()
        return self.model_config_.head.family

    def _predictions(self, cohort: Cohort, at: str, landmark: Any, batch_size: int) -> Iterator[predict.Selection]:
        """The prediction core on this model (:func:`ehrseq.predict.predictions`)."""
        return predict.predictions(self.model_, self.features_, cohort, at=at, landmark=landmark,
                                   batch_size=batch_size, device=select_device(self.trainer_config.device))

    def _in_days(self, method: str) -> None:
        """Refuse day-based predictions of a head whose time unit is not the day."""
        if not self.family_.in_days:
            raise ConfigError(f"the {self.model_config_.head.kind} head has no time scale in days and cannot give "
                              f"{method}; use predict_next_visit_risk()")

    def _frame(self, cohort: Cohort, selection: predict.Selection) -> dict[str, Any]:
        return {
            "patient_id": cohort.patients["patient_id"].gather(selection.patient_index),
            "visit_time": cohort.to_clock(cohort.visits["time"].to_numpy()[selection.visit_row]),
        }

    @staticmethod
    def _durations(values: float | Sequence[float] | np.ndarray, name: str) -> np.ndarray:
        array = np.atleast_1d(np.asarray(values, dtype=np.float64))
        if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)) or np.any(array < 0):
            raise ConfigError(f"{name} must be one or more finite durations >= 0 (days), got {values!r}")
        return array

    def predict_survival(
        self,
        visits: Any,
        times: float | Sequence[float],
        *,
        at: str = "last",
        landmark: Any = None,
        outcomes: Any = None,
        batch_size: int = 512,
    ) -> pl.DataFrame:
        """Survival probabilities P(T > v + u | history ≤ v) for each duration u in ``times`` (days).

        Returns a long frame ``patient_id, visit_time, horizon, survival, extrapolated`` (``horizon`` = u;
        plus ``landmark`` when given: then P(T > s + u | T > s, history ≤ s)); ``extrapolated`` marks
        durations beyond the training data (:mod:`ehrseq.predict`, step 5). For competing-risks heads
        this is all-cause survival; for multi-event heads there is one row per event (column ``event``).
        """
        self._in_days("survival probabilities")
        durations = self._durations(times, "times")
        cohort = self.cohort(visits, outcomes)
        frames = []
        for selection in self._predictions(cohort, at, landmark, batch_size):
            for event_name, marginal in selection.marginals():
                survival = marginal.survival(_tensor(durations, marginal))
                frames.append(self._long(cohort, selection, durations, survival, "survival", event_name, landmark))
        return _concat(frames, self._long_schema(cohort, "survival", landmark, multi=self._is_multi))

    def predict_risk(
        self,
        visits: Any,
        horizon: float | Sequence[float],
        *,
        landmark: Any = None,
        at: str = "last",
        cause: int | None = None,
        event: str | None = None,
        outcomes: Any = None,
        batch_size: int = 512,
    ) -> pl.DataFrame:
        """Probability of the event within ``horizon`` days of the visit (or of the landmark s, given
        survival to s): a frame ``patient_id, visit_time, horizon, risk, extrapolated`` (+ ``landmark``,
        + ``event``); ``extrapolated`` marks horizons beyond the training data (:mod:`ehrseq.predict`, step 5).

        Competing-risks heads: ``cause=k`` gives the cumulative incidence of cause k, P(T ≤ s + Δ,
        cause k | T > s); ``None`` the all-cause risk. Multi-event heads: ``event`` selects one event
        (default: every event, column ``event``). The visit-indexed head has no time scale in days:
        use :meth:`predict_next_visit_risk`.
        """
        self._check_fitted()
        horizons = self._durations(horizon, "horizon")
        if not self.family_.in_days:
            raise ConfigError(f"the {self.model_config_.head.kind} head predicts the risk before the next visit, not "
                              "within a number of days; use predict_next_visit_risk()")
        cohort = self.cohort(visits, outcomes)
        frames = []
        for selection in self._predictions(cohort, at, landmark, batch_size):
            if self.family_.competing:
                risk = selection.competing_risk(horizons, cause)
                frames.append(self._long(cohort, selection, horizons, risk, "risk", None, landmark))
                continue
            for event_name, marginal in selection.marginals(event):
                risk = marginal.risk(_tensor(horizons, marginal))
                frames.append(self._long(cohort, selection, horizons, risk, "risk", event_name, landmark))
        multi = self._is_multi and event is None
        return _concat(frames, self._long_schema(cohort, "risk", landmark, multi=multi))

    def predict_median(self, visits: Any, *, at: str = "last", outcomes: Any = None,
                       batch_size: int = 512) -> pl.DataFrame:
        """Median remaining time (days) after each selected visit: ``patient_id, visit_time, median_remaining,
        median_extrapolated`` (a median beyond the training data, :mod:`ehrseq.predict` step 5; +inf when
        the survival never falls to 0.5 on the model's support)."""
        self._check_fitted()
        if self.family_.multi_event or not self.family_.in_days:
            raise ConfigError("predict_median needs a single-event head with a time scale in days")
        cohort = self.cohort(visits, outcomes)
        frames = []
        for selection in self._predictions(cohort, at, None, batch_size):
            ((_, distribution),) = selection.marginals()
            frame = self._frame(cohort, selection)
            median = distribution.median().double().cpu().numpy()
            frame["median_remaining"] = median
            frame["median_extrapolated"] = selection.extrapolated(self.reach_, median[:, None])[:, 0]
            frames.append(pl.DataFrame(frame))
        return _concat(frames, {"patient_id": cohort.patients.schema["patient_id"],
                                "visit_time": _clock_dtype(cohort), "median_remaining": pl.Float64,
                                "median_extrapolated": pl.Boolean})

    def predict_next_visit_risk(self, visits: Any, *, at: str = "last", outcomes: Any = None,
                                batch_size: int = 512) -> pl.DataFrame:
        """Visit-indexed head: h_m = P(event before the next visit): ``patient_id, visit_time, risk``."""
        self._check_fitted()
        if self.family_.in_days:
            raise ConfigError("predict_next_visit_risk is for the visit_hazard head; use predict_risk(horizon=...)")
        cohort = self.cohort(visits, outcomes)
        frames = []
        for selection in self._predictions(cohort, at, None, batch_size):
            frame = self._frame(cohort, selection)
            frame["risk"] = selection.distribution.next_visit_risk().cpu().numpy()
            frames.append(pl.DataFrame(frame))
        return _concat(frames, {"patient_id": cohort.patients.schema["patient_id"],
                                "visit_time": _clock_dtype(cohort), "risk": pl.Float64})

    def predict_distribution(self, visits: Any, *, at: str = "last", landmark: Any = None, outcomes: Any = None,
                             batch_size: int = 512) -> tuple[pl.DataFrame, Any]:
        """The raw prediction objects: a frame ``patient_id, visit_time, offset`` and the matching
        distribution of batch shape ``[n]`` (on the CPU), whose ``conditional(offset)`` is the prediction:
        offset = s − v_m for the visit's distribution of a landmark prediction, 0 when the distribution is
        already the one at the prediction time (models with the elapsed-time input, ``any_time``) or
        without a landmark."""
        self._check_fitted()
        cohort = self.cohort(visits, outcomes)
        frames, distributions = [], []
        for selection in self._predictions(cohort, at, landmark, batch_size):
            frame = self._frame(cohort, selection)
            frame["offset"] = selection.unconditioned
            frames.append(pl.DataFrame(frame))
            distributions.append(_to_cpu(selection.distribution))
        if not distributions:
            raise ConfigError("no visit to predict from (no patient has a visit at or before the landmark)")
        return pl.concat(frames), _cat(distributions)

    @property
    def _is_multi(self) -> bool:
        return self.family_.multi_event

    def _long(self, cohort, selection, horizons, values, value_name, event_name, landmark):
        n, u = values.shape
        base = self._frame(cohort, selection)
        frame = {
            "patient_id": base["patient_id"].gather(np.repeat(np.arange(n), u)),
            "visit_time": base["visit_time"].gather(np.repeat(np.arange(n), u)),
            "horizon": np.tile(horizons, n),
            value_name: values.detach().cpu().double().numpy().reshape(-1),
            "extrapolated": selection.extrapolated(self.reach_, horizons).reshape(-1),
        }
        if landmark is not None:
            frame = {"patient_id": frame.pop("patient_id"), "landmark": [landmark] * (n * u), **frame}
        if event_name is not None:
            frame["event"] = [event_name] * (n * u)
        return pl.DataFrame(frame)

    def _long_schema(self, cohort, value_name, landmark, *, multi: bool) -> dict[str, Any]:
        schema: dict[str, Any] = {"patient_id": cohort.patients.schema["patient_id"]}
        if landmark is not None:
            schema["landmark"] = pl.Float64 if not isinstance(landmark, (dt.date, dt.datetime)) else pl.Datetime("us")
        schema.update({"visit_time": _clock_dtype(cohort), "horizon": pl.Float64, value_name: pl.Float64,
                       "extrapolated": pl.Boolean})
        if multi:
            schema["event"] = pl.String
        return schema

    # ------------------------------------------------------------------------------------ persistence
    def save(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write the fitted estimator to ``directory`` (safetensors weights + JSON; see :mod:`ehrseq.checkpoint`)."""
        self._check_fitted()
        documents = {
            "estimator": {
                "settings": self.settings.to_dict(),
                "event_type_names": list(self.event_type_names_) if self.event_type_names_ else None,
                "event_names": list(self.event_names_),
                "reach": self.reach_.to_dict(),
            },
            "model": self.model_config_.to_dict(),
            "features": self.features_.to_dict(),
            "grid": self.grid_.to_dict() if self.grid_ is not None else {},
            "history": self.history_.to_dict(),
        }
        # under torchrun, rank 0 writes the model once; every rank returns its path
        return on_rank_zero(lambda: save_checkpoint(directory, self.model_.state_dict(), documents,
                                                    overwrite=overwrite))

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> DynamicSurvival:
        """Load an estimator written by :meth:`save` (verifies checksums, versions and weight shapes;
        models of format version 1, written before the settings were one document, load as well)."""
        checkpoint = load_checkpoint(directory)
        docs = checkpoint.documents
        missing = {"estimator", "model", "features", "grid", "history"} - set(docs)
        if missing:
            raise CheckpointError(f"{directory} lacks the documents {sorted(missing)}; it is not a DynamicSurvival model")
        saved = docs["estimator"]
        try:
            if checkpoint.manifest["format_version"] == 1:
                settings = _settings_of_version_1(saved)
            else:
                settings = EstimatorSettings.from_dict(saved["settings"])
            if device is not None:
                settings = settings.replace(device=device)
            estimator = cls(**settings.params())
            names = saved.get("event_type_names")
            estimator.event_type_names_ = tuple(names) if names else None
            estimator.event_names_ = tuple(saved.get("event_names") or ())
            estimator.model_config_ = ModelConfig.from_dict(docs["model"])
            estimator.features_ = FeaturePipeline.from_dict(docs["features"])
            estimator.grid_ = TimeGrid.from_dict(docs["grid"]) if docs["grid"] else None
            estimator.reach_ = predict.Reach.from_dict(saved.get("reach"), estimator.grid_)
            estimator.history_ = TrainingHistory.from_dict(docs["history"])
            estimator.cohort_report_ = None
            estimator.model_ = build_model(estimator.model_config_)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{directory} has an invalid or incompatible configuration: {exc}") from exc
        try:
            estimator.model_.load_state_dict(checkpoint.state_dict, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{directory}: the weights do not match the saved model configuration: {exc}") from exc
        estimator.model_.eval()
        return estimator

    def __repr__(self) -> str:
        fitted = "fitted" if hasattr(self, "model_") else "not fitted"
        return (f"DynamicSurvival(encoder={self.settings.encoder_settings().get('kind')!r}, "
                f"head={self.settings.head_settings().get('kind')!r}, "
                f"loss={[t.name for t in self.objective.terms]}, {fitted})")


DynamicSurvival.__init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
     *inspect.signature(EstimatorSettings).parameters.values()])


def load(directory: str | Path, device: str | None = None) -> DynamicSurvival:
    """Load a model saved with :meth:`DynamicSurvival.save`."""
    return DynamicSurvival.load(directory, device=device)


# ---------------------------------------------------------------------------------------- helpers
def _settings_of_version_1(saved: Mapping[str, Any]) -> EstimatorSettings:
    """The settings of a model saved in format version 1: encoder and head settings as resolved then,
    the objective, the grid, the table settings, ``locf``, ``batch_size`` and the trainer settings."""
    trainer = saved["trainer"]
    defaults = TrainerConfig()
    hidden = {name: trainer[name] for name in ("warmup_epochs", "monitor", "mode", "min_delta")
              if trainer.get(name, getattr(defaults, name)) != getattr(defaults, name)}
    if hidden:
        raise CheckpointError(f"the saved trainer settings {hidden} are not settings of DynamicSurvival")
    objective = ObjectiveConfig.parse(saved["objective"])
    return EstimatorSettings.from_dict({
        "encoder": saved["encoder"], "head": saved["head"], "loss": objective.to_dict(), "grid": saved["grid"],
        "cause": objective.cause, "visit_weighting": objective.visit_weighting, "locf": saved["locf"],
        "batch_size": saved["batch_size"],
        **{name: saved["cohort"][name] for name in COHORT_SETTINGS if name in saved["cohort"]},
        **{name: trainer[name] for name in TRAINER_SETTINGS if name in trainer},
    })


def _visit_targets(cohort: Cohort, cause: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per training visit: remaining time, event type (only ``cause`` when given) and last-visit flag."""
    patient = cohort.visits["patient_index"].to_numpy()
    event = cohort.patients["event"].to_numpy()[patient]
    if cause is not None:
        event = (event == cause).astype(event.dtype)
    last = np.zeros(patient.size, dtype=bool)
    last[cohort.offsets[1:] - 1] = True
    return cohort.visits["remaining"].to_numpy(), event, last


def _members(model: DynamicSurvivalModel | EnsembleModel) -> list[DynamicSurvivalModel]:
    """The models of a fitted model: an ensemble's members, or the model itself."""
    return list(model.members) if isinstance(model, EnsembleModel) else [model]


def _tensor(values: np.ndarray, like: SurvivalDistribution) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device)


def _clock_dtype(cohort: Cohort) -> Any:
    return cohort.to_clock(np.zeros(0)).dtype


def _concat(frames: list[pl.DataFrame], schema: dict[str, Any]) -> pl.DataFrame:
    """Stack per-batch frames (batches come in length-bucketed order) and sort rows by patient, visit
    and event/horizon so that the output order does not depend on batching."""
    if not frames:
        return pl.DataFrame(schema=schema)
    frame = pl.concat(frames, how="vertical_relaxed")
    keys = [c for c in ("patient_id", "visit_time", "event", "horizon") if c in frame.columns]
    return frame.sort(keys, maintain_order=True)


def _to_cpu(distribution: Any) -> Any:
    return distribution.to("cpu")


def _cat(distributions: list[Any]) -> Any:
    """Concatenate distributions of batch shape ``[n_i]`` along the batch dim."""
    first = distributions[0]
    if len(distributions) == 1:
        return first
    if isinstance(first, EnsembleAverage):
        return EnsembleAverage([_cat([d.members[k] for d in distributions]) for k in range(len(first.members))],
                               first.weights)
    if isinstance(first, MultiEvent):
        return MultiEvent({name: _cat([d[name] for d in distributions]) for name in first.names})
    if isinstance(first, ConditionalSurvival):  # a blend's member conditioned to the prediction time
        return ConditionalSurvival(_cat([d.base for d in distributions]), torch.cat([d.elapsed for d in distributions]))
    merged = copy.copy(first)
    for name in first.batched_fields:
        values = [getattr(d, name) for d in distributions]
        if all(v is not None for v in values):
            setattr(merged, name, torch.cat(values, dim=0))
    refresh = getattr(merged, "_after_index", None)  # survival distributions cache derived values
    if refresh is not None:
        refresh()
    return merged
