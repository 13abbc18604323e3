"""`FeaturePipeline`: per-visit feature encoding fitted on training patients, serialisable to JSON.

Numeric features
    z = (x − mean) / sd with mean and population sd of the observed (non-null, non-NaN) training
    values (their log-scale values for a column read on the log scale, below), computed in float64 and
    stored as float32; sd = 1 when a column is constant (sd below 10 machine epsilons, as in
    scikit-learn), and mean = 0, sd = 1 when it was never observed.
    Missing values are flagged in ``numeric_missing`` and filled with 0 (the training mean) — or, with
    ``locf=True``, with the patient's last observed value (never another patient's), and 0 before
    the first observation.
Skewed columns on the log scale (``log_skewed=True``)
    A numeric column whose observed training values are all ≥ 0, take at least 5 distinct values (a
    measurement, not a coded level or a flag) and are right-skewed (sample skewness g₁ = m₃ / m₂^{3/2} > 1,
    population moments: most laboratory values — bilirubin, enzymes, counts) is read as
    sign(x) · log1p(|x| / c), with c the median of its positive training values: unit-free (the
    same features in mg/dL or µmol/L), 0 at 0, monotone, and defined for a negative value met later. A
    linear model of the standardised raw value is ruled by its largest values (one outlier sets the sd
    that shrinks every other patient's value towards the mean); on the log scale a ratio, not a
    difference, moves the risk, as the classical models of such labs read them (the Mayo PBC model's
    log bilirubin). Missingness, carrying forward and the measurement history are unchanged.
Time features (``time_features=True``, appended to the numeric columns, never missing)
    ``elapsed_years`` = (v_m − origin) / (365.25 u) and ``log_gap`` = log1p(gap / u) / log1p(365.25)
    (0 at the first visit, 1 for a gap of 365.25 u), with u = ``time_unit``, the clock's days per day of
    the model (1: the clock is read as days; :class:`ehrseq.DynamicSurvival` sets it from the data, so that
    the features do not depend on the unit of the clock).
Measurement history (``measurement_history=True``, after the time features, never missing)
    For each numeric column with missing training values, ``<column>:since_measured`` = log1p(d / u) /
    log1p(365.25), d the time since the patient's last observation of it (0 at a visit that measures it,
    1 a year later; 0 before any), and ``<column>:ever_measured`` (1 once observed): with ``locf``, a value
    carried forward says how old it is, and a never-measured value (the training mean) is told apart from
    a measured one — what the per-visit missing flag ("not measured at this visit") does not say.
Categorical features
    One vocabulary per column (values compared as strings; null is a level of its own), most
    frequent first: index 0 = padding (:data:`PAD_INDEX`), 1 = unknown (:data:`UNKNOWN_INDEX`,
    levels not seen in training), levels from 2.
Codes
    One vocabulary over the codes column: codes seen at least ``code_min_count`` times in training,
    at most ``code_max_size`` of them (most frequent first, ties by code), indices from 2; other codes
    map to the unknown index 1.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ehrseq.data._parallel import thread_map
from ehrseq.data.batch import PAD_INDEX, UNKNOWN_INDEX
from ehrseq.data.specs import dtype_in_class
from ehrseq.data.validation import CODES_DTYPE
from ehrseq.errors import ConfigError, DataError

if TYPE_CHECKING:
    from ehrseq.data.cohort import Cohort

#: Names of the time features appended to the numeric columns.
TIME_FEATURES = ("elapsed_years", "log_gap")
#: Suffixes of the measurement-history columns of a numeric feature with missing training values.
HISTORY_SUFFIXES = (":since_measured", ":ever_measured")
DAYS_PER_YEAR = 365.25
_FIRST_INDEX = max(PAD_INDEX, UNKNOWN_INDEX) + 1
_FORMAT = "ehrseq.FeaturePipeline"
#: Standard deviations below this are taken as 0 (a constant column), as in scikit-learn's scalers.
_MIN_STD = 10 * np.finfo(np.float64).eps


@dataclass(frozen=True)
class EncodedVisits:
    """Encoded features of the N visits of a cohort (visit-table row order).

    ``numeric [N, F]`` float32, ``numeric_missing [N, F]`` bool, ``categorical [N, C]`` int64 (column-
    major: a column is contiguous) and the codes in CSR form: the codes of visit r are
    ``code_values[code_offsets[r]:code_offsets[r + 1]]`` (int64 vocabulary indices, ``code_offsets [N + 1]``).
    """

    numeric: np.ndarray
    numeric_missing: np.ndarray
    categorical: np.ndarray
    code_values: np.ndarray
    code_offsets: np.ndarray


class FeaturePipeline:
    """Encode a cohort's visits into arrays (see the module docstring for every transformation).

    Parameters
    ----------
    numeric, categorical:
        Columns to use; ``None`` takes the cohort's numeric / categorical features at :meth:`fit`.
    codes:
        ``True`` uses the cohort's codes column (if any), ``False`` none, a string names the column.
    locf:
        Fill missing numeric values with the patient's last observation instead of the mean.
    code_min_count, code_max_size:
        Keep codes seen at least ``code_min_count`` times, at most ``code_max_size`` codes.
    time_features:
        Append ``elapsed_years`` and ``log_gap`` to the numeric features.
    time_unit:
        u > 0, the clock's units per day of the time features (module docstring).
    measurement_history:
        Append the measurement-history columns of the numeric features with missing values (module docstring).
    log_skewed:
        Read the right-skewed non-negative numeric columns on the log scale (module docstring).
    """

    def __init__(
        self,
        numeric: Sequence[str] | None = None,
        categorical: Sequence[str] | None = None,
        codes: bool | str = True,
        *,
        locf: bool = False,
        code_min_count: int = 1,
        code_max_size: int | None = None,
        time_features: bool = True,
        time_unit: float = 1.0,
        measurement_history: bool = False,
        log_skewed: bool = False,
    ) -> None:
        if not isinstance(code_min_count, int) or code_min_count < 1:
            raise ConfigError(f"code_min_count must be a positive int, got {code_min_count!r}")
        if code_max_size is not None and (not isinstance(code_max_size, int) or code_max_size < 0):
            raise ConfigError(f"code_max_size must be a non-negative int or None, got {code_max_size!r}")
        self.numeric = None if numeric is None else tuple(numeric)
        self.categorical = None if categorical is None else tuple(categorical)
        self.codes = codes
        self.locf = bool(locf)
        self.code_min_count = code_min_count
        self.code_max_size = code_max_size
        self.time_features = bool(time_features)
        if isinstance(time_unit, bool) or not isinstance(time_unit, (int, float)) or not (
                math.isfinite(time_unit) and time_unit > 0):
            raise ConfigError(f"time_unit must be a positive number, got {time_unit!r}")
        self.time_unit = float(time_unit)
        self.measurement_history = bool(measurement_history)
        self.log_skewed = bool(log_skewed)
        # fitted state
        self.history_columns: tuple[str, ...] = ()
        self.log_scales: dict[str, float] = {}
        self.numeric_columns: tuple[str, ...] = ()
        self.categorical_columns: tuple[str, ...] = ()
        self.codes_column: str | None = None
        self.means: np.ndarray | None = None
        self.stds: np.ndarray = np.zeros(0)
        self.levels: dict[str, list[str | None]] = {}
        self.code_vocabulary: list[str] = []

    # ------------------------------------------------------------------ fitted state
    @property
    def is_fitted(self) -> bool:
        return self.means is not None

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise ConfigError("FeaturePipeline is not fitted: call fit(cohort) first")

    @property
    def numeric_names(self) -> tuple[str, ...]:
        """Names of the F numeric columns (features, then time features, then measurement history)."""
        self._require_fitted()
        return self.numeric_columns + (TIME_FEATURES if self.time_features else ()) + self.history_names

    @property
    def history_names(self) -> tuple[str, ...]:
        """Names of the measurement-history columns, ``<column>:since_measured`` then ``:ever_measured`` for
        each column of :attr:`history_columns` (the last 2·H numeric columns)."""
        return tuple(f"{c}{suffix}" for c in self.history_columns for suffix in HISTORY_SUFFIXES)

    @property
    def categorical_names(self) -> tuple[str, ...]:
        self._require_fitted()
        return self.categorical_columns

    @property
    def categorical_cardinalities(self) -> tuple[int, ...]:
        """Embedding sizes of the categorical columns (levels + padding + unknown)."""
        return tuple(len(self.levels[c]) + _FIRST_INDEX for c in self.categorical_names)

    @property
    def code_vocab_size(self) -> int:
        """Embedding size of the codes (kept codes + padding + unknown)."""
        self._require_fitted()
        return len(self.code_vocabulary) + _FIRST_INDEX

    # ------------------------------------------------------------------ fit / transform
    def fit(self, cohort: Cohort) -> FeaturePipeline:
        """Learn standardisation statistics and vocabularies from ``cohort`` (the training patients)."""
        numeric = cohort.numeric if self.numeric is None else self.numeric
        categorical = cohort.categorical if self.categorical is None else self.categorical
        codes = cohort.codes if self.codes is True else (self.codes or None)
        visits = cohort.visits
        _check_columns(visits, numeric, categorical, codes)

        self.log_scales = _log_scales(visits, numeric) if self.log_skewed else {}
        if numeric:
            values = [_observed(c, self.log_scales.get(c)) for c in numeric]
            stats = visits.select(
                *(v.mean().alias(f"m{i}") for i, v in enumerate(values)),
                *(v.std(ddof=0).alias(f"s{i}") for i, v in enumerate(values)),
            ).row(0)
            means = np.array([np.nan if m is None else m for m in stats[: len(numeric)]], dtype=np.float64)
            stds = np.array([np.nan if s is None else s for s in stats[len(numeric):]], dtype=np.float64)
        else:
            means, stds = np.zeros(0), np.zeros(0)
        never_observed = ~np.isfinite(means)
        means[never_observed] = 0.0
        stds[~np.isfinite(stds) | (stds < _MIN_STD) | never_observed] = 1.0

        self.levels = {c: _frequency_order(visits.get_column(c).cast(pl.String)) for c in categorical}
        self.code_vocabulary = []
        if codes is not None:
            ids = _code_ids(visits.get_column(codes))
            counts = np.bincount(ids)
            present = np.flatnonzero(counts)
            table = pl.DataFrame({"code": _code_names(len(counts)).gather(present), "count": counts[present]})
            table = table.filter(pl.col("count") >= self.code_min_count).sort(
                ["count", "code"], descending=[True, False])
            if self.code_max_size is not None:
                table = table.head(self.code_max_size)
            self.code_vocabulary = table.get_column("code").to_list()
        self.numeric_columns, self.categorical_columns = tuple(numeric), tuple(categorical)
        self.history_columns = ()
        if self.measurement_history and numeric:
            nulls = visits.select(pl.col(c).is_null().any() for c in numeric).row(0)
            self.history_columns = tuple(c for c, null in zip(numeric, nulls) if null)
        self.codes_column = codes
        self.means, self.stds = means, stds
        return self

    def transform(self, cohort: Cohort) -> EncodedVisits:
        """Encode every visit of ``cohort`` with the fitted statistics and vocabularies."""
        self._require_fitted()
        visits = cohort.visits
        _check_columns(visits, self.numeric_columns, self.categorical_columns, self.codes_column)
        n = visits.height
        categorical_exprs = [
            pl.col(c).cast(pl.String).replace_strict(
                self.levels[c], list(range(_FIRST_INDEX, _FIRST_INDEX + len(self.levels[c]))),
                default=UNKNOWN_INDEX, return_dtype=pl.Int64).alias(c)
            for c in self.categorical_columns
        ]
        numeric_jobs, numeric, missing = self._numeric_jobs(visits)
        jobs: list[Callable[[], Any]] = [  # the longest first; the numeric jobs fill numeric and missing
            lambda: self._encode_codes(visits),
            lambda: _matrix(visits.select(categorical_exprs), list(self.categorical_columns), np.int64, n),
            *numeric_jobs,
        ]
        (code_values, code_offsets), categorical, *_ = thread_map(lambda job: job(), jobs, elements=n * len(jobs))
        return EncodedVisits(numeric, missing, categorical, code_values, code_offsets)

    def fit_transform(self, cohort: Cohort) -> EncodedVisits:
        return self.fit(cohort).transform(cohort)

    def _numeric_jobs(self, visits: pl.DataFrame) -> tuple[list[Callable[[], None]], np.ndarray, np.ndarray]:
        """Standardised values and missing flags, ``[N, F]`` each, and the jobs that fill them in place:
        one per column, to run on parallel threads (see :mod:`ehrseq.data._parallel`). Column-major: one
        pass per column, written from the Arrow buffers, without intermediate frames."""
        from ehrseq.models.distributions import _native  # the data path's kernels live with the model's

        n, names = visits.height, self.numeric_names
        values = np.zeros((len(names), n), dtype=np.float32)
        missing = np.zeros((len(names), n), dtype=bool)
        means = np.asarray(self.means)
        first_history = len(self.numeric_columns) + (len(TIME_FEATURES) if self.time_features else 0)
        # the row of each history column's ``since_measured`` column, by numeric column
        history_rows = {self.numeric_columns.index(c): first_history + 2 * k for k, c in enumerate(self.history_columns)}
        patients = visits.get_column("patient_index").cast(pl.Int64).to_numpy()
        carried = self.locf or bool(history_rows)
        elapsed = visits.get_column("elapsed").cast(pl.Float64).to_numpy() if history_rows else None
        first_rows = functools.cache(lambda: _first_rows(patients))  # of the NumPy reference, once if needed

        def encode(j: int) -> None:
            name = self.numeric_columns[j]
            scale = self.log_scales.get(name)
            # on the log scale by the expression the fitted statistics were computed with (nulls stay null)
            column = visits.get_column(name) if scale is None else visits.select(_observed(name, scale)).to_series()
            _missing_column(column, out=missing[j])
            history = history_rows.get(j)
            nulls = column.null_count()
            if nulls == n:
                return  # the training mean, never measured: its history columns stay 0
            x = _float_values(column)
            since, ever = (values[history], values[history + 1]) if history is not None else (None, None)
            if nulls and carried and _native.numeric_feature(x, missing[j], patients, elapsed, means[j], self.stds[j],
                                                             self.time_unit, self.locf, values[j], since, ever):
                return  # carried forward, with its history, natively in one pass
            with np.errstate(all="ignore"):  # null slots hold arbitrary values; they are zeroed below
                np.divide(np.subtract(x, means[j]), self.stds[j], out=values[j], casting="same_kind")
            if not nulls:
                if ever is not None:
                    ever[:] = 1.0  # measured at every visit: since_measured 0, ever_measured 1
                return
            if not carried:
                _zero_where(values[j], missing[j])
                return
            source, observed = _last_observation(missing[j], first_rows())
            if history is not None:
                _measurement_history(elapsed, source, observed, self.time_unit, since=since, ever=ever)
            if self.locf:
                _carry_forward(values[j], source, observed)
            else:
                _zero_where(values[j], missing[j])

        def time_features() -> None:
            f = len(self.numeric_columns)
            unit = self.time_unit
            np.divide(visits.get_column("elapsed").to_numpy(), DAYS_PER_YEAR * unit, out=values[f], casting="same_kind")
            np.log1p(visits.get_column("gap").to_numpy() / unit, out=values[f + 1], casting="same_kind")
            values[f + 1] /= np.float32(np.log1p(DAYS_PER_YEAR))

        jobs: list[Callable[[], None]] = [functools.partial(encode, j) for j in range(len(self.numeric_columns))]
        if self.time_features:
            jobs.append(time_features)
        return jobs, values.T, missing.T

    def _encode_codes(self, visits: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        if self.codes_column is None:
            return np.zeros(0, dtype=np.int64), np.zeros(visits.height + 1, dtype=np.int64)
        column = visits.get_column(self.codes_column)
        lengths = column.list.len().fill_null(0).to_numpy()
        offsets = np.zeros(visits.height + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = _code_ids(column)
        vocabulary_ids = pl.Series(self.code_vocabulary, dtype=pl.String).cast(CODES_DTYPE).to_physical().to_numpy()
        size = max(int(ids.max(initial=0)), int(vocabulary_ids.max(initial=0))) + 1
        lookup = np.full(size, UNKNOWN_INDEX, dtype=np.int64)
        lookup[vocabulary_ids] = np.arange(_FIRST_INDEX, _FIRST_INDEX + len(vocabulary_ids))
        return lookup[ids], offsets

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        self._require_fitted()
        return {
            "format": _FORMAT,
            "version": 1,
            "options": {"locf": self.locf, "code_min_count": self.code_min_count,
                        "code_max_size": self.code_max_size, "time_features": self.time_features,
                        "time_unit": self.time_unit, "measurement_history": self.measurement_history,
                        "log_skewed": self.log_skewed},
            "history_columns": list(self.history_columns),
            "numeric": [{"name": c, "mean": float(m), "std": float(s), "log_scale": self.log_scales.get(c)}
                        for c, m, s in zip(self.numeric_columns, np.asarray(self.means), self.stds)],
            "categorical": [{"name": c, "levels": self.levels[c]} for c in self.categorical_columns],
            "codes": {"column": self.codes_column, "vocabulary": self.code_vocabulary},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeaturePipeline:
        if data.get("format") != _FORMAT:
            raise ConfigError("not a serialised FeaturePipeline")
        if data.get("version") != 1:
            raise ConfigError(f"unsupported FeaturePipeline version {data.get('version')!r}")
        numeric = [c["name"] for c in data["numeric"]]
        categorical = [c["name"] for c in data["categorical"]]
        codes = data["codes"]["column"]
        pipeline = cls(numeric, categorical, codes if codes is not None else False, **data["options"])
        pipeline.means = np.array([c["mean"] for c in data["numeric"]], dtype=np.float64)
        pipeline.stds = np.array([c["std"] for c in data["numeric"]], dtype=np.float64)
        pipeline.log_scales = {c["name"]: float(c["log_scale"]) for c in data["numeric"]
                               if c.get("log_scale") is not None}
        pipeline.levels = {c["name"]: list(c["levels"]) for c in data["categorical"]}
        pipeline.code_vocabulary = list(data["codes"]["vocabulary"])
        pipeline.numeric_columns, pipeline.categorical_columns = tuple(numeric), tuple(categorical)
        pipeline.history_columns = tuple(data.get("history_columns", ()))
        pipeline.codes_column = codes
        return pipeline

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> FeaturePipeline:
        return cls.from_dict(json.loads(text))

    def __repr__(self) -> str:
        if not self.is_fitted:
            return "FeaturePipeline(unfitted)"
        return (f"FeaturePipeline(F={len(self.numeric_names)}, C={len(self.categorical_names)}, "
                f"codes={self.codes_column!r} ({len(self.code_vocabulary)} kept), locf={self.locf})")


def _observed(column: str, log_scale: float | None = None) -> pl.Expr:
    """The column as float64 (missing values are null in a cohort: NaN was converted there), on the log scale
    sign(x) · log1p(|x| / c) with ``log_scale`` c."""
    x = pl.col(column).cast(pl.Float64)
    return x if log_scale is None else x.sign() * (x.abs() / log_scale).log1p()


#: Sample skewness above which a non-negative numeric column is read on the log scale (``log_skewed``).
SKEWNESS_THRESHOLD = 1.0
#: The fewest distinct training values of a column read on the log scale (fewer: a coded level or a flag).
LOG_MIN_DISTINCT = 5


def _log_scales(visits: pl.DataFrame, numeric: Sequence[str]) -> dict[str, float]:
    """The columns of ``numeric`` to read on the log scale and their scales c (module docstring): observed
    training values all ≥ 0, at least :data:`LOG_MIN_DISTINCT` of them distinct, with a sample skewness above
    :data:`SKEWNESS_THRESHOLD`; c the median of the positive values."""
    if not numeric:
        return {}
    stats = visits.select(
        *(_observed(c).min().alias(f"min{i}") for i, c in enumerate(numeric)),
        *(_observed(c).drop_nulls().n_unique().alias(f"distinct{i}") for i, c in enumerate(numeric)),
        *(_observed(c).skew(bias=True).alias(f"skew{i}") for i, c in enumerate(numeric)),
        *(_observed(c).filter(_observed(c) > 0).median().alias(f"median{i}") for i, c in enumerate(numeric)),
    ).row(0)
    k = len(numeric)
    low, distinct, skew, median = (stats[j * k:(j + 1) * k] for j in range(4))
    return {c: float(median[i]) for i, c in enumerate(numeric)
            if low[i] is not None and low[i] >= 0 and distinct[i] >= LOG_MIN_DISTINCT
            and skew[i] is not None and math.isfinite(skew[i]) and skew[i] > SKEWNESS_THRESHOLD}


def _code_ids(column: pl.Series) -> np.ndarray:
    """Process-wide integer ids of the codes of a list column, flattened (see ``CODES_DTYPE``)."""
    if column.dtype != pl.List(CODES_DTYPE):
        column = column.cast(pl.List(pl.String)).cast(pl.List(CODES_DTYPE))
    flat = column.list.explode(keep_nulls=False, empty_as_null=False)
    return flat.to_physical().to_numpy()


def _code_names(size: int) -> pl.Series:
    """Code strings by id, for ids ``0 .. size - 1``."""
    names = CODES_DTYPE.categories.to_series()
    return names.head(size)


def _float_values(column: pl.Series) -> np.ndarray:
    """The values of a numeric column as float64, a zero-copy view of its Arrow buffer when it is
    float64 already; null slots hold arbitrary values."""
    if column.dtype != pl.Float64:
        column = column.cast(pl.Float64)
    array = column.to_arrow()
    return np.frombuffer(array.buffers()[1], dtype=np.float64, count=array.offset + len(array))[array.offset:]


def _first_rows(patient_index: np.ndarray) -> np.ndarray:
    """Row of each visit's patient's first visit, ``[N]`` int64 (visits grouped by patient)."""
    rows = np.arange(patient_index.size, dtype=np.int64)
    new_patient = np.ones(patient_index.size, dtype=bool)
    np.not_equal(patient_index[1:], patient_index[:-1], out=new_patient[1:])
    first = np.where(new_patient, rows, 0)
    return np.maximum.accumulate(first, out=first)


def _last_observation(missing: np.ndarray, first_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(source, observed) ``[N]`` of one column: the last row at or before each visit r where it was
    observed (a running maximum of the observed row numbers), and whether that row is r's patient's (≥
    ``first_rows[r]``); where not, ``source`` is any valid row. Visits are grouped by patient in time order
    and ``first_rows`` is :func:`_first_rows` of their patient index."""
    source = np.where(missing, -1, np.arange(missing.size, dtype=np.int64))
    np.maximum.accumulate(source, out=source)
    observed = source >= first_rows
    np.maximum(source, 0, out=source)
    return source, observed


def _carry_forward(values: np.ndarray, source: np.ndarray, observed: np.ndarray) -> None:
    """Last observation carried forward within each patient, in place (``values [N]`` hold arbitrary numbers
    where missing); 0 before a patient's first observation. ``source``, ``observed``: :func:`_last_observation`."""
    np.take(values, source, out=values)
    _zero_where(values, ~observed)


def _measurement_history(elapsed: np.ndarray, source: np.ndarray, observed: np.ndarray, time_unit: float, *,
                         since: np.ndarray, ever: np.ndarray) -> None:
    """Write the measurement history of one numeric column in place: ``ever`` = 1 where the patient's value
    was observed at this visit or before, and ``since`` = log1p(d / u) / log1p(365.25) with d the time
    from that last observation to this visit in the clock's units (``elapsed [N]``) and u = ``time_unit``
    (0 at a visit that measures it, 1 one year later; 0 where never observed). ``source``, ``observed``:
    :func:`_last_observation`."""
    age = np.where(observed, elapsed - elapsed[source], 0.0)
    np.divide(np.log1p(age / time_unit), np.log1p(DAYS_PER_YEAR), out=since, casting="same_kind")
    np.copyto(ever, observed, casting="unsafe")


def _zero_where(values: np.ndarray, mask: np.ndarray) -> None:
    """``values[mask] = 0`` for float32 values, branch-free: AND the bits with 0 (mask) or all ones."""
    keep = mask.view(np.int8) - np.int8(1)
    bits = values.view(np.int32)
    np.bitwise_and(bits, keep, out=bits)


def _missing_column(values: pl.Series, out: np.ndarray) -> None:
    """Write ``values.is_null()`` into ``out``, unpacked straight from the Arrow validity bitmap."""
    if values.null_count() == 0:
        return
    if values.null_count() == values.len():
        out[:] = True
        return
    array = values.to_arrow()
    bitmap = np.frombuffer(array.buffers()[0], dtype=np.uint8)
    valid = np.unpackbits(bitmap, count=array.offset + len(array), bitorder="little")[array.offset:]
    np.equal(valid, 0, out=out)


def _frequency_order(values: pl.Series) -> list[str | None]:
    counts = values.value_counts(name="count")
    ordered = counts.sort(["count", values.name], descending=[True, False], nulls_last=True)
    return ordered.get_column(values.name).to_list()


def _matrix(frame: pl.DataFrame, names: list[str], dtype: Any, n: int) -> np.ndarray:
    """Columns of ``frame`` as an ``[n, len(names)]`` array, column-major (one copy per column)."""
    if not names:
        return np.zeros((n, 0), dtype=dtype)
    return np.asarray(frame.select(names).to_numpy(), dtype=dtype)


def _check_columns(visits: pl.DataFrame, numeric: Sequence[str], categorical: Sequence[str],
                   codes: str | None) -> None:
    wanted = [*numeric, *categorical, *([codes] if codes else [])]
    missing = [c for c in wanted if c not in visits.columns]
    if missing:
        raise DataError(f"columns {missing} are not in the cohort's visit table", table="visits",
                        column=missing[0], rule="required_columns")
    for c in numeric:
        if not dtype_in_class(visits.schema[c], "numeric", nullable=True):
            raise DataError(f"dtype {visits.schema[c]} is not numeric", table="visits", column=c,
                            rule="numeric_feature_dtype")
    if codes and not dtype_in_class(visits.schema[codes], "code_list", nullable=True):
        raise DataError(f"dtype {visits.schema[codes]} is not a list of strings", table="visits", column=codes,
                        rule="column_dtype")
