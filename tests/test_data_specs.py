"""The table contracts in data_specs/: loadable, consistent, fully implemented, documented by runnable examples."""

import json
import re
from importlib.resources import files

import polars as pl
import pytest

from ehrseq.data.specs import (
    FAMILY_PREDICATES,
    TABLES,
    dtype_classes,
    dtype_family,
    dtype_family_names,
    dtype_in_class,
    load_spec,
)
from ehrseq.data.validation import RULES

SPEC_DIR = files("ehrseq") / "data_specs"


def test_specs_ship_with_the_package_and_are_valid_json():
    names = {p.name for p in SPEC_DIR.iterdir()}
    assert {f"{t}.json" for t in TABLES} | {"dtypes.json", "README.md"} <= names
    for table in TABLES:
        raw = json.loads((SPEC_DIR / f"{table}.json").read_text())
        assert raw["name"] == table
        ids = [r["id"] for r in raw["rules"]]
        assert len(ids) == len(set(ids)), f"duplicate rule id in {table}"


@pytest.mark.parametrize("table", TABLES)
def test_every_rule_id_has_an_implementation_and_vice_versa(table):
    assert set(load_spec(table).rules) == set(RULES[table])


@pytest.mark.parametrize("table", TABLES)
def test_column_constraints_and_dtype_classes_refer_to_known_rules_and_classes(table):
    spec = load_spec(table)
    for column in [*spec.columns.values(), *spec.declared.values()]:
        assert column.dtype in dtype_classes(), (table, column.name, column.dtype)
        for constraint in column.constraints:
            assert constraint in spec.rules, (table, column.name, constraint)
            assert spec.rules[constraint].kind == "row"
    assert all(rule.kind in ("schema", "row", "cross") for rule in spec.rules.values())


def test_dtype_families_in_json_match_the_predicates():
    assert set(dtype_family_names()) == set(FAMILY_PREDICATES)
    for families in dtype_classes().values():
        assert set(families) <= set(FAMILY_PREDICATES)


@pytest.mark.parametrize(
    ("dtype", "family"),
    [
        (pl.Int8, "integer"), (pl.UInt64, "integer"), (pl.Float32, "float"), (pl.String, "string"),
        (pl.Categorical(), "string"), (pl.Enum(["a"]), "string"), (pl.Boolean, "boolean"),
        (pl.Datetime("ns", "UTC"), "datetime"), (pl.Date, "date"), (pl.List(pl.String), "list_of_string"),
        (pl.List(pl.Categorical()), "list_of_string"), (pl.List(pl.Int64), None), (pl.Struct({"a": pl.Int64}), None),
    ],
)
def test_dtype_family_of_polars_dtypes(dtype, family):
    assert dtype_family(dtype) == family


def test_dtype_classes_accept_what_the_contract_says():
    assert dtype_in_class(pl.Int32, "id") and dtype_in_class(pl.String, "id") and not dtype_in_class(pl.Float64, "id")
    assert dtype_in_class(pl.Date, "clock") and dtype_in_class(pl.Int64, "clock")
    assert not dtype_in_class(pl.String, "clock")
    assert dtype_in_class(pl.Boolean, "event_code") and dtype_in_class(pl.Float64, "event_code")
    assert not dtype_in_class(pl.String, "event_code")
    assert not dtype_in_class(pl.Null, "numeric") and dtype_in_class(pl.Null, "numeric", nullable=True)


def _readme() -> str:
    return (SPEC_DIR / "README.md").read_text()


@pytest.mark.parametrize("table", TABLES)
def test_readme_lists_every_rule_of_every_table(table):
    text = _readme()
    start = text.index(f"(`{table}.json`)")
    end = text.find("\n## ", start)
    section = text[start:end if end > 0 else None]
    listed = set(re.findall(r"`([a-z_]+)`", section.split("Rules:")[1]))
    assert listed == set(load_spec(table).rules)


def test_readme_worked_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", _readme(), flags=re.S)
    assert len(blocks) >= 6
    for block in blocks:
        exec(compile(block, "data_specs/README.md", "exec"), {})
