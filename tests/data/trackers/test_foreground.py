"""Moving content and the whole-clip static decision (ardrag.data.trackers.foreground)."""

import numpy as np

from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
from ardrag.data.trackers.foreground import ForegroundConfig, find_foreground


def sprites(frames: int = 33, index: int = 0) -> np.ndarray:
    src = ProceduralSource(ProceduralConfig(num_clips=index + 1, num_frames=frames, buckets=["640x368"]))
    return src.make_clip(index).video


def with_noise(video: np.ndarray, seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """Sensor noise: a still camera never gives two identical frames."""
    noise = np.random.default_rng(seed).normal(0, sigma, video.shape)
    return np.clip(video + noise, 0, 255).astype(np.uint8)


def test_a_still_scene_with_sensor_noise_is_static():
    still = with_noise(np.repeat(sprites(2)[:1], 48, axis=0))
    fg = find_foreground(still, 16.0)
    assert fg.static and fg.moving_points == 0
    summary = fg.summary()
    assert summary["moving_points"] == 0 and summary["camera_moving"] is False and summary["keyframes"] == 6


def test_motion_that_starts_after_the_first_second_is_not_static():
    moving = sprites(33)
    late = with_noise(np.concatenate([np.repeat(moving[:1], 24, axis=0), moving[:25]]))  # still for 1.5 s
    fg = find_foreground(late, 16.0)
    assert not fg.static
    first = fg.first_moving_keyframe()
    assert first is not None and first / 16.0 >= 1.0  # found where it starts, not at frame 0
    assert fg.summary()["busiest_keyframe_s"] >= 1.0
    # measured in seconds of source time: the same clip at 8 fps, each frame shown twice, is just as moving
    doubled = np.repeat(late[::2], 2, axis=0)
    assert not find_foreground(doubled, 16.0).static


def test_foreground_points_move_and_the_threshold_is_in_pixels_over_the_window():
    video = sprites(17)
    fg = find_foreground(video, 16.0)
    pts = np.concatenate([p for p in fg.points.values() if len(p)])
    assert len(pts) > 10 and (pts[:, 2] >= 3.0).all()
    strict = find_foreground(video, 16.0, ForegroundConfig(min_motion_px=1000.0))
    assert strict.static and strict.moving_points == 0


def test_a_plain_object_gets_points_on_its_outline():
    import cv2

    # a black cup on a white wall: a disc of one flat grey on a plain background, no corner anywhere
    frames, centres = [], []
    for t in range(17):
        frame = np.full((240, 320, 3), 215, np.uint8)
        centre = (80 + 4 * t, 120)
        cv2.circle(frame, centre, 30, (40, 40, 40), -1, cv2.LINE_AA)
        frames.append(frame)
        centres.append(centre)
    fg = find_foreground(with_noise(np.stack(frames), sigma=1.0), 16.0)
    pts = fg.points[0]
    assert len(pts) >= 8 and not fg.static
    distance = np.linalg.norm(pts[:, :2] - np.array(centres[0]), axis=1)
    assert (np.abs(distance - 30) <= 4).all(), distance  # on the outline
    np.testing.assert_allclose(pts[:, 2], 32.0, atol=1.5)  # and moving with it: 4 px a frame over 8 frames
