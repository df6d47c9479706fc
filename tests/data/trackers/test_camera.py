"""The camera's motion (ardrag.data.trackers.camera): still, panning, repeated frames, objects in frame."""

import numpy as np
import pytest

from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
from ardrag.data.trackers.camera import apply, camera_motion, independent_paths, residual_motion


def scene_texture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A detailed still image, larger than the frame, for a camera to pan over."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (height // 6, width // 6, 3), dtype=np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def pan(frames: int, dx: float, dy: float, size=(320, 240)) -> np.ndarray:
    w, h = size
    world = scene_texture(w + 200, h + 200)
    return np.stack(
        [np.ascontiguousarray(world[int(20 + dy * t) :, int(20 + dx * t) :][:h, :w]) for t in range(frames)]
    )


def test_a_pan_is_a_homography_that_moves_the_background_by_the_pan():
    video = pan(6, 3, 1)
    cam = camera_motion(video)
    assert cam.models == ["homography"] * 5 and cam.moving
    pts = np.array([[100.0, 100.0], [200.0, 50.0]])
    # the world moves left and up when the camera pans right and down
    np.testing.assert_allclose(apply(cam.steps[0], pts) - pts, [[-3, -1], [-3, -1]], atol=0.3)
    np.testing.assert_allclose(apply(cam.between(0, 5), pts) - pts, [[-15, -5], [-15, -5]], atol=1.0)
    np.testing.assert_allclose(apply(cam.between(5, 0), pts) - pts, [[15, 5], [15, 5]], atol=1.0)
    assert cam.speed().mean() == pytest.approx(np.hypot(3, 1), abs=0.3)


def test_a_still_camera_and_repeated_frames_are_the_identity():
    video = pan(4, 0, 0)
    noise = np.random.default_rng(0).normal(0, 2.0, video.shape)  # sensor noise: no two frames alike
    video = np.clip(video + noise, 0, 255).astype(np.uint8)
    video = np.concatenate([video[:2], video[1:2], video[2:]])  # an upsampling repeat
    cam = camera_motion(video)
    assert cam.models[1] == "repeat" and set(cam.models) <= {"still", "repeat"} and not cam.moving
    np.testing.assert_array_equal(cam.steps[1], np.eye(3))  # a repeat is exactly the identity
    # a still camera's steps are fitted to its still points: the identity, up to the noise
    np.testing.assert_allclose(cam.steps, np.repeat(np.eye(3)[None], 4, axis=0), atol=0.1)
    assert cam.new_frames().tolist() == [0, 1, 3, 4]


def test_a_slow_drift_under_the_still_threshold_adds_up_over_the_clip():
    import cv2

    world = scene_texture(520, 440)
    shift = 0.25  # px a frame: each step looks still (under still_px), 5 px over 21 frames
    frames = []
    for t in range(21):
        m = np.float32([[1, 0, -40 - shift * t], [0, 1, -40]])
        frames.append(cv2.warpAffine(world, m, (320, 240), flags=cv2.INTER_LINEAR))
    cam = camera_motion(np.stack(frames))
    assert set(cam.models) == {"still"}
    pts = np.array([[160.0, 120.0]])
    np.testing.assert_allclose(apply(cam.between(0, 20), pts) - pts, [[-5.0, 0.0]], atol=0.5)


def test_moving_objects_do_not_pass_for_the_camera():
    # procedural sprites move over a still, textured background: every step keeps the identity. (Clip 2
    # has a plain gradient for a background: only its four sprites have corners, and a zoom explains
    # them diverging; with nothing still to see, the camera's motion is ambiguous there.)
    src = ProceduralSource(ProceduralConfig(num_clips=8, num_frames=9, buckets=["640x368"]))
    for i in (0, 1, 3, 4, 5, 6, 7):
        cam = camera_motion(src.make_clip(i).video)
        assert not cam.moving, (i, cam.models)


def test_independent_motion_is_measured_apart_from_the_camera():
    video = pan(9, 2, 0)
    cam = camera_motion(video)
    pts = np.array([[160.0, 120.0], [60.0, 60.0]])
    disp, ok, ends = residual_motion(video, cam, 0, 8, pts)
    assert ok.all() and np.abs(disp).max() < 1.0  # background: moves only with the camera
    np.testing.assert_allclose(ends - pts, [[-16, 0], [-16, 0]], atol=1.0)
    # a track that follows the background has no independent path; one standing still on screen has
    tracks = np.stack([pts[0] + [-2.0 * t, 0] for t in range(9)] + [pts[1] + [0, 0] for _ in range(9)])
    tracks = tracks.reshape(2, 9, 2).transpose(1, 0, 2)
    own = independent_paths(tracks, np.ones((9, 2), bool), cam)
    assert np.abs(own[:, 0]).max() < 1.0 and own[-1, 1, 0] == pytest.approx(16.0, abs=1.0)
