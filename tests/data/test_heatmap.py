import numpy as np
import pytest

from ardrag.data.heatmap import HeatmapConfig, render_heatmaps, render_heatmaps_naive


def _random_tracks(t, n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    # Include points near and beyond the borders.
    tracks = np.stack([rng.uniform(-20, w + 20, (t, n)), rng.uniform(-20, h + 20, (t, n))], -1)
    return tracks.astype(np.float32), rng.random((t, n)) > 0.2, rng.uniform(0, 1, (t, n)).astype(np.float32)


@pytest.mark.parametrize("sigma", [1.5, 4.0, 9.0])
def test_matches_full_frame_reference(sigma):
    tracks, vis, it = _random_tracks(6, 8, 48, 80)
    cfg = HeatmapConfig(sigma=sigma)
    fast = render_heatmaps(tracks, vis, it, 48, 80, cfg)
    ref = render_heatmaps_naive(tracks, vis, it, 48, 80, cfg)
    assert fast.shape == (6, 48, 80) and fast.dtype == np.float32
    np.testing.assert_allclose(fast, ref, atol=1e-6)


def test_peak_equals_intensity_and_range():
    tracks = np.array([[[20.0, 10.0], [50.0, 30.0]]], np.float32)
    it = np.array([[0.3, 0.9]], np.float32)
    hm = render_heatmaps(tracks, np.ones((1, 2), bool), it, 40, 70)
    assert hm[0, 10, 20] == pytest.approx(0.3)
    assert hm[0, 30, 50] == pytest.approx(0.9)
    assert hm.min() >= 0 and hm.max() <= 1


def test_overlapping_spots_combine_by_max():
    tracks = np.array([[[20.0, 20.0], [21.0, 20.0]]], np.float32)
    hm = render_heatmaps(tracks, np.ones((1, 2), bool), np.ones((1, 2), np.float32), 40, 40)
    assert hm.max() == pytest.approx(1.0)


def test_invisible_points_draw_nothing_and_frames_are_independent():
    tracks = np.array([[[20.0, 20.0]], [[5.0, 5.0]]], np.float32)
    vis = np.array([[False], [True]])
    hm = render_heatmaps(tracks, vis, np.ones((2, 1), np.float32), 40, 40)
    assert hm[0].max() == 0
    assert hm[1, 5, 5] == pytest.approx(1.0)


def test_renders_into_a_reused_buffer():
    tracks, vis, it = _random_tracks(4, 3, 30, 30)
    buf = np.full((4, 30, 30), 7.0, np.float32)
    out = render_heatmaps(tracks, vis, it, 30, 30, out=buf)
    assert out is buf
    np.testing.assert_allclose(buf, render_heatmaps(tracks, vis, it, 30, 30))
    with pytest.raises(ValueError, match="field 'out'"):
        render_heatmaps(tracks, vis, it, 30, 30, out=np.zeros((4, 30, 31), np.float32))


def test_shape_errors_name_the_field():
    with pytest.raises(ValueError, match="field 'visible'"):
        render_heatmaps(
            np.zeros((2, 3, 2), np.float32), np.ones((2, 2), bool), np.ones((2, 3), np.float32), 8, 8
        )
