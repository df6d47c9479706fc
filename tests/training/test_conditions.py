"""Model inputs of a loader batch (ardrag.training.conditions): per-sample randomness that does not
depend on the batch a sample is in, the training size and frame count, what prepare makes of a batch of
procedural clips, and the image condition and noise levels the stages share."""

import numpy as np
import pytest
import torch
from training_helpers import procedural_batch

from ardrag.inference.sampler import FrameNoise
from ardrag.training.conditions import (
    Conditions,
    SampleRandom,
    clip_frames,
    image_condition,
    prepare,
    sample_seed,
    shift_sigma,
    training_size,
)

CPU = torch.device("cpu")


def test_sample_seeds_are_stable_and_differ_by_every_part():
    assert sample_seed(0, 0, 0, 0) == 4885056063418474528  # the same in every run and on every machine
    assert sample_seed(1, 2, 3) == 1479714026269226309
    seeds = {sample_seed(*parts) for parts in [(1, 2, 3), (3, 2, 1), (1, 2, 4), (1, 2), (1, 2, 3, 0)]}
    assert len(seeds) == 5 and all(0 <= s < 2**63 for s in seeds)


def test_a_samples_draws_do_not_depend_on_its_batch():
    seeds = [sample_seed(7, 1, 0, i) for i in range(4)]
    whole = SampleRandom(seeds, CPU)
    halves = [SampleRandom(seeds[:2], CPU), SampleRandom(seeds[2:], CPU)]  # two processes, 2 samples each
    for _ in range(2):
        torch.testing.assert_close(
            whole.randn(3, 2), torch.cat([h.randn(3, 2) for h in halves]), rtol=0, atol=0
        )
        torch.testing.assert_close(whole.uniform(), torch.cat([h.uniform() for h in halves]), rtol=0, atol=0)
        assert whole.choice(5) == halves[0].choice(5) + halves[1].choice(5)


def test_rows_that_do_not_draw_get_zeros_and_keep_their_streams():
    a, b = SampleRandom([1, 2], CPU), SampleRandom([1, 2], CPU)
    masked = a.randn(4, rows=[False, True])
    assert torch.equal(masked[0], torch.zeros(4)) and masked[1].abs().sum() > 0
    expected = b.randn(4)
    after = a.randn(4)
    assert torch.equal(masked[1], expected[1])  # sample 1 drew as it would have anyway
    assert torch.equal(after[0], expected[0])  # sample 0's stream did not move


def small_conditions(index: list[int]) -> Conditions:
    b = len(index)
    return Conditions(
        latents=torch.zeros(b, 16, 3, 2, 2),
        control=torch.zeros(b, 16, 3, 2, 2),
        ref_latent=torch.arange(b * 16 * 4, dtype=torch.float32).reshape(b, 16, 1, 2, 2),
        clip=torch.zeros(b, 5, 8),
        text=torch.zeros(b, 4, 8),
        text_neg=None,
        index=index,
        keys=[f"k{i}" for i in index],
    )


def test_conditions_draw_by_global_sample_index():
    both, alone = small_conditions([5, 9]), small_conditions([9])
    torch.testing.assert_close(both.random(0, 3).randn(6)[1], alone.random(0, 3).randn(6)[0], rtol=0, atol=0)
    assert not torch.equal(both.random(0, 3).randn(6)[1], both.random(0, 4).randn(6)[1])  # another step


@pytest.mark.parametrize(
    ("height", "width", "scale", "expected"),
    [
        (368, 640, 0.125, (48, 80)),
        (368, 640, 1.0, (368, 640)),
        (480, 832, 0.5, (240, 416)),
        (100, 100, 0.01, (16, 16)),
    ],
)
def test_the_training_size_is_the_scaled_bucket_in_multiples_of_16(height, width, scale, expected):
    assert training_size(height, width, scale) == expected


@pytest.mark.parametrize(
    ("frames", "max_frames", "expected"), [(9, 81, 9), (12, 81, 9), (33, 17, 17), (4, 81, 1)]
)
def test_clip_frames_is_the_longest_causal_length_that_fits(frames, max_frames, expected):
    assert clip_frames(frames, max_frames) == expected


def test_prepare_makes_the_inputs_of_a_batch(tiny_models, conditions):
    pipe, _ = tiny_models
    batch = procedural_batch()
    c = conditions  # 2 clips of 9 frames at 640x368, scale 0.125 (80x46, so 80x48), guided
    assert c.batch == 2 and c.frames == 3 and c.index == [0, 1] and c.keys == list(batch["key"])
    assert c.latents.shape == c.control.shape == (2, 16, 3, 6, 10)
    assert c.ref_latent.shape == (2, 16, 1, 6, 10)
    assert c.text_neg is not None and c.text_neg.shape == c.text.shape
    assert not torch.equal(c.text, c.text_neg)
    expected = batch["tracks"].numpy() * np.array([80 / 640, 48 / 368], np.float32)
    np.testing.assert_allclose(c.tracks, expected, rtol=1e-6)
    assert np.array_equal(c.visible, batch["visible"].numpy())

    short = prepare(pipe, batch, [4, 5], scale=0.125, max_frames=7, guided=False)  # 5 frames of 9
    assert short.frames == 2 and short.tracks.shape[1] == 5 and short.text_neg is None
    torch.testing.assert_close(short.ref_latent, c.ref_latent)  # the same first frame
    torch.testing.assert_close(short.text, c.text)


def test_the_image_condition_is_the_reference_then_noise():
    c = small_conditions([0, 1])
    mask, cond = image_condition(c, 3, c.random(0))
    assert mask.shape == (2, 4, 3, 2, 2) and cond.shape == (2, 16, 3, 2, 2)
    assert torch.equal(mask[:, :, 0], torch.ones(2, 4, 2, 2)) and not mask[:, :, 1:].any()
    assert torch.equal(cond[:, :, :1], c.ref_latent) and cond[:, :, 1:].std() > 0.5

    noise = FrameNoise(c.random(0))  # the student's frame-by-frame inputs: the sampler's
    mask, cond, clip = noise.inputs(0, c.ref_latent, c.clip)
    assert mask.eq(1).all() and torch.equal(cond, c.ref_latent) and torch.equal(clip, c.clip)
    mask, cond, clip = noise.inputs(2, c.ref_latent, c.clip)
    assert not mask.any() and cond.shape == c.ref_latent.shape and clip.shape == c.clip.shape
    assert cond.std() > 0.5 and clip.std() > 0.5  # noise in place of the reference and its CLIP tokens


def test_the_flow_shift_moves_noise_levels_up_and_keeps_the_ends():
    u = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(shift_sigma(u, 1.0), u)
    shifted = shift_sigma(u, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and (shifted[1:-1] > u[1:-1]).all()
    assert shifted[5].item() == pytest.approx(0.75)  # 3 * 0.5 / (1 + 2 * 0.5)
