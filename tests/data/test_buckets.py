import numpy as np
import pytest

from ardrag.data.buckets import Bucket, ResizeCrop, default_buckets, fit_to_bucket, nearest_bucket


def test_default_buckets_are_the_papers_five():
    assert [b.name for b in default_buckets()] == ["480x368", "400x400", "368x480", "640x368", "368x640"]


@pytest.mark.parametrize(
    "size, expected",
    [
        ((1920, 1080), "640x368"),  # 16:9
        ((1080, 1920), "368x640"),
        ((640, 480), "480x368"),  # 4:3
        ((480, 640), "368x480"),
        ((512, 512), "400x400"),
        ((1296, 720), "640x368"),
        ((854, 480), "640x368"),
        ((368, 480), "368x480"),
    ],
)
def test_nearest_bucket_by_aspect(size, expected):
    assert nearest_bucket(*size).name == expected


def test_ties_broken_by_area():
    buckets = (Bucket(200, 100), Bucket(400, 200), Bucket(800, 400))
    assert nearest_bucket(390, 195, buckets).name == "400x200"
    assert nearest_bucket(100, 50, buckets).name == "200x100"


def _blob_video(w, h, x, y, sigma=6.0, frames=2):
    yy, xx = np.mgrid[0:h, 0:w]
    blob = 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.repeat(np.round(blob).astype(np.uint8)[None, :, :, None], frames, 0).repeat(3, -1)


def _centroid(img):
    img = img.astype(np.float64)
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    return (xx * img).sum() / img.sum(), (yy * img).sum() / img.sum()


@pytest.mark.parametrize("w, h", [(1280, 720), (854, 480), (700, 700), (300, 500), (1000, 560), (200, 116)])
def test_tracks_follow_the_frames_through_resize_and_crop(w, h):
    # A smooth blob keeps its intensity-weighted centroid through resampling, so the check is sharp
    # enough to tell the pixel-centre mapping (x + 0.5) * s - 0.5 from the naive x * s.
    x, y = w * 0.37 + 0.3, h * 0.61 - 0.2
    video = _blob_video(w, h, x, y, sigma=max(w, h) / 60)
    tracks = np.array([[[x, y]], [[x, y]]], np.float32)
    out, tr, vis, bucket = fit_to_bucket(video, tracks, np.ones((2, 1), bool))
    assert out.shape == (2, bucket.height, bucket.width, 3)
    cx, cy = _centroid(out[0, :, :, 0])
    assert abs(cx - tr[0, 0, 0]) < 0.1 and abs(cy - tr[0, 0, 1]) < 0.1
    assert vis.all()


def test_points_cut_off_by_the_crop_become_invisible():
    video = np.zeros((1, 400, 1000, 3), np.uint8)  # wider than 640x368: sides are cropped
    tracks = np.array([[[2.0, 200.0], [500.0, 200.0]]], np.float32)
    _, tr, vis, bucket = fit_to_bucket(video, tracks, np.ones((1, 2), bool))
    assert bucket.name == "640x368"
    assert not vis[0, 0] and vis[0, 1]
    assert tr[0, 0, 0] < 0  # coordinates kept, outside the frame


def test_crop_is_centred():
    tf = ResizeCrop.fit(1000, 368, Bucket(640, 368))
    assert tf.scale == 1.0 and tf.x0 == 180 and tf.y0 == 0


@pytest.mark.parametrize("name", ["641x368", "640x0", "640", "axb", "-2x4"])
def test_bad_bucket_names(name):
    from ardrag.errors import ConfigError

    with pytest.raises(ConfigError, match=repr(name)):
        Bucket.parse(name)


def test_bad_video_shape():
    with pytest.raises(ValueError, match="field 'video'"):
        fit_to_bucket(np.zeros((0, 10, 10, 3), np.uint8))
