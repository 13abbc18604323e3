"""Batch scoring: equality with the estimator API, sources and chunking, model id, atomic outputs,
resume after a crash, malformed shards, the one-shard-per-patient rule and plan / score_shard in a pool of
processes (Dask clusters: test_score_dask.py)."""

import concurrent.futures
import functools
import json
import multiprocessing
import shutil
import sys

import numpy as np
import polars as pl
import pytest

import ehrseq
import ehrseq.scoring
import ehrseq.scoring._run as run_module
from ehrseq.data import validate_predictions
from ehrseq.datasets import simulate
from ehrseq.errors import CheckpointError, ConfigError, DataError
from ehrseq.estimator import DynamicSurvival

N_SHARDS = 4
HORIZONS = [90.0, 365.0, 1000.0]


@pytest.fixture(scope="module")
def cohort():
    sim = simulate(48, 3)
    return sim.visits, sim.outcomes


@pytest.fixture(scope="module")
def model_dir(cohort, tmp_path_factory):
    model = DynamicSurvival(head="logistic_hazard", grid=8, epochs=1, batch_size=16, d_model=8, hidden=(8,),
                            origin="zero", progress=False, device="cpu", seed=0).fit(*cohort, validation=None)
    return model.save(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def model(model_dir):
    return ehrseq.load(model_dir)


@pytest.fixture(scope="module")
def shard_dir(cohort, tmp_path_factory):
    """The visits in four Parquet shards partitioned by patient, in a nested folder, rows shuffled."""
    visits, _ = cohort
    root = tmp_path_factory.mktemp("visits")
    (root / "year=2024").mkdir()
    for k in range(N_SHARDS):
        part = visits.filter(pl.col("patient_id") % N_SHARDS == k).sample(fraction=1.0, shuffle=True, seed=k)
        part.write_parquet(root / ("year=2024" if k >= 2 else ".") / f"part-{k}.parquet")
    (root / "_SUCCESS").write_text("")
    return root


def _read(out_dir) -> pl.DataFrame:
    return pl.read_parquet(sorted(p for p in out_dir.rglob("*.parquet")))


def _bytes(out_dir) -> dict[str, bytes]:
    return {p.relative_to(out_dir).as_posix(): p.read_bytes() for p in sorted(out_dir.rglob("*.parquet"))}


def _expected(model, visits, outcomes=None, at="last", landmark=None) -> pl.DataFrame:
    """The same predictions from the estimator API, joined into one frame."""
    keys = ["patient_id", "visit_time", "horizon"]
    risk = model.predict_risk(visits, HORIZONS, at=at, landmark=landmark, outcomes=outcomes)
    survival = model.predict_survival(visits, HORIZONS, at=at, landmark=landmark, outcomes=outcomes)
    frame = risk.join(survival, on=[*keys, "extrapolated", *(["landmark"] if landmark else [])])
    assert frame.height == risk.height  # the API's risk and survival mark the same rows as extrapolated
    if landmark is None:
        median = model.predict_median(visits, at=at, outcomes=outcomes)
        frame = frame.join(median, on=["patient_id", "visit_time"])
    return frame.sort(keys)


# ---------------------------------------------------------------------------------------------- equality
@pytest.mark.parametrize("at", ["last", "all"])
def test_scoring_equals_the_estimator_predictions(model_dir, model, cohort, shard_dir, tmp_path, at):
    visits, outcomes = cohort
    summary = ehrseq.score(model_dir, shard_dir, tmp_path / "out", HORIZONS, at=at, outcomes=outcomes,
                           batch_size=5, patients_per_chunk=4, progress=False)
    scored = _read(tmp_path / "out")
    validate_predictions(scored)
    expected = _expected(model, visits, outcomes, at=at)
    assert scored.columns == ["patient_id", "visit_time", "horizon", "risk", "survival", "median_remaining",
                              "extrapolated", "median_extrapolated", "model_id", "model_version"]
    assert scored.height == expected.height
    assert scored.select(expected.columns).schema == expected.schema  # the same dtypes as the API's frames
    ordered = scored.sort("patient_id", "visit_time", "horizon")
    for column in ("patient_id", "visit_time", "horizon", "extrapolated", "median_extrapolated"):
        assert ordered[column].to_list() == expected[column].to_list()
    for column in ("risk", "survival", "median_remaining"):
        np.testing.assert_allclose(ordered[column].to_numpy(), expected[column].to_numpy(), rtol=1e-5, atol=1e-6)
    assert scored["model_id"].unique().to_list() == [ehrseq.scoring.model_id(model_dir)]
    assert summary.totals["patients_scored"] == visits["patient_id"].n_unique()
    assert summary.totals["rows_out"] == scored.height
    # one output per input shard, at the same relative path, each holding whole patients, sorted
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.parquet")) == [
        "part-0.parquet", "part-1.parquet", "year=2024/part-2.parquet", "year=2024/part-3.parquet"]
    for path in (tmp_path / "out").rglob("*.parquet"):
        part = pl.read_parquet(path)
        assert (part["patient_id"] % N_SHARDS).n_unique() == 1
        assert part.equals(part.sort("patient_id", "visit_time", "horizon", maintain_order=True))


def test_landmark_scoring_equals_predict_risk_and_skips_patients_without_a_visit(model, cohort, tmp_path):
    visits, _ = cohort
    landmark = 400.0
    late = pl.col("patient_id") % 5 == 0  # these patients' first visit moves after the landmark
    visits = visits.with_columns(pl.when(late).then(pl.col("time") + 500.0).otherwise(pl.col("time")).alias("time"))
    summary = ehrseq.score(model, visits, tmp_path / "out", HORIZONS, landmark=landmark, progress=False)
    scored = _read(tmp_path / "out")
    validate_predictions(scored)
    assert scored.columns[:3] == ["patient_id", "landmark", "visit_time"]
    expected = _expected(model, visits, landmark=landmark)
    np.testing.assert_allclose(scored.sort("patient_id", "horizon")["risk"].to_numpy(),
                               expected.sort("patient_id", "horizon")["risk"].to_numpy(), rtol=1e-5, atol=1e-6)
    without = visits.group_by("patient_id").agg(pl.col("time").min()).filter(pl.col("time") > landmark).height
    assert without > 0
    assert summary.totals["patients_without_prediction"] == without
    assert scored["patient_id"].n_unique() == visits["patient_id"].n_unique() - without


def test_sources_chunking_and_batching_give_the_same_predictions(model_dir, shard_dir, tmp_path):
    files = sorted(shard_dir.rglob("part-*.parquet"))
    reference = None
    for number, (source, chunk, batch) in enumerate([
        (shard_dir, 1000, 1024),                      # directory, one chunk per shard
        (files, 3, 2),                                # list of files, many chunks and batches
        (str(shard_dir / "**" / "part-*.parquet"), 7, 64),  # glob
    ]):
        ehrseq.score(model_dir, source, tmp_path / str(number), HORIZONS, patients_per_chunk=chunk,
                     batch_size=batch, progress=False)
        frame = _read(tmp_path / str(number)).sort("patient_id", "horizon")
        if reference is None:
            reference = frame
        else:
            assert frame.select("patient_id", "visit_time", "horizon").equals(
                reference.select("patient_id", "visit_time", "horizon"))
            np.testing.assert_allclose(frame["risk"].to_numpy(), reference["risk"].to_numpy(), rtol=1e-5, atol=1e-7)


def test_single_file_and_string_ids(model, cohort, tmp_path):
    visits, _ = cohort
    visits = visits.with_columns(pl.format("p{}", pl.col("patient_id")).alias("patient_id"))
    visits.write_parquet(tmp_path / "visits.parquet")
    ehrseq.score(model, tmp_path / "visits.parquet", tmp_path / "out", 365, patients_per_chunk=5, progress=False)
    scored = pl.read_parquet(tmp_path / "out" / "visits.parquet")
    validate_predictions(scored)
    assert scored.schema["patient_id"] == pl.String
    assert scored["patient_id"].to_list() == sorted(visits["patient_id"].unique().to_list())


def test_dropped_rows_are_counted_by_reason_in_the_manifest(model, cohort, tmp_path):
    visits, outcomes = cohort
    last = visits.group_by("patient_id").agg(pl.all().last()).select(visits.columns).head(3)
    after = last.drop("time").join(outcomes.select("patient_id", (pl.col("time") + 10.0)), on="patient_id")
    ehrseq.score(model, pl.concat([visits, after.select(visits.columns)]), tmp_path / "out", 365, outcomes=outcomes,
                 progress=False)
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    totals = manifest["totals"]
    assert totals["rows_in"] == visits.height + 3
    assert sum(totals["visits_dropped"].values()) == visits.height + 3 - totals["visits_used"] >= 3
    assert manifest["complete"] is True
    assert manifest["settings"]["horizons"] == [365.0]


# ---------------------------------------------------------------------------------------------- model id
def test_model_id_is_stable_across_copies_and_changes_with_the_weights(model_dir, model, tmp_path):
    copy = shutil.copytree(model_dir, tmp_path / "copy")
    resaved = model.save(tmp_path / "resaved")
    assert ehrseq.scoring.model_id(model_dir) == ehrseq.scoring.model_id(copy) == ehrseq.scoring.model_id(resaved)
    assert ehrseq.scoring.model_id(model) == ehrseq.scoring.model_id(model_dir)
    changed = ehrseq.load(model_dir)
    with __import__("torch").no_grad():
        next(changed.model_.parameters()).add_(0.01)
    assert ehrseq.scoring.model_id(changed) != ehrseq.scoring.model_id(model_dir)
    with pytest.raises(CheckpointError):
        ehrseq.scoring.model_id(tmp_path)


# ---------------------------------------------------------------------------------------------- resume
def test_resume_after_a_crash_gives_byte_identical_outputs(model_dir, shard_dir, tmp_path, monkeypatch):
    options = dict(patients_per_chunk=5, batch_size=4, progress=False)
    ehrseq.score(model_dir, shard_dir, tmp_path / "full", HORIZONS, **options)

    real = run_module._score_one
    calls = []

    def crash_after_two(*args, **kwargs):
        if len(calls) == 2:
            (kwargs.get("out_dir") or args[5]).joinpath(".part-x.parquet.123.tmp").write_bytes(b"partial")
            raise KeyboardInterrupt  # the process is stopped while the third shard is written
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "_score_one", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        ehrseq.score(model_dir, shard_dir, tmp_path / "run", HORIZONS, **options)
    monkeypatch.setattr(run_module, "_score_one", real)
    manifest = json.loads((tmp_path / "run" / "_manifest.json").read_text())
    assert len(manifest["shards"]) == 2 and manifest["complete"] is False

    with pytest.raises(ConfigError, match="resume"):
        ehrseq.score(model_dir, shard_dir, tmp_path / "run", HORIZONS, **options)
    summary = ehrseq.score(model_dir, shard_dir, tmp_path / "run", HORIZONS, resume=True, **options)
    assert (summary.scored, summary.resumed) == (2, 2)
    assert _bytes(tmp_path / "run") == _bytes(tmp_path / "full")
    assert not list((tmp_path / "run").rglob("*.tmp"))
    full = json.loads((tmp_path / "full" / "_manifest.json").read_text())
    done = json.loads((tmp_path / "run" / "_manifest.json").read_text())
    assert done["complete"] and done["totals"]["patients_scored"] == full["totals"]["patients_scored"]
    assert {k: v["sha256"] for k, v in done["shards"].items()} == {k: v["sha256"] for k, v in full["shards"].items()}


def test_resume_rescores_an_output_whose_checksum_does_not_match(model_dir, shard_dir, tmp_path):
    ehrseq.score(model_dir, shard_dir, tmp_path / "out", HORIZONS, progress=False)
    reference = _bytes(tmp_path / "out")
    target = tmp_path / "out" / "part-1.parquet"
    target.write_bytes(target.read_bytes()[:-40])
    summary = ehrseq.score(model_dir, shard_dir, tmp_path / "out", HORIZONS, resume=True, progress=False)
    assert (summary.scored, summary.resumed) == (1, 3)
    assert _bytes(tmp_path / "out") == reference


def test_resume_refuses_other_settings_another_model_or_a_changed_input(model_dir, model, shard_dir, tmp_path):
    ehrseq.score(model_dir, shard_dir, tmp_path / "out", HORIZONS, progress=False)
    with pytest.raises(ConfigError, match="horizons"):
        ehrseq.score(model_dir, shard_dir, tmp_path / "out", [365.0], resume=True, progress=False)
    with pytest.raises(ConfigError, match="at="):
        ehrseq.score(model_dir, shard_dir, tmp_path / "out", HORIZONS, at="all", resume=True, progress=False)
    other = ehrseq.load(model_dir)
    with __import__("torch").no_grad():
        next(other.model_.parameters()).mul_(1.5)
    with pytest.raises(ConfigError, match="model"):
        ehrseq.score(other, shard_dir, tmp_path / "out", HORIZONS, resume=True, progress=False)
    changed = shutil.copytree(shard_dir, tmp_path / "changed")
    pl.read_parquet(changed / "part-0.parquet").head(5).write_parquet(changed / "part-0.parquet")
    shutil.copy(tmp_path / "out" / "_manifest.json", tmp_path / "manifest.json")
    with pytest.raises(ConfigError, match="part-0.parquet changed"):
        ehrseq.score(model_dir, changed, tmp_path / "out", HORIZONS, resume=True, progress=False)
    with pytest.raises(ConfigError, match="overwrite"):
        ehrseq.score(model_dir, shard_dir, tmp_path / "out", HORIZONS, progress=False)
    summary = ehrseq.score(model_dir, shard_dir, tmp_path / "out", [365.0], overwrite=True, progress=False)
    assert summary.manifest["settings"]["horizons"] == [365.0] and summary.scored == N_SHARDS


def test_resume_refuses_outputs_of_the_format_without_the_extrapolation_columns(model_dir, shard_dir, tmp_path):
    ehrseq.score(model_dir, shard_dir, tmp_path / "out", HORIZONS, progress=False)
    path = tmp_path / "out" / "_manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(ConfigError, match="format version 1.*overwrite=True"):
        ehrseq.score(model_dir, shard_dir, tmp_path / "out", HORIZONS, resume=True, progress=False)


# ---------------------------------------------------------------------------------------------- bad inputs
def test_malformed_shard_fails_cleanly_and_keeps_completed_outputs(model_dir, cohort, shard_dir, tmp_path):
    source = shutil.copytree(shard_dir, tmp_path / "visits")
    bad = source / "year=2024" / "part-2.parquet"
    frame = pl.read_parquet(bad)
    victim = frame["patient_id"].sort()[0]
    frame.with_columns(pl.when(pl.col("patient_id") == victim).then(-5.0).otherwise(pl.col("time")).alias("time")
                       ).write_parquet(bad)
    with pytest.raises(DataError) as caught:
        ehrseq.score(model_dir, source, tmp_path / "out", HORIZONS, progress=False)
    message = str(caught.value)
    assert str(bad) in message and caught.value.patient_ids == [victim]
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert sorted(manifest["shards"]) == ["part-0.parquet", "part-1.parquet"]
    for name, entry in manifest["shards"].items():
        validate_predictions(pl.read_parquet(tmp_path / "out" / name))
        assert ehrseq.scoring._manifest.sha256_file(tmp_path / "out" / name) == entry["sha256"]
    assert not (tmp_path / "out" / "year=2024" / "part-2.parquet").exists()
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_unreadable_shard_is_named(model_dir, shard_dir, tmp_path):
    source = shutil.copytree(shard_dir, tmp_path / "visits")
    broken = source / "part-1.parquet"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    with pytest.raises(DataError, match="part-1.parquet"):
        ehrseq.score(model_dir, source, tmp_path / "out", HORIZONS, progress=False)


def test_patient_split_across_shards_is_refused_and_repartitioning_fixes_it(model_dir, cohort, tmp_path):
    visits, _ = cohort
    source = tmp_path / "visits"
    source.mkdir()
    visits.filter(pl.col("time") < 300).write_parquet(source / "early.parquet")
    visits.filter(pl.col("time") >= 300).write_parquet(source / "late.parquet")
    with pytest.raises(DataError, match="split across input shards") as caught:
        ehrseq.score(model_dir, source, tmp_path / "out", HORIZONS, progress=False)
    assert "early.parquet" in str(caught.value) and "late.parquet" in str(caught.value)
    split = set(visits.filter(pl.col("time") < 300)["patient_id"]) & set(visits.filter(pl.col("time") >= 300)["patient_id"])
    assert set(caught.value.patient_ids) <= split and caught.value.n_offending == len(split)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.parquet"))

    files = ehrseq.scoring.partition_by_patient(source, tmp_path / "repartitioned", 3)
    assert 1 <= len(files) <= 3
    ehrseq.score(model_dir, tmp_path / "repartitioned", tmp_path / "out2", HORIZONS, progress=False)
    ehrseq.score(model_dir, visits, tmp_path / "out3", HORIZONS, progress=False)
    assert _read(tmp_path / "out2").sort("patient_id", "horizon").drop("risk", "survival", "median_remaining").equals(
        _read(tmp_path / "out3").sort("patient_id", "horizon").drop("risk", "survival", "median_remaining"))


def test_bad_arguments_raise_config_errors(model_dir, shard_dir, tmp_path):
    for kwargs in (dict(horizons=[0.0]), dict(horizons=365, at="first"), dict(horizons=365, batch_size=0),
                   dict(horizons=365, landmark=100.0, at="all"), dict(horizons=365, event="death")):
        with pytest.raises(ConfigError):
            ehrseq.score(model_dir, shard_dir, tmp_path / "out", progress=False, **kwargs)
    with pytest.raises(ConfigError, match="inside the input"):
        ehrseq.score(model_dir, shard_dir, shard_dir / "predictions", 365, progress=False)
    with pytest.raises(ConfigError, match="does not exist"):
        ehrseq.score(model_dir, tmp_path / "missing", tmp_path / "out", 365, progress=False)


# ---------------------------------------------------------------------------------------------- processes
def test_two_process_pool_pattern_gives_the_same_outputs(model_dir, shard_dir, tmp_path):
    ehrseq.score(model_dir, shard_dir, tmp_path / "single", HORIZONS, progress=False)

    run = ehrseq.scoring.plan(model_dir, shard_dir, tmp_path / "pool", HORIZONS)
    assert len(run.pending) == N_SHARDS
    work = functools.partial(ehrseq.scoring.score_shard, str(model_dir), out_dir=tmp_path / "pool", **run.options)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for record in pool.map(work, run.pending):
            run.record(record)
    assert run.manifest["complete"]
    assert _bytes(tmp_path / "pool") == _bytes(tmp_path / "single")
    single = json.loads((tmp_path / "single" / "_manifest.json").read_text())
    assert {k: v["sha256"] for k, v in run.manifest["shards"].items()} == {
        k: v["sha256"] for k, v in single["shards"].items()}
    # the completed run resumes without scoring anything
    summary = ehrseq.score(model_dir, shard_dir, tmp_path / "pool", HORIZONS, resume=True, progress=False)
    assert (summary.scored, summary.resumed) == (0, N_SHARDS)


def test_score_frame_matches_score_shard(model_dir, cohort, tmp_path):
    visits, _ = cohort
    frame = ehrseq.scoring.score_frame(model_dir, visits, HORIZONS)
    record = ehrseq.scoring.score_shard(model_dir, visits, tmp_path, HORIZONS)
    assert record["rows_out"] == frame.height
    assert pl.read_parquet(tmp_path / record["output"]).equals(frame)


def test_workers_without_the_dask_extra_are_refused_before_any_work(model_dir, shard_dir, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "distributed" else real(name, *a))
    with pytest.raises(ConfigError, match=r"num_workers=2 needs distributed: pip install 'ehrseq\[dask\]'"):
        ehrseq.score(model_dir, shard_dir, tmp_path / "out", HORIZONS, num_workers=2, progress=False)
    with pytest.raises(ConfigError, match=r"scheduler= needs distributed"):
        ehrseq.score(model_dir, shard_dir, tmp_path / "out", HORIZONS, scheduler="tcp://127.0.0.1:1", progress=False)
    assert not (tmp_path / "out").exists()


def test_scoring_and_predict_risk_equal_the_predictions_of_nn_gru(model_dir, model, cohort, shard_dir, tmp_path,
                                                                   monkeypatch):
    """The scorer's inference path (the native visit embedding and GRU steps, or without the kernels
    :func:`ehrseq.models.encoders.recurrent.gru_inference`) gives the risks of the PyTorch embedding and the GRU
    layer itself within 1e-5."""
    import ehrseq.models.encoders.recurrent as recurrent
    from ehrseq.models.distributions import _native

    visits, _ = cohort
    ehrseq.score(model_dir, shard_dir, tmp_path / "fast", HORIZONS, batch_size=5, patients_per_chunk=4,
                 progress=False)
    fast = model.predict_risk(visits, HORIZONS)
    assert ehrseq.scoring._heap._done or not sys.platform.startswith("linux")  # glibc's thresholds are set
    monkeypatch.setattr(recurrent, "gru_inference", lambda rnn, x: rnn(x)[0])
    with _native.disabled():
        reference = model.predict_risk(visits, HORIZONS)
        ehrseq.score(model_dir, shard_dir, tmp_path / "reference", HORIZONS, batch_size=5, patients_per_chunk=4,
                     progress=False)
    keys = ["patient_id", "visit_time", "horizon"]
    scored, scored_reference = (_read(tmp_path / name).sort(keys) for name in ("fast", "reference"))
    for got, expected in ((fast, reference), (scored, scored_reference), (scored, reference.sort(keys))):
        assert got.select(keys).equals(expected.select(keys))
        np.testing.assert_allclose(got["risk"].to_numpy(), expected["risk"].to_numpy(), rtol=0, atol=1e-5)
