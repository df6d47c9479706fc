"""Drags as plans anchored at frames: a change applies from its frame on and never to frames before it."""

import numpy as np
import pytest

from ardrag.errors import ConfigError
from studio.drags import MAX_POINTS, Drags, resample


def test_a_drag_runs_along_its_path_in_the_given_frames_then_stays():
    d = Drags(96, 64)
    d.drag(None, [[10, 10], [20, 10], [20, 30]], 6, anchor=0)  # 30 px of path in 6 frames: 5 px a frame
    tracks, visible, intensity = d.controls(0, 9)
    assert tracks[:, 0].tolist() == [[10, 10], [15, 10], [20, 10], [20, 15], [20, 20], [20, 25], [20, 30],
                                     [20, 30], [20, 30]]  # fmt: skip
    assert visible.all() and (intensity == 1).all()


def test_positions_are_clamped_into_the_image_and_on_a_sixteenth_of_a_pixel():
    d = Drags(96, 64)
    d.drag(None, [[-20, 3.333333], [500, 70]], 1, anchor=0)
    tracks, _, _ = d.controls(0, 2)
    assert tracks[0, 0].tolist() == [0.0, 3.3125] and tracks[1, 0].tolist() == [95.0, 63.0]
    assert (tracks * 16 == np.round(tracks * 16)).all()


def test_a_point_made_later_is_hidden_before_its_frame_and_a_removed_one_after():
    d = Drags(96, 64)
    d.drag(None, [[10, 10]], 1, anchor=0)
    d.drag(None, [[50, 50]], 1, anchor=5)
    d.remove(1, anchor=9)
    _, visible, _ = d.controls(0, 13)
    assert visible[:, 1].tolist() == [False] * 5 + [True] * 8
    assert visible[:, 0].tolist() == [True] * 9 + [False] * 4
    assert [p["id"] for p in d.describe(9)] == [2]


def test_a_new_drag_or_intensity_changes_only_the_frames_from_its_anchor():
    d = Drags(96, 64)
    d.drag(None, [[0, 0], [40, 0]], 8, anchor=0)
    before = d.controls(0, 13)
    d.set_intensity(1, 0.25, anchor=5)  # the path goes on where it was going
    d.drag(1, [[20, 0], [20, 40]], 4, anchor=9)
    after = d.controls(0, 13)
    for a, b in zip(before, after, strict=True):
        assert np.array_equal(a[:5], b[:5])
    assert np.array_equal(before[0][5:9], after[0][5:9]) and (after[2][5:] == 0.25).all()
    assert after[0][9:, 0].tolist() == [[20, 0], [20, 10], [20, 20], [20, 30]]


def test_moving_anchors_reapplies_the_changes_from_the_earlier_frame():
    """A regenerate of frames 5-8: what was changed for frame 9 applies from 5 instead."""
    d = Drags(96, 64)
    d.drag(None, [[0, 0], [80, 0]], 16, anchor=0)
    d.set_intensity(1, 0.5, anchor=9)
    d.drag(None, [[30, 30]], 1, anchor=9)
    d.move_anchors(9, 5)
    tracks, visible, intensity = d.controls(0, 9)
    assert tracks[5:, 0, 0].tolist() == [25, 30, 35, 40]  # the path from where it was at frame 5
    assert (intensity[5:, 0] == 0.5).all() and (intensity[:5, 0] == 1).all()
    assert visible[:, 1].tolist() == [False] * 5 + [True] * 4


def test_at_most_eight_points_and_a_removed_one_frees_its_column():
    d = Drags(96, 64)
    for i in range(MAX_POINTS):
        d.drag(None, [[i, i]], 1, anchor=0)
    with pytest.raises(ConfigError, match="at most 8 points"):
        d.drag(None, [[1, 1]], 1, anchor=0)
    d.remove(3, anchor=5)
    new = d.drag(None, [[60, 60]], 1, anchor=5)
    assert new.id == 9 and len(d.points) == MAX_POINTS
    tracks, visible, _ = d.controls(0, 9)
    assert (
        tracks.shape[1] == MAX_POINTS
        and tracks[4, 2].tolist() == [2, 2]
        and tracks[5, 2].tolist() == [60, 60]
    )
    with pytest.raises(ConfigError, match="not a point of this session"):
        d.set_intensity(3, 0.5, anchor=9)


@pytest.mark.parametrize(
    ("path", "frames", "match"),
    [([], 4, "drag path"), ([[1]], 4, "drag path"), ([[1, None]], 4, "drag path"), ("xy", 4, "drag path"),
     ([[1, 2]], 0, "drag frames"), ([[1, 2]], 4.5, "drag frames"), ([[1, 2]], True, "drag frames")],
)  # fmt: skip
def test_bad_drags_name_the_value(path, frames, match):
    with pytest.raises(ConfigError, match=match):
        Drags(96, 64).drag(None, path, frames, anchor=0)


def test_bad_intensities_and_ids():
    d = Drags(96, 64)
    d.drag(None, [[1, 1]], 1, anchor=0)
    for value in (-0.1, 1.5, "1", None, True):
        with pytest.raises(ConfigError, match="intensity"):
            d.set_intensity(1, value, anchor=0)
    with pytest.raises(ConfigError, match="was removed"):
        d.remove(1, anchor=1)
        d.drag(1, [[3, 3]], 1, anchor=1)


def test_resample_keeps_the_ends_and_a_still_path_is_a_pin():
    path = np.array([[0.0, 0.0], [3.0, 4.0]])
    out = resample(path, 5)
    assert out.shape == (6, 2) and out[0].tolist() == [0, 0] and out[-1].tolist() == [3, 4]
    assert resample(np.array([[2.0, 2.0], [2.0, 2.0]]), 5).tolist() == [[2.0, 2.0]]
