"""Distributed data-parallel training under torchrun (2 CPU processes, gloo) equals one process.

The low-level Trainer: with a DistributedSampler without shuffling, rank r of W sees patients r, r + W, …;
per-rank batches of b patients therefore cover exactly the single-process batch of W·b patients, and
since the objective normalises per-visit sums by a global constant, the rank-averaged gradients equal
the single-process gradients. After two epochs the weights must agree to float tolerance.

DynamicSurvival.fit and ``ehrseq train``: every rank trains on its rows of the single-process batches
(uneven shares included: 36 training patients in batches of 15), with the default model (linear path,
sampled prediction times) and early stopping on a validation split; one model is saved, by rank 0, with
the weights of one process to 1e-5 (about 1e-7 is measured), on one machine and as two torchrun "nodes"
meeting at a c10d rendezvous on localhost.
"""

import ast
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.distributed

SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from safetensors.torch import save_file
    from torch.utils.data import DistributedSampler

    from ehrseq.data import FeaturePipeline, TimeGrid, build_cohort, make_loader, tensorize
    from ehrseq.datasets import simulate
    from ehrseq.models.encoders import EncoderConfig
    from ehrseq.models.heads import HeadConfig
    from ehrseq.models.model import DynamicSurvivalModel, ModelConfig
    from ehrseq.objective import Objective, ObjectiveConfig
    from ehrseq.train import Trainer, TrainerConfig, init_distributed

    def train(world_batch, distributed):
        torch.set_num_threads(1)
        rank, world = init_distributed() if distributed else (0, 1)
        sim = simulate(48, seed=3, n_numeric=4, n_codes=10)
        cohort = build_cohort(sim.visits, sim.outcomes)
        features = FeaturePipeline().fit(cohort)
        grid = TimeGrid.quantiles(cohort, 6)
        data = tensorize(cohort, features, grid)
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=False) if distributed else None
        loader = make_loader(data, world_batch // world, shuffle=False, bucket_by_length=False, sampler=sampler)
        encoder = EncoderConfig(kind="gru", n_numeric=len(features.numeric_names), code_vocab_size=features.code_vocab_size,
                                categorical_cardinalities=features.categorical_cardinalities, d_model=16, dropout=0.0)
        config = ModelConfig(encoder, HeadConfig(kind="logistic_hazard", grid=tuple(grid.cuts), hidden=(16,), dropout=0.0))
        torch.manual_seed(0)
        model = DynamicSurvivalModel(config)
        objective = Objective(ObjectiveConfig.parse("nll"), config, visits_per_patient=cohort.n_visits / cohort.n_patients)
        trainer = Trainer(TrainerConfig(epochs=2, lr=5e-3, scheduler="none", patience=None, device="cpu", progress=False))
        history = trainer.fit(model, objective, loader)
        return rank, model, history

    if __name__ == "__main__":
        out, mode = sys.argv[1], sys.argv[2]
        rank, model, history = train(16, distributed=(mode == "ddp"))
        if rank == 0:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
            print("losses", [r["train_loss"] for r in history.records])
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_single_process(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "single.safetensors"), "single"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
         f"--master_port={_free_port()}", str(script), str(tmp_path / "ddp.safetensors"), "ddp"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = load_file(str(tmp_path / "single.safetensors"))
    b = load_file(str(tmp_path / "ddp.safetensors"))
    assert a.keys() == b.keys()
    initial_differs = False
    for name in a:
        assert torch.allclose(a[name], b[name], atol=2e-5, rtol=1e-4), (name, (a[name] - b[name]).abs().max())
        initial_differs |= bool(a[name].abs().sum() > 0)
    assert initial_differs
    # the logged epoch losses (rank-averaged under DDP) agree too
    losses = [ast.literal_eval(run.stdout.strip().split("losses", 1)[1].strip()) for run in (single, ddp)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


# ---------------------------------------------------------------------------------------------- estimator
FIT = textwrap.dedent(
    """
    import sys
    import torch
    import ehrseq
    from ehrseq.datasets import simulate

    if __name__ == "__main__":
        torch.set_num_threads(1)
        sim = simulate(45, seed=3, n_codes=10)
        model = ehrseq.DynamicSurvival(**{OPTIONS})
        model.fit(sim.visits, sim.outcomes, validation=0.2)
        path = model.save(sys.argv[1])
        losses = [(r["train_loss"], r["val_loss"]) for r in model.history_.records]
        # one write per rank (atomic on a pipe): the two ranks' lines never interleave
        sys.stdout.write(f"saved to {path}\\nlosses {losses}\\n")
        sys.stdout.flush()
    """
)
OPTIONS = dict(n_models=1, grid=6, d_model=16, hidden=(16,), dropout=0.0, batch_size=15, epochs=4, lr=5e-3, seed=0,
               progress=False, device="cpu")
WEIGHT_TOLERANCE = dict(atol=1e-5, rtol=1e-4)


def _torchrun(*arguments: str, cwd=None) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
                          f"--master_port={_free_port()}", *arguments], capture_output=True, text=True, cwd=cwd,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _same_weights(a_dir, b_dir) -> None:
    a = load_file(str(a_dir / "weights.safetensors"))
    b = load_file(str(b_dir / "weights.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], **WEIGHT_TOLERANCE), (name, (a[name] - b[name]).abs().max())


def test_estimator_fit_under_torchrun_gives_the_weights_of_one_process_and_saves_once(tmp_path):
    import ehrseq
    from ehrseq.datasets import simulate

    sim = simulate(45, seed=3, n_codes=10)
    single = ehrseq.DynamicSurvival(**OPTIONS).fit(sim.visits, sim.outcomes, validation=0.2)
    single.save(tmp_path / "single")
    script = tmp_path / "fit.py"
    script.write_text(FIT.replace("{OPTIONS}", repr(OPTIONS)))
    run = _torchrun(str(script), str(tmp_path / "ddp"))
    assert run.stdout.count("saved to") == 2  # both ranks return the path; rank 0 wrote it
    _same_weights(tmp_path / "single", tmp_path / "ddp")
    loaded = ehrseq.load(tmp_path / "ddp")  # checksums verified
    assert loaded.model_config_.any_time and loaded.model_config_.wide
    reports = [ast.literal_eval(line[len("losses "):]) for line in run.stdout.splitlines() if line.startswith("losses ")]
    expected = [(r["train_loss"], r["val_loss"]) for r in single.history_.records]
    assert len(reports) == 2  # the rank-averaged losses, reported by both ranks
    for losses in reports:
        assert len(losses) == len(expected)
        assert [x for pair in losses for x in pair] == pytest.approx([x for pair in expected for x in pair], rel=1e-5)


def test_ehrseq_train_under_torchrun_gives_the_model_of_one_process(tmp_path, capsys):
    from ehrseq.cli import main
    from ehrseq.datasets import simulate

    sim = simulate(45, seed=3, n_codes=10)
    sim.visits.write_parquet(tmp_path / "visits.parquet")
    sim.outcomes.write_parquet(tmp_path / "outcomes.parquet")
    flags = ["--visits", "visits.parquet", "--outcomes", "outcomes.parquet", "--validation", "0.2", "--grid", "6",
             "--d-model", "16", "--hidden", "16", "--dropout", "0", "--batch-size", "15", "--epochs", "4", "--n-models", "1",
             "--lr", "0.005", "--seed", "0", "--device", "cpu", "--no-progress"]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["train", *flags, "--out", "single"]) == 0
    finally:
        os.chdir(cwd)
    capsys.readouterr()
    run = _torchrun(str(Path(sys.executable).with_name("ehrseq")), "train", *flags, "--out", "ddp", cwd=tmp_path)
    assert run.stdout.count("model saved to") == 1 and run.stdout.count("training:") == 1  # rank 0 reports
    _same_weights(tmp_path / "single", tmp_path / "ddp")
    manifest = json.loads((tmp_path / "ddp" / "manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted(p.name for p in (tmp_path / "ddp").iterdir() if p.name != "manifest.json")
    # two "machines" (two torchrun launches on localhost), as the README's multi-node command runs them
    port = _free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "ehrseq",
                               str(Path(sys.executable).with_name("ehrseq")), "train", *flags, "--out", "nodes"],
                              cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-2000:] for _, err in outputs]
    assert sum(out.count("model saved to") for out, _ in outputs) == 1
    _same_weights(tmp_path / "single", tmp_path / "nodes")


# ---------------------------------------------------------------------------------------------- exit
EXIT = textwrap.dedent(
    """
    import sys, time
    import torch
    import torch.distributed as dist
    from ehrseq.train import init_distributed

    if __name__ == "__main__":
        rank, world = init_distributed()
        if sys.argv[1] == "fail" and rank == 1:
            raise RuntimeError("rank 1 fails alone")
        total = torch.ones(1)
        dist.all_reduce(total)  # rank 0 waits here for a rank that has failed
        time.sleep(0.2 * rank)  # the ranks reach the exit at different times
        print(f"rank {rank} done {total.item():g}", flush=True)
    """
)


def test_ranks_leave_the_process_group_together_and_a_failing_rank_does_not_wait_for_the_others(tmp_path):
    script = tmp_path / "exit.py"
    script.write_text(EXIT)
    for _ in range(2):  # the exit is where an intermittent abort was seen
        run = _torchrun(str(script), "clean")
        assert sorted(run.stdout.split("\n")[:2]) == ["rank 0 done 2", "rank 1 done 2"]
    started = time.monotonic()
    failed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
                             f"--master_port={_free_port()}", str(script), "fail"], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=150)
    assert failed.returncode != 0 and "rank 1 fails alone" in failed.stderr
    assert time.monotonic() - started < 120  # not the process group's 30-minute timeout of a barrier never joined


# ---------------------------------------------------------------------------------------------- shares
def test_rank_slices_partition_every_batch_and_an_empty_share_weighs_nothing():
    from ehrseq.data.sharding import RankSlices, rank_batch, rank_rows

    for size in (1, 2, 7, 15):
        rows = torch.cat([rank_rows(size, rank, 2) for rank in range(2)])
        assert rows.tolist() == list(range(size))
    batch = _batch(1)
    lonely = rank_batch(batch, 1, 2)
    assert lonely.batch_size == 1 and lonely.weight.tolist() == [0.0]
    assert rank_batch(batch, 0, 2).patient_index.tolist() == [0]
    loader = RankSlices([_batch(5)], 1, 2)
    assert len(loader) == 1 and [b.patient_index.tolist() for b in loader] == [[3, 4]]


def _batch(size: int):
    """A batch of ``size`` one-visit patients (only the shapes matter)."""
    from ehrseq.data.batch import SequenceBatch

    return SequenceBatch(numeric=torch.zeros(size, 1, 2), numeric_missing=torch.zeros(size, 1, 2, dtype=torch.bool),
                         categorical=torch.zeros(size, 1, 0, dtype=torch.long), codes=torch.zeros(size, 1, 0, dtype=torch.long),
                         time=torch.zeros(size, 1), gap=torch.zeros(size, 1), mask=torch.ones(size, 1, dtype=torch.bool),
                         patient_index=torch.arange(size))


LEAVE = textwrap.dedent(
    """
    import os
    import sys
    import torch
    import ehrseq
    from ehrseq import train
    from ehrseq.datasets import simulate

    def gloo_workers():
        names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
        return sum(name.startswith("pt_gloo_runloop") for name in names)

    if __name__ == "__main__":
        torch.set_num_threads(1)
        sim = simulate(30, seed=1, n_codes=5)
        ehrseq.DynamicSurvival(**{OPTIONS}).fit(sim.visits, sim.outcomes, validation=0.2)
        before = gloo_workers()
        train._leave_process_group()
        sys.stdout.write(f"gloo workers {before} {gloo_workers()}\\n")
    """
)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts the process's threads in /proc (Linux)")
def test_leaving_the_process_group_joins_its_worker_threads_after_a_distributed_fit(tmp_path):
    """The gradient reductions run on a group of their own (``train._gradient_group``), which the reducer keeps
    alive; the default group, which carries the collectives of Python objects, is destroyed at exit and its worker
    threads joined while the interpreter is whole. On the default group, the reducer kept it alive and its threads
    ran into the interpreter's finalisation, where releasing a collective's Python tensors aborted the rank."""
    script = tmp_path / "leave.py"
    script.write_text(LEAVE.replace("{OPTIONS}", repr({**OPTIONS, "epochs": 2})))
    run = _torchrun(str(script))
    counts = [tuple(map(int, line.split()[2:])) for line in run.stdout.splitlines() if line.startswith("gloo workers")]
    assert len(counts) == 2
    for before, after in counts:
        assert before >= 4  # two per group: the default group's and the gradient group's
        assert after == before - 2
