"""Per-frame rewards: aesthetic (CLIP + LAION head format), motion (tracked vs target points) and
step_following (CLIP text-image similarity with the step prompt of each frame)."""

import re

import numpy as np
import pytest
import torch

from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
from ardrag.data.trackers import get_tracker
from ardrag.errors import ConfigError
from ardrag.rewards import (
    REWARDS,
    AestheticScorer,
    TextImageScorer,
    ava_to_paper_scale,
    latent_frame_rewards,
    motion_reward,
    step_following_reward,
)


@pytest.fixture(scope="module")
def clip():
    return next(iter(ProceduralSource(ProceduralConfig(num_clips=1, seed=2, num_frames=9,
                                                       buckets=["640x368"])).samples()))  # fmt: skip


@pytest.fixture(scope="module")
def tracker():
    t = get_tracker("opencv")
    t.setup()
    return t


@pytest.fixture(scope="module")
def text_scorer():
    return TextImageScorer.tiny(seed=1)


@pytest.mark.parametrize(
    "video, message",
    [
        (np.zeros((0, 32, 32, 3), np.uint8), "at least one frame"),
        (np.zeros((2, 32, 32, 3), np.float32), "expected a uint8 RGB array"),
        (np.zeros((2, 32, 32), np.uint8), "expected a uint8 RGB array"),
        ([[1, 2, 3]], "expected a uint8 RGB array"),
    ],
)
def test_bad_videos_fail_clearly_for_every_reward(video, message, tracker, text_scorer):
    kwargs = {"scorer": AestheticScorer.tiny(), "tracker": tracker,
              "tracks": np.zeros((2, 1, 2), np.float32), "visible": np.ones((2, 1), bool),
              "text_scorer": text_scorer, "frame_prompts": ["a", "b"]}  # fmt: skip
    for fn in REWARDS.values():
        with pytest.raises(ValueError, match=message):
            fn(video, **kwargs)


def test_motion_targets_must_fit_the_video(clip, tracker):
    with pytest.raises(ValueError, match=r"expected tracks \(9, N, 2\) and visible \(9, N\)"):
        motion_reward(clip.video, tracks=clip.tracks[:5], visible=clip.visible[:5], tracker=tracker)


def test_motion_reward_is_high_on_the_true_tracks_and_falls_with_the_error(clip, tracker):
    true = motion_reward(clip.video, tracks=clip.tracks, visible=clip.visible, tracker=tracker)
    assert true.shape == (9,) and true.dtype == np.float64
    assert true[0] == pytest.approx(1.0)  # frame 0: the queries themselves, lambda * alpha = 1
    assert true.min() > 0.9  # opencv follows procedural sprites within a few pixels
    off = clip.tracks.copy()
    off[1:, :, 0] += 0.05 * 640  # from frame 1 on the targets run 5 % of the width beside the motion
    shifted = motion_reward(clip.video, tracks=off, visible=clip.visible, tracker=tracker)
    # squared error >= ~0.05^2 = 0.0025, so reward <= ~100 * (0.01 - 0.0025) = 0.75
    assert (
        shifted[0] == pytest.approx(1.0)
        and (shifted[1:] < 0.8).all()
        and (shifted[1:] < true[1:] - 0.15).all()
    )
    none = motion_reward(clip.video, tracks=clip.tracks, visible=np.zeros_like(clip.visible), tracker=tracker)
    assert np.all(none == 1.0)  # nothing visible to disagree with


def test_aesthetic_scores_per_frame_and_loads_from_local_paths(clip, tmp_path):
    scorer = AestheticScorer.tiny(seed=3)
    scores = scorer.score(clip.video)
    assert scores.shape == (9,) and np.isfinite(scores).all()
    np.testing.assert_array_equal(scores, AestheticScorer.tiny(seed=3).score(clip.video))
    assert not np.allclose(scores, scores[0])  # frames differ, so do their scores
    # the released layout: a CLIP vision folder with its image processor, and the head's weights
    from transformers import CLIPImageProcessor

    scorer.clip.save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        tmp_path / "clip"
    )
    torch.save(scorer.head.state_dict(), tmp_path / "head.pth")
    assert sorted(scorer.head.state_dict())[0] == "layers.0.bias"
    loaded = AestheticScorer.from_paths(str(tmp_path / "clip"), str(tmp_path / "head.pth"))
    np.testing.assert_allclose(loaded.score(clip.video), scores, rtol=1e-6, atol=1e-6)
    with pytest.raises(Exception, match="does not exist"):
        AestheticScorer.from_paths(str(tmp_path / "nope"), str(tmp_path / "head.pth"))


def test_scales_and_latent_frames():
    assert ava_to_paper_scale(np.array([1.0, 10.0])).tolist() == [1.0, 5.0]
    per = latent_frame_rewards(np.arange(9, dtype=float))
    assert per.tolist() == [0.0, 2.5, 6.5]
    with pytest.raises(ValueError, match="4k \\+ 1"):
        latent_frame_rewards(np.arange(8, dtype=float))


STEP_A, STEP_B = "reach for the red cup", "lift the cup onto the shelf"


def test_tiny_text_scorer_is_deterministic_per_seed_and_leaves_the_global_rng_alone(clip):
    state = torch.random.get_rng_state()
    scorer = TextImageScorer.tiny(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    sim = scorer.similarity(clip.video, STEP_A)
    np.testing.assert_array_equal(sim, TextImageScorer.tiny(seed=3).similarity(clip.video, STEP_A))
    assert not np.allclose(sim, TextImageScorer.tiny(seed=4).similarity(clip.video, STEP_A))


def test_similarity_is_the_cosine_of_each_frame_with_its_text(clip, text_scorer):
    sim_a = text_scorer.similarity(clip.video, STEP_A)
    assert sim_a.shape == (9,) and sim_a.dtype == np.float64
    assert np.all(np.abs(sim_a) <= 1)
    assert not np.allclose(sim_a, sim_a[0])  # frames differ, so do their similarities
    np.testing.assert_array_equal(text_scorer.similarity(clip.video, [STEP_A] * 9), sim_a)
    sim_b = text_scorer.similarity(clip.video, STEP_B)
    assert not np.allclose(sim_a, sim_b)  # another text, other similarities
    # the dot product of the unit embeddings, frame by frame
    frames, texts = text_scorer.embed_frames(clip.video), text_scorer.embed_texts([STEP_A, STEP_B])
    assert frames.shape == (9, 16) and texts.shape == (2, 16)
    np.testing.assert_allclose(frames.norm(dim=-1).numpy(), 1, atol=1e-6)
    np.testing.assert_allclose(texts.norm(dim=-1).numpy(), 1, atol=1e-6)
    np.testing.assert_allclose(sim_a, (frames @ texts[0]).numpy(), atol=1e-6)
    # one text per frame: the step switches at frame 5
    mixed = text_scorer.similarity(clip.video, [STEP_A] * 5 + [STEP_B] * 4)
    np.testing.assert_allclose(mixed, np.concatenate([sim_a[:5], sim_b[5:]]), atol=1e-6)
    # a text longer than the text tower's positions is truncated, not an error
    assert np.isfinite(text_scorer.similarity(clip.video, STEP_A * 50)).all()
    with pytest.raises(ValueError, match="4 texts for a video of 9 frames"):
        text_scorer.similarity(clip.video, [STEP_A] * 4)


def test_text_scorer_loads_from_a_local_clip_folder(clip, text_scorer, tmp_path):
    from ardrag.model.tiny import clip_image_processor

    folder = tmp_path / "clip"
    text_scorer.model.save_pretrained(folder)
    text_scorer.tokenizer.save_pretrained(folder)
    clip_image_processor(32).save_pretrained(folder)
    loaded = TextImageScorer.from_path(str(folder))
    prompts = [STEP_A] * 5 + [STEP_B] * 4
    expected = text_scorer.similarity(clip.video, prompts)
    np.testing.assert_allclose(loaded.similarity(clip.video, prompts), expected, rtol=1e-6, atol=1e-6)
    missing = str(tmp_path / "nope")
    with pytest.raises(ConfigError, match=re.escape(repr(missing)) + " does not exist"):
        TextImageScorer.from_path(missing)
    no_tokenizer = tmp_path / "no_tokenizer"
    text_scorer.model.save_pretrained(no_tokenizer)
    clip_image_processor(32).save_pretrained(no_tokenizer)
    with pytest.raises(ConfigError, match=re.escape(repr(str(no_tokenizer))) + " has no tokenizer"):
        TextImageScorer.from_path(str(no_tokenizer))
    no_model = tmp_path / "no_model"
    text_scorer.tokenizer.save_pretrained(no_model)
    with pytest.raises(ConfigError, match=re.escape(repr(str(no_model))) + " cannot be loaded"):
        TextImageScorer.from_path(str(no_model))


def test_step_following_rewards_each_frame_with_its_step_prompt(clip, text_scorer, tracker):
    prompts = [STEP_A] * 5 + [STEP_B] * 4
    # the keyword arguments GRPO passes every reward, and the two this one needs
    grpo_kwargs = {"scorer": None, "tracker": tracker, "tracks": clip.tracks, "visible": clip.visible,
                   "alpha": 0.01, "lam": 100.0}  # fmt: skip
    reward = REWARDS["step_following"](clip.video, text_scorer=text_scorer, frame_prompts=prompts,
                                       **grpo_kwargs)  # fmt: skip
    np.testing.assert_array_equal(reward, text_scorer.similarity(clip.video, prompts))
    assert latent_frame_rewards(reward).shape == (3,)
    with pytest.raises(ConfigError, match="needs step prompts .*missing: frame_prompts$"):
        step_following_reward(clip.video, text_scorer=text_scorer, **grpo_kwargs)
    with pytest.raises(ConfigError, match="text-image scorer .*missing: text_scorer$"):
        step_following_reward(clip.video, frame_prompts=prompts, **grpo_kwargs)
    with pytest.raises(ValueError, match="8 texts for a video of 9 frames"):
        step_following_reward(clip.video, text_scorer=text_scorer, frame_prompts=prompts[:8])
