"""Table contracts loaded from ``data_specs/*.json`` (the single source of truth for columns and rules).

Each contract lists the table's columns (name, dtype class, whether required and nullable, the row
constraints that apply) and its rules (id, kind, meaning). The dtype classes are defined in
``data_specs/dtypes.json`` in terms of Polars dtype families; :func:`dtype_in_class` decides whether
a Polars dtype belongs to a class. The validation code (:mod:`ehrseq.data.validate`) implements
every rule id listed here, and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any, Literal

import polars as pl

#: Names of the table contracts shipped in ``data_specs/``.
TABLES = ("visits", "outcomes", "multi_outcomes", "meds", "predictions", "counting_process")

RuleKind = Literal["schema", "row", "cross"]
ClockKind = Literal["days", "datetime"]


@dataclass(frozen=True)
class ColumnSpec:
    """One column (or one role of user-named columns, such as numeric features) of a contract."""

    name: str
    dtype: str
    required: bool
    nullable: bool
    constraints: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class RuleSpec:
    """A rule of a contract: ``schema`` rules read dtypes only, ``row`` rules read one table's values,
    ``cross`` rules compare tables."""

    id: str
    kind: RuleKind
    description: str


@dataclass(frozen=True)
class TableSpec:
    """The contract of one table."""

    name: str
    title: str
    description: str
    key: tuple[str, ...]
    columns: dict[str, ColumnSpec]
    declared: dict[str, ColumnSpec]
    rules: dict[str, RuleSpec]
    reserved_names: tuple[str, ...]
    inference: dict[str, tuple[str, ...]]
    inference_rules: dict[str, str]

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(name for name, col in self.columns.items() if col.required)


def _read_json(name: str) -> dict[str, Any]:
    path = files("ehrseq") / "data_specs" / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _column(name: str, raw: dict[str, Any]) -> ColumnSpec:
    return ColumnSpec(
        name=name,
        dtype=raw["dtype"],
        required=bool(raw["required"]),
        nullable=bool(raw["nullable"]),
        constraints=tuple(raw.get("constraints", ())),
        description=raw["description"],
    )


@cache
def load_spec(table: str) -> TableSpec:
    """The contract of ``table`` (one of :data:`TABLES`), parsed from ``data_specs/<table>.json``."""
    if table not in TABLES:
        raise KeyError(f"no contract named {table!r}; known: {', '.join(TABLES)}")
    raw = _read_json(table)
    return TableSpec(
        name=raw["name"],
        title=raw["title"],
        description=raw["description"],
        key=tuple(raw.get("key", ())),
        columns={c["name"]: _column(c["name"], c) for c in raw["columns"]},
        declared={role: _column(role, c) for role, c in raw.get("declared_columns", {}).items()},
        rules={r["id"]: RuleSpec(id=r["id"], kind=r["kind"], description=r["description"]) for r in raw["rules"]},
        reserved_names=tuple(raw.get("reserved_names", ())),
        inference={role: tuple(fams) for role, fams in raw.get("inference", {}).items()},
        inference_rules=dict(raw.get("inference_rules", {})),
    )


@cache
def dtype_classes() -> dict[str, tuple[str, ...]]:
    """Dtype class name -> the Polars dtype families it accepts (``data_specs/dtypes.json``)."""
    raw = _read_json("dtypes")
    return {name: tuple(cls["families"]) for name, cls in raw["classes"].items()}


@cache
def dtype_family_names() -> tuple[str, ...]:
    """The dtype families named in ``data_specs/dtypes.json``."""
    return tuple(_read_json("dtypes")["families"])


_STRING_TYPES = (pl.String, pl.Categorical, pl.Enum)

#: Predicate of each dtype family; the keys match ``families`` in ``data_specs/dtypes.json``.
FAMILY_PREDICATES = {
    "integer": lambda d: d.is_integer(),
    "float": lambda d: d.is_float(),
    "string": lambda d: isinstance(d, _STRING_TYPES) or d in _STRING_TYPES,
    "boolean": lambda d: d == pl.Boolean,
    "datetime": lambda d: isinstance(d, pl.Datetime),
    "date": lambda d: d == pl.Date,
    "list_of_string": lambda d: isinstance(d, pl.List) and FAMILY_PREDICATES["string"](d.inner),
}


def dtype_family(dtype: pl.DataType) -> str | None:
    """The family of a Polars dtype, or ``None`` when no contract accepts it (struct, decimal, ...)."""
    for family, predicate in FAMILY_PREDICATES.items():
        if predicate(dtype):
            return family
    return None


def dtype_in_class(dtype: pl.DataType, dtype_class: str, *, nullable: bool = False) -> bool:
    """Whether ``dtype`` belongs to ``dtype_class``; an all-null column (``pl.Null``) fits a nullable one."""
    if nullable and dtype == pl.Null:
        return True
    return dtype_family(dtype) in dtype_classes()[dtype_class]


def clock_kind(dtype: pl.DataType) -> ClockKind:
    """``"datetime"`` for datetime/date clocks, ``"days"`` for numeric ones."""
    return "datetime" if dtype_family(dtype) in ("datetime", "date") else "days"


def clock_signature(dtype: pl.DataType) -> str:
    """What must agree between clock columns of one cohort: the kind and, for datetimes, the time zone."""
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        return f"datetime[{dtype.time_zone}]"
    return clock_kind(dtype)


def describe_dtype_class(dtype_class: str) -> str:
    """A short human description of a dtype class, for error messages."""
    return " or ".join(dtype_classes()[dtype_class])
