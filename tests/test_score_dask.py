"""Batch scoring on Dask distributed: a LocalCluster of worker processes (``num_workers=``), an existing
cluster started as separate ``dask scheduler`` / ``dask worker`` processes (``scheduler=``, ``--scheduler``),
a worker killed during a shard, the driver killed and the run resumed, a malformed shard, and the
``dask.dataframe`` path. Every run's outputs are byte-identical to scoring in this process."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cloudpickle
import numpy as np
import polars as pl
import pytest
from distributed import Client, LocalCluster, WorkerPlugin

import ehrseq
import ehrseq.scoring
from ehrseq.cli import main
from ehrseq.data import validate_predictions
from ehrseq.datasets import simulate
from ehrseq.errors import ConfigError, DataError
from ehrseq.estimator import DynamicSurvival

pytestmark = pytest.mark.distributed
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers receive this module's plugins by value

N_SHARDS = 6
HORIZONS = [90.0, 365.0, 1000.0]
OPTIONS = dict(patients_per_chunk=4, batch_size=5, progress=False)
FLOATS = ["risk", "survival", "median_remaining"]
DASK = str(Path(sys.executable).with_name("dask"))


@pytest.fixture(scope="module")
def cohort():
    sim = simulate(60, 4)
    return sim.visits, sim.outcomes


@pytest.fixture(scope="module")
def model(cohort):
    return DynamicSurvival(head="logistic_hazard", grid=8, epochs=1, batch_size=16, d_model=8, hidden=(8,),
                           origin="zero", progress=False, device="cpu", seed=0).fit(*cohort, validation=None)


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    return model.save(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def shard_dir(cohort, tmp_path_factory):
    """The visits in six Parquet shards partitioned by patient, rows shuffled."""
    visits, _ = cohort
    root = tmp_path_factory.mktemp("visits")
    for k in range(N_SHARDS):
        part = visits.filter(pl.col("patient_id") % N_SHARDS == k).sample(fraction=1.0, shuffle=True, seed=k)
        part.write_parquet(root / f"part-{k}.parquet")
    return root


@pytest.fixture(scope="module")
def reference(model_dir, shard_dir, tmp_path_factory):
    """The outputs of scoring in this process."""
    out = tmp_path_factory.mktemp("reference") / "out"
    ehrseq.score(model_dir, shard_dir, out, HORIZONS, **OPTIONS)
    return _bytes(out)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two workers started as separate processes on localhost, each in its own folder;
    yields the scheduler address."""
    folder = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = open(folder / "cluster.log", "w")  # noqa: SIM115 (closed below)
    processes = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                   "--scheduler-file", str(folder / "scheduler.json")],
                                  cwd=folder, env=env, stdout=log, stderr=log)]
    try:
        deadline = time.monotonic() + 60
        while not (folder / "scheduler.json").is_file():
            assert time.monotonic() < deadline and processes[0].poll() is None, (folder / "cluster.log").read_text()
            time.sleep(0.1)
        time.sleep(0.2)
        address = json.loads((folder / "scheduler.json").read_text())["address"]
        for number in range(2):
            (folder / f"worker-{number}").mkdir()
            processes.append(subprocess.Popen(
                [DASK, "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                 "--name", f"worker-{number}", "--local-directory", str(folder / f"worker-{number}")],
                cwd=folder / f"worker-{number}", env=env, stdout=log, stderr=log))
        with Client(address, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


def _bytes(out_dir) -> dict[str, bytes]:
    return {p.relative_to(out_dir).as_posix(): p.read_bytes() for p in sorted(Path(out_dir).rglob("*.parquet"))}


def _checksums(out_dir) -> dict[str, str]:
    return {name: entry["sha256"] for name, entry in
            json.loads((Path(out_dir) / "_manifest.json").read_text())["shards"].items()}


# ---------------------------------------------------------------------------------------------- local cluster
def test_local_cluster_of_two_workers_gives_the_in_process_outputs(model, shard_dir, reference, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR: the staged model and Dask's files go there
    saves = []
    save = type(model).save
    monkeypatch.setattr(type(model), "save", lambda self, path: saves.append(path) or save(self, path))
    summary = ehrseq.score(model, shard_dir, tmp_path / "out", HORIZONS, num_workers=2, **OPTIONS)
    assert (summary.scored, summary.resumed) == (N_SHARDS, 0) and summary.manifest["complete"]
    assert len(saves) == 1  # the estimator is saved once for the workers; its id is read from there
    assert _bytes(tmp_path / "out") == reference
    assert list((tmp_path / "tmp").iterdir()) == []  # the staged model and the cluster's files are removed
    assert not list((tmp_path / "out").rglob("*.tmp"))
    # an error while planning (here: a split patient) stops the cluster that was starting
    visits = pl.read_parquet(shard_dir / "part-0.parquet")
    split = tmp_path / "split"
    split.mkdir()
    visits.write_parquet(split / "a.parquet")
    visits.head(1).write_parquet(split / "b.parquet")
    with pytest.raises(DataError, match="split across input shards"):
        ehrseq.score(model, split, tmp_path / "failed", HORIZONS, num_workers=2, **OPTIONS)
    assert not list((tmp_path / "failed").rglob("*.parquet"))
    assert list((tmp_path / "tmp").iterdir()) == []


class KillDuringFirstShard(WorkerPlugin):
    """The first worker to read the second chunk of a shard kills its own process (once per run): the
    shard's temporary output then holds one row group."""

    name = "kill-during-first-shard"

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def setup(self, worker) -> None:
        import ehrseq.scoring._shard as shard_module

        real, marker = shard_module.read_chunks, self.marker

        def read_chunks(*args, **kwargs):
            for number, chunk in enumerate(real(*args, **kwargs)):
                if number == 1:
                    try:
                        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                    except FileExistsError:
                        pass
                    else:
                        os.kill(os.getpid(), signal.SIGKILL)
                yield chunk

        shard_module.read_chunks = read_chunks


@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_killed_during_a_shard_is_replaced_and_nothing_is_lost_or_duplicated(model_dir, shard_dir,
                                                                                       reference, tmp_path, workers):
    """Also with a single worker: what the tasks share (the options and outcome table) must survive the death of
    every worker that held it, which data scattered to the workers does not."""
    marker = tmp_path / "killed"
    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None, silence_logs=50,
                      local_directory=str(tmp_path / "dask")) as local, Client(local, set_as_default=False) as client:
        client.register_plugin(KillDuringFirstShard(str(marker)))
        summary = ehrseq.score(model_dir, shard_dir, tmp_path / "out", HORIZONS, scheduler=client, **OPTIONS)
    assert marker.exists()  # a worker died during a shard
    assert summary.scored == N_SHARDS and summary.manifest["complete"]
    assert summary.totals["patients_scored"] == 60 and summary.totals["shards"] == N_SHARDS
    assert _bytes(tmp_path / "out") == reference
    assert not list((tmp_path / "out").rglob("*.tmp"))  # the dead worker's partial output is removed


# ---------------------------------------------------------------------------------------------- existing cluster
def test_existing_cluster_gives_the_in_process_outputs_from_python_and_the_command_line(
        model_dir, shard_dir, reference, cluster, tmp_path, capsys):
    summary = ehrseq.score(model_dir, shard_dir, tmp_path / "python", HORIZONS, scheduler=cluster, **OPTIONS)
    assert summary.scored == N_SHARDS and _bytes(tmp_path / "python") == reference
    assert main(["score", "--model", str(model_dir), "--visits", str(shard_dir), "--out", str(tmp_path / "cli"),
                 "--horizons", *map(str, HORIZONS), "--patients-per-chunk", "4", "--batch-size", "5",
                 "--scheduler", cluster]) == 0
    assert "6 shard(s) scored" in capsys.readouterr().out
    assert _bytes(tmp_path / "cli") == reference
    # completed: resuming on the cluster scores nothing
    again = ehrseq.score(model_dir, shard_dir, tmp_path / "python", HORIZONS, scheduler=cluster, resume=True,
                         **OPTIONS)
    assert (again.scored, again.resumed) == (0, N_SHARDS)


def test_a_malformed_shard_on_the_cluster_names_shard_and_patients_and_keeps_the_completed_outputs(
        model_dir, shard_dir, cluster, tmp_path):
    source = shutil.copytree(shard_dir, tmp_path / "visits")
    bad = source / "part-3.parquet"
    frame = pl.read_parquet(bad)
    victim = frame["patient_id"].sort()[0]
    frame.with_columns(pl.when(pl.col("patient_id") == victim).then(-5.0).otherwise(pl.col("time")).alias("time")
                       ).write_parquet(bad)
    with pytest.raises(DataError) as caught:
        ehrseq.score(model_dir, source, tmp_path / "out", HORIZONS, scheduler=cluster, **OPTIONS)
    assert str(bad) in str(caught.value) and caught.value.patient_ids == [victim]
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert "part-3.parquet" not in manifest["shards"] and not manifest["complete"]
    for name, entry in manifest["shards"].items():
        validate_predictions(pl.read_parquet(tmp_path / "out" / name))
        assert ehrseq.scoring._manifest.sha256_file(tmp_path / "out" / name) == entry["sha256"]
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_the_cluster_needs_a_saved_model_and_one_engine(model, model_dir, shard_dir, cluster, tmp_path, capsys):
    with pytest.raises(ConfigError, match="save it"):
        ehrseq.score(model, shard_dir, tmp_path / "a", HORIZONS, scheduler=cluster, progress=False)
    with pytest.raises(ConfigError, match="pass one of them"):
        ehrseq.score(model_dir, shard_dir, tmp_path / "b", HORIZONS, num_workers=2, scheduler=cluster, progress=False)
    with pytest.raises(ConfigError, match="distributed.Client"):
        ehrseq.score(model_dir, shard_dir, tmp_path / "c", HORIZONS, scheduler=8786, progress=False)
    with pytest.raises(SystemExit):
        main(["score", "--model", str(model_dir), "--visits", str(shard_dir), "--out", str(tmp_path / "d"),
              "--horizons", "365", "--workers", "2", "--scheduler", cluster])
    assert "not allowed with argument" in capsys.readouterr().err


def _mapped_chunks_of_a_1_mib_malloc() -> int:
    """How many chunks glibc maps afresh to serve one 1 MiB malloc in this process (1: mmap, 0: heap)."""
    import ctypes

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                         "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Mallinfo2
    libc.malloc.restype = ctypes.c_void_p
    before = libc.mallinfo2().hblks
    pointer = libc.malloc(1 << 20)
    after = libc.mallinfo2().hblks
    libc.free(ctypes.c_void_p(pointer))
    return after - before


def _worker_settings() -> tuple[str | None, bool, str, str]:
    import dask

    return (os.environ.get("MALLOC_TRIM_THRESHOLD_"), dask.config.get("distributed.worker.profile.enabled"),
            dask.config.get("distributed.admin.tick.interval"),
            dask.config.get("distributed.worker.memory.monitor-interval"))


def _polars_threads() -> int:
    import polars as pl

    return pl.thread_pool_size()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_workers_serve_large_tensors_from_the_heap_and_do_not_sample_profiles(model_dir, cluster, tmp_path,
                                                                              monkeypatch):
    from ehrseq.scoring._engine import LoadModel, connect

    # the run's own cluster: started without the nanny's trim threshold, without the sampling profiler and with
    # its periodic checks made less frequent (QUIET_LOCAL_CLUSTER)
    # (a LocalCluster started earlier in this process left the variable in os.environ, as Dask's nannies
    # do: its workers would inherit it, and the plugin below covers them)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with connect(2, None, tmp_path) as client:
        assert set(client.run(_worker_settings).values()) == {(None, False, "500ms", "1s")}
    with connect(2, None, tmp_path, threads=1) as client:  # Polars on as many threads as torch, in every worker
        assert set(client.run(_polars_threads).values()) == {1}
    # an existing cluster's workers (nannies set MALLOC_TRIM_THRESHOLD_, which pins glibc's mmap threshold
    # at 128 KiB): the model-loading plugin raises the thresholds (ehrseq.scoring._heap)
    with Client(cluster, set_as_default=False) as client:
        assert {settings[0] for settings in client.run(_worker_settings).values()} == {"65536"}
        client.register_plugin(LoadModel(str(model_dir)))
        assert set(client.run(_mapped_chunks_of_a_1_mib_malloc).values()) == {0}
    # what the scorer changes in a fresh process, with and without the nanny's variable: 1 MiB was mapped,
    # now it is not
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from test_score_dask import _mapped_chunks_of_a_1_mib_malloc"
              " as mapped; from ehrseq.scoring._heap import keep_large_allocations_on_the_heap as heap; "
              "before = mapped(); heap(); print(before, mapped())")
    for trim in ("65536", None):
        env = {name: value for name, value in os.environ.items() if name != "MALLOC_TRIM_THRESHOLD_"}
        done = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent)], capture_output=True,
                              text=True, env=env if trim is None else {**env, "MALLOC_TRIM_THRESHOLD_": trim},
                              check=True)
        assert done.stdout.split() == ["1", "0"], trim


# ---------------------------------------------------------------------------------------------- driver killed
DRIVER = textwrap.dedent(
    """
    import sys, time
    import ehrseq
    from ehrseq.scoring._run import ScorePlan

    record = ScorePlan.record

    def record_then_hang(self, entry):  # the driver is killed after recording its first shard
        record(self, entry)
        time.sleep(600)

    if __name__ == "__main__":
        ScorePlan.record = record_then_hang
        ehrseq.score(sys.argv[1], sys.argv[2], sys.argv[3], [90.0, 365.0, 1000.0], patients_per_chunk=4,
                     batch_size=5, progress=False, num_workers=2)
    """
)


def test_resume_after_the_driver_is_killed(model_dir, shard_dir, reference, cluster, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    out = tmp_path / "out"
    scratch = tmp_path / "driver-tmp"  # the killed driver cannot remove its temporary directories: not in /tmp
    scratch.mkdir()
    driver = subprocess.Popen([sys.executable, str(script), str(model_dir), str(shard_dir), str(out)],
                              env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)},
                              start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not ((out / "_manifest.json").is_file()
                   and json.loads((out / "_manifest.json").read_text())["shards"]):
            assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver, its local cluster and workers
        driver.wait()
        driver.stderr.close()
    manifest = json.loads((out / "_manifest.json").read_text())
    assert len(manifest["shards"]) == 1 and not manifest["complete"]
    with pytest.raises(ConfigError, match="resume"):
        ehrseq.score(model_dir, shard_dir, out, HORIZONS, scheduler=cluster, **OPTIONS)
    summary = ehrseq.score(model_dir, shard_dir, out, HORIZONS, scheduler=cluster, resume=True, **OPTIONS)
    assert (summary.scored, summary.resumed) == (N_SHARDS - 1, 1)
    assert _bytes(out) == reference
    assert summary.totals["patients_scored"] == 60
    assert not list(out.rglob("*.tmp"))


# ---------------------------------------------------------------------------------------------- data frames
def test_a_dask_data_frame_shuffled_by_patient_gives_the_rows_of_score_frame(model_dir, cohort, cluster, tmp_path):
    import dask
    import dask.dataframe as dd

    visits, outcomes = cohort
    expected = ehrseq.scoring.score_frame(model_dir, visits, HORIZONS, outcomes=outcomes, at="all").sort(
        "patient_id", "visit_time", "horizon")
    scattered = visits.sample(fraction=1.0, shuffle=True, seed=1)  # patients spread over every file
    (tmp_path / "visits").mkdir()
    for number, part in enumerate(scattered.iter_slices(200)):
        part.write_parquet(tmp_path / "visits" / f"{number}.parquet")
    sources = {"parquet": dd.read_parquet(str(tmp_path / "visits")),
               "pandas": dd.from_pandas(scattered.to_pandas(use_pyarrow_extension_array=True), npartitions=4)}
    with Client(cluster, set_as_default=False) as client:
        for name, frame in sources.items():
            assert frame.npartitions > 1
            predictions = ehrseq.scoring.score_partitions(model_dir, frame, HORIZONS, outcomes=outcomes, at="all")
            scored = pl.from_pandas(client.compute(predictions).result()).sort("patient_id", "visit_time", "horizon")
            assert scored.schema == expected.schema, name
            # the same rows; the values up to float32 rounding (the partitions batch patients differently)
            assert scored.drop(FLOATS).equals(expected.drop(FLOATS)), name
            for column in FLOATS:
                np.testing.assert_allclose(scored[column].to_numpy(), expected[column].to_numpy(), rtol=1e-5,
                                           atol=1e-6, err_msg=f"{name}: {column}")
        # lists that Dask turned into text are refused, not read as unknown codes
        with dask.config.set({"dataframe.convert-string": True}):
            stringified = dd.from_pandas(scattered.to_pandas(), npartitions=2)
        with pytest.raises(DataError, match="lists written as text"):
            client.compute(ehrseq.scoring.score_partitions(model_dir, stringified, HORIZONS)).result()
    with pytest.raises(ConfigError, match="dask.dataframe"):
        ehrseq.scoring.score_partitions(model_dir, visits, HORIZONS)
