import numpy as np
import pytest

from ardrag.data.overlay import POINT_COLOUR, draw_tracks
from ardrag.errors import SampleValidationError


def _moving_point():
    """One point moving right along row 30 of a black 128x96 video: x = 20, 60, 100."""
    video = np.zeros((3, 96, 128, 3), np.uint8)
    tracks = np.array([[[20.0, 30.0]], [[60.0, 30.0]], [[100.0, 30.0]]], np.float32)
    return video, tracks, np.ones((3, 1), bool)


def test_current_point_red_and_whole_path_blue():
    video, tracks, visible = _moving_point()
    out = draw_tracks(video, tracks, visible)
    assert out.shape == video.shape and not video.any()  # the input is left alone
    for t, x in enumerate((20, 60, 100)):
        assert tuple(out[t, 30, x]) == POINT_COLOUR
        for px in (40, 80):  # on the path (past and future), away from the current point
            if abs(px - x) > 6:
                r, g, b = out[t, 30, px].astype(int)
                assert b > 200 and r < 80, (t, px)  # anti-aliased, so near PATH_COLOUR, not equal
    assert not out[:, 60:, :].any()  # nothing far from the path and labels


def test_hidden_point_drawn_hollow():
    video, tracks, visible = _moving_point()
    visible[1, 0] = False
    out = draw_tracks(video, tracks, visible)
    r, g, b = out[1, 30, 60].astype(int)
    assert r < 128 and b > 200  # centre shows the path, not the red disc
    assert out[1, 27, 60, 0] > 128  # the ring, radius 3
    assert tuple(out[0, 30, 20]) == POINT_COLOUR  # other frames unaffected


def test_shapes_checked():
    video, tracks, visible = _moving_point()
    with pytest.raises(SampleValidationError, match="tracks"):
        draw_tracks(video, tracks[:2], visible[:2])
    with pytest.raises(SampleValidationError, match="visible"):
        draw_tracks(video, tracks, visible[:, :0])
