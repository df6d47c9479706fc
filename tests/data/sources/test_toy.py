"""The toy source: the procedural source's clips (same paths, tracks, prompts) with a flat background,
smooth sprites and an optional smaller size."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
from ardrag.data.sources.toy import ToyConfig, ToySource, resize_video

SMALL = {"num_clips": 3, "num_frames": 5, "buckets": ["256x160"], "occlusion_prob": 0.0}


def fine_detail(texture: np.ndarray) -> float:
    """What a 1-px blur removes, relative to the texture's contrast."""
    return float(np.abs(texture - cv2.GaussianBlur(texture, (0, 0), 1.0)).mean() / texture.std())


def test_same_clips_as_procedural_with_the_toys_look():
    plain, toy = ProceduralSource(ProceduralConfig(**SMALL)), ToySource(ToyConfig(**SMALL))
    for i in range(SMALL["num_clips"]):
        p, t = plain.make_clip(i), toy.make_clip(i)
        assert (t.key, t.prompt, t.bucket) == (p.key, p.prompt, p.bucket)
        np.testing.assert_array_equal(t.tracks, p.tracks)
        np.testing.assert_array_equal(t.visible, p.visible)
        assert not np.array_equal(t.video, p.video)

        ps, ts = plain.make_scene(i), toy.make_scene(i)
        flat = ts.background.reshape(-1, 3)
        np.testing.assert_allclose(flat, flat[:1].repeat(len(flat), 0))  # one colour
        np.testing.assert_allclose(flat[0], ps.background.mean(axis=(0, 1)), rtol=1e-5)
        for a, b in zip(ps.sprites, ts.sprites, strict=True):
            np.testing.assert_array_equal(a.path, b.path)
            assert fine_detail(b.texture) < 0.5 * fine_detail(a.texture)
            assert b.texture.std() == pytest.approx(a.texture.std(), rel=0.3)  # contrast restored
            assert b.texture.min() >= 0 and b.texture.max() <= 255


def test_the_textured_look_is_the_procedural_source():
    plain = ProceduralSource(ProceduralConfig(**SMALL))
    toy = ToySource(ToyConfig(**SMALL, background="texture", sprite_texture="texture"))
    np.testing.assert_array_equal(toy.make_clip(0).video, plain.make_clip(0).video)


def test_size_resizes_video_and_tracks_alike():
    big = ToySource(ToyConfig(**SMALL)).make_clip(1)
    small = ToySource(ToyConfig(**SMALL, size=(48, 80))).make_clip(1)
    assert small.video.shape == (5, 48, 80, 3) and small.bucket == "80x48"
    np.testing.assert_allclose(small.tracks, big.tracks * np.array([80 / 256, 48 / 160], np.float32))
    np.testing.assert_array_equal(small.video, resize_video(big.video, (48, 80)))
    assert small.provenance.hashes["video"] != big.provenance.hashes["video"]
    # a flat frame stays flat and keeps its colour
    flat = np.full((1, 160, 256, 3), (10, 128, 250), np.uint8)
    np.testing.assert_array_equal(resize_video(flat, (48, 80)), np.full((1, 48, 80, 3), (10, 128, 250)))


@pytest.mark.parametrize("field", [{"background": "noise"}, {"sprite_texture": "blurry"}, {"size": (0, 80)}])
def test_bad_settings_name_the_field(field):
    with pytest.raises(ValidationError, match=next(iter(field))):
        ToyConfig(**SMALL, **field)


def test_the_toy_source_is_registered_for_curation():
    from ardrag.data.sources import SOURCES, VideoSource, build_source

    assert SOURCES["toy"] == (ToySource, ToyConfig)
    source = build_source("toy", SMALL)
    assert isinstance(source, VideoSource)
    (item, *_) = source.inputs()
    (clip,) = source.clips(item)
    assert clip.video.shape == (5, 160, 256, 3) and clip.bucket == "256x160"
    np.testing.assert_array_equal(clip.video, source.make_clip(0).video)
