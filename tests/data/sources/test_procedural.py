"""The procedural source: deterministic, valid; its tracks, visibility and labels are exact ground truth."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ardrag.config import build_config, load_config, repo_root
from ardrag.data.buckets import resolve_buckets
from ardrag.data.sample import KEY_PATTERN, Sample
from ardrag.data.sources import SOURCES, ProceduralConfig, ProceduralSource, VideoSource
from ardrag.data.sources.procedural import Scene, Sprite
from ardrag.errors import ConfigError

SMALL = {"num_frames": 13, "buckets": ["256x160", "160x192"]}


def source(**overrides) -> ProceduralSource:
    return ProceduralSource(ProceduralConfig(**{**SMALL, **overrides}))


def bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(H, W, C) image at real (x, y), clamped to the image."""
    h, w = image.shape[:2]
    x, y = np.clip(x, 0, w - 1.001), np.clip(y, 0, h - 1.001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    return top * (1 - fy) + (image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx) * fy


def blur(image: np.ndarray) -> np.ndarray:
    """Smooths away the resampling error that a sub-pixel shift leaves in sharp texture."""
    return cv2.GaussianBlur(image.astype(np.float64), (0, 0), 1.0)


def radius(sprite: Sprite, x: np.ndarray, y: np.ndarray, t: int) -> np.ndarray:
    """Normalised elliptical radius of (x, y) in the sprite at frame t: < 1 inside, > 1 outside."""
    h, w = sprite.mask.shape
    u = (x - sprite.path[t, 0] - (w - 1) / 2) / (w / 2)
    v = (y - sprite.path[t, 1] - (h - 1) / 2) / (h / 2)
    return np.hypot(u, v)


def edge_distance(sprite: Sprite, x: np.ndarray, y: np.ndarray, t: int) -> np.ndarray:
    """A lower bound on the distance from (x, y) to the sprite's elliptical edge at frame t."""
    return min(sprite.mask.shape) / 2 * np.abs(radius(sprite, x, y, t) - 1)


def content_errors(src: ProceduralSource, clips: range, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean |colour difference| per visible point-frame, sampled at ``track + (shift, 0)``: against frame 0
    at the point's frame-0 track (does the track follow the content?) and against its sprite's texture at
    the point (is it on the right spot?). Only points at least 3 px from their own sprite's edge and from
    every sprite in front of it count, where bilinear resampling blends in other content."""
    temporal, absolute = [], []
    for i in clips:
        scene, sample = src.make_scene(i), src.make_clip(i)
        owned = [(sp, u) for k, sp in enumerate(scene.sprites) for u in sp.points]
        owner = [k for k, sp in enumerate(scene.sprites) for _ in sp.points]
        frames = [blur(f) for f in sample.video.astype(np.float64)]
        for n in range(sample.num_points):
            sprite, (u, v) = owned[n]
            clear = np.array(
                [
                    min(edge_distance(sp, *sample.tracks[t, n], t) for sp in scene.sprites[owner[n] :]) >= 3
                    for t in range(sample.num_frames)
                ]
            )
            ok = sample.visible[:, n] & clear
            ref = bilinear(frames[0], *sample.tracks[0, n].astype(np.float64))
            for t in np.flatnonzero(ok):
                x, y = sample.tracks[t, n].astype(np.float64)
                colour = bilinear(frames[t], x + shift, y)
                absolute.append(float(np.abs(colour - blur(sprite.texture)[int(v), int(u)]).mean()))
                if t > 0 and ok[0]:
                    temporal.append(float(np.abs(colour - ref).mean()))
    return np.array(temporal), np.array(absolute)


def assert_plain(value: object) -> None:
    if isinstance(value, dict):
        assert all(type(k) is str for k in value), value
        for v in value.values():
            assert_plain(v)
    elif isinstance(value, list):
        for v in value:
            assert_plain(v)
    else:
        assert type(value) in (str, int, float, bool, type(None)), (type(value), value)


def test_registry_and_protocol():
    src = source(num_clips=3)
    assert SOURCES["procedural"] == (ProceduralSource, ProceduralConfig)
    assert isinstance(src, VideoSource)
    assert len(src) == 3


def test_same_seed_and_index_give_identical_clips():
    a, b = source(seed=7).make_clip(2), source(seed=7).make_clip(2)
    for name in ("video", "tracks", "visible", "intensity"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.prompt == b.prompt and a.key == b.key
    assert a.provenance == b.provenance


def test_different_seed_gives_a_different_clip():
    a, b = source(seed=7).make_clip(2), source(seed=8).make_clip(2)
    assert a.key != b.key
    assert a.video.shape != b.video.shape or not np.array_equal(a.video, b.video)
    assert a.tracks.shape != b.tracks.shape or not np.array_equal(a.tracks, b.tracks)


def test_clip_does_not_depend_on_num_clips():
    three, five = list(source(num_clips=3).samples()), list(source(num_clips=5).samples())
    assert len(three) == 3 and len(five) == 5
    for a, b in zip(three, five[:3], strict=True):
        np.testing.assert_array_equal(a.video, b.video)
        np.testing.assert_array_equal(a.tracks, b.tracks)
        assert a.key == b.key and a.prompt == b.prompt
        assert a.provenance == b.provenance


def test_samples_are_valid_and_use_the_configured_buckets():
    src = source(num_clips=6)
    samples = list(src.samples())
    assert len(samples) == len(src) == 6
    assert len({s.key for s in samples}) == 6
    for s in samples:
        assert isinstance(s, Sample)
        assert KEY_PATTERN.match(s.key)
        assert s.bucket in SMALL["buckets"] and s.bucket == f"{s.width}x{s.height}"
        assert s.num_frames == 13 and s.fps == 16.0
        src_info = s.provenance.source
        assert src_info.kind == "procedural" and src_info.params["ground_truth"] is True
        assert src_info.params["labels"] == s.extra["labels"]
        assert s.provenance.tracker is None and s.provenance.annotation.status == "auto"
        assert s.provenance.hashes == s.content_hashes()
        assert_plain(s.metadata())  # params and extra are plain JSON (no numpy scalars)
        json.dumps(s.metadata())
        assert 1 <= s.num_points <= 8
        # intensity: constant per point over time, inside the configured range
        assert np.all(s.intensity == s.intensity[:1]) and s.intensity.min() >= 0.5
        nouns = [p["image"].split(".")[0] for p in src_info.params["sprites"]]
        assert s.prompt.endswith(".") and len(nouns) >= 2


def test_buckets_vary_across_clips():
    src = ProceduralSource(ProceduralConfig(num_clips=40, num_frames=2))
    names = {b.name for b in resolve_buckets([])}
    seen = {s.bucket for s in src.samples()}
    assert seen <= names and len(seen) >= 3


def test_render_is_an_exact_subpixel_translation():
    """Inside a sprite, frame pixel (i, j) is its texture at (j - x(t), i - y(t)), up to uint8 rounding."""
    src = source(seed=1)
    errors = {0.0: [], 0.5: []}  # a half-pixel error in the geometry must show
    for i in range(3):
        scene: Scene = src.make_scene(i)
        video = src.make_clip(i).video.astype(np.float64)
        ii, jj = (a.ravel().astype(float) for a in np.indices(video.shape[1:3]))
        for t in (0, 5, 12):
            for k, sp in enumerate(scene.sprites):
                # pixels well inside this sprite and well outside every sprite in front of it
                clear = (radius(sp, jj, ii, t) < 1) & (edge_distance(sp, jj, ii, t) >= 2)
                for front in scene.sprites[k + 1 :]:
                    clear &= (radius(front, jj, ii, t) > 1) & (edge_distance(front, jj, ii, t) >= 2)
                y, x = ii[clear], jj[clear]
                actual = video[t, y.astype(int), x.astype(int)]
                for shift, out in errors.items():
                    expected = bilinear(
                        sp.texture.astype(np.float64), x - sp.path[t, 0] + shift, y - sp.path[t, 1]
                    )
                    out.extend(np.abs(actual - expected).max(axis=-1))
    exact, off = np.array(errors[0.0]), np.array(errors[0.5])
    assert exact.size > 10_000
    assert exact.max() <= 0.5 + 1e-3, exact.max()
    assert np.mean(off > 0.5 + 1e-3) > 0.3, np.mean(off > 0.5 + 1e-3)


def test_tracks_follow_the_content():
    src = source(seed=3)
    temporal, absolute = content_errors(src, range(6))
    assert temporal.size > 100 and absolute.size > 100
    assert np.median(temporal) < 2.0, np.median(temporal)
    assert np.median(absolute) < 3.0, np.median(absolute)
    # negative controls: tracks 15 px or even 1 px off fail the same checks, so they have teeth
    temporal, _ = content_errors(src, range(6), shift=15.0)
    assert np.median(temporal) > 10.0, np.median(temporal)
    temporal, absolute = content_errors(src, range(6), shift=1.0)
    assert np.median(temporal) > 4.0 and np.median(absolute) > 4.5, (np.median(temporal), np.median(absolute))


def test_tracks_are_the_rendered_geometry():
    """Tracks are the sprite paths plus the sprite-local points (the render test pins those to pixels)."""
    src = source(seed=1)
    for i in range(3):
        scene, sample = src.make_scene(i), src.make_clip(i)
        expected = [sp.path + u for sp in scene.sprites for u in sp.points]
        np.testing.assert_allclose(sample.tracks, np.stack(expected, axis=1), atol=1e-4)


def test_forced_occlusion_hides_points_inside_the_frame():
    src = source(num_clips=10, occlusion_prob=1.0, leave_frame_prob=0.0, seed=5)
    hidden_inside = 0
    for s in src.samples():
        occ = s.provenance.source.params["occlusion"]
        assert occ is not None and occ["front"] > occ["back"]
        x, y = s.tracks[..., 0], s.tracks[..., 1]
        inside = (x >= -0.5) & (x <= s.width - 0.5) & (y >= -0.5) & (y <= s.height - 0.5)
        hidden_inside += bool((~s.visible & inside).any())
        assert s.extra["labels"]["occluded"] == bool((~s.visible).any())
        assert s.extra["occlusion_fraction"] == pytest.approx(float((~s.visible).mean()))
    assert hidden_inside >= 8


def test_no_hidden_points_when_nothing_can_occlude():
    src = source(num_clips=10, min_sprites=1, max_sprites=1, occlusion_prob=0.0, leave_frame_prob=0.0)
    for s in src.samples():
        assert s.visible.all()
        assert s.extra["labels"]["occluded"] is False and s.extra["occlusion_fraction"] == 0.0


def test_a_leaving_sprite_starts_inside_and_ends_outside():
    src = source(num_clips=8, min_sprites=1, max_sprites=1, occlusion_prob=0.0, leave_frame_prob=1.0)
    for s in src.samples():
        assert s.visible[0].all()
        x, y = s.tracks[-1, :, 0], s.tracks[-1, :, 1]
        outside = (x < -0.5) | (x > s.width - 0.5) | (y < -0.5) | (y > s.height - 0.5)
        assert outside.all() and not s.visible[-1].any()
        assert s.extra["labels"]["occluded"] is True
        assert "leaves the frame" in s.prompt


def test_fast_label():
    fast = source(num_clips=8, fast_prob=1.0)
    for s in fast.samples():
        assert s.extra["labels"]["fast"] is True and s.extra["max_speed_px"] > 8.0
    slow = source(num_clips=8, fast_prob=0.0, leave_frame_prob=0.0, max_speed=3.0)
    for s in slow.samples():
        assert s.extra["labels"]["fast"] is False and s.extra["max_speed_px"] < 8.0
        steps = np.linalg.norm(np.diff(s.tracks, axis=0), axis=-1)
        assert s.extra["max_speed_px"] == pytest.approx(float(steps.max()))


@pytest.mark.parametrize(
    "data",
    [
        {"num_frames": 9, "bogus": 1},
        {"num_frames": -3},
        {"min_sprites": 3, "max_sprites": 2},
        {"buckets": ["640by368"]},
        {"occlusion_prob": 1.5},
    ],
)
def test_bad_config_raises_config_error(data):
    with pytest.raises(ConfigError):
        build_config(ProceduralConfig, data)


def test_shipped_definition_parses():
    config = load_config(ProceduralConfig, repo_root() / "datasets" / "procedural.yaml")
    assert config.num_frames == 33
