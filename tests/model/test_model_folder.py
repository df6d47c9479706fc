"""Model folders (ardrag.model.model_folder): a whole model written and read back to the bit, with its
generation config; a training run from one starts from its student; the shipped toy model itself."""

import json

import numpy as np
import pytest
import torch
from factories import toy_model_folder

from ardrag.errors import ConfigError
from ardrag.model.model_folder import (
    COMPONENTS,
    folder_preset,
    is_model_folder,
    load_model_folder,
    read_recipe,
    save_model_folder,
)
from ardrag.model.pipeline import ARDragPipeline
from ardrag.presets import TOY, shipped_folder

MAX_BYTES = 20_000_000  # the limit on the shipped weights


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_model_folder_reads_back_the_pipeline_it_was_written_from(tmp_path):
    pipe = toy_model_folder(tmp_path / "toy")
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == sorted([*COMPONENTS, "recipe.json"])
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.old"))
    assert is_model_folder(tmp_path / "toy") and folder_preset(tmp_path / "toy") == TOY
    assert folder_preset(tmp_path) is None and not is_model_folder(tmp_path)
    loaded = ARDragPipeline.from_pretrained(str(tmp_path / "toy"))
    assert loaded.config == pipe.config and (loaded.config.width, loaded.config.height) == (80, 48)
    for a, b in [(pipe.transformer, loaded.transformer), (pipe.vae, loaded.vae),
                 (pipe.wan.text_encoder, loaded.wan.text_encoder),
                 (pipe.wan.image_encoder, loaded.wan.image_encoder)]:  # fmt: skip
        assert same_weights(a, b)
    assert torch.equal(pipe.encode_prompt("a red ball rolls")[0], loaded.encode_prompt("a red ball rolls")[0])
    image = (np.random.default_rng(0).random((48, 80, 3)) * 255).astype(np.uint8)
    assert torch.equal(pipe.encode_clip(image), loaded.encode_clip(image))
    assert loaded.wan.transformer is loaded.transformer  # a training run starts from the folder's student

    other = ARDragPipeline.tiny(5, TOY)
    other.transformer.save_pretrained(str(tmp_path / "student"))
    swapped = load_model_folder(tmp_path / "toy", checkpoint=str(tmp_path / "student"), width=96)
    assert same_weights(swapped.transformer, other.transformer) and swapped.config.width == 96
    assert same_weights(swapped.wan.transformer, pipe.transformer)


def test_writing_again_replaces_the_folder_whole(tmp_path):
    toy_model_folder(tmp_path / "toy", seed=0)
    second = toy_model_folder(tmp_path / "toy", seed=3)
    assert same_weights(load_model_folder(tmp_path / "toy").transformer, second.transformer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]
    recipe = read_recipe(tmp_path / "toy")
    assert recipe["preset"] == TOY and recipe["generation"]["heatmap"]["sigma"] == 3.0


def test_what_is_not_a_model_folder_is_named(tmp_path):
    with pytest.raises(ConfigError, match="is not a model folder: no recipe.json"):
        load_model_folder(tmp_path)
    (tmp_path / "recipe.json").write_text(json.dumps({"preset": TOY}))
    with pytest.raises(ConfigError, match="no 'generation' mapping"):
        load_model_folder(tmp_path)
    save_model_folder(tmp_path / "m", ARDragPipeline.tiny(0), {})
    for part in ("vae", "tokenizer"):
        for f in (tmp_path / "m" / part).iterdir():
            f.unlink()
        (tmp_path / "m" / part).rmdir()
    with pytest.raises(ConfigError, match=r"lacks \['vae', 'tokenizer'\]"):
        load_model_folder(tmp_path / "m")


def test_training_from_a_model_folder_starts_from_its_student_controls_included(tmp_path):
    from ardrag.training.run import build_models, resolve_config

    pipe = toy_model_folder(tmp_path / "toy")
    config = resolve_config("teacher", preset="tiny", overrides={
        "run_dir": str(tmp_path / "run"), "model": {"preset": None, "wan": str(tmp_path / "toy")},
    })  # fmt: skip
    built, teacher = build_models(config)
    assert not teacher.causal and same_weights(teacher, pipe.transformer)
    assert teacher.control_embedding.weight.abs().sum() > 0
    assert (built.config.width, built.config.height, built.config.heatmap.sigma) == (80, 48, 3.0)


@pytest.fixture
def shipped():
    try:
        return shipped_folder(TOY)
    except ConfigError as err:
        pytest.skip(f"the toy model is not shipped in this checkout: {err}")


def test_the_shipped_toy_model_and_its_recipe(shipped):
    sizes = [p.stat().st_size for p in shipped.rglob("*") if p.is_file()]
    assert sum(sizes) <= MAX_BYTES
    assert not [p for p in shipped.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]  # safetensors
    recipe = read_recipe(shipped)
    assert recipe["preset"] == TOY and recipe["quick"] is False
    made_by = recipe["made_by"]
    assert made_by.startswith("python benchmarks/make_toy_model.py") and "--ship" in made_by
    assert recipe["commit"] and len(recipe["commit"]) == 40
    assert [s["stage"] for s in recipe["stages"]] == ["vae5", "vae", "toy", "grpo"][: len(recipe["stages"])]
    assert all(s["command"].startswith("python benchmarks/bench_") and s["args"] for s in recipe["stages"])
    assert set(recipe["seeds"]) >= {"held-out clips"} and recipe["figures"]["tracking_px"]["rows"]
    g = recipe["generation"]
    assert (g["width"], g["height"], g["guidance_scale"], g["heatmap"]["sigma"]) == (80, 48, 1.0, 3.0)
    pipe = ARDragPipeline.from_pretrained(str(shipped))
    assert pipe.transformer.control_embedding.weight.abs().sum() > 0  # trained controls


@pytest.mark.slow
def test_the_shipped_toy_model_follows_drags(shipped, tmp_path):
    """Held-out clips of the toy's look: the dragged points tracked in its videos lie closer to their
    targets than in the reference frame held still (``ardrag eval``'s measure)."""
    from ardrag.evaluation.run import evaluate

    def still(pipe, image, trajectory, prompt, seed=0):  # the reference frame held still
        return np.repeat(image[None], trajectory.num_frames, axis=0), 0.0

    pipe = ARDragPipeline.from_pretrained(str(shipped))
    runs = {name: evaluate(tmp_path / name, preset=TOY, pipe=pipe, progress=False, clip_fn=fn)
            for name, fn in (("model", None), ("still", still))}  # fmt: skip
    assert runs["model"]["consistency_error_px"] < 0.85 * runs["still"]["consistency_error_px"]
