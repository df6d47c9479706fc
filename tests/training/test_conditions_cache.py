"""The conditions cache: inputs made once per sample; the batches joined from them are the stage's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from training_helpers import tiny_config

from ardrag.data.loader import collate
from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
from ardrag.training.conditions_cache import ConditionsCache
from ardrag.training.teacher import TeacherStage

TENSORS = ("latents", "control", "ref_latent", "clip", "text")


@pytest.fixture(scope="module")
def samples():
    """Two procedural clips with different numbers of tracked points."""
    cfg = ProceduralConfig(num_clips=8, seed=0, num_frames=9, buckets=["640x368"])
    found: dict[int, object] = {}
    for s in ProceduralSource(cfg).samples():
        found.setdefault(s.num_points, s)
        if len(found) == 2:
            return list(found.values())
    raise AssertionError("no two clips with different point counts")


def counted_stage(pipe, teacher, calls, **config):
    stage = TeacherStage(tiny_config("teacher", **config), pipe, teacher)
    make = stage.batch

    def batch(raw, index):
        calls.append(list(raw["key"]))
        return make(raw, index)

    stage.batch = batch
    return stage


def test_batches_are_the_stages_own_and_each_sample_is_made_once(tiny_models, samples):
    pipe, teacher = tiny_models
    calls: list[list[str]] = []
    own = TeacherStage(tiny_config("teacher"), pipe, teacher)
    stage = ConditionsCache().attach(counted_stage(pipe, teacher, calls))
    a, b = samples
    first = stage.batch(collate([a, b]), [4, 5])
    again = stage.batch(collate([b, a]), [6, 7])
    assert calls == [[a.key], [b.key]]  # one sample at a time, once each

    expected = own.batch(collate([a, b]), [4, 5])
    assert first.index == [4, 5] and first.keys == [a.key, b.key]
    for name in TENSORS:
        want = getattr(expected, name)
        torch.testing.assert_close(getattr(first, name), want, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(getattr(again, name), want.flip(0), atol=1e-5, rtol=1e-4)
    assert first.text_neg is None
    # the targets padded to the longer point axis, as collate pads them
    n = max(a.num_points, b.num_points)
    assert first.tracks.shape == (2, 9, n, 2) and first.visible.shape == (2, 9, n)
    np.testing.assert_allclose(first.tracks, expected.tracks, atol=1e-5)
    np.testing.assert_array_equal(first.visible, expected.visible)
    np.testing.assert_array_equal(again.visible[::-1], expected.visible)
    assert again.index == [6, 7] and again.keys == [b.key, a.key]


def test_stages_sharing_pipeline_and_data_settings_share_entries(tiny_models, samples):
    pipe, teacher = tiny_models
    calls: list[list[str]] = []
    cache = ConditionsCache()
    cache.attach(counted_stage(pipe, teacher, calls)).batch(collate(samples[:1]), [0])
    cache.attach(counted_stage(pipe, teacher, calls)).batch(collate(samples[:1]), [0])
    assert len(calls) == 1 and len(cache) == 1
    assert [c.keys for c in cache.conditions()] == [[samples[0].key]] and cache.conditions(guided=True) == []


def test_a_stage_of_other_settings_or_disagreeing_on_negative_prompts_fails(tiny_models, samples):
    pipe, teacher = tiny_models
    cache = ConditionsCache()
    cache.attach(TeacherStage(tiny_config("teacher"), pipe, teacher))
    other = TeacherStage(tiny_config("teacher", data={"scale": 0.25}), pipe, teacher)
    with pytest.raises(ValueError, match="another pipeline or data settings"):
        cache.attach(other)
    guided = cache.attach(TeacherStage(tiny_config("teacher"), pipe, teacher), guided=True)
    with pytest.raises(ValueError, match="lack negative prompts; attach it with guided=False"):
        guided.batch(collate(samples[:1]), [0])
