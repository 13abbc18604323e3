"""One reader for every entry point: Polars, pandas, LazyFrame, Parquet, CSV (null markers), folders, globs,
lists; column roles by declaration or by the inference rules of data_specs/visits.json, the same from
every source."""

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

import ehrseq
from ehrseq.data import NULL_VALUES, build_cohort, load_spec, read_table, split_tables, validate
from ehrseq.datasets import simulate
from ehrseq.errors import ConfigError, DataError, DataWarning

TINY = {"d_model": 8, "hidden": [8], "grid": 4, "epochs": 2, "batch_size": 16, "progress": False, "device": "cpu"}


def _visits() -> pl.DataFrame:
    """Dates, a lab with missing values, an integer count, text levels and codes."""
    return pl.DataFrame({
        "patient_id": [1, 1, 1, 2, 2, 3, 3, 3, 4],
        "time": [dt.datetime(2020, 1, 1), dt.datetime(2020, 3, 2, 8, 30), dt.datetime(2020, 9, 1),
                 dt.datetime(2019, 5, 5), dt.datetime(2019, 6, 5), dt.datetime(2021, 1, 1),
                 dt.datetime(2021, 2, 1), dt.datetime(2021, 4, 1), dt.datetime(2018, 7, 7)],
        "bili": [1.1, None, 2.75, 0.8, 0.9, None, 3.3, 4.125, 1.0],
        "n_drugs": [0, 1, 1, 2, 2, 0, 0, 3, 1],
        "sex": ["f", "f", "f", "m", "m", "f", "f", "f", "m"],
        "codes": [["E11", "I10"], [], ["N18"], None, ["I10"], ["E11"], ["E11", "N18"], [], ["Z00"]],
    })


def _outcomes() -> pl.DataFrame:
    return pl.DataFrame({"patient_id": [1, 2, 3, 4],
                         "time": [dt.datetime(2021, 1, 1), dt.datetime(2020, 6, 1), dt.datetime(2021, 9, 1),
                                  dt.datetime(2019, 7, 7)],
                         "event": [1, 0, 1, 0]})


def _write_csv(table: pl.DataFrame, path, null: str = "") -> None:
    lists = [c for c, d in table.schema.items() if isinstance(d, pl.List)]
    table.with_columns(pl.col(c).list.join(";") for c in lists).write_csv(path, null_value=null)


# ---------------------------------------------------------------------------------------------- sources
def test_every_source_gives_the_same_frame(tmp_path):
    visits = _visits().drop("codes")
    visits.write_parquet(tmp_path / "v.parquet")
    _write_csv(visits, tmp_path / "v.csv")
    (tmp_path / "shards").mkdir()
    visits.head(4).write_parquet(tmp_path / "shards" / "a.parquet")
    _write_csv(visits.slice(4), tmp_path / "shards" / "b.csv")
    (tmp_path / "shards" / "_SUCCESS").write_text("")  # Spark's marker is skipped
    sources = {
        "polars": visits, "lazy": visits.lazy(), "pandas": visits.to_pandas(), "parquet": tmp_path / "v.parquet",
        "csv": str(tmp_path / "v.csv"), "folder": tmp_path / "shards", "glob": str(tmp_path / "shards" / "*"),
        "list": [tmp_path / "shards" / "a.parquet", tmp_path / "shards" / "b.csv"],
    }
    for name, source in sources.items():
        frame = read_table(source, "visits")
        assert frame.columns == visits.columns, name
        assert frame.cast(visits.schema).equals(visits), name


def test_missing_and_unknown_sources_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_table(tmp_path / "nope.csv", "visits")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no .parquet"):
        read_table(tmp_path / "empty", "visits")
    (tmp_path / "v.xlsx").write_text("")
    with pytest.raises(ConfigError, match="expected a .parquet"):
        read_table(tmp_path / "v.xlsx", "visits")
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="cannot read the visits table"):
        read_table(tmp_path / "broken.parquet", "visits")


# ---------------------------------------------------------------------------------------------- null markers
@pytest.mark.parametrize("marker", ["NA", "n/a", "NaN", "", "NULL"])
def test_csv_null_markers_keep_a_lab_numeric(tmp_path, marker):
    """R writes missing values as NA; one 'n/a' typed by hand must not turn a lab into a category."""
    visits = _visits().drop("codes")
    _write_csv(visits, tmp_path / "v.csv", null=marker)
    checked = validate(tmp_path / "v.csv", _outcomes())
    assert checked.columns.numeric == ("bili", "n_drugs") and checked.columns.categorical == ("sex",)
    assert checked.visits["bili"].is_null().to_list() == visits["bili"].is_null().to_list()


def test_null_markers_are_configurable(tmp_path):
    visits = _visits().drop("codes").with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(pl.lit("missing")).otherwise(pl.col("bili").cast(pl.String))
        .alias("bili"))
    visits.write_csv(tmp_path / "v.csv")
    with pytest.warns(DataWarning, match=r"\[visits.bili\] 7 of its 8 values are numbers.*'missing'"):
        default = validate(tmp_path / "v.csv", _outcomes())
    assert "bili" in default.columns.categorical  # 'missing' is no marker by default: a warning, not silence
    custom = validate(tmp_path / "v.csv", _outcomes(), null_values=["missing"])
    assert "bili" in custom.columns.numeric and custom.visits["bili"].null_count() == 2
    assert "NA" in NULL_VALUES and "n/a" in NULL_VALUES and "None" not in NULL_VALUES


def test_text_numbers_with_null_markers_are_numeric_in_any_frame():
    """The same lab as text with R's NA: numeric from Polars and from pandas, the values parsed."""
    visits = _visits().drop("codes")
    as_text = visits.with_columns(pl.col("bili").cast(pl.String).fill_null("NA"))
    cohort = build_cohort(as_text, _outcomes())
    assert cohort.numeric == ("bili", "n_drugs") and cohort.report.feature_rules["bili"] == "text_numbers"
    assert cohort.visits["bili"].to_list() == build_cohort(visits, _outcomes()).visits["bili"].to_list()
    assert "text numbers (null markers read as missing): bili" in str(cohort.report)
    frame = visits.to_pandas()
    frame["bili"] = frame["bili"].astype(object).where(frame["bili"].notna(), "n/a")  # an object column
    from_pandas = build_cohort(frame, _outcomes().to_pandas())
    assert from_pandas.numeric == ("bili", "n_drugs")
    assert from_pandas.visits["bili"].to_list() == cohort.visits["bili"].to_list()


def test_text_numbers_without_markers_stay_text_unless_declared():
    """A text column of numbers is typed text by its writer (e.g. integer-coded factors); declarations win."""
    visits = _visits().drop("codes").with_columns(pl.col("n_drugs").cast(pl.String))
    inferred = validate(visits, _outcomes())
    assert inferred.columns.categorical == ("n_drugs", "sex")
    declared = validate(visits, _outcomes(), numeric=["bili", "n_drugs"], categorical=["sex"])
    assert declared.visits["n_drugs"].dtype == pl.Float64 and declared.columns.reasons["n_drugs"] == "declared"
    as_levels = validate(_visits(), _outcomes(), categorical=["n_drugs", "sex"])
    assert as_levels.columns.numeric == ("bili",) and as_levels.columns.categorical == ("n_drugs", "sex")


def test_a_declared_numeric_text_column_names_the_values_that_are_not_numbers():
    visits = _visits().drop("codes").with_columns(
        pl.when(pl.col("patient_id") == 3).then(pl.lit("<0.5")).otherwise(pl.col("bili").cast(pl.String)).alias("bili"))
    with pytest.raises(DataError, match=r"rule 'numeric_feature_dtype'.*'<0.5'") as info:
        validate(visits, _outcomes(), numeric=["bili", "n_drugs"])
    assert info.value.column == "bili" and info.value.patient_ids == [3]


def test_pandas_tables_with_mixed_object_columns_and_a_named_index():
    frame = _visits().drop("codes").to_pandas().set_index("patient_id")
    frame["bili"] = frame["bili"].astype(object)
    frame.iloc[2, frame.columns.get_loc("bili")] = "pending"  # numbers and other text: a text column, as in CSV
    with pytest.warns(DataWarning, match="bili"):
        checked = validate(frame, _outcomes().to_pandas())
    assert "patient_id" in checked.visits.columns and "bili" in checked.columns.categorical


def test_the_inference_rules_are_written_in_the_contract_and_shown_in_the_report():
    rules = load_spec("visits").inference_rules
    assert set(rules) == {"declared", "float", "integer", "text_numbers", "string", "boolean"}
    report = str(build_cohort(_visits(), _outcomes()).report)
    assert "numeric (2): float columns: bili; integer columns: n_drugs" in report
    assert "categorical (1): text columns: sex" in report and "inference_rules" in report
    assert "pass numeric= / categorical= to decide otherwise" in report  # in the words of the API


def test_split_tables_takes_pandas_and_gives_the_polars_split():
    sim = simulate(30, 0)
    from_polars = split_tables(sim.visits, sim.outcomes, (0.7, 0.3), seed=1)
    from_pandas = split_tables(sim.visits.to_pandas(), sim.outcomes.to_pandas(), (0.7, 0.3), seed=1)
    for (pv, po), (qv, qo) in zip(from_polars, from_pandas):
        assert po["patient_id"].to_list() == qo["patient_id"].to_list()
        assert pv["patient_id"].to_list() == qv["patient_id"].to_list()


# ---------------------------------------------------------------------------------------------- same model
def _fit(visits, outcomes, **options):
    return ehrseq.DynamicSurvival(**TINY, **options).fit(visits, outcomes, validation=None)


def test_the_same_table_gives_the_same_model_from_csv_and_parquet(tmp_path):
    sim = simulate(40, 3)
    start = pl.DataFrame({"patient_id": sim.outcomes["patient_id"],
                          "start": [dt.datetime(2000, 1, 1) + dt.timedelta(days=int(d))
                                    for d in np.random.default_rng(0).integers(0, 3000, sim.outcomes.height)]})

    def dated(t):
        return (t.join(start, on="patient_id")
                .with_columns((pl.col("start") + pl.duration(microseconds=(pl.col("time") * 86_400e6).round(0)))
                              .alias("time")).drop("start"))

    visits, outcomes = dated(sim.visits), dated(sim.outcomes)
    for table, name in ((visits, "v"), (outcomes, "o")):
        table.write_parquet(tmp_path / f"{name}.parquet")
        _write_csv(table, tmp_path / f"{name}.csv", null="NA")
    from_parquet = _fit(tmp_path / "v.parquet", tmp_path / "o.parquet")
    from_csv = _fit(tmp_path / "v.csv", tmp_path / "o.csv")
    assert from_csv.features_.to_dict() == from_parquet.features_.to_dict()
    assert from_csv.grid_.to_dict() == from_parquet.grid_.to_dict()
    for (name, a), (_, b) in zip(from_csv.model_.state_dict().items(), from_parquet.model_.state_dict().items()):
        assert torch.equal(a, b), name
    risk_csv = from_csv.predict_risk(tmp_path / "v.csv", [365.0], landmark=400.0)
    risk_parquet = from_parquet.predict_risk(tmp_path / "v.parquet", [365.0], landmark=400.0)
    assert risk_csv.equals(risk_parquet)


def test_integer_coded_categories_give_the_same_model_from_csv_and_parquet_once_declared(tmp_path):
    """Text "0"/"1" in Parquet, integers once written to CSV: declared categorical, one model."""
    sim = simulate(40, 4)
    visits = sim.visits.drop("codes").with_columns((pl.col("x00") > pl.col("x00").median()).cast(pl.Int64).cast(pl.String).alias("flag"))
    visits.write_parquet(tmp_path / "v.parquet")
    visits.write_csv(tmp_path / "v.csv")
    assert pl.read_csv(tmp_path / "v.csv")["flag"].dtype == pl.Int64  # what a CSV file does to such a column
    roles = {"categorical": ["flag", "sex", "visit_type"]}
    a = _fit(tmp_path / "v.parquet", sim.outcomes, **roles)
    b = _fit(tmp_path / "v.csv", sim.outcomes, **roles)
    assert a.features_.to_dict() == b.features_.to_dict() and {"0", "1"} <= set(a.features_.levels["flag"])
    for (name, x), (_, y) in zip(a.model_.state_dict().items(), b.model_.state_dict().items()):
        assert torch.equal(x, y), name


def test_prediction_uses_the_fitted_roles_whatever_the_new_tables_dtypes():
    sim = simulate(40, 5)
    model = _fit(sim.visits.drop("codes"), sim.outcomes)
    as_text = sim.visits.drop("codes").with_columns(pl.col("x01").cast(pl.String).fill_null("NA"),
                                                    pl.col("sex").cast(pl.Categorical))
    expected = model.predict_risk(sim.visits.drop("codes"), [365.0])
    assert model.predict_risk(as_text, [365.0]).equals(expected)
    assert model.predict_risk(as_text.to_pandas(), [365.0]).equals(expected)


def test_codes_written_as_text_are_split_into_lists(tmp_path):
    _write_csv(_visits(), tmp_path / "v.csv")
    cohort = build_cohort(tmp_path / "v.csv", _outcomes())
    codes = [c or [] for c in cohort.visits["codes"].cast(pl.List(pl.String)).to_list()]  # null list = no codes
    assert codes == [["E11", "I10"], [], ["N18"], [], ["I10"], ["E11"], ["E11", "N18"], [], ["Z00"]]
