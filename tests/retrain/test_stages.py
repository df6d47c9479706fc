"""ardrag.retrain.stages: a training stage launched under torchrun by the retrain config's
``nproc_per_node``, resumed from its checkpoints when it is run again."""

import json

import pytest

from ardrag.data.build import ShardConfig, write_dataset
from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
from ardrag.retrain.config import RetrainConfig, train_config
from ardrag.retrain.ledger import stage_key
from ardrag.retrain.report import loss_figures
from ardrag.retrain.stages import run_training


@pytest.mark.slow
def test_a_stage_under_torchrun_with_two_processes_then_resumed(tmp_path):
    cfg = ProceduralConfig(num_clips=4, seed=0, num_frames=9, buckets=["640x368"])
    shards = ShardConfig(shard_samples=2)  # one shard per process
    write_dataset(ProceduralSource(cfg).samples(), tmp_path / "data", cfg, shards=shards, name="procedural",
                  total=4, progress=False)  # fmt: skip
    teacher = {"config": {"steps": 2}, "nproc_per_node": 2}
    config = RetrainConfig.model_validate({"out": str(tmp_path), "preset": "tiny", "teacher": teacher})
    tc = train_config(config, "teacher", str(tmp_path / "data"), None)
    tc = tc.model_copy(update={"run_dir": str(tmp_path / "run")})
    summary = run_training(tc, nproc_per_node=2, progress=False)
    assert summary["steps"] == 2 and (tmp_path / "run" / "teacher").is_dir()
    meta = json.loads((tmp_path / "run" / "checkpoints" / "step-2" / "trainer.json").read_text())
    assert meta["world_size"] == 2  # really two processes
    assert set(loss_figures(tmp_path / "run")["teacher/loss"]) == {"first", "last"}
    # the same stage with more steps: its key changes; in the same folder it resumes from step 2
    longer = tc.model_copy(update={"steps": 3})
    assert stage_key(longer, "v1") != stage_key(tc, "v1") and stage_key(tc, "v1") == stage_key(tc, "v1")
    again = run_training(longer, nproc_per_node=2, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    assert again["steps"] == 3 and [r["step"] for r in rows] == [1, 2, 3]


def test_the_report_says_what_each_training_stage_starts_from(tmp_path, monkeypatch):
    """The demo's chain: the teacher from the shipped toy model (here a folder of random weights in its
    place), each later stage from the export before it; other configs: random weights or Wan's."""
    from factories import toy_model_folder

    import ardrag.presets as presets
    from ardrag.retrain.config import DEMO, load_retrain_config, training_chain
    from ardrag.retrain.stages import start_weights

    monkeypatch.setattr(presets, "ASSETS", tmp_path / "assets")
    toy_model_folder(tmp_path / "assets" / "toy")
    demo = load_retrain_config(None, {"out": str(tmp_path / "demo")}, base=DEMO)
    data = str(tmp_path / "data")
    teacher = train_config(demo, "teacher", data, None)
    assert teacher.model.wan == str(tmp_path / "assets" / "toy") and teacher.model.preset is None
    assert start_weights(teacher) == (
        f"the toy model's trained student, control weights included (`{tmp_path / 'assets' / 'toy'}`); "
        "the toy model's encoders and VAE"
    )
    chain = training_chain(demo.model_copy(update={"rl": "both"}))
    for before, stage in zip(chain, chain[1:], strict=False):
        tc = train_config(demo, stage, data, f"/runs/{before}/export")
        start = start_weights(tc, before)
        assert start.startswith(f"the {before} stage's export `/runs/{before}/export`; the toy")
    assert start_weights(tc).startswith("`/runs/grpo/export`; the toy")  # the stage before unnamed
    tiny = train_config(RetrainConfig.model_validate({"preset": "tiny"}), "teacher", data, None)
    assert start_weights(tiny) == (
        "random weights (model preset tiny) with zero control weights; the random encoders and VAE of model "
        "preset tiny"
    )
    own_vae = RetrainConfig.model_validate({"train": {"model": {"vae": "/v"}}})
    wan = train_config(own_vae, "teacher", data, None)
    assert start_weights(wan).startswith("the transformer of `Wan-AI/")
    assert start_weights(wan).endswith("(the VAE replaced by `/v`)")


def test_a_training_stage_outside_the_chain_of_rl_is_refused(tmp_path):
    from ardrag.errors import ConfigError
    from ardrag.retrain.stages import training_stage

    config = RetrainConfig.model_validate({"out": str(tmp_path / "retrain"), "preset": "tiny"})
    with pytest.raises(ConfigError, match=r"'copo' is not in the retrain chain of rl 'grpo'; expected one of "
                                          r"\['teacher', 'distill', 'grpo'\]"):  # fmt: skip
        training_stage(config, "copo", {"key": "k", "model_digest": "d", "outputs": {"model": "/m"}})
    assert not (tmp_path / "retrain").exists()


def test_new_weights_in_the_model_folder_rerun_the_stage_that_starts_from_it(tmp_path):
    from factories import toy_model_folder

    from ardrag.retrain.stages import training_inputs

    toy_model_folder(tmp_path / "toy", seed=0)
    config = RetrainConfig.model_validate({"preset": "tiny", "train": {"model": {"preset": None,
                                           "wan": str(tmp_path / "toy")}}})  # fmt: skip
    teacher = train_config(config, "teacher", str(tmp_path / "data"), None)
    dataset = {"key": "version-1"}
    first = training_inputs(teacher, dataset)
    assert training_inputs(teacher, dataset) == first != "version-1"
    toy_model_folder(tmp_path / "toy", seed=1)
    assert training_inputs(teacher, dataset) != first
    distill = train_config(config, "distill", str(tmp_path / "data"), "/teacher")
    assert training_inputs(distill, {"key": "k", "model_digest": "d"}) == "d"
    tiny = train_config(RetrainConfig.model_validate({"preset": "tiny"}), "teacher", str(tmp_path), None)
    assert training_inputs(tiny, dataset) == "version-1"


def test_the_untrained_yardstick_is_a_seeded_random_transformer_of_the_same_shape():
    import torch

    from ardrag.model.pipeline import ARDragPipeline
    from ardrag.retrain.stages import untrained_transformer

    trained = ARDragPipeline.tiny(0).transformer
    with torch.no_grad():  # a "trained" model: its control weights no longer zero
        trained.control_embedding.weight.fill_(0.5)
    state = torch.random.get_rng_state()
    a, b, c = (untrained_transformer(trained, s) for s in (3, 3, 4))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG untouched
    assert type(a) is type(trained) and dict(a.config) == dict(trained.config) and not a.training
    assert not a.control_embedding.weight.any() and not a.control_embedding.bias.any()  # zero, as at start
    weights = [dict(m.named_parameters()) for m in (a, b, c, trained)]
    name = "blocks.0.attn1.to_q.weight"
    assert torch.equal(weights[0][name], weights[1][name])  # the same seed, the same model
    assert not torch.equal(weights[0][name], weights[2][name])
    assert not torch.equal(weights[0][name], weights[3][name])
