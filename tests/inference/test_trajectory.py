import json
import math
import warnings

import cv2
import numpy as np
import pytest

from ardrag.errors import ConfigError
from ardrag.inference.trajectory import (
    Trajectory,
    fit_to_resolution,
    load_reference,
    load_trajectory,
    parse_trajectory,
)


def _valid() -> dict:
    return {
        "width": 640,
        "height": 360,
        "fps": 16,
        "points": [
            {
                "x": [10.0, 20.0, 30.0],
                "y": [5.0, 6.0, 7.0],
                "visible": [True, True, False],
                "intensity": [1, 0.5, 0],
            },
            {"x": [100, 110, 120], "y": [200, 210, 220]},
            {"x": [300.0, 301.0, 302.0], "y": [100.0, 100.0, 100.0]},
        ],
    }


def test_valid_file_round_trip(tmp_path):
    path = tmp_path / "drag.json"
    path.write_text(json.dumps(_valid()), encoding="utf-8")
    traj = load_trajectory(path)
    assert (traj.width, traj.height, traj.fps, traj.num_frames, traj.num_points) == (640, 360, 16.0, 3, 3)
    assert traj.tracks.dtype == np.float32 and traj.tracks.shape == (3, 3, 2)
    assert traj.visible.dtype == bool and traj.intensity.dtype == np.float32
    np.testing.assert_array_equal(traj.tracks[:, 0], [[10, 5], [20, 6], [30, 7]])
    np.testing.assert_array_equal(traj.tracks[2, :, 0], [30, 120, 302])
    np.testing.assert_array_equal(traj.visible[:, 0], [True, True, False])
    np.testing.assert_array_equal(traj.intensity[:, 0], [1.0, 0.5, 0.0])


def test_visible_intensity_and_fps_default():
    data = _valid()
    del data["fps"]
    traj = parse_trajectory(data)
    assert traj.fps == 16.0
    assert traj.visible[:, 1:].all() and (traj.intensity[:, 1:] == 1.0).all()


def _set(path: str, value):
    """A mutation of the valid trajectory: ``path`` like 'points.2.x.1'; the value None deletes the key."""

    def mutate(data: dict) -> dict:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node = data
        for p in parents:
            node = node[p]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
        return data

    return mutate


_DELETE = object()


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (_set("width", _DELETE), ["width is missing"]),
        (_set("width", 0), ["width is 0", "positive integer"]),
        (_set("height", -5), ["height is -5"]),
        (_set("width", "640"), ["width is '640'"]),
        (_set("height", 360.5), ["height is 360.5"]),
        (_set("width", True), ["width is True"]),
        (_set("points", []), ["points is []", "non-empty"]),
        (_set("points", _DELETE), ["points is None"]),
        (_set("points", [{"x": [1.0], "y": [1.0]}] * 9), ["points has 9 entries", "at most 8"]),
        (_set("points", [{"x": [], "y": []}]), ["points[0].x is []", "at least one frame"]),
        (_set("points.2.y", [1.0, 2.0]), ["points[2].y has 2 entries", "points[2].x has 3"]),
        (_set("points.0.visible", [True, True]), ["points[0].visible has 2 entries", "has 3"]),
        (_set("points.0.intensity", [1, 1, 1, 1]), ["points[0].intensity has 4 entries"]),
        (
            _set("points.1", {"x": [1, 2, 3, 4], "y": [1, 2, 3, 4]}),
            ["points[1] has 4 frames", "points[0] has 3"],
        ),
        (_set("points.2.x.1", "abc"), ["points[2].x[1] is 'abc'", "finite number"]),
        (_set("points.1.y.2", math.nan), ["points[1].y[2] is nan"]),
        (_set("points.0.x.0", math.inf), ["points[0].x[0] is inf"]),
        (_set("points.0.y.1", None), ["points[0].y[1] is None"]),
        (_set("points.0.y.1", True), ["points[0].y[1] is True"]),
        (_set("points.0.x.2", 1e40), ["points[0].x[2] is 1e+40"]),  # hidden, but not a float32
        (_set("points.0.intensity.1", 1.5), ["points[0].intensity[1] is 1.5", "[0, 1]"]),
        (_set("points.0.intensity.2", -0.1), ["points[0].intensity[2] is -0.1"]),
        (_set("points.0.visible.0", 1), ["points[0].visible[0] is 1", "true or false"]),
        (_set("points.0.visible.1", "yes"), ["points[0].visible[1] is 'yes'"]),
        (_set("points.2.x.2", 900.0), ["points[2].x[2] is 900.0", "[-160.5, 799.5]", "640x360"]),
        (_set("points.1.y.0", -100), ["points[1].y[0] is -100", "[-90.5, 449.5]"]),
        (_set("fps", 0), ["fps is 0", "(0, 240]"]),
        (_set("fps", 241), ["fps is 241"]),
        (_set("fps", "16"), ["fps is '16'"]),
        (_set("fps", math.nan), ["fps is nan"]),
        (_set("points.0.visibilty", [True] * 3), ["points[0] has unknown key 'visibilty'"]),
        (_set("frame_rate", 16), ["unknown key 'frame_rate'"]),
        (_set("points.1", [1, 2]), ["points[1] is [1, 2]"]),
        (_set("points.1.y", _DELETE), ["points[1] has no 'y'"]),
        (_set("points.0.x", 5), ["points[0].x is 5", "a list"]),
    ],
)
def test_bad_input_names_the_field_and_the_value(mutate, expected):
    with pytest.raises(ConfigError) as err:
        parse_trajectory(mutate(_valid()), source="drag.json")
    message = str(err.value)
    assert message.startswith("drag.json: ")
    for part in expected:
        assert part in message


def test_not_an_object():
    with pytest.raises(ConfigError, match=r"the trajectory is \[1, 2\]"):
        parse_trajectory([1, 2])


def test_margin_bounds_visible_points_only():
    data = _valid()
    data["points"][2]["x"][2] = 799.5  # exactly on the 25% margin
    data["points"][0]["x"][2] = -5000.0  # far out, but hidden at frame 2
    assert parse_trajectory(data).tracks[2, 0, 0] == -5000.0
    data["points"][1]["x"][0] = -1.0
    with pytest.raises(ConfigError, match=r"points\[1\]\.x\[0\] is -1\.0"):
        parse_trajectory(data, margin=0.0)
    data["points"][1]["x"][0] = 1e6
    parse_trajectory(data, margin=math.inf)
    with pytest.raises(ConfigError, match="margin is -0.1"):
        parse_trajectory(_valid(), margin=-0.1)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="missing.json' cannot be read"):
        load_trajectory(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_trajectory(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"width": 640,,}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.json: invalid JSON at line 1 column 15"):
        load_trajectory(bad)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="binary.json' is not UTF-8"):
        load_trajectory(binary)
    data = _valid()
    data["points"][0]["x"][1] = math.nan
    nan_file = tmp_path / "nan.json"
    nan_file.write_text(json.dumps(data), encoding="utf-8")  # json writes NaN, and reads it back
    with pytest.raises(ConfigError, match=r"nan\.json: points\[0\]\.x\[1\] is nan"):
        load_trajectory(nan_file)


def test_trajectory_checks_its_arrays():
    tracks = np.zeros((2, 1, 2), np.float32)
    with pytest.raises(ConfigError, match="trajectory visible"):
        Trajectory(tracks, np.ones((2, 2), bool), np.ones((2, 1), np.float32), 64, 48)
    with pytest.raises(ConfigError, match="trajectory tracks"):
        Trajectory(tracks.astype(np.float64), np.ones((2, 1), bool), np.ones((2, 1), np.float32), 64, 48)


def _trajectory(points, width, height, visible=None) -> Trajectory:
    tracks = np.array(points, np.float32)[None]  # one frame, (1, N, 2)
    vis = np.ones(tracks.shape[:2], bool) if visible is None else np.array([visible])
    return Trajectory(tracks, vis, np.full(tracks.shape[:2], 0.5, np.float32), width, height, fps=8.0)


def _half_black_half_white(width, height) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, width // 2 :] = 255
    return image


def test_fit_to_resolution_cover_resize_and_centre_crop():
    # 1280x720 -> scale 368/720 to 654x368, crop 7 columns each side to 640x368.
    image = _half_black_half_white(1280, 720)
    traj = _trajectory([[639.5, 359.5], [0.0, 0.0], [1279.0, 100.0]], 1280, 720)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, fitted = fit_to_resolution(image, traj, 640, 368)
    assert out.shape == (368, 640, 3) and out.dtype == np.uint8
    np.testing.assert_allclose(fitted.tracks[0, 0], [319.5, 183.5], atol=1e-4)  # centre stays the centre
    assert out[:, 318].max() < 64 and out[:, 321].min() > 192  # the image's edge lands where its points do
    assert (fitted.width, fitted.height, fitted.fps) == (640, 368, 8.0)
    assert (fitted.intensity == 0.5).all()


def test_points_in_the_cropped_margin_become_invisible():
    image = _half_black_half_white(1280, 720)
    traj = _trajectory([[639.5, 359.5], [2.0, 300.0], [1279.0, 100.0]], 1280, 720)
    with pytest.warns(UserWarning, match="2 visible point position"):
        _, fitted = fit_to_resolution(image, traj, 640, 368)
    np.testing.assert_array_equal(fitted.visible[0], [True, False, False])
    assert np.isfinite(fitted.tracks).all()
    assert fitted.tracks[0, 1, 0] < -0.5 and fitted.tracks[0, 2, 0] > 639.5


def test_trajectory_drawn_on_another_frame_is_scaled_to_the_image_first():
    image = _half_black_half_white(1280, 720)
    # Anamorphic: drawn on a 400x400 canvas, x scales by 3.2 and y by 1.8 onto the 1280x720 image.
    traj = _trajectory([[99.5, 299.5], [199.5, 199.5]], 400, 400)
    _, fitted = fit_to_resolution(image, traj, 640, 368)
    # On the image: (319.5, 539.5) and (639.5, 359.5);
    # then x -> (x + .5) * 654/1280 - .5 - 7 and y -> (y + .5) * 368/720 - .5.
    np.testing.assert_allclose(fitted.tracks[0], [[156.0, 275.5], [319.5, 183.5]], atol=1e-4)
    # Same aspect, half the size: coordinates double (about pixel centres).
    _, fitted = fit_to_resolution(image, _trajectory([[319.5, 179.5]], 640, 360), 640, 368)
    np.testing.assert_allclose(fitted.tracks[0, 0], [319.5, 183.5], atol=1e-4)


def test_fit_to_resolution_rejects_bad_inputs():
    traj = _trajectory([[1.0, 1.0]], 64, 48)
    with pytest.raises(ConfigError, match="reference image is an array of dtype float32"):
        fit_to_resolution(np.zeros((48, 64, 3), np.float32), traj, 32, 32)
    with pytest.raises(ConfigError, match="model height is 0"):
        fit_to_resolution(np.zeros((48, 64, 3), np.uint8), traj, 32, 0)


def test_load_reference_returns_rgb(tmp_path):
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[2, 3] = (0, 0, 255)
    cv2.imwrite(str(tmp_path / "ref.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(load_reference(tmp_path / "ref.png"), rgb)


def test_load_reference_errors(tmp_path):
    with pytest.raises(ConfigError, match="nope.png' does not exist"):
        load_reference(tmp_path / "nope.png")
    with pytest.raises(ConfigError, match="is not a file"):
        load_reference(tmp_path)
    (tmp_path / "text.png").write_text("not an image", encoding="utf-8")
    with pytest.raises(ConfigError, match="text.png' could not be decoded"):
        load_reference(tmp_path / "text.png")
