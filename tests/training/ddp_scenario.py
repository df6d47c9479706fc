"""One training step of each stage (teacher, distill, GRPO, AR-CoPO) on a fixed global batch of 4 clips.

    python ddp_scenario.py OUT                                  # one process, batch 4
    python -m torch.distributed.run --standalone --nproc_per_node 2 ddp_scenario.py OUT [fsdp]
                                                                # 2 x 2 (gloo), replicated or sharded

Every process builds the same models (same seed) and the same 4 clips and takes its share; rank 0
saves the logged losses and the gradients after averaging (and clipping). Run by test_parallel.py.
"""

import sys

import torch
from training_helpers import procedural_batch, tiny_config

from ardrag.data.loader import collate
from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
from ardrag.training.parallel import (
    exit_process,
    full_gradients,
    init_distributed,
    is_sharded,
    shutdown_distributed,
)
from ardrag.training.run import build_models
from ardrag.training.stages import get_stage
from ardrag.training.trainer import Trainer

GLOBAL_BATCH = 4


def main(out: str, distributed: str = "ddp") -> None:
    torch.set_num_threads(1)
    rank, world, device = init_distributed()
    share = GLOBAL_BATCH // world
    clips = list(ProceduralSource(ProceduralConfig(num_clips=GLOBAL_BATCH, seed=3, num_frames=9,
                                                   buckets=["640x368"])).samples())  # fmt: skip
    raw = collate(clips[rank * share : (rank + 1) * share])
    index = list(range(rank * share, (rank + 1) * share))
    results = {}
    # AR-CoPO runs under ddp only (its config refuses fsdp)
    for stage_name in ("teacher", "distill", "grpo", "copo")[: 4 if distributed == "ddp" else 3]:
        config = tiny_config(stage_name, batch_size=share, run_dir=f"{out}-run-{stage_name}",
                             distributed=distributed)  # fmt: skip
        torch.manual_seed(config.seed)
        pipe, teacher = build_models(config)
        stage = get_stage(stage_name).build_stage(config, pipe, teacher)
        trainer = Trainer(config, stage, lambda _epoch: iter(()), rank=rank, world=world, device=device)
        grads = {}
        for name, opt in trainer.optimizers.items():  # each phase's gradients, as its optimizer sees them
            owner = stage.optimizer_modules()[name]
            assert is_sharded(owner) == (distributed == "fsdp" and world > 1), name

            def step(*args, grads=grads, owner=owner, name=name, original=opt.step, **kwargs):
                for pname, g in full_gradients(owner).items():  # whole (gathered when sharded)
                    grads[f"{name}.{pname}"] = g
                return original(*args, **kwargs)

            opt.step = step
        logs = trainer.train_step([stage.batch(raw, index)])  # step 0: distill runs critic and generator
        results[stage_name] = {"logs": logs, "grads": grads}
    if rank == 0:
        torch.save(results, out)
    if shutdown_distributed():  # every process leaves together
        exit_process(0)


if __name__ == "__main__":
    assert procedural_batch  # the helpers module is importable from here (tests/ on sys.path)
    main(*sys.argv[1:])
