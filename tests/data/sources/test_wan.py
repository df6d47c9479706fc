"""The wan source: the tiny pipeline end to end on CPU, stable ids, rejections, config checks, loading."""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from ardrag.config import build_config
from ardrag.data.buckets import Bucket
from ardrag.data.clip import Clip, InputRejected
from ardrag.data.sources import VideoSource
from ardrag.data.sources.wan import WanConfig, WanSource, render_size
from ardrag.errors import ConfigError
from ardrag.model.tiny import build_tiny_pipeline
from ardrag.presets import preset

pytest.importorskip("diffusers")  # the 'models' extra
pytest.importorskip("ftfy")

FRAMES = 5


def write_image(path: Path, width: int, height: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8), (width, height))
    assert cv2.imwrite(str(path), image)
    return path


def write_jobs(tmp_path: Path, jobs: list[dict], name: str = "jobs.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(jobs) if name.endswith(".yaml") else json.dumps(jobs))
    return path


@pytest.fixture
def jobs_file(tmp_path: Path) -> Path:
    write_image(tmp_path / "wide.png", 200, 112, seed=0)
    write_image(tmp_path / "tall.png", 96, 128, seed=1)
    return write_jobs(
        tmp_path,
        [
            {"image": "wide.png", "prompt": "a red ball rolls to the left", "seed": 1},
            {"image": "tall.png", "prompt": "a cup slides down", "seed": 7, "bucket": "400x400"},
        ],
    )


def tiny(jobs: Path, **overrides) -> WanSource:
    return WanSource(
        build_config(
            WanConfig, {**preset("wan", "tiny"), "num_frames": FRAMES, "jobs": str(jobs), **overrides}
        )
    )


def render(source: WanSource, item) -> Clip:
    (clip,) = list(source.clips(item))
    return clip


def test_tiny_pipeline_end_to_end(jobs_file: Path) -> None:
    source = tiny(jobs_file)
    assert isinstance(source, VideoSource) and source.name == "wan"
    source.setup()
    assert pickle.loads(pickle.dumps(source)).pipe is None  # workers load their own pipeline
    items = source.inputs()
    assert [i.params["image"] for i in items] == [str(jobs_file.parent / n) for n in ("wide.png", "tall.png")]
    clips = [render(source, item) for item in items]
    for clip, bucket, item in zip(clips, ("640x368", "400x400"), items, strict=True):
        w, h = (int(v) for v in bucket.split("x"))
        assert clip.video.shape == (FRAMES, h, w, 3) and clip.video.dtype == np.uint8
        assert clip.bucket == bucket and clip.key == item.id and clip.fps == 16.0
        assert clip.video.std() > 0  # random weights make noise, not a blank clip
        params = clip.source.params
        assert clip.source.kind == "wan" and clip.source.seed == item.params["seed"] == params["seed"]
        assert params["model"] == "tiny" and params["num_frames"] == FRAMES and params["steps"] == 2
        assert params["image"]["name"] == Path(item.params["image"]).name
        assert params["render_size"] == "x".join(map(str, render_size(Bucket.parse(bucket), 8)))
        json.dumps(clip.source.to_dict())

    # same seed: identical frames, from a fresh pipeline too; another seed: different frames
    again = tiny(jobs_file)
    assert np.array_equal(render(again, items[0]).video, clips[0].video)
    reseeded = dataclasses.replace(items[0], params={**items[0].params, "seed": 2})
    assert not np.array_equal(render(source, reseeded).video, clips[0].video)


def test_ids_are_stable_and_follow_the_content(tmp_path: Path, jobs_file: Path) -> None:
    ids = [i.id for i in tiny(jobs_file).inputs()]
    assert ids == [i.id for i in tiny(jobs_file).inputs()] and len(set(ids)) == 2
    assert ids[0].startswith("wide-") and ids[1].startswith("tall-")

    # the same jobs as JSON, elsewhere, give the same ids: the key is content, not file names
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("wide.png", "tall.png"):
        (moved / name).write_bytes((tmp_path / name).read_bytes())
    jobs = yaml.safe_load(jobs_file.read_text())
    assert [i.id for i in tiny(write_jobs(moved, jobs, "jobs.json")).inputs()] == ids

    def first_id(job_change: dict | None = None, **config) -> str:
        changed = [{**jobs[0], **(job_change or {})}]
        return tiny(write_jobs(tmp_path, changed, "changed.yaml"), **config).inputs()[0].id

    assert first_id() == ids[0]
    assert first_id({"prompt": "a red ball rolls to the right"}) != ids[0]
    assert first_id({"seed": 2}) != ids[0]
    assert first_id({"bucket": "480x368"}) != ids[0]
    assert first_id(preset=None, model="someone/other-wan") != ids[0]
    assert first_id(preset=None, model="someone/other-wan") != first_id(
        preset=None, model="someone/third-wan"
    )
    assert first_id(num_frames=9) != ids[0]
    write_image(tmp_path / "wide.png", 200, 112, seed=5)  # new pixels, same name
    assert first_id() != ids[0]


def test_images_folder_with_prompts_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, name in enumerate(("a.png", "b.jpg", "no-prompt.png")):
        write_image(folder / name, 120, 96, seed=i)
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text(yaml.safe_dump({"a.png": "a leaf falls", "b.jpg": "a boat drifts"}))
    config = {**preset("wan", "tiny"), "images": str(folder), "prompts": str(prompts)}
    with caplog.at_level(logging.WARNING):
        items = WanSource(build_config(WanConfig, config)).inputs()
    assert "no prompt" in caplog.text and "no-prompt.png" in caplog.text
    assert [i.params["prompt"] for i in items] == ["a leaf falls", "a boat drifts"]
    seeds = [i.params["seed"] for i in items]
    assert seeds == [i.params["seed"] for i in WanSource(build_config(WanConfig, config)).inputs()]
    assert len(set(seeds)) == 2

    # the prompts file defaults to prompts.yaml in the folder
    with pytest.raises(ConfigError, match="prompts.yaml"):
        WanSource(build_config(WanConfig, {**config, "prompts": None})).inputs()
    (folder / "prompts.yaml").write_text(prompts.read_text())
    assert [i.id for i in WanSource(build_config(WanConfig, {**config, "prompts": None})).inputs()] == [
        i.id for i in items
    ]


def test_unreadable_image_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    (tmp_path / "empty.png").write_bytes(b"")
    jobs = [{"image": name, "prompt": "p", "seed": 0} for name in ("missing.png", "broken.png", "empty.png")]
    source = tiny(write_jobs(tmp_path, jobs))
    items = source.inputs()  # listing is cheap and never fails on a bad image
    assert len(items) == 3
    for item in items:
        with pytest.raises(InputRejected) as err:
            next(iter(source.clips(item)))
        assert err.value.reason == "unreadable-image" and Path(item.params["image"]).name in err.value.detail
    assert source.pipe is None  # rejected before any model was built


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="num_frames") as err:
        build_config(WanConfig, {"jobs": "jobs.yaml", "num_frames": 80})
    assert "4k+1" in str(err.value) and "81" in str(err.value)
    for bad, field in [
        ({"jobs": "j.yaml", "max_sequence_length": 226}, "max_sequence_length"),
        ({"jobs": "j.yaml", "buckets": ["640x367"]}, "buckets"),
        ({"jobs": "j.yaml", "dtype": "float16"}, "dtype"),
        ({"jobs": "j.yaml", "cpu_offload": "yes"}, "cpu_offload"),
        ({"jobs": "j.yaml", "negative_prompt": "../x"}, "negative_prompt"),
        ({}, "no inputs"),
        ({"prompts": "p.yaml"}, "no inputs"),
        ({"jobs": "j.yaml", "images": "i", "prompts": "p.yaml"}, "not both"),
    ]:
        with pytest.raises(ConfigError, match=field):
            build_config(WanConfig, bad)
    assert build_config(WanConfig, {"jobs": "j.yaml", **preset("wan", "14b")}).num_frames == 81

    missing_seed = [{"image": "a.png", "prompt": "p", "seed": 0}, {"image": "b.png", "prompt": "p"}]
    with pytest.raises(ConfigError, match=r"(?s)jobs\[1\].*seed.*required"):
        tiny(write_jobs(tmp_path, missing_seed)).inputs()
    with pytest.raises(ConfigError, match="does not exist"):
        tiny(tmp_path / "nope.yaml").inputs()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_local_model_folder_loads_like_the_hub_model(tmp_path: Path, jobs_file: Path, dtype: str) -> None:
    """The real loading path (from_pretrained, float32 VAE and image encoder) on the saved tiny pipeline."""
    folder = tmp_path / "tiny-wan"
    build_tiny_pipeline(seed=0).save_pretrained(folder)
    loaded = tiny(jobs_file, preset=None, model=str(folder), device="cpu", dtype=dtype)
    reference = tiny(jobs_file, dtype=dtype)
    loaded.setup()
    reference.setup()
    assert type(loaded.pipe).__name__ == "WanImageToVideoPipeline"
    for name in ("transformer", "text_encoder", "vae", "image_encoder"):
        dtypes = {k: v.dtype for k, v in getattr(loaded.pipe, name).state_dict().items()}
        assert dtypes == {k: v.dtype for k, v in getattr(reference.pipe, name).state_dict().items()}, name
        expected = {
            "transformer": {dtype, "float32"},  # Wan keeps norms, time embedding and RoPE in float32
            "text_encoder": {dtype},
            "vae": {"float32"},  # as the 14B model card loads them
            "image_encoder": {"float32"},
        }[name]
        assert {str(d).removeprefix("torch.") for d in dtypes.values()} == expected, name
    (item,) = loaded.inputs()[:1]
    (ref_item,) = reference.inputs()[:1]
    assert item.id != ref_item.id and item.params == ref_item.params  # another model, the same job
    a, b = render(loaded, item).video, render(reference, ref_item).video
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # same weights on the same CPU: at most rounding

    with pytest.raises(ConfigError, match="no such folder"):
        tiny(jobs_file, preset=None, model=str(tmp_path / "missing-model")).setup()


def test_missing_extra_fails_at_construction(jobs_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "ftfy" else find_spec(name))
    with pytest.raises(ImportError, match=r"ftfy.*ardrag\[models\]"):
        tiny(jobs_file)
