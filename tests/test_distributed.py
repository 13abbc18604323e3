"""Distributed data-parallel training under torchrun (2 CPU processes, gloo) equals one process.

With a DistributedSampler without shuffling, rank r of W sees patients r, r + W, …; per-rank batches of
b patients therefore cover exactly the single-process batch of W·b patients, and since the objective
normalises per-visit sums by a global constant, the rank-averaged gradients equal the single-process
gradients. After two epochs the weights must agree to float tolerance.
"""

import ast
import os
import socket
import subprocess
import sys
import textwrap

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
