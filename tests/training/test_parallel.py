"""Several processes (ardrag.training.parallel: process groups, DDP and FSDP), on CPU under torchrun with
gloo. Two processes give the losses and gradients of one process with the same global batch, for each
stage (teacher, distillation, GRPO, AR-CoPO): the scenario is tests/training/ddp_scenario.py. Sharded (FSDP)
checkpoints are gathered into the files of unsharded training and scattered back on resume.

Tolerance: 1e-5 relative on losses, 1e-5 x the largest gradient entry (absolute) on the gradients
(averaged over processes and clipped, as the optimizer sees them). The two runs do the same arithmetic
grouped differently (batched convolutions and attention over 2 samples instead of 4, a sum of two
half-batch means instead of one mean), which changes float32 results in the last bits only: measured
2e-7 relative on losses and 3e-8 absolute on gradients of scale 0.05-0.1. The weights after the step are
not compared: Adam's first update is lr g / (|g| + 1e-8), so on near-zero gradients (~1e-8) last-bit
differences move a weight by a few percent of lr."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCENARIO = Path(__file__).with_name("ddp_scenario.py")


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def losses(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "losses.jsonl").read_text().splitlines()]


def run(out, processes, distributed="ddp"):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SCENARIO.parent.parent)}
    env.pop("WORLD_SIZE", None)
    if processes == 1:
        cmd = [sys.executable, str(SCENARIO), str(out)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               str(SCENARIO), str(out), distributed]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-4000:]
    return torch.load(out, weights_only=False)


@pytest.mark.slow
@pytest.mark.parametrize("distributed", ["ddp", "fsdp"])
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, distributed):
    """ddp: each process holds whole models; fsdp: the models are sharded over the two processes
    (FSDP2 on gloo), the gradients gathered whole for the comparison."""
    one, two = run(tmp_path / "one.pt", 1), run(tmp_path / "two.pt", 2, distributed)
    for stage in ("teacher", "distill", "grpo", "copo")[: 4 if distributed == "ddp" else 3]:
        a, b = one[stage], two[stage]
        assert a["logs"].keys() == b["logs"].keys()
        for key, value in a["logs"].items():
            assert b["logs"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (stage, key)
        assert a["grads"].keys() == b["grads"].keys() and len(a["grads"]) > 10
        scale = max(g.abs().max().item() for g in a["grads"].values())
        assert scale > 0
        for key, grad in a["grads"].items():
            torch.testing.assert_close(b["grads"][key], grad, rtol=0, atol=1e-5 * scale, msg=f"{stage} {key}")
    assert "generator/dmd" in one["distill"]["logs"] and "critic/disc" in one["distill"]["logs"]
    assert "grpo/reward_motion" in one["grpo"]["logs"] and "grpo/kl" in one["grpo"]["logs"]
    # AR-CoPO's replay branch draws from a buffer that every process holds whole (4 reference groups)
    if distributed == "ddp":  # AR-CoPO refuses fsdp
        copo = one["copo"]["logs"]
        assert copo["copo_replay/buffer"] == 4.0 and copo["copo_replay_update1/ratio_dev"] > 0


@pytest.mark.slow
def test_sharded_training_under_torchrun_resumes_to_the_same_losses(tmp_path):
    """distributed: fsdp over 2 gloo processes: checkpoints gather the shards into the same files as
    unsharded training, and a resume scatters them back; the losses after it are those of a run that
    did not stop, to the bit (measured)."""
    (tmp_path / "fsdp.yaml").write_text("distributed: fsdp\n")

    def torchrun(run_dir, steps, *extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "ardrag.cli", "train", "distill", "--preset", "tiny", "--config", str(tmp_path / "fsdp.yaml"),
               "--run-dir", str(run_dir), "--steps", str(steps), "-q", *extra]  # fmt: skip
        result = subprocess.run(cmd, env=env(), capture_output=True)
        assert result.returncode == 0, result.stderr.decode()[-3000:]

    torchrun(tmp_path / "straight", 4)
    torchrun(tmp_path / "resumed", 2)
    torchrun(tmp_path / "resumed", 4, "--resume")
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints" / "step-4").iterdir()) == [
        "critic.safetensors", "discriminator.safetensors", "generator.safetensors", "optim.pt",
        "rng-0.pt", "rng-1.pt", "trainer.json",
    ]  # fmt: skip
    assert (tmp_path / "resumed" / "student" / "config.json").is_file()
